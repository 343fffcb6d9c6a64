"""Evaluate attribution methods with Quantus metrics, fairly, and summarise the results.

``evaluation_step`` is the pipeline step: it selects correctly classified test
samples of the target class, scores every method with every metric on them
(:func:`evaluate`), writes the tables, settings and pictures, and prints what
was skipped and why. The pieces are usable on their own: the metric registry
(:mod:`.metrics`), the statistics (:mod:`.summary`) and the plots (:mod:`.plots`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from explainnn.evaluation.evaluate import (
    ENGINES,
    EvaluationInputs,
    EvaluationResults,
    TabularRowsModel,
    evaluate,
    prepare_inputs,
    quantus_view,
    select_evaluation_samples,
    select_samples,
)
from explainnn.evaluation.io import load_tables, read_csv, save_results, write_csv
from explainnn.evaluation.metrics import (
    FAMILIES,
    LOCALISATION_METRICS,
    METRICS,
    MetricContext,
    MetricSpec,
    RelevanceShareCosine,
    WholeMapSSIM,
    available_metrics,
    directions,
    metric_spec,
    normalise_per_sample,
    valid_metrics,
)
from explainnn.evaluation.plots import plot_evaluation, plot_family, plot_ranks
from explainnn.evaluation.summary import (
    adjust,
    compare,
    confidence_interval,
    holm,
    markdown_table,
    paired_test,
    paired_wilcoxon,
    summarise,
)


def evaluation_step(
    model: nn.Module,
    dataset: Any,
    target: int,
    graph: Any,
    out_dir: str | Path,
    *,
    methods: Sequence[str],
    metrics: Sequence[str],
    n_samples: int = 20,
    options: dict[str, dict[str, Any]] | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    progress: bool = True,
    plots: bool = True,
    dpi: int = 120,
    reference: str = "causal",
    held_out: bool = True,
    engine: str = "fast",
    include_misclassified: bool = False,
) -> EvaluationResults:
    """Evaluate ``methods`` with ``metrics`` on ``n_samples`` test samples of class ``target``; save to ``out_dir``.

    ``graph`` (a :class:`~explainnn.causal.CausalGraph` or None) goes to the
    methods that need one; with ``held_out`` the samples it was learned from
    are used only when too few others exist (without, the samples are simply
    the first correctly classified ones, as discovery picks them). ``options`` are per-metric settings
    (``evaluation.options``), ``method_options`` per-method attribution options;
    ``engine`` is ``fast`` (batched, :mod:`explainnn.evaluation.fast`) or ``quantus``.
    With ``include_misclassified``, test samples of class ``target`` that the
    model misclassifies follow the correctly classified ones when those are
    fewer than ``n_samples`` (still explained and scored for ``target``).
    Writes the files listed in :mod:`explainnn.evaluation.io` and, with
    ``plots``, ``metrics_<family>.png`` and ``ranks.png``.
    """
    started = time.perf_counter()
    metadata = getattr(graph, "metadata", {}) if graph is not None else {}
    # Graph samples are test indices unless the graph was learned from another split (discovery.samples_from).
    in_test = metadata.get("inputs", "test split") == "test split"
    learned_from = list(metadata.get("samples", [])) if in_test else []
    inputs = prepare_inputs(model, dataset, int(target), n_samples, discovery_samples=learned_from,
                            held_out=held_out, include_misclassified=include_misclassified)
    if len(inputs.samples) < n_samples:
        kind = "" if include_misclassified else "correctly classified "
        print(f"evaluation  only {len(inputs.samples)} {kind}test samples of class {target}; "
              f"evaluating on those (asked for {n_samples})")
    results = evaluate(
        model, inputs, methods, metrics, graph=graph, method_options=method_options, metric_options=options,
        seed=seed, progress=progress, reference=reference, engine=engine,
    )
    out_dir = Path(out_dir)
    save_results(results, out_dir)
    if plots and results.summary:
        plot_evaluation(results.summary, out_dir, reference=reference, dpi=dpi)
    for row in results.skipped:
        print(f"evaluation  skipped {_what(row)}: {row['reason']}")
    print(_describe(results, time.perf_counter() - started))
    return results


def _what(row: dict) -> str:
    if row["method"] == "*":
        return f"metric {row['metric']}"
    if row["metric"] == "*":
        return f"method {row['method']}"
    return f"{row['metric']} for {row['method']}"


def _describe(results: EvaluationResults, seconds: float) -> str:
    best: dict[str, list[str]] = {}
    for row in results.summary:
        if row["rank"] == 1:
            best.setdefault(row["metric"], []).append(row["method"])
    winners = "; ".join(f"{metric}: {', '.join(names)}" for metric, names in best.items())
    used = results.settings.get("samples_used_by_discovery", 0)
    missed = results.settings.get("samples_misclassified", 0)
    note = (f", {used} of them used by discovery" if used else "") + (f", {missed} misclassified" if missed else "")
    line = (f"evaluation  {len(results.methods)} methods x {len(results.metrics)} metrics on "
            f"{len(results.samples)} samples{note} in {seconds:.0f} s ({results.settings.get('engine', 'quantus')} engine)")
    return f"{line}; best: {winners}" if winners else line


__all__ = [
    "ENGINES",
    "FAMILIES",
    "LOCALISATION_METRICS",
    "METRICS",
    "EvaluationInputs",
    "EvaluationResults",
    "MetricContext",
    "MetricSpec",
    "RelevanceShareCosine",
    "TabularRowsModel",
    "WholeMapSSIM",
    "adjust",
    "available_metrics",
    "compare",
    "confidence_interval",
    "directions",
    "evaluate",
    "evaluation_step",
    "holm",
    "load_tables",
    "markdown_table",
    "metric_spec",
    "normalise_per_sample",
    "paired_test",
    "paired_wilcoxon",
    "plot_evaluation",
    "plot_family",
    "plot_ranks",
    "prepare_inputs",
    "quantus_view",
    "read_csv",
    "save_results",
    "select_evaluation_samples",
    "select_samples",
    "summarise",
    "valid_metrics",
    "write_csv",
]
