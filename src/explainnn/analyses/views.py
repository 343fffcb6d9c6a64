"""Views of what a network learned: filters, activation maps, activation maximisation.

These are the classic pictures of a trained CNN or RNN - the first layer's
kernels, what each channel of a conv layer responds to in one input, and the
input that drives one unit hardest - plus, through :mod:`explainnn.analyses.embeddings`,
a 2-D projection of a hidden layer coloured by class. Given a causal graph, the
pictures mark the units that discovery found causal, which is how the views tie
back to the interventional explanation. Layers are chosen by module structure
(:func:`explainnn.interventions.layers.find_layers`), never by name.

Figures use matplotlib's object API on the Agg canvas; every ``plot_*`` function
returns the ``Figure`` and writes a PNG (atomically) when given a path. Signed
values (kernels, pre-activation maps) use a diverging colormap with symmetric
limits, so white is zero.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from explainnn.analyses.embeddings import (
    hidden_representations,
    layer_info,
    project_2d,
    run_to_layer,
    unit_activations,
)
from explainnn.errors import UserError
from explainnn.files import save_figure
from explainnn.interventions.hooks import ModelPatch
from explainnn.interventions.layers import LayerInfo, find_layers, is_stateful, resolve_layer
from explainnn.progress import progress_bar
from explainnn.torch_utils import model_device

if TYPE_CHECKING:
    from explainnn.causal import CausalGraph
    from explainnn.data import Dataset

CMAP = "RdBu_r"
CAUSAL = "#d62728"
CELL = 1.3
"""Inches per picture in a grid."""
MAX_FILTERS = 64
MAX_CHANNELS = 16
MAX_UNITS = 16
"""Units maximised by :func:`learned_views` (the causal ones first, else the most active)."""
COLUMNS = 8
NOISE = 0.01
"""Start noise, as a fraction of the value range: it breaks ties while keeping the penalties near 0."""


# ----------------------------------------------------------------------- filters
def conv_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Conv1d/Conv2d, in execution order.

    Execution order needs ``example_input`` (a batch the model reads); without it
    the modules come in registration order, which is execution order for
    ``nn.Sequential`` models such as LeNet.
    """
    if example_input is not None:
        example = example_input[:1].to(model_device(model))
        return [(layer.name, layer.module) for layer in find_layers(model, example) if layer.unit_kind.spatial]
    return [(name, module) for name, module in model.named_modules() if isinstance(module, (nn.Conv1d, nn.Conv2d))]


def plot_filters(
    model: nn.Module,
    path: str | Path | None = None,
    *,
    layer: str | None = None,
    example_input: torch.Tensor | None = None,
    shared: bool = True,
    dpi: int = 120,
) -> Figure:
    """The kernels of the first conv layer (or of conv layer ``layer``) as pictures.

    One picture per filter when it reads one channel (Conv2d) or three (shown as
    an RGB image, 0 at mid-grey); otherwise a grid with one row per input channel
    and one column per filter. Conv1d kernels are ``input channels x width``
    strips. ``shared`` uses one symmetric colour scale for the whole layer (so
    filters compare); otherwise each kernel gets its own. At most 64 filters and
    16 input channels are drawn.
    """
    name, module = _conv_layer(conv_layers(model, example_input), layer)
    parameter = module.weight
    assert isinstance(parameter, torch.Tensor)
    weight = parameter.detach().float().cpu().numpy()
    n_filters, n_inputs = weight.shape[:2]
    one_d = weight.ndim == 3
    if one_d:
        weight = weight[:, None]
    weight = weight[:MAX_FILTERS, :MAX_CHANNELS]
    shown_filters, shown_inputs = weight.shape[:2]
    rgb = not one_d and n_inputs == 3
    limit = _limit(weight)

    if rgb or shown_inputs == 1:
        columns = min(COLUMNS, shown_filters)
        rows = math.ceil(shown_filters / columns)
    else:
        rows, columns = shown_inputs, shown_filters
    figure = Figure(figsize=(CELL * columns + (0.8 if shared and not rgb else 0), CELL * rows + 0.6),
                    dpi=dpi, layout="constrained")
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False))
    image = _draw_kernels(axes, weight, limit if shared else None, rgb=rgb, one_d=one_d)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for axis in axes.flat[shown_filters if (rgb or shown_inputs == 1) else axes.size:]:
        axis.set_visible(False)
    if shared and image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, ticks=[-limit, 0, limit], format="%.2g")
    size = "x".join(str(s) for s in parameter.shape[2:])
    detail = "rows: input channels, " if one_d and n_inputs > 1 else ""
    more = f"; first {shown_filters} filters, {min(n_inputs, MAX_CHANNELS)} inputs shown" if (
        shown_filters < n_filters or n_inputs > MAX_CHANNELS) else ""
    figure.suptitle(f"{name}: {n_filters} filters of {n_inputs} x {size} ({detail}"
                    f"{'RGB, grey = 0' if rgb else 'red > 0 > blue'}{more})", fontsize=9)
    return save_figure(figure, path, tight=True)


def _conv_layer(convs: list[tuple[str, nn.Module]], layer: str | None) -> tuple[str, nn.Module]:
    """The conv layer named ``layer`` (the first one when None) of ``convs``; a one-line error otherwise."""
    if not convs:
        raise UserError("the model has no Conv1d/Conv2d layer; filter pictures need a convolutional network")
    if layer is None:
        return convs[0]
    if layer in dict(convs):
        return layer, dict(convs)[layer]
    raise UserError(f"'{layer}' is not a convolutional layer; conv layers: {', '.join(n for n, _ in convs)}")


def _draw_kernels(axes: np.ndarray, weight: np.ndarray, limit: float | None, *, rgb: bool, one_d: bool) -> Any:
    """Draw the kernels ``weight`` (filters x inputs x ...) into ``axes``; returns the last colour-mapped image.

    ``limit`` is the shared symmetric colour scale; None gives each kernel its own.
    """
    shown_filters, shown_inputs = weight.shape[:2]
    image = None
    for f in range(shown_filters):
        if rgb:
            kernel = weight[f].transpose(1, 2, 0)
            scale = limit if limit is not None else _limit(kernel)
            axis = axes.flat[f]
            axis.imshow(np.clip(0.5 + 0.5 * kernel / scale, 0.0, 1.0), interpolation="nearest")
            axis.set_title(f"{f}", fontsize=8)
            continue
        for c in range(shown_inputs):
            kernel = weight[f, c]
            scale = limit if limit is not None else _limit(kernel)
            axis = axes.flat[f] if shown_inputs == 1 else axes[c, f]
            image = axis.imshow(kernel, cmap=CMAP, vmin=-scale, vmax=scale, interpolation="nearest",
                                aspect="auto" if one_d else "equal")
            if c == 0:
                axis.set_title(f"{f}", fontsize=8)
            if shown_inputs > 1 and f == 0:
                axis.set_ylabel(f"in {c}", fontsize=8)
    return image


# --------------------------------------------------------------- activation maps
def activation_maps(model: nn.Module, inputs: torch.Tensor, layer: str) -> torch.Tensor:
    """Per-channel outputs of conv layer ``layer`` for a batch: ``(N, C, H, W)`` (Conv1d ``(N, C, L)``).

    Values are the conv's output before its nonlinearity, computed in eval mode.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0 or not len(inputs):
        raise UserError("inputs must be a non-empty batch tensor (N, ...)")
    device = model_device(model)
    info = layer_info(model, inputs[:1].to(device), layer)
    if not info.unit_kind.spatial:
        convs = [name for name, _ in conv_layers(model, inputs)]
        raise UserError(f"activation maps need a convolutional layer; '{layer}' is {info.kind}; "
                        f"conv layers: {', '.join(convs) or 'none'}")
    with ModelPatch() as patch, torch.no_grad():
        patch.eval_mode(model)
        return run_to_layer(model, info, inputs.to(device)).detach().float().cpu()


def plot_activation_maps(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    path: str | Path | None = None,
    *,
    graph: CausalGraph | None = None,
    max_channels: int = 64,
    dpi: int = 120,
) -> Figure:
    """The input ``x`` (one sample, no batch axis) and every channel's activation map at ``layer``.

    With a causal ``graph``, the channels it finds causal in ``layer`` get a red
    frame and "causal" in their title. Maps share one symmetric colour scale.
    """
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise UserError("x must be one input sample without a batch axis, e.g. (C, H, W)")
    maps = activation_maps(model, x[None], layer)[0].numpy()
    causal, note = _causal_units(graph, layer)
    channels = min(len(maps), max_channels)
    columns = min(COLUMNS, channels + 1)
    rows = math.ceil((channels + 1) / columns)
    figure = Figure(figsize=(CELL * columns + 0.8, CELL * rows + 0.6), dpi=dpi, layout="constrained")
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False))
    _draw_input(axes.flat[0], x.detach().float().cpu().numpy(), None)
    axes.flat[0].set_title("input", fontsize=8)
    limit = _limit(maps[:channels])
    image = None
    for c in range(channels):
        axis = axes.flat[c + 1]
        if maps.ndim == 3:
            image = axis.imshow(maps[c], cmap=CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
        else:
            axis.plot(maps[c], color="black", linewidth=0.8)
            axis.set_ylim(-limit, limit)
        _frame(axis, f"{c}", c in causal)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for axis in axes.flat[channels + 1:]:
        axis.set_visible(False)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, ticks=[-limit, 0, limit], format="%.2g")
    more = f" (first {channels} of {len(maps)})" if channels < len(maps) else ""
    figure.suptitle(f"{layer}: activation maps of {len(maps)} channels{more}{note}", fontsize=9)
    return save_figure(figure, path, tight=True)


# ------------------------------------------------------- activation maximisation
def maximize_activation(
    model: nn.Module,
    layer: str,
    unit: int | Sequence[int],
    *,
    input_shape: Sequence[int],
    steps: int = 200,
    lr: float = 0.1,
    l2: float = 1e-3,
    tv: float = 2e-3,
    jitter: int = 2,
    seed: int = 0,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    progress: bool = False,
) -> torch.Tensor:
    """The input that maximises one unit's activation, by regularised gradient ascent.

    The activation is the one :func:`~explainnn.analyses.embeddings.unit_activations`
    defines: a conv channel's mean over space, a linear unit's output, a recurrent
    unit's hidden state after the last step (over image rows or a sequence). Adam
    ascends ``activation - l2 * sum((x - mid)^2) - tv * total_variation(x)`` from a
    seeded start at ``mid`` plus a little noise, where ``mid`` is the middle of
    ``value_range`` (0 without one) and total variation sums the absolute
    differences between neighbours. The penalties are about zero at that start,
    so what the ascent gains is activation. Image inputs ``(C, H, W)`` are rolled by
    up to ``jitter`` pixels each step so the picture does not rely on exact pixel
    positions, and every step clamps the input to ``value_range`` (``None``: no
    clamp). Total variation runs over the image plane, or over time for sequences.

    ``unit`` may be a list: the units are optimised together as one batch (from
    the same start) and the result is ``(U, *input_shape)``; one unit gives
    ``input_shape``. ``steps=0`` returns the start. The model is left as it was:
    its training flags come back, and only the input's gradient is computed, so
    parameters' ``.grad`` and ``requires_grad`` are untouched.
    """
    if any(isinstance(m, nn.Embedding) for m in model.modules()):
        raise UserError("activation maximisation needs continuous inputs; this model reads token ids "
                        "through an embedding, and an optimised embedding matches no token")
    shape = _shape(input_shape)
    single = isinstance(unit, (int, np.integer)) and not isinstance(unit, bool)
    units = [unit] if single else list(cast("Sequence[int]", unit))
    _check_options(steps=steps, lr=lr, l2=l2, tv=tv, jitter=jitter)
    low, high = _range(value_range)
    device = model_device(model)
    info = layer_info(model, torch.zeros((1, *shape), device=device), layer)
    if info.unit_kind.reads_ids:
        raise UserError(f"layer '{layer}' is an embedding of token ids; it has no continuous input to optimise")
    units = _check_units(info, units)

    generator = torch.Generator().manual_seed(seed)
    mid, spread = (0.0, 1.0) if value_range is None else ((low + high) / 2, high - low)
    start = (mid + NOISE * spread * torch.randn(shape, generator=generator)).clamp(low, high)
    x = start.expand(len(units), *shape).clone().to(device).requires_grad_(True)
    with ModelPatch() as patch, torch.enable_grad(), _rnn_backward_without_cudnn(model):
        patch.eval_mode(model)
        _ascend(model, info, x, units, generator, steps=steps, lr=lr, jitter=jitter,
                penalties={"mid": mid, "l2": l2, "tv": tv}, clamp=None if value_range is None else (low, high),
                progress=progress)
    result = x.detach().cpu()
    return result[0] if single else result


def _ascend(model: nn.Module, info: LayerInfo, x: torch.Tensor, units: list[int], generator: torch.Generator, *,
            steps: int, lr: float, jitter: int, penalties: dict[str, float], clamp: tuple[float, float] | None,
            progress: bool) -> None:
    """``steps`` Adam steps on ``x`` (one row per unit), in place: activation up, the penalties down."""
    rows = torch.arange(len(units), device=x.device)
    index = torch.tensor(units, device=x.device)
    image = x.dim() == 4
    mid, l2, tv = penalties["mid"], penalties["l2"], penalties["tv"]
    optimizer = torch.optim.Adam([x], lr=lr)
    for _ in progress_bar(range(steps), desc=f"maximise {info.name}", unit="step", enabled=progress, leave=False):
        shifted = x
        if image and jitter:
            dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
            shifted = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        activation = unit_activations(info, run_to_layer(model, info, shifted))[rows, index]
        loss = -activation.sum() + l2 * (x - mid).pow(2).sum() + tv * _total_variation(x, image).sum()
        (x.grad,) = torch.autograd.grad(loss, x)
        optimizer.step()
        if clamp is not None:
            with torch.no_grad():
                x.clamp_(*clamp)


def plot_maximization(
    model: nn.Module,
    layer: str,
    units: Sequence[int] | None = None,
    path: str | Path | None = None,
    *,
    input_shape: Sequence[int],
    graph: CausalGraph | None = None,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    dpi: int = 120,
    **options: Any,
) -> Figure:
    """A grid of the inputs that maximise ``units`` of ``layer``, each titled with the activation reached.

    Without ``units`` the causal units of ``layer`` in ``graph`` are shown; with a
    graph, causal units get a red frame. ``options`` go to :func:`maximize_activation`
    (``steps``, ``lr``, ``l2``, ``tv``, ``jitter``, ``seed``, ``progress``).
    """
    causal, note = _causal_units(graph, layer)
    if units is None:
        if graph is None:
            raise UserError("name the units to maximise, or pass a causal graph to show its causal units")
        if not causal:
            raise UserError(f"the causal graph has no causal units in layer '{layer}'; name the units to maximise")
        units = sorted(causal)
    units = list(units)
    if not units:
        raise UserError("units must name at least one unit")
    inputs = maximize_activation(model, layer, units, input_shape=input_shape, value_range=value_range, **options)
    reached = hidden_representations(model, inputs, layer)[np.arange(len(units)), units]
    return draw_maximization(inputs, units, path, layer=layer, activations=reached, causal=causal,
                             value_range=value_range, note=note, dpi=dpi)


def draw_maximization(
    inputs: torch.Tensor | np.ndarray,
    units: Sequence[int],
    path: str | Path | None = None,
    *,
    layer: str,
    activations: Sequence[float] | np.ndarray | None = None,
    causal: Collection[int] = (),
    value_range: tuple[float, float] | None = (0.0, 1.0),
    note: str = "",
    dpi: int = 120,
) -> Figure:
    """Draw maximising inputs ``(U, *input_shape)``: images as pictures, sequences as time x feature maps."""
    pictures = np.asarray(inputs.detach().float().cpu() if isinstance(inputs, torch.Tensor) else inputs)
    if len(pictures) != len(units):
        raise UserError(f"{len(pictures)} inputs for {len(units)} units")
    columns = min(COLUMNS, len(units))
    rows = math.ceil(len(units) / columns)
    figure = Figure(figsize=(CELL * columns, CELL * rows + 0.6), dpi=dpi, layout="constrained")
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False))
    for k, unit in enumerate(units):
        axis = axes.flat[k]
        _draw_input(axis, pictures[k], value_range)
        title = f"{unit}" + ("" if activations is None else f": {float(activations[k]):.3g}")
        _frame(axis, title, unit in set(causal))
        axis.set_xticks([])
        axis.set_yticks([])
    for axis in axes.flat[len(units):]:
        axis.set_visible(False)
    figure.suptitle(f"{layer}: inputs that maximise each unit (title: unit: activation){note}", fontsize=9)
    return save_figure(figure, path, tight=True)


# -------------------------------------------------------------------- all views
@dataclass(frozen=True)
class ActivationMapView:
    """Which activation maps to draw: conv ``layer`` on test sample ``sample`` (of class ``class_name``)."""

    layer: str
    sample: int
    class_name: str


@dataclass(frozen=True)
class MaximizationView:
    """The inputs ``(U, *input_shape)`` that maximise ``units`` of ``layer`` and the ``activations`` they reach.

    ``source`` says how the units were chosen ("causal": the graph's causal units of
    the layer, else "most active" on the samples); ``causal`` and ``note`` are the
    graph's causal units there and a title note saying what the red frames mean.
    """

    layer: str
    units: list[int]
    source: str
    inputs: torch.Tensor
    activations: np.ndarray
    value_range: tuple[float, float]
    causal: frozenset[int]
    note: str


@dataclass(frozen=True)
class EmbeddingView:
    """The 2-D ``projection`` ``coords`` of the representations at ``layer`` of the test samples ``chosen``
    (``labels`` their classes; ``n_units`` the layer's width)."""

    layer: str
    projection: str
    chosen: np.ndarray
    labels: np.ndarray
    coords: np.ndarray
    n_units: int


@dataclass(frozen=True)
class Views:
    """What :func:`learned_views` found to show: each view, or None where it does not apply.

    ``filters`` is the conv layer whose kernels to draw; ``skipped`` lists
    ``(view, reason)`` for the views that do not apply, in the order they were met.
    """

    filters: str | None = None
    activation_maps: ActivationMapView | None = None
    maximization: MaximizationView | None = None
    embedding: EmbeddingView | None = None
    skipped: tuple[tuple[str, str], ...] = ()


def learned_views(
    model: nn.Module,
    dataset: Dataset,
    *,
    graph: CausalGraph | None = None,
    filters: bool = True,
    activation_maps: bool = True,
    maximize: bool = True,
    layer: str | None = None,
    projection: str = "pca",
    n_samples: int = 500,
    maximize_steps: int = 200,
    seed: int = 0,
    plots: bool = True,
    progress: bool = False,
) -> Views:
    """The views of ``model`` on ``dataset``'s test split, computed (pictures are drawn by the caller).

    * ``filters``: the first conv layer (its kernels are :func:`plot_filters`);
    * ``activation_maps``: one test input (the first of the graph's target class,
      else the first) at ``layer`` if it is a conv layer, else at the last conv
      layer (:func:`plot_activation_maps`);
    * ``maximize``: the inputs that maximise up to 16 units of ``layer`` (default:
      the last hidden layer before the output) - the graph's causal units there,
      else the most active units on the samples (``maximize_steps`` gradient steps);
    * ``projection`` (pca or tsne; "none" skips it): the 2-D projection of
      ``n_samples`` seeded test samples' representations at ``layer``.

    Views that do not apply (no conv layer; maximisation for token models; filters
    and maps, which are only pictures, without ``plots``) are listed in
    :attr:`Views.skipped` with the reason.
    """
    if projection not in ("pca", "tsne", "none"):
        raise UserError(f"unknown projection '{projection}'; valid projections: pca, tsne, none")
    layers = find_layers(model, dataset.x_test[:1].to(model_device(model)))
    if layer is not None:
        resolve_layer(layers, model, layer)
    convs = [info.name for info in layers if info.unit_kind.spatial]
    hidden = layer or _last_hidden(layers)
    skipped: list[tuple[str, str]] = []
    first_conv, maps = None, None
    if (filters or activation_maps) and not convs:
        skipped.append(("filters and activation maps", "the model has no convolutional layer"))
    elif (filters or activation_maps) and not plots:
        skipped.append(("filters and activation maps", "they are pictures and plots are disabled"))
    else:
        first_conv = convs[0] if filters else None
        if activation_maps:
            sample = _example_index(graph, dataset.y_test)
            maps = ActivationMapView(layer if layer in convs else convs[-1], sample,
                                     str(dataset.info.class_names[int(dataset.y_test[sample])]))
    maximization, embedding = _representation_views(model, dataset, layers, hidden, skipped, graph=graph,
                                                    maximize=maximize, projection=projection, n_samples=n_samples,
                                                    maximize_steps=maximize_steps, seed=seed, progress=progress)
    return Views(first_conv, maps, maximization, embedding, tuple(skipped))


def _representation_views(model: nn.Module, dataset: Dataset, layers: list[LayerInfo], hidden: str | None,
                          skipped: list[tuple[str, str]], *, graph: CausalGraph | None, maximize: bool,
                          projection: str, n_samples: int, maximize_steps: int, seed: int,
                          progress: bool) -> tuple[MaximizationView | None, EmbeddingView | None]:
    """The views of layer ``hidden``'s representations: maximising inputs and the 2-D embedding."""
    x = dataset.x_test
    chosen = np.sort(np.random.default_rng(seed).choice(len(x), size=min(n_samples, len(x)), replace=False))
    features = None
    if (maximize or projection != "none") and hidden is None:
        skipped.append(("maximisation and embedding", "the model has no hidden layer before its output"))
    elif maximize or projection != "none":
        assert hidden is not None
        features = hidden_representations(model, x[torch.from_numpy(chosen)], hidden)

    maximization = embedding = None
    if maximize and features is not None and hidden is not None:
        if dataset.info.modality == "tokens" or any(info.unit_kind.reads_ids for info in layers):
            skipped.append(("maximisation", "token model: an input optimised in embedding space matches no token"))
        else:
            maximization = _maximization_view(model, x, hidden, features, graph=graph, steps=maximize_steps,
                                              seed=seed, progress=progress)
    if projection == "none":
        skipped.append(("embedding", "projection: none"))
    elif features is not None and hidden is not None:
        coords = project_2d(features, projection, seed=seed)
        labels = dataset.y_test[torch.from_numpy(chosen)].numpy()
        embedding = EmbeddingView(hidden, projection, chosen, labels, coords, int(features.shape[1]))
    return maximization, embedding


def _maximization_view(model: nn.Module, x: torch.Tensor, hidden: str, features: np.ndarray, *,
                       graph: CausalGraph | None, steps: int, seed: int, progress: bool) -> MaximizationView:
    """The maximising inputs of ``hidden``'s causal (else most active) units."""
    units, source = _units_to_maximize(graph, hidden, features)
    value_range = (float(x.min()), float(x.max()))
    inputs = maximize_activation(model, hidden, units, input_shape=tuple(x.shape[1:]), seed=seed,
                                 steps=steps, value_range=value_range, progress=progress)
    reached = hidden_representations(model, inputs, hidden)[np.arange(len(units)), units]
    causal, note = _causal_units(graph, hidden)
    return MaximizationView(hidden, units, source, inputs, reached, value_range, frozenset(causal), note)


# ---------------------------------------------------------------------- helpers
def _last_hidden(layers: list[LayerInfo]) -> str | None:
    """The layer the output layer reads (by the traced wiring), else the last wide layer before it."""
    names = {info.name for info in layers[:-1]}
    output = layers[-1]
    if output.parent in names:
        return output.parent
    wide = [info.name for info in layers[:-1] if info.n_units > 1 and not info.unit_kind.reads_ids]
    return wide[-1] if wide else None


def _units_to_maximize(graph: CausalGraph | None, layer: str, features: np.ndarray) -> tuple[list[int], str]:
    causal, _ = _causal_units(graph, layer)
    if causal:
        return sorted(causal)[:MAX_UNITS], "causal"
    order = np.argsort(-features.mean(axis=0), kind="stable")
    return [int(u) for u in order[:MAX_UNITS]], "most active"


def _example_index(graph: CausalGraph | None, labels: torch.Tensor) -> int:
    target = None if graph is None else graph.metadata.get("target")
    if isinstance(target, int):
        matches = torch.nonzero(labels == target).flatten()
        if len(matches):
            return int(matches[0])
    return 0


def _causal_units(graph: CausalGraph | None, layer: str) -> tuple[set[int], str]:
    """The causal units of ``layer`` in ``graph`` and a title note saying what the red frames mean."""
    if graph is None:
        return set(), ""
    if layer not in graph.layers():
        return set(), f"; the causal graph has no units in {layer}"
    target = graph.metadata.get("target")
    about = f" for class {target}" if target is not None else ""
    return set(graph.causes(layer)), f"; red: causal{about}"


def _frame(axis, title: str, causal: bool) -> None:
    for spine in axis.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(CAUSAL if causal else "#bbbbbb")
        spine.set_linewidth(2.5 if causal else 0.6)
    axis.set_title(f"{title} causal" if causal else title, fontsize=8, color=CAUSAL if causal else "black")


def _draw_input(axis, sample: np.ndarray, value_range: tuple[float, float] | None) -> None:
    """An image ``(C, H, W)`` as grey or RGB; a sequence ``(T, F)`` as a line (F = 1) or a feature x time map."""
    low, high = value_range if value_range is not None else (float(sample.min()), float(sample.max()))
    if sample.ndim == 3:
        if sample.shape[0] == 3:
            axis.imshow(np.clip((sample.transpose(1, 2, 0) - low) / ((high - low) or 1.0), 0, 1))
        else:
            axis.imshow(sample.mean(axis=0), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    elif sample.ndim == 2 and sample.shape[1] == 1:
        axis.plot(sample[:, 0], color="black", linewidth=0.8)
        axis.set_ylim(low, high)
    elif sample.ndim == 2:
        axis.imshow(sample.T, cmap="viridis", vmin=low, vmax=high, aspect="auto", interpolation="nearest")
    else:
        axis.plot(sample.reshape(-1), color="black", linewidth=0.8)


def _total_variation(x: torch.Tensor, image: bool) -> torch.Tensor:
    """Per-sample sum of absolute differences between neighbours (image plane, or axis 1 for sequences)."""
    if image:
        vertical = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
        horizontal = (x[..., 1:] - x[..., :-1]).abs().flatten(1).sum(1)
        return vertical + horizontal
    if x.dim() < 2 or x.shape[1] < 2:
        return x.new_zeros(len(x))
    return (x[:, 1:] - x[:, :-1]).abs().flatten(1).sum(1)


def _limit(values: np.ndarray) -> float:
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    return largest if largest > 0 else 1.0


def _shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else ()
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise UserError(f"input_shape must be the shape of one sample, e.g. (1, 28, 28); got {input_shape!r}")
    return shape


def _range(value_range: tuple[float, float] | None) -> tuple[float, float]:
    if value_range is None:
        return -math.inf, math.inf
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise UserError(f"value_range must be (low, high) or None; got {value_range!r}") from None
    if not low < high:
        raise UserError(f"value_range must have low < high; got {value_range!r}")
    return low, high


def _check_options(**options: float) -> None:
    for name in ("steps", "jitter"):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"{name} must be a non-negative integer; got {value!r}")
    for name in ("lr", "l2", "tv"):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or (
                name == "lr" and value == 0):
            kind = "a positive" if name == "lr" else "a non-negative"
            raise UserError(f"{name} must be {kind} number; got {value!r}")


def _check_units(info: LayerInfo, units: list) -> list[int]:
    if not units:
        raise UserError("unit must be a unit index or a non-empty list of them")
    for unit in units:
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < info.n_units:
            raise UserError(f"layer '{info.name}' has units 0..{info.n_units - 1}; got unit {unit!r}")
    return [int(unit) for unit in units]


@contextlib.contextmanager
def _rnn_backward_without_cudnn(model: nn.Module) -> Iterator[None]:
    """cuDNN's RNN backward only runs in training mode; maximisation needs it in eval mode."""
    recurrent = any(is_stateful(m) for m in model.modules())
    saved = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = saved and not recurrent
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = saved
