"""Training, evaluation and the train-or-load step of every experiment.

Training is reproducible: the model is trained with Adam on mini-batches drawn by
a ``torch.Generator`` seeded with ``seed`` (which also drives augmentation), and
the global RNGs are seeded for dropout, so the same seed gives bit-identical
weights on CPU. Nothing is printed except a progress bar on terminals; numbers are
returned for the caller to report.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, cast

import torch
import torch.nn.functional as F
from torch import nn

from explainnn.checkpoint import RETRAIN_HINT, foreign_checkpoint, load_checkpoint, save_checkpoint, to_jsonable
from explainnn.data.base import Dataset
from explainnn.errors import CheckpointError, ConfigError, DataError
from explainnn.progress import progress_bar
from explainnn.torch_utils import resolve_device, seed_everything

TRAIN_MODES = ("auto", "always", "never")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "linear", "cosine")
MAX_SHIFT = 2
"""Largest translation (pixels) applied by ``augment=True``."""


@dataclass
class TrainResult:
    """Outcome of :func:`train_model`; ``history`` has one ``{epoch, loss, train_acc}`` per epoch."""

    train_accuracy: float
    test_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def random_translate(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in x and y, filling with zeros."""
    n, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4).permute(0, 2, 3, 1)
    dy = torch.randint(0, 2 * max_shift + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n, 1), generator=generator)
    rows = (dy + torch.arange(height)).unsqueeze(2)
    cols = (dx + torch.arange(width)).unsqueeze(1)
    shifted = padded[torch.arange(n).view(n, 1, 1), rows, cols]
    return shifted.permute(0, 3, 1, 2).contiguous()


def _check_number(label: str, value: object, *, integer: bool = False, minimum: float = 0.0,
                  inclusive: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{label} must be {kind}; got {value!r}")
    if value < minimum or (value == minimum and not inclusive):
        bound = ">=" if inclusive else ">"
        raise ConfigError(f"{label} must be {bound} {minimum:g}; got {value!r}")


def train_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    augment: bool = False,
    grad_clip: float | None = None,
    optimizer: str = "adam",
    schedule: str = "constant",
    warmup: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with Adam and cross-entropy; leave it in eval mode.

    ``augment`` applies random translations of up to 2 pixels to image datasets
    and does nothing for sequences and tokens, so one training config serves
    every dataset; ``grad_clip`` clips the global gradient norm.

    ``optimizer`` is ``adam`` (``weight_decay`` an L2 penalty added to the
    gradient) or ``adamw`` (decoupled weight decay, Loshchilov & Hutter 2019, the
    usual choice for transformers). The learning rate rises linearly from 0 to
    ``lr`` over the first ``warmup`` fraction of the optimiser steps, then follows
    ``schedule``: ``constant``, or a ``linear`` or ``cosine`` decay to 0 at the last
    step. The defaults (Adam, constant, no warmup) train with ``lr`` throughout.
    """
    _check_train_options(dataset, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         grad_clip=grad_clip, optimizer=optimizer, schedule=schedule, warmup=warmup)
    n_train = len(dataset.x_train)
    started = time.perf_counter()
    device = resolve_device(device)
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    steps = epochs * math.ceil(n_train / batch_size)
    optimiser_class = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    optimiser = optimiser_class(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: lr_factor(step, steps, schedule, warmup))
    history: list[dict[str, float]] = []
    bar = progress_bar(
        total=steps,
        desc=f"train {getattr(model, 'explainnn_spec', {}).get('name', type(model).__name__)}",
        unit="batch",
        enabled=progress,
        dynamic_ncols=True,
    )
    with bar:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(n_train, generator=generator)
            loss_sum, correct = 0.0, 0
            for start in range(0, n_train, batch_size):
                index = order[start : start + batch_size]
                inputs, targets = dataset.x_train[index], dataset.y_train[index]
                if augment and dataset.info.modality == "image":
                    inputs = random_translate(inputs, MAX_SHIFT, generator)
                loss, n_correct = _train_step(model, optimiser, inputs.to(device), targets.to(device), grad_clip)
                scheduler.step()
                loss_sum += loss * len(index)
                correct += n_correct
                seen = min(start + batch_size, n_train)
                bar.update(1)
                bar.set_postfix(
                    {"epoch": f"{epoch}/{epochs}", "loss": f"{loss_sum / seen:.4f}", "acc": f"{correct / seen:.3f}"},
                    refresh=False,
                )
            history.append({"epoch": epoch, "loss": loss_sum / n_train, "train_acc": correct / n_train})
    train_accuracy = evaluate_accuracy(model, dataset.x_train, dataset.y_train, device=device)
    test_accuracy = evaluate_accuracy(model, dataset.x_test, dataset.y_test, device=device)
    return TrainResult(train_accuracy, test_accuracy, history, time.perf_counter() - started)


def lr_factor(step: int, steps: int, schedule: str, warmup: float) -> float:
    """The multiple of ``lr`` used at optimiser step ``step`` (0-based) of ``steps``: warmup, then ``schedule``."""
    warm = warmup * steps
    if step < warm:
        return (step + 1) / (math.floor(warm) + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warm) / max(steps - warm, 1.0)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _check_train_options(dataset: Dataset, *, epochs: int, batch_size: int, lr: float, weight_decay: float,
                         grad_clip: float | None, optimizer: str = "adam", schedule: str = "constant",
                         warmup: float = 0.0) -> None:
    """One-line errors for out-of-range training options and an empty training split."""
    _check_number("epochs", epochs, integer=True, minimum=1, inclusive=True)
    _check_number("batch_size", batch_size, integer=True, minimum=1, inclusive=True)
    _check_number("lr", lr)
    _check_number("weight_decay", weight_decay, inclusive=True)
    if grad_clip is not None:
        _check_number("grad_clip", grad_clip)
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{optimizer}'; valid optimizers: {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule '{schedule}'; valid schedules: {', '.join(SCHEDULES)}")
    _check_number("warmup", warmup, inclusive=True)
    if warmup >= 1:
        raise ConfigError(f"warmup must be a fraction of the training steps in [0, 1); got {warmup!r}")
    if len(dataset.x_train) == 0:
        raise DataError(f"dataset '{dataset.info.name}' has no training samples")


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor,
                grad_clip: float | None) -> tuple[float, int]:
    """One optimiser step on one mini-batch; returns the batch's mean loss and its number of correct predictions."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(inputs)
    loss = F.cross_entropy(logits, targets)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item(), int((logits.detach().argmax(dim=1) == targets).sum())


def predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Predicted classes (CPU ``LongTensor``) in eval mode, in batches, without autograd."""
    _check_number("batch_size", batch_size, integer=True, minimum=1, inclusive=True)
    device = resolve_device(device)
    model.to(device).eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            chunks.append(model(x[start : start + batch_size].to(device)).argmax(dim=1).cpu())
    if not chunks:
        return torch.empty(0, dtype=torch.long)
    return torch.cat(chunks).clone()


def evaluate_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> float:
    """Fraction of ``x`` classified as ``y``."""
    if len(x) == 0:
        raise DataError("cannot compute accuracy on an empty set of samples")
    if len(x) != len(y):
        raise DataError(f"{len(x)} samples but {len(y)} labels")
    predictions = predict(model, x, batch_size=batch_size, device=device)
    return float((predictions == y.cpu()).float().mean())


_TRAIN_OPTIONS = tuple(
    name
    for name, parameter in inspect.signature(train_model).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "device"
)


def train_or_load(
    model: nn.Module,
    dataset: Dataset,
    *,
    checkpoint: str | Path,
    mode: str = "auto",
    metadata: Mapping | None = None,
    train_kwargs: Mapping | None = None,
    device: str | torch.device = "cpu",
    fallback: str | Path | None = None,
) -> tuple[nn.Module, dict]:
    """Load ``model`` from ``checkpoint`` or train it and save it there.

    ``mode``: ``auto`` loads when the file exists and otherwise trains and saves;
    ``always`` trains and overwrites; ``never`` only loads. ``metadata`` holds at
    least ``config_hash`` (and may override ``model``/``dataset``, which default to
    ``model.explainnn_spec`` and ``dataset.info.name``). Returns the model (on
    ``device``, eval mode) and a JSON-able dict: ``action`` ("loaded"/"trained"),
    ``checkpoint`` (the file loaded or written), ``config_hash_matches``, the
    checkpoint ``metadata`` and, when the model went to ``fallback``,
    ``kept`` (``{"path", "holds"}``: the file left alone and what it holds).

    Training never overwrites a file that is not this model's checkpoint (another
    model, parameters or dataset, weights of other shapes, or not a checkpoint at
    all): the model is written to ``fallback`` (its own path) when that is free or
    holds this model; otherwise a :class:`CheckpointError` naming both stops the
    call before any training.
    """
    if mode not in TRAIN_MODES:
        raise ConfigError(f"unknown training.train '{mode}'; valid values: {', '.join(TRAIN_MODES)}")
    train_kwargs = dict(train_kwargs or {})
    unknown = sorted(set(train_kwargs) - set(_TRAIN_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown training option '{unknown[0]}'; valid options: {', '.join(_TRAIN_OPTIONS)}"
        )
    path = Path(checkpoint)
    device = resolve_device(device)
    identity = {
        "model": getattr(model, "explainnn_spec", None) or {"name": type(model).__name__, "params": {}},
        "dataset": dataset.info.name,
        "config_hash": None,
        **dict(metadata or {}),
    }
    if mode == "never" or (mode == "auto" and path.exists()):
        if not path.exists():
            raise CheckpointError(
                f"checkpoint {path} not found and training.train is 'never'; set "
                "training.train: auto or point model.checkpoint at an existing file"
            )
        stored = load_checkpoint(path, model, expected=identity, map_location=device)
        matches = stored.pop("config_hash_matches")
        model.to(device).eval()
        return model, {"action": "loaded", "checkpoint": str(path),
                       "config_hash_matches": matches, "metadata": stored}

    target, kept = _writable(path, model, identity, fallback)
    result = train_model(model, dataset, device=device, **train_kwargs)
    options = {key: value for key, value in train_kwargs.items() if key != "progress"}
    record = {
        **identity,
        "train_accuracy": result.train_accuracy,
        "test_accuracy": result.test_accuracy,
        "training": {**cast(dict, to_jsonable(options)), "seconds": round(result.seconds, 3),
                     "history": result.history},
    }
    stored = save_checkpoint(target, model, record)
    outcome = {"action": "trained", "checkpoint": str(target), "config_hash_matches": True, "metadata": stored}
    if kept is not None:
        outcome["kept"] = kept
    return model, outcome


def _writable(path: Path, model: nn.Module, identity: Mapping, fallback: str | Path | None) -> tuple[Path, dict | None]:
    """Where training may write: ``path``, else ``fallback`` (with what ``path`` holds), else a one-line error."""
    holds = foreign_checkpoint(path, model, expected=identity)
    if holds is None:
        return path, None
    spec = identity.get("model")
    name = spec.get("name") if isinstance(spec, Mapping) else spec
    problem = (f"training '{name}' on '{identity.get('dataset')}' would overwrite {path}, which holds {holds}")
    spare = Path(fallback) if fallback is not None else None
    if spare is None or spare == path:
        raise CheckpointError(f"{problem}; {RETRAIN_HINT}")
    spare_holds = foreign_checkpoint(spare, model, expected=identity)
    if spare_holds is not None:
        raise CheckpointError(f"{problem}, and its own path {spare} holds {spare_holds}; set model.checkpoint "
                              "to a new file to train this model there, or delete one of them")
    return spare, {"path": str(path), "holds": holds}
