"""Checkpoint round trips, refusals and atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import explainnn
import explainnn.checkpoint as checkpoint_module
from explainnn.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint, to_jsonable
from explainnn.data.base import DatasetInfo
from explainnn.errors import CheckpointError
from explainnn.models import build_model
from explainnn.torch_utils import seed_everything

IMAGES = DatasetInfo("mnist", "image", (1, 28, 28), 10, tuple(str(i) for i in range(10)), "synthetic")
SIGNALS = DatasetInfo("mnist1d", "sequence", (40, 1), 10, tuple(str(i) for i in range(10)), "synthetic")


def lenet(seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    return build_model("lenet", IMAGES)


def lstm(hidden_size: int = 8, **params: object) -> torch.nn.Module:
    return build_model("lstm", SIGNALS, hidden_size=hidden_size, **params)


def identity(model: torch.nn.Module, dataset: str = "mnist", config_hash: str = "h1") -> dict:
    return {"model": model.explainnn_spec, "dataset": dataset, "config_hash": config_hash}


def saved(tmp_path, model: torch.nn.Module | None = None, **extra: object):
    model = model or lenet()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, {**identity(model), "test_accuracy": 0.97, **extra})
    return path, model


def test_round_trip_is_bit_identical(tmp_path) -> None:
    path, model = saved(tmp_path)
    restored = lenet(seed=1)
    metadata = load_checkpoint(path, restored, expected=identity(restored))
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, restored.state_dict()[key]), key
    assert metadata["config_hash_matches"] is True
    assert metadata["model"] == {"name": "lenet", "params": {}}
    assert metadata["dataset"] == "mnist" and metadata["test_accuracy"] == 0.97
    assert metadata["torch_version"] == str(torch.__version__)
    assert metadata["explainnn_version"] == explainnn.__version__
    assert metadata["created"].endswith("+00:00")


def test_file_is_a_plain_weights_only_torch_file(tmp_path) -> None:
    path, _ = saved(tmp_path, extra_numbers=(1, 2))
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format"] == "explainnn-checkpoint" and payload["version"] == 1
    assert set(payload) == {"format", "version", "state_dict", "metadata"}
    json.dumps(payload["metadata"])
    assert payload["metadata"]["extra_numbers"] == [1, 2]


def test_round_trip_of_a_stacked_recurrent_model(tmp_path) -> None:
    model = lstm(num_layers=2, pooling="attention")
    path = tmp_path / "lstm.pt"
    save_checkpoint(path, model, {"dataset": "mnist1d"})
    restored = lstm(num_layers=2, pooling="attention")
    metadata = load_checkpoint(path, restored, expected=identity(restored, "mnist1d"))
    assert metadata["model"]["params"]["num_layers"] == 2
    x = torch.rand(3, 40, 1)
    assert torch.equal(model.eval()(x), restored.eval()(x))


def test_config_hash_mismatch_is_only_flagged(tmp_path) -> None:
    path, model = saved(tmp_path)
    metadata = load_checkpoint(path, lenet(), expected=identity(model, config_hash="other"))
    assert metadata["config_hash_matches"] is False
    assert metadata["config_hash"] == "h1"


def test_without_expectations_any_fitting_checkpoint_loads(tmp_path) -> None:
    path, _ = saved(tmp_path)
    assert load_checkpoint(path, lenet())["config_hash_matches"] is True


def one_line_error(path, model, expected=None) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, model, expected=expected)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_refuses_another_model(tmp_path) -> None:
    path, _ = saved(tmp_path)
    message = one_line_error(path, lstm(), identity(lstm(), "mnist1d"))
    assert message == (
        f"checkpoint {path} was trained for model 'lenet' on 'mnist', but the config asks for "
        "'lstm' on 'mnist1d'; set model.checkpoint to a new file to train this model there, or delete this one"
    )


def test_refuses_another_dataset(tmp_path) -> None:
    path, model = saved(tmp_path)
    message = one_line_error(path, lenet(), identity(model, dataset="fashion_mnist"))
    assert "on 'mnist', but the config asks for 'lenet' on 'fashion_mnist'" in message


def test_refuses_other_model_parameters(tmp_path) -> None:
    path = tmp_path / "lstm.pt"
    save_checkpoint(path, lstm(pooling="mean"), {"dataset": "mnist1d"})
    other = lstm(pooling="last")
    message = one_line_error(path, other, identity(other, "mnist1d"))
    assert "with pooling='mean', but the config asks for pooling='last'" in message


def test_refuses_weights_that_do_not_fit(tmp_path) -> None:
    path = tmp_path / "lstm.pt"
    save_checkpoint(path, lstm(hidden_size=8), {"dataset": "mnist1d"})
    message = one_line_error(path, lstm(hidden_size=16))
    assert "does not fit the model" in message
    assert "lstm.weight_ih_l0 has shape (32, 1) in the checkpoint but (64, 1) in the model" in message
    message = one_line_error(path, lstm(hidden_size=8, num_layers=2))
    assert "missing lstm.weight_ih_l1" in message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "is corrupt or not a torch file"),
        (b"not a checkpoint at all", "is corrupt or not a torch file"),
    ],
)
def test_refuses_corrupt_files(tmp_path, content: bytes, fragment: str) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    assert fragment in one_line_error(path, lenet())


def test_refuses_truncated_checkpoint(tmp_path) -> None:
    path, _ = saved(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "is corrupt or not a torch file" in one_line_error(path, lenet())


def test_refuses_torch_files_that_are_not_checkpoints(tmp_path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(lenet().state_dict(), path)
    assert "is not an explainnn checkpoint" in one_line_error(path, lenet())
    torch.save({"format": "explainnn-checkpoint", "version": 99, "state_dict": {}, "metadata": {}}, path)
    assert "format version 99" in one_line_error(path, lenet())


def test_refuses_pickled_objects(tmp_path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"format": "explainnn-checkpoint", "version": 1, "model": lenet()}, path)
    message = one_line_error(path, lenet())
    assert "is corrupt or not a torch file" in message and "\x1b" not in message


def test_missing_file(tmp_path) -> None:
    path = tmp_path / "nowhere.pt"
    assert one_line_error(path, lenet()) == f"checkpoint {path} not found"
    with pytest.raises(CheckpointError, match="is not a file"):
        read_checkpoint(tmp_path)


def test_save_creates_folders_and_replaces_atomically(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "model.pt"
    model = lenet()
    save_checkpoint(path, model, {"dataset": "mnist", "config_hash": "1"})
    save_checkpoint(path, model, {"dataset": "mnist", "config_hash": "2"})
    assert read_checkpoint(path)["metadata"]["config_hash"] == "2"
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]


def test_failure_mid_write_leaves_no_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(payload, handle) -> None:
        handle.write(b"PK\x03\x04 partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", half_written)
    path = tmp_path / "out" / "model.pt"
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, lenet(), {"dataset": "mnist"})
    assert list(path.parent.iterdir()) == []


def test_failure_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, model = saved(tmp_path)
    before = path.read_bytes()

    def interrupted(payload, handle) -> None:
        handle.write(b"garbage")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, {"dataset": "mnist"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_metadata_must_be_json_values(tmp_path) -> None:
    with pytest.raises(TypeError, match="JSON values"):
        save_checkpoint(tmp_path / "m.pt", lenet(), {"dataset": "mnist", "callback": print})
    assert not (tmp_path / "m.pt").exists()


def test_to_jsonable_converts_common_scalars(tmp_path) -> None:
    value = {"a": (1, np.float32(0.5)), "b": torch.tensor(3), "c": float("nan"), "d": tmp_path}
    assert to_jsonable(value) == {"a": [1, 0.5], "b": 3, "c": None, "d": str(tmp_path)}
