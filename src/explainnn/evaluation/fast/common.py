"""What every batched metric shares: the evaluated batch, model scores, attribution preparation, baselines.

The batched engine computes what Quantus 0.6 computes, with two rules that make
the numbers identical (not just alike):

* random draws come from one ``numpy.random.RandomState(seed)`` in the order
  Quantus draws them from NumPy's global generator after ``np.random.seed(seed)``,
  walking the samples in chunks of ``batch_size`` (Quantus' batches; 64 by
  default). Orderings of attributions (``argsort``) are taken with NumPy on the
  same float32 values, so ties break the same way;
* model passes and perturbations run in torch, many samples x perturbations per
  forward pass (``rows`` inputs at a time), on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from explainnn.attributions.baselines import pass_rows
from explainnn.errors import ConfigError
from explainnn.evaluation.normalisation import normalise_per_sample

Explain = Callable[..., np.ndarray]
"""A Quantus-style ``explain(model, inputs, targets) -> np.ndarray`` (:func:`explainnn.attributions.explain_func`)."""

EXPLAIN_ROWS = 512
"""Perturbed copies per call of a deterministic attribution method (:func:`explain_rows` merges Quantus' batches)."""


@dataclass
class Batch:
    """The evaluated samples as the batched metrics see them (channel-first, Quantus' layout).

    ``model`` maps ``x`` to ``(N, classes)`` logits; ``masks`` are the
    ground-truth masks of the localisation metrics (same shape as ``x``).
    ``cache`` holds what does not depend on the attribution method (clean
    scores, superpixels), so every method reuses it.
    """

    model: nn.Module
    x: np.ndarray
    y: np.ndarray
    masks: np.ndarray | None = None
    rows: int = 0
    """Inputs per forward pass (perturbed copies of many samples together); 0 picks
    :func:`~explainnn.attributions.baselines.pass_rows` for the model's device (small passes on a CPU, whose
    activations stay in cache; large ones on a GPU)."""
    cache: dict[Any, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rows:
            self.rows = pass_rows(self.device)

    @property
    def device(self) -> torch.device:
        for tensor in [*self.model.parameters(), *self.model.buffers()]:
            return tensor.device
        return torch.device("cpu")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x.shape[1:]))

    def flat(self) -> np.ndarray:
        """``x`` as ``(N, features)`` float32."""
        return np.ascontiguousarray(self.x.reshape(len(self.x), -1), dtype=np.float32)

    def scores(self, inputs: torch.Tensor | np.ndarray, targets: np.ndarray, *, softmax: bool) -> np.ndarray:
        """The target class's logit (or softmax probability) for each row of ``inputs`` ``(M, ...)``.

        ``inputs`` may be flat ``(M, features)``; rows go through the model
        ``rows`` at a time, as float32, the way Quantus' ``model.predict`` feeds them.
        """
        inputs = torch.as_tensor(inputs, dtype=torch.float32)
        labels = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
        shape = (-1, *self.x.shape[1:])
        out = []
        with torch.inference_mode():
            for start in range(0, len(inputs), self.rows):
                chunk = inputs[start:start + self.rows].to(self.device).reshape(shape)
                logits = self.model(chunk)
                if softmax:
                    logits = torch.softmax(logits, dim=-1)
                picked = logits.gather(1, labels[start:start + self.rows].to(self.device)[:, None])[:, 0]
                out.append(picked.cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def clean_scores(self, *, softmax: bool) -> np.ndarray:
        """:meth:`scores` of the unperturbed samples (cached)."""
        key = ("clean", softmax)
        if key not in self.cache:
            self.cache[key] = self.scores(self.flat(), self.y, softmax=softmax)
        return self.cache[key]


def prepare(a: np.ndarray, x_shape: tuple[int, ...], *, normalise: bool, abs: bool) -> np.ndarray:
    """Attributions as Quantus prepares them: broadcast to the inputs, per-sample normalised, then ``abs``."""
    a = np.asarray(a)
    if a.ndim < len(x_shape):
        a = a.reshape(a.shape[:1] + (1,) * (len(x_shape) - a.ndim) + a.shape[1:])
    if normalise:
        a = normalise_per_sample(a)
    if abs:
        a = np.abs(a)
    return a


def explain_rows(batch: Batch, explain: Explain, inputs: np.ndarray, targets: np.ndarray, sizes: list[int], *,
                 normalise: bool, abs: bool) -> np.ndarray:
    """Explain perturbed copies ``(M, ...)`` in the batches Quantus hands the method (``sizes``, in order).

    A stochastic method is called once per batch: each call starts from the
    same seed, so it draws the same random numbers for a copy as it did for the
    explanation of its sample, as under Quantus. A deterministic method (the
    ``deterministic`` attribute of :func:`~explainnn.attributions.explain_func`'s
    functions) gives the same attributions however its inputs are batched, so
    consecutive batches are merged into calls of up to :data:`EXPLAIN_ROWS`
    copies. Returns the prepared attributions flattened to ``(M, features)``.
    """
    parts = []
    for start, stop in _calls(sizes, merge=bool(getattr(explain, "deterministic", False))):
        chunk = np.ascontiguousarray(inputs[start:stop], dtype=np.float32)
        a = explain(batch.model, chunk, np.asarray(targets[start:stop]))
        a = prepare(a, chunk.shape, normalise=normalise, abs=abs)
        parts.append(np.broadcast_to(a, chunk.shape).reshape(len(chunk), -1))
    return np.concatenate(parts) if parts else np.zeros((0, batch.n_features), dtype=np.float32)


def _calls(sizes: list[int], *, merge: bool) -> list[tuple[int, int]]:
    """``(start, stop)`` of each call: one per batch, or consecutive batches merged up to :data:`EXPLAIN_ROWS`."""
    bounds = np.cumsum([0, *sizes]).tolist()
    calls: list[tuple[int, int]] = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if merge and calls and stop - calls[-1][0] <= EXPLAIN_ROWS:
            calls[-1] = (calls[-1][0], stop)
        else:
            calls.append((start, stop))
    return calls


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    """Quantus' batches of samples: ``slice``\\ s of ``batch_size`` over ``range(n)``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


BASELINES = ("black", "white", "mean", "uniform")


def check_baseline(metric: str, value: Any, allowed: tuple[str, ...] = BASELINES) -> None:
    """Refuse a ``perturb_baseline`` the batched engine does not implement, in one line."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return
    if value not in allowed:
        raise ConfigError(f"{metric} perturb_baseline must be a number or one of {', '.join(allowed)} in the fast "
                          f"engine; got {value!r} (evaluation.engine: quantus runs Quantus' own choices)")


def baseline_values(value: Any, current: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """One replacement value per row of ``current`` ``(b, features)``, as Quantus' batched baseline.

    ``black``/``white``/``mean`` are each row's min/max/mean *now* (Quantus reads
    them from the array it is perturbing). For a named baseline Quantus draws
    one uniform number per row whether it uses them or not; they are drawn here
    too, so later draws stay in step.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.full(len(current), float(value), dtype=current.dtype)
    uniform = rng.uniform(low=0.0, high=1.0, size=len(current))
    if value == "uniform":
        return uniform
    return {"black": current.min(axis=1), "white": current.max(axis=1), "mean": current.mean(axis=1)}[value]


class Scorer:
    """Collects perturbed inputs (flat rows) and their targets; scores them :attr:`Batch.rows` at a time."""

    def __init__(self, batch: Batch, *, softmax: bool) -> None:
        self.batch, self.softmax = batch, softmax
        self.rows: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.pending = 0
        self.done: list[np.ndarray] = []

    def add(self, rows: np.ndarray, targets: np.ndarray) -> None:
        """Queue ``rows`` ``(m, features)`` with their target classes ``(m,)``."""
        self.rows.append(np.array(rows, dtype=np.float32))
        self.targets.append(np.asarray(targets))
        self.pending += len(rows)
        if self.pending >= self.batch.rows:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.done.append(self.batch.scores(np.concatenate(self.rows), np.concatenate(self.targets),
                                               softmax=self.softmax))
        self.rows, self.targets, self.pending = [], [], 0

    def result(self) -> np.ndarray:
        """The scores of every queued row, in the order they were added."""
        self._flush()
        return np.concatenate(self.done) if self.done else np.zeros(0, dtype=np.float32)


def reject_options(metric: str, options: dict[str, Any], supported: tuple[str, ...]) -> None:
    """One-line error for Quantus options (custom functions, ...) the batched engine does not implement."""
    for key, value in options.items():
        if key not in supported and value is not None:
            raise ConfigError(f"evaluation.options.{metric}.{key} is not supported by the fast engine (it supports: "
                              f"{', '.join(sorted(supported))}); set evaluation.engine: quantus to use it")
