"""No silent partial results: a module with weights that the engine cannot place, or cannot enter exactly, is refused.

Each case stops before any work with one line naming the module and why; what
the engine does accept (per-unit weights between layers) stays exact.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainnn.causal import discover
from explainnn.errors import InterventionError
from explainnn.interventions import InterventionRunner, NodeIntervention


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


class CellLoop(nn.Module):
    def __init__(self, cell: type[nn.RNNCellBase]) -> None:
        super().__init__()
        self.cell, self.fc = cell(3, 8), nn.Linear(8, 2)
        self.lstm = cell is nn.LSTMCell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], 8)
        state = (h, torch.zeros_like(h)) if self.lstm else h
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
        return self.fc(state[0] if self.lstm else state)


class TextTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 2)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(self.emb(x)).mean(1))


class AttentionPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.proj(x))
        return self.fc(self.attn(h, h, h, need_weights=False)[0].mean(1))


class RawMatrix(nn.Module):
    """A hidden layer written as ``x @ W`` with a bare parameter: a layer the engine cannot see."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.mix = nn.Parameter(torch.randn(6, 6))
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x) @ self.mix))


class LayerScale(nn.Module):
    """A per-channel scale between two layers (as ConvNeXt's layer scale): a weight-free path per unit."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)
        self.gamma = nn.Parameter(torch.rand(6) + 0.5)
        self.norm = nn.LayerNorm(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.norm(self.fc1(x)) * self.gamma))


def _target(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x).argmax(-1).mode().values)


@pytest.mark.parametrize("cell", [nn.RNNCell, nn.GRUCell, nn.LSTMCell])
def test_a_cell_called_in_a_loop_is_one_recurrent_layer(cell):
    """The calls of the cell are the steps of one layer: discovery walks it and an edit at one step equals the naive
    oracle, which runs the model with each call hooked."""
    from explainnn.interventions import reference_run

    torch.manual_seed(0)
    model, x = CellLoop(cell).eval(), torch.randn(30, 4, 3)
    graph = discover(model, x, _target(model, x), n_samples=10)
    assert "cell" in graph.metadata["layers"]
    specs = [NodeIntervention("cell", [0, 1, 2], steps=[2])]
    result = InterventionRunner(model).run(x[:5], specs)
    torch.testing.assert_close(result.logits, reference_run(model, x[:5], specs).logits, atol=1e-5, rtol=1e-4)
    assert float((result.logits - result.clean_logits).abs().max()) > 1e-4


def test_a_transformer_encoder_is_entered_and_its_linears_are_intervened_on():
    """With the fast path off inside the engine, nn.TransformerEncoderLayer calls linear1, so its edits count."""
    torch.manual_seed(0)
    model, x = TextTransformer().eval(), torch.randint(0, 50, (30, 7))
    result = InterventionRunner(model).run(x, [NodeIntervention("enc.layers.1.linear1", tuple(range(32)))], 1)
    assert float((result.logits[0] - result.clean_logits).abs().max()) > 1e-3
    graph = discover(model, x, _target(model, x), n_samples=10)
    assert "enc.layers.1.linear1" in graph.layers()


def test_multihead_attention_heads_are_units():
    torch.manual_seed(0)
    model, x = AttentionPool().eval(), torch.randn(30, 5, 4)
    graph = discover(model, x, _target(model, x), n_samples=10)
    assert "attn" in graph.layers()
    result = InterventionRunner(model).run(x, [NodeIntervention("attn", 0)], 1)
    assert float((result.logits[0] - result.clean_logits).abs().max()) > 1e-4


def test_a_bare_weight_matrix_in_the_forward_is_refused():
    torch.manual_seed(0)
    model, x = RawMatrix().eval(), torch.randn(40, 4)
    with pytest.raises(InterventionError) as error:
        discover(model, x, _target(model, x), n_samples=10)
    message = _one_line(error)
    assert "RawMatrix" in message and "mix" in message


def test_per_unit_weights_between_layers_are_a_path_and_stay_exact():
    model, x = LayerScale().eval(), torch.randn(40, 4)
    result = InterventionRunner(model).run(x, [NodeIntervention("fc1", 2)], 1)

    def zero_unit(module, args, output):
        output = output.clone()
        output[:, 2] = 0.0
        return output

    handle = model.fc1.register_forward_hook(zero_unit)
    try:
        with torch.no_grad():
            expected = model(x)
    finally:
        handle.remove()
    torch.testing.assert_close(result.logits[0], expected, rtol=1e-5, atol=1e-6)
    graph = discover(model, x, _target(model, x), n_samples=20, on="nodes")
    assert graph.causes("fc1")
