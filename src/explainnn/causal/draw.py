"""A layered picture of a causal graph: depths left to right, input to output.

Each depth is one column; layers at the same depth (parallel branches such as a
residual block's main path and its projection shortcut) are stacked in that
column, each under its own name. Units of a layer are stacked vertically and
labelled with their index; large layers can be summarised to their strongest
units. An edge's width grows with the size of its effect on the target logit,
and its colour gives the sign: blue when the intervention lowered the target
(the cause supports the prediction), red when it raised it. Edges that skip
columns (skip connections, concatenations) are drawn as arcs, and edges along
a weight-free shared path (``via="path"``) are dashed. Figures are built
without pyplot, so drawing never touches the global backend or opens a window.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import networkx as nx
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from explainnn.errors import UserError
from explainnn.files import save_figure

if TYPE_CHECKING:
    from explainnn.causal.graph import CausalGraph

LOWERS_COLOUR = "tab:blue"
RAISES_COLOUR = "tab:red"
UNKNOWN_COLOUR = "0.6"
KIND_COLOURS = {"input": "#d9d9d9", "hidden": "#fdd49e", "output": "#a1d99b"}
MIN_WIDTH, MAX_WIDTH = 0.4, 4.0
MAX_ARROWS = 400  # beyond this, plain lines: arrow patches get slow and the layout already shows direction


def draw_graph(
    graph: CausalGraph,
    path: str | Path | None = None,
    ax: Axes | None = None,
    *,
    max_units_per_layer: int | None = None,
    title: str | None = None,
    effect_key: str = "effect",
    dpi: int = 150,
) -> Figure:
    """Draw ``graph`` as layered columns and return the Figure; save a PNG when ``path`` is given.

    ``max_units_per_layer`` keeps, per layer, the units with the largest total
    |effect| over their edges (an input layer of 784 pixels is unreadable
    otherwise) and notes how many were left out. ``effect_key`` names the edge
    attribute that sets width and colour; edges without a finite value are thin
    and grey. Pass ``ax`` to draw into an existing figure.
    """
    if max_units_per_layer is not None and (isinstance(max_units_per_layer, bool) or max_units_per_layer < 1):
        raise UserError(f"max_units_per_layer must be a positive integer or None; got {max_units_per_layer!r}")
    if ax is None:
        fig = Figure(figsize=_figure_size(graph, max_units_per_layer))
        ax = fig.add_subplot()
    else:
        fig = cast(Figure, ax.figure)
    ax.set_axis_off()
    if title:
        ax.set_title(title)

    layers = graph.layers()
    if not layers:
        ax.text(0.5, 0.5, "empty causal graph", ha="center", va="center", transform=ax.transAxes)
    else:
        _draw_layers(graph, ax, layers, max_units_per_layer, effect_key)

    return save_figure(fig, path, dpi=dpi, tight=True)


def _draw_layers(
    graph: CausalGraph, ax: Axes, layers: list[str], max_units: int | None, effect_key: str
) -> None:
    source = graph.digraph
    shown_units, left_out = _shown_units(graph, layers, max_units, effect_key)
    # One column per depth; the layers of a depth stacked top to bottom, one row gap between them.
    columns = _columns(graph, layers)
    heights = [sum(len(shown_units[layer]) for layer in column) + 1.5 * (len(column) - 1) for column in columns]
    tallest = max(heights)
    pos: dict[str, tuple[float, float]] = {}
    label_at: dict[str, tuple[float, float]] = {}
    for x, (column, height) in enumerate(zip(columns, heights)):
        y = (height - 1) / 2.0
        for layer in column:
            label_at[layer] = (float(x), y + 0.7)
            for n in shown_units[layer]:
                pos[n] = (float(x), y)
                y -= 1.0
            y -= 1.5
    shown = source.subgraph(pos)
    axes_height_pt = ax.get_position().height * ax.figure.get_size_inches()[1] * 72.0
    spacing_pt = axes_height_pt / (tallest + 2.0)  # room per unit, leaving space for the layer names
    node_size = min(500.0, max(20.0, (0.8 * spacing_pt) ** 2))
    font_size = min(8.0, max(4.0, 0.45 * spacing_pt))

    edges = list(shown.edges(data=True))
    _draw_edges(ax, shown, pos, edges, effect_key, node_size)
    nodes = list(pos)
    nx.draw_networkx_nodes(
        shown, pos, ax=ax, nodelist=nodes, node_size=node_size, edgecolors="0.3", linewidths=0.6,
        node_color=[KIND_COLOURS[source.nodes[n]["kind"]] for n in nodes],
    )
    nx.draw_networkx_labels(
        shown, pos, ax=ax, font_size=font_size, labels={n: str(source.nodes[n]["index"]) for n in nodes}
    )

    for layer, (label_x, label_y) in label_at.items():
        note = f" (+{left_out[layer]} more)" if layer in left_out else ""
        ax.text(label_x, label_y, layer + note, ha="center", va="bottom", fontsize=8 if len(columns) > 6 else 9)
    top = (tallest - 1) / 2.0
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylim(-top - 0.6, top + 1.6)
    _draw_legend(ax, any(attrs.get("via") == "path" for _, _, attrs in edges))


def _shown_units(graph: CausalGraph, layers: list[str], max_units: int | None,
                 effect_key: str) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The units drawn per layer (the ``max_units`` with the largest total |effect|) and how many were left out."""
    source = graph.digraph
    strength = {n: 0.0 for n in source}
    for u, v, value in source.edges(data=effect_key):
        strength[u] += _finite_abs(value)
        strength[v] += _finite_abs(value)
    shown_units: dict[str, list[str]] = {}
    left_out: dict[str, int] = {}
    for layer in layers:
        units = graph.units(layer)
        if max_units is not None and len(units) > max_units:
            strongest = set(sorted(units, key=lambda n: (-strength[n], source.nodes[n]["index"]))[:max_units])
            left_out[layer] = len(units) - max_units
            units = [n for n in units if n in strongest]
        shown_units[layer] = units
    return shown_units, left_out


def _draw_edges(ax: Axes, shown: nx.DiGraph, pos: dict[str, tuple[float, float]], edges: list, effect_key: str,
                node_size: float) -> None:
    """Edges in four groups: straight or arcs (skipping columns), solid or dashed (``via="path"``)."""
    largest = max((_finite_abs(attrs.get(effect_key)) for _, _, attrs in edges), default=0.0) or 1.0
    arrows = len(edges) <= MAX_ARROWS
    for skipping in (False, True):
        for dashed in (False, True):
            group = [(u, v, attrs) for u, v, attrs in edges
                     if (abs(pos[v][0] - pos[u][0]) > 1.0) == skipping and (attrs.get("via") == "path") == dashed]
            if not group:
                continue
            style: dict[str, Any] = {"arrows": True, "arrowsize": 8} if arrows or skipping else {"arrows": False}
            if skipping:
                style["connectionstyle"] = "arc3,rad=0.2"
            nx.draw_networkx_edges(
                shown, pos, ax=ax, edgelist=[(u, v) for u, v, _ in group],
                width=[MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * _finite_abs(a.get(effect_key)) / largest
                       for _, _, a in group],
                edge_color=[_edge_colour(a.get(effect_key)) for _, _, a in group],
                style="dashed" if dashed else "solid", alpha=0.75, node_size=node_size, **style,
            )


def _draw_legend(ax: Axes, path_edges: bool) -> None:
    handles = [
        Line2D([], [], color=LOWERS_COLOUR, lw=2, label="intervention lowers target"),
        Line2D([], [], color=RAISES_COLOUR, lw=2, label="intervention raises target"),
    ]
    if path_edges:
        handles.append(Line2D([], [], color=UNKNOWN_COLOUR, lw=2, ls="--", label="along a shared weight-free path"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), frameon=False,
              fontsize=8)


def _columns(graph: CausalGraph, layers: list[str]) -> list[list[str]]:
    """The layers grouped by depth, input to output."""
    depth = {layer: graph.layer_depth(layer) for layer in layers}
    columns: dict[int, list[str]] = {d: [] for d in sorted(set(depth.values()))}
    for layer in layers:
        columns[depth[layer]].append(layer)
    return list(columns.values())


def _figure_size(graph: CausalGraph, max_units: int | None) -> tuple[float, float]:
    layers = graph.layers()
    if not layers:
        return (4.0, 3.0)
    columns = _columns(graph, layers)

    def shown(layer: str) -> int:
        count = len(graph.units(layer))
        return count if max_units is None else min(count, max_units)

    tallest = max(sum(shown(layer) for layer in column) + 1.5 * (len(column) - 1) for column in columns)
    return (max(4.0, 2.2 * len(columns)), min(40.0, max(3.0, 0.35 * tallest + 1.5)))


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_abs(value: object) -> float:
    return abs(float(value)) if _is_finite(value) else 0.0


def _edge_colour(value: object) -> str:
    if not _is_finite(value) or value == 0:
        return UNKNOWN_COLOUR
    return LOWERS_COLOUR if value < 0 else RAISES_COLOUR
