"""Step 7, views: what the network learned (filters, activation maps, activation maximisation, embeddings)."""

from __future__ import annotations

from pathlib import Path

from explainnn.analyses.views import views_step
from explainnn.config import ViewsConfig
from explainnn.pipeline.context import RunContext


def draw_views(ctx: RunContext, options: ViewsConfig) -> dict[str, Path]:
    """Write ``views/`` (see :func:`explainnn.analyses.views.views_step`), with the first explained class's graph.

    Every key of ``options`` but ``enabled`` is a keyword of ``views_step``.
    """
    classes = ctx.explained_classes()
    graph = ctx.graphs.get(classes[0]) if classes else None
    written = views_step(ctx.model, ctx.dataset, ctx.run_dir / "views", graph=graph,
                         **options.model_dump(exclude={"enabled"}), **ctx.step_options())
    ctx.analyses["views"] = written
    return written
