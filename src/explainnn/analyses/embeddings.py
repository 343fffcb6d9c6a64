"""Hidden representations of a layer, projected to 2-D and drawn coloured by class.

A layer's representation of one sample is one value per unit, the same number
that activation maximisation (:mod:`explainnn.analyses.views`) drives up and that
discovery calls a unit's activation:

* conv channels: the channel's output averaged over space (or positions for
  Conv1d), so a CNN layer gives ``(N, channels)`` instead of a huge flattened map
  whose axes are mostly position;
* recurrent layers (also each layer of a stack): the hidden state after the
  last time step, ``h_n``. It is what a ``last``-pooling classifier reads, and the
  state that has seen the whole sequence for ``mean``/``attention`` pooling;
  with left padding it is the state after the real last token;
* linear and embedding layers: their output, at the last position when they act
  per time step.

Values are the module's output, before any following nonlinearity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn

from explainnn.errors import UserError
from explainnn.files import save_figure, write_csv
from explainnn.interventions.hooks import ModelPatch
from explainnn.interventions.layers import LayerInfo, find_layers, resolve_layer
from explainnn.torch_utils import model_device

PROJECTIONS = ("pca", "tsne")
MAX_PERPLEXITY = 30.0


def layer_info(model: nn.Module, example: torch.Tensor, layer: str) -> LayerInfo:
    """The analysable layer called ``layer`` (a one-line error listing the valid ones)."""
    if not isinstance(layer, str):
        raise UserError(f"layer must be a layer name such as 'fc2'; got {layer!r}")
    return resolve_layer(find_layers(model, example), model, layer)


def unit_activations(info: LayerInfo, output: Any) -> torch.Tensor:
    """``(N, n_units)``: one value per unit from the layer's raw forward output (see module doc), as the layer's
    unit kind reads it."""
    return info.unit_kind.unit_values(info, output)


class _LayerDone(Exception):
    """Raised by a hook once the layer of interest has run."""


def run_to_layer(model: nn.Module, info: LayerInfo, inputs: torch.Tensor) -> Any:
    """The layer's raw forward output for ``inputs``; the forward stops right after it.

    Later layers are not needed, and stopping keeps their side effects (such as
    a stored attention) from happening. Callers choose eval mode and autograd.
    """
    found: list[Any] = []

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        found.append(output)
        raise _LayerDone

    with ModelPatch() as patch:
        patch.forward_hook(info.module, hook)
        try:
            model(inputs)
        except _LayerDone:
            pass
    if not found:
        raise UserError(f"layer '{info.name}' did not run in the forward pass of these inputs")
    return found[0]


def hidden_representations(
    model: nn.Module, inputs: torch.Tensor, layer: str, *, batch_size: int = 256
) -> np.ndarray:
    """``(N, n_units)`` float32 representations of ``inputs`` at ``layer``, in eval mode.

    ``inputs`` is a batch in the form the model's forward takes (images, sequences
    or token ids); it is moved to the model's device batch by batch.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0 or not len(inputs):
        raise UserError("inputs must be a non-empty batch tensor (N, ...)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer; got {batch_size!r}")
    device = model_device(model)
    info = layer_info(model, inputs[:1].to(device), layer)
    parts = []
    with ModelPatch() as patch, torch.no_grad():
        patch.eval_mode(model)
        for start in range(0, len(inputs), batch_size):
            output = run_to_layer(model, info, inputs[start:start + batch_size].to(device))
            parts.append(unit_activations(info, output).float().cpu())
    return torch.cat(parts).numpy()


def project_2d(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``(N, 2)`` coordinates of ``(N, D)`` features by PCA or t-SNE.

    PCA is deterministic (scikit-learn fixes the sign of each component). t-SNE
    starts from the PCA layout (seeded random for 1-D features) with
    ``random_state=seed`` and a perplexity of
    ``min(30, (N - 1) / 3)``, so small sample sets stay valid and repeated runs
    give the same picture.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method not in PROJECTIONS:
        raise UserError(f"unknown projection '{method}'; valid projections: {', '.join(PROJECTIONS)}")
    values = np.asarray(features, dtype=np.float64)
    if values.ndim != 2 or len(values) < 3:
        raise UserError(f"features must be (N, D) with N >= 3 samples; got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise UserError("features contain NaN or infinite values")
    if method == "tsne":
        perplexity = max(1.0, min(MAX_PERPLEXITY, (len(values) - 1) / 3))
        init = "pca" if values.shape[1] >= 2 else "random"
        coords = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed).fit_transform(values)
    else:
        components = min(2, values.shape[1])
        coords = PCA(n_components=components, svd_solver="full").fit_transform(values)
        if components == 1:
            coords = np.hstack([coords, np.zeros_like(coords)])
    return coords.astype(np.float32)


def plot_embedding(
    coords: np.ndarray,
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    path: str | Path | None = None,
    title: str = "",
    *,
    dpi: int = 120,
) -> Figure:
    """Scatter of ``(N, 2)`` coordinates, one colour per class, with a legend."""
    points = np.asarray(coords, dtype=np.float64)
    classes = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(int)
    if points.ndim != 2 or points.shape[1] != 2:
        raise UserError(f"coords must be (N, 2); got shape {points.shape}")
    if classes.shape != (len(points),):
        raise UserError(f"{classes.size} labels for {len(points)} points")
    if len(classes) and (classes.min() < 0 or classes.max() >= len(class_names)):
        raise UserError(f"labels must lie in [0, {len(class_names)}); got {classes.min()}..{classes.max()}")
    figure = Figure(figsize=(6.4, 5.0), dpi=dpi, layout="constrained")
    axis = figure.subplots()
    colours = colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for k, name in enumerate(class_names):
        chosen = classes == k
        if chosen.any():
            axis.scatter(points[chosen, 0], points[chosen, 1], s=9, alpha=0.75, color=colours(k % colours.N),
                         label=str(name), linewidths=0)
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2, frameon=False)
    axis.set_title(title, fontsize=10)
    axis.set_xticks([])
    axis.set_yticks([])
    return save_figure(figure, path, tight=True)


def write_embedding_csv(
    path: str | Path, coords: np.ndarray, labels: np.ndarray, class_names: Sequence[str], index: np.ndarray
) -> Path:
    """CSV with one row per sample: its test-split index, x, y, label and class name."""
    rows = [{"index": int(i), "x": f"{float(x):.6g}", "y": f"{float(y):.6g}", "label": int(label),
             "class": class_names[int(label)]} for i, (x, y), label in zip(index, coords, labels)]
    return write_csv(path, rows, ["index", "x", "y", "label", "class"])

