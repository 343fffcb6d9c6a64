"""The transformer models: the text encoder on token ids and the Vision Transformer, and their registry entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from explainnn.config import Config, load_config
from explainnn.data.base import Dataset, DatasetInfo
from explainnn.errors import ConfigError, DataError
from explainnn.models import TextTransformer, VisionTransformer, build_model, model_parameters
from explainnn.torch_utils import seed_everything
from explainnn.training import lr_factor, train_model

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ("<pad>", "<unk>", "good", "bad", "film", "plot", "the", "a", "very", "not")
QUIET = ["progress=false", "discovery.enabled=false", "circuit.enabled=false", "attribution.enabled=false",
         "evaluation.enabled=false", "analyses.views.enabled=false", "analyses.clustering.enabled=false",
         "report=false", "plots.enabled=false", "device=cpu", "training.epochs=1"]


def token_info(length: int = 12) -> DatasetInfo:
    return DatasetInfo("text", "tokens", (length,), 2, ("negative", "positive"), "test", vocab=VOCAB, pad_index=0)


def image_info(channels: int = 1, side: int = 28, n_classes: int = 10) -> DatasetInfo:
    return DatasetInfo("images", "image", (channels, side, side), n_classes, tuple(str(i) for i in range(n_classes)),
                       "test")


def left_pad(sentences: list[list[int]], length: int) -> torch.Tensor:
    return torch.tensor([[0] * (length - len(ids)) + ids for ids in sentences])


SENTENCES = [[6, 4, 8, 2], [7, 5, 3], [2], [9, 2, 4, 6, 7, 8, 3, 5]]


def test_registered_with_documented_defaults() -> None:
    assert model_parameters("transformer") == {"d_model": 64, "num_heads": 4, "num_layers": 2,
                                               "dim_feedforward": 128, "dropout": 0.1, "pooling": "mean"}
    assert model_parameters("vit") == {"patch_size": 4, "d_model": 64, "num_heads": 4, "num_layers": 4,
                                       "dim_feedforward": 128, "dropout": 0.1}
    model = build_model("transformer", token_info(), d_model=16, num_heads=2)
    assert isinstance(model, TextTransformer)
    assert model.explainnn_spec["params"] == {"d_model": 16, "num_heads": 2, "num_layers": 2,
                                              "dim_feedforward": 128, "dropout": 0.1, "pooling": "mean"}
    assert isinstance(build_model("vit", image_info()), VisionTransformer)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_text_transformer_is_built_from_standard_parts(pooling: str) -> None:
    model = build_model("transformer", token_info(), d_model=16, num_heads=2, num_layers=3, dim_feedforward=24,
                        pooling=pooling).eval()
    assert model.embedding.padding_idx == 0 and model.pad_index == 0
    assert model.embedding.num_embeddings == len(VOCAB) and model.position.num_embeddings == 12
    assert isinstance(model.encoder, nn.TransformerEncoder) and len(model.encoder.layers) == 3
    block = model.encoder.get_submodule("layers.2")
    assert isinstance(block, nn.TransformerEncoderLayer) and isinstance(block.self_attn, nn.MultiheadAttention)
    assert block.self_attn.batch_first and block.self_attn.num_heads == 2 and block.linear1.out_features == 24
    tokens = left_pad(SENTENCES, 12)
    assert model(tokens).shape == (4, 2) and model(tokens).dtype == torch.float32
    assert (model.cls_token is not None) == (pooling == "cls")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_does_not_change_the_logits(pooling: str) -> None:
    """Pad tokens are masked out of attention and pooling, and positions count from the first real token, so a
    sentence's logits are the same however much padding precedes it (and whatever else is in its batch)."""
    seed_everything(0)
    model = build_model("transformer", token_info(20), d_model=16, num_heads=2, pooling=pooling).eval()
    alone = torch.cat([model(torch.tensor([ids])) for ids in SENTENCES])
    for length in (8, 12, 20):
        padded = left_pad(SENTENCES, length)
        torch.testing.assert_close(model(padded), alone, atol=1e-5, rtol=1e-5)
        with torch.no_grad():  # PyTorch's inference fast path of the encoder layers
            torch.testing.assert_close(model(padded), alone, atol=1e-5, rtol=1e-5)


def test_forward_embedded_equals_forward_and_padding_only_rows_are_finite() -> None:
    model = build_model("transformer", token_info(), d_model=16, num_heads=2).eval()
    tokens = left_pad(SENTENCES, 12)
    torch.testing.assert_close(model.forward_embedded(model.embedding(tokens), pad_mask=tokens == 0), model(tokens))
    empty = model(torch.zeros(2, 12, dtype=torch.long))
    assert torch.isfinite(empty).all()


def test_text_transformer_refuses_other_inputs() -> None:
    model = build_model("transformer", token_info(), d_model=16, num_heads=2)
    with pytest.raises(DataError, match=r"reads \(N, L\) integer token ids with L <= 12"):
        model(torch.rand(2, 12))
    with pytest.raises(DataError, match="L <= 12"):
        model(torch.zeros(2, 13, dtype=torch.long))


@pytest.mark.parametrize(("channels", "side", "patch", "tokens"), [(1, 28, 7, 16), (1, 28, 4, 49), (3, 32, 4, 64),
                                                                    (3, 32, 8, 16)])
def test_vit_cuts_images_into_patches(channels: int, side: int, patch: int, tokens: int) -> None:
    model = build_model("vit", image_info(channels, side), patch_size=patch, d_model=16, num_heads=2, num_layers=1)
    conv = model.patch_embedding
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == conv.stride == (patch, patch)
    assert model.n_patches == tokens and model.position.shape == (1, tokens + 1, 16)
    assert model.cls_token.shape == (1, 1, 16) and isinstance(model.encoder.norm, nn.LayerNorm)
    images = torch.rand(3, channels, side, side, requires_grad=True)
    logits = model.eval()(images)
    assert logits.shape == (3, 10) and isinstance(model.head, nn.Linear)
    logits[:, 0].sum().backward()
    assert images.grad is not None and images.grad.shape == images.shape
    with pytest.raises(DataError, match=rf"reads \(N, {channels}, {side}, {side}\) images"):
        model(torch.rand(3, channels, side + 1, side + 1))


@pytest.mark.parametrize(
    ("name", "info", "params", "message"),
    [
        ("transformer", token_info(), {"num_heads": 3}, r"num_heads \(3\) must divide d_model \(64\)"),
        ("transformer", token_info(), {"d_model": 0}, r"d_model must be a positive integer; got 0"),
        ("transformer", token_info(), {"num_layers": 1.5}, r"num_layers must be a positive integer"),
        ("transformer", token_info(), {"dim_feedforward": True}, r"dim_feedforward must be a positive integer"),
        ("transformer", token_info(), {"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ("transformer", token_info(), {"pooling": "last"}, r"unknown pooling 'last'; valid poolings: mean, cls"),
        ("transformer", token_info(), {"heads": 2}, r"unknown parameter 'heads' for model 'transformer'"),
        ("transformer", image_info(), {}, r"model 'transformer' reads token ids \(L,\).*use vit for images"),
        ("vit", image_info(side=32), {"patch_size": 7}, r"patch_size 7 must divide the image size 32x32"),
        ("vit", image_info(), {"patch_size": 0}, r"patch_size must be a positive integer"),
        ("vit", image_info(), {"num_heads": 5}, r"num_heads \(5\) must divide d_model \(64\)"),
        ("vit", token_info(), {}, r"model 'vit' needs image data.*use transformer for token ids"),
    ],
)
def test_bad_data_or_parameters_stop_with_one_line(name: str, info: DatasetInfo, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_model(name, info, **params)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model.name=vit", "model.params={patch_size: 5}"], "patch_size 5 must divide the image size 32x32"),
        (["model.name=transformer"], "model 'transformer' reads token ids"),
    ],
)
def test_bad_parameters_through_the_config_are_one_line_and_exit_2(args, message, tmp_path, monkeypatch,
                                                                    capsys) -> None:
    from explainnn.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("data:\n  name: digits\n")
    code = main([*QUIET, "output_dir=out", *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out" / "digits" / "vit" / "model.pt").exists()


def _sentiment_dataset() -> Dataset:
    """A few sentences whose class is whether "good" (2) or "bad" (3) is in them, anywhere, left-padded."""
    generator = torch.Generator().manual_seed(0)
    rows, labels = [], []
    for i in range(48):
        filler = torch.randint(4, len(VOCAB), (int(torch.randint(1, 6, (1,), generator=generator)),),
                               generator=generator).tolist()
        where = int(torch.randint(0, len(filler) + 1, (1,), generator=generator))
        rows.append(filler[:where] + [2 + i % 2] + filler[where:])
        labels.append(i % 2)
    tokens, y = left_pad(rows, 8), torch.tensor(labels)
    return Dataset(token_info(8), tokens[:32], y[:32], tokens[32:], y[32:])


def test_text_transformer_learns_a_few_sentences() -> None:
    data = _sentiment_dataset()
    seed_everything(0)
    model = build_model("transformer", data.info, d_model=16, num_heads=2, num_layers=1, dim_feedforward=32)
    result = train_model(model, data, epochs=30, batch_size=8, lr=3e-3, progress=False)
    assert not model.training
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert result.train_accuracy >= 0.9


def test_vit_learns_a_few_images() -> None:
    """Class 0: a bright top half; class 1: a bright bottom half (ViT on 16 patches of 28x28 digits' size)."""
    generator = torch.Generator().manual_seed(0)
    images = 0.2 * torch.rand(40, 1, 28, 28, generator=generator)
    labels = torch.arange(40) % 2
    images[labels == 0, :, :14] += 0.8
    images[labels == 1, :, 14:] += 0.8
    data = Dataset(image_info(n_classes=2), images[:32], labels[:32], images[32:], labels[32:])
    seed_everything(0)
    model = build_model("vit", data.info, patch_size=7, d_model=16, num_heads=2, num_layers=1, dim_feedforward=32)
    result = train_model(model, data, epochs=10, batch_size=8, lr=3e-3, progress=False)
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert result.train_accuracy >= 0.9


@pytest.mark.parametrize(("config", "model_name", "info"),
                         [("transformer_sst2.yaml", "transformer", token_info(50)),
                          ("vit_mnist.yaml", "vit", image_info())])
def test_shipped_configs_validate_and_build(config: str, model_name: str, info: DatasetInfo) -> None:
    loaded = load_config(ROOT / "configs" / config)
    assert loaded.model.name == model_name
    model = build_model(loaded.model.name, info, **loaded.model.params)
    assert model.explainnn_spec["params"].items() >= loaded.model.params.items()


def test_learning_rate_warmup_and_schedules() -> None:
    steps = 100
    assert all(lr_factor(step, steps, "constant", 0.0) == 1.0 for step in range(steps))
    warm = [lr_factor(step, steps, "linear", 0.1) for step in range(steps)]
    assert warm[0] == pytest.approx(1 / 11) and warm[9] == pytest.approx(10 / 11)
    assert all(a < b for a, b in zip(warm[:10], warm[1:11])), "rises over the first 10 steps"
    assert all(a > b for a, b in zip(warm[10:], warm[11:])), "then falls"
    assert warm[10] == 1.0 and warm[-1] == pytest.approx(1 / 90)
    cosine = [lr_factor(step, steps, "cosine", 0.0) for step in range(steps)]
    assert cosine[0] == 1.0 and cosine[50] == pytest.approx(0.5) and cosine[-1] < 0.001


def test_training_options_reach_the_optimiser_and_are_checked() -> None:
    data = _sentiment_dataset()
    trained = {}
    for options in ({}, {"optimizer": "adamw", "weight_decay": 0.1, "schedule": "cosine", "warmup": 0.2}):
        seed_everything(0)
        model = build_model("transformer", data.info, d_model=8, num_heads=2, num_layers=1, dim_feedforward=8)
        train_model(model, data, epochs=1, batch_size=8, lr=1e-2, progress=False, **options)
        trained[bool(options)] = model.fc.weight.detach().clone()
    assert not torch.equal(trained[False], trained[True])
    for options, message in (({"optimizer": "sgd"}, "unknown optimizer 'sgd'; valid optimizers: adam, adamw"),
                             ({"schedule": "step"}, "unknown schedule 'step'; valid schedules: constant, linear"),
                             ({"warmup": 1.0}, r"warmup must be a fraction of the training steps in \[0, 1\)")):
        with pytest.raises(ConfigError, match=message):
            train_model(model, data, epochs=1, batch_size=8, lr=1e-2, progress=False, **options)


def test_training_options_in_the_config_and_the_training_hash(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("training: {optimizer: adamw, schedule: linear, warmup: 0.1}\n")
    config = load_config(path)
    assert (config.training.optimizer, config.training.schedule, config.training.warmup) == ("adamw", "linear", 0.1)
    # at their defaults the options leave a config's hash as it was without them (checkpoints still match)
    assert Config().training_hash() == "3fd072cf053aa4e2"
    assert config.training_hash() != Config().training_hash()
    for override, message in (("training.optimizer=sgd", "training.optimizer"),
                              ("training.warmup=1.5", "training.warmup")):
        with pytest.raises(ConfigError, match=message) as caught:
            load_config(path, [override])
        assert "\n" not in str(caught.value)
