"""Attributions through a circuit: what reaches the output only outside the circuit gets nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainnn.attributions import attribute
from explainnn.causal import node_circuit as circuit
from test_circuit_minimal import PlantedRNN, _rnn_data


def _leaky(weight: float) -> PlantedRNN:
    """The planted RNN plus a weak path from hidden unit 1 (input feature 1) into class 0, outside the circuit."""
    model = PlantedRNN()
    with torch.no_grad():
        model.fc.weight[0, 1] = weight
    return model


@pytest.fixture(scope="module")
def leaky() -> tuple[PlantedRNN, torch.Tensor, torch.Tensor, object]:
    model = _leaky(0.02)
    x, y = _rnn_data()
    graph = circuit(model, x, 0, labels=y, n_samples=20, steps=60)
    assert graph.causes("rnn") == [0, 2]
    return model, x, y, graph


def test_circuit_ig_gives_nothing_to_inputs_that_reach_the_class_outside_the_circuit(leaky):
    model, x, y, graph = leaky
    samples = x[y == 0][:4]
    maps = attribute(model, samples, 0, "circuit_ig", graph=graph)
    plain = attribute(model, samples, 0, "integrated_gradients")
    assert np.all(maps[..., 1] == 0.0)  # feature 1 reaches class 0 only through unit 1
    assert np.abs(plain[..., 1]).sum() > 0
    np.testing.assert_allclose(maps[..., 0], plain[..., 0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["circuit_ig", "circuit_occlusion"])
def test_changing_a_path_outside_the_circuit_leaves_the_attributions_unchanged(leaky, method):
    model, x, y, graph = leaky
    samples = x[y == 0][:4]
    before = attribute(model, samples, 0, method, graph=graph)
    after = attribute(_leaky(0.3), samples, 0, method, graph=graph)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)
    assert np.abs(before).sum() > 0
    base = "integrated_gradients" if method == "circuit_ig" else "occlusion"
    assert not np.allclose(attribute(model, samples, 0, base), attribute(_leaky(0.3), samples, 0, base))


def test_model_unchanged_and_deterministic(leaky):
    model, x, y, graph = leaky
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = attribute(model, x[:3], 0, "circuit_occlusion", graph=graph)
    b = attribute(model, x[:3], 0, "circuit_occlusion", graph=graph)
    assert np.array_equal(a, b)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.rnn._forward_hooks and "forward" not in model.rnn.__dict__
