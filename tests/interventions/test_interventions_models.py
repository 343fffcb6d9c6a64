"""Small user-style models for the intervention tests, and layer discovery on them.

The models are imported by the other ``test_interventions_*`` files; they cover
functional activations, nested submodules with in-place ReLU and BatchNorm,
grouped 1-d convs with circular padding, a channels-last flatten, a stacked
sequence-first ``nn.LSTM`` read through its final state, and the project's models.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explainnn.errors import InterventionError
from explainnn.interventions import EdgeIntervention, InterventionRunner, NodeIntervention, find_layers
from explainnn.models import LeNet, RecurrentClassifier


def seeded(model: nn.Module, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """Reinitialise parameters deterministically; ``scale`` makes effects clearly non-zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            fan_in = param[0].numel() if param.dim() > 1 else 400
            param.copy_(torch.randn(param.shape, generator=generator) * scale / fan_in**0.5)
    return model.eval()


class FunctionalNet(nn.Module):
    """Activations, pooling and flatten written as functions in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.fc1 = nn.Linear(6 * 3 * 3, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.flatten(torch.tanh(self.conv2(x)), 1)
        return self.fc2(F.relu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class NestedNet(nn.Module):
    """Nested submodules (``features.0.conv``), in-place ReLU, BatchNorm and a head Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(Block(2, 4), nn.MaxPool2d(2), Block(4, 5))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(5 * 4 * 4, 7), nn.ReLU(), nn.Linear(7, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Conv1dNet(nn.Module):
    """Grouped 1-d convs with circular padding, then global average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 3, padding=1, padding_mode="circular")
        self.conv2 = nn.Conv1d(4, 6, 3, groups=2, stride=2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(x.mean(-1))


class ChannelsLastNet(nn.Module):
    """Flattens channels-last, so conv channel i feeds features i, i + C, i + 2C, ..."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 2 * 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).permute(0, 2, 3, 1).flatten(1))


class SeqFirstLSTM(nn.Module):
    """A stacked sequence-first ``nn.LSTM`` whose final hidden state feeds the head."""

    def __init__(self, cell: type[nn.Module] = nn.LSTM) -> None:
        super().__init__()
        self.rnn = cell(5, 6, num_layers=2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x.transpose(0, 1))
        h = state[0] if isinstance(state, tuple) else state
        return self.fc(h[-1])


class SharedReluNet(nn.Module):
    """One ReLU module called several times (cannot be served from a single cached call)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


def lenet() -> nn.Module:
    return seeded(LeNet(1, 32, 10), scale=2.0)


def names(model: nn.Module, example: torch.Tensor) -> list[str]:
    return [layer.name for layer in find_layers(model, example)]


def test_lenet_layers_order_parents_and_flatten_map():
    layers = {layer.name: layer for layer in find_layers(lenet(), torch.rand(1, 1, 32, 32))}
    assert list(layers) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert [layers[n].parent for n in layers] == ["input", "conv1", "conv2", "fc1", "fc2"]
    assert layers["fc1"].parent_map[3] == tuple(range(75, 100))
    assert layers["conv2"].parent_map == tuple((i,) for i in range(6))
    assert layers["fc1"].output_shape == (120,) and layers["conv2"].output_shape == (16, 10, 10)


def test_functional_and_nested_models_are_traced():
    assert names(FunctionalNet(), torch.rand(1, 3, 10, 10)) == ["conv1", "conv2", "fc1", "fc2"]
    layers = find_layers(NestedNet(), torch.rand(1, 2, 8, 8))
    assert [(l.name, l.parent) for l in layers] == [
        ("features.0.conv", "input"),
        ("features.2.conv", "features.0.conv"),
        ("head.1", "features.2.conv"),
        ("head.3", "head.1"),
    ]
    assert layers[2].parent_map[1] == tuple(range(16, 32))


def test_channels_last_flatten_maps_strided_features():
    fc = find_layers(ChannelsLastNet(), torch.rand(1, 1, 4, 4))[1]
    assert fc.parent == "conv" and fc.parent_map[1] == (1, 4, 7, 10)


def test_stacked_rnn_expands_to_internal_layers():
    layers = find_layers(SeqFirstLSTM(), torch.rand(1, 4, 5))
    assert [(l.name, l.parent, l.sublayer) for l in layers] == [
        ("rnn.l0", "input", 0),
        ("rnn.l1", "rnn.l0", 1),
        ("fc", "rnn.l1", None),
    ]
    assert layers[0].output_shape == (4, 6)


def test_recurrent_classifier_layers_tokens_and_attention():
    model = RecurrentClassifier("gru", None, 3, hidden_size=8, num_layers=2, pooling="attention", vocab_size=20,
                                embedding_dim=5)
    layers = {l.name: l for l in find_layers(model, torch.randint(1, 20, (1, 7)))}
    assert list(layers) == ["embedding", "gru.l0", "gru.l1", "attention", "fc"]
    assert layers["embedding"].parent is None and layers["gru.l0"].parent == "embedding"
    # attention pooling: fc reads the GRU's units weighted by the attention scores, so both are parents and
    # the features are shared (edges run along the weight-free path); each GRU unit reaches one feature
    fc = layers["fc"]
    assert fc.parent == "gru.l1" and [(p.name, p.via) for p in fc.parents] == [("gru.l1", "path"), ("attention", "path")]
    assert fc.parents[0].unit_map == tuple((i,) for i in range(8)) and fc.parents[1].unit_map == (tuple(range(8)),)
    assert layers["attention"].parent == "gru.l1"


def test_image_rows_lstm_reads_input_features():
    layers = find_layers(RecurrentClassifier("lstm", 28, 10, hidden_size=16), torch.rand(1, 1, 28, 28))
    assert [(l.name, l.parent, l.parent_units) for l in layers] == [("lstm", "input", 28), ("fc", "lstm", 16)]


def test_unknown_layer_lists_valid_layers():
    model = lenet()
    runner = InterventionRunner(model)
    with pytest.raises(InterventionError, match=r"^unknown layer 'fc9'; valid layers: conv1, conv2, fc1, fc2, fc3$"):
        runner.run(torch.rand(2, 1, 32, 32), [NodeIntervention("fc9", 0)])


def test_unsupported_modules_are_named():
    runner = InterventionRunner(NestedNet().eval())
    with pytest.raises(InterventionError, match=r"cannot intervene on module 'features.0.bn': a BatchNorm2d"):
        runner.run(torch.rand(2, 2, 8, 8), [NodeIntervention("features.0.bn", 0)])


def test_bidirectional_rnn_has_both_directions_units():
    class Bi(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    layers = find_layers(Bi().eval(), torch.rand(1, 3, 3))
    assert [(l.name, l.n_units, l.parent) for l in layers] == [("rnn", 8, "input"), ("fc", 2, "rnn")]
    assert layers[1].parent_map == tuple((i,) for i in range(8))


def test_stacked_lstm_with_projections_is_rejected_by_name():
    class Projected(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(3, 4, num_layers=2, batch_first=True, proj_size=2)
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    runner = InterventionRunner(Projected().eval())
    with pytest.raises(InterventionError, match="cannot intervene on module 'rnn': LSTMs with proj_size"):
        runner.run(torch.rand(2, 3, 3), [NodeIntervention("rnn", 0)])


def test_layer_called_twice_is_rejected():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(self.fc(x))

    with pytest.raises(InterventionError, match="runs 2 times per forward pass"):
        InterventionRunner(Twice().eval()).run(torch.rand(2, 3), [NodeIntervention("fc", 0)])


def test_unit_and_parent_out_of_range():
    runner = InterventionRunner(lenet())
    x = torch.rand(2, 1, 32, 32)
    with pytest.raises(InterventionError, match=r"unit 120 is out of range for layer 'fc1' with 120 units \(0\.\.119\)"):
        runner.run(x, [NodeIntervention("fc1", 120)])
    with pytest.raises(InterventionError, match=r"parent unit \(of conv2\) 16 is out of range"):
        runner.run(x, [EdgeIntervention("fc1", 16)])
    with pytest.raises(InterventionError, match="child unit 84 is out of range"):
        runner.run(x, [EdgeIntervention("fc2", 0, [84])])
