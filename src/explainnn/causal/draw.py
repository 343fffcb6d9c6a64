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

:func:`draw_edge_circuit` draws an edge circuit (the fewest unit-to-unit edges
that keep a class): only the units its edges touch, labelled ``"layer:index"``,
layers as columns, width by the exact effect of removing the edge and colour by
its sign (blue: removing it lowers the faithfulness). :func:`plot_mib` draws
MIB's faithfulness curves (f against the share of edges kept, log axis).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard, cast

import networkx as nx
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path as CurvePath
from matplotlib.ticker import FuncFormatter

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
    axes_height_pt = ax.get_position().height * _figure_height(ax) * 72.0
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
                 largest: float, colour_of: Any = None) -> None:
    """Edges within a column as dash-dotted arcs to its right; a self-edge is a loop beside its unit.

    An arc leaves its cause's right side and enters its effect's right side,
    bulging further the more rows it spans; an upward arc bulges further than a
    downward one, so the two edges of a two-unit cycle stay apart.
    """
    radius = math.sqrt(node_size) / 2.0
    rx, ry = radius * _data_per_point(ax, "x"), radius * _data_per_point(ax, "y")
    for u, v, attrs in edges:
        colour = (colour_of or _edge_colour)(attrs.get(effect_key))
        width = max(0.9, _width(attrs.get(effect_key), largest))
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


def _figure_height(ax: Axes) -> float:
    """The height in inches of the figure the axes are drawn on (a subfigure's root figure)."""
    figure = ax.figure
    root = figure if isinstance(figure, Figure) else figure.figure
    assert isinstance(root, Figure)
    return float(root.get_size_inches()[1])


def _is_finite(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_abs(value: object) -> float:
    return abs(float(value)) if _is_finite(value) else 0.0


def _edge_colour(value: object) -> str:
    if not _is_finite(value) or value == 0:
        return UNKNOWN_COLOUR
    return LOWERS_COLOUR if value < 0 else RAISES_COLOUR


# ----------------------------------------------------------------------------- edge circuits
SUPPORTS_COLOUR = "tab:blue"
OPPOSES_COLOUR = "tab:red"
EDGE_COLOUR_LABELS = {
    SUPPORTS_COLOUR: "removing the edge lowers f (it carries the class)",
    OPPOSES_COLOUR: "removing the edge raises f (it works against the class)",
    UNKNOWN_COLOUR: "no exact effect measured",
}
"""The legend's entry for each colour of an edge circuit's picture; only the colours drawn are listed."""
MAX_CIRCUIT_EDGES = 250
"""Edges an edge circuit's picture draws at most (the largest |effect|); the title counts the rest."""
UNIT_SPACING = 0.32
"""Inches per unit in a column of an edge circuit's picture."""


def edge_colour(value: object) -> str:
    """The colour of an edge-circuit edge of exact ``effect`` ``value`` (``f(C) - f(C without the edge)``)."""
    if not _is_finite(value) or value == 0:
        return UNKNOWN_COLOUR
    return SUPPORTS_COLOUR if cast(float, value) > 0 else OPPOSES_COLOUR


def draw_edge_circuit(
    graph: CausalGraph,
    path: str | Path | None = None,
    *,
    max_edges: int = MAX_CIRCUIT_EDGES,
    title: str | None = None,
    effect_key: str = "effect",
    dpi: int = 150,
) -> Figure:
    """Draw an edge circuit (:func:`~explainnn.causal.edge_circuit`) readably; return the Figure.

    Parameters
    ----------
    graph:
        The circuit: its units are the units its edges touch, each edge carries
        ``effect`` (the exact faithfulness lost when it alone is removed).
    path:
        Where to save a PNG (none when ``None``).
    max_edges:
        Draw at most this many edges, those of largest |effect| (with the units
        they touch); the title says how many were left out.
    title:
        The picture's title (a line saying what was left out is added below it).
    effect_key:
        The edge attribute that sets width and colour.
    dpi:
        Resolution of the saved PNG.

    Layers are columns, input to output; each unit is a dot labelled
    ``"layer:index"`` beside it, units ordered in their column by the mean height
    of the units they connect to (fewer crossings). An edge's width grows with
    |effect| and its colour gives the sign: blue when removing it lowers the
    faithfulness (it carries the class), red when removing it raises it. Edges
    within one layer (the recurrent edges in ``results["edge_circuit"]
    ["same_layer_edges"]``) are dash-dotted arcs beside the column. The legend
    lists exactly the colours and line styles drawn.
    """
    if isinstance(max_edges, bool) or not isinstance(max_edges, int) or max_edges < 1:
        raise UserError(f"max_edges must be a positive integer; got {max_edges!r}")
    edges = [(u, v, dict(attrs)) for u, v, attrs in graph.edges()]
    for extra in graph.results.get("edge_circuit", {}).get("same_layer_edges", []):
        u, v = str(extra["edge"]).split("->", 1)
        if u in graph.digraph and v in graph.digraph:
            edges.append((u, v, {**extra, "via": "recurrent"}))
    edges.sort(key=lambda edge: -_finite_abs(edge[2].get(effect_key)))
    left_out = max(0, len(edges) - max_edges)
    edges = edges[:max_edges]
    touched = {u for u, _, _ in edges} | {v for _, v, _ in edges}
    layers = [layer for layer in graph.layers() if any(n in touched for n in graph.units(layer))]
    columns = _columns(graph, layers)
    units = {layer: [n for n in graph.units(layer) if n in touched] for layer in layers}
    order = _barycentre_order(columns, units, edges)
    tallest = max((sum(len(units[layer]) for layer in column) + 1.5 * (len(column) - 1) for column in columns),
                  default=1)
    fig = Figure(figsize=(max(6.0, 2.6 * len(columns) + 1.0), min(60.0, max(4.0, UNIT_SPACING * tallest + 2.2))))
    ax = fig.add_subplot()
    ax.set_axis_off()
    heading = title or "Edge circuit"
    if left_out:
        heading += f"\n{len(edges)} edges of largest |effect| drawn, {left_out} weaker ones left out"
    ax.set_title(heading, fontsize=10)
    if not edges:
        ax.text(0.5, 0.5, "the circuit has no edges", ha="center", va="center", transform=ax.transAxes)
        return save_figure(fig, path, dpi=dpi, tight=True)
    pos: dict[str, tuple[float, float]] = {}
    top = (tallest - 1) / 2.0
    for x, column in enumerate(columns):
        height = sum(len(units[layer]) for layer in column) + 1.5 * (len(column) - 1)
        y = (height - 1) / 2.0
        for layer in column:
            ax.text(x, y + 0.9, layer, ha="center", va="bottom", fontsize=9, fontweight="bold")
            for n in order[layer]:
                pos[n] = (float(x), y)
                y -= 1.0
            y -= 1.5
    ax.set_xlim(-0.5, len(columns) - 0.2)
    ax.set_ylim(-top - 0.8, top + 1.8)
    largest = max(_finite_abs(attrs.get(effect_key)) for _, _, attrs in edges) or 1.0
    across = [(u, v, a) for u, v, a in edges if a.get("via") != "recurrent" and pos[u][0] != pos[v][0]]
    beside = [(u, v, a) for u, v, a in edges if (u, v, a) not in across]
    for u, v, attrs in sorted(across, key=lambda edge: _finite_abs(edge[2].get(effect_key))):
        (x0, y0), (x1, y1) = pos[u], pos[v]
        value = attrs.get(effect_key)
        ax.add_patch(FancyArrowPatch(
            (x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=7, shrinkA=4, shrinkB=4,
            connectionstyle="arc3,rad=0.15" if x1 - x0 > 1 else "arc3,rad=0.0",
            linestyle="--" if attrs.get("via") == "path" else "-",
            color=edge_colour(value), linewidth=max(0.7, _width(value, largest)),
            alpha=0.5 + 0.45 * _finite_abs(value) / largest,
        ))
    nodes = list(pos)
    ax.scatter([pos[n][0] for n in nodes], [pos[n][1] for n in nodes], s=28, zorder=3, edgecolors="0.3",
               linewidths=0.6, c=[KIND_COLOURS.get(str(graph.digraph.nodes[n].get("kind")), "white") for n in nodes])
    last = len(columns) - 1
    for n in nodes:
        at_x, at_y = pos[n]
        left = at_x == last and last > 0
        ax.text(at_x + (-0.06 if left else 0.06), at_y, n, ha="right" if left else "left", va="center", fontsize=7,
                zorder=4, bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none",
                                "alpha": 0.8})
    if beside:
        _draw_within(ax, pos, beside, effect_key, 28.0, largest, colour_of=edge_colour)
    handles = [Line2D([], [], color=colour, lw=2, label=label) for colour, label in EDGE_COLOUR_LABELS.items()
               if colour in {edge_colour(a.get(effect_key)) for _, _, a in edges}]
    if any(a.get("via") == "path" for _, _, a in across):
        handles.append(Line2D([], [], color=STYLE_COLOUR, lw=1.5, ls="--", label=PATH_LABEL))
    if beside:
        handles.append(Line2D([], [], color=STYLE_COLOUR, lw=1.5, ls="-.", label=RECURRENT_LABEL))
    handles.append(Line2D([], [], color=STYLE_COLOUR, lw=MAX_WIDTH, label=f"|effect| {largest:.2g} (widest)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False, fontsize=8)
    return save_figure(fig, path, dpi=dpi, tight=True)


def _barycentre_order(columns: list[list[str]], units: dict[str, list[str]],
                      edges: list[tuple[str, str, dict]]) -> dict[str, list[str]]:
    """Each layer's units ordered by the mean position of their neighbours in earlier columns (two sweeps)."""
    order = {layer: sorted(found, key=_index_key) for layer, found in units.items()}
    neighbours: dict[str, list[str]] = {}
    for u, v, _ in edges:
        neighbours.setdefault(u, []).append(v)
        neighbours.setdefault(v, []).append(u)
    for sweep in (columns[1:], columns[-2::-1], columns[1:]):
        rank = {n: i for layer in order for i, n in enumerate(order[layer])}
        for column in sweep:
            for layer in column:
                size = max(len(order[layer]) - 1, 1)

                def key(n: str, size: int = size, layer: str = layer) -> tuple[float, int]:
                    others = [rank[m] / max(len(order[_layer_of(m)]) - 1, 1) for m in neighbours.get(n, [])
                              if _layer_of(m) != layer]
                    mean = sum(others) / len(others) if others else rank[n] / size
                    return mean, _index_key(n)

                order[layer] = sorted(order[layer], key=key)
    return order


def _layer_of(unit: str) -> str:
    return unit.rsplit(":", 1)[0]


def _index_key(unit: str) -> int:
    tail = unit.rsplit(":", 1)[-1]
    return int(tail) if tail.lstrip("-").isdigit() else 0


MIB_NAMES = {"explainnn": "explainnn", "edge_pruning": "edge pruning", "eap": "EAP", "eap_ig": "EAP-IG",
             "acdc": "ACDC", "random": "random", "nodes": "node circuit"}
"""How pictures, run lines and tables name each edge ranking (``"explainnn"``: an edge circuit's own ranking)."""
MIB_COLOURS = {"explainnn": "#d62728", "edge_pruning": "#9467bd", "eap": "#1f77b4", "eap_ig": "#2ca02c",
               "acdc": "#ff7f0e", "random": "0.5", "nodes": "#8c564b"}


def plot_mib(curves: list[Any], path: str | Path | None = None, *, names: dict[str, str] | None = None,
             title: str = "", dpi: int = 120) -> Figure:
    """MIB's faithfulness curves: f against the % of edges kept (log x-axis), one line per ranking.

    Parameters
    ----------
    curves:
        :class:`~explainnn.causal.mib.MIBCurve` objects, one per ranking.
    path:
        Where to save a PNG (none when ``None``).
    names:
        How the legend names each ``curve.method`` (default :data:`MIB_NAMES`,
        else the method itself); each entry also gives the curve's CPR and CMD.
    title:
        The picture's title.
    dpi:
        Resolution of the saved PNG.

    Dotted reference lines mark f = 0.8 and f = 1.0.
    """
    fig = Figure(figsize=(7.0, 4.6))
    ax = fig.add_subplot()
    for curve in curves:
        method = str(curve.method)
        label = f"{(names or MIB_NAMES).get(method, method)} (CPR {curve.cpr:.2f}, CMD {curve.cmd:.2f})"
        ax.plot(curve.budgets, curve.faithfulness, marker="o", markersize=3.5, label=label,
                color=MIB_COLOURS.get(method), linewidth=2.2 if method == "explainnn" else 1.3)
    for level in (0.8, 1.0):
        ax.axhline(level, color="0.3", linewidth=0.8, linestyle=":")
        ax.text(0.11, level, f" f = {level:g}", va="bottom", fontsize=7, color="0.3")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}%"))
    ax.set_xlabel("edges kept (% of all edges, log scale)")
    ax.set_ylabel("faithfulness f on held-out samples")
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if curves:
        ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path, dpi=dpi, tight=True)
