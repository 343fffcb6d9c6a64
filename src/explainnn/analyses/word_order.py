"""Word order: how much a text model relies on the order of its words.

:func:`permutation_importance` shuffles the words of each text (and, position by
position, one column's words among the texts) and measures how much accuracy and
the true-class logit drop; :func:`plot_permutation` draws the drop per position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from explainnn.analyses.common import as_numpy, batch_logits, check_positive
from explainnn.errors import UserError
from explainnn.files import save_figure, write_csv


@dataclass(frozen=True)
class PermutationImportance:
    """How much a model relies on word order.

    Whole-text: ``permuted_accuracy`` and ``logit_drop`` (mean drop of the true
    class's logit) per repeat when each text's words are shuffled in place (pads
    stay). Per position (columns of the left-padded ids, so column ``L - 1`` is
    every text's last word): the accuracy and logit drop, over all texts, when that
    column's words are shuffled among the texts that have a word there
    (``position_count``; the others are unchanged; NaN where fewer than two do).
    """

    accuracy: float
    permuted_accuracy: np.ndarray
    logit_drop: np.ndarray
    position_accuracy_drop: np.ndarray
    position_logit_drop: np.ndarray
    position_count: np.ndarray

    @property
    def accuracy_drop(self) -> float:
        return float(self.accuracy - self.permuted_accuracy.mean())

    def summary(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "permuted_accuracy": float(self.permuted_accuracy.mean()),
                "accuracy_drop": self.accuracy_drop, "logit_drop": float(self.logit_drop.mean()),
                "logit_drop_std": float(self.logit_drop.std()), "n_repeats": len(self.logit_drop)}

    def to_csv(self, folder: str | Path) -> list[Path]:
        """``permutation.csv`` (one row per repeat) and ``permutation_positions.csv``."""
        folder = Path(folder)
        repeats = [{"repeat": r, "accuracy": self.accuracy, "permuted_accuracy": float(a), "logit_drop": float(d)}
                   for r, (a, d) in enumerate(zip(self.permuted_accuracy, self.logit_drop))]
        length = len(self.position_count)
        positions = [{"column": c, "from_end": length - 1 - c, "texts": int(self.position_count[c]),
                      "accuracy_drop": float(self.position_accuracy_drop[c]),
                      "logit_drop": float(self.position_logit_drop[c])} for c in range(length)]
        write_csv(folder / "permutation.csv", repeats, ["repeat", "accuracy", "permuted_accuracy", "logit_drop"])
        write_csv(folder / "permutation_positions.csv", positions,
                   ["column", "from_end", "texts", "accuracy_drop", "logit_drop"])
        return [folder / "permutation.csv", folder / "permutation_positions.csv"]


def permutation_importance(
    model: nn.Module,
    tokens: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    *,
    n_repeats: int = 5,
    seed: int = 0,
    pad_index: int | None = None,
    batch_size: int = 512,
) -> PermutationImportance:
    """Accuracy and true-class logit drops when word order is shuffled (see :class:`PermutationImportance`).

    An order-independent model (e.g. mean-pooled embeddings and a linear head)
    scores ~0 whole-text; one that reads only the last word scores high, and all its
    per-position importance sits in the last column. ``pad_index`` defaults to the
    model's. The caller's random state is untouched (a seeded NumPy generator).
    """
    ids = as_numpy(tokens).astype(np.int64)
    truth = as_numpy(labels).astype(np.int64)
    if ids.ndim != 2 or len(ids) == 0:
        raise UserError(f"tokens must be non-empty (N, L) token ids; got shape {ids.shape}")
    if truth.shape != (len(ids),):
        raise UserError(f"labels must be ({len(ids)},) classes, one per text; got shape {truth.shape}")
    check_positive("n_repeats", n_repeats)
    pad = getattr(model, "pad_index", None) if pad_index is None else pad_index
    if not isinstance(pad, int):
        raise UserError(f"{type(model).__name__} has no int 'pad_index'; pass pad_index=")
    rng = np.random.default_rng(seed)
    real = ids != pad
    base = batch_logits(model, ids, batch_size)
    if base.shape[1] <= truth.max() or truth.min() < 0:
        raise UserError(f"labels must be classes in 0..{base.shape[1] - 1}; got {truth.min()}..{truth.max()}")
    rows = np.arange(len(ids))
    base_true = base[rows, truth]
    accuracy = float((base.argmax(1) == truth).mean())

    permuted_accuracy, logit_drop = np.zeros(n_repeats), np.zeros(n_repeats)
    columns = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    slots = np.argsort(np.where(real, columns, ids.shape[1]), axis=1, kind="stable")
    for repeat in range(n_repeats):
        order = np.argsort(np.where(real, rng.random(ids.shape), 2.0), axis=1)
        shuffled = ids.copy()
        np.put_along_axis(shuffled, slots, np.take_along_axis(ids, order, axis=1), axis=1)
        logits = batch_logits(model, shuffled, batch_size)
        permuted_accuracy[repeat] = (logits.argmax(1) == truth).mean()
        logit_drop[repeat] = (base_true - logits[rows, truth]).mean()

    position_accuracy, position_logit = _position_importance(model, ids, truth, base, rng, n_repeats, batch_size,
                                                             real=real)
    return PermutationImportance(accuracy, permuted_accuracy, logit_drop, position_accuracy, position_logit,
                                 real.sum(axis=0))


def _position_importance(model: nn.Module, ids: np.ndarray, truth: np.ndarray, base: np.ndarray,
                         rng: np.random.Generator, n_repeats: int, batch_size: int, *,
                         real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position: the mean accuracy and true-class logit drops when that column's words are shuffled
    among the texts that have a word there (the others count with zero drop)."""
    length = ids.shape[1]
    base_true = base[np.arange(len(ids)), truth]
    position_accuracy, position_logit = np.full(length, np.nan), np.full(length, np.nan)
    for column in range(length):
        holders = np.nonzero(real[:, column])[0]
        if len(holders) < 2:
            continue
        accuracy_drops, logit_drops = [], []
        for _ in range(n_repeats):
            shuffled = ids[holders].copy()
            shuffled[:, column] = shuffled[rng.permutation(len(holders)), column]
            logits = batch_logits(model, shuffled, batch_size)
            changed_true = logits[np.arange(len(holders)), truth[holders]]
            # Texts without a word here are unchanged: they count with zero drop.
            accuracy_drops.append(((base.argmax(1)[holders] == truth[holders]).sum()
                                   - (logits.argmax(1) == truth[holders]).sum()) / len(ids))
            logit_drops.append((base_true[holders] - changed_true).sum() / len(ids))
        position_accuracy[column] = np.mean(accuracy_drops)
        position_logit[column] = np.mean(logit_drops)
    return position_accuracy, position_logit


def plot_permutation(result: PermutationImportance, *, path: str | Path | None = None, dpi: int = 120) -> Figure:
    """Per-position logit and accuracy drops against the distance from the last word."""
    length = len(result.position_count)
    from_end = length - 1 - np.arange(length)
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    logit_axis, accuracy_axis = figure.subplots(2, 1, sharex=True)
    logit_axis.bar(from_end, np.nan_to_num(result.position_logit_drop), color="#4d4d4d")
    logit_axis.set_ylabel("true-class logit drop")
    accuracy_axis.bar(from_end, np.nan_to_num(result.position_accuracy_drop), color="#b2182b")
    accuracy_axis.set_ylabel("accuracy drop")
    accuracy_axis.set_xlabel("position (words before the last; 0 = last word)")
    for axis in (logit_axis, accuracy_axis):
        axis.axhline(0, color="black", linewidth=0.6)
    summary = result.summary()
    figure.suptitle(f"shuffling each text's words: accuracy {summary['accuracy']:.3f} -> "
                    f"{summary['permuted_accuracy']:.3f}, logit drop {summary['logit_drop']:.3f}")
    return save_figure(figure, path, dpi=dpi)
