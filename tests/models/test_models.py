"""Model shapes, module naming, pooling and the model registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainnn.data.base import DatasetInfo
from explainnn.errors import ConfigError, DataError, UserError
from explainnn.models import MODELS, LeNet, RecurrentClassifier, build_model, images_as_rows, register_model

PAD = 0
VOCAB = ("<pad>", "<unk>", "good", "bad", "film", "plot", "very", "not")


def image_info(channels: int = 1, side: int = 28, n_classes: int = 10) -> DatasetInfo:
    return DatasetInfo("images", "image", (channels, side, side), n_classes,
                       tuple(str(i) for i in range(n_classes)), "synthetic")


def sequence_info(steps: int = 40, features: int = 1) -> DatasetInfo:
    return DatasetInfo("signals", "sequence", (steps, features), 10,
                       tuple(str(i) for i in range(10)), "synthetic")


def token_info(length: int = 12) -> DatasetInfo:
    return DatasetInfo("text", "tokens", (length,), 2, ("negative", "positive"), "synthetic",
                       vocab=VOCAB, pad_index=PAD, unk_index=1)


def left_padded_tokens(batch: int = 5, length: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, len(VOCAB), (batch, length), generator=generator)
    for row in range(batch):
        tokens[row, : row * 2] = PAD  # row 0 unpadded, later rows increasingly padded
    return tokens


@pytest.mark.parametrize(
    ("channels", "side", "flat"), [(1, 28, 256), (1, 32, 400), (3, 32, 400), (1, 16, 16)]
)
def test_lenet_shapes(channels: int, side: int, flat: int) -> None:
    model = build_model("lenet", image_info(channels, side))
    assert model.fc1.in_features == flat
    assert model(torch.rand(4, channels, side, side)).shape == (4, 10)


def test_lenet_modules_form_a_named_chain() -> None:
    model = LeNet(1, 32, 10)
    names = [name for name, _ in model.named_children()]
    assert names == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten",
                     "fc1", "relu3", "fc2", "relu4", "fc3"]
    x = torch.rand(2, 1, 32, 32)
    chained = x
    for module in model.children():
        chained = module(chained)
    assert torch.equal(chained, model(x))
    assert model[: names.index("conv2") + 1](x).shape == (2, 16, 10, 10)


def test_lenet_rectangular_input() -> None:
    model = LeNet(1, (28, 84), 2)
    assert model(torch.rand(3, 1, 28, 84)).shape == (3, 2)


def test_lenet_rejects_images_that_are_too_small() -> None:
    with pytest.raises(ConfigError, match="at least 16x16.*image_size"):
        build_model("lenet", image_info(1, 8))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_recurrent_on_sequences_and_image_rows(cell: str, num_layers: int, pooling: str) -> None:
    params = {"hidden_size": 16, "num_layers": num_layers, "pooling": pooling}
    model = build_model(cell, sequence_info(20, 3), **params)
    assert model(torch.rand(4, 20, 3)).shape == (4, 10)
    model = build_model(cell, image_info(3, 12), **params)
    assert model.input_size == 3 * 12
    assert model(torch.rand(4, 3, 12, 12)).shape == (4, 10)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_recurrent_on_tokens(cell: str, pooling: str) -> None:
    model = build_model(cell, token_info(), hidden_size=16, pooling=pooling, embedding_dim=8)
    assert model.embedding.padding_idx == PAD
    assert model.embedding.num_embeddings == len(VOCAB)
    assert model(left_padded_tokens()).shape == (5, 2)


def test_images_are_read_row_by_row() -> None:
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    rows = images_as_rows(images)
    assert rows.shape == (2, 4, 15)
    assert torch.equal(rows[1, 2], torch.cat([images[1, c, 2] for c in range(3)]))
    model = RecurrentClassifier("gru", 15, 10, hidden_size=8)
    assert torch.equal(model(images), model(rows))


def test_image_gradients_come_back_in_image_shape() -> None:
    model = build_model("lstm", image_info(1, 28), hidden_size=8)
    images = torch.rand(2, 1, 28, 28, requires_grad=True)
    model(images)[:, 3].sum().backward()
    assert images.grad.shape == images.shape


def test_attention_weights_sum_to_one_and_skip_padding() -> None:
    model = build_model("lstm", token_info(), hidden_size=16, pooling="attention")
    tokens = left_padded_tokens()
    model(tokens)
    weights = model.last_attention
    assert weights.shape == tokens.shape and not weights.requires_grad
    assert torch.allclose(weights.sum(dim=1), torch.ones(len(tokens)))
    assert torch.all(weights[tokens == PAD] == 0)
    assert torch.all(weights[tokens != PAD] > 0)


def test_all_padding_row_pools_without_nan() -> None:
    model = build_model("gru", token_info(), hidden_size=8, pooling="attention")
    tokens = left_padded_tokens()
    tokens[1] = PAD
    logits = model(tokens)
    logits.sum().backward()
    assert torch.isfinite(logits).all()
    assert torch.all(model.last_attention[1] == 0)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_mean_pooling_ignores_padding() -> None:
    model = build_model("gru", token_info(), hidden_size=8, pooling="mean")
    tokens = left_padded_tokens()
    embedded = model.embedding(tokens)
    outputs = model.gru(embedded)[0]
    keep = tokens != PAD
    expected = torch.stack([outputs[i][keep[i]].mean(dim=0) for i in range(len(tokens))])
    assert torch.allclose(model(tokens), model.fc(expected), atol=1e-6)


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_forward_embedded_equals_forward(pooling: str) -> None:
    model = build_model("lstm", token_info(), hidden_size=16, pooling=pooling).eval()
    tokens = left_padded_tokens()
    direct = model(tokens)
    embedded = model.forward_embedded(model.embedding(tokens), pad_mask=tokens == PAD)
    assert torch.equal(direct, embedded)


def test_stacked_layers_are_named_after_the_cell() -> None:
    model = build_model("lstm", sequence_info(), hidden_size=8, num_layers=2, dropout=0.2)
    assert model.layer_names() == ["lstm.l0", "lstm.l1"]
    assert isinstance(model.lstm, nn.LSTM) and model.lstm.batch_first
    assert model.lstm.num_layers == 2 and model.lstm.dropout == 0.2
    assert model.lstm.weight_ih_l1.shape == (4 * 8, 8)
    assert model.recurrent is model.lstm
    gru = build_model("gru", sequence_info(), hidden_size=8)
    assert gru.layer_names() == ["gru"] and isinstance(gru.gru, nn.GRU)
    assert gru.gru.dropout == 0.0
    assert isinstance(build_model("rnn", sequence_info(), hidden_size=8).rnn, nn.RNN)


def test_hook_on_the_recurrent_module_changes_the_output() -> None:
    model = build_model("gru", sequence_info(), hidden_size=8, num_layers=2).eval()
    x = torch.rand(3, 40, 1)
    before = model(x)

    def silence_unit(module, inputs, output):
        sequence, state = output
        sequence = sequence.clone()
        sequence[..., 0] = 0.0
        return sequence, state

    handle = model.gru.register_forward_hook(silence_unit)
    after = model(x)
    handle.remove()
    assert not torch.allclose(before, after)
    assert torch.equal(model(x), before)


def test_recurrent_rejects_wrong_inputs() -> None:
    model = build_model("lstm", sequence_info(40, 1), hidden_size=8)
    with pytest.raises(DataError, match=r"\(N, T, 1\)"):
        model(torch.rand(2, 40, 3))
    token_model = build_model("lstm", token_info(), hidden_size=8)
    with pytest.raises(DataError, match="token ids"):
        token_model(torch.rand(2, 12))


def test_spec_records_resolved_parameters() -> None:
    model = build_model("gru", token_info(), hidden_size=32)
    assert model.explainnn_spec == {
        "name": "gru",
        "params": {"hidden_size": 32, "num_layers": 1, "pooling": "last",
                   "embedding_dim": None, "dropout": 0.0},
    }
    assert build_model("lenet", image_info()).explainnn_spec == {"name": "lenet", "params": {}}


def test_registry_lists_the_built_in_models() -> None:
    assert {"lenet", "lstm", "gru", "rnn"} <= set(MODELS)


@pytest.mark.parametrize(
    ("name", "info", "params", "message"),
    [
        ("resnet", image_info(), {}, r"unknown model 'resnet'; (did you mean .*)?valid models: .*gru, lenet, lstm, resnet18, rnn"),
        ("lenet", image_info(), {"hidden_size": 3}, r"unknown parameter 'hidden_size' for model 'lenet'"),
        ("lstm", image_info(), {"hidden": 3}, r"valid parameters: hidden_size, num_layers, pooling"),
        ("lstm", image_info(), {"pooling": "max"}, r"unknown pooling 'max'; valid poolings: last, mean, attention"),
        ("gru", image_info(), {"hidden_size": 0}, r"hidden_size must be a positive integer"),
        ("gru", image_info(), {"num_layers": 1.5}, r"num_layers must be a positive integer"),
        ("rnn", image_info(), {"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ("rnn", image_info(), {"embedding_dim": 8}, r"embedding_dim only applies to token datasets"),
        ("lenet", token_info(), {}, r"model 'lenet' needs image data.*'text' holds tokens"),
        ("lenet", sequence_info(), {}, r"model 'lenet' needs image data"),
    ],
)
def test_registry_errors(name: str, info: DatasetInfo, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_model(name, info, **params)
    assert "\n" not in str(caught.value)


def test_register_model_adds_a_user_model() -> None:
    @register_model("tiny-mlp-test")
    def build_tiny(info: DatasetInfo, width: int = 4) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU(), nn.Linear(width, info.n_classes))

    try:
        model = build_model("tiny-mlp-test", image_info(), width=6)
        assert model.explainnn_spec == {"name": "tiny-mlp-test", "params": {"width": 6}}
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        with pytest.raises(ConfigError, match="valid parameters: width"):
            build_model("tiny-mlp-test", image_info(), depth=2)
        with pytest.raises(UserError, match="already registered"):
            register_model("tiny-mlp-test")(build_tiny)
    finally:
        MODELS.pop("tiny-mlp-test")
