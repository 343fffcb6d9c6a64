"""Step 4, checks: each causal graph checked for sufficiency and necessity against random unit sets, and for stability."""

from __future__ import annotations

from dataclasses import dataclass

from explainnn.causal import (
    circuit_faithfulness,
    plot_seed_stability,
    plot_stability,
    seed_stability,
    stability,
)
from explainnn.causal.curves import plot_check
from explainnn.config import Config, DiscoveryConfig
from explainnn.files import save_figure
from explainnn.pipeline.context import RunContext
from explainnn.pipeline.discovery import discovery_inputs


@dataclass(frozen=True)
class ChecksOptions:
    """The checks step's options: the ``discovery`` section (``check_circuit``, ``stability``) and the
    size of the sufficiency/necessity check, ``circuit.n_random`` random unit sets on
    ``circuit.eval_samples`` held-out samples (the graph is checked as the circuit is)."""

    discovery: DiscoveryConfig
    n_random: int
    eval_samples: int

    @classmethod
    def of(cls, config: Config) -> ChecksOptions:
        """The checks' options in ``config``."""
        return cls(config.discovery, config.circuit.n_random, config.circuit.eval_samples)


def check_graphs(ctx: RunContext, options: ChecksOptions) -> None:
    """Sufficiency and necessity against random unit sets (``check_circuit``) and the stability sweep.

    For every graph in ``ctx.graphs`` writes ``discovery/class_<k>/``:
    ``circuit.png`` (the graph's sufficiency and necessity), ``stability.csv``, ``appearance.csv``, ``stability.png``;
    the results are stored with the graph (``graph.json`` is written again
    with them) and in ``ctx.faithfulness``/``ctx.stability``. Sufficiency and
    necessity are measured on test samples the graph was not learned from; the
    stability sweep re-learns on the graph's own samples. With
    ``stability.seeds``, models trained with those seeds (``ctx.seed_models``)
    are swept too (``stability_seeds.csv``, ``stability_seeds.png``).
    """
    discovery = options.discovery
    dataset = ctx.dataset
    reference = dataset.x_train[:500]
    inputs, labels, split = discovery_inputs(ctx)
    sweep = discovery.stability.model_dump(exclude={"enabled", "seeds"})
    for target, graph in ctx.graphs.items():
        folder = ctx.run_dir / "discovery" / f"class_{target}"
        if discovery.check_circuit and any(graph.units(layer) for layer in graph.layers()[1:-1]):
            ctx.faithfulness[target] = circuit_faithfulness(
                ctx.model, dataset.x_test, graph, labels=dataset.y_test, reference=reference, seed=ctx.seed,
                exclude=graph.metadata["samples"] if split == "test" else None,
                n_eval=options.eval_samples, n_random=options.n_random)
            if ctx.plots:
                save_figure(plot_check(ctx.faithfulness[target], subject="causal graph", dpi=ctx.dpi),
                            folder / "circuit.png")
        if discovery.stability.enabled and len(graph.layers()) > 2:
            result = stability(ctx.model, inputs, graph, seed=ctx.seed, **sweep)
            graph.add_result("stability", result.summary())
            result.to_csv(folder)
            ctx.stability[target] = result
            if ctx.plots:
                save_figure(plot_stability(result, dpi=ctx.dpi), folder / "stability.png")
        seeds = [s for s in discovery.stability.seeds if s != ctx.seed]
        if discovery.stability.enabled and seeds:
            models = {ctx.seed: ctx.model}
            models.update({s: ctx.seed_models.model(s) for s in seeds})
            across = seed_stability(models, inputs, target, labels=labels, discovery=discovery.discover_options(),
                                    betas=sweep["betas"], repeats=sweep["repeats"], bootstrap=sweep["bootstrap"],
                                    seed=ctx.seed)
            graph.add_result("stability_seeds", across.summary())
            ctx.seed_stability[target] = across
            across.to_csv(folder / "stability_seeds.csv")
            if ctx.plots:
                save_figure(plot_seed_stability(across, dpi=ctx.dpi), folder / "stability_seeds.png")
        graph.to_json(folder / "graph.json")
        graph.to_graphml(folder / "graph.graphml")
        ctx.echo(describe_checks(ctx, target))


def describe_checks(ctx: RunContext, target: int) -> str:
    """One line: the causal graph's sufficiency beside random sets, and the stability at the first beta."""
    parts = []
    circuit = ctx.faithfulness.get(target)
    if circuit is not None:
        parts.append(f"sufficiency {circuit.sufficiency.normalized:.2f} "
                     f"(random {circuit.sufficiency.random_normalized_mean:.2f})")
    stable = ctx.stability.get(target)
    if stable is not None:
        parts.append(f"Jaccard at beta={stable.betas[0]:g}: {stable.jaccard.mean(1)[0]:.2f}")
    return f"checks      class {target}: {'; '.join(parts) or 'no check applies'}"
