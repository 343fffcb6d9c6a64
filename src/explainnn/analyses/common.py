"""What the dataset-level analyses share: a seeded choice of samples, explanation targets, batched attribution.

:mod:`~explainnn.analyses.word_importance`, :mod:`~explainnn.analyses.word_order`,
:mod:`~explainnn.analyses.attention`, :mod:`~explainnn.analyses.clustering` and the
sweep's explanation-cluster agreement (:mod:`explainnn.sweep.agreement`) draw their
samples and explain them through these functions, so the same seed picks the same
samples everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from explainnn.attributions import attribute
from explainnn.errors import UserError
from explainnn.progress import progress_bar
from explainnn.torch_utils import eval_mode, model_device

BATCH = 64
"""Samples per attribution call: bounds memory (IG holds n_steps copies of a batch)."""


def as_numpy(values: Any) -> np.ndarray:
    """``values`` as a NumPy array (a tensor detached and moved to the CPU)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def check_positive(label: str, value: object) -> int:
    """``value`` as an int; a one-line error naming ``label`` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{label} must be a positive integer; got {value!r}")
    return int(value)


def sample_indices(total: int, n: int, seed: int) -> np.ndarray:
    """A seeded random choice of ``min(n, total)`` indices, in increasing order."""
    check_positive("n_samples", n)
    if total == 0:
        raise UserError("there are no samples to explain")
    return np.sort(np.random.default_rng(seed).permutation(total)[: min(n, total)])


def method_list(methods: Sequence[str]) -> list[str]:
    """Method names once each, in their order; a one-line error for anything but a list of names."""
    if isinstance(methods, str) or not all(isinstance(m, str) for m in methods):
        raise UserError(f"methods must be a list of method names; got {methods!r}")
    return list(dict.fromkeys(methods))


def batch_logits(model: nn.Module, inputs: np.ndarray | torch.Tensor, batch_size: int) -> np.ndarray:
    """Logits as float64 numpy, in eval mode and batches; the model's mode is restored."""
    batch = torch.as_tensor(inputs)
    device = model_device(model)
    with eval_mode(model), torch.no_grad():
        parts = [model(batch[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(batch), batch_size)]
    return torch.cat(parts).numpy()


def resolve_targets(model: nn.Module, inputs: torch.Tensor, target: Any) -> torch.Tensor:
    """``"predicted"`` -> the model's classes; an int -> that class for all; else one class per sample."""
    if isinstance(target, str):
        if target != "predicted":
            raise UserError(f"target must be 'predicted', a class index or one class per sample; got '{target}'")
        return torch.from_numpy(batch_logits(model, inputs, BATCH * 4).argmax(axis=1)).to(torch.int64)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return torch.full((len(inputs),), int(target), dtype=torch.int64)
    targets = torch.as_tensor(as_numpy(target)).to(torch.int64)
    if targets.shape != (len(inputs),):
        raise UserError(f"target must be one class per sample ({len(inputs)}); got shape {tuple(targets.shape)}")
    return targets


def attribute_in_batches(method: str, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, seed: int,
                       options: Mapping[str, Any], progress: bool) -> np.ndarray:
    """:func:`attribute` over ``inputs`` in chunks; the chunk's seed is ``seed + chunk index``.

    Methods that compare samples within a batch (``feature_permutation``) see
    ``BATCH`` texts at a time.
    """
    starts = range(0, len(inputs), BATCH)
    parts = [attribute(model, inputs[s : s + BATCH], targets[s : s + BATCH], method, seed=seed + n, **options)
             for n, s in enumerate(progress_bar(starts, desc=method, unit="batch", enabled=progress, leave=False))]
    return np.concatenate(parts)


def per_step(values: np.ndarray, modality: str, *, magnitude: bool) -> np.ndarray:
    """One value per time step: tokens as they are; sequences ``(N, T, F)`` and image rows
    ``(N, C, T, W)`` summed in magnitude over features (or, for the per-step attention
    broadcast over them, its first feature)."""
    values = np.abs(values) if magnitude else values
    if modality == "tokens":
        return values
    if modality == "sequence":
        return values.sum(axis=2) if magnitude else values[:, :, 0]
    return values.sum(axis=(1, 3)) if magnitude else values[:, 0, :, 0]
