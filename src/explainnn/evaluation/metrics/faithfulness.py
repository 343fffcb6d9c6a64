"""Faithfulness: FaithfulnessCorrelation, PixelFlipping, RegionPerturbation, IROF, declared and batched.

Each batched function takes the :class:`~.common.Batch`, the prepared attributions
``a`` (normalised and ``abs`` as the metric asks, see :func:`~.common.prepare`)
and the metric's Quantus options; it returns what the Quantus metric returns
(one value, or one curve, per sample). All perturbed inputs of all samples go
through the model together, :attr:`~.common.Batch.rows` at a time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import quantus
import scipy.stats
from quantus.helpers.utils import get_superpixel_segments

from explainnn.attributions.masks import default_patch
from explainnn.errors import ConfigError, UserError
from explainnn.evaluation.fast.common import Batch, Scorer, baseline_values, check_baseline, chunks
from explainnn.evaluation.metrics.spec import MetricContext, MetricSpec, register_metric, removed_value


def faithfulness_correlation(batch: Batch, a: np.ndarray, *, rng: np.random.RandomState, nr_runs: int = 100,
                             subset_size: int = 224, perturb_baseline: Any = "black", softmax: bool = False,
                             batch_size: int = 64) -> np.ndarray:
    """Pearson correlation, over ``nr_runs`` random feature subsets, of the subset's attribution sum and the
    drop of the target score when the subset is set to the baseline (Bhatt et al. 2020)."""
    check_baseline("FaithfulnessCorrelation", perturb_baseline)
    x = batch.flat()
    n, features = x.shape
    if subset_size > features:
        raise ConfigError(f"FaithfulnessCorrelation subset_size ({subset_size}) is larger than the input "
                          f"({features} features)")
    a = np.broadcast_to(a, batch.x.shape).reshape(n, -1)
    key = ("FaithfulnessCorrelation", nr_runs, subset_size, str(perturb_baseline), softmax, batch_size, _state_key(rng))
    if key not in batch.cache:  # the subsets and score drops depend on the seed only, not on the method
        batch.cache[key] = (*_correlation_perturbations(batch, x, rng, nr_runs, subset_size, perturb_baseline,
                                                        softmax, batch_size), rng.get_state())
    index, deltas, state = batch.cache[key]
    rng.set_state(state)
    sums = np.take_along_axis(a, index.reshape(n, -1), axis=1).reshape(n, nr_runs, subset_size).sum(axis=-1)
    return np.asarray(scipy.stats.pearsonr(sums, deltas, axis=1)[0], dtype=np.float64)


def _state_key(rng: np.random.RandomState) -> tuple[bytes, int]:
    """A hashable fingerprint of ``rng``'s state (the same seed gives the same key)."""
    state: Any = rng.get_state()
    return state[1].tobytes(), int(state[2])


def _correlation_perturbations(batch: Batch, x: np.ndarray, rng: np.random.RandomState, nr_runs: int,
                               subset_size: int, perturb_baseline: Any, softmax: bool,
                               batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """FaithfulnessCorrelation's random subsets ``(n, nr_runs, subset_size)`` (drawn in Quantus' order) and the
    drop of the target score when each is set to the baseline ``(n, nr_runs)``."""
    n, features = x.shape
    index = np.empty((n, nr_runs, subset_size), dtype=np.int64)
    values = np.empty((n, nr_runs), dtype=np.float64)
    for part in chunks(n, batch_size):
        for run in range(nr_runs):
            index[part, run] = np.stack([rng.choice(features, subset_size, replace=False)
                                         for _ in range(part.stop - part.start)])
            values[part, run] = baseline_values(perturb_baseline, x[part], rng)
    scorer = Scorer(batch, softmax=softmax)
    for i in range(n):
        rows = np.repeat(x[i:i + 1], nr_runs, axis=0)
        np.put_along_axis(rows, index[i], values[i][:, None].astype(np.float32), axis=1)
        scorer.add(rows, np.full(nr_runs, batch.y[i]))
    deltas = batch.clean_scores(softmax=softmax)[:, None] - scorer.result().reshape(n, nr_runs)
    return index, deltas


def _cumulative(batch: Batch, x: np.ndarray, steps: list[np.ndarray], baseline: Any, rng: np.random.RandomState,
                scorer: Scorer, targets: np.ndarray) -> None:
    """Queue the inputs after each step of a cumulative removal: step ``s`` sets ``steps[s]`` (``(b, k)`` flat
    indices) of every sample to its baseline, on top of the steps before."""
    current = x.copy()
    rows = np.arange(len(current))[:, None]
    for indices in steps:
        current[rows, indices] = baseline_values(baseline, current, rng)[:, None]
        scorer.add(current, targets)


def pixel_flipping(batch: Batch, a: np.ndarray, *, rng: np.random.RandomState, features_in_step: int = 1,
                   perturb_baseline: Any = "black", return_auc_per_sample: bool = True, softmax: bool = True,
                   batch_size: int = 64) -> np.ndarray:
    """Area under the target-score curve while the most relevant features are set to the baseline,
    ``features_in_step`` at a time (Bach et al. 2015)."""
    check_baseline("PixelFlipping", perturb_baseline)
    x = batch.flat()
    n, features = x.shape
    if features % features_in_step:
        raise ConfigError(f"PixelFlipping features_in_step ({features_in_step}) must divide the "
                          f"{features} features of an input")
    order = np.argsort(-np.broadcast_to(a, batch.x.shape).reshape(n, -1), axis=1)
    n_steps = math.ceil(features / features_in_step)
    scorer = Scorer(batch, softmax=softmax)
    for part in chunks(n, batch_size):
        steps = [order[part, s * features_in_step:(s + 1) * features_in_step] for s in range(n_steps)]
        _cumulative(batch, x[part], steps, perturb_baseline, rng, scorer, batch.y[part])
    curves = _by_sample(scorer.result(), n, n_steps, batch_size)
    return np.trapezoid(curves, dx=1, axis=1) if return_auc_per_sample else curves


def _by_sample(scores: np.ndarray, n: int, n_steps: int, batch_size: int) -> np.ndarray:
    """Scores queued part by part, step-major within a part, as ``(n, n_steps)``."""
    curves = np.empty((n, n_steps), dtype=scores.dtype)
    start = 0
    for part in chunks(n, batch_size):
        size = part.stop - part.start
        curves[part] = scores[start:start + size * n_steps].reshape(n_steps, size).T
        start += size * n_steps
    return curves


def _padding(size: int, patch: int) -> tuple[int, int]:
    total = (patch - size % patch) % patch
    return total // 2, total - total // 2


def region_perturbation(batch: Batch, a: np.ndarray, *, rng: np.random.RandomState, patch_size: int = 8,
                        order: str = "morf", regions_evaluation: int = 100, perturb_baseline: Any = "black",
                        softmax: bool = True, batch_size: int = 64) -> np.ndarray:
    """Drop of the target score after each of the first ``regions_evaluation`` patches is set to the baseline,
    patches ranked by their attribution sum (Samek et al. 2017); one curve per sample.

    Like Quantus, the image is padded to whole patches (edge values) and the
    patches of the padded image are removed.
    """
    check_baseline("RegionPerturbation", perturb_baseline)
    order = order.lower()
    if order not in ("morf", "lerf", "random"):
        raise ConfigError(f"RegionPerturbation order must be morf, lerf or random; got {order!r}")
    if batch.x.ndim != 4:
        raise UserError(f"RegionPerturbation needs (N, C, H, W) images; got shape {batch.x.shape}")
    n, channels, height, width = batch.x.shape
    pad_h, pad_w = _padding(height, patch_size), _padding(width, patch_size)
    padded = np.pad(batch.x, ((0, 0), (0, 0), pad_h, pad_w), mode="edge").reshape(n, -1)
    a_pad = np.pad(np.broadcast_to(a, batch.x.shape), ((0, 0), (0, 0), pad_h, pad_w), mode="constant")
    grid: np.ndarray = np.arange(a_pad[0].size).reshape(a_pad.shape[1:])
    patches = np.stack([grid[:, i:i + patch_size, j:j + patch_size].reshape(-1)
                        for i in range(0, grid.shape[1], patch_size) for j in range(0, grid.shape[2], patch_size)])
    sums = a_pad.reshape(n, -1)[:, patches].sum(axis=-1)
    n_steps = min(regions_evaluation, len(patches))
    scorer = Scorer(batch, softmax=softmax)
    for part in chunks(n, batch_size):
        if order == "random":
            ranking = np.array([rng.permutation(len(patches)) for _ in range(part.stop - part.start)])
        else:
            ranking = np.argsort(-sums[part] if order == "morf" else sums[part], axis=-1)
        steps = [patches[ranking[:, s]] for s in range(n_steps)]
        _cumulative_cropped(batch, padded[part], steps, perturb_baseline, rng, scorer, batch.y[part],
                            (channels, height + sum(pad_h), width + sum(pad_w)), (pad_h, pad_w))
    curves = _by_sample(scorer.result(), n, n_steps, batch_size)
    return batch.clean_scores(softmax=softmax)[:, None] - curves


def _cumulative_cropped(batch: Batch, padded: np.ndarray, steps: list[np.ndarray], baseline: Any,
                        rng: np.random.RandomState, scorer: Scorer, targets: np.ndarray,
                        padded_shape: tuple[int, int, int], padding: tuple[tuple[int, int], ...]) -> None:
    """:func:`_cumulative` on padded images, queueing each step cropped back to the input size."""
    current = padded.copy()
    rows = np.arange(len(current))[:, None]
    (top, bottom), (left, right) = padding
    _, height, width = padded_shape
    for indices in steps:
        current[rows, indices] = baseline_values(baseline, current, rng)[:, None]
        image = current.reshape(len(current), *padded_shape)[:, :, top:height - bottom, left:width - right]
        scorer.add(image.reshape(len(current), -1), targets)


IROF_BASELINES = ("black", "white", "mean")


def irof(batch: Batch, a: np.ndarray, *, definitions: str = "quantus", segmentation_method: str = "slic",
         perturb_baseline: Any = "mean", softmax: bool = True, batch_size: int = 64) -> np.ndarray:
    """Area over the curve of the target score (relative to the clean score) while superpixels are replaced,
    most relevant (highest mean attribution) first (Rieger & Hansen 2020).

    ``definitions="quantus"`` computes Quantus 0.6's rule over its batches of
    ``batch_size`` samples: step ``k`` replaces each sample's ``k``-th superpixel
    by the baseline of the whole batch as perturbed so far, and shorter curves
    are padded with zeros to the batch's longest. ``definitions="paper"``
    replaces a superpixel by a value of its own unperturbed image and takes each
    sample's area over its own curve (see the ``paper`` note of the declaration).
    The area is in steps (one per superpixel), as in Quantus.
    """
    if perturb_baseline not in IROF_BASELINES and (isinstance(perturb_baseline, bool)
                                                   or not isinstance(perturb_baseline, (int, float))):
        raise ConfigError(f"IROF perturb_baseline must be a number or one of {', '.join(IROF_BASELINES)} in the fast "
                          f"engine; got {perturb_baseline!r}")
    if batch.x.ndim != 4:
        raise UserError(f"IROF needs (N, C, H, W) images; got shape {batch.x.shape}")
    a = np.broadcast_to(a, batch.x.shape)
    segments = superpixels(batch, segmentation_method)
    orders = [_irof_order(a[i], segments[i], i) for i in range(len(batch))]
    if definitions == "quantus":
        return _irof_in_quantus_batches(batch, orders, segments, perturb_baseline, softmax, batch_size)
    x = batch.flat()
    scorer = Scorer(batch, softmax=softmax)
    for i, order in enumerate(orders):
        scorer.add(_irof_steps(order, x[i].reshape(batch.x.shape[1:]), segments[i], perturb_baseline),
                   np.full(len(order), batch.y[i]))
    scores = scorer.result()
    clean = batch.clean_scores(softmax=softmax)
    lengths = [len(order) for order in orders]
    bounds = np.cumsum([0, *lengths])
    return np.array([lengths[i] - np.trapezoid(scores[bounds[i]:bounds[i + 1]] / clean[i], dx=1)
                     for i in range(len(batch))], dtype=np.float64)


def _irof_order(a: np.ndarray, labels: np.ndarray, index: int) -> np.ndarray:
    """The superpixels of one sample (``labels`` ``(H, W)`` numbered ``0..count-1``), highest mean attribution
    first, ordered as Quantus orders them (``argsort`` of the negated float64 means)."""
    count = len(np.unique(labels))
    if count < 2:
        raise UserError(f"IROF found {count} superpixel in sample {index}; it needs at least two")
    relevance = np.zeros(count)
    for s in range(count):
        relevance[s] = np.mean(a[:, labels == s])
    return np.argsort(-relevance)


def _irof_steps(order: np.ndarray, image: np.ndarray, labels: np.ndarray, baseline: Any) -> np.ndarray:
    """The image after each step of IROF ``(count, features)``: step ``k`` has the first ``k + 1`` superpixels of
    ``order`` set to the baseline value of the unperturbed ``image``."""
    count = len(order)
    step_of = np.empty(count, dtype=np.int64)
    step_of[order] = np.arange(count)  # the step at which each superpixel is removed
    removed = step_of[labels.reshape(-1)][None, :] <= np.arange(count)[:, None]  # (count, H*W)
    steps = np.where(removed[:, None, :], np.float32(_image_baseline(baseline, image)),
                     image.reshape(len(image), -1)[None])
    return steps.reshape(count, -1)


def _irof_in_quantus_batches(batch: Batch, orders: list[np.ndarray], segments: np.ndarray, baseline: Any,
                             softmax: bool, batch_size: int) -> np.ndarray:
    """IROF as Quantus 0.6 computes it: per batch, step ``k`` replaces each sample's ``k``-th superpixel by the
    baseline of the *whole batch as perturbed so far*; curves are padded with zeros to the batch's longest.

    The perturbed images are built in NumPy exactly as Quantus builds them
    (same operations, same float32 values); all steps of all batches then go
    through the model together.
    """
    scorer = Scorer(batch, softmax=softmax)
    padded = []
    for part in chunks(len(batch), batch_size):
        x, labels = batch.x[part], segments[part]
        longest = max(len(order) for order in orders[part])
        index = np.array([[*order, *([-1] * (longest - len(order)))] for order in orders[part]])
        current = x.copy()
        for step in range(longest):
            mask = np.broadcast_to((labels == index[:, step][:, None, None])[:, None], x.shape)
            current = np.where(mask, _batch_baseline(baseline, current), current)
            scorer.add(current.reshape(len(x), -1), batch.y[part])
        padded.append((part, index >= 0))
    scores = scorer.result()
    clean = batch.clean_scores(softmax=softmax)
    result, start = np.empty(len(batch)), 0
    for part, valid in padded:
        b, longest = valid.shape
        curve = scores[start:start + b * longest].reshape(longest, b).T / clean[part][:, None] * valid
        result[part] = valid.sum(-1) - np.trapezoid(curve, dx=1, axis=1)
        start += b * longest
    return result


def _batch_baseline(value: Any, current: np.ndarray) -> Any:
    """Quantus' baseline value for the batch ``current``: a number as given, or the min/max/mean of every
    value of the batch (all axes)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.float32(value)
    axes = tuple(range(current.ndim))
    return {"black": current.min(axis=axes), "white": current.max(axis=axes), "mean": current.mean(axis=axes)}[value]


def _image_baseline(value: Any, image: np.ndarray) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return float({"black": image.min(), "white": image.max(), "mean": image.mean()}[value])


def superpixels(batch: Batch, method: str) -> np.ndarray:
    """Superpixel labels ``(N, H, W)`` of every sample, as Quantus computes them (cached per method)."""
    if method not in ("slic", "felzenszwalb"):
        raise ConfigError(f"IROF segmentation_method must be slic or felzenszwalb; got {method!r}")
    key = ("superpixels", method)
    if key not in batch.cache:
        batch.cache[key] = np.stack([get_superpixel_segments(img=np.moveaxis(image, 0, -1).astype("double"),
                                                             segmentation_method=method) for image in batch.x])
    return batch.cache[key]


# Declarations ------------------------------------------------------------------------------


def _subset_size(context: MetricContext) -> dict[str, Any]:
    """224 features (of 224x224x3) per random subset at most, a quarter of small inputs."""
    return {"subset_size": max(1, min(224, context.n_features // 4)), "nr_runs": 100,
            "perturb_baseline": removed_value(context)}


def _pixel_steps(context: MetricContext) -> dict[str, Any]:
    """At most 64 removal steps: the smallest divisor of the feature count that gets there."""
    n = context.n_features
    step = next(d for d in range(1, n + 1) if n % d == 0 and n // d <= 64)
    return {"features_in_step": step, "perturb_baseline": removed_value(context), "return_auc_per_sample": True}


def _regions(context: MetricContext) -> dict[str, Any]:
    """Patches as in the attribution masks (4x4 on 32x32), at most 100 removed, most relevant first."""
    height, width = context.sample_shape[-2:]
    patch = default_patch(height, width)
    patches = -(-height // patch) * -(-width // patch)
    return {"patch_size": patch, "regions_evaluation": min(100, patches), "order": "morf",
            "perturb_baseline": "black"}


def _region_curves(scores: Any) -> np.ndarray:
    """AOPC: the mean drop of the target score over the region-removal curve of each sample."""
    return np.asarray([np.mean(curve) for curve in scores], dtype=np.float64)


IMAGE_ONLY = ("image",)

register_metric(MetricSpec(
    "FaithfulnessCorrelation", "faithfulness", quantus.FaithfulnessCorrelation, faithfulness_correlation,
    defaults=_subset_size,
    note="subset_size defaults to min(224, features / 4); removed features are set to the sample's smallest value "
         "(tabular rows: 0)",
))
register_metric(MetricSpec(
    "IROF", "faithfulness", quantus.IROF, irof, IMAGE_ONLY, needs="it removes superpixels of a picture",
    defaults=lambda context: {"segmentation_method": "slic", "perturb_baseline": "mean"},
    note="SLIC superpixels (scikit-image defaults; one-channel images work); needs pictures",
    paper="a superpixel is replaced by a value of *its own* unperturbed image (`mean`: the image's mean) and each "
          "sample's area is taken over its own curve. Quantus 0.6 takes `mean` (and `black`, `white`) of the whole "
          "batch of `batch_size` samples as perturbed so far, and pads shorter curves with zeros up to the batch's "
          "longest, which adds half the last step's score; both make one sample's score depend on the samples "
          "evaluated with it.",
))
register_metric(MetricSpec(
    "PixelFlipping", "faithfulness", quantus.PixelFlipping, pixel_flipping, defaults=_pixel_steps,
    fixed=("return_auc_per_sample",),
    note="area under the target-probability curve; features_in_step defaults to at most 64 steps; removed features "
         "are set to the sample's smallest value (tabular rows: 0)",
))
register_metric(MetricSpec(
    "RegionPerturbation", "faithfulness", quantus.RegionPerturbation, region_perturbation, IMAGE_ONLY,
    defaults=_regions, needs="it removes square patches of a picture", direction_override="higher",
    per_sample=_region_curves,
    note="AOPC (mean drop of the target probability) with the most relevant patches removed first, so higher is "
         "better; Quantus 0.6 labels it 'lower', which fits its random/LeRF orders, not MoRF",
))
