"""Attributions through an edge circuit (``edge_circuit_ig``, ``edge_circuit_occlusion``).

``F_C`` is the model's target logit with every edge outside the circuit carrying
its value on the baseline (zeros). The planted MLP below has positive weights
and biases, so every ReLU stays in its linear part along the Integrated
Gradients path and the attributions are known in closed form.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from explainnn.attributions import attribute, method_info
from explainnn.attributions.through_edges import circuit_keep, circuit_model
from explainnn.causal import CausalGraph
from explainnn.causal.edges import enumerate_edges
from explainnn.errors import UserError
from explainnn.models.lenet import LeNet
from explainnn.models.recurrent import RecurrentClassifier


def edge_graph(model: nn.Module, example: torch.Tensor, keep: Callable[[str, int, str, int], bool]) -> CausalGraph:
    """The edge circuit of the model's edges where ``keep(parent layer, i, child layer, j)``.

    Recurrent edges between two units go into the graph with ``via="recurrent"``; a unit's edge to itself
    (which a CausalGraph cannot hold) is listed in ``results["edge_circuit"]["same_layer_edges"]``.
    """
    edges = enumerate_edges(model, example[:1])
    order = list(dict.fromkeys(["input", *edges.child_layer]))
    last = order[-1]
    graph = CausalGraph({"kind": "edge_circuit"})
    same = []
    for p, i, c, j, kind in zip(edges.parent_layer, edges.parent_unit, edges.child_layer, edges.child_unit,
                                edges.kind):
        i, j = int(i), int(j)
        if not keep(p, i, c, j):
            continue
        if kind == "recurrent" and i == j:
            same.append({"edge": f"{p}:{i}->{c}:{j}"})
            continue
        parent = graph.add_unit(p, i, kind="input" if p == "input" else "hidden", depth=order.index(p))
        child = graph.add_unit(c, j, kind="output" if c == last else "hidden", depth=order.index(c))
        graph.add_edge(parent, child, **({"via": "recurrent"} if kind == "recurrent" else {}))
    graph.add_result("edge_circuit", {"same_layer_edges": same})
    return graph


def every_edge(*_: object) -> bool:
    return True


def planted_mlp() -> nn.Sequential:
    """4 inputs -> 3 hidden (ReLU) -> 2 classes; positive weights and biases."""
    model = nn.Sequential(OrderedDict([("fc1", nn.Linear(4, 3)), ("relu", nn.ReLU()), ("fc2", nn.Linear(3, 2))]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.2 + torch.rand(param.shape, generator=generator))
    return model.eval()


def lenet(in_channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    model = LeNet(in_channels=in_channels).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(3.0)  # visible logit changes at random initialisation
    return model


def lstm_rows() -> nn.Module:
    torch.manual_seed(0)
    return RecurrentClassifier("lstm", 32, 10, hidden_size=8).eval()


def images(n: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, 32, 32, generator=torch.Generator().manual_seed(seed))


def circuit_logits(model: nn.Module, graph: CausalGraph, x: torch.Tensor, target: int) -> np.ndarray:
    with torch.no_grad():
        return circuit_model(model, graph, x[:1])(x, torch.zeros_like(x))[:, target].double().numpy()


# ----------------------------------------------------------------------------- registration and the mask
def test_both_methods_are_registered_for_float_inputs_and_need_a_graph():
    for name in ("edge_circuit_ig", "edge_circuit_occlusion"):
        info = method_info(name)
        assert info.needs_graph and not info.stochastic
        assert info.modalities == ("image", "sequence", "tabular")
    model = planted_mlp()
    with pytest.raises(UserError, match="needs a causal graph"):
        attribute(model, torch.rand(2, 4), 0, "edge_circuit_ig")


def test_the_keep_mask_holds_exactly_the_graph_edges_recurrent_ones_included():
    model, x = lstm_rows(), images(1)
    edges = enumerate_edges(model, x)
    chosen = {("input", 3, "lstm", 1), ("lstm", 1, "lstm", 1), ("lstm", 1, "lstm", 4), ("lstm", 4, "fc", 2)}
    graph = edge_graph(model, x, lambda p, i, c, j: (p, i, c, j) in chosen)
    keep = circuit_keep(model, graph, x, edges)
    got = {(edges.parent_layer[e], int(edges.parent_unit[e]), edges.child_layer[e], int(edges.child_unit[e]),
            edges.kind[e]) for e in np.flatnonzero(keep)}
    assert got == {("input", 3, "lstm", 1, "input"), ("lstm", 1, "lstm", 1, "recurrent"),
                   ("lstm", 1, "lstm", 4, "recurrent"), ("lstm", 4, "fc", 2, "weights")}


@pytest.mark.parametrize("bad, reason", [
    (("conv1", 7, "conv2", 0), "unit out of range"),
    (("conv1", 0, "fc1", 0), "no link conv1 -> fc1"),
])
def test_a_graph_edge_the_model_lacks_is_one_line_naming_it(bad, reason):
    model, x = lenet(), images(2)
    graph = edge_graph(model, x, lambda p, i, c, j: p == "fc2")
    layers = ["input", "conv1", "conv2", "fc1", "fc2", "fc3"]
    p, i, c, j = bad
    graph.add_unit(p, i, depth=layers.index(p))
    graph.add_unit(c, j, depth=layers.index(c))
    graph.add_edge(f"{p}:{i}", f"{c}:{j}")
    for method in ("edge_circuit_ig", "edge_circuit_occlusion"):
        with pytest.raises(UserError) as error:
            attribute(model, x, 3, method, graph=graph)
        message = str(error.value)
        assert "\n" not in message, reason
        assert f"'{p}:{i}->{c}:{j}' is not an edge of LeNet" in message, reason


# ----------------------------------------------------------------------------- the definition
def test_the_circuit_model_is_the_model_on_the_baseline_and_with_every_edge():
    model, x = lenet(), images(4)
    half = edge_graph(model, x, lambda p, i, c, j: (i + j) % 2 == 0)
    full = edge_graph(model, x, every_edge)
    with torch.no_grad():
        plain = model(x)[:, 3].double().numpy()
        at_baseline = model(torch.zeros_like(x))[:, 3].double().numpy()
    np.testing.assert_allclose(circuit_logits(model, full, x, 3), plain, rtol=1e-5, atol=1e-6)
    zero = torch.zeros_like(x)
    np.testing.assert_allclose(circuit_logits(model, half, zero, 3), at_baseline, rtol=1e-5, atol=1e-6)
    assert not np.allclose(circuit_logits(model, half, x, 3), plain, rtol=1e-3, atol=1e-4)


def test_successive_baselines_each_patch_their_own_values():
    """The circuit model's ablated edges follow the baseline passed with each call."""
    model, x = lenet(), images(4)
    forward = circuit_model(model, edge_graph(model, x, lambda *_: False), x[:1])
    for k in range(8):
        with torch.no_grad():
            baseline = torch.full_like(x, 0.1 * k)
            np.testing.assert_allclose(forward(x, baseline).numpy(), model(baseline).numpy(), rtol=1e-5, atol=1e-6)
        del baseline


def test_integrated_gradients_reach_the_circuit_model_through_the_inputs():
    """The method is captum's IntegratedGradients of F_C (the baseline passed along as F_C's counterfactual)."""
    model, x = lenet(), images(3)
    graph = edge_graph(model, x, lambda p, i, c, j: (3 * i + j) % 4 != 0)
    ours = attribute(model, x, 3, "edge_circuit_ig", graph=graph, n_steps=32)
    forward = circuit_model(model, graph, x[:1])
    zero = torch.zeros_like(x)
    theirs = IntegratedGradients(forward).attribute(x, baselines=zero, target=3, n_steps=32,
                                                    additional_forward_args=(zero,)).detach().numpy()
    assert np.abs(theirs).max() > 1e-4
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6 * np.abs(theirs).max())


@pytest.mark.parametrize("build, data", [(lenet, images), (lstm_rows, images)], ids=["lenet", "lstm"])
def test_completeness_sum_is_the_circuit_model_minus_the_model_at_the_baseline(build, data):
    model, x = build(), data(4)
    graph = edge_graph(model, x, lambda p, i, c, j: (i + 2 * j) % 3 != 0)
    maps = attribute(model, x, 3, "edge_circuit_ig", graph=graph, n_steps=256)
    with torch.no_grad():
        at_baseline = model(torch.zeros_like(x))[:, 3].double().numpy()
    expected = circuit_logits(model, graph, x, 3) - at_baseline
    assert np.abs(expected).min() > 1e-3
    np.testing.assert_allclose(maps.reshape(len(x), -1).sum(1, dtype=np.float64), expected,
                               rtol=0.02, atol=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize("build, data", [(lenet, images), (lstm_rows, images)], ids=["lenet", "lstm"])
def test_with_every_edge_it_is_plain_integrated_gradients(build, data):
    model, x = build(), data(3)
    ours = attribute(model, x, 3, "edge_circuit_ig", graph=edge_graph(model, x, every_edge), n_steps=64)
    captum = IntegratedGradients(model).attribute(x, target=3, n_steps=64).detach().numpy()
    assert np.abs(captum).max() > 1e-4
    np.testing.assert_allclose(ours, captum, rtol=1e-4, atol=1e-6 * np.abs(captum).max())


def test_with_every_edge_occlusion_is_plain_occlusion():
    model, x = lenet(), images(2)
    ours = attribute(model, x, 3, "edge_circuit_occlusion", graph=edge_graph(model, x, every_edge))
    plain = attribute(model, x, 3, "occlusion")
    assert np.abs(plain).max() > 1e-4
    np.testing.assert_allclose(ours, plain, rtol=1e-5, atol=1e-6 * np.abs(plain).max())


# ----------------------------------------------------------------------------- what the circuit cuts
def test_an_input_channel_without_circuit_edges_gets_exactly_zero_on_lenet():
    model, x = lenet(in_channels=3), images(3, channels=3)
    graph = edge_graph(model, x, lambda p, i, c, j: not (p == "input" and i == 1))
    maps = attribute(model, x, 3, "edge_circuit_ig", graph=graph)
    plain = attribute(model, x, 3, "integrated_gradients")
    assert np.all(maps[:, 1] == 0.0)
    assert np.abs(plain[:, 1]).max() > 1e-4
    assert np.abs(maps[:, [0, 2]]).max() > 1e-4


def test_an_input_feature_without_circuit_edges_gets_exactly_zero_on_the_lstm_over_rows():
    model, x = lstm_rows(), images(3)
    graph = edge_graph(model, x, lambda p, i, c, j: not (p == "input" and i == 5))
    maps = attribute(model, x, 3, "edge_circuit_ig", graph=graph)
    plain = attribute(model, x, 3, "integrated_gradients")
    assert maps.shape == x.shape
    assert np.all(maps[..., 5] == 0.0)  # column 5 of every row is input feature 5 at every step
    assert np.abs(plain[..., 5]).max() > 1e-4
    assert np.abs(np.delete(maps, 5, axis=-1)).max() > 1e-4


@pytest.mark.parametrize("method", ["edge_circuit_ig", "edge_circuit_occlusion"])
def test_a_planted_path_gets_all_the_attribution_of_its_inputs(method):
    """Circuit input:0 -> fc1:1, input:2 -> fc1:1, fc1:1 -> fc2:0. The ReLU stays linear, so
    F_C(x) - F_C(0) = W2[0, 1] (W1[1, 0] x0 + W1[1, 2] x2), and IG and one-feature occlusion both give
    W2[0, 1] W1[1, k] x_k to inputs 0 and 2, and 0 to inputs 1 and 3 (IG exactly; occlusion, a difference of
    two circuit-model values, to float rounding)."""
    model = planted_mlp()
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(1)) + 0.1
    kept = {("input", 0, "fc1", 1), ("input", 2, "fc1", 1), ("fc1", 1, "fc2", 0)}
    graph = edge_graph(model, x, lambda p, i, c, j: (p, i, c, j) in kept)
    maps = attribute(model, x, 0, method, graph=graph)
    w1, w2 = model.fc1.weight.detach(), model.fc2.weight.detach()
    expected = np.zeros((5, 4))
    for k in (0, 2):
        expected[:, k] = (w2[0, 1] * w1[1, k] * x[:, k]).numpy()
    if method == "edge_circuit_ig":
        assert np.all(maps[:, [1, 3]] == 0.0)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    plain = attribute(model, x, 0, "integrated_gradients")
    assert np.abs(plain[:, [1, 3]]).min() > 1e-3


def test_a_target_without_circuit_edges_gets_nothing():
    model = planted_mlp()
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(2))
    graph = edge_graph(model, x, lambda p, i, c, j: c != "fc2" or j == 0)
    assert np.all(attribute(model, x, 1, "edge_circuit_ig", graph=graph) == 0.0)
    assert np.abs(attribute(model, x, 0, "edge_circuit_ig", graph=graph)).max() > 1e-3


# ----------------------------------------------------------------------------- shapes and the model
@pytest.mark.parametrize("method", ["edge_circuit_ig", "edge_circuit_occlusion"])
def test_sequences_come_back_in_their_shape(method):
    model = lstm_rows()
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    graph = edge_graph(model, x, lambda p, i, c, j: (i + j) % 2 == 0)
    maps = attribute(model, x, 3, method, graph=graph)
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all() and np.abs(maps).max() > 0


@pytest.mark.parametrize("method", ["edge_circuit_ig", "edge_circuit_occlusion"])
def test_the_model_is_left_exactly_as_it_was(method):
    model, x = lenet(), images(2)
    graph = edge_graph(model, x, lambda p, i, c, j: (i + j) % 3 == 0)
    model.train()
    model.fc1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    first = attribute(model, x, 3, method, graph=graph)
    second = attribute(model, x, 3, method, graph=graph)
    assert np.array_equal(first, second)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert model.training and all(m.training for m in model.modules())
    assert all("forward" not in m.__dict__ for m in model.modules())
