"""The causal attribution methods: their defining properties, on CNNs, RNNs and tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.attributions import attribute, causal_path_maps
from explainnn.causal import CausalGraph
from explainnn.data.base import DatasetInfo
from explainnn.errors import UserError
from explainnn.models import build_model


def _graph(causes: dict[str, list[int]], output: tuple[str, int]) -> CausalGraph:
    """A hand-made graph: ``causes`` from the lowest layer up, every cause linked to the next layer's causes."""
    graph = CausalGraph({"target": output[1]})
    names = list(causes)
    ids = {}
    for depth, name in enumerate(names, start=1):
        ids[name] = [graph.add_unit(name, i, depth=depth) for i in causes[name]]
    top = graph.add_unit(output[0], output[1], kind="output", depth=len(names) + 1)
    for lower, upper in zip(names, names[1:]):
        for a in ids[lower]:
            for b in ids[upper]:
                graph.add_edge(a, b, effect=-1.0)
    for a in ids[names[-1]]:
        graph.add_edge(a, top, effect=-1.0)
    return graph


def _lenet() -> nn.Module:
    torch.manual_seed(0)
    info = DatasetInfo("toy", "image", (1, 32, 32), 10, tuple(str(i) for i in range(10)), "toy")
    return build_model("lenet", info).eval()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float error, relative to the attributions' scale (untrained models give small ones)."""
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max()))


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(1))


LENET_CAUSES = {"conv1": [0, 2, 5], "conv2": [1, 3, 4, 9], "fc1": list(range(0, 120, 3)), "fc2": list(range(0, 84, 2))}


def test_units_outside_the_graph_contribute_nothing():
    model, x = _lenet(), _images()
    graph = _graph(LENET_CAUSES, ("fc3", 3))
    before = attribute(model, x, 3, "causal", graph=graph)
    with torch.no_grad():  # rewire only what reaches the output through non-causal units
        model.conv1.weight[1].mul_(-3.0)
        model.conv2.weight[0].add_(1.0)
        model.fc1.weight[1].normal_()
        model.fc2.weight[1].normal_()
        model.fc3.weight[3, 1] = 50.0  # edge from a held fc2 unit into the target
    after = attribute(model, x, 3, "causal", graph=graph)
    assert np.abs(before).max() > 0 and _same(after, before)
    with torch.no_grad():  # a causal unit's weights do matter
        model.conv1.weight[0].mul_(-3.0)
    assert not _same(attribute(model, x, 3, "causal", graph=graph), before)


def test_full_graph_equals_the_unrestricted_method():
    model, x = _lenet(), _images()
    full = _graph({"conv1": list(range(6)), "conv2": list(range(16)), "fc1": list(range(120)),
                   "fc2": list(range(84))}, ("fc3", 3))
    for base in ("integrated_gradients", "saliency"):
        ours = attribute(model, x, 3, "causal", graph=full, base=base)
        assert _same(ours, attribute(model, x, 3, base))


def test_hold_at_mean_differs_from_zero_and_needs_reference():
    model, x = _lenet(), _images()
    graph = _graph(LENET_CAUSES, ("fc3", 3))
    zero = attribute(model, x, 3, "causal", graph=graph)
    mean = attribute(model, x, 3, "causal", graph=graph, hold="mean", reference=_images(16))
    assert mean.shape == zero.shape and not _same(mean, zero)
    with pytest.raises(UserError, match="reference"):
        attribute(model, x, 3, "causal", graph=graph, hold="mean")
    with pytest.raises(UserError, match="graph-free"):
        attribute(model, x, 3, "causal", graph=graph, base="causal")
    with pytest.raises(UserError, match="needs a causal graph"):
        attribute(model, x, 3, "causal")


def test_recurrent_units_are_held_through_the_recurrence():
    torch.manual_seed(0)
    info = DatasetInfo("rows", "image", (1, 12, 10), 4, ("a", "b", "c", "d"), "toy")
    model = build_model("lstm", info, hidden_size=8).eval()
    x = torch.rand(3, 1, 12, 10, generator=torch.Generator().manual_seed(2))
    graph = _graph({"lstm": [0, 3, 5]}, ("fc", 1))
    before = attribute(model, x, 1, "causal", graph=graph)
    assert before.shape == x.shape  # time steps x features, in image layout
    with torch.no_grad():  # everything that drives the held unit 2, at every gate
        for gate in range(4):
            model.lstm.weight_ih_l0[gate * 8 + 2].normal_()
            model.lstm.weight_hh_l0[gate * 8 + 2].normal_()
        model.lstm.weight_hh_l0[:, 2].normal_()  # and everything it would feed back
    assert np.abs(before).max() > 0 and _same(attribute(model, x, 1, "causal", graph=graph), before)
    with torch.no_grad():
        model.lstm.weight_ih_l0[3].normal_()  # input gate of causal unit 3
    assert not _same(attribute(model, x, 1, "causal", graph=graph), before)


def test_token_models_get_one_score_per_token():
    torch.manual_seed(0)
    vocab = ("<pad>", "<unk>", *[f"w{i}" for i in range(20)])
    info = DatasetInfo("toks", "tokens", (7,), 2, ("neg", "pos"), "toy", vocab, 0, 1)
    model = build_model("gru", info, hidden_size=6, embedding_dim=5).eval()
    tokens = torch.randint(2, 22, (3, 7), generator=torch.Generator().manual_seed(3))
    tokens[:, :2] = 0
    graph = _graph({"gru": [1, 4]}, ("fc", 1))
    scores = attribute(model, tokens, 1, "causal", graph=graph)
    assert scores.shape == (3, 7)
    np.testing.assert_array_equal(scores, attribute(model, tokens, 1, "causal", graph=graph))


def test_causal_paths_maps_per_unit_and_their_sum():
    model, x = _lenet(), _images()
    graph = _graph(LENET_CAUSES, ("fc3", 3))
    maps, total = causal_path_maps(model, x, graph, "conv2")
    assert sorted(maps) == LENET_CAUSES["conv2"]
    assert all(m.shape == (3, 32, 32) for m in maps.values())
    assert total.shape == (3, 1, 32, 32)
    assert torch.allclose(total.flatten(1).abs().amax(1), torch.ones(3))
    result = attribute(model, x, 3, "causal_paths", graph=graph, layer="conv2")
    np.testing.assert_allclose(result, total.numpy(), rtol=1e-6)
    # Only causal parents count: changing a non-causal conv1 channel's output weights changes nothing.
    with torch.no_grad():
        model.conv2.weight[:, 1].normal_()
    np.testing.assert_allclose(attribute(model, x, 3, "causal_paths", graph=graph, layer="conv2"), result,
                               rtol=1e-6)
    fc_maps, _ = causal_path_maps(model, x, graph, "fc1")
    assert len(fc_maps) == len(LENET_CAUSES["fc1"])
    with pytest.raises(UserError, match="Linear layer fed by a Conv2d"):
        causal_path_maps(model, x, graph, "fc3")
    with pytest.raises(UserError, match="no causal units in layer 'conv2'"):
        causal_path_maps(model, x, _graph({"fc2": [0, 1]}, ("fc3", 3)), "conv2")
    with pytest.raises(UserError, match="unknown layer"):
        causal_path_maps(model, x, graph, "conv9")
