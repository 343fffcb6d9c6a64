"""The batched evaluation engine: Quantus' metrics re-implemented over whole batches (``evaluation.engine: fast``).

Quantus loops over its batches in NumPy and asks the attribution method for
one batch of perturbed copies per perturbation step. This engine draws every
perturbation first, sends all perturbed copies of all samples through the model
together (on CPU or CUDA) and explains perturbed copies a batch at a time. It
takes the same options as the Quantus metric (``evaluation.options``) and, with
the same seed, draws the same random numbers in the same order, so its scores
equal Quantus' (``tests/test_fast_metrics.py`` checks each metric). Where
Quantus 0.6 departs from a metric's paper the engine follows the paper and its
docstring says so: IROF (per-image baseline and curve), Max/AvgSensitivity
(no division by ``||a||``), RandomLogit (2-D SSIM of the maps), PointingGame
and AttributionLocalisation (empty masks, the weighted ratio).

One module per metric family: :mod:`.faithfulness`, :mod:`.robustness`,
:mod:`.complexity`, :mod:`.randomisation`, :mod:`.localisation`; what they
share is in :mod:`.common`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from explainnn.evaluation.fast.common import Batch, Explain, prepare, reject_options
from explainnn.evaluation.fast.complexity import complexity, sparseness
from explainnn.evaluation.fast.faithfulness import faithfulness_correlation, irof, pixel_flipping, region_perturbation
from explainnn.evaluation.fast.localisation import (
    attribution_localisation,
    pointing_game,
    relevance_rank_accuracy,
    relevance_share_cosine,
    top_k_intersection,
)
from explainnn.evaluation.fast.randomisation import map_ssim, random_logit, ssim
from explainnn.evaluation.fast.robustness import avg_sensitivity, local_lipschitz_estimate, max_sensitivity
from explainnn.evaluation.metrics import MetricSpec

FAST_METRICS: dict[str, Callable[..., Any]] = {
    "FaithfulnessCorrelation": faithfulness_correlation,
    "IROF": irof,
    "PixelFlipping": pixel_flipping,
    "RegionPerturbation": region_perturbation,
    "LocalLipschitzEstimate": local_lipschitz_estimate,
    "MaxSensitivity": max_sensitivity,
    "AvgSensitivity": avg_sensitivity,
    "Sparseness": sparseness,
    "Complexity": complexity,
    "RandomLogit": random_logit,
    "PointingGame": pointing_game,
    "AttributionLocalisation": attribution_localisation,
    "TopKIntersection": top_k_intersection,
    "RelevanceRankAccuracy": relevance_rank_accuracy,
    "RelevanceShareCosine": relevance_share_cosine,
}
"""Metric name -> batched implementation. Metrics not listed (MPRT, EfficientMPRT) run with Quantus."""

PROVIDED = ("rng", "explain", "normalise", "abs")
"""Keyword arguments the engine supplies itself (not metric options)."""


def run_metric(spec: MetricSpec, init: dict[str, Any], calls: dict[str, Any], batch: Batch, a_batch: np.ndarray,
               explain: Explain, seed: int) -> Any:
    """Score ``a_batch`` with the batched ``spec`` metric; returns what the Quantus metric would return.

    ``init`` and ``calls`` are the metric's constructor and call options
    (:meth:`MetricSpec.settings`); ``explain`` re-explains perturbed inputs;
    ``seed`` seeds the random draws (as ``np.random.seed(seed)`` seeds Quantus').
    """
    function = FAST_METRICS[spec.name]
    options = {**init, **calls}
    normalise, absolute = bool(options.pop("normalise", True)), bool(options.pop("abs", False))
    accepted = [name for name in inspect.signature(function).parameters if name not in ("batch", "a")]
    if "batch_size" not in accepted:
        options.pop("batch_size", None)  # Quantus' batches only matter to the order of random draws
    reject_options(spec.name, options, tuple(name for name in accepted if name not in PROVIDED))
    provided = {"rng": np.random.RandomState(seed % 2**32), "explain": explain, "normalise": normalise,
                "abs": absolute}
    kwargs = {**{name: provided[name] for name in PROVIDED if name in accepted},
              **{key: value for key, value in options.items() if key in accepted}}
    a = prepare(a_batch, batch.x.shape, normalise=normalise, abs=absolute)
    return function(batch, a, **kwargs)


__all__ = ["FAST_METRICS", "Batch", "map_ssim", "run_metric", "ssim"]
