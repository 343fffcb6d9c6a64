"""The pipeline's steps as plain functions: compute, save in open formats, draw.

Each step takes explicit arguments (no config object) so it can be called from
Python as easily as from ``main.py``, which maps the config onto them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

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
from explainnn.files import atomic_path, write_text


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



def attribution_step(
    model: nn.Module,
    dataset: Dataset,
    target: int,
    graph: CausalGraph | None,
    out_dir: Path,
    *,
    methods: Sequence[str],
    n_samples: int = 6,
    causal_paths_layer: str | None = "conv2",
    options: dict[str, dict[str, Any]] | None = None,
    plots: bool = True,
    dpi: int = 120,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Attributions of every method for the first ``n_samples`` test inputs of class ``target``.

    Writes ``<out_dir>/attributions.npz`` (one array per method, plus the inputs;
    plain arrays, loaded with ``np.load(..., allow_pickle=False)``) and pictures:
    ``grid.png`` (samples x methods) for images, ``sequences.png`` (time x feature)
    for sequences and image rows read by a recurrent model, ``text.png`` and
    ``text.html`` for token models, and ``causal_maps_<layer>.png`` (the per-node
    causal maps). ``options`` maps a method name to its options. A method that
    cannot run here (no graph, wrong modality) is skipped with the reason printed.
    """
    from explainnn.attributions import (
        attribute,
        causal_path_maps,
        method_info,
        modality_of,
        plot_attribution_grid,
        plot_causal_maps,
        plot_sequence_attributions,
        plot_text_attributions,
        text_html,
    )

    index = torch.nonzero(dataset.y_test == target).flatten()[:n_samples]
    if len(index) == 0:
        raise UserError(f"the test split has no samples of class {target} to explain")
    inputs = dataset.x_test[index]
    modality = modality_of(model, inputs)
    results: dict[str, np.ndarray] = {}
    for method in tqdm(methods, desc="attributions", unit="method", disable=not progress, leave=False):
        info = method_info(method)
        if info.needs_graph and graph is None:
            print(f"attribution {method}: skipped (needs the causal graph; enable discovery)")
            continue
        if modality not in info.modalities:
            print(f"attribution {method}: skipped ({modality} inputs; it supports {', '.join(info.modalities)})")
            continue
        try:
            results[method] = attribute(method, model, inputs, target, graph=graph, seed=seed,
                                        **(options or {}).get(method, {}))
        except UserError as exc:
            print(f"attribution {method}: skipped ({exc})")
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "attributions.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, inputs=inputs.numpy(), labels=dataset.y_test[index].numpy(), **results)
    if plots and results:
        labels = [f"#{int(i)} ({dataset.info.class_names[target]})" for i in index]
        if modality == "image":
            plot_attribution_grid(inputs, results, out_dir / "grid.png", labels=labels)
        if modality == "sequence" or (modality == "image" and not _convolutional(model)):
            plot_sequence_attributions(inputs, results, out_dir / "sequences.png")
        if modality == "tokens":
            tokens = [_tokens(dataset, row) for row in inputs]
            plot_text_attributions(tokens, results, out_dir / "text.png")
            blocks = [f"<h3>{method}</h3>" + "".join(text_html(t, results[method][k]) for k, t in enumerate(tokens))
                      for method in results]
            write_text(out_dir / "text.html", "<!doctype html><meta charset='utf-8'><body>" + "".join(blocks))
        if graph is not None and causal_paths_layer and modality == "image":
            try:
                maps, total = causal_path_maps(model, inputs, graph, causal_paths_layer)
            except UserError as exc:
                print(f"attribution causal maps: skipped ({exc})")
            else:
                plot_causal_maps(inputs, {u: m.numpy() for u, m in maps.items()}, total.numpy(),
                                 out_dir / f"causal_maps_{causal_paths_layer}.png", layer=causal_paths_layer)
    print(f"attribution class {target}: {', '.join(results) or 'no method ran'} on {len(inputs)} samples")
    return results


def _convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in model.modules())


def _tokens(dataset: Dataset, row: torch.Tensor) -> list[str]:
    vocab, pad = dataset.info.vocab or (), dataset.info.pad_index
    return [vocab[int(t)] for t in row if int(t) != pad]
