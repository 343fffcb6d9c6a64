"""The pipeline's steps as plain functions: compute, save in open formats, draw.

Each step takes explicit arguments (no config object) so it can be called from
Python as easily as from ``main.py``, which maps the config onto them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from explainnn.causal import (
    CausalGraph,
    circuit_faithfulness,
    discover,
    plot_circuit,
    plot_stability,
    stability,
)
from explainnn.data import Dataset
from explainnn.errors import UserError
from explainnn.files import atomic_path


def discovery_step(
    model: nn.Module,
    dataset: Dataset,
    targets: Sequence[int],
    out_dir: Path,
    *,
    discovery: dict[str, Any],
    check_circuit: bool = True,
    stability_options: dict[str, Any] | None = None,
    plots: bool = True,
    dpi: int = 120,
    seed: int = 0,
    progress: bool = True,
    model_name: str = "",
) -> dict[int, CausalGraph]:
    """Learn, check, save and draw the causal graph of every class in ``targets``.

    Writes ``<out_dir>/class_<k>/``: ``graph.json`` (load with
    ``CausalGraph.from_json``), ``graph.graphml``, ``edges.csv``, ``units.csv``,
    ``tests.csv`` (every candidate's statistics), ``graph.png``, and, when
    enabled, ``circuit.png`` and ``stability.csv``/``appearance.csv``/``stability.png``.
    """
    graphs: dict[int, CausalGraph] = {}
    reference = dataset.x_train[:500]
    for target in targets:
        folder = Path(out_dir) / f"class_{target}"
        try:
            graph = discover(
                model,
                dataset.x_test,
                target,
                labels=dataset.y_test,
                seed=seed,
                progress=progress,
                metadata={"model": model_name or type(model).__name__, "dataset": dataset.info.name,
                          "inputs": "test split"},
                **discovery,
            )
        except UserError as exc:
            if len(targets) > 1 and "discovery needs at least 2" in str(exc):
                print(f"discovery   class {target}: skipped ({exc})")
                continue
            raise
        if check_circuit and any(graph.units(layer) for layer in graph.layers()[1:-1]):
            report = circuit_faithfulness(model, graph, dataset.x_test, labels=dataset.y_test,
                                          reference=reference, seed=seed)
            if plots:
                _save_figure(plot_circuit(report, dpi=dpi), folder / "circuit.png")
        if stability_options and stability_options.get("enabled", True) and len(graph.layers()) > 2:
            options = {k: v for k, v in stability_options.items() if k != "enabled"}
            result = stability(model, dataset.x_test, graph, seed=seed, **options)
            graph.add_result("stability", result.summary())
            result.to_csv(folder)
            if plots:
                _save_figure(plot_stability(result, dpi=dpi), folder / "stability.png")
        _save_graph(graph, folder, plots=plots, dpi=dpi)
        graphs[target] = graph
        print(_describe(graph))
    return graphs


def _save_graph(graph: CausalGraph, folder: Path, *, plots: bool, dpi: int) -> None:
    graph.to_json(folder / "graph.json")
    graph.to_graphml(folder / "graph.graphml")
    graph.to_csv(folder / "edges.csv", table="edges")
    graph.to_csv(folder / "units.csv", table="units")
    _tests_csv(graph, folder / "tests.csv")
    if plots:
        _save_figure(graph.draw(max_units_per_layer=24, title=_title(graph), dpi=dpi), folder / "graph.png")


def _tests_csv(graph: CausalGraph, path: Path) -> None:
    import csv

    tests = graph.results.get("tests", {})
    rows = [{"layer": layer, **record} for layer, records in tests.items() for record in records]
    if not rows:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _title(graph: CausalGraph) -> str:
    meta = graph.metadata
    options = meta.get("options", {})
    return (f"{meta.get('model', '')} on {meta.get('dataset', '')}: causes of class {meta['target']} "
            f"({options.get('on')}, {options.get('intervention')}, {options.get('test')} test, n={meta['n_samples']})")


def _describe(graph: CausalGraph) -> str:
    meta = graph.metadata
    layers = [name for name in graph.layers() if graph.units(name)]
    sizes = ", ".join(f"{name} {len(graph.causes(name)) if name != layers[-1] else 1}" for name in layers)
    line = f"discovery   class {meta['target']}: {sizes} causal units (n={meta['n_samples']})"
    circuit = graph.results.get("circuit")
    if circuit:
        line += (f"; sufficiency {circuit['sufficiency']['normalized']:.2f} "
                 f"(random {circuit['sufficiency']['random_normalized_mean']:.2f})")
    stable = graph.results.get("stability")
    if stable:
        line += f"; Jaccard at beta={stable['betas'][0]:g}: {stable['jaccard_mean'][0]:.2f}"
    return line


def _save_figure(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png")

