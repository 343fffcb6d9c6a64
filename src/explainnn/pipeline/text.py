"""Step 8, text: word-level importance over a text dataset (skipped for other data)."""

from __future__ import annotations

from typing import Any

from explainnn.analyses.text_importance import text_step
from explainnn.config import TextAnalysisConfig
from explainnn.pipeline.context import RunContext


def analyse_text(ctx: RunContext, options: TextAnalysisConfig) -> dict[str, Any]:
    """Write ``text/`` (see :func:`explainnn.analyses.text_importance.text_step`) for token data; else nothing.

    Every key of ``options`` but ``enabled`` is a keyword of ``text_step``.
    """
    if ctx.dataset.info.modality != "tokens":
        return {}
    result = text_step(ctx.model, ctx.dataset, ctx.run_dir / "text", **options.model_dump(exclude={"enabled"}),
                       **ctx.step_options())
    ctx.analyses["text"] = result
    return result
