"""Pictures of attributions: image grids, time x feature heatmaps, coloured text.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no
window, safe in scripts and CI); every function returns the ``Figure`` and writes
a PNG when given a ``path``. Attributions use a diverging colormap centred at zero
with symmetric limits per panel, so red is "for the class", blue "against" and
white "no effect" whatever a method's scale.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from explainnn.errors import UserError
from explainnn.files import save_figure

CMAP = "RdBu_r"
CELL = 1.6
"""Inches per grid cell."""


def _array(values: object, label: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise UserError(f"{label} contains NaN or infinite values")
    return array


def _limit(values: np.ndarray) -> float:
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    return largest if largest > 0 else 1.0


def _as_picture(sample: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image sample ``(C, H, W)`` or ``(H, W)`` as something ``imshow`` shows."""
    if sample.ndim == 2:
        return sample, "gray"
    if sample.ndim == 3 and sample.shape[0] == 1:
        return sample[0], "gray"
    if sample.ndim == 3 and sample.shape[0] == 3:
        low, high = sample.min(), sample.max()
        return (sample.transpose(1, 2, 0) - low) / ((high - low) or 1.0), None
    raise UserError(f"cannot draw an input of shape {sample.shape}; expected (1, H, W), (3, H, W) or (H, W)")


def _as_map(attribution: np.ndarray) -> np.ndarray:
    """Channels summed: one signed value per pixel."""
    return attribution.sum(axis=0) if attribution.ndim == 3 else attribution


def _methods(inputs: np.ndarray, attributions: Mapping[str, object]) -> dict[str, np.ndarray]:
    if not isinstance(attributions, Mapping) or not attributions:
        raise UserError("attributions must be a non-empty dict: method name -> array")
    arrays = {}
    for name, values in attributions.items():
        array = _array(values, f"attributions of '{name}'")
        if array.shape != inputs.shape:
            raise UserError(
                f"attributions of '{name}' have shape {array.shape}, the inputs {inputs.shape}; "
                "token scores (N, L) are drawn by plot_text_attributions"
            )
        arrays[str(name)] = array
    return arrays


def plot_attribution_grid(
    inputs: object,
    attributions: Mapping[str, object],
    path: str | Path | None = None,
    *,
    titles: Mapping[str, str] | Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    dpi: int = 100,
) -> Figure:
    """One row per sample: the input in gray, then each method's map.

    ``inputs`` is ``(N, C, H, W)`` (or ``(N, H, W)``); ``attributions`` maps method
    names to arrays of the same shape. ``titles`` renames the method columns (a
    dict by method or a list in order); ``labels`` annotate the rows (e.g.
    ``"label 3, predicted 3"``).
    """
    images = _array(inputs, "inputs")
    if images.ndim not in (3, 4):
        raise UserError(f"inputs must be (N, C, H, W) or (N, H, W) images; got shape {images.shape}")
    maps = _methods(images, attributions)
    names = list(maps)
    if titles is None:
        headers = names
    elif isinstance(titles, Mapping):
        headers = [titles.get(name, name) for name in names]
    else:
        headers = list(titles)
        if len(headers) != len(names):
            raise UserError(f"{len(headers)} titles for {len(names)} methods")
    if labels is not None and len(labels) != len(images):
        raise UserError(f"{len(labels)} labels for {len(images)} samples")

    rows, columns = len(images), len(names) + 1
    figure = Figure(figsize=(CELL * columns, CELL * rows), layout="constrained")
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False))
    for row in range(rows):
        picture, cmap = _as_picture(images[row])
        axes[row, 0].imshow(picture, cmap=cmap)
        axes[row, 0].set_ylabel(labels[row] if labels is not None else f"sample {row}", fontsize=8)
        for column, name in enumerate(names, start=1):
            heat = _as_map(maps[name][row])
            limit = _limit(heat)
            shown = axes[row, column].imshow(heat, cmap=CMAP, vmin=-limit, vmax=limit)
            if row == rows - 1:
                colorbar = figure.colorbar(shown, ax=axes[row, column], orientation="horizontal",
                                           shrink=0.8, ticks=[-limit, 0, limit])
                colorbar.ax.tick_params(labelsize=6)
                colorbar.ax.set_xticklabels(["-max", "0", "+max"])
    axes[0, 0].set_title("input", fontsize=9)
    for column, header in enumerate(headers, start=1):
        axes[0, column].set_title(header, fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    return save_figure(figure, path, dpi=dpi, tight=True)


def plot_sequence_attributions(
    inputs: object,
    attributions: object,
    path: str | Path | None = None,
    *,
    dpi: int = 100,
) -> Figure:
    """Time x feature heatmaps of sequence attributions, one row per sample.

    ``inputs`` is ``(N, T, F)`` sequences or ``(N, C, H, W)`` images read as rows
    (time = row, features = channels x columns). ``attributions`` is one array of
    the inputs' shape or a dict method -> array. One-feature sequences are drawn
    as the signal over a coloured band of attributions; wider ones as heatmaps
    with time running down, beside the input.
    """
    data = _array(inputs, "inputs")
    if data.ndim not in (3, 4):
        raise UserError(f"inputs must be (N, T, F) sequences or (N, C, H, W) images; got shape {data.shape}")
    maps = _methods(data, attributions if isinstance(attributions, Mapping) else {"attribution": attributions})

    def steps(array: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` -> ``(N, H, C * W)``, as the recurrent models read it."""
        return array.transpose(0, 2, 1, 3).reshape(len(array), array.shape[2], -1) if array.ndim == 4 else array

    data = steps(data)
    maps = {name: steps(array) for name, array in maps.items()}
    names = list(maps)
    rows, (length, features) = len(data), data.shape[1:]
    signal = features == 1
    columns = len(names) if signal else len(names) + 1
    width = 4.0 if signal else CELL
    figure = Figure(figsize=(width * columns, 1.6 * rows if signal else CELL * rows), layout="constrained")
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False))
    time = np.arange(length)
    for row in range(rows):
        if not signal:
            axes[row, 0].imshow(data[row], cmap="gray", aspect="auto")
            axes[row, 0].set_ylabel(f"sample {row}\ntime step", fontsize=8)
        for column, name in enumerate(names, start=0 if signal else 1):
            axis, values = axes[row, column], maps[name][row]
            limit = _limit(values)
            if signal:
                low, high = float(data[row].min()), float(data[row].max())
                pad = 0.05 * ((high - low) or 1.0)
                axis.imshow(values.T, cmap=CMAP, vmin=-limit, vmax=limit, aspect="auto",
                            extent=(-0.5, length - 0.5, low - pad, high + pad))
                axis.plot(time, data[row, :, 0], color="black", linewidth=1.2)
                axis.set_ylabel(f"sample {row}", fontsize=8)
                axis.set_xlabel("time step", fontsize=8)
            else:
                axis.imshow(values, cmap=CMAP, vmin=-limit, vmax=limit, aspect="auto")
                axis.set_xlabel("feature", fontsize=8)
            axis.tick_params(labelsize=6)
            if row == 0:
                axis.set_title(name, fontsize=9)
    if not signal:
        axes[0, 0].set_title("input", fontsize=9)
    return save_figure(figure, path, dpi=dpi, tight=True)


def _aligned(tokens: Sequence[str], scores: object) -> np.ndarray:
    """The scores of ``tokens``: the last ``len(tokens)`` of a left-padded row."""
    values = _array(scores, "scores").reshape(-1)
    if len(values) < len(tokens):
        raise UserError(f"{len(values)} scores for {len(tokens)} tokens")
    return values[len(values) - len(tokens):]


def _colour(score: float, limit: float) -> str:
    strength = min(abs(score) / limit, 1.0)
    red, blue = (214, 39, 40), (31, 119, 180)
    r, g, b = red if score >= 0 else blue
    return f"rgba({r}, {g}, {b}, {0.85 * strength:.3f})"


def text_html(tokens: Sequence[str], scores: object, *, title: str | None = None) -> str:
    """Tokens as HTML spans shaded by score (red for, blue against), inline CSS only.

    ``scores`` may be the full left-padded row of ``(N, L)`` token attributions:
    the last ``len(tokens)`` values are used. Tokens and title are HTML-escaped;
    each token's score shows on hover.
    """
    values = _aligned(tokens, scores)
    limit = _limit(values)
    spans = "".join(
        f'<span title="{value:+.4f}" style="background-color: {_colour(value, limit)}; '
        f'padding: 1px 3px; margin: 1px; border-radius: 3px; display: inline-block;">'
        f"{html.escape(str(token))}</span>"
        for token, value in zip(tokens, values)
    )
    heading = (f'<div style="font-weight: bold; margin-bottom: 4px;">{html.escape(title)}</div>'
               if title else "")
    return (
        '<div style="font-family: sans-serif; font-size: 14px; line-height: 1.9; color: #111;">'
        f"{heading}{spans}</div>"
    )


def plot_text_attributions(
    tokens_list: Sequence[Sequence[str]],
    scores_dict: Mapping[str, object],
    path: str | Path | None = None,
    *,
    dpi: int = 100,
) -> Figure:
    """One panel per sentence: a methods x tokens heatmap, each method scaled to [-1, 1].

    ``scores_dict`` maps method names to ``(N, L)`` token scores (left-padded rows
    are aligned to the tokens as in :func:`text_html`).
    """
    if not tokens_list:
        raise UserError("tokens_list is empty; pass one list of tokens per sample")
    if not isinstance(scores_dict, Mapping) or not scores_dict:
        raise UserError("scores_dict must be a non-empty dict: method name -> (N, L) scores")
    names = list(scores_dict)
    arrays = {name: _array(scores_dict[name], f"scores of '{name}'") for name in names}
    for name, array in arrays.items():
        if array.ndim != 2 or len(array) != len(tokens_list):
            raise UserError(f"scores of '{name}' must be ({len(tokens_list)}, L); got shape {array.shape}")
    longest = max(len(tokens) for tokens in tokens_list) or 1
    figure = Figure(figsize=(max(4.0, 0.45 * longest + 1.5), (0.35 * len(names) + 1.1) * len(tokens_list)),
                    layout="constrained")
    axes = np.asarray(figure.subplots(len(tokens_list), 1, squeeze=False))[:, 0]
    shown = None
    for index, (axis, tokens) in enumerate(zip(axes, tokens_list)):
        rows = []
        for name in names:
            values = _aligned(tokens, arrays[name][index])
            rows.append(values / _limit(values))
        heat = np.array(rows).reshape(len(names), len(tokens))
        shown = axis.imshow(heat, cmap=CMAP, vmin=-1, vmax=1, aspect="auto")
        axis.set_xticks(range(len(tokens)), [str(t) for t in tokens], rotation=60, ha="right", fontsize=8)
        axis.set_yticks(range(len(names)), names, fontsize=8)
        axis.set_title(f"sample {index}", fontsize=9, loc="left")
    if shown is not None:
        figure.colorbar(shown, ax=list(axes), shrink=0.6, label="attribution / max |attribution|")
    return save_figure(figure, path, dpi=dpi, tight=True)


def plot_causal_maps(
    inputs: object,
    maps: Mapping[int, object],
    total: object,
    path: str | Path | None = None,
    *,
    layer: str = "",
    max_units: int = 16,
    title: str | None = None,
    dpi: int = 100,
) -> Figure:
    """The research code's per-node causal maps of one layer, one row per sample.

    Each row: the input, the sum of the maps, then one map per causal unit (up
    to ``max_units``), all on the same diverging scale [-1, 1] as
    :func:`explainnn.attributions.causal_path_maps` normalises them, which the
    colour bar shows. ``title`` replaces the default title, which names the
    layer and says how many of its causal units are shown.
    """
    images = _array(inputs, "inputs")
    units = sorted(maps)[:max_units]
    arrays = {unit: _array(maps[unit], f"map of unit {unit}") for unit in units}
    summed = _array(total, "sum of the maps")
    rows, columns = len(images), 2 + len(units)
    figure = Figure(figsize=(1.3 * columns + 1.0, 1.4 * rows + 0.9), layout="constrained")
    axes = np.atleast_2d(figure.subplots(rows, columns, squeeze=False))
    shown = None
    for r in range(rows):
        picture, cmap = _as_picture(images[r])
        panels = [(picture, cmap, "input"), (_as_map(summed[r]), CMAP, "sum of the maps")]
        panels += [(arrays[unit][r], CMAP, f"{layer}:{unit}" if layer else f"unit {unit}") for unit in units]
        for c, (image, colours, name) in enumerate(panels):
            ax = axes[r, c]
            if colours == CMAP:
                shown = ax.imshow(image, cmap=colours, vmin=-1, vmax=1)
            else:
                ax.imshow(image, cmap=colours)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
    if shown is not None:
        figure.colorbar(shown, ax=axes[:, 1:].ravel().tolist(), shrink=min(0.8, 3.0 / max(rows, 1) + 0.3),
                        label="contribution / max |contribution| (per sample)")
    where = f"layer {layer}" if layer else "the layer"
    count = (f"all {len(maps)} causal units" if len(maps) <= max_units
             else f"the first {max_units} of {len(maps)} causal units")
    figure.suptitle(title if title is not None else
                    f"Causal maps of {where} ({count})\nwhat each unit's causal parents contribute to it: "
                    "red raises the unit, blue lowers it", fontsize=10)
    return save_figure(figure, path, dpi=dpi, tight=True)
