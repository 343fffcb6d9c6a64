"""The Quantus metrics explainnn evaluates with: family, direction, modalities, defaults.

Every metric runs with the same settings for every attribution method, so a
method cannot look better because it was scored differently:

* ``normalise=True`` for every metric, with :func:`normalise_per_sample` (each
  sample's attribution divided by its own largest absolute value). Quantus'
  default divides by the largest value of the whole *batch*, which makes one
  sample's score depend on the others; and robustness scores of unnormalised
  attributions reward a method merely for small values.
* ``abs`` is Quantus' default for the metric (``True`` for Sparseness,
  Complexity, AttributionLocalisation and MPRT, ``False`` otherwise).
* ``softmax`` is Quantus' default for the metric.

The defaults that Quantus sizes for 224x224 ImageNet pictures are scaled to the
input (see each entry's ``note``), and the robustness metrics draw 10 instead of
200 perturbations, which keeps LIME and KernelSHAP affordable on a CPU (raise
``nr_samples`` in ``evaluation.options`` for a final run). A metric that cannot
apply to the inputs (an image-only metric on sequences, a localisation metric
without ground-truth masks) is skipped with the reason returned by
:meth:`MetricSpec.skip_reason`; :func:`valid_metrics` lists those that apply.

Tabular rows ``(N, F)`` (Quantus receives them as one-channel rows ``(N, 1, F)``)
are scored by every metric but IROF and RegionPerturbation, which remove
superpixels and square patches of a picture. Features of a row have no order
and no shared scale, so two defaults differ from the other modalities: removed
features are set to 0 (``perturb_baseline: 0.0``, the mean of standardised
features and the reference of the tabular attribution methods) instead of the
row's smallest value, and RandomLogit compares the two maps with one SSIM
window over all features (:class:`WholeMapSSIM`), which does not depend on the
order of the columns.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import quantus
from quantus.helpers.enums import DataType, EvaluationCategory, ModelType, ScoreDirection
from quantus.metrics.base import Metric

from explainnn.attributions.masks import default_patch
from explainnn.errors import ConfigError

FAMILIES = ("faithfulness", "robustness", "complexity", "randomisation", "localisation")
MODALITIES = ("image", "sequence", "tokens", "tabular")
DIRECTIONS = ("higher", "lower")
CALL_OPTIONS = ("softmax", "batch_size")
"""Options of a metric's call (the rest of ``evaluation.options.<metric>`` go to its constructor)."""
OWNED_OPTIONS = ("normalise_func", "normalise_func_kwargs", "return_aggregate", "aggregate_func",
                 "default_plot_func", "disable_warnings", "display_progressbar")
"""Constructor arguments explainnn sets itself: per-sample values, its own progress bar."""


def normalise_per_sample(a: np.ndarray, normalise_axes: Any = None) -> np.ndarray:
    """Divide each sample of a batch ``(N, ...)`` by its largest absolute value (all-zero samples stay zero).

    ``normalise_axes`` is accepted for Quantus' calling convention and ignored:
    the axes are always every axis but the first.
    """
    a = np.asarray(a)
    scale = np.abs(a).reshape(len(a), -1).max(axis=1) if a.size else np.zeros(len(a))
    scale = np.where(scale > 0, scale, 1.0).reshape((len(a),) + (1,) * (a.ndim - 1))
    return a / scale


@dataclass(frozen=True)
class MetricContext:
    """What a metric's defaults and applicability depend on.

    ``sample_shape`` is one sample as Quantus receives it (channel first):
    ``(C, H, W)`` images, ``(1, T)`` one-feature signals, ``(1, T, F)``
    sequences, ``(1, L, E)`` token embeddings and ``(1, F)`` tabular rows.
    """

    modality: str
    sample_shape: tuple[int, ...]
    n_classes: int
    seed: int = 0
    dataset: str = ""
    has_masks: bool = False

    @property
    def n_features(self) -> int:
        return int(np.prod(self.sample_shape))

    @property
    def describe(self) -> str:
        """The inputs in words (``tabular rows``, ``images``, ...)."""
        return _describe(self.modality)


Defaults = Callable[[MetricContext], dict[str, Any]]


def _none(context: MetricContext) -> dict[str, Any]:
    return {}


def _as_list(scores: Any) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64)


@dataclass(frozen=True)
class MetricSpec:
    """One evaluable metric: its Quantus class, what it measures and how to set it up."""

    name: str
    family: str
    cls: type[Metric]
    modalities: tuple[str, ...] = MODALITIES
    defaults: Defaults = _none
    needs_masks: bool = False
    direction_override: str | None = None
    per_sample: Callable[[Any], np.ndarray] = _as_list
    note: str = ""
    needs: str = ""
    """What the metric needs of its inputs beyond :attr:`modalities` (said when it is skipped for a modality)."""
    fixed: tuple[str, ...] = ()
    """Options whose default makes the metric return one value per sample; they cannot be changed."""
    fast_options: tuple[str, ...] = ()
    """Options only the fast engine takes (Quantus' metric does not know them; see :meth:`create`)."""

    @property
    def direction(self) -> str:
        """``higher`` or ``lower``: which scores are better."""
        if self.direction_override:
            return self.direction_override
        return "higher" if self.cls.score_direction == ScoreDirection.HIGHER else "lower"

    @property
    def explains_again(self) -> bool:
        """Whether the metric calls the attribution method again (on perturbed inputs or models)."""
        return self.family in ("robustness", "randomisation")

    def skip_reason(self, context: MetricContext) -> str | None:
        """Why the metric cannot apply to ``context`` (None when it can)."""
        if context.modality not in self.modalities:
            kinds = " and ".join(self.modalities)
            why = f" ({self.needs})" if self.needs else ""
            return f"{self.name} is defined for {kinds} inputs only{why}; these are {_describe(context.modality)}"
        if self.needs_masks and not context.has_masks:
            return (f"{self.name} needs ground-truth masks of the relevant input region; dataset "
                    f"'{context.dataset}' has none (mnist_maj does)")
        if self.name == "RandomLogit" and context.n_classes < 2:
            return "RandomLogit needs at least two classes to pick an off-target class"
        return None

    def valid_options(self) -> list[str]:
        """Keys ``evaluation.options.<metric>`` may set."""
        parameters = inspect.signature(self.cls.__init__).parameters
        names = [p for p in parameters if p not in ("self", "kwargs", "args", *OWNED_OPTIONS, *self.fixed)]
        return sorted({*names, *CALL_OPTIONS, *self.fast_options})

    def settings(self, context: MetricContext, overrides: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Constructor and call keyword arguments: common settings, defaults for ``context``, then ``overrides``."""
        overrides = dict(overrides or {})
        valid = self.valid_options()
        for key in overrides:
            if key in OWNED_OPTIONS or key in self.fixed:
                raise ConfigError(f"evaluation.options.{self.name}.{key} is set by explainnn (one value per sample, "
                                  f"explainnn's normalisation and progress bar) and cannot be changed; "
                                  f"valid options: {', '.join(valid)}")
            if key not in valid:
                raise ConfigError(f"unknown option '{key}' for metric {self.name}; valid options: {', '.join(valid)}")
        init = {**_common(self.cls), **self.defaults(context), **overrides}
        calls = {key: init.pop(key) for key in CALL_OPTIONS if key in init}
        return init, calls

    def create(self, init: dict[str, Any]) -> Metric:
        """The Quantus metric object (quiet, per-sample results, explainnn's normalisation).

        Fast-engine options are checked against what Quantus does: ``IROF``'s
        ``quantus_batches`` may be left out or ``true`` (Quantus' own rule), never ``false``.
        """
        init = dict(init)
        for key in self.fast_options:
            if key in init and init.pop(key) is False:
                raise ConfigError(f"evaluation.options.{self.name}.{key}: false is the fast engine's rule; "
                                  f"Quantus always computes {self.name} batch by batch (use evaluation.engine: fast)")
        return self.cls(**init, normalise_func=normalise_per_sample, return_aggregate=False,
                        disable_warnings=True, display_progressbar=False)

    def scores(self, raw: Any, n: int) -> np.ndarray:
        """Quantus' return value as ``n`` per-sample floats (NaN where the metric is undefined)."""
        values = self.per_sample(raw)
        if values.shape != (n,):
            raise RuntimeError(f"{self.name} returned scores of shape {values.shape} for {n} samples")
        return values


def _describe(modality: str) -> str:
    return {"image": "images", "sequence": "sequences", "tokens": "token embeddings",
            "tabular": "tabular rows"}.get(modality, modality)


def _common(cls: type[Metric]) -> dict[str, Any]:
    parameters = inspect.signature(cls.__init__).parameters
    common = {"normalise": True}
    if "abs" in parameters:
        common["abs"] = parameters["abs"].default
    return common


# Defaults scaled to the input ---------------------------------------------------------


def _removed(context: MetricContext) -> Any:
    """The value a removed feature takes: the sample's smallest (``black``), or 0 in tabular rows (whose features
    have no common scale; 0 is the mean of standardised features and the tabular attributions' reference)."""
    return 0.0 if context.modality == "tabular" else "black"


def _subset_size(context: MetricContext) -> dict[str, Any]:
    """224 features (of 224x224x3) per random subset at most, a quarter of small inputs."""
    return {"subset_size": max(1, min(224, context.n_features // 4)), "nr_runs": 100,
            "perturb_baseline": _removed(context)}


def _pixel_steps(context: MetricContext) -> dict[str, Any]:
    """At most 64 removal steps: the smallest divisor of the feature count that gets there."""
    n = context.n_features
    step = next(d for d in range(1, n + 1) if n % d == 0 and n // d <= 64)
    return {"features_in_step": step, "perturb_baseline": _removed(context), "return_auc_per_sample": True}


def _regions(context: MetricContext) -> dict[str, Any]:
    """Patches as in the attribution masks (4x4 on 32x32), at most 100 removed, most relevant first."""
    height, width = context.sample_shape[-2:]
    patch = default_patch(height, width)
    patches = -(-height // patch) * -(-width // patch)
    return {"patch_size": patch, "regions_evaluation": min(100, patches), "order": "morf",
            "perturb_baseline": "black"}


def _robustness(context: MetricContext) -> dict[str, Any]:
    return {"nr_samples": 10}


def _lipschitz(context: MetricContext) -> dict[str, Any]:
    return {"nr_samples": 10, "perturb_std": 0.1, "perturb_mean": 0.0}


def _random_logit(context: MetricContext) -> dict[str, Any]:
    defaults: dict[str, Any] = {"num_classes": context.n_classes, "seed": context.seed}
    if context.modality == "tabular":
        defaults["similarity_func"] = WholeMapSSIM()
    return defaults


class WholeMapSSIM:
    """SSIM of two attribution maps with one window over all their features: Quantus' ``similarity_func``.

    The product of the luminance, contrast and structure terms of SSIM (K1 =
    0.01, K2 = 0.03, sample covariance, ``data_range`` the range of the pair, as
    Quantus' ``ssim``) computed over the whole map at once; equal to scikit-image's
    ``structural_similarity`` with ``win_size`` the number of features. It does
    not depend on the order of the features, so it suits tabular rows, whose
    columns have no neighbours (a sliding window would compare arbitrary groups
    of columns). Called as Quantus calls a similarity function: ``(a, b)`` two
    maps, or ``(a, b, batched=True)`` two ``(M, ...)`` batches of them.
    """

    def __call__(self, a: np.ndarray, b: np.ndarray, batched: bool = False, **kwargs: Any) -> Any:
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if not batched:
            return float(self(a64[None], b64[None], batched=True)[0])
        a64, b64 = a64.reshape(len(a64), -1), b64.reshape(len(b64), -1)
        if a64.shape[1] < 2:
            raise ConfigError(f"RandomLogit's whole-map SSIM needs at least 2 features; got {a64.shape[1]}")
        both = np.concatenate([a64, b64], axis=1)
        data_range = np.abs(both.max(axis=1) - both.min(axis=1))
        ua, ub = a64.mean(axis=1), b64.mean(axis=1)
        va, vb = a64.var(axis=1, ddof=1), b64.var(axis=1, ddof=1)
        cov = ((a64 - ua[:, None]) * (b64 - ub[:, None])).sum(axis=1) / (a64.shape[1] - 1)
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((2 * ua * ub + c1) * (2 * cov + c2)) / ((ua**2 + ub**2 + c1) * (va + vb + c2))

    def __repr__(self) -> str:
        return "whole-map SSIM (one window over all features)"


def _seeded(context: MetricContext) -> dict[str, Any]:
    return {"seed": context.seed}


def _mprt(context: MetricContext) -> dict[str, Any]:
    return {"seed": context.seed, "return_last_correlation": True}


def _top_k(context: MetricContext) -> dict[str, Any]:
    """The top 10% of features (Quantus' 1000 is 2% of a 224x224 picture but all of a small one)."""
    return {"k": max(1, context.n_features // 10)}


def _region_curves(scores: Any) -> np.ndarray:
    """AOPC: the mean drop of the target score over the region-removal curve of each sample."""
    return np.asarray([np.mean(curve) for curve in scores], dtype=np.float64)


# The relevance share of known blocks ---------------------------------------------------


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
                         aggregate_func=aggregate_func, default_plot_func=default_plot_func,
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


# The registry --------------------------------------------------------------------------

IMAGE_ONLY = ("image",)

METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("FaithfulnessCorrelation", "faithfulness", quantus.FaithfulnessCorrelation, defaults=_subset_size,
                   note="subset_size defaults to min(224, features / 4); removed features are set to the "
                        "sample's smallest value (tabular rows: 0)"),
        MetricSpec("IROF", "faithfulness", quantus.IROF, IMAGE_ONLY, needs="it removes superpixels of a picture",
                   defaults=lambda c: {"segmentation_method": "slic", "perturb_baseline": "mean"},
                   fast_options=("quantus_batches",),
                   note="SLIC superpixels (scikit-image defaults; one-channel images work); needs pictures; "
                        "the fast engine follows the paper unless quantus_batches: true"),
        MetricSpec("PixelFlipping", "faithfulness", quantus.PixelFlipping, defaults=_pixel_steps,
                   fixed=("return_auc_per_sample",),
                   note="area under the target-probability curve; features_in_step defaults to at most 64 steps; "
                        "removed features are set to the sample's smallest value (tabular rows: 0)"),
        MetricSpec("RegionPerturbation", "faithfulness", quantus.RegionPerturbation, IMAGE_ONLY, defaults=_regions,
                   needs="it removes square patches of a picture",
                   direction_override="higher", per_sample=_region_curves,
                   note="AOPC (mean drop of the target probability) with the most relevant patches removed "
                        "first, so higher is better; Quantus 0.6 labels it 'lower', which fits its random/LeRF "
                        "orders, not MoRF"),
        MetricSpec("LocalLipschitzEstimate", "robustness", quantus.LocalLipschitzEstimate, defaults=_lipschitz,
                   note="Gaussian perturbations (std 0.1); nr_samples defaults to 10 (Quantus: 200)"),
        MetricSpec("MaxSensitivity", "robustness", quantus.MaxSensitivity, defaults=_robustness,
                   note="uniform perturbations (radius 0.2); nr_samples defaults to 10 (Quantus: 200)"),
        MetricSpec("AvgSensitivity", "robustness", quantus.AvgSensitivity, defaults=_robustness,
                   note="uniform perturbations (radius 0.2); nr_samples defaults to 10 (Quantus: 200)"),
        MetricSpec("Sparseness", "complexity", quantus.Sparseness, note="Gini index of |attribution|"),
        MetricSpec("Complexity", "complexity", quantus.Complexity, note="entropy of the |attribution| shares"),
        MetricSpec("RandomLogit", "randomisation", quantus.RandomLogit, defaults=_random_logit,
                   note="SSIM between the explanations of the target and of a random other class (tabular rows: "
                        "one SSIM window over all features)"),
        MetricSpec("EfficientMPRT", "randomisation", quantus.EfficientMPRT, defaults=_seeded,
                   note="relative rise of explanation entropy when every layer of a copy of the model is "
                        "re-initialised"),
        MetricSpec("MPRT", "randomisation", quantus.MPRT, defaults=_mprt,
                   fixed=("return_last_correlation", "return_average_correlation", "return_sample_correlation"),
                   note="Spearman correlation with the explanation of the fully re-initialised copy"),
        MetricSpec("PointingGame", "localisation", quantus.PointingGame, needs_masks=True),
        MetricSpec("AttributionLocalisation", "localisation", quantus.AttributionLocalisation, needs_masks=True),
        MetricSpec("TopKIntersection", "localisation", quantus.TopKIntersection, defaults=_top_k,
                   needs_masks=True, note="k defaults to 10% of the features"),
        MetricSpec("RelevanceRankAccuracy", "localisation", quantus.RelevanceRankAccuracy, needs_masks=True),
        MetricSpec("RelevanceShareCosine", "localisation", RelevanceShareCosine, needs_masks=True,
                   note="cosine of the mask and the positive relevance per block (n_blocks, default 3, along "
                        "the last axis)"),
    )
}
"""Metric name (the Quantus class name) -> :class:`MetricSpec`, in report order."""

LOCALISATION_METRICS = [name for name, spec in METRICS.items() if spec.family == "localisation"]


def valid_metrics(context: MetricContext) -> list[str]:
    """The registered metrics that apply to ``context`` (:meth:`MetricSpec.skip_reason` is None), in report order."""
    return [name for name, spec in METRICS.items() if spec.skip_reason(context) is None]


def available_metrics(family: str | None = None) -> list[str]:
    """Registered metric names in report order, optionally of one family."""
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"unknown metric family '{family}'; valid families: {', '.join(FAMILIES)}")
    return [name for name, spec in METRICS.items() if family is None or spec.family == family]


def metric_spec(name: str) -> MetricSpec:
    """The :class:`MetricSpec` of a registered metric."""
    if name not in METRICS:
        import difflib

        close = difflib.get_close_matches(name, list(METRICS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown metric '{name}'{hint}; valid metrics: {', '.join(METRICS)}")
    return METRICS[name]


def directions(names: list[str] | None = None) -> dict[str, str]:
    """Metric name -> ``higher`` or ``lower`` (is better)."""
    return {name: metric_spec(name).direction for name in (names or list(METRICS))}
