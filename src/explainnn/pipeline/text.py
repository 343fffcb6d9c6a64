"""Step 8, text: word-level importance over a text dataset (skipped for other data)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from explainnn.analyses.attention import plot_attention_agreement
from explainnn.analyses.text import TextAnalysis, analyse_texts
from explainnn.analyses.word_importance import WORD_FIELDS, TokenImportance, plot_top_words
from explainnn.analyses.word_order import plot_permutation
from explainnn.config import TextAnalysisConfig
from explainnn.files import write_csv, write_json, write_npz
from explainnn.pipeline.context import RunContext


def analyse_text(ctx: RunContext, options: TextAnalysisConfig) -> TextAnalysis | None:
    """For token data, :func:`~explainnn.analyses.text.analyse_texts` on the test texts, written to ``text/``.

    Every key of ``options`` but ``enabled`` is a keyword of ``analyse_texts``. Writes
    ``words_<method>.csv`` (rows per target class), ``token_scores.npz``,
    ``permutation.csv``, ``permutation_positions.csv``, ``summary.json``; with
    ``plots`` ``top_words_<method>.png`` (per class, the words that raise and lower
    its logit) and ``permutation_positions.png``; for a ``pooling="attention"``
    model ``attention_agreement.csv``, ``attention_agreement_summary.csv`` and
    ``.png``. Prints a line per skipped method and one for the analyses; stores
    the result in ``ctx.analyses.text``. Other data: nothing (None).
    """
    if ctx.dataset.info.modality != "tokens":
        return None
    result = analyse_texts(ctx.model, ctx.dataset, **options.model_dump(exclude={"enabled"}), seed=ctx.seed,
                           progress=ctx.progress)
    for method, reason in result.skipped.items():
        ctx.echo(f"text        {method}: skipped ({reason})")
    out_dir = ctx.run_dir / "text"
    _write_scores(result.importance, result.methods, out_dir)
    result.permutation.to_csv(out_dir)
    if result.attention is not None:
        result.attention.to_csv(out_dir)
    if ctx.plots:
        _draw(result, out_dir, dpi=ctx.dpi)
    summary = result.summary()
    write_json(out_dir / "summary.json", summary)
    ctx.echo(describe_text(summary))
    ctx.analyses.text = result
    return result


def _write_scores(importances: Mapping[str, TokenImportance], methods: list[str], out_dir: Path) -> None:
    """``words_<method>.csv`` (a ``target`` column first) and ``token_scores.npz`` (``<method>`` for one
    target, ``<method>__<target>`` for several, plus ``targets__<target>``)."""
    for method in methods:
        rows = [{"target": name, **row} for name, result in importances.items()
                for row in result.statistics(method).rows()]
        write_csv(out_dir / f"words_{method}.csv", rows, ["target", *WORD_FIELDS])
    first = next(iter(importances.values()))
    several = len(importances) > 1
    arrays = {f"{method}__{name}" if several else method: values
              for name, result in importances.items() for method, values in result.attributions.items()}
    arrays.update({f"targets__{name}" if several else "targets": result.targets
                   for name, result in importances.items()})
    write_npz(out_dir / "token_scores.npz", {"tokens": first.tokens, "vocab": np.asarray(first.vocab, dtype=str),
                                             **arrays})


def _draw(result: TextAnalysis, out_dir: Path, *, dpi: int) -> None:
    """The pictures: top words per method (at its ``shown`` min_count), word order, attention."""
    for method, min_count in result.shown.items():
        plot_top_words(result.importance, method, top_k=result.top_k, min_count=min_count,
                       path=out_dir / f"top_words_{method}.png", dpi=dpi)
    plot_permutation(result.permutation, path=out_dir / "permutation_positions.png", dpi=dpi)
    if result.attention is not None:
        plot_attention_agreement(result.attention, path=out_dir / "attention_agreement.png", dpi=dpi)


def describe_text(summary: dict) -> str:
    """The step's line: methods and texts, word order, the words that raise each class, attention."""
    perm = summary["permutation"]
    line = (f"text        {summary['dataset']}: {len(summary['methods'])} methods on {summary['n_texts']} texts; "
            f"shuffling word order: accuracy {perm['accuracy']:.3f} -> {perm['permuted_accuracy']:.3f}")
    if summary["methods"]:
        first = summary["methods"][0]
        pushes = [f"{name} <- {', '.join(lists['raise'][:3]) or '-'}"
                  for name, lists in summary["top_words"][first].items() if name != "min_count"]
        line += f"; words that raise each class ({first}): {'; '.join(pushes)}"
    for row in summary["attention_agreement"] or []:
        line += f"; attention vs {row['method']}: tau {row['kendall_tau_mean']:.2f}, JS {row['js_divergence_mean']:.2f}"
    return line
