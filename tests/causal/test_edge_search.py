"""Edge circuits: EAP, EAP-IG, ACDC-style search, random and node-induced edges, learned hard-concrete masks.

The searches run on a two-layer MLP through a small hand-written edge-ablation
forward (:class:`HandAblation`, the interface of ``explainnn.causal.edges``),
which is also the oracle: ``y = W x_abl + b + (W * M)(x - x_abl)`` at each child.
The planted model's target logit is ``h0 + h2`` with ``h0 = x0 + x1`` and
``h2 = x3``; every other edge reaches the target with weight 0 (``x0`` also
feeds ``h1``, which reaches only another class), so exactly five edges matter,
each for a third of the logit.
"""

from __future__ import annotations

import types
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.causal import edge_search, mib
from explainnn.causal.edge_search import (
    acdc,
    eap_ig_scores,
    eap_scores,
    edge_circuit,
    edge_scores,
    find_edge_circuit,
    induced_edges,
    random_scores,
    target_density,
)
from explainnn.causal.mib import build_evaluator
from explainnn.errors import ConfigError

PLANTED = {"input:0->fc1:0", "input:1->fc1:0", "input:3->fc1:2", "fc1:0->fc2:0", "fc1:2->fc2:0"}


# ----------------------------------------------------------------------------- the hand-written edge forward
@dataclass(frozen=True)
class HandEdges:
    parent_layer: tuple[str, ...]
    parent_unit: np.ndarray
    child_layer: tuple[str, ...]
    child_unit: np.ndarray
    kind: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.kind)

    def ids(self) -> list[str]:
        return [f"{p}:{int(i)}->{c}:{int(j)}" for p, i, c, j in
                zip(self.parent_layer, self.parent_unit, self.child_layer, self.child_unit)]

    def into_target(self, output_layer: str, target) -> np.ndarray:
        into = np.array([c == output_layer for c in self.child_layer])
        return ~into | np.isin(self.child_unit, np.atleast_1d(target))

    def subset(self, keep: np.ndarray) -> "HandEdges":
        index = np.flatnonzero(keep)
        return HandEdges(tuple(self.parent_layer[i] for i in index), self.parent_unit[index],
                         tuple(self.child_layer[i] for i in index), self.child_unit[index],
                         tuple(self.kind[i] for i in index))


def hand_enumerate_edges(model: nn.Module, example: torch.Tensor, *, layers=None) -> HandEdges:
    pl, pu, cl, cu, kind = [], [], [], [], []
    parent = "input"
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            for j in range(module.out_features):
                for i in range(module.in_features):
                    pl.append(parent)
                    pu.append(i)
                    cl.append(name)
                    cu.append(j)
                    kind.append("input" if parent == "input" else "weights")
            parent = name
    return HandEdges(tuple(pl), np.array(pu), tuple(cl), np.array(cu), tuple(kind))


class HandAblation:
    """Edge ablation of an ``fc1 -> relu -> fc2`` MLP, written out."""

    def __init__(self, model, example, edges=None, *, ablation="patch", reference=None):
        self.model, self.ablation = model, ablation
        self.edges = hand_enumerate_edges(model, example) if edges is None else edges
        self.reference = reference

    def _clean(self, x):
        h = torch.relu(self.model.fc1(x))
        return x, h

    def logits(self, inputs, masks, counterfactuals=None):
        masks = torch.as_tensor(masks)
        masks = masks[None] if masks.dim() == 1 else masks
        masks = masks.to(inputs.dtype)
        fc1, fc2 = self.model.fc1, self.model.fc2
        k = len(masks)
        full = {name: torch.ones(k, m.out_features, m.in_features, dtype=inputs.dtype)
                for name, m in (("fc1", fc1), ("fc2", fc2))}
        for e in range(self.edges.n):
            full[self.edges.child_layer[e]] = full[self.edges.child_layer[e]].index_put(
                (torch.arange(k), torch.tensor(int(self.edges.child_unit[e])),
                 torch.tensor(int(self.edges.parent_unit[e]))), masks[:, e])
        if self.ablation == "patch":
            x_abl, h_abl = self._clean(counterfactuals)
        elif self.ablation == "mean":
            x_ref, h_ref = self._clean(self.reference)
            x_abl, h_abl = x_ref.mean(0, keepdim=True), h_ref.mean(0, keepdim=True)
        else:
            x_abl, h_abl = torch.zeros_like(inputs[:1]), torch.zeros(1, fc1.out_features, dtype=inputs.dtype)
        z = fc1(x_abl) + torch.einsum("kni,kji,ji->knj", inputs[None] - x_abl, full["fc1"], fc1.weight)
        h = torch.relu(z)
        return fc2(h_abl) + torch.einsum("kni,kji,ji->knj", h - h_abl, full["fc2"], fc2.weight)


BACKEND = types.SimpleNamespace(enumerate_edges=hand_enumerate_edges, EdgeAblation=HandAblation)


@pytest.fixture(autouse=True)
def hand_backend(request, monkeypatch):
    """Every test but the LeNet ones runs on the hand-written edge forward."""
    if "lenet" not in request.node.name:
        monkeypatch.setattr(mib, "_backend", lambda: BACKEND)


def mlp(w1, w2, b1=None, b2=None) -> nn.Sequential:
    w1, w2 = torch.as_tensor(w1, dtype=torch.float64), torch.as_tensor(w2, dtype=torch.float64)
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(w1.shape[1], w1.shape[0]), relu=nn.ReLU(),
                                      fc2=nn.Linear(w2.shape[1], w2.shape[0]))).double()
    with torch.no_grad():
        model.fc1.weight.copy_(w1)
        model.fc2.weight.copy_(w2)
        model.fc1.bias.copy_(torch.zeros(w1.shape[0]) if b1 is None else torch.as_tensor(b1))
        model.fc2.bias.copy_(torch.zeros(w2.shape[0]) if b2 is None else torch.as_tensor(b2))
    return model


def planted() -> tuple[nn.Sequential, torch.Tensor]:
    """Target 0 = h0 + h2 (h0 = x0 + x1, h2 = x3); h1 = x0 + x2 reaches only class 1; h3 = x2 only class 2."""
    w1 = [[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    w2 = [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0.5]]
    generator = torch.Generator().manual_seed(0)
    target_rows = 0.5 + torch.rand(40, 4, generator=generator, dtype=torch.float64)
    target_rows[:, 2] = 0.2
    other = torch.zeros(10, 4, dtype=torch.float64)
    other[:, 2] = 3.0
    inputs = torch.cat([target_rows[:20], other, target_rows[20:]])
    return mlp(w1, w2), inputs


def random_mlp(seed: int = 0) -> tuple[nn.Sequential, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    w1 = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    w2 = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    b1 = 0.3 * torch.randn(5, generator=generator, dtype=torch.float64)
    model = mlp(w1, w2, b1)
    inputs = torch.randn(200, 4, generator=generator, dtype=torch.float64)
    return model, inputs


def labels_of(graph) -> set[str]:
    return {f"{a}->{b}" for a, b, _ in graph.edges()}


def state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict, training: bool) -> bool:
    after = model.state_dict()
    return model.training == training and all(torch.equal(before[k], after[k]) for k in before)


# ----------------------------------------------------------------------------- the oracle itself
def test_hand_ablation_keeps_the_model_with_every_edge_and_ablates_it_without():
    model, inputs = planted()
    evaluator, graph = build_evaluator(model, inputs, 0, ablation="zero", n_samples=10)
    clean = model(evaluator.inputs).detach()
    assert torch.allclose(evaluator.logits(torch.ones(1, graph.n))[0], clean)
    assert evaluator.empty == pytest.approx(0.0)
    assert evaluator.full == pytest.approx(float((evaluator.inputs[:, [0, 1, 3]]).sum(1).mean()))


# ----------------------------------------------------------------------------- rankings
def test_eap_is_the_mask_gradient_a_finite_difference_confirms():
    model, inputs = random_mlp()
    evaluator, graph = build_evaluator(model, inputs, 1, ablation="mean", n_samples=50, reference=inputs)
    scores = eap_scores(evaluator)
    eps = 1e-6
    ones = np.ones(graph.n)
    for e in range(graph.n):
        lowered = ones.copy()
        lowered[e] -= eps
        difference = (evaluator.values(ones[None])[0] - evaluator.values(lowered[None])[0]) / eps
        assert scores[e] == pytest.approx(difference, rel=1e-3, abs=1e-5)


def test_eap_ig_averages_the_gradients_at_left_riemann_points_and_adds_up_to_the_full_effect():
    model, inputs = random_mlp(1)
    evaluator, graph = build_evaluator(model, inputs, 0, ablation="zero", n_samples=50)
    by_hand = []
    for alpha in (0.0, 0.2, 0.4, 0.6, 0.8):
        masks = torch.full((1, graph.n), alpha, requires_grad=True)
        (grad,) = torch.autograd.grad(evaluator.differentiable(masks).sum(), [masks])
        by_hand.append(grad[0].double().numpy())
    assert np.allclose(eap_ig_scores(evaluator, 5), np.mean(by_hand, 0))
    many = eap_ig_scores(evaluator, 2000)
    span = evaluator.full - evaluator.empty
    assert abs(many.sum() - span) <= 2e-3 * np.abs(many).sum() + 1e-3 * abs(span)
    with pytest.raises(ConfigError):
        eap_ig_scores(evaluator, 0)


def test_random_scores_are_a_seeded_permutation():
    a, b, c = random_scores(50, 3), random_scores(50, 3), random_scores(50, 4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert sorted(a) == list(range(1, 51))


def test_target_density_falls_log_linearly_to_the_final_density():
    assert target_density(0, 100, 0.01, 0.5) == pytest.approx(1.0)
    assert target_density(25, 100, 0.01, 0.5) == pytest.approx(0.1)
    assert target_density(50, 100, 0.01, 0.5) == pytest.approx(0.01)
    assert target_density(90, 100, 0.01, 0.5) == pytest.approx(0.01)


def test_induced_edges_of_a_node_set():
    model, inputs = planted()
    _, graph = build_evaluator(model, inputs, 0, ablation="zero", n_samples=10)
    ids = graph.edges.ids()
    mask = induced_edges(graph, {"fc1": [0, 2]})
    expected = {f"input:{i}->fc1:{j}" for i in range(4) for j in (0, 2)} | {"fc1:0->fc2:0", "fc1:2->fc2:0"}
    assert {ids[e] for e in np.flatnonzero(mask)} == expected


# ----------------------------------------------------------------------------- planted recovery
@pytest.mark.parametrize("ablation", ["zero", "patch"])
@pytest.mark.parametrize("method", ["edge_pruning", "eap", "eap_ig"])
def test_every_search_recovers_the_planted_edges(method, ablation):
    model, inputs = planted()
    before, training = state(model), model.training
    graph = edge_circuit(model, inputs, 0, method=method, ablation=ablation, metric="logit", n_samples=30,
                         steps=100 if method == "edge_pruning" else None)
    assert labels_of(graph) == PLANTED
    result = graph.results["edge_circuit"]
    assert result["faithfulness"] >= 0.81
    assert result["n_edges"] == 5 and result["total_edges"] == 20
    for _, _, attrs in graph.edges():
        assert attrs["effect"] == pytest.approx(1 / 3, abs=0.1) or attrs["effect"] > 0.3
    assert unchanged(model, before, training)


def test_acdc_recovers_the_planted_edges():
    model, inputs = planted()
    graph = edge_circuit(model, inputs, 0, method="acdc", ablation="zero", metric="logit", acdc_metric="faithfulness",
                         tau=0.01, n_samples=30)
    assert labels_of(graph) == PLANTED


def test_acdc_with_kl_also_keeps_edges_that_move_other_classes():
    model, inputs = planted()
    evaluator, graph = build_evaluator(model, inputs, 0, ablation="zero", metric="logit", n_samples=30)
    mask, scores = acdc(evaluator, graph, tau=1e-3, metric="kl")
    kept = {graph.edges.ids()[e] for e in np.flatnonzero(mask)}
    assert PLANTED <= kept
    assert "input:0->fc1:1" in kept  # h1 feeds class 1: it moves the output distribution, not the target logit
    assert scores[mask].min() > scores[~mask].max()


def test_the_node_method_returns_the_node_circuits_induced_edges():
    model, inputs = planted()
    search = find_edge_circuit(model, inputs, 0, method="nodes", ablation="zero", metric="logit", n_samples=30,
                               steps=50)
    ids = search.edges.ids()
    kept = {ids[e] for e in np.flatnonzero(search.mask)}
    assert PLANTED <= kept
    assert search.faithfulness >= 0.8


def test_a_search_is_deterministic_for_a_seed_and_the_model_is_unchanged():
    model, inputs = random_mlp(2)
    before, training = state(model), model.training
    model.train()
    one = find_edge_circuit(model, inputs, 0, ablation="mean", reference=inputs, n_samples=60, steps=60, seed=5)
    two = find_edge_circuit(model, inputs, 0, ablation="mean", reference=inputs, n_samples=60, steps=60, seed=5)
    assert np.array_equal(one.mask, two.mask) and np.array_equal(one.scores, two.scores)
    assert one.faithfulness >= 0.81 and one.faithfulness == two.faithfulness
    assert unchanged(model, before, True)
    model.train(training)


def test_pruned_circuits_are_one_minimal_and_exact():
    model, inputs = random_mlp(3)
    search = find_edge_circuit(model, inputs, 2, ablation="zero", n_samples=60, steps=60, metric="logit")
    evaluator, _ = build_evaluator(model, inputs, 2, ablation="zero", n_samples=60, metric="logit")
    assert evaluator(search.mask[None])[0] == pytest.approx(search.faithfulness)
    assert all(search.faithfulness - drop < search.level for drop in search.effect.values())


def test_edge_scores_have_one_score_per_edge_for_every_method():
    model, inputs = planted()
    for method in ("eap", "eap_ig", "random", "acdc", "edge_pruning"):
        found = edge_scores(model, inputs, 0, method=method, ablation="zero", metric="logit", n_samples=20,
                            steps=20 if method == "edge_pruning" else None)
        assert found.scores.shape == (20,) and np.isfinite(found.scores).all()
    with pytest.raises(ConfigError):
        edge_scores(model, inputs, 0, method="nope")


def test_patching_pairs_each_sample_with_a_correctly_classified_input_of_another_class():
    model, inputs = planted()
    labels = torch.tensor([0] * 20 + [1] * 9 + [2] + [0] * 20)
    samples = mib.select_samples(model, inputs, 0, 25, labels=labels)
    assert samples.index.tolist() == list(range(20)) + list(range(30, 35))
    assert samples.counterfactual_index.tolist() == [20 + i % 9 for i in range(25)]
    assert set(samples.counterfactual_classes.tolist()) == {1}


def test_edge_circuit_graph_layers_and_kinds():
    model, inputs = planted()
    graph = edge_circuit(model, inputs, 0, method="eap", ablation="zero", metric="logit", n_samples=30)
    assert graph.layers() == ["input", "fc1", "fc2"]
    assert graph.layer_kind("input") == "input" and graph.layer_kind("fc2") == "output"
    assert {attrs["kind"] for _, _, attrs in graph.edges()} == {"input", "weights"}
    assert edge_search.METHODS[0] == "edge_pruning"


# ----------------------------------------------------------------------------- LeNet, through explainnn.causal.edges
@pytest.fixture(scope="module")
def lenet():
    """LeNet after 60 seeded Adam steps on the offline digits (enough for several predicted classes)."""
    from explainnn.data import load_dataset
    from explainnn.models import LeNet

    data = load_dataset("digits", image_size=32)
    torch.manual_seed(0)
    model = LeNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        batch = torch.randint(0, len(data.x_train), (64,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(data.x_train[batch]), data.y_train[batch]).backward()
        optimizer.step()
    model.eval()
    inputs = data.x_test[:150]
    with torch.no_grad():
        predicted = model(inputs).argmax(1)
    return model, inputs, int(predicted.mode().values)


def test_lenet_eap_is_the_mask_gradient_and_a_circuit_is_exact(lenet):
    from explainnn.causal.edges import ablated_logits

    model, inputs, target = lenet
    before, training = state(model), model.training
    evaluator, graph = build_evaluator(model, inputs, target, ablation="mean", reference=inputs, n_samples=8)
    assert graph.n == 6 + 96 + 1920 + 10080 + 84
    scores = eap_scores(evaluator)
    ones = np.ones(graph.n)
    for e in np.argsort(-np.abs(scores))[:3]:
        lowered = ones.copy()
        lowered[e] -= 1e-3
        difference = (evaluator.values(ones[None])[0] - evaluator.values(lowered[None])[0]) / 1e-3
        assert scores[e] == pytest.approx(difference, rel=0.05, abs=1e-4)
    search = find_edge_circuit(model, inputs, target, method="eap", ablation="mean", reference=inputs, n_samples=8)
    assert search.faithfulness >= 0.81
    logits = ablated_logits(model, evaluator.inputs, search.edges, search.mask, "mean", reference=inputs)
    assert float(logits[:, target].double().mean()) == pytest.approx(
        search.full * search.faithfulness + search.empty * (1 - search.faithfulness), rel=1e-4, abs=1e-4)
    assert unchanged(model, before, training)


def test_lenet_edge_pruning_and_its_mib_curve(lenet):
    model, inputs, target = lenet
    before, training = state(model), model.training
    graph = edge_circuit(model, inputs, target, ablation="patch", n_samples=8, steps=20, seed=1)
    result = graph.results["edge_circuit"]
    assert result["faithfulness"] >= 0.81 and result["n_edges"] < result["total_edges"]
    assert all(np.isfinite(attrs["effect"]) for _, _, attrs in graph.edges())
    scores = np.random.default_rng(0).normal(size=result["total_edges"])
    curve = mib.mib_curve(model, inputs, target, scores, ablation="patch", n_samples=8, levels=())
    assert curve.total_edges == result["total_edges"] and len(curve.faithfulness) == 10
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-5)
    assert unchanged(model, before, training)


def test_circuit_ranking_nests_exact_circuits_inside_the_circuit_and_ranks_gains_outside():
    from explainnn.causal.edge_search import circuit_ranking
    from explainnn.causal.mib import prefix_mask, ranking

    model, inputs = random_mlp(4)
    before, training = state(model), model.training
    search = find_edge_circuit(model, inputs, 0, ablation="mean", reference=inputs, n_samples=60, steps=60)
    evaluator, graph = build_evaluator(model, inputs, 0, ablation="mean", reference=inputs, n_samples=60)
    scores = circuit_ranking(search, evaluator, shells=4)
    assert np.array_equal(scores, circuit_ranking(search, shells=4))
    order = ranking(scores)
    assert sorted(scores) == list(range(1, graph.n + 1))
    assert set(order[: search.size]) == set(np.flatnonzero(search.mask))  # the circuit is a prefix
    # every prefix inside the circuit that ends a shell keeps its shell's level, exactly
    values = evaluator(np.stack([prefix_mask(order, k, graph.n) for k in range(1, search.size + 1)]))
    for k in range(1, 4):
        level = search.faithfulness * k / 4
        assert values.max() >= level
    assert values[-1] == pytest.approx(search.faithfulness)
    # outside the circuit: highest first-order gain of adding the edge first
    masks = torch.as_tensor(search.mask.astype(np.float32))[None].requires_grad_(True)
    (grad,) = torch.autograd.grad(evaluator.differentiable(masks).sum(), [masks])
    outside = order[search.size:]
    gains = grad[0].double().numpy()[outside]
    assert np.all(np.diff(gains) <= 1e-12)
    assert unchanged(model, before, training)


def test_lenet_rows_reuse_the_whole_batch_source_and_equal_a_run_on_those_rows(lenet):
    from explainnn.causal.edges import EdgeAblation

    model, inputs, target = lenet
    counterfactuals = inputs.flip(0)
    engine = EdgeAblation(model, inputs[:1], ablation="patch")
    masks = torch.rand(2, engine.edges.n, generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([5, 0, 17, 3])
    every = engine.logits(inputs, masks, counterfactuals)
    picked = engine.logits(inputs, masks, counterfactuals, rows=rows)
    alone = EdgeAblation(model, inputs[:1], ablation="patch").logits(inputs[rows], masks, counterfactuals[rows])
    assert torch.allclose(picked, alone, atol=1e-5) and torch.allclose(picked, every[:, rows], atol=1e-5)
    masks.requires_grad_(True)
    (grad,) = torch.autograd.grad(engine.logits(inputs, masks, counterfactuals, rows=rows)[..., target].sum(), [masks])
    masks_alone = masks.detach().clone().requires_grad_(True)
    (grad_alone,) = torch.autograd.grad(
        EdgeAblation(model, inputs[:1], ablation="patch").logits(inputs[rows], masks_alone,
                                                                  counterfactuals[rows])[..., target].sum(),
        [masks_alone])
    assert torch.allclose(grad, grad_alone, atol=1e-4)
