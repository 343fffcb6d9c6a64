"""The causal pictures say what they draw: legends match the drawn colours, labels do not collide, curves stay inside.

Each test renders a figure on the Agg canvas and reads back what matplotlib drew
(artists, colours, text extents in display space), so a figure that would look
wrong to a reader fails here.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path as CurvePath

from explainnn.causal import CausalGraph, CircuitCheck, Necessity, NecessityWhereChosen, Sufficiency, draw_graph
from explainnn.causal.curves import OURS, RANDOM, FaithfulnessCurves, plot_check, plot_curves
from explainnn.causal.draw import COLOUR_LABELS, PATH_LABEL, RECURRENT_LABEL, STYLE_COLOUR
from explainnn.causal.stability import StabilityResult, plot_stability

CHECK = CircuitCheck(
    n_eval=50, n_random=200, random_sets="same size per layer", ablation="mean", layers=["conv1", "fc1"],
    circuit_size={"conv1": 6, "fc1": 10}, layer_size={"conv1": 6, "fc1": 120}, units=16, total_units=126,
    clean_logit=10.9, clean_accuracy=0.97, empty_logit=-0.5, empty_accuracy=0.0,
    sufficiency=Sufficiency(logit=8.8, logit_fraction=8.8 / 10.9, accuracy=1.0, random_logit_mean=0.01,
                            random_logit_std=0.4, random_accuracy_mean=0.0, p_value_vs_random=0.005,
                            normalized=0.82, random_normalized_mean=0.05),
    necessity=Necessity(logit=-0.9, logit_fraction=-0.9 / 10.9, accuracy=0.0, random_logit_mean=-0.1,
                        random_logit_std=0.8, random_accuracy_mean=0.0, p_value_vs_random=0.179,
                        logit_drop_fraction=1 + 0.9 / 10.9, normalized=1.0, random_normalized_mean=0.95),
    necessity_where_chosen=NecessityWhereChosen(layers_left_intact=["conv1"], normalized=0.4,
                                                random_normalized_mean=0.1, random_normalized_q99=0.3,
                                                p_value_vs_random=0.00995),
)


def rendered(figure: Figure):
    """Draw ``figure`` and return its renderer (text extents are known only after a draw)."""
    figure.canvas.draw()
    return figure.canvas.get_renderer()


def texts(figure: Figure) -> list[str]:
    return [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text") and callable(a.get_text))]


def overlapping(boxes) -> list[tuple[int, int]]:
    return [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2) if a.overlaps(b)]


# ---------------------------------------------------------------------------------------- the graph picture
def drawn_edge_colours(ax) -> set[tuple[float, float, float]]:
    """The colours of every edge drawn: arrow patches and plain line collections (nodes are not lines)."""
    colours = {to_rgb(patch.get_edgecolor()) for patch in ax.patches if isinstance(patch, FancyArrowPatch)}
    for collection in ax.collections:
        if isinstance(collection, LineCollection):
            colours |= {to_rgb(c) for c in collection.get_colors()}
    return colours


def legend_entries(ax) -> dict[str, tuple[float, float, float]]:
    legend = ax.get_legend()
    if legend is None:
        return {}
    return {text.get_text(): to_rgb(handle.get_color()) for text, handle in zip(legend.get_texts(), legend.legend_handles)}


def assert_legend_matches(ax) -> dict[str, tuple[float, float, float]]:
    """Every drawn edge colour has its legend entry, and every colour entry is drawn; style entries are black."""
    entries = legend_entries(ax)
    colour_entries = {label: rgb for label, rgb in entries.items() if label in COLOUR_LABELS.values()}
    style_entries = {label: rgb for label, rgb in entries.items() if label not in COLOUR_LABELS.values()}
    assert set(colour_entries.values()) == drawn_edge_colours(ax)
    assert all(rgb == to_rgb(STYLE_COLOUR) for rgb in style_entries.values())
    assert to_rgb(STYLE_COLOUR) not in drawn_edge_colours(ax)
    for label, rgb in colour_entries.items():
        assert COLOUR_LABELS[next(c for c in COLOUR_LABELS if to_rgb(c) == rgb)] == label
    return entries


def chain(effects: dict[tuple[str, str], float | None]) -> CausalGraph:
    graph = CausalGraph({"target": 1})
    graph.add_unit("input", 0, kind="input", depth=0)
    graph.add_unit("input", 1, kind="input", depth=0)
    graph.add_unit("fc1", 0, depth=1)
    graph.add_unit("fc1", 1, depth=1)
    graph.add_unit("out", 1, kind="output", depth=2)
    for (u, v), effect in effects.items():
        if effect is None:
            graph.add_edge(u, v)
        else:
            graph.add_edge(u, v, effect=effect)
    return graph


def test_an_edge_without_effect_is_grey_and_the_legend_says_so():
    """A minimal circuit's edges carry no effect: grey edges, one grey entry, no blue/red entry."""
    graph = chain({("input:0", "fc1:0"): None, ("fc1:0", "out:1"): None, ("fc1:1", "out:1"): None})
    ax = draw_graph(graph).axes[0]
    entries = assert_legend_matches(ax)
    assert list(entries) == [COLOUR_LABELS["0.6"]]
    assert drawn_edge_colours(ax) == {to_rgb("0.6")}


@pytest.mark.parametrize("effects, expected", [
    ({("input:0", "fc1:0"): -1.0, ("fc1:0", "out:1"): -2.0}, ["intervention lowers target"]),
    ({("input:0", "fc1:0"): 0.5, ("fc1:1", "out:1"): -2.0},
     ["intervention lowers target", "intervention raises target"]),
    ({("input:0", "fc1:0"): 0.5, ("fc1:1", "out:1"): float("nan")},
     ["intervention raises target", "no effect measured on the edge"]),
], ids=["lowers-only", "both-signs", "raises-and-unknown"])
def test_legend_lists_exactly_the_colours_drawn(effects, expected):
    ax = draw_graph(chain(effects)).axes[0]
    assert list(assert_legend_matches(ax)) == expected


def recurrent_graph(self_edge: bool = True) -> CausalGraph:
    """An RNN layer with a relay 0 -> 1, the cycle 1 -> 0, a longer relay 3 -> 4 and (optionally) a self-edge.

    Within-layer edges are put into the ``networkx`` graph directly, so the
    picture is tested on any such edge (a self-edge included) whatever
    ``CausalGraph.add_edge`` accepts.
    """
    graph = CausalGraph({"target": 1})
    for i in range(2):
        graph.add_unit("input", i, kind="input", depth=0)
    for i in range(5):
        graph.add_unit("rnn", i, depth=1)
    graph.add_unit("head", 1, kind="output", depth=2)
    graph.add_edge("input:0", "rnn:0", effect=-1.0)
    graph.add_edge("rnn:1", "head:1", effect=-2.0)
    graph.add_edge("rnn:4", "head:1", effect=-1.0)
    digraph = graph.digraph
    digraph.add_edge("rnn:0", "rnn:1", via="recurrent", effect=-1.3)
    digraph.add_edge("rnn:1", "rnn:0", via="recurrent", effect=0.4)
    digraph.add_edge("rnn:3", "rnn:4", via="recurrent", effect=-0.7)
    if self_edge:
        digraph.add_edge("rnn:2", "rnn:2", via="recurrent", effect=-0.9)
    return graph


def within_arcs(ax) -> list[FancyArrowPatch]:
    return [p for p in ax.patches if isinstance(p, FancyArrowPatch) and p.get_linestyle() == "-."]


def arc_xs(arc: FancyArrowPatch) -> np.ndarray:
    """The x data coordinates an arc (with its head) passes through; closing codes carry no point."""
    path = arc.get_path()
    points = [vertex for vertex, code in zip(path.vertices, path.codes) if code != CurvePath.CLOSEPOLY]
    return np.asarray(points)[:, 0]


def test_recurrent_edges_are_arcs_beside_their_column_with_a_legend_entry(tmp_path):
    graph = recurrent_graph()
    figure = draw_graph(graph, tmp_path / "rnn.png", title="a recurrent layer")
    ax = figure.axes[0]
    assert (tmp_path / "rnn.png").stat().st_size > 0
    arcs = within_arcs(ax)
    assert len(arcs) == 4  # 0 -> 1, 1 -> 0, 3 -> 4 and the self-edge 2 -> 2
    entries = assert_legend_matches(ax)
    assert RECURRENT_LABEL in entries and PATH_LABEL not in entries
    column_x = 1.0  # input at 0, rnn at 1, head at 2
    for arc in arcs:
        xs = arc_xs(arc)
        assert xs.min() >= column_x - 1e-9, "an arc must leave the column on its right, not cross the units"
        assert xs.max() > column_x + 0.1, "an arc must bulge visibly beside the column"
        assert xs.max() < column_x + 0.9, "an arc must stay clear of the next column"
    # the two directions of a two-unit cycle bulge differently, so both are seen
    cycle = recurrent_graph(self_edge=False)
    cycle.digraph.remove_edge("rnn:3", "rnn:4")
    pair = within_arcs(draw_graph(cycle).axes[0])
    assert len(pair) == 2 and abs(arc_xs(pair[0]).max() - arc_xs(pair[1]).max()) > 0.05
    # the colours keep their meaning: the 1 -> 0 edge raised the target
    assert to_rgb("tab:red") in {to_rgb(arc.get_edgecolor()) for arc in arcs}


def test_cycles_and_self_edges_never_crash_and_are_summarised_like_other_units():
    graph = recurrent_graph()
    graph.digraph.add_edge("rnn:4", "rnn:3", via="recurrent")  # another cycle, no effect value
    figure = draw_graph(graph, max_units_per_layer=3)
    ax = figure.axes[0]
    drawn = {text.get_text() for text in ax.texts}
    assert any(text.startswith("rnn (+2 more)") for text in drawn)
    assert_legend_matches(ax)
    assert len(within_arcs(draw_graph(recurrent_graph(self_edge=False)).axes[0])) == 3


def test_no_within_layer_entry_without_within_layer_edges():
    ax = draw_graph(chain({("input:0", "fc1:0"): -1.0, ("fc1:0", "out:1"): -2.0})).axes[0]
    assert RECURRENT_LABEL not in legend_entries(ax) and not within_arcs(ax)


# ------------------------------------------------------------------------------ sufficiency and necessity bars
@pytest.mark.parametrize("subject", ["causal graph", "minimal circuit"])
def test_check_bars_name_their_set_and_labels_never_collide(subject):
    figure = plot_check(CHECK, subject=subject)
    renderer = rendered(figure)
    for ax in figure.axes:
        labels = [label for label in ax.get_xticklabels() if label.get_text()]
        assert [label.get_text().replace("\n", " ") for label in labels] == ["clean model", subject,
                                                                           "random sets (n=200)"]
        assert not overlapping([label.get_window_extent(renderer) for label in labels])
        assert subject in ax.get_title()
    other = {"causal graph": "minimal circuit", "minimal circuit": "causal graph"}[subject]
    assert not any(other in text.replace("\n", " ") for text in texts(figure))
    assert "conv1 left intact: p = 0.010" in figure.axes[1].get_title()


def test_check_bars_leave_room_for_every_accuracy_note():
    figure = plot_check(CHECK)
    renderer = rendered(figure)
    for ax in figure.axes:
        notes = [t for t in ax.texts if t.get_text().startswith("acc ")]
        assert len(notes) == 3
        inside = ax.get_window_extent(renderer)
        assert all(inside.contains(*note.get_window_extent(renderer).get_points()[1]) for note in notes)
        assert not overlapping([note.get_window_extent(renderer) for note in notes])


# ------------------------------------------------------------------------------------------ faithfulness curves
def curves() -> FaithfulnessCurves:
    sizes = np.arange(0, 21)
    x = sizes / 20
    sufficiency = {OURS: np.minimum(1.22, 3 * x) * (sizes < 20) + (sizes == 20),  # passes 1, as real circuits do
                   "activation_magnitude": -0.17 * np.sin(np.pi * x), RANDOM: x ** 2}
    sufficiency["activation_magnitude"][-1] = 1.0
    necessity = {name: np.clip(2 * x, 0, 1.05) for name in sufficiency}
    return FaithfulnessCurves(sizes, 20, sufficiency, necessity, 30, 10, circuit_size=6)


def test_curves_stay_inside_their_axes_and_the_legend_stays_off_them():
    figure = plot_curves(curves(), title="planted curves")
    renderer = rendered(figure)
    for ax in figure.axes:
        low, high = ax.get_ylim()
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), dtype=float)
            if len(y) > 2:  # the curves (axis lines have two points)
                assert low < y.min() and y.max() < high, line.get_label()
        legend = ax.get_legend()
        assert legend is not None
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        labels = [text.get_text() for text in legend.get_texts()]
        assert any(label.startswith(OURS) for label in labels)
        assert any("minimal circuit (6 units)" in label for label in labels)
    assert not overlapping([ax.get_window_extent(renderer) for ax in figure.axes])


# ----------------------------------------------------------------------------------------------- stability
def stability_result() -> StabilityResult:
    """27 hard causes kept at every beta below 1; at beta = 1 (u >= 1) 26 other units, none of them hard."""
    betas = np.array([0.0, 0.5, 1.0])
    hard = tuple(range(27))
    n_kept = np.array([[27, 27], [27, 25], [26, 26]])
    jaccard = np.array([[1.0, 1.0], [1.0, 25 / 27], [0.0, 0.0]])
    appearance = np.zeros((3, 84))
    appearance[:2, :27] = 1.0
    appearance[2, 40:66] = 1.0
    return StabilityResult("fc2", betas, 0.1, jaccard, n_kept, appearance, hard, True, "scale")


def test_the_kept_hard_causes_follow_from_jaccard_and_sizes():
    result = stability_result()
    assert result.n_kept_hard.tolist() == [[27, 27], [27, 25], [0, 0]]
    assert result.summary()["n_kept_hard_mean"] == [27.0, 26.0, 0.0]
    assert result.amplifies().tolist() == [False, False, True]


def test_stability_plot_explains_a_jaccard_of_zero_beside_kept_units():
    figure = plot_stability(stability_result())
    rendered(figure)
    written = [text.replace("\n", " ") for text in texts(figure)]
    assert any("26.0 kept," in text and "0.0 of them hard causes" in text for text in written)
    assert any(text.startswith("u >= 1: strengthens, no cut") for text in written)
    assert "beta=1 (u >= 1)" in written
    jaccard_axes = figure.axes[0]
    counts = next(ax for ax in figure.axes if ax.get_ylabel().startswith("units (mean"))
    assert [line.get_ydata().tolist() for line in counts.get_lines()] == [[27.0, 26.0, 26.0], [27.0, 26.0, 0.0]]
    assert jaccard_axes.get_lines()[0].get_ydata()[-1] == 0.0


def test_no_amplification_note_under_the_set_rule_or_below_beta_one():
    result = stability_result()
    for changed in (StabilityResult(result.layer, result.betas, 0.1, result.jaccard, result.n_kept, result.appearance,
                                    result.hard_causes, True, "set"),
                    StabilityResult(result.layer, result.betas[:2], 0.1, result.jaccard[:2], result.n_kept[:2],
                                    result.appearance[:2], result.hard_causes, True, "scale")):
        written = texts(plot_stability(changed))
        assert not any(text.startswith("u >= 1") for text in written)
