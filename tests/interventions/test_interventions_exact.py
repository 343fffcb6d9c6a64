"""The batched runner equals the naive per-sample reference, for every layer type.

Reference = deep copy, weight edit or unit hook, one sample at a time; recurrent
layers with per-step edits are unrolled with PyTorch's own cells. Weights are
scaled up so that every intervention has a visible effect.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainnn.interventions import (
    EdgeIntervention as Edge,
)
from explainnn.interventions import (
    InterventionRunner,
    reference_run,
    soft_edge,
    soft_node,
)
from explainnn.interventions import (
    NodeIntervention as Node,
)
from explainnn.models import RecurrentClassifier
from test_interventions_models import (
    ChannelsLastNet,
    Conv1dNet,
    FunctionalNet,
    NestedNet,
    SeqFirstLSTM,
    SharedReluNet,
    lenet,
    seeded,
)


def check(model: nn.Module, inputs: torch.Tensor, specs: list, min_effect_share: float = 0.75, **runner_kw) -> None:
    ours = InterventionRunner(model, **runner_kw).run(inputs, specs)
    naive = reference_run(model, inputs, specs, reference=runner_kw.get("reference"))
    torch.testing.assert_close(ours.clean_logits, naive.clean_logits, atol=1e-5, rtol=1e-4)
    for k, spec in enumerate(specs):
        torch.testing.assert_close(ours.logits[k], naive.logits[k], atol=1e-5, rtol=1e-4, msg=lambda m: f"{spec}: {m}")
    torch.testing.assert_close(ours.prob, naive.prob, atol=1e-5, rtol=1e-4)
    effect = (ours.logits - ours.clean_logits).abs().amax((1, 2))
    assert (effect > 1e-4).float().mean() >= min_effect_share, effect


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_lenet_conv_linear_and_flatten_boundary():
    torch.manual_seed(0)
    specs = [
        Node("conv1", 2),
        Node("conv2", [1, 5], "mean"),
        Node("fc1", 7, "constant", 1.5),
        Node("fc2", [0, 3, 9], "scale", 0.25),
        Edge("conv1", 0, [1, 4]),
        Edge("conv2", [0, 3], [2, 7, 11], 0.2),
        Edge("fc1", 5),
        Edge("fc1", [2, 9], [0, 17], 0.5, "scale"),
        Edge("fc2", 11, None, -0.3),
        Edge("fc3", 4, [1, 2]),
        soft_node("fc1", 3, 0.2, 0.5, gen(1)),
        soft_edge("conv2", 4, None, 0.1, 0.3, gen(2)),
        [Node("conv1", 0), Edge("fc1", 3), Node("fc2", 2, "constant", -1.0)],
    ]
    check(lenet(), torch.randn(5, 1, 32, 32), specs)


def test_functional_model():
    torch.manual_seed(1)
    specs = [Node("conv1", 1), Node("conv2", 3, "mean"), Edge("conv2", 2), Edge("fc1", 4, [0, 5]),
             Edge("fc2", 1, None, 0.0), soft_node("conv1", [0, 2], 0.0, 0.5, gen(3))]
    check(seeded(FunctionalNet(), scale=2.0), torch.randn(4, 3, 10, 10), specs)


def test_nested_model_with_batchnorm_and_inplace_relu():
    torch.manual_seed(2)
    model = seeded(NestedNet(), scale=2.0)
    with torch.no_grad():
        for block in (model.features[0], model.features[2]):
            block.bn.weight.fill_(1.0)
            block.bn.running_var.fill_(0.5)
    specs = [Node("features.0.conv", 1), Edge("features.2.conv", 2), Edge("head.1", 3, [0, 2]),
             Node("head.1", 4, "mean"), Edge("head.3", 5)]
    check(model, torch.randn(4, 2, 8, 8), specs)


def test_grouped_circular_conv1d():
    torch.manual_seed(3)
    specs = [Edge("conv1", 1), Edge("conv2", 0, [0, 2]), Edge("conv2", [2, 3], None, 0.4, "scale"),
             Node("conv2", 4, "mean"), Node("conv1", 3, "constant", 0.7), Edge("fc", 5)]
    check(seeded(Conv1dNet(), scale=2.0), torch.randn(4, 2, 9), specs)


def test_channels_last_flatten():
    specs = [Edge("fc", 0), Edge("fc", 2, [1]), Node("conv", 1)]
    check(seeded(ChannelsLastNet(), scale=2.0), torch.randn(4, 1, 4, 4), specs)


def test_shared_activation_module():
    specs = [Node("fc1", 2), Edge("fc2", 3), Edge("fc3", [0, 1]), Node("fc2", 1, "mean")]
    check(seeded(SharedReluNet(), scale=2.0), torch.randn(5, 4), specs)


def recurrent_specs(name: str, hidden: int, parents: int) -> list:
    return [
        Node(name, 2),
        Node(name, [0, 5], steps=3),
        Node(name, 1, "constant", 0.8, steps=[1, -1]),
        Node(name, 4, "mean"),
        Node(name, 3, "scale", 1.7, steps=[0, 4]),
        Edge(name, 1),
        Edge(name, 0, [2, hidden - 1], 0.5, steps=2),
        Edge(name, 2, None, recurrent=True),
        Edge(name, [3, 4], [1], 0.3, "scale", steps=[1, 5], recurrent=True),
        soft_node(name, 0, 0.3, 0.4, gen(5), steps=-2),
        soft_edge(name, parents - 1, None, 0.0, 0.2, gen(6)),
        [Node(name, 1, steps=4), Edge(name, 5, recurrent=True, steps=2)],
    ]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_recurrent_classifier_all_and_single_steps(cell, pooling):
    torch.manual_seed(4)
    model = seeded(RecurrentClassifier(cell, 7, 4, hidden_size=8, pooling=pooling), scale=2.0)
    specs = recurrent_specs(cell, 8, 7) + [Edge("fc", 3), Node("fc", 1)]
    check(model, torch.rand(4, 6, 7), specs)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_stacked_sequence_first_rnn_internal_layers(cell):
    torch.manual_seed(5)
    model = seeded(SeqFirstLSTM(cell), scale=2.0)
    specs = recurrent_specs("rnn.l0", 6, 5) + recurrent_specs("rnn.l1", 6, 6) + [
        [Node("rnn.l1", 0, steps=1), Edge("rnn.l0", 2, steps=4)],
        Edge("fc", 2),
    ]
    check(model, torch.rand(4, 6, 5), specs)


def test_relu_rnn_and_mean_over_reference_data():
    torch.manual_seed(6)
    model = seeded(SeqFirstLSTM(lambda *a, **k: nn.RNN(*a, nonlinearity="relu", **k)), scale=2.0)
    specs = [Node("rnn.l0", 1, "mean"), Node("rnn.l1", [2, 3], "mean", steps=[2]), Edge("rnn.l1", 1, recurrent=True)]
    check(model, torch.rand(4, 5, 5), specs, reference=torch.rand(9, 5, 5))


def test_token_model_embedding_and_gru():
    torch.manual_seed(7)
    model = seeded(RecurrentClassifier("gru", None, 3, hidden_size=6, num_layers=2, pooling="mean", vocab_size=11,
                                       embedding_dim=5), scale=2.0)
    tokens = torch.randint(1, 11, (4, 7))
    tokens[0, :2] = 0
    specs = [Node("embedding", 1), Node("embedding", [0, 4], "mean", steps=[2, 3]), Edge("gru.l0", 3),
             Edge("gru.l1", 2, [0, 1], steps=[5]), Node("gru.l0", 2, steps=6), Edge("fc", 1)]
    check(model, tokens, specs)


def test_repeated_runs_and_chunking_reuse_the_clean_cache_exactly():
    model = lenet()
    x = torch.rand(6, 1, 32, 32)
    specs = [Edge("conv1", 0), Node("conv2", 3), Edge("fc1", 2), Node("fc3", 1)]
    runner = InterventionRunner(model)
    single = [runner.run(x, [s]).logits[0] for s in specs]
    again = [runner.run(x, [s]).logits[0] for s in specs]
    chunked = InterventionRunner(model, memory_budget_mb=0.01).run(x, specs).logits
    for k in range(len(specs)):
        torch.testing.assert_close(single[k], again[k], atol=0, rtol=0)
        torch.testing.assert_close(single[k], chunked[k], atol=1e-6, rtol=1e-5)


def test_prefix_is_served_from_the_cache():
    model = lenet()
    calls = []
    original = model.conv1.forward
    model.conv1.forward = lambda x: calls.append(1) or original(x)
    runner = InterventionRunner(model)
    x = torch.rand(3, 1, 32, 32)
    runner.run(x, [Edge("fc2", 1)])
    before = len(calls)
    runner.run(x, [Edge("fc2", k) for k in range(5)])
    assert len(calls) == before


def test_functional_ops_and_modules_called_twice_are_not_rerun_before_the_intervened_layer():
    from architectures import ResearchLeNet
    from architectures import seeded as seeded_zoo

    model = seeded_zoo(ResearchLeNet(), scale=2.0)
    calls = {"conv1": 0, "pool": 0}
    for name in calls:
        module = getattr(model, name)
        original = module.forward
        module.forward = lambda x, name=name, original=original: calls.__setitem__(name, calls[name] + 1) or original(x)
    x = torch.rand(3, 1, 32, 32)
    runner = InterventionRunner(model)
    runner.run(x, [Edge("fc2", 1), Edge("conv2", 0)])  # first run per start layer: one clean pass of its prefix
    before = dict(calls)
    specs = [Edge("fc2", k) for k in range(5)] + [Edge("conv2", 2, [3])]
    runner.run(x, specs)
    assert calls["conv1"] == before["conv1"]  # fc2 and conv2 runs: everything before them comes from the clean pass
    assert calls["pool"] == before["pool"] + 1  # only the pool after conv2 runs (once, on the batched rows)
    check(model, x, specs, min_effect_share=0.5)


class _BatchCounter(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows = x.shape[0]
        return x


class StatefulNet(nn.Module):
    """Reads state that a module set during the forward: the cached prefix cannot reproduce it."""

    def __init__(self) -> None:
        super().__init__()
        self.counter = _BatchCounter()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:  # a data-dependent check: torch.fx cannot trace it, so the hook path is used
            raise ValueError("expected (N, 3) inputs")
        out = self.fc2(torch.relu(self.fc1(self.counter(x))))
        return out * (self.counter.rows / x.shape[0])


def test_falls_back_to_full_forward_when_the_cache_is_not_equivalent():
    model = seeded(StatefulNet(), scale=2.0)
    with pytest.warns(UserWarning, match="running full forward passes"):
        check(model, torch.randn(4, 3), [Edge("fc2", 1), Node("fc2", 0)])


class GatedNet(nn.Module):
    """Reads an early activation only where a later one turns negative (never in the clean pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 2), nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.fc1(x)
        b = self.fc2(torch.relu(a))
        return torch.where(b > 0, b, a)


def test_prefix_read_only_under_intervention_is_still_exact():
    model = seeded(GatedNet())
    with torch.no_grad():
        model.fc2.bias.fill_(5.0)
    check(model, torch.randn(4, 3), [Node("fc2", 0, "constant", -1.0), Node("fc2", 1)], min_effect_share=0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_cpu():
    model = seeded(RecurrentClassifier("lstm", 7, 4, hidden_size=8), scale=2.0)
    x = torch.rand(4, 6, 7)
    specs = recurrent_specs("lstm", 8, 7)
    cpu = InterventionRunner(model).run(x, specs)
    gpu = InterventionRunner(model.cuda()).run(x.cuda(), specs)
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, atol=1e-4, rtol=1e-4)
    lenet_model = lenet()
    x = torch.rand(4, 1, 32, 32)
    specs = [Edge("conv2", 1), Edge("fc1", 3), Node("conv1", 2)]
    cpu = InterventionRunner(lenet_model).run(x, specs)
    gpu = InterventionRunner(lenet_model.cuda()).run(x.cuda(), specs)
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, atol=1e-4, rtol=1e-4)
