"""The batched evaluation engine (``evaluation.engine: fast``): a metric's ``fast`` function over whole batches.

Quantus loops over its batches in NumPy and asks the attribution method for
one batch of perturbed copies per perturbation step. This engine draws every
perturbation first, sends all perturbed copies of all samples through the model
together (on CPU or CUDA) and explains perturbed copies a batch at a time. It
takes the same options as the Quantus metric (``evaluation.options``) and, with
the same seed, draws the same random numbers in the same order, so with
``evaluation.definitions: quantus`` (the default) its scores equal Quantus'
(``tests/evaluation/test_fast_metrics.py`` checks each metric, and
``tests/evaluation/test_definitions.py`` the default config's metrics end to end). With
``definitions: paper`` it computes the papers' definitions where Quantus 0.6
departs from them: IROF (per-image baseline and curve), Max/AvgSensitivity (no
division by ``||a||``), RandomLogit (2-D SSIM of the maps), PointingGame and
AttributionLocalisation (empty masks, the weighted ratio), TopKIntersection and
RelevanceRankAccuracy (ties by position); each metric's declaration says what
changes and why (:attr:`~explainnn.evaluation.metrics.MetricSpec.paper`).

The batched functions live beside their Quantus classes in the family modules
of :mod:`explainnn.evaluation.metrics`; what they share is in :mod:`.common`.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import numpy as np

from explainnn.evaluation.fast.common import Batch, Explain, prepare, reject_options

if TYPE_CHECKING:
    from explainnn.evaluation.metrics.spec import MetricSpec

PROVIDED = ("rng", "explain", "normalise", "abs", "definitions")
"""Keyword arguments the engine supplies itself (not metric options)."""


def run_metric(spec: MetricSpec, init: dict[str, Any], calls: dict[str, Any], batch: Batch, a_batch: np.ndarray,
               explain: Explain, seed: int, definitions: str = "quantus") -> Any:
    """Score ``a_batch`` with ``spec``'s batched function; returns what the Quantus metric would return.

    ``init`` and ``calls`` are the metric's constructor and call options
    (:meth:`~explainnn.evaluation.metrics.MetricSpec.settings`); ``explain``
    re-explains perturbed inputs; ``seed`` seeds the random draws (as
    ``np.random.seed(seed)`` seeds Quantus'); ``definitions`` is ``quantus`` or
    ``paper`` (``evaluation.definitions``).
    """
    function = spec.fast
    if function is None:
        raise ValueError(f"{spec.name} has no batched implementation; it runs with Quantus")
    options = {**init, **calls}
    normalise, absolute = bool(options.pop("normalise", True)), bool(options.pop("abs", False))
    accepted = [name for name in inspect.signature(function).parameters if name not in ("batch", "a")]
    if "batch_size" not in accepted:
        options.pop("batch_size", None)  # Quantus' batches only matter to the order of random draws
    reject_options(spec.name, options, tuple(name for name in accepted if name not in PROVIDED))
    provided = {"rng": np.random.RandomState(seed % 2**32), "explain": explain, "normalise": normalise,
                "abs": absolute, "definitions": definitions}
    kwargs = {**{name: provided[name] for name in PROVIDED if name in accepted},
              **{key: value for key, value in options.items() if key in accepted}}
    a = prepare(a_batch, batch.x.shape, normalise=normalise, abs=absolute)
    return function(batch, a, **kwargs)


__all__ = ["Batch", "run_metric"]
