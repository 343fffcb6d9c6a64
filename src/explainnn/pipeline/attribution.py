"""Step 5, attribution: explain test inputs of each class with the causal method and the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

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
from explainnn.causal import CausalGraph
from explainnn.config import AttributionConfig
from explainnn.data import Dataset
from explainnn.errors import UserError
from explainnn.files import write_npz, write_text
from explainnn.pipeline.context import RunContext
from explainnn.progress import progress_bar


def explain_classes(ctx: RunContext, options: AttributionConfig) -> dict[int, dict[str, np.ndarray]]:
    """Attributions of every method in ``options.methods`` for the first ``options.n_samples`` test inputs.

    For each explained class (see :meth:`RunContext.explained_classes`) writes
    ``attributions/class_<k>/attributions.npz`` (one array per method, plus the
    inputs and labels; ``np.load(..., allow_pickle=False)``) and pictures:
    ``grid.png`` (samples x methods) for images, ``sequences.png`` (time x
    feature) for sequences and image rows read by a recurrent model,
    ``text.png``/``text.html`` for token models, and
    ``causal_maps_<layer>.png`` (the per-node causal maps of
    ``causal_paths_layer``). A method that cannot run here (no graph, wrong
    modality) is skipped with the reason printed. Fills ``ctx.attributions``.
    """
    dataset = ctx.dataset
    for target in ctx.explained_classes():
        index = torch.nonzero(dataset.y_test == target).flatten()[: options.n_samples]
        if len(index) == 0:
            raise UserError(f"the test split has no samples of class {target} to explain")
        inputs, graph = dataset.x_test[index], ctx.graphs.get(target)
        results = attribute_methods(ctx.model, inputs, target, graph, options.methods, options=options.options,
                                    seed=ctx.seed, progress=ctx.progress, echo=ctx.echo)
        folder = ctx.run_dir / "attributions" / f"class_{target}"
        write_npz(folder / "attributions.npz",
                  {"inputs": inputs.numpy(), "labels": dataset.y_test[index].numpy(), **results})
        if ctx.plots and results:
            labels = [f"#{int(i)} ({dataset.info.class_names[target]})" for i in index]
            _draw(ctx.model, dataset, inputs, results, folder, labels=labels, graph=graph,
                  causal_paths_layer=options.causal_paths_layer, dpi=ctx.dpi, echo=ctx.echo)
        ctx.echo(f"attribution class {target}: {', '.join(results) or 'no method ran'} on {len(inputs)} samples")
        ctx.attributions[target] = results
    return ctx.attributions


def attribute_methods(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int,
    graph: CausalGraph | None,
    methods: Sequence[str],
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, np.ndarray]:
    """``{method: attributions}`` of every method that can run on these inputs; the others are skipped, saying why."""
    modality = modality_of(model, inputs)
    results: dict[str, np.ndarray] = {}
    for method in progress_bar(methods, desc="attributions", unit="method", enabled=progress, leave=False):
        info = method_info(method)
        if info.needs_graph and graph is None:
            echo(f"attribution {method}: skipped (needs the causal graph; enable discovery)")
            continue
        if modality not in info.modalities:
            echo(f"attribution {method}: skipped ({modality} inputs; it supports {', '.join(info.modalities)})")
            continue
        try:
            results[method] = attribute(model, inputs, target, method, graph=graph, seed=seed,
                                        **(options or {}).get(method, {}))
        except UserError as exc:
            echo(f"attribution {method}: skipped ({exc})")
    return results


def _draw(model: nn.Module, dataset: Dataset, inputs: torch.Tensor, results: dict[str, np.ndarray], folder: Path, *,
          labels: list[str], graph: CausalGraph | None, causal_paths_layer: str | None, dpi: int,
          echo: Callable[[str], None]) -> None:
    """The pictures of one class's attributions, as fits the modality."""
    modality = modality_of(model, inputs)
    if modality == "image":
        plot_attribution_grid(inputs, results, folder / "grid.png", labels=labels, dpi=dpi)
    if modality == "sequence" or (modality == "image" and not _convolutional(model)):
        plot_sequence_attributions(inputs, results, folder / "sequences.png", dpi=dpi)
    if modality == "tokens":
        vocab, pad = dataset.info.vocab or (), dataset.info.pad_index
        tokens = [[vocab[int(t)] for t in row if int(t) != pad] for row in inputs]
        plot_text_attributions(tokens, results, folder / "text.png", dpi=dpi)
        blocks = [f"<h3>{method}</h3>" + "".join(text_html(t, results[method][k]) for k, t in enumerate(tokens))
                  for method in results]
        write_text(folder / "text.html", "<!doctype html><meta charset='utf-8'><body>" + "".join(blocks))
    if graph is not None and causal_paths_layer and modality == "image":
        try:
            maps, total = causal_path_maps(model, inputs, graph, causal_paths_layer)
        except UserError as exc:
            echo(f"attribution causal maps: skipped ({exc})")
            return
        plot_causal_maps(inputs, {u: m.numpy() for u, m in maps.items()}, total.numpy(),
                         folder / f"causal_maps_{causal_paths_layer}.png", layer=causal_paths_layer, dpi=dpi)


def _convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in model.modules())
