"""Robustness: LocalLipschitzEstimate, MaxSensitivity, AvgSensitivity, declared and batched.

Every perturbed copy of every sample is drawn first (in Quantus' order), then
the attribution method explains them one batch of copies per call (the batches
Quantus passes: one per perturbation step and batch of samples), and the
distances of all copies are computed together.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import quantus
import torch

from explainnn.errors import ConfigError
from explainnn.evaluation.fast.common import Batch, Explain, chunks, explain_rows
from explainnn.evaluation.metrics.spec import MetricContext, MetricSpec, register_metric


def _perturbed(batch: Batch, draw: Any, nr_samples: int, batch_size: int, rng: np.random.RandomState,
               key: tuple) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(copies, sample, sizes)``: every perturbed copy ``(N * nr_samples, features)``, the sample each belongs
    to, and the sizes of the batches of copies (one per step and batch of samples).

    ``draw(rows)`` returns the additive noise of one step for ``rows`` samples
    from ``rng``; steps run inside Quantus' batches, so the draws match its
    order. The copies depend only on ``key`` (the noise's settings) and the
    state of ``rng``, not on the method, so they are drawn once per batch and
    reused (``rng`` is left where the draws leave it).
    """
    if isinstance(nr_samples, bool) or not isinstance(nr_samples, int) or nr_samples < 1:
        raise ConfigError(f"nr_samples must be a positive integer; got {nr_samples!r}")
    state: Any = rng.get_state()
    cache_key = ("perturbed", *key, nr_samples, batch_size, state[1].tobytes(), int(state[2]))
    if cache_key not in batch.cache:
        x = batch.flat()
        copies, owners = [], []
        for part in chunks(len(x), batch_size):
            for _ in range(nr_samples):
                copies.append((x[part] + draw(part.stop - part.start)).astype(np.float32))
                owners.append(np.arange(part.start, part.stop))
        batch.cache[cache_key] = (np.concatenate(copies), np.concatenate(owners), [len(p) for p in owners],
                                  rng.get_state())
    copies_, owners_, sizes, after = batch.cache[cache_key]
    rng.set_state(after)
    return copies_, owners_, sizes


def _changed(batch: Batch, copies: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Whether each copy's predicted class differs from its sample's (``return_nan_when_prediction_changes``)."""

    def predicted(rows: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(rows), batch.rows):
                chunk = torch.as_tensor(rows[start:start + batch.rows]).to(batch.device)
                out.append(batch.model(chunk.reshape(-1, *batch.x.shape[1:])).argmax(-1).cpu().numpy())
        return np.concatenate(out)

    return predicted(copies) != predicted(batch.flat())[owners]


def _worst(batch: Batch, values: np.ndarray, owners: np.ndarray, changed: np.ndarray | None, reduce: Any) -> np.ndarray:
    """Per sample, ``reduce`` over its copies (NaN where the prediction changed, when asked)."""
    values = values.astype(np.float64)
    if changed is not None:
        values[changed] = np.nan
    grouped = values[np.argsort(owners, kind="stable")].reshape(len(batch), -1)
    return reduce(grouped, axis=1)


def local_lipschitz_estimate(batch: Batch, a: np.ndarray, *, explain: Explain, rng: np.random.RandomState,
                             normalise: bool, abs: bool, nr_samples: int = 200, perturb_mean: float = 0.0,
                             perturb_std: float = 0.1, return_nan_when_prediction_changes: bool = False,
                             softmax: bool = True, batch_size: int = 64) -> np.ndarray:
    """max over Gaussian perturbations of ``||a(x) - a(x')||_2 / ||x - x'||_2`` (Alvarez-Melis & Jaakkola 2018)."""
    n = len(batch)
    def draw(rows: int) -> np.ndarray:
        return rng.normal(perturb_mean, perturb_std, size=(rows, batch.n_features))

    copies, owners, sizes = _perturbed(batch, draw, nr_samples, batch_size, rng,
                                       ("normal", perturb_mean, perturb_std))
    a_copies = explain_rows(batch, explain, copies.reshape(-1, *batch.x.shape[1:]), batch.y[owners], sizes,
                            normalise=normalise, abs=abs)
    a = np.broadcast_to(a, batch.x.shape).reshape(n, -1)
    numerator = ((a[owners] - a_copies) ** 2).sum(axis=-1) ** 0.5
    denominator = ((batch.flat()[owners] - copies) ** 2).sum(axis=-1) ** 0.5
    changed = _changed(batch, copies, owners) if return_nan_when_prediction_changes else None
    reduce = np.max if return_nan_when_prediction_changes else np.nanmax
    return _worst(batch, numerator / (denominator + 1e-10), owners, changed, reduce)


def _sensitivity(batch: Batch, a: np.ndarray, explain: Explain, rng: np.random.RandomState, definitions: str,
                 normalise: bool, abs: bool, nr_samples: int, lower_bound: float, upper_bound: float | None,
                 return_nan_when_prediction_changes: bool, batch_size: int, reduce: Any) -> np.ndarray:
    n = len(batch)
    if upper_bound is None:
        low, high = -lower_bound, lower_bound
    elif upper_bound <= lower_bound:
        raise ConfigError(f"upper_bound ({upper_bound}) must be larger than lower_bound ({lower_bound})")
    else:
        low, high = lower_bound, upper_bound
    copies, owners, sizes = _perturbed(batch, lambda rows: rng.uniform(low, high, size=(rows, batch.n_features)),
                                       nr_samples, batch_size, rng, ("uniform", low, high))
    a_copies = explain_rows(batch, explain, copies.reshape(-1, *batch.x.shape[1:]), batch.y[owners], sizes,
                            normalise=normalise, abs=abs)
    a = np.broadcast_to(a, batch.x.shape).reshape(n, -1)
    distance = np.linalg.norm(a[owners] - a_copies, axis=-1)
    if definitions == "quantus":
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = distance / np.linalg.norm(a, axis=-1)[owners]
    changed = _changed(batch, copies, owners) if return_nan_when_prediction_changes else None
    return _worst(batch, distance, owners, changed, reduce)


def max_sensitivity(batch: Batch, a: np.ndarray, *, explain: Explain, rng: np.random.RandomState,
                    definitions: str = "quantus", normalise: bool, abs: bool, nr_samples: int = 200,
                    lower_bound: float = 0.2, upper_bound: float | None = None,
                    return_nan_when_prediction_changes: bool = False, softmax: bool = False,
                    batch_size: int = 64) -> np.ndarray:
    """max over uniform perturbations (each element within ``lower_bound``) of ``||a(x) - a(x')||_2``, divided by
    ``||a(x)||_2`` under ``definitions="quantus"`` (Quantus 0.6's default ``norm_denominator``), not under
    ``"paper"`` (Yeh et al. 2019)."""
    reduce = np.max if return_nan_when_prediction_changes else np.nanmax
    return _sensitivity(batch, a, explain, rng, definitions, normalise, abs, nr_samples, lower_bound, upper_bound,
                        return_nan_when_prediction_changes, batch_size, reduce)


def avg_sensitivity(batch: Batch, a: np.ndarray, *, explain: Explain, rng: np.random.RandomState,
                    definitions: str = "quantus", normalise: bool, abs: bool, nr_samples: int = 200,
                    lower_bound: float = 0.2, upper_bound: float | None = None,
                    return_nan_when_prediction_changes: bool = False, softmax: bool = False,
                    batch_size: int = 64) -> np.ndarray:
    """The mean instead of the max of :func:`max_sensitivity` (Yeh et al. 2019; the same two definitions)."""
    reduce = np.mean if return_nan_when_prediction_changes else np.nanmean
    return _sensitivity(batch, a, explain, rng, definitions, normalise, abs, nr_samples, lower_bound, upper_bound,
                        return_nan_when_prediction_changes, batch_size, reduce)


# Declarations ------------------------------------------------------------------------------


def _robustness(context: MetricContext) -> dict[str, Any]:
    return {"nr_samples": 10}


def _lipschitz(context: MetricContext) -> dict[str, Any]:
    return {"nr_samples": 10, "perturb_std": 0.1, "perturb_mean": 0.0}


SENSITIVITY_PAPER = (
    "the score is the distance `||a(x) - a(x')||_2` itself, as in the paper (Yeh et al. 2019). Quantus 0.6 divides "
    "it by `||a(x)||_2` (its default `norm_denominator`), which turns it into a relative change and rewards a method "
    "whose attributions spread over many features; here every attribution is already normalised to a largest "
    "|value| of 1, so the paper's absolute difference compares methods on one scale."
)

register_metric(MetricSpec(
    "LocalLipschitzEstimate", "robustness", quantus.LocalLipschitzEstimate, local_lipschitz_estimate,
    defaults=_lipschitz, note="Gaussian perturbations (std 0.1); nr_samples defaults to 10 (Quantus: 200)",
))
register_metric(MetricSpec(
    "MaxSensitivity", "robustness", quantus.MaxSensitivity, max_sensitivity, defaults=_robustness,
    note="uniform perturbations (radius 0.2); nr_samples defaults to 10 (Quantus: 200)", paper=SENSITIVITY_PAPER,
))
register_metric(MetricSpec(
    "AvgSensitivity", "robustness", quantus.AvgSensitivity, avg_sensitivity, defaults=_robustness,
    note="uniform perturbations (radius 0.2); nr_samples defaults to 10 (Quantus: 200)", paper=SENSITIVITY_PAPER,
))
