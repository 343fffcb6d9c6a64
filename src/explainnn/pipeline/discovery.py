"""Step 3, discovery: learn the causal graph of each target class; save it in open formats and draw it."""

from __future__ import annotations

from pathlib import Path

import torch

from explainnn.causal import CausalGraph, DiscoveryResult, discover
from explainnn.config import DiscoveryConfig
from explainnn.errors import TooFewSamples
from explainnn.files import save_figure, write_csv
from explainnn.pipeline.context import RunContext


def discover_graphs(ctx: RunContext, options: DiscoveryConfig) -> dict[int, CausalGraph]:
    """Learn the graph of ``options.target_class`` (every class for ``all``) from ``samples_from``'s split.

    Writes ``discovery/class_<k>/``: ``graph.json`` (load with
    ``CausalGraph.from_json``), ``graph.graphml``, ``edges.csv``, ``units.csv``,
    ``tests.csv`` (every candidate's statistics) and ``graph.png``; fills
    ``ctx.discoveries`` (a :class:`DiscoveryResult` per class; ``ctx.graphs`` their graphs). With ``all``, a class with fewer than two correctly
    classified samples is skipped with the reason printed.
    """
    dataset = ctx.dataset
    n_classes = dataset.info.n_classes
    targets = list(range(n_classes)) if options.target_class == "all" else [int(options.target_class)]
    inputs, labels, split = discovery_inputs(ctx)
    metadata = {"model": ctx.config.model.name, "dataset": dataset.info.name, "inputs": f"{split} split"}
    for target in targets:
        try:
            graph = discover(ctx.model, inputs, target, labels=labels, seed=ctx.seed,
                             progress=ctx.progress, metadata=metadata, **options.discover_options())
        except TooFewSamples as exc:
            if len(targets) == 1:
                raise
            ctx.echo(f"discovery   class {target}: skipped ({exc})")
            continue
        result = DiscoveryResult.of(graph, split)
        save_graph(result, ctx.run_dir / "discovery" / f"class_{target}", plots=ctx.plots, dpi=ctx.dpi)
        ctx.discoveries[target] = result
        ctx.echo(describe_graph(graph))
    return ctx.graphs


def discovery_inputs(ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Inputs, labels and name of the split graphs and circuits are learned from (``discovery.samples_from``).

    ``train`` (the default) leaves the whole test split to the checks and
    metrics; with ``test`` they skip the samples a graph was learned from.
    """
    dataset, split = ctx.dataset, ctx.config.discovery.samples_from
    if split == "train":
        return dataset.x_train, dataset.y_train, split
    return dataset.x_test, dataset.y_test, split


def save_graph(result: DiscoveryResult, folder: Path, *, plots: bool = True, dpi: int = 120) -> None:
    """Write the graph files of one class into ``folder`` (the picture only with ``plots``)."""
    graph = result.graph
    graph.to_json(folder / "graph.json")
    graph.to_graphml(folder / "graph.graphml")
    graph.to_csv(folder / "edges.csv", table="edges")
    graph.to_csv(folder / "units.csv", table="units")
    rows = result.tests_table()
    if rows:
        write_csv(folder / "tests.csv", rows)
    if plots:
        save_figure(graph.draw(max_units_per_layer=24, title=_title(graph), dpi=dpi), folder / "graph.png")


def _title(graph: CausalGraph) -> str:
    meta = graph.metadata
    options = meta.get("options", {})
    return (f"{meta.get('model', '')} on {meta.get('dataset', '')}: causes of class {meta['target']} "
            f"({options.get('on')}, {options.get('intervention')}, {options.get('test')} test, n={meta['n_samples']})")


def describe_graph(graph: CausalGraph) -> str:
    """One line: the number of causal units per layer."""
    meta = graph.metadata
    layers = [name for name in graph.layers() if graph.units(name)]
    sizes = ", ".join(f"{name} {len(graph.causes(name)) if name != layers[-1] else 1}" for name in layers)
    return f"discovery   class {meta['target']}: {sizes} causal units (n={meta['n_samples']})"
