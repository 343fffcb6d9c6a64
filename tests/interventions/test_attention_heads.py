"""Attention heads and transformer MLP neurons as units: exact, batched, equal to the one-sample-at-a-time oracle.

Models: a small text transformer (token and position embeddings, ``nn.TransformerEncoder``
of two ``nn.TransformerEncoderLayer``, mean pool, Linear; post- and pre-norm, ReLU and
GELU) and ``nn.MultiheadAttention`` pooling (batch-first or not, with key padding and
attention masks and the weights returned). Every weight layer is in the layer DAG and
the discovery walk; node and edge interventions on heads and neurons equal the oracle;
the model and PyTorch's fast-path flag are as before afterwards, also when a run raises.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainnn.causal import discover
from explainnn.causal.discovery import DiscoveryResult
from explainnn.errors import InterventionError
from explainnn.interventions import EdgeIntervention, InterventionRunner, NodeIntervention
from explainnn.interventions.layers import find_layers
from explainnn.interventions.reference import reference_run


class TextTransformer(nn.Module):
    def __init__(self, norm_first: bool = False, activation: str = "relu") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.pos = nn.Embedding(20, 8), nn.Embedding(5, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first,
                                           activation=activation)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        return self.fc(self.enc(self.emb(x) + self.pos(positions)).mean(1))


class AttentionPool(nn.Module):
    def __init__(self, batch_first: bool = True, masked: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.fc = nn.Linear(8, 3)
        self.batch_first, self.masked = batch_first, masked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.proj(x))
        kwargs = {}
        if self.masked:
            padding = x[..., 0] > 1.0
            padding[:, 0] = False
            kwargs = {"key_padding_mask": padding,
                      "attn_mask": torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(2)}
        if not self.batch_first:
            h = h.transpose(0, 1)
        out, weights = self.attn(h, h, h, need_weights=self.masked, **kwargs)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.fc(out.mean(1))


MODELS = {
    "text": lambda: (TextTransformer().eval(), torch.randint(0, 20, (6, 5), generator=torch.Generator().manual_seed(1))),
    "text_prenorm_gelu": lambda: (TextTransformer(True, "gelu").eval(),
                                  torch.randint(0, 20, (6, 5), generator=torch.Generator().manual_seed(1))),
    "pool": lambda: (AttentionPool().eval(), torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(1))),
    "pool_seq_first": lambda: (AttentionPool(False).eval(),
                               torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(1))),
    "pool_masked": lambda: (AttentionPool(masked=True).eval(),
                            torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(1))),
}
WEIGHTS = (nn.Linear, nn.Embedding, nn.MultiheadAttention)


def _weight_modules(model: nn.Module) -> set[str]:
    """Every weight module but the output projections inside attention (part of their heads)."""
    inside = {f"{name}.out_proj" for name, module in model.named_modules() if isinstance(module, nn.MultiheadAttention)}
    return {name for name, module in model.named_modules() if isinstance(module, WEIGHTS) and name not in inside}


def _specs(layers) -> list:
    specs = []
    for layer in layers:
        if layer.unit_kind.reads_ids:
            specs.append(NodeIntervention(layer.name, 1, mode="mean"))
            continue
        steps = (1, 3) if layer.time_axis else None
        specs += [NodeIntervention(layer.name, 0), NodeIntervention(layer.name, 1, mode="scale", value=2.0),
                  NodeIntervention(layer.name, (0, 1), mode="mean"),
                  NodeIntervention(layer.name, 1, mode="constant", value=0.3, steps=steps)]
        for link in layer.parents:
            specs.append(EdgeIntervention(layer.name, (0,), parent_layer=link.name, value=0.0))
            specs.append(EdgeIntervention(layer.name, (1,), children=(1,), parent_layer=link.name, mode="scale",
                                          value=0.5))
    return specs


def _state(model: nn.Module) -> dict:
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), "forward" in m.__dict__) for m in model.modules()],
        "training": [m.training for m in model.modules()],
    }


def _assert_same(model: nn.Module, before: dict) -> None:
    after = _state(model)
    assert after["hooks"] == before["hooks"] and after["training"] == before["training"]
    for key, value in before["tensors"].items():
        assert torch.equal(value, after["tensors"][key]), key


@pytest.mark.parametrize("name", list(MODELS))
def test_every_weight_layer_is_in_the_dag_and_the_discovery_walk(name):
    model, x = MODELS[name]()
    layers = find_layers(model, x[:1])
    assert {layer.module_name for layer in layers} == _weight_modules(model)
    heads = [layer for layer in layers if isinstance(layer.module, nn.MultiheadAttention)]
    assert heads and all(layer.n_units == layer.module.num_heads and layer.time_axis for layer in heads)
    if not name.startswith("text"):  # the pooling models' walk through heads: the planted circuits (tests/causal)
        return
    x = torch.randint(0, 20, (60, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        target = int(model(x).argmax(-1).mode().values)
    graph = discover(model, x, target, n_samples=12, on="nodes")
    walked = set(DiscoveryResult.of(graph).tests)
    assert walked == {layer.name for layer in layers[:-1]}


@pytest.mark.parametrize("name", list(MODELS))
def test_interventions_on_heads_and_neurons_equal_the_naive_oracle(name):
    model, x = MODELS[name]()
    specs = _specs(find_layers(model, x[:1]))
    before = _state(model)
    ours = InterventionRunner(model).run(x, specs, 1)
    naive = reference_run(model, x, specs, 1)
    _assert_same(model, before)
    torch.testing.assert_close(ours.clean_logits, naive.clean_logits, atol=1e-5, rtol=1e-4)
    for k, spec in enumerate(specs):
        torch.testing.assert_close(ours.logits[k], naive.logits[k], atol=1e-5, rtol=1e-4, msg=lambda m: f"{spec}: {m}")
    changed = (ours.logits - ours.clean_logits).abs().amax((1, 2)) > 1e-6
    assert changed.float().mean() > 0.5, [s for s, c in zip(specs, changed) if not c]


def test_mlp_neuron_hooks_fire_inside_the_encoder_layer():
    """With the fast path on outside the engine, an edit of linear1 still changes the output (no fused kernel)."""
    model, x = MODELS["text"]()
    assert torch.backends.mha.get_fastpath_enabled()
    result = InterventionRunner(model).run(x, [NodeIntervention("enc.layers.1.linear1", tuple(range(16)))], 1)
    assert float((result.logits[0] - result.clean_logits).abs().max()) > 1e-3
    assert torch.backends.mha.get_fastpath_enabled()


def test_the_model_and_the_fast_path_flag_are_restored_when_a_run_raises():
    model, x = MODELS["text"]()
    before = _state(model)
    for flag in (True, False):
        torch.backends.mha.set_fastpath_enabled(flag)
        try:
            raised = []

            def boom(module, args):
                raised.append(True)
                raise RuntimeError("interrupted")

            handle = model.fc.register_forward_pre_hook(boom)
            before_hooks = _state(model)
            with pytest.raises(RuntimeError, match="interrupted"):
                InterventionRunner(model).run(x, [NodeIntervention("enc.layers.0.self_attn", 0)], 1)
            assert raised and torch.backends.mha.get_fastpath_enabled() is flag
            _assert_same(model, before_hooks)
            handle.remove()
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    _assert_same(model, before)


def test_a_head_intervened_at_some_positions_only_leaves_the_others():
    model, x = MODELS["pool"]()
    steps = NodeIntervention("attn", 0, mode="zero", steps=(2,))
    ours = InterventionRunner(model).run(x, [steps], 1)
    naive = reference_run(model, x, [steps], 1)
    torch.testing.assert_close(ours.logits, naive.logits, atol=1e-5, rtol=1e-4)
    assert float((ours.logits[0] - ours.clean_logits).abs().max()) > 1e-4


def test_a_decoder_layer_is_refused_in_one_line():
    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dec = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.dec(x, x).mean(1))

    model, x = Decoder().eval(), torch.randn(4, 3, 8)
    from explainnn.errors import InterventionError

    with pytest.raises(InterventionError) as error:
        discover(model, x, 0, n_samples=2)
    assert "\n" not in str(error.value) and "TransformerDecoderLayer" in str(error.value)


class SequenceFirstCrossAttention(nn.Module):
    """Query, key and value from separate Linears, transposed to a sequence-first ``nn.MultiheadAttention``."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(3, 4)
        self.attn, self.fc = nn.MultiheadAttention(4, 2), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (layer(x).transpose(0, 1) for layer in (self.q, self.k, self.v))
        return self.fc(self.attn(q, k, v, need_weights=False)[0].mean(0))


def test_a_layer_graph_that_cannot_be_probed_around_heads_is_refused_in_one_line() -> None:
    """Without the NaN probe the parents of heads would be guessed by dims; the engine refuses instead."""

    with pytest.raises(InterventionError) as error:
        find_layers(SequenceFirstCrossAttention().eval(), torch.randn(4, 5, 3))
    assert "attention module 'attn'" in str(error.value) and "\n" not in str(error.value)
