"""Step 5, circuit: the minimal faithful circuit of each explained class, checked on held-out test samples.

``circuit.level: edges`` (the default) finds the fewest unit-to-unit edges
(:func:`edge_circuits`), ``nodes`` the fewest hidden units (:func:`node_circuits`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from explainnn.causal import (
    CausalGraph,
    CircuitReport,
    CircuitSearch,
    circuit_faithfulness,
    faithfulness_curves,
    find_circuit,
    plot_curves,
)
from explainnn.causal.circuit_check import CircuitCheck
from explainnn.causal.curves import OURS, FaithfulnessCurves, baseline_orders, circuit_order, plot_check
from explainnn.causal.draw import MIB_NAMES, draw_edge_circuit, plot_mib
from explainnn.causal.edge_search import (
    EdgeCircuitReport,
    HeldOutFaithfulness,
    circuit_ranking,
    edge_circuit_graph,
    edge_scores,
    find_edge_circuit,
)
from explainnn.causal.mib import MIBCurve, build_evaluator, score_curve
from explainnn.causal.minimal_circuit import circuit_graph
from explainnn.config import CircuitConfig
from explainnn.files import save_figure, write_csv
from explainnn.pipeline.context import RunContext
from explainnn.pipeline.discovery import discovery_inputs

CURVE_POINTS, CURVE_RANDOM = 21, 10
"""The run's curves: 21 sizes (every 5% of the units) plus the circuit's, 10 random orderings averaged."""


EDGE_CIRCUIT = "explainnn"
"""The MIB curves' name for the edge circuit's own ranking (:func:`~explainnn.causal.edge_search.circuit_ranking`:
nested exact circuits inside the circuit, the gain of adding each edge outside it)."""


def find_circuits(ctx: RunContext, options: CircuitConfig) -> dict[int, CircuitReport] | dict[int, EdgeCircuitReport]:
    """The circuit of each explained class at ``circuit.level``: :func:`edge_circuits` or :func:`node_circuits`."""
    if options.level == "edges":
        return edge_circuits(ctx, options)
    return node_circuits(ctx, options)


def edge_circuits(ctx: RunContext, options: CircuitConfig) -> dict[int, EdgeCircuitReport]:
    """The fewest unit-to-unit edges that keep each explained class, checked and MIB-scored on held-out samples.

    Parameters
    ----------
    ctx:
        The run (dataset, model, discovery's graphs when discovery ran).
    options:
        The ``circuit`` section: ``faithfulness``, ``ablation``, ``method``,
        ``n_samples``, ``steps``, ``layers`` set the search
        (:func:`~explainnn.causal.find_edge_circuit`) on ``n_samples`` samples
        of ``discovery.samples_from``; ``eval_samples`` (at least
        ``evaluation.n_samples`` when the evaluation runs) the held-out test
        samples of the class (those
        the model classifies correctly, none the search saw; counterfactuals
        under patching: correctly classified test samples of other classes);
        ``mib`` and ``methods`` the MIB curves on those samples.

    Mean ablation uses 1,000 training samples. Writes ``circuit/class_<k>/``:
    ``edge_circuit.json`` (the :class:`CausalGraph`; held-out faithfulness and MIB
    scores in its results), ``edges.csv`` (every edge: parent, child, kind, exact
    effect of removing it, score, and discovery's p-value, q-value and CI where
    discovery tested the same unit pair), ``mib.csv`` (:meth:`MIBCurve.to_rows`
    of every ranking) and, with plots, ``edge_circuit.png`` and ``mib.png``.
    Fills ``ctx.edge_circuits`` and prints one line per class
    (:func:`describe_edge_circuit`).
    """
    dataset, model = ctx.dataset, ctx.model
    inputs, labels, split = discovery_inputs(ctx)
    reference = dataset.x_train[:1000]
    ablation = options.edge_ablation()
    evaluation = ctx.config.evaluation
    n_held = max(options.eval_samples, evaluation.n_samples if evaluation.enabled else 0)
    search_options: dict[str, Any] = {
        "faithfulness": options.faithfulness, "ablation": ablation, "labels": labels, "layers": options.layers,
        "seed": ctx.seed, "n_samples": options.n_samples, "reference": reference, "steps": options.steps,
        "progress": ctx.progress}
    for target in ctx.explained_classes():
        folder = ctx.run_dir / "circuit" / f"class_{target}"
        search = find_edge_circuit(model, inputs, target, method=options.method, **search_options)
        record = {"faithfulness": options.faithfulness, "ablation": ablation, "method": options.method,
                  "layers": options.layers, "n_samples": options.n_samples, "steps": options.steps,
                  "metric": search.metric}
        graph = edge_circuit_graph(model, search, options=record, seed=ctx.seed,
                                   metadata={"model": ctx.config.model.name, "dataset": dataset.info.name,
                                             "inputs": f"{split} split"})
        pool = torch.arange(len(dataset.x_test))
        if split == "test":
            pool = pool[~torch.isin(pool, torch.as_tensor(search.samples))]
        evaluator, edge_graph = build_evaluator(model, dataset.x_test[pool], target, edges=search.edges,
                                                labels=dataset.y_test[pool], ablation=ablation, reference=reference,
                                                metric=search.metric, n_samples=n_held)
        held_out = HeldOutFaithfulness(float(evaluator(search.mask[None])[0]), len(evaluator.samples),
                                       pool[torch.as_tensor(evaluator.samples.index)].tolist(), "test",
                                       evaluator.metric, ablation, evaluator.full, evaluator.empty)
        graph.add_result("held_out", held_out.to_dict())
        curves: dict[str, MIBCurve] = {}
        if options.mib:
            curves[EDGE_CIRCUIT] = score_curve(evaluator, edge_graph, circuit_ranking(search), method=EDGE_CIRCUIT)
            for method in options.methods:
                found = edge_scores(model, inputs, target, method=method, edges=search.edges, metric=search.metric,
                                    **search_options)
                curves[method] = score_curve(evaluator, edge_graph, found.scores, method=method)
            graph.add_result("mib", {name: mib_summary(curve) for name, curve in curves.items()})
        discovered = ctx.discoveries[target].graph if target in ctx.discoveries else None
        graph.to_json(folder / "edge_circuit.json")
        write_csv(folder / "edges.csv", edge_rows(graph, discovered), fields=EDGE_FIELDS)
        if curves:
            write_csv(folder / "mib.csv", [row for curve in curves.values() for row in curve.to_rows()])
        if ctx.plots:
            save_figure(draw_edge_circuit(graph, dpi=ctx.dpi, title=_edge_title(graph)),
                        folder / "edge_circuit.png")
            if curves:
                save_figure(plot_mib(list(curves.values()), dpi=ctx.dpi,
                                     title=f"class {target}: faithfulness on {held_out.n_samples} held-out "
                                           f"test samples ({ablation} ablation)"),
                            folder / "mib.png")
        ctx.edge_circuits[target] = EdgeCircuitReport(graph, search, held_out, curves)
        ctx.echo(describe_edge_circuit(graph))
    return ctx.edge_circuits


def mib_summary(curve: MIBCurve) -> dict[str, Any]:
    """A curve's CPR, CMD, faithfulness per budget and the edges needed for each level, as JSON."""
    return {"cpr": curve.cpr, "cmd": curve.cmd, "budgets": list(curve.budgets),
            "faithfulness": [float(f) for f in curve.faithfulness], "n_samples": curve.n_samples,
            "total_edges": curve.total_edges,
            "needed": {f"{level:g}": {"n_edges": need.n_edges, "percent": need.percent,
                                      "faithfulness": need.faithfulness}
                       for level, need in sorted(curve.needed.items())}}


EDGE_FIELDS = ["parent", "child", "kind", "effect", "score", "discovery_p_value", "discovery_q_value",
               "discovery_ci_low", "discovery_ci_high"]
"""The columns of ``edges.csv``: discovery's columns are empty where discovery did not test the unit pair."""


def edge_rows(graph: CausalGraph, discovered: CausalGraph | None = None) -> list[dict[str, Any]]:
    """One row per circuit edge (recurrent same-layer edges included), by |effect|, largest first.

    ``discovered``: discovery's significance graph; where it holds an edge
    between the same two units, its p-value, q-value and CI are added.
    """
    rows = [{"parent": parent, "child": child, "kind": attrs.get("kind", ""), "effect": attrs.get("effect"),
             "score": attrs.get("score")} for parent, child, attrs in graph.edges()]
    for extra in graph.results.get("edge_circuit", {}).get("same_layer_edges", []):
        parent, child = str(extra["edge"]).split("->", 1)
        rows.append({"parent": parent, "child": child, "kind": extra.get("kind", ""), "effect": extra.get("effect"),
                     "score": extra.get("score")})
    tested = discovered.digraph if discovered is not None else None
    for row in rows:
        stats = tested.get_edge_data(row["parent"], row["child"]) if tested is not None else None
        for key in ("p_value", "q_value", "ci_low", "ci_high"):
            row[f"discovery_{key}"] = (stats or {}).get(key, "")
    return sorted(rows, key=lambda row: -_abs(row["effect"]))


def _abs(value: Any) -> float:
    number = float(value) if isinstance(value, (int, float)) else math.nan
    return abs(number) if math.isfinite(number) else -1.0


def _edge_title(graph: CausalGraph) -> str:
    meta, found = graph.metadata, graph.results["edge_circuit"]
    held = graph.results.get("held_out", {})
    faith = f", held-out f {held['faithfulness']:.2f}" if held else ""
    return (f"Edge circuit of class {meta['target']} ({meta.get('model', '')} on {meta.get('dataset', '')}): "
            f"{found['n_edges']:,} of {found['total_edges']:,} edges{faith}")


def describe_edge_circuit(graph: CausalGraph) -> str:
    """One line: the circuit's edges, their share, its held-out faithfulness and CPR beside the baselines'."""
    meta, found = graph.metadata, graph.results["edge_circuit"]
    held = graph.results["held_out"]
    line = (f"circuit     class {meta['target']}: {found['n_edges']:,} of {found['total_edges']:,} edges "
            f"({found['fraction']:.1%}), held-out f {held['faithfulness']:.2f} on {held['n_samples']} samples")
    scores = graph.results.get("mib") or {}
    if EDGE_CIRCUIT in scores:
        others = ", ".join(f"{MIB_NAMES.get(name, name)} {score['cpr']:.2f}"
                           for name, score in scores.items() if name != EDGE_CIRCUIT)
        line += f", CPR {scores[EDGE_CIRCUIT]['cpr']:.2f}" + (f" ({others})" if others else "")
    return line


def node_circuits(ctx: RunContext, options: CircuitConfig) -> dict[int, CircuitReport]:
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
    settings = options.model_dump(include={"faithfulness", "n_samples", "layers", "steps"})
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
        ctx.echo(describe_circuit(graph))
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
    """One line: the circuit's size and its held-out sufficiency and necessity against random sets (the circuit
    search and check stored in ``graph.results``)."""
    search, check = graph.results["circuit_search"], CircuitCheck.from_dict(graph.results["circuit"])
    suff, nec = check.sufficiency, check.necessity
    return (f"circuit     class {graph.metadata['target']}: {search['size']} of {search['total_units']} hidden units "
            f"({search['fraction']:.0%}) from {graph.metadata['n_samples']} {graph.metadata['inputs']} samples; "
            f"held out ({check.n_eval} test samples): sufficiency {suff.normalized:.2f} "
            f"(random {suff.random_normalized_mean:.2f}, p={suff.p_value_vs_random:.3g}), "
            f"necessity {nec.normalized:.2f} (random {nec.random_normalized_mean:.2f}, "
            f"p={nec.p_value_vs_random:.3g}){_left_intact_clause(check)}")


def _left_intact_clause(check: CircuitCheck) -> str:
    """The necessity test with saturated layers left intact, when there are any (else nothing)."""
    chosen = check.necessity_where_chosen
    if not chosen.layers_left_intact:
        return ""
    return (f"; with {', '.join(chosen.layers_left_intact)} left intact: necessity {chosen.normalized:.2f} "
            f"(random {chosen.random_normalized_mean:.2f}, p={chosen.p_value_vs_random:.3g})")
