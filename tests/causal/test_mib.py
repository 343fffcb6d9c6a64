"""MIB scoring: budgets, CPR and CMD on hand-computed curves, faithfulness curves of rankings, edges needed.

Curves are measured on the planted MLP of ``test_edge_search`` through its
hand-written edge forward: target logit ``h0 + h2`` with ``h0 = x0 + x1`` and
``h2 = x3``, so under zero ablation a set of edges keeps exactly the inputs whose
whole path to the target it holds.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from explainnn.causal import mib
from explainnn.causal.mib import (
    BUDGETS,
    MIB_FRACTIONS,
    EdgeGraph,
    area_under,
    budget_sizes,
    build_evaluator,
    cmd,
    cpr,
    edges_needed,
    mib_curve,
    score_curve,
)
from explainnn.errors import UserError
from test_edge_search import BACKEND, PLANTED, planted, random_mlp


@pytest.fixture(autouse=True)
def hand_backend(monkeypatch):
    monkeypatch.setattr(mib, "_backend", lambda: BACKEND)


# ----------------------------------------------------------------------------- formulas
def test_budgets_are_mibs_fractions_floored():
    assert BUDGETS == (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
    assert np.allclose(np.array(MIB_FRACTIONS) * 100, BUDGETS)
    assert budget_sizes(12186).tolist() == [12, 24, 60, 121, 243, 609, 1218, 2437, 6093, 12186]
    assert budget_sizes(20).tolist() == [0, 0, 0, 0, 0, 1, 2, 4, 10, 20]


def test_cpr_and_cmd_of_hand_made_curves():
    # f = 0 up to 2% of edges, 1 from 5% on: the only partial trapezoid is 2% -> 5% at height 1/2.
    step = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert cpr(MIB_FRACTIONS, step) == pytest.approx(0.03 * 0.5 + 0.95)
    assert cmd(MIB_FRACTIONS, step) == pytest.approx(0.019 + 0.03 * 0.5)
    # The axis runs from 0.001 to 1 and is not rescaled: a perfect curve has CPR 0.999 and CMD 0.
    assert cpr(MIB_FRACTIONS, [1.0] * 10) == pytest.approx(0.999)
    assert cmd(MIB_FRACTIONS, [1.0] * 10) == pytest.approx(0.0)
    # No clipping: f above 1 raises CPR and costs CMD.
    assert cpr(MIB_FRACTIONS, [1.2] * 10) == pytest.approx(1.2 * 0.999)
    assert cmd(MIB_FRACTIONS, [1.2] * 10) == pytest.approx(0.2 * 0.999)
    # A ramp by hand: (x2 - x1) * (y1 + y2) / 2 summed.
    ramp = [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.0]
    by_hand = (0.001 * 0.05 + 0.003 * 0.15 + 0.005 * 0.25 + 0.01 * 0.4 + 0.03 * 0.6 + 0.05 * 0.75 + 0.1 * 0.85
               + 0.3 * 0.95 + 0.5 * 1.0)
    assert cpr(MIB_FRACTIONS, ramp) == pytest.approx(by_hand)
    assert cmd(MIB_FRACTIONS, ramp) == pytest.approx(0.999 - by_hand)
    with pytest.raises(UserError):
        area_under([0.1], [1.0])


# ----------------------------------------------------------------------------- connectivity
def test_pruning_drops_edges_off_every_input_to_output_path():
    model, inputs = planted()
    _, graph = build_evaluator(model, inputs, 0, ablation="zero", n_samples=10)
    ids = graph.edges.ids()
    index = {label: e for e, label in enumerate(ids)}
    mask = np.zeros(graph.n, dtype=bool)
    for label in ("fc1:0->fc2:0", "input:0->fc1:1", "input:3->fc1:2", "fc1:2->fc2:0"):
        mask[index[label]] = True
    kept = {ids[e] for e in np.flatnonzero(graph.connected(mask))}
    assert kept == {"input:3->fc1:2", "fc1:2->fc2:0"}
    assert graph.connected(np.ones(graph.n, bool)).all()


# ----------------------------------------------------------------------------- curves
def planted_ranking(graph: EdgeGraph) -> np.ndarray:
    """Scores: the x0 path first, then x1's edge, then the x3 path, then everything else."""
    order = ["fc1:0->fc2:0", "input:0->fc1:0", "input:1->fc1:0", "fc1:2->fc2:0", "input:3->fc1:2"]
    ids = graph.edges.ids()
    scores = np.zeros(graph.n)
    for rank, label in enumerate(order):
        scores[ids.index(label)] = 10.0 - rank
    return scores


def test_the_curve_of_a_ranking_matches_the_hand_computed_faithfulness():
    model, inputs = planted()
    evaluator, graph = build_evaluator(model, inputs, 0, ablation="zero", metric="logit", n_samples=30)
    curve = score_curve(evaluator, graph, planted_ranking(graph), method="planted")
    x = evaluator.inputs.double()
    total = float(x[:, [0, 1, 3]].sum(1).mean())
    share = [float(x[:, i].mean()) / total for i in range(4)]
    # 20 edges: budgets keep 0,0,0,0,0,1,2,4,10,20 edges. Pruned: the lone fc1:0->fc2:0 (fc1:0 has no input
    # edge); at 10, ties by edge number add input:2,3->fc1:0 (kept) and three edges into fc1:1 (no path on).
    assert curve.n_edges.tolist() == [0, 0, 0, 0, 0, 1, 2, 4, 10, 20]
    assert curve.n_kept.tolist() == [0, 0, 0, 0, 0, 0, 2, 3, 7, 20]
    expected = [0, 0, 0, 0, 0, 0, share[0], share[0] + share[1], 1, 1]
    assert np.allclose(curve.faithfulness, expected)
    assert curve.cpr == pytest.approx(cpr(MIB_FRACTIONS, expected))
    assert curve.cmd == pytest.approx(cmd(MIB_FRACTIONS, expected))
    assert curve.needed[0.8].n_edges == 5 and curve.needed[0.8].prefix == 5
    rows = curve.to_rows()
    assert len(rows) == 10 and rows[-1]["budget_percent"] == 100 and rows[6]["n_kept"] == 2
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    assert buffer.getvalue().count("\n") == 11


def test_absolute_ranks_by_magnitude_and_circuits_must_fit_their_budgets():
    model, inputs = planted()
    evaluator, graph = build_evaluator(model, inputs, 0, ablation="zero", metric="logit", n_samples=30)
    scores = planted_ranking(graph)
    flipped = score_curve(evaluator, graph, -scores, absolute=True, levels=())
    assert np.allclose(flipped.faithfulness, score_curve(evaluator, graph, scores, levels=()).faithfulness)
    masks = [np.zeros(graph.n, bool) for _ in MIB_FRACTIONS]
    masks[-1][:] = True
    family = score_curve(evaluator, graph, circuits=masks)
    assert family.faithfulness.tolist() == [0.0] * 9 + [1.0]
    masks[0][0] = True
    with pytest.raises(UserError):
        score_curve(evaluator, graph, circuits=masks)


def test_edges_needed_finds_a_crossing_by_exact_bisection():
    model, inputs = random_mlp(1)
    evaluator, graph = build_evaluator(model, inputs, 0, ablation="zero", metric="logit", n_samples=60)
    scores = np.random.default_rng(0).normal(size=graph.n)
    order = np.argsort(-scores, kind="stable")
    every = evaluator(np.stack([graph.connected(np.isin(np.arange(graph.n), order[:k]))
                                for k in range(graph.n + 1)]))
    for level in (0.5, 0.8, 0.9):
        need = edges_needed(evaluator, graph, scores, level, points=3)
        assert every[need.prefix] >= level > every[need.prefix - 1]
        assert need.faithfulness == pytest.approx(every[need.prefix])
        assert need.n_edges == int(graph.connected(np.isin(np.arange(graph.n), order[: need.prefix])).sum())


def test_mib_curve_under_patching_scores_the_logit_difference_with_edges_into_both_classes():
    model, inputs = planted()
    evaluator, graph = build_evaluator(model, inputs, 0, ablation="patch", n_samples=30)
    assert evaluator.metric == "logit_diff" and set(evaluator.samples.counterfactual_classes.tolist()) == {1}
    ids = graph.edges.ids()
    assert graph.n == 24 and {label.split("->")[1] for label in ids} >= {"fc2:0", "fc2:1"}
    # The counterfactual class reads h1 = x0 + x2: its three edges matter as much as the planted five.
    relevant = PLANTED | {"input:0->fc1:1", "input:2->fc1:1", "fc1:1->fc2:1"}
    scores = np.array([1.0 if label in relevant else 0.0 for label in ids])
    curve = mib_curve(model, inputs, 0, scores, ablation="patch", n_samples=30, method="planted")
    assert curve.metric == "logit_diff" and curve.n_samples == 30 and curve.total_edges == 24
    assert curve.n_edges.tolist() == [0, 0, 0, 0, 0, 1, 2, 4, 12, 24]
    assert curve.faithfulness[-2] == pytest.approx(1.0) and curve.faithfulness[-1] == pytest.approx(1.0)
    assert curve.needed[0.9].n_edges <= 8 and curve.needed[0.9].faithfulness >= 0.9
