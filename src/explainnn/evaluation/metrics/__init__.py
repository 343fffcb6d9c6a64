"""The metrics explainnn evaluates with, one registration each: family, direction, inputs, both engines, defaults.

Each family module (:mod:`.faithfulness`, :mod:`.robustness`, :mod:`.complexity`,
:mod:`.randomisation`, :mod:`.localisation`) declares its metrics with
:func:`~.spec.register_metric`: the Quantus class and the batched function side
by side, and where Quantus 0.6 departs from the metric's paper, what
``evaluation.definitions: paper`` changes (:attr:`~.spec.MetricSpec.paper`).
A metric added from outside is one :func:`~.spec.register_metric` call.

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
window over all features (:class:`~.randomisation.WholeMapSSIM`), which does not depend on the
order of the columns.
"""

from __future__ import annotations

import importlib

from explainnn.evaluation.metrics.spec import (
    CALL_OPTIONS,
    DEFINITIONS,
    DIRECTIONS,
    FAMILIES,
    METRICS,
    MODALITIES,
    OWNED_OPTIONS,
    MetricContext,
    MetricSpec,
    available_metrics,
    check_definitions,
    directions,
    metric_spec,
    register_metric,
    valid_metrics,
)
from explainnn.evaluation.normalisation import normalise_per_sample

for _family in FAMILIES:  # the built-in metrics, in report order: importing a family module registers its metrics
    importlib.import_module(f"explainnn.evaluation.metrics.{_family}")

from explainnn.evaluation.metrics.localisation import RelevanceShareCosine  # noqa: E402
from explainnn.evaluation.metrics.randomisation import WholeMapSSIM, map_ssim, ssim  # noqa: E402

__all__ = [
    "CALL_OPTIONS",
    "DEFINITIONS",
    "DIRECTIONS",
    "FAMILIES",
    "METRICS",
    "MODALITIES",
    "OWNED_OPTIONS",
    "MetricContext",
    "MetricSpec",
    "RelevanceShareCosine",
    "WholeMapSSIM",
    "available_metrics",
    "check_definitions",
    "directions",
    "map_ssim",
    "metric_spec",
    "normalise_per_sample",
    "register_metric",
    "ssim",
    "valid_metrics",
]
