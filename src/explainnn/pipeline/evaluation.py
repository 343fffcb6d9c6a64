"""Step 6, evaluation: score every attribution method with the Quantus metrics on the same samples."""

from __future__ import annotations

from pathlib import Path

from explainnn.config import EvaluationConfig
from explainnn.evaluation import EvaluationResults, evaluate_class, plot_evaluation, save_results
from explainnn.pipeline.context import RunContext


def evaluate_classes(ctx: RunContext, options: EvaluationConfig) -> dict[int, EvaluationResults]:
    """Evaluate ``options.methods`` (default: ``attribution.methods``) with ``options.metrics``, per explained class.

    Writes ``evaluation/`` (``evaluation/class_<k>/`` when several classes are
    explained): the tables of :mod:`explainnn.evaluation.io` and, with
    ``plots``, ``metrics_<family>.png`` and ``ranks.png``; prints what was
    skipped and why, and one line per class. The methods run with
    ``attribution.options``, as in the attribution step. Fills ``ctx.evaluations``.
    """
    classes = ctx.explained_classes()
    for target in classes:
        results = evaluate_class(
            ctx.model,
            ctx.dataset,
            target,
            ctx.graphs.get(target),
            methods=options.methods or ctx.config.attribution.methods,
            metrics=options.metrics,
            n_samples=options.n_samples,
            options=options.options,
            method_options=ctx.config.attribution.options,
            engine=options.engine,
            definitions=options.definitions,
            include_misclassified=options.include_misclassified,
            seed=ctx.seed,
            progress=ctx.progress,
        )
        if len(results.samples) < options.n_samples:
            kind = "" if options.include_misclassified else "correctly classified "
            ctx.echo(f"evaluation  only {len(results.samples)} {kind}test samples of class {target}; "
                     f"evaluating on those (asked for {options.n_samples})")
        write_evaluation(results, ctx.run_dir / "evaluation" / (f"class_{target}" if len(classes) > 1 else ""),
                         plots=ctx.plots, dpi=ctx.dpi)
        for row in results.skipped:
            ctx.echo(f"evaluation  skipped {_what(row)}: {row['reason']}")
        ctx.echo(describe(results))
        ctx.evaluations[target] = results
    return ctx.evaluations


def write_evaluation(results: EvaluationResults, folder: Path, *, plots: bool = True, dpi: int = 120) -> None:
    """The tables, settings and attributions of ``results`` in ``folder`` and, with ``plots``, the pictures."""
    save_results(results, folder)
    if plots and results.summary:
        plot_evaluation(results.summary, folder, reference=results.reference, dpi=dpi)


def _what(row: dict) -> str:
    if row["method"] == "*":
        return f"metric {row['metric']}"
    if row["metric"] == "*":
        return f"method {row['method']}"
    return f"{row['metric']} for {row['method']}"


DEFINITIONS_WORDS = {"quantus": "Quantus 0.6 definitions", "paper": "the papers' definitions"}


def describe(results: EvaluationResults) -> str:
    """The evaluation's line: methods x metrics, samples, seconds, engine, definitions and the best per metric."""
    best: dict[str, list[str]] = {}
    for row in results.summary:
        if row["rank"] == 1:
            best.setdefault(row["metric"], []).append(row["method"])
    winners = "; ".join(f"{metric}: {', '.join(names)}" for metric, names in best.items())
    used, missed = results.samples_used_by_discovery, results.samples_misclassified
    note = (f", {used} of them used by discovery" if used else "") + (f", {missed} misclassified" if missed else "")
    line = (f"evaluation  {len(results.methods)} methods x {len(results.metrics)} metrics on "
            f"{len(results.samples)} samples{note} in {results.seconds:.0f} s ({results.engine} engine, "
            f"{DEFINITIONS_WORDS.get(results.definitions, results.definitions)})")
    return f"{line}; best: {winners}" if winners else line
