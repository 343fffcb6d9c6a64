"""A layered picture of a causal graph: depths left to right, input to output.

Each depth is one column; layers at the same depth (parallel branches such as a
residual block's main path and its projection shortcut) are stacked in that
column, each under its own name. Units of a layer are stacked vertically and
labelled with their index; large layers can be summarised to their strongest
units. An edge's width grows with the size of its effect on the target logit,
and its colour gives the sign: blue when the intervention lowered the target
(the cause supports the prediction), red when it raised it. Edges that skip
columns (skip connections, concatenations) are drawn as arcs, and edges along
a weight-free shared path (``via="path"``) are dashed. Edges within one layer
(a recurrent layer's hidden-to-hidden causes, ``via="recurrent"``, self-edges
included) are dash-dotted arcs beside the column; cycles are drawn as they are.
Edges without an effect (a minimal circuit's edges, for instance) are grey. The
legend lists exactly the colours and line styles drawn. Figures are built
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
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path as CurvePath

from explainnn.errors import UserError
from explainnn.files import save_figure

if TYPE_CHECKING:
    from explainnn.causal.graph import CausalGraph

LOWERS_COLOUR = "tab:blue"
RAISES_COLOUR = "tab:red"
UNKNOWN_COLOUR = "0.6"
COLOUR_LABELS = {
    LOWERS_COLOUR: "intervention lowers target",
    RAISES_COLOUR: "intervention raises target",
    UNKNOWN_COLOUR: "no effect measured on the edge",
}
"""The legend's entry for each edge colour; only the colours drawn are listed."""
PATH_LABEL = "along a shared weight-free path"
RECURRENT_LABEL = "within the layer, through the recurrence (arc beside the column)"
STYLE_COLOUR = "black"
"""Legend entries for line styles are black, a colour no edge is drawn in."""
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

    top = (tallest - 1) / 2.0
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylim(-top - 0.6, top + 1.6)
    edges = list(shown.edges(data=True))
    beside = [(u, v, attrs) for u, v, attrs in edges if _within_column(source, pos, u, v, attrs)]
    across = [(u, v, attrs) for u, v, attrs in edges if not _within_column(source, pos, u, v, attrs)]
    largest = max((_finite_abs(attrs.get(effect_key)) for _, _, attrs in edges), default=0.0) or 1.0
    _draw_edges(ax, shown, pos, across, effect_key, node_size, largest)
    _draw_within(ax, pos, beside, effect_key, node_size, largest)
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
    _draw_legend(ax, {_edge_colour(attrs.get(effect_key)) for _, _, attrs in edges},
                 path_edges=any(attrs.get("via") == "path" for _, _, attrs in across), within=bool(beside))


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


def _within_column(source: nx.DiGraph, pos: dict[str, tuple[float, float]], u: str, v: str, attrs: dict) -> bool:
    """Whether the edge stays in one column: within a layer (recurrent, self-edges) or marked ``via="recurrent"``."""
    return (u == v or attrs.get("via") == "recurrent" or source.nodes[u]["layer"] == source.nodes[v]["layer"]
            or pos[u][0] == pos[v][0])


def _width(value: object, largest: float) -> float:
    return MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * _finite_abs(value) / largest


def _draw_edges(ax: Axes, shown: nx.DiGraph, pos: dict[str, tuple[float, float]], edges: list, effect_key: str,
                node_size: float, largest: float) -> None:
    """Edges in four groups: straight or arcs (skipping columns), solid or dashed (``via="path"``)."""
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
                width=[_width(a.get(effect_key), largest) for _, _, a in group],
                edge_color=[_edge_colour(a.get(effect_key)) for _, _, a in group],
                style="dashed" if dashed else "solid", alpha=0.75, node_size=node_size, **style,
            )


def _draw_within(ax: Axes, pos: dict[str, tuple[float, float]], edges: list, effect_key: str, node_size: float,
                 largest: float) -> None:
    """Edges within a column as dash-dotted arcs to its right; a self-edge is a loop beside its unit.

    An arc leaves its cause's right side and enters its effect's right side,
    bulging further the more rows it spans; an upward arc bulges further than a
    downward one, so the two edges of a two-unit cycle stay apart.
    """
    radius = math.sqrt(node_size) / 2.0
    rx, ry = radius * _data_per_point(ax, "x"), radius * _data_per_point(ax, "y")
    for u, v, attrs in edges:
        colour, width = _edge_colour(attrs.get(effect_key)), max(0.9, _width(attrs.get(effect_key), largest))
        (x0, y0), (x1, y1) = pos[u], pos[v]
        if u == v:
            start, end = _on_circle(x0, y0, rx, ry, 35.0), _on_circle(x0, y0, rx, ry, -35.0)
            reach = rx + 0.25
            controls = [(x0 + reach, y0 + 0.3), (x0 + reach, y0 - 0.3)]
        else:
            down = y1 < y0
            start = _on_circle(x0, y0, rx, ry, -40.0 if down else 40.0)
            end = _on_circle(x1, y1, rx, ry, 40.0 if down else -40.0)
            reach = rx + min(0.45, 0.12 + 0.04 * abs(y1 - y0)) + (0.0 if down else 0.1)
            controls = [(x0 + reach, y0), (x1 + reach, y1)]
        curve = CurvePath([start, *controls, end], [CurvePath.MOVETO, CurvePath.CURVE4, CurvePath.CURVE4,
                                                     CurvePath.CURVE4])
        ax.add_patch(FancyArrowPatch(path=curve, color=colour, linewidth=width, linestyle="-.", alpha=0.75,
                                     arrowstyle="-|>", mutation_scale=10, zorder=0.5))


def _on_circle(x: float, y: float, rx: float, ry: float, degrees: float) -> tuple[float, float]:
    """The point of a unit's circle (radii ``rx``, ``ry`` in data units) at ``degrees`` from its right."""
    angle = math.radians(degrees)
    return x + rx * math.cos(angle), y + ry * math.sin(angle)


def _data_per_point(ax: Axes, axis: str) -> float:
    """Data units per typographic point along ``axis`` (the limits must be set)."""
    figure = cast(Figure, ax.figure)
    box = ax.get_position()
    width, height = figure.get_size_inches()
    if axis == "x":
        low, high = ax.get_xlim()
        return abs(high - low) / max(box.width * width * 72.0, 1e-9)
    low, high = ax.get_ylim()
    return abs(high - low) / max(box.height * height * 72.0, 1e-9)


def _draw_legend(ax: Axes, colours: set[str], *, path_edges: bool, within: bool) -> None:
    """One entry per edge colour drawn, then one per special line style drawn (in black)."""
    handles = [Line2D([], [], color=colour, lw=2, label=label) for colour, label in COLOUR_LABELS.items()
               if colour in colours]
    if path_edges:
        handles.append(Line2D([], [], color=STYLE_COLOUR, lw=1.5, ls="--", label=PATH_LABEL))
    if within:
        handles.append(Line2D([], [], color=STYLE_COLOUR, lw=1.5, ls="-.", label=RECURRENT_LABEL))
    if not handles:
        return
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 2),
              frameon=False, fontsize=8)


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
