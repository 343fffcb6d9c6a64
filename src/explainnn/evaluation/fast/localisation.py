"""Localisation, batched: PointingGame, AttributionLocalisation, TopKIntersection, RelevanceRankAccuracy,
RelevanceShareCosine. Every sample needs a ground-truth mask of the inputs' shape; an empty mask gives NaN.

Rankings break ties by position (the first feature wins), where Quantus leaves
them to NumPy's unstable sort.
"""

from __future__ import annotations

import numpy as np
import torch

from explainnn.errors import ConfigError
from explainnn.evaluation.fast.common import Batch
from explainnn.evaluation.metrics import RelevanceShareCosine


def _pair(batch: Batch, a: np.ndarray, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    if batch.masks is None or np.shape(batch.masks) != batch.x.shape:
        raise ConfigError(f"{metric} needs ground-truth masks of the inputs' shape {batch.x.shape}; got "
                          f"{None if batch.masks is None else np.shape(batch.masks)}")
    n = len(batch)
    a = np.array(np.broadcast_to(a, batch.x.shape).reshape(n, -1), dtype=np.float64)  # a writable copy
    masks = np.asarray(batch.masks).astype(bool).reshape(n, -1)
    return torch.as_tensor(a).to(batch.device), torch.as_tensor(masks).to(batch.device)


def _nan_where_empty(values: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    values = values.double()
    values[masks.sum(dim=1) == 0] = float("nan")
    return values.cpu().numpy()


def pointing_game(batch: Batch, a: np.ndarray, *, weighted: bool = False) -> np.ndarray:
    """1 when a feature of the largest attribution lies inside the mask, else 0 (Zhang et al. 2018).

    ``weighted`` scores a hit ``1 - mask size / input size``. An empty mask gives
    NaN (Quantus 0.6 writes NaN into a boolean array, which makes it a hit).
    """
    rel, masks = _pair(batch, a, "PointingGame")
    hit = (masks & (rel == rel.max(dim=1, keepdim=True).values)).any(dim=1).double()
    if weighted:
        hit = hit * (1 - masks.sum(dim=1) / masks.shape[1])
    return _nan_where_empty(hit, masks)


def attribution_localisation(batch: Batch, a: np.ndarray, *, weighted: bool = False, max_size: float = 1.0,
                             positive_attributions: bool = False) -> np.ndarray:
    """Share of the attribution inside the mask (Kohlbrenner et al. 2020); NaN above 1 (negative attributions).

    ``weighted`` multiplies by the mask's share of the input, as the paper
    does; Quantus 0.6 divides the mask size by ``x_batch[2:].size``, the size
    of the batch without its first two samples. ``max_size`` is accepted for
    Quantus' signature (there it only warns).
    """
    rel, masks = _pair(batch, a, "AttributionLocalisation")
    if positive_attributions:
        rel = rel.clamp(min=0)
    inside = (rel * masks).sum(dim=1) / (rel.sum(dim=1) + 1e-9)
    inside[inside > 1] = float("nan")
    if weighted:
        inside = inside * masks.sum(dim=1) / masks.shape[1]
    return _nan_where_empty(inside, masks)


def _ranking(a: torch.Tensor) -> torch.Tensor:
    return torch.argsort(a, dim=1, descending=True, stable=True)


def top_k_intersection(batch: Batch, a: np.ndarray, *, k: int = 1000, concept_influence: bool = False) -> np.ndarray:
    """Share of the ``k`` most relevant features that lie inside the mask (Theiner et al. 2021)."""
    rel, masks = _pair(batch, a, "TopKIntersection")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= rel.shape[1]:
        raise ConfigError(f"TopKIntersection k must be an integer in 1..{rel.shape[1]} (the input's features); got {k!r}")
    score = masks.gather(1, _ranking(rel)[:, :k]).double().mean(dim=1)
    if concept_influence:
        score = score * rel.shape[1] / masks.sum(dim=1)
    return _nan_where_empty(score, masks)


def relevance_rank_accuracy(batch: Batch, a: np.ndarray) -> np.ndarray:
    """Share of the mask found among the ``|mask|`` most relevant features (Arras et al. 2022)."""
    rel, masks = _pair(batch, a, "RelevanceRankAccuracy")
    sizes = masks.sum(dim=1)
    ranked = masks.gather(1, _ranking(rel))
    top = torch.arange(rel.shape[1], device=rel.device)[None, :] < sizes[:, None]
    return _nan_where_empty((ranked & top).sum(dim=1) / sizes.clamp(min=1), masks)


def relevance_share_cosine(batch: Batch, a: np.ndarray, *, n_blocks: int = 3) -> np.ndarray:
    """:class:`~explainnn.evaluation.metrics.RelevanceShareCosine` (already vectorised over samples)."""
    metric = RelevanceShareCosine(n_blocks=n_blocks)
    if batch.masks is None:
        raise ConfigError("RelevanceShareCosine needs ground-truth masks of the inputs")
    metric.custom_preprocess(x_batch=batch.x, s_batch=batch.masks)
    return np.asarray(metric.evaluate_batch(a_batch=np.broadcast_to(a, batch.x.shape), s_batch=batch.masks))
