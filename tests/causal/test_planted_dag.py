"""Discovery over the model's DAG on networks whose causes are planted by hand: the answer is known exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainnn.causal import discover
from explainnn.interventions import find_layers


class PlantedResidual(nn.Module):
    """``b = relu(main(h) + h)``, ``h = relu(stem(x))``, class 0 = ``b[0] + b[1]``.

    * ``stem:0`` (reads ``x0``) reaches class 0 only through the identity skip: ``main`` has no
      weights out of it, so ``b[0] = relu(h[0])``;
    * ``main:1`` (reads ``stem:2``, which reads ``x2``) reaches it only through the main branch:
      ``h[1]`` is always 0, so ``b[1] = relu(main(h)[1])``.

    Every other unit is active but feeds class 1 only, or nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.main = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.stem.weight[0, 0] = 1.0
            self.stem.weight[2, 2] = 1.0
            self.stem.weight[3, 3] = 1.0  # distractor: x3 -> stem:3 -> b[3] -> class 1
            self.main.weight[1, 2] = 2.0
            self.main.weight[3, 3] = 1.0
            self.main.weight[2, 3] = 1.0  # main:2 is active but class 0 does not read b[2]
            self.out.weight[0, 0] = 1.0
            self.out.weight[0, 1] = 1.0
            self.out.weight[1, 3] = 0.05
            self.out.weight[1, 2] = 0.05

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        return self.out(torch.relu(self.main(h) + h))


def _inputs(n: int = 40) -> torch.Tensor:
    return 0.5 + torch.rand(n, 4, generator=torch.Generator().manual_seed(3))


def test_residual_structure_marks_the_skip():
    layers = {layer.name: layer for layer in find_layers(PlantedResidual(), _inputs(1))}
    assert [(link.name, link.via) for link in layers["out"].parents] == [("main", "path"), ("stem", "path")]
    assert [(link.name, link.via) for link in layers["main"].parents] == [("stem", "weights")]


@pytest.mark.parametrize("intervention", ["hard", "soft"])
def test_residual_causes_through_the_skip_and_the_main_branch_are_recovered_exactly(intervention):
    graph = discover(PlantedResidual(), _inputs(), 0, n_samples=30, intervention=intervention, beta=0.0, delta=0.1)
    assert set(graph.graph.nodes) == {"out:0", "main:1", "stem:0", "stem:2", "input:0", "input:2"}
    assert set(graph.graph.edges) == {
        ("stem:0", "out:0"),  # only through the identity skip
        ("main:1", "out:0"),  # only through the main branch
        ("stem:2", "main:1"),
        ("input:0", "stem:0"),
        ("input:2", "stem:2"),
    }
    assert graph.graph.edges["stem:0", "out:0"]["via"] == "path"
    assert graph.graph.edges["stem:2", "main:1"]["via"] == "weights"


def test_residual_causes_as_nodes():
    graph = discover(PlantedResidual(), _inputs(), 0, n_samples=30, on="nodes")
    assert set(graph.graph.nodes) == {"out:0", "main:1", "stem:0", "stem:2", "input:0", "input:2"}
    # a node intervention on stem:2 acts on every path out of it; the edges follow the traced wiring
    assert ("stem:2", "main:1") in graph.graph.edges and ("stem:0", "out:0") in graph.graph.edges


class PlantedBiRNN(nn.Module):
    """A bidirectional ReLU RNN read at step 0: class 0 = backward unit 0 (unit 2), which carries input
    feature 0, present only at the last step, back to step 0. Only the backward direction can see it."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(2, 2, batch_first=True, bidirectional=True, nonlinearity="relu")
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.rnn.weight_ih_l0_reverse[0, 0] = 1.0
            self.rnn.weight_hh_l0_reverse[0, 0] = 1.0
            self.rnn.weight_ih_l0[0, 1] = 1.0  # distractors: forward unit 0 and backward unit 1 read feature 1
            self.rnn.weight_ih_l0_reverse[1, 1] = 1.0
            self.fc.weight[0, 2] = 1.0
            self.fc.weight[1, 0] = 0.01
            self.fc.weight[1, 3] = 0.01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0][:, 0])


def _sequence_inputs(n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    x = torch.zeros(n, 5, 2)
    x[:, -1, 0] = 0.5 + torch.rand(n, generator=g)
    x[:, :, 1] = 0.2 * torch.rand(n, 5, generator=g)
    return x


def test_bidirectional_units_are_named_forward_then_backward():
    layers = {layer.name: layer for layer in find_layers(PlantedBiRNN(), _sequence_inputs(1))}
    assert layers["rnn"].n_units == 4 and layers["rnn"].output_shape == (5, 4)
    assert layers["fc"].parents[0].name == "rnn" and layers["fc"].parents[0].unit_map == ((0,), (1,), (2,), (3,))


@pytest.mark.parametrize("on", ["edges", "nodes"])
def test_cause_only_in_the_backward_direction_is_recovered_exactly(on):
    graph = discover(PlantedBiRNN(), _sequence_inputs(), 0, n_samples=30, on=on)
    assert set(graph.graph.nodes) == {"fc:0", "rnn:2", "input:0"}
    assert set(graph.graph.edges) == {("rnn:2", "fc:0"), ("input:0", "rnn:2")}


def test_branching_graph_draws_depths_as_columns(tmp_path):
    from explainnn.causal.draw import _columns

    graph = discover(PlantedResidual(), _inputs(), 0, n_samples=30)
    assert _columns(graph, graph.layers()) == [["input"], ["stem"], ["main"], ["out"]]
    graph.draw(tmp_path / "graph.png", max_units_per_layer=1)
    assert (tmp_path / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
