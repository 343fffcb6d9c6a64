"""The traced fx graph is reused per model only while the model's structure is the same."""

import torch
from torch import nn

from explainnn.interventions import InterventionRunner, reference_run
from explainnn.interventions import NodeIntervention as Node
from explainnn.interventions.fxsplit import GraphSplit


class Switchable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)
        self.mode = "relu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = torch.relu(h) if self.mode == "relu" else torch.tanh(h)  # resolved when traced
        return self.fc2(h)


def test_trace_is_reused_until_the_structure_changes() -> None:
    model = Switchable().eval()
    first, second = GraphSplit.trace(model), GraphSplit.trace(model)
    assert first is not second and first.graph_module is second.graph_module  # fresh split, one trace
    model.fc2 = nn.Linear(6, 3)
    assert GraphSplit.trace(model).graph_module is not first.graph_module
    model.train()
    assert GraphSplit.trace(model).graph_module is not first.graph_module


def test_a_stale_trace_is_caught_by_the_reuse_check() -> None:
    torch.manual_seed(0)
    model = Switchable().eval()
    x = torch.randn(5, 4)
    specs = [Node("fc1", 0), Node("fc1", 2, "constant", 1.5)]
    InterventionRunner(model).run(x, specs, 0)  # traces with relu
    model.mode = "tanh"  # not part of the structure: the cached trace is stale
    got = InterventionRunner(model).run(x, specs, 0)
    expected = reference_run(model, x, specs, 0)
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-5, atol=1e-6)
