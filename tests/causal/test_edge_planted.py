"""Planted edge circuits that :func:`edge_circuit` must recover exactly, on the real edge-ablation forward.

Each model's target logit flows along one planted chain of edges; every other edge
has weights but exactly no effect on the target (it leads to units the target does
not read, or carries a value that is zero at every step), so each planted edge is
necessary (removing it zeroes the signal) and every other edge can go. Zero
ablation (an ablated edge carries 0) with bias-free layers makes "no effect"
exact. The four patterns:

* a unit that reaches the output through only one of its child layer's units
  (``fc1:0`` feeds ``fc2:0`` and ``fc2:1``; only ``fc2:0`` reaches the target);
* a skip-only path: a residual add ``z = h + r`` where the target reads only a
  unit that the skip fills (the residual branch has weights but adds nothing there);
* a recurrent edge used only at some steps: the signal enters at step 0 and
  crosses ``rnn:0 -> rnn:1`` only from step 0 to step 1;
* a bidirectional backward-only edge: the signal enters at the last step and
  runs along a hidden-to-hidden edge of the backward direction only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.causal.edge_search import edge_circuit, find_edge_circuit

TARGET = 1


def _linear(rows: int, cols: int, entries: dict[tuple[int, int], float]) -> nn.Linear:
    layer = nn.Linear(cols, rows, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        for (j, i), value in entries.items():
            layer.weight[j, i] = value
    return layer


class OneChildEdge(nn.Module):
    """``fc1:0`` reads inputs 0 and 1 and feeds ``fc2:0`` and ``fc2:1``; the target reads ``fc2:0`` only."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = _linear(3, 4, {(0, 0): 1.0, (0, 1): 1.0, (1, 2): 1.0, (2, 3): 1.0})
        self.fc2 = _linear(3, 3, {(0, 0): 2.0, (1, 0): 1.5, (1, 1): 1.0, (2, 2): 1.0})
        self.fc3 = _linear(3, 3, {(TARGET, 0): 1.0, (0, 1): 1.0, (2, 2): 1.0})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


PLANTED_ONE_CHILD = {"input:0->fc1:0", "input:1->fc1:0", "fc1:0->fc2:0", "fc2:0->fc3:1"}


class SkipOnly(nn.Module):
    """``z = h + r(h)``: the target reads ``z:0``, which only the skip from ``fc1:0`` fills."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = _linear(3, 3, {(0, 0): 1.0, (1, 1): 1.0, (2, 2): 1.0})
        self.branch = _linear(3, 3, {(1, 0): 0.5, (1, 1): 0.5, (2, 0): 0.2})  # nothing into z:0
        self.head = _linear(3, 3, {(TARGET, 0): 1.5, (0, 1): 1.0, (2, 2): 1.0})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        z = h + torch.relu(self.branch(h))
        return self.head(z)


PLANTED_SKIP = {"input:0->fc1:0", "fc1:0->head:1"}


def _rnn(bidirectional: bool) -> nn.RNN:
    rnn = nn.RNN(2, 3, batch_first=True, bias=False, bidirectional=bidirectional)
    with torch.no_grad():
        for name, param in rnn.named_parameters():
            param.zero_()
    return rnn


class RecurrentSomeSteps(nn.Module):
    """Input 0 is non-zero at step 0 only; ``rnn:0`` reads it and feeds ``rnn:1`` at the next step; the head reads
    the mean over steps of ``rnn:1``. Unit 2 reads input 1 and unit 0 (other weights), the head ignores it."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = _rnn(False)
        with torch.no_grad():
            self.rnn.weight_ih_l0[0, 0] = 1.5
            self.rnn.weight_ih_l0[2, 1] = 1.0
            self.rnn.weight_hh_l0[1, 0] = 2.0
            self.rnn.weight_hh_l0[2, 0] = 1.0
            self.rnn.weight_hh_l0[2, 1] = 0.5
        self.fc = _linear(3, 3, {(TARGET, 1): 3.0, (0, 2): 1.0})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0].mean(1))


PLANTED_RECURRENT = {"input:0->rnn:0", "rnn:0->rnn:1", "rnn:1->fc:1"}


class BackwardOnly(nn.Module):
    """A bidirectional RNN (units 0-2 forward, 3-5 backward): input 0 is non-zero at the last step only and reaches
    the target through backward unit 3 -> backward unit 4 (the previous step in backward order). The forward
    direction reads input 0 too; the head ignores its units."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = _rnn(True)
        with torch.no_grad():
            self.rnn.weight_ih_l0[0, 0] = 1.0  # forward unit 0
            self.rnn.weight_hh_l0[1, 0] = 1.0  # forward 0 -> forward 1
            self.rnn.weight_ih_l0_reverse[0, 0] = 1.5  # backward unit 3
            self.rnn.weight_hh_l0_reverse[1, 0] = 2.0  # backward 3 -> backward 4
            self.rnn.weight_ih_l0_reverse[2, 1] = 1.0  # backward 5 reads input 1
        self.fc = _linear(3, 6, {(TARGET, 4): 3.0, (0, 1): 1.0, (2, 5): 1.0})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0].mean(1))


PLANTED_BACKWARD = {"input:0->rnn:3", "rnn:3->rnn:4", "rnn:4->fc:1"}


def _vectors(n: int, features: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, features, generator=torch.Generator().manual_seed(seed)) + 0.5


def _sequences(n: int, step: int, seed: int = 0) -> torch.Tensor:
    """``(n, 3, 2)``: input 0 non-zero only at ``step``, input 1 at every step."""
    x = torch.zeros(n, 3, 2)
    generator = torch.Generator().manual_seed(seed)
    x[:, step, 0] = torch.rand(n, generator=generator) + 0.5
    x[:, :, 1] = torch.rand(n, 3, generator=generator) + 0.5
    return x


def _found(model: nn.Module, inputs: torch.Tensor, **options) -> tuple[set[str], object]:
    search = find_edge_circuit(model, inputs, TARGET, ablation="zero", n_samples=len(inputs), steps=60, **options)
    ids = np.asarray(search.edges.ids())
    return set(ids[search.mask].tolist()), search


def _classified_as_target(model: nn.Module, inputs: torch.Tensor) -> None:
    """The planted signal makes the target the predicted class of every input (so all are circuit samples)."""
    with torch.no_grad():
        model.eval()
        assert (model(inputs).argmax(1) == TARGET).all()


CASES = {
    "one_child_edge": (OneChildEdge, lambda: _vectors(24, 4) * torch.tensor([1.0, 1.0, 0.1, 0.1]),
                       PLANTED_ONE_CHILD),
    "skip_only": (SkipOnly, lambda: _vectors(24, 3) * torch.tensor([1.0, 0.1, 0.1]), PLANTED_SKIP),
    "recurrent_some_steps": (RecurrentSomeSteps, lambda: _sequences(24, 0) * torch.tensor([1.0, 0.1]),
                             PLANTED_RECURRENT),
    "backward_only": (BackwardOnly, lambda: _sequences(24, 2) * torch.tensor([1.0, 0.1]), PLANTED_BACKWARD),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("method", ["edge_pruning", "eap_ig"])
def test_planted_circuit_is_recovered_exactly(name: str, method: str) -> None:
    factory, inputs_of, planted = CASES[name]
    torch.manual_seed(0)
    model, inputs = factory(), inputs_of()
    _classified_as_target(model, inputs)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    found, search = _found(model, inputs, method=method)
    if method == "eap_ig":  # a ranking's shortest prefix, then exact pruning is edge_pruning's; compare ranks
        order = np.argsort(-search.scores, kind="stable")[: len(planted)]
        found = set(np.asarray(search.edges.ids())[order].tolist())
    assert found == planted
    assert search.faithfulness == pytest.approx(1.0, abs=1e-5)
    # every planted edge is necessary: its removal drops the exact faithfulness below the level
    if method == "edge_pruning":
        assert all(search.faithfulness - lost < search.level for lost in search.effect.values())
    # other edges exist and carry weights; the circuit is a small part of them
    assert search.edges.n >= 3 * len(planted)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def test_recurrent_edges_are_edges_of_the_graph() -> None:
    """The circuit's hidden-to-hidden edges are real edges of the returned graph, marked ``via="recurrent"``."""
    model, inputs = RecurrentSomeSteps(), CASES["recurrent_some_steps"][1]()
    graph = edge_circuit(model, inputs, TARGET, ablation="zero", n_samples=len(inputs), steps=60)
    edges = {(a, b): data for a, b, data in graph.digraph.edges(data=True)}
    assert ("rnn:0", "rnn:1") in edges
    assert edges[("rnn:0", "rnn:1")]["via"] == "recurrent"
    assert edges[("rnn:0", "rnn:1")]["kind"] == "recurrent"
    assert {(a, b) for a, b in edges} == {("input:0", "rnn:0"), ("rnn:0", "rnn:1"), ("rnn:1", "fc:1")}
    assert graph.results["edge_circuit"]["same_layer_edges"] == []
    assert graph.results["edge_circuit"]["n_edges"] == 3


def test_recurrent_signal_crosses_only_from_step_zero() -> None:
    """The recurrent edge matters because of step 0 alone: with the signal moved to the last step (where no later
    step reads it through the edge) the circuit needs no recurrent edge."""
    model = RecurrentSomeSteps()
    late = _sequences(24, 2) * torch.tensor([1.0, 0.1])
    with torch.no_grad():  # the head also reads rnn:0 so that a late signal reaches the target
        model.fc.weight[TARGET, 0] = 3.0
    found, _ = _found(model, late)
    assert found == {"input:0->rnn:0", "rnn:0->fc:1"}
