"""Causes that act only through a recurrence (hidden-to-hidden, at later steps) are found, for nodes and edges.

Planted recurrent models with hand-set weights: only the planted relay carries the
signal, so discovery must return exactly the planted graph, whichever way it
intervenes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainnn.causal import discover
from explainnn.interventions import EdgeIntervention, InterventionRunner

HIDDEN = 4


class Relay(nn.Module):
    """A one-layer recurrence whose head reads one unit; the input reaches that unit only through other units.

    ``chain`` lists units: ``chain[0]`` reads input feature 0, each next unit copies the one before it from the
    previous step (in the layer's own direction), and the head reads the last unit of the chain. ``slice_head``
    makes the head read only that unit's column (so no weight of another unit reaches the head at all);
    ``backward`` plants the chain in the backward direction of a bidirectional layer, and the head then reads
    the backward output at the first position (where the backward pass ends).
    """

    def __init__(self, cell: type[nn.RNNBase], chain: list[int], *, slice_head: bool = False,
                 backward: bool = False) -> None:
        super().__init__()
        self.rnn = cell(2, HIDDEN, batch_first=True, bidirectional=backward)
        self.head = nn.Linear(1 if slice_head else HIDDEN * (2 if backward else 1), 2)
        self.read, self.slice_head, self.backward = chain[-1] + (HIDDEN if backward else 0), slice_head, backward
        gates = {nn.RNN: 1, nn.GRU: 3, nn.LSTM: 4}[cell]
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.zero_()
            suffix = "_reverse" if backward else ""
            w_ih, w_hh = getattr(self.rnn, f"weight_ih_l0{suffix}"), getattr(self.rnn, f"weight_hh_l0{suffix}")
            for gate in range(gates):
                if cell is nn.LSTM and gate in (0, 1, 3):  # open the input, forget and output gates
                    getattr(self.rnn, f"bias_ih_l0{suffix}")[gate * HIDDEN : (gate + 1) * HIDDEN] = 4.0
                    continue
                if cell is nn.GRU and gate < 2:  # reset and update gates stay at sigmoid(0)
                    continue
                row = gate * HIDDEN
                w_ih[row + chain[0], 0] = 2.0
                for before, after in zip(chain, chain[1:]):
                    w_hh[row + after, before] = 2.0
            column = 0 if slice_head else self.read
            self.head.weight[1, column], self.head.weight[0, column] = 3.0, -3.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        step = out[:, 0] if self.backward else out[:, -1]
        return self.head(step[:, self.read : self.read + 1] if self.slice_head else step)


def _expected(chain: list[int], backward: bool = False) -> set[tuple[str, str]]:
    offset = HIDDEN if backward else 0
    units = [f"rnn:{unit + offset}" for unit in chain]
    return {("input:0", units[0]), (units[-1], "head:1"), *zip(units, units[1:])}


def _inputs() -> torch.Tensor:
    return torch.rand(60, 5, 2, generator=torch.Generator().manual_seed(0)) + 0.1


CASES = {
    "relay": dict(cell=nn.RNN, chain=[0, 1]),
    "relay-sliced-head": dict(cell=nn.RNN, chain=[0, 1], slice_head=True),
    "two-step": dict(cell=nn.RNN, chain=[2, 0, 1]),
    "two-step-sliced-head": dict(cell=nn.RNN, chain=[2, 0, 1], slice_head=True),
    "backward": dict(cell=nn.RNN, chain=[0, 1], backward=True),
    "backward-two-step": dict(cell=nn.RNN, chain=[3, 0, 1], backward=True),
    "gru-relay": dict(cell=nn.GRU, chain=[0, 1]),
    "lstm-two-step": dict(cell=nn.LSTM, chain=[2, 0, 1], slice_head=True),
}


@pytest.mark.parametrize("on", ["nodes", "edges"])
@pytest.mark.parametrize("case", list(CASES))
def test_planted_recurrence_relays_are_recovered_exactly(case, on):
    options = CASES[case]
    model = Relay(**options)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    graph = discover(model, _inputs(), 1, on=on, n_samples=40)
    assert set(graph.digraph.edges) == _expected(options["chain"], options.get("backward", False))
    for (cause, effect), attrs in ((edge[:2], edge[2]) for edge in graph.edges()):
        if cause.startswith("rnn") and effect.startswith("rnn"):
            assert attrs["via"] == "recurrent"
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_a_relay_unit_has_the_same_measured_effect_as_the_unit_it_feeds():
    """The engine measures what discovery must find: zeroing the relay's source drops the logit."""
    model = Relay(nn.RNN, [0, 1], slice_head=True)
    runner = InterventionRunner(model)
    x = _inputs()
    result = runner.run(x, [EdgeIntervention("rnn", 0, (1,), recurrent=True)], 1)
    assert (result.target_logit - result.clean_target_logit).mean() < -0.5


def test_recurrent_edges_are_tested_and_recorded_with_the_layer_as_child():
    graph = discover(Relay(nn.RNN, [2, 0, 1]), _inputs(), 1, on="edges", n_samples=40)
    records = [r for r in graph.results["tests"]["rnn"] if r.get("via") == "recurrent"]
    assert records and all(r["child"] == "rnn" for r in records)
    kept = {r["candidate"] for r in records if r["kept"]}
    assert kept == {0, 2}


def test_a_trained_dense_layer_gets_no_recurrent_edges_in_node_mode():
    """Node mode draws recurrent edges only from units whose weights reach nothing causal above them."""
    torch.manual_seed(0)

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.GRU(3, 6, batch_first=True), nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    head = Head()
    x = torch.randn(200, 4, 3)
    target = int(head(x).argmax(-1).mode().values)
    graph = discover(head, x, target, on="nodes", n_samples=40)
    assert graph.causes("rnn")
    assert not [e for e in graph.edges() if e[2].get("via") == "recurrent"]
