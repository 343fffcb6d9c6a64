"""Localisation: PointingGame, AttributionLocalisation, TopKIntersection, RelevanceRankAccuracy,
RelevanceShareCosine, declared and batched. Every sample needs a ground-truth mask of the inputs' shape; an
empty mask gives NaN (Quantus 0.6's PointingGame: a hit).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import quantus
import torch
from quantus.helpers.enums import DataType, EvaluationCategory, ModelType, ScoreDirection
from quantus.metrics.base import Metric

from explainnn.errors import ConfigError
from explainnn.evaluation.fast.common import Batch, chunks
from explainnn.evaluation.metrics.spec import MetricContext, MetricSpec, register_metric


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


def pointing_game(batch: Batch, a: np.ndarray, *, definitions: str = "quantus", weighted: bool = False) -> np.ndarray:
    """1 when a feature of the largest attribution lies inside the mask, else 0 (Zhang et al. 2018).

    ``weighted`` scores a hit ``1 - mask size / input size``. Under
    ``definitions="paper"`` an empty mask gives NaN; under ``"quantus"`` Quantus
    0.6's values: its hits are booleans, so an empty mask (NaN written into
    them) is a hit and a weighted hit stays 1 (0 where the mask is the whole input).
    """
    rel, masks = _pair(batch, a, "PointingGame")
    hit = (masks & (rel == rel.max(dim=1, keepdim=True).values)).any(dim=1)
    if definitions == "quantus":
        if weighted:
            hit = hit & (masks.sum(dim=1) < masks.shape[1])
        return (hit | (masks.sum(dim=1) == 0)).double().cpu().numpy()
    score = hit.double()
    if weighted:
        score = score * (1 - masks.sum(dim=1) / masks.shape[1])
    return _nan_where_empty(score, masks)


def attribution_localisation(batch: Batch, a: np.ndarray, *, definitions: str = "quantus", weighted: bool = False,
                             max_size: float = 1.0, positive_attributions: bool = False,
                             batch_size: int = 64) -> np.ndarray:
    """Share of the attribution inside the mask (Kohlbrenner et al. 2020); NaN above 1 (negative attributions).

    ``weighted`` multiplies by the mask's share of the input under
    ``definitions="paper"``; under ``"quantus"`` by the mask's size over
    Quantus 0.6's ``x_batch[2:].size``, the size of its batch of ``batch_size``
    samples without the first two. ``max_size`` is accepted for Quantus'
    signature (there it only warns).
    """
    rel, masks = _pair(batch, a, "AttributionLocalisation")
    if positive_attributions:
        rel = rel.clamp(min=0)
    inside = (rel * masks).sum(dim=1) / (rel.sum(dim=1) + 1e-9)
    inside[inside > 1] = float("nan")
    if weighted:
        sizes = masks.sum(dim=1).double()
        if definitions == "quantus":
            data = torch.empty_like(sizes)
            for part in chunks(len(batch), batch_size):
                data[part] = max(0, part.stop - part.start - 2) * masks.shape[1]
            inside = inside * sizes / data
        else:
            inside = inside * sizes / masks.shape[1]
    return _nan_where_empty(inside, masks)


def _ranking(batch: Batch, a: np.ndarray, rel: torch.Tensor, definitions: str) -> torch.Tensor:
    """Features from the most to the least relevant. Ties: by position (``paper``), or as NumPy's default sort of
    the negated attributions orders them (``quantus``; the order Quantus 0.6 gets)."""
    if definitions == "quantus":
        order = np.argsort(-np.broadcast_to(a, batch.x.shape).reshape(len(batch), -1), axis=-1)
        return torch.as_tensor(order).to(rel.device)
    return torch.argsort(rel, dim=1, descending=True, stable=True)


def top_k_intersection(batch: Batch, a: np.ndarray, *, definitions: str = "quantus", k: int = 1000,
                       concept_influence: bool = False) -> np.ndarray:
    """Share of the ``k`` most relevant features that lie inside the mask (Theiner et al. 2021)."""
    rel, masks = _pair(batch, a, "TopKIntersection")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= rel.shape[1]:
        raise ConfigError(f"TopKIntersection k must be an integer in 1..{rel.shape[1]} (the input's features); got {k!r}")
    score = masks.gather(1, _ranking(batch, a, rel, definitions)[:, :k]).double().mean(dim=1)
    if concept_influence:
        score = score * rel.shape[1] / masks.sum(dim=1)
    return _nan_where_empty(score, masks)


def relevance_rank_accuracy(batch: Batch, a: np.ndarray, *, definitions: str = "quantus") -> np.ndarray:
    """Share of the mask found among the ``|mask|`` most relevant features (Arras et al. 2022)."""
    rel, masks = _pair(batch, a, "RelevanceRankAccuracy")
    sizes = masks.sum(dim=1)
    ranked = masks.gather(1, _ranking(batch, a, rel, definitions))
    top = torch.arange(rel.shape[1], device=rel.device)[None, :] < sizes[:, None]
    return _nan_where_empty((ranked & top).sum(dim=1) / sizes.clamp(min=1), masks)


def relevance_share_cosine(batch: Batch, a: np.ndarray, *, n_blocks: int = 3) -> np.ndarray:
    """:class:`RelevanceShareCosine` (already vectorised over samples)."""
    metric = RelevanceShareCosine(n_blocks=n_blocks)
    if batch.masks is None:
        raise ConfigError("RelevanceShareCosine needs ground-truth masks of the inputs")
    metric.custom_preprocess(x_batch=batch.x, s_batch=batch.masks)
    return np.asarray(metric.evaluate_batch(a_batch=np.broadcast_to(a, batch.x.shape), s_batch=batch.masks))


class RelevanceShareCosine(Metric[list[float]]):
    """Cosine similarity between the ground-truth mask and the relevance share of each input block.

    The input is cut into ``n_blocks`` equal blocks along its last axis (the
    three 28x28 digits of ``mnist_maj``). Each block gets the positive relevance
    inside it, and the mask the fraction of its elements marked relevant; the
    score is the cosine of the two block vectors: 1 when relevance falls on the
    relevant blocks in proportion to them, 0 when it falls only elsewhere. This is
    the block-level localisation measure that the RNN-explainability thesis this
    project builds on used for its majority-of-digits task.
    """

    name = "Relevance Share Cosine"
    data_applicability = {DataType.IMAGE, DataType.TIMESERIES, DataType.TABULAR}
    model_applicability = {ModelType.TORCH}
    score_direction = ScoreDirection.HIGHER
    evaluation_category = EvaluationCategory.LOCALISATION

    def __init__(
        self,
        n_blocks: int = 3,
        abs: bool = False,
        normalise: bool = True,
        normalise_func: Callable | None = None,
        normalise_func_kwargs: dict | None = None,
        return_aggregate: bool = False,
        aggregate_func: Callable | None = None,
        default_plot_func: Callable | None = None,
        disable_warnings: bool = True,
        display_progressbar: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=np.mean if aggregate_func is None else aggregate_func,
                         default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 2:
            raise ConfigError(f"RelevanceShareCosine n_blocks must be an integer >= 2; got {n_blocks!r}")
        self.n_blocks = n_blocks

    def __call__(self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray | None = None,
                 s_batch: np.ndarray | None = None, channel_first: bool | None = True,
                 explain_func: Callable | None = None, explain_func_kwargs: dict | None = None,
                 model_predict_kwargs: dict | None = None, softmax: bool | None = False,
                 device: str | None = None, batch_size: int = 64, **kwargs: Any) -> list[float]:
        return super().__call__(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, s_batch=s_batch,
                                custom_batch=None, channel_first=channel_first, explain_func=explain_func,
                                explain_func_kwargs=explain_func_kwargs, model_predict_kwargs=model_predict_kwargs,
                                softmax=softmax, device=device, batch_size=batch_size, **kwargs)

    def custom_preprocess(self, x_batch: np.ndarray, s_batch: np.ndarray | None, **kwargs: Any) -> None:
        if s_batch is None or np.shape(s_batch) != np.shape(x_batch):
            raise ConfigError(f"RelevanceShareCosine needs masks of the inputs' shape {np.shape(x_batch)}; got "
                              f"{None if s_batch is None else np.shape(s_batch)}")
        if np.shape(x_batch)[-1] % self.n_blocks:
            raise ConfigError(f"RelevanceShareCosine cannot cut a last axis of {np.shape(x_batch)[-1]} into "
                              f"{self.n_blocks} equal blocks; set evaluation.options.RelevanceShareCosine.n_blocks")

    def evaluate_batch(self, a_batch: np.ndarray, s_batch: np.ndarray, **kwargs: Any) -> list[float]:
        n = len(a_batch)
        blocks = np.broadcast_to(a_batch, s_batch.shape).reshape(*s_batch.shape[:-1], self.n_blocks, -1)
        relevance = np.clip(blocks, 0, None).reshape(n, -1, self.n_blocks, blocks.shape[-1]).sum(axis=(1, 3))
        masks = s_batch.astype(np.float64).reshape(*s_batch.shape[:-1], self.n_blocks, -1)
        share = masks.reshape(n, -1, self.n_blocks, masks.shape[-1]).mean(axis=(1, 3))
        norms = np.linalg.norm(relevance, axis=1) * np.linalg.norm(share, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine = (relevance * share).sum(axis=1) / norms
        cosine[norms == 0] = np.nan
        return cosine.tolist()


# Declarations ------------------------------------------------------------------------------


def _top_k(context: MetricContext) -> dict[str, Any]:
    """The top 10% of features (Quantus' 1000 is 2% of a 224x224 picture but all of a small one)."""
    return {"k": max(1, context.n_features // 10)}


TIES_PAPER = (
    "ties between equal attributions are broken by position (the first feature ranks first), which the paper leaves open; Quantus 0.6 ranks with NumPy's default sort, whose order among ties depends on the sort algorithm. Ties are common where many attributions are 0 (or equal after `abs`)."
)

register_metric(MetricSpec(
    "PointingGame", "localisation", quantus.PointingGame, pointing_game, needs_masks=True,
    paper="a sample with an empty mask scores NaN (no region to point at) and a weighted hit scores "
          "`1 - mask size / input size`, as in the paper. Quantus 0.6 keeps its hits in a boolean array, so the NaN "
          "it writes for an empty mask becomes a hit and a weighted hit stays 1 (0 only where the mask covers "
          "the whole input).",
))
register_metric(MetricSpec(
    "AttributionLocalisation", "localisation", quantus.AttributionLocalisation, attribution_localisation,
    needs_masks=True,
    paper="with `weighted: true` the share inside the mask is multiplied by the mask's share of the input, as in "
          "the paper. Quantus 0.6 divides the mask's size by `x_batch[2:].size`, the size of its batch without the "
          "first two samples, so the score depends on `batch_size` and on how many samples the last batch holds. "
          "Unweighted (the default), both definitions agree.",
))
register_metric(MetricSpec(
    "TopKIntersection", "localisation", quantus.TopKIntersection, top_k_intersection, defaults=_top_k,
    needs_masks=True, note="k defaults to 10% of the features", paper=TIES_PAPER,
))
register_metric(MetricSpec(
    "RelevanceRankAccuracy", "localisation", quantus.RelevanceRankAccuracy, relevance_rank_accuracy,
    needs_masks=True, paper=TIES_PAPER,
))
register_metric(MetricSpec(
    "RelevanceShareCosine", "localisation", RelevanceShareCosine, relevance_share_cosine, needs_masks=True,
    note="cosine of the mask and the positive relevance per block (n_blocks, default 3, along the last axis)",
))
