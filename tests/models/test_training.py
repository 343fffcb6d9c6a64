"""Seeding, devices, training, evaluation and the train-or-load step."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

from explainnn.checkpoint import read_checkpoint
from explainnn.data.base import Dataset, DatasetInfo
from explainnn.errors import CheckpointError, ConfigError, DataError, UserError
from explainnn.models import build_model
from explainnn.torch_utils import resolve_device, seed_everything
from explainnn.training import TrainResult, evaluate_accuracy, predict, random_translate, train_model, train_or_load

FAST = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "progress": False}


def bars_dataset(n: int = 96, side: int = 16, seed: int = 0) -> Dataset:
    """Class 0: a bright horizontal bar; class 1: a vertical bar (trivially separable)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = 0.1 * torch.rand(n, 1, side, side, generator=generator)
    positions = torch.randint(3, side - 3, (n,), generator=generator)
    for i in range(n):
        if labels[i] == 0:
            images[i, 0, positions[i], 2:-2] = 1.0
        else:
            images[i, 0, 2:-2, positions[i]] = 1.0
    info = DatasetInfo("bars", "image", (1, side, side), 2, ("horizontal", "vertical"), "synthetic")
    half = n // 2
    return Dataset(info, images[:half], labels[:half], images[half:], labels[half:])


def sign_dataset(n: int = 128, steps: int = 10) -> Dataset:
    """Class = whether the sequence drifts up or down (trivially separable)."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % 2
    drift = (labels.float() * 2 - 1).view(n, 1, 1) * torch.linspace(0, 1, steps).view(1, steps, 1)
    x = drift + 0.1 * torch.randn(n, steps, 1, generator=generator)
    info = DatasetInfo("drift", "sequence", (steps, 1), 2, ("down", "up"), "synthetic")
    half = n // 2
    return Dataset(info, x[:half], labels[:half], x[half:], labels[half:])


def fresh_lenet(dataset: Dataset, seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    return build_model("lenet", dataset.info)


def test_seed_everything_makes_all_generators_repeat() -> None:
    seed_everything(3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        seed_everything(-1)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'; valid devices: auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_a_user_error() -> None:
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")


def test_same_seed_gives_identical_weights() -> None:
    dataset = bars_dataset()
    first = fresh_lenet(dataset)
    result = train_model(first, dataset, seed=5, augment=True, **FAST)
    second = fresh_lenet(dataset)
    train_model(second, dataset, seed=5, augment=True, **FAST)
    third = fresh_lenet(dataset)
    train_model(third, dataset, seed=6, augment=True, **FAST)
    for key, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[key]), key
    assert any(not torch.equal(t, third.state_dict()[k]) for k, t in first.state_dict().items())
    assert isinstance(result, TrainResult)
    assert [entry["epoch"] for entry in result.history] == [1, 2]
    assert result.seconds > 0


def test_lenet_learns_a_separable_task(capsys: pytest.CaptureFixture[str]) -> None:
    dataset = bars_dataset()
    model = fresh_lenet(dataset)
    result = train_model(model, dataset, epochs=8, batch_size=16, lr=3e-3, progress=False)
    assert result.test_accuracy >= 0.95 and result.train_accuracy >= 0.95
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert not model.training
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_gru_learns_a_separable_sequence_task(pooling: str) -> None:
    dataset = sign_dataset()
    seed_everything(0)
    model = build_model("gru", dataset.info, hidden_size=8, pooling=pooling, dropout=0.1)
    result = train_model(model, dataset, epochs=10, batch_size=16, lr=1e-2, grad_clip=1.0, progress=False)
    assert result.test_accuracy >= 0.95


def test_progress_bar_reports_epoch_loss_and_accuracy(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = bars_dataset(n=32)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal
    train_model(fresh_lenet(dataset), dataset, epochs=1, batch_size=16, lr=1e-3, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch=1/1" in err and "loss=" in err and "acc=" in err


def test_no_progress_bar_when_the_output_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """In a log file or CI a bar's frames are noise: nothing is written."""
    dataset = bars_dataset(n=32)
    train_model(fresh_lenet(dataset), dataset, epochs=1, batch_size=16, lr=1e-3, progress=True)
    assert capsys.readouterr() == ("", "")


def test_augment_leaves_non_image_data_alone() -> None:
    dataset = sign_dataset()
    states = []
    for augment in (False, True):
        seed_everything(0)
        model = build_model("gru", dataset.info, hidden_size=4)
        train_model(model, dataset, augment=augment, **FAST)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


def test_random_translate_shifts_by_at_most_two_pixels() -> None:
    images = torch.zeros(50, 2, 9, 9)
    images[:, :, 4, 4] = 1.0
    shifted = random_translate(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    assert torch.equal(shifted.sum(dim=(2, 3)), torch.ones(50, 2))
    rows, cols = torch.nonzero(shifted[:, 0], as_tuple=True)[1:]
    assert rows.sub(4).abs().max() <= 2 and cols.sub(4).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5
    assert torch.equal(shifted[:, 0], shifted[:, 1])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"grad_clip": 0.0}, "grad_clip must be > 0"),
    ],
)
def test_invalid_training_options(options: dict, message: str) -> None:
    dataset = bars_dataset(n=8)
    with pytest.raises(ConfigError, match=message):
        train_model(fresh_lenet(dataset), dataset, **{**FAST, **options})


def test_predict_and_accuracy_do_not_depend_on_batch_size() -> None:
    dataset = bars_dataset()
    model = fresh_lenet(dataset)
    model.train()
    full = predict(model, dataset.x_test, batch_size=1024)
    assert not model.training
    assert full.dtype == torch.long and full.shape == (len(dataset.x_test),)
    assert torch.equal(full, predict(model, dataset.x_test, batch_size=7))
    accuracy = evaluate_accuracy(model, dataset.x_test, dataset.y_test, batch_size=5)
    assert accuracy == pytest.approx(float((full == dataset.y_test).float().mean()))
    full[0] = 1 - full[0]  # a normal tensor, not an inference-mode one
    with pytest.raises(DataError, match="empty"):
        evaluate_accuracy(model, dataset.x_test[:0], dataset.y_test[:0])


def test_train_or_load_auto_trains_then_loads(tmp_path) -> None:
    dataset = bars_dataset()
    path = tmp_path / "ckpt" / "lenet.pt"
    meta = {"config_hash": "abc"}
    model, info = train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="auto",
                                metadata=meta, train_kwargs=FAST, device="cpu")
    assert info["action"] == "trained" and info["config_hash_matches"] and path.is_file()
    stored = info["metadata"]
    assert stored["model"] == {"name": "lenet", "params": {}} and stored["dataset"] == "bars"
    assert stored["config_hash"] == "abc" and 0 <= stored["test_accuracy"] <= 1
    assert stored["training"]["epochs"] == 2 and "progress" not in stored["training"]
    assert len(stored["training"]["history"]) == 2

    loaded, info = train_or_load(fresh_lenet(dataset, seed=9), dataset, checkpoint=path, mode="auto",
                                 metadata=meta, train_kwargs=FAST, device="cpu")
    assert info["action"] == "loaded" and info["config_hash_matches"]
    assert info["metadata"] == stored
    assert not loaded.training
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key])

    _, info = train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="auto",
                            metadata={"config_hash": "changed"}, train_kwargs=FAST, device="cpu")
    assert info["action"] == "loaded" and info["config_hash_matches"] is False


def test_train_or_load_always_retrains(tmp_path) -> None:
    dataset = bars_dataset()
    path = tmp_path / "lenet.pt"
    train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="always",
                  metadata={"config_hash": "a"}, train_kwargs=FAST, device="cpu")
    _, info = train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="always",
                            metadata={"config_hash": "b"}, train_kwargs={**FAST, "epochs": 1}, device="cpu")
    assert info["action"] == "trained"
    assert read_checkpoint(path)["metadata"]["config_hash"] == "b"
    assert read_checkpoint(path)["metadata"]["training"]["epochs"] == 1


def test_train_or_load_never(tmp_path) -> None:
    dataset = bars_dataset()
    path = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError) as caught:
        train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="never",
                      metadata={}, train_kwargs=FAST, device="cpu")
    assert str(caught.value) == (
        f"checkpoint {path} not found and training.train is 'never'; set training.train: auto "
        "or point model.checkpoint at an existing file"
    )
    assert not path.exists()
    train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="always",
                  metadata={}, train_kwargs=FAST, device="cpu")
    _, info = train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="never",
                            metadata={}, train_kwargs=FAST, device="cpu")
    assert info["action"] == "loaded"


def test_train_or_load_refuses_another_models_checkpoint(tmp_path) -> None:
    dataset = bars_dataset()
    path = tmp_path / "model.pt"
    train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="always",
                  metadata={}, train_kwargs=FAST, device="cpu")
    gru = build_model("gru", dataset.info, hidden_size=4)
    with pytest.raises(CheckpointError, match="trained for model 'lenet' on 'bars', but the config asks for 'gru'"):
        train_or_load(gru, dataset, checkpoint=path, mode="auto", metadata={}, train_kwargs=FAST, device="cpu")


def test_train_or_load_rejects_bad_mode_and_options(tmp_path) -> None:
    dataset = bars_dataset(n=8)
    with pytest.raises(ConfigError, match="unknown training.train 'sometimes'; valid values: auto, always, never"):
        train_or_load(fresh_lenet(dataset), dataset, checkpoint=tmp_path / "m.pt", mode="sometimes",
                      metadata={}, train_kwargs=FAST, device="cpu")
    with pytest.raises(ConfigError, match="unknown training option 'momentum'; valid options: epochs"):
        train_or_load(fresh_lenet(dataset), dataset, checkpoint=tmp_path / "m.pt", mode="auto",
                      metadata={}, train_kwargs={**FAST, "momentum": 0.9}, device="cpu")


def test_always_never_overwrites_another_models_checkpoint(tmp_path, monkeypatch) -> None:
    """``always`` on a file holding another model: the file stays byte-identical; the model goes to its own path,
    or, without one, the call stops with one line naming both models before any training."""
    import explainnn.training as training

    dataset = bars_dataset()
    path = tmp_path / "gru.pt"
    train_or_load(build_model("gru", dataset.info, hidden_size=4), dataset, checkpoint=path, mode="always",
                  metadata={}, train_kwargs=FAST, device="cpu")
    before = path.read_bytes()
    own = tmp_path / "run" / "model.pt"
    _, info = train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="always", metadata={},
                            train_kwargs=FAST, device="cpu", fallback=own)
    assert path.read_bytes() == before
    assert info["checkpoint"] == str(own) and read_checkpoint(own)["metadata"]["model"]["name"] == "lenet"
    assert info["kept"] == {"path": str(path), "holds": "the checkpoint of model 'gru' on 'bars'"}
    # the model's own path holding this model is retrained in place
    _, info = train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="always",
                            metadata={"config_hash": "again"}, train_kwargs=FAST, device="cpu", fallback=own)
    assert info["checkpoint"] == str(own) and read_checkpoint(own)["metadata"]["config_hash"] == "again"

    def no_training(*args, **kwargs):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(training, "train_model", no_training)
    with pytest.raises(CheckpointError) as caught:
        train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="always", metadata={},
                      train_kwargs=FAST, device="cpu")
    assert str(caught.value) == (
        f"training 'lenet' on 'bars' would overwrite {path}, which holds the checkpoint of model 'gru' "
        "on 'bars'; set model.checkpoint to a new file to train this model there, or delete this one")
    wider = build_model("gru", dataset.info, hidden_size=6)
    with pytest.raises(CheckpointError) as caught:
        train_or_load(wider, dataset, checkpoint=own, mode="always", metadata={}, train_kwargs=FAST, device="cpu",
                      fallback=path)
    message = str(caught.value)
    assert "\n" not in message and str(own) in message and str(path) in message
    assert "holds the checkpoint of model 'lenet' on 'bars', and its own path" in message
    assert "(hidden_size=4)" in message and "delete one of them" in message
    assert path.read_bytes() == before


def test_always_does_not_overwrite_a_file_that_is_no_checkpoint(tmp_path) -> None:
    dataset = bars_dataset()
    path = tmp_path / "notes.pt"
    path.write_bytes(b"someone's file")
    with pytest.raises(CheckpointError, match="which holds a file that is not a readable explainnn checkpoint"):
        train_or_load(fresh_lenet(dataset), dataset, checkpoint=path, mode="always", metadata={},
                      train_kwargs=FAST, device="cpu")
    assert path.read_bytes() == b"someone's file"
