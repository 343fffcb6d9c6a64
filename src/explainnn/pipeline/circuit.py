"""Step 5, circuit: the minimal faithful circuit of each explained class, checked on held-out test samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from explainnn.causal import (
    CausalGraph,
    CircuitSearch,
    circuit_faithfulness,
    faithfulness_curves,
    find_circuit,
    plot_curves,
)
from explainnn.causal.curves import OURS, FaithfulnessCurves, baseline_orders, circuit_order, plot_check
from explainnn.causal.minimal_circuit import circuit_graph
from explainnn.config import CircuitConfig
from explainnn.files import save_figure
from explainnn.pipeline.context import RunContext
from explainnn.pipeline.discovery import discovery_inputs

CURVE_POINTS, CURVE_RANDOM = 21, 10
"""The run's curves: 21 sizes (every 5% of the units) plus the circuit's, 10 random orderings averaged."""


@dataclass(frozen=True)
class CircuitReport:
    """One class's minimal circuit as the circuit step found and checked it (``ctx.circuits[k]``).

    ``graph`` is the circuit as a :class:`CausalGraph` (what ``circuit.json``
    holds; ``graph.results`` keeps the same numbers as JSON), ``search`` how it
    was found (:func:`~explainnn.causal.find_circuit`), ``check`` its held-out
    sufficiency and necessity against random sets
    (:func:`~explainnn.causal.circuit_faithfulness`'s report) and ``curves`` the
    faithfulness curves when ``circuit.curves`` is on.
    """

    graph: CausalGraph
    search: CircuitSearch
    check: dict[str, Any]
    curves: FaithfulnessCurves | None = None

    @property
    def target(self) -> int:
        """The explained class."""
        return self.search.target

    @property
    def size(self) -> int:
        """Hidden units in the circuit."""
        return int(self.search.size)

    @property
    def held_out_sufficiency(self) -> float:
        """The normalised target logit kept by the circuit alone on the held-out samples."""
        return float(self.check["sufficiency"]["normalized"])


def find_circuits(ctx: RunContext, options: CircuitConfig) -> dict[int, CircuitReport]:
    """The minimal faithful circuit of each explained class, checked on held-out test samples.

    The circuit is found on ``options.n_samples`` samples of ``discovery.samples_from``
    (:func:`explainnn.causal.circuit`); its sufficiency and necessity (p-values
    against ``options.n_random`` random sets) and, with ``options.curves``, the
    faithfulness curves beside the baseline rankings are measured on up to
    ``options.eval_samples`` test samples of the class that played no part in
    finding it. Mean ablation uses 1,000 training samples. Writes
    ``circuit/class_<k>/``: ``circuit.json`` (a :class:`CausalGraph`; the checks
    in its results), ``circuit.graphml``, ``units.csv``, ``curves.csv``,
    ``curve_areas.csv`` and, with plots, ``circuit_graph.png``,
    ``circuit_check.png``, ``curves.png``; fills ``ctx.circuits`` (``ctx.circuit_graphs``
    holds their graphs).
    """
    dataset, model = ctx.dataset, ctx.model
    inputs, labels, split = discovery_inputs(ctx)
    reference = dataset.x_train[:1000]
    settings = options.model_dump(exclude={"enabled", "n_random", "eval_samples", "curves"})
    for target in ctx.explained_classes():
        folder = ctx.run_dir / "circuit" / f"class_{target}"
        search = find_circuit(model, inputs, target, labels=labels, reference=reference, seed=ctx.seed,
                              progress=ctx.progress, **settings)
        graph = circuit_graph(model, search, inputs[:1], options={**settings, "ablation": "mean"}, seed=ctx.seed,
                              metadata={"model": ctx.config.model.name, "dataset": dataset.info.name,
                                        "inputs": f"{split} split"})
        exclude = graph.metadata["samples"] if split == "test" else None
        check = circuit_faithfulness(model, dataset.x_test, graph, labels=dataset.y_test, reference=reference,
                                     exclude=exclude, n_eval=options.eval_samples, n_random=options.n_random,
                                     seed=ctx.seed)
        curves = circuit_curves(ctx, search, graph, inputs[torch.as_tensor(graph.metadata["samples"])], exclude,
                                options.eval_samples, split) if options.curves else None
        graph.to_json(folder / "circuit.json")
        graph.to_graphml(folder / "circuit.graphml")
        graph.to_csv(folder / "units.csv", table="units")
        if ctx.plots:
            save_figure(graph.draw(max_units_per_layer=24, dpi=ctx.dpi,
                                   title=f"Minimal circuit of class {target} ({_size_words(search)})"),
                        folder / "circuit_graph.png")
            save_figure(plot_check(check, subject="minimal circuit", dpi=ctx.dpi), folder / "circuit_check.png")
        ctx.circuits[target] = CircuitReport(graph, search, check, curves)
        print(describe_circuit(graph))
    return ctx.circuits


def circuit_curves(ctx: RunContext, search: CircuitSearch, graph: CausalGraph, samples: torch.Tensor, exclude,
                   eval_samples: int, split: str) -> FaithfulnessCurves:
    """Faithfulness curves of ``search`` on up to ``eval_samples`` held-out test samples of its class.

    The orderings come from the circuit's own ``samples``; writes ``curves.csv``,
    ``curve_areas.csv`` and, with plots, ``curves.png``; stored in ``graph.results["curves"]``.
    """
    dataset, model, target = ctx.dataset, ctx.model, search.target
    folder = ctx.run_dir / "circuit" / f"class_{target}"
    reference = dataset.x_train[:1000]
    held = torch.nonzero(dataset.y_test == target).flatten()
    if exclude is not None:
        held = held[~torch.isin(held, torch.as_tensor(exclude))]
    held = held[:eval_samples]
    orders = {OURS: circuit_order(model, search, samples, reference)}
    orders.update(baseline_orders(model, search.units, samples, target, reference))
    curves = faithfulness_curves(model, dataset.x_test[held], target, orders, units=search.units,
                                 reference=reference, points=CURVE_POINTS, n_random=CURVE_RANDOM,
                                 seed=ctx.seed, circuit_size=search.size)
    graph.add_result("curves", curves.summary())
    curves.to_csv(folder / "curves.csv")
    curves.areas_to_csv(folder / "curve_areas.csv")
    if ctx.plots:
        title = (f"class {target}: minimal circuit from {len(samples)} {split} samples, "
                 f"curves on {curves.n_eval} held-out test samples")
        save_figure(plot_curves(curves, dpi=ctx.dpi, title=title), folder / "curves.png")
    return curves


def _size_words(search: CircuitSearch) -> str:
    """The circuit's size in words, for its picture's title."""
    return f"{search.size} of {search.units.total} hidden units, faithfulness {search.faithfulness:.2f}"


def describe_circuit(graph: CausalGraph) -> str:
    """One line: the circuit's size and its held-out sufficiency and necessity against random sets."""
    search, check = graph.results["circuit_search"], graph.results["circuit"]
    suff, nec = check["sufficiency"], check["necessity"]
    return (f"circuit     class {graph.metadata['target']}: {search['size']} of {search['total_units']} hidden units "
            f"({search['fraction']:.0%}) from {graph.metadata['n_samples']} {graph.metadata['inputs']} samples; "
            f"held out ({check['n_eval']} test samples): sufficiency {suff['normalized']:.2f} "
            f"(random {suff['random_normalized_mean']:.2f}, p={suff['p_value_vs_random']:.3g}), "
            f"necessity {nec['normalized']:.2f} (random {nec['random_normalized_mean']:.2f}, "
            f"p={nec['p_value_vs_random']:.3g}){_left_intact_clause(check)}")


def _left_intact_clause(check: dict) -> str:
    """The necessity test with saturated layers left intact, when there are any (else nothing)."""
    chosen = check.get("necessity_where_chosen") or {}
    if not chosen.get("layers_left_intact"):
        return ""
    return (f"; with {', '.join(chosen['layers_left_intact'])} left intact: necessity {chosen['normalized']:.2f} "
            f"(random {chosen['random_normalized_mean']:.2f}, p={chosen['p_value_vs_random']:.3g})")
