"""Parameters a forward adds to activations (position embeddings, class tokens) are constants, not refused weights.

A Vision Transformer adds a learned ``(1, T, d)`` position embedding and prepends
a class token: neither multiplies activations, so neither carries units or edges,
and interventions stay exact. A parameter that does multiply activations, even
disguised as ``W + 0``, is still refused in one line.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainnn.causal import discover
from explainnn.errors import InterventionError
from explainnn.interventions import InterventionRunner, find_layers, reference_run
from explainnn.interventions.layers import added_constants, placement_reason
from test_architectures import _assert_same, _specs, _state


class TinyViT(nn.Module):
    """Patch embedding (conv, stride = patch), class token, added position embedding, a pre-norm encoder block."""

    def __init__(self, mixing: str | None = None) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 8, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8))
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, 8))
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(8), nn.Linear(8, 3)
        self.mixing = mixing
        self.readout = nn.Parameter(torch.randn(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], 1)
        tokens = tokens + self.pos_embedding[:, : tokens.shape[1]]
        out = self.norm(self.encoder(tokens))[:, 0]
        if self.mixing == "matmul":
            out = out @ self.readout
        elif self.mixing == "disguised":
            out = out @ (self.readout + 0.0)
        return self.head(out)


def _vit(mixing: str | None = None) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TinyViT(mixing).eval(), torch.randn(60, 1, 8, 8)


def test_position_embedding_and_class_token_are_added_constants() -> None:
    model, _ = _vit()
    assert {"cls_token", "pos_embedding"} <= added_constants(model)
    assert placement_reason("", model) is None


@pytest.mark.parametrize("mixing", ["matmul", "disguised"])
def test_a_parameter_that_multiplies_activations_is_refused_in_one_line(mixing: str) -> None:
    model, x = _vit(mixing)
    assert "readout" not in added_constants(model)
    with pytest.raises(InterventionError) as error:
        discover(model, x, int(model(x).argmax(-1).mode().values), n_samples=5)
    assert "readout" in str(error.value) and "\n" not in str(error.value)


def test_vit_interventions_equal_the_naive_oracle_and_leave_the_model_as_it_was() -> None:
    model, x = _vit()
    layers = find_layers(model, x[:1])
    assert [layer.name for layer in layers][0] == "patch"
    assert any(layer.unit_kind.attention for layer in layers)
    specs = _specs(layers)
    before = _state(model)
    ours = InterventionRunner(model).run(x[:3], specs)
    naive = reference_run(model, x[:3], specs)
    _assert_same(model, before)
    for k, spec in enumerate(specs):
        torch.testing.assert_close(ours.logits[k], naive.logits[k], atol=1e-5, rtol=1e-4, msg=lambda m: f"{spec}: {m}")


def test_vit_discovery_and_causal_attributions_have_the_input_shape() -> None:
    from explainnn.attributions import attribute

    model, x = _vit()
    target = int(model(x).argmax(-1).mode().values)
    graph = discover(model, x, target, n_samples=10)
    assert graph.metadata["layers"][0] == "patch"
    maps = attribute(model, x[:3], target, "causal", graph=graph)
    assert tuple(maps.shape) == tuple(x[:3].shape)
