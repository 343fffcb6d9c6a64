"""Step 6, evaluation: score every attribution method with the Quantus metrics on the same samples."""

from __future__ import annotations

from typing import Any

from explainnn.config import EvaluationConfig
from explainnn.evaluation import evaluation_step
from explainnn.pipeline.context import RunContext


def evaluate_classes(ctx: RunContext, options: EvaluationConfig) -> dict[int, Any]:
    """Evaluate ``options.methods`` (default: ``attribution.methods``) with ``options.metrics``, per explained class.

    Writes ``evaluation/`` (``evaluation/class_<k>/`` when several classes are
    explained): the tables of :mod:`explainnn.evaluation.io` and the metric
    pictures. The methods run with ``attribution.options``, as in the
    attribution step. Fills ``ctx.evaluations``.
    """
    classes = ctx.explained_classes()
    for target in classes:
        ctx.evaluations[target] = evaluation_step(
            ctx.model,
            ctx.dataset,
            target,
            ctx.graphs.get(target),
            ctx.run_dir / "evaluation" / (f"class_{target}" if len(classes) > 1 else ""),
            methods=options.methods or ctx.config.attribution.methods,
            metrics=options.metrics,
            n_samples=options.n_samples,
            options=options.options,
            method_options=ctx.config.attribution.options,
            engine=options.engine,
            include_misclassified=options.include_misclassified,
            **ctx.step_options(),
        )
    return ctx.evaluations
