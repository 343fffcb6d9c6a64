"""Safe, self-describing model checkpoints.

A checkpoint is ``torch.save({"format": "explainnn-checkpoint", "version": 1,
"state_dict": ..., "metadata": {...}})`` where metadata holds only JSON values, so
it loads with ``torch.load(..., weights_only=True)`` (no pickle of arbitrary
objects) and the same metadata can be written next to experiment outputs.

Metadata written by ``training.train_or_load``: ``model`` (``{"name", "params"}``),
``dataset``, ``config_hash``, ``train_accuracy``, ``test_accuracy``, ``training``
(options, seconds, per-epoch history), and, stamped by :func:`save_checkpoint`,
``created`` (ISO 8601, UTC), ``torch_version`` and ``explainnn_version``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

import explainnn
from explainnn.errors import CheckpointError
from explainnn.files import atomic_path

FORMAT = "explainnn-checkpoint"
VERSION = 1
RETRAIN_HINT = "set model.checkpoint to a new file to train this model there, or delete this one"
"""The advice of every refusal: both ways keep other checkpoints (training never overwrites another model's)."""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def to_jsonable(value: object) -> object:
    """A copy of ``value`` made of dict/list/str/int/float/bool/None only.

    Tuples become lists, NumPy and 0-d torch scalars become Python numbers, paths
    become strings; anything else is a bug in the caller and raises ``TypeError``.
    """
    if isinstance(value, (bool, type(None))):
        return value
    if isinstance(value, str):
        return str(value)  # plain str: subclasses such as torch's TorchVersion would pickle as objects
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dim() == 0:
        return to_jsonable(value.item())
    raise TypeError(f"checkpoint metadata must be JSON values; got {type(value).__name__}")


def _stamped(metadata: Mapping) -> dict:
    return {
        **metadata,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "explainnn_version": explainnn.__version__,
    }


def save_checkpoint(path: str | Path, model: nn.Module, metadata: Mapping) -> dict:
    """Atomically save ``model``'s weights with ``metadata``; return the metadata written.

    The metadata is stamped with the date and versions, and gets ``model`` from
    ``model.explainnn_spec`` when the caller gave none. A failure at any point
    leaves no file at ``path`` (or the previous one intact).
    """
    metadata = dict(metadata)
    if "model" not in metadata and getattr(model, "explainnn_spec", None):
        metadata["model"] = model.explainnn_spec
    stored = cast(dict, to_jsonable(_stamped(metadata)))
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "metadata": stored,
    }
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(payload, handle)
    return stored


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    # weights-only refusals put the useful line ("Unsupported global: ...") deep in the message
    detail = [line for line in lines if line.startswith("WeightsUnpickler error:")]
    text = detail[0].removeprefix("WeightsUnpickler error:").strip() if detail else (lines[0] if lines else "")
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict, validated for format and version (no model needed)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a torch file ({_one_line(exc)}); {RETRAIN_HINT}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an explainnn checkpoint (no format '{FORMAT}'); {RETRAIN_HINT}"
        )
    version = payload.get("version")
    if version != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}, but this explainnn "
            f"{explainnn.__version__} reads version {VERSION}; {RETRAIN_HINT}"
        )
    if not isinstance(payload.get("state_dict"), dict) or not isinstance(payload.get("metadata"), dict):
        raise CheckpointError(f"checkpoint {path} lacks its state_dict or metadata; {RETRAIN_HINT}")
    return payload


def _model_name(spec: object) -> str | None:
    if isinstance(spec, Mapping):
        return spec.get("name")
    return spec if isinstance(spec, str) else None


def _check_identity(path: Path, saved: Mapping, expected: Mapping) -> None:
    saved_model, saved_data = _model_name(saved.get("model")), saved.get("dataset")
    want_model = _model_name(expected.get("model")) or saved_model
    want_data = expected.get("dataset", saved_data)
    if (want_model, want_data) != (saved_model, saved_data):
        raise CheckpointError(
            f"checkpoint {path} was trained for model '{saved_model}' on '{saved_data}', but "
            f"the config asks for '{want_model}' on '{want_data}'; {RETRAIN_HINT}"
        )
    want_spec, saved_spec = expected.get("model"), saved.get("model")
    if not isinstance(want_spec, Mapping) or want_spec.get("params") is None:
        return
    want_params = cast(dict, to_jsonable(want_spec["params"]))
    saved_params = (saved_spec.get("params") if isinstance(saved_spec, Mapping) else None) or {}
    differ = sorted(k for k in set(saved_params) | set(want_params) if saved_params.get(k) != want_params.get(k))
    if differ:
        found = ", ".join(f"{k}={saved_params.get(k)!r}" for k in differ)
        wanted = ", ".join(f"{k}={want_params.get(k)!r}" for k in differ)
        raise CheckpointError(
            f"checkpoint {path} was trained for model '{saved_model}' with {found}, but the "
            f"config asks for {wanted}; {RETRAIN_HINT}"
        )


def _check_state(path: Path, state: Mapping, model: nn.Module) -> None:
    own = model.state_dict()
    problems = []
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else ""))
    for key, tensor in own.items():
        if key not in state:
            continue
        if not isinstance(state[key], torch.Tensor):
            problems.append(f"{key} is not a tensor")
        elif tuple(state[key].shape) != tuple(tensor.shape):
            problems.append(
                f"{key} has shape {tuple(state[key].shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} in the model"
            )
    if problems:
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise CheckpointError(f"checkpoint {path} does not fit the model ({shown}); {RETRAIN_HINT}")


def _describe(saved: Mapping, expected: Mapping) -> str:
    """``model 'lstm' on 'mnist'``: what a checkpoint holds, with the parameters that differ from ``expected``'s
    when the model and dataset are the same."""
    spec, want = saved.get("model"), expected.get("model")
    text = f"model '{_model_name(spec)}'"
    if _model_name(spec) == _model_name(want) and saved.get("dataset") == expected.get("dataset"):
        saved_params = (spec.get("params") if isinstance(spec, Mapping) else None) or {}
        want_params = cast(dict, to_jsonable(want.get("params") or {})) if isinstance(want, Mapping) else {}
        differ = sorted(k for k in set(saved_params) | set(want_params) if saved_params.get(k) != want_params.get(k))
        text += f" ({', '.join(f'{k}={saved_params.get(k)!r}' for k in differ)})" if differ \
            else " (weights of other shapes)"
    return f"{text} on '{saved.get('dataset')}'"


def foreign_checkpoint(path: str | Path, model: nn.Module, *, expected: Mapping | None = None) -> str | None:
    """What the file at ``path`` holds when it is not a checkpoint of ``model`` (``expected`` as for
    :func:`load_checkpoint`), as a phrase for a message; None when no file is there or it is ``model``'s
    (same model, parameters and dataset, weights of the same shapes; other training settings allowed).

    Training writes only where this is None, so it never overwrites another model's checkpoint.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = read_checkpoint(path)
    except CheckpointError:
        return "a file that is not a readable explainnn checkpoint"
    saved = payload["metadata"]
    try:
        _check_identity(path, saved, dict(expected or {}))
        _check_state(path, payload["state_dict"], model)
    except CheckpointError:
        return f"the checkpoint of {_describe(saved, dict(expected or {}))}"
    return None


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    expected: Mapping | None = None,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Load weights into ``model`` and return the checkpoint's metadata.

    ``expected`` may hold ``model`` (a name or ``{"name", "params"}``), ``dataset``
    and ``config_hash``. A different model, parameters or dataset, or weights that
    do not fit ``model``, raise :class:`CheckpointError`. A different config hash
    alone only sets ``config_hash_matches: False`` in the returned metadata so the
    caller can warn that the checkpoint may be stale.
    """
    path = Path(path)
    payload = read_checkpoint(path, map_location=map_location)
    metadata = dict(payload["metadata"])
    expected = dict(expected or {})
    _check_identity(path, metadata, expected)
    _check_state(path, payload["state_dict"], model)
    model.load_state_dict(payload["state_dict"])
    want_hash = expected.get("config_hash")
    metadata["config_hash_matches"] = want_hash is None or metadata.get("config_hash") == want_hash
    return metadata
