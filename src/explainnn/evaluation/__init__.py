"""Evaluate attribution methods with Quantus metrics, fairly, and summarise the results.

:func:`evaluate_class` selects held-out test samples of a class and scores every
method with every metric on them (:func:`evaluate`), returning an
:class:`EvaluationResults`; it writes and prints nothing (the pipeline's
evaluation step, :mod:`explainnn.pipeline.evaluation`, writes the tables with
:func:`save_results` and the pictures with :func:`plot_evaluation`). The pieces
are usable on their own: the metric registry (:mod:`.metrics`, where
:func:`register_metric` adds a metric), the batched engine (:mod:`.fast`), the
statistics (:mod:`.summary`) and the plots (:mod:`.plots`).
"""

from __future__ import annotations

from explainnn.evaluation.evaluate import (
    ENGINES,
    EvaluationInputs,
    EvaluationResults,
    TabularRowsModel,
    evaluate,
    evaluate_class,
    prepare_inputs,
    quantus_view,
    select_evaluation_samples,
)
from explainnn.evaluation.io import EvaluationTables, load_tables, read_csv, save_results, write_table
from explainnn.evaluation.metrics import (
    DEFINITIONS,
    FAMILIES,
    METRICS,
    MetricContext,
    MetricSpec,
    RelevanceShareCosine,
    WholeMapSSIM,
    available_metrics,
    directions,
    metric_spec,
    normalise_per_sample,
    register_metric,
    valid_metrics,
)
from explainnn.evaluation.plots import plot_evaluation, plot_family, plot_ranks
from explainnn.evaluation.summary import (
    WilcoxonTest,
    adjust,
    compare,
    confidence_interval,
    holm,
    markdown_table,
    paired_wilcoxon,
    summarise,
)

__all__ = [
    "DEFINITIONS",
    "ENGINES",
    "FAMILIES",
    "METRICS",
    "EvaluationInputs",
    "EvaluationResults",
    "EvaluationTables",
    "MetricContext",
    "MetricSpec",
    "RelevanceShareCosine",
    "TabularRowsModel",
    "WholeMapSSIM",
    "WilcoxonTest",
    "adjust",
    "available_metrics",
    "compare",
    "confidence_interval",
    "directions",
    "evaluate",
    "evaluate_class",
    "holm",
    "load_tables",
    "markdown_table",
    "metric_spec",
    "normalise_per_sample",
    "paired_wilcoxon",
    "plot_evaluation",
    "plot_family",
    "plot_ranks",
    "prepare_inputs",
    "quantus_view",
    "read_csv",
    "register_metric",
    "save_results",
    "select_evaluation_samples",
    "summarise",
    "valid_metrics",
    "write_table",
]
