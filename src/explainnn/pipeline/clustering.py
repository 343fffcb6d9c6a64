"""Step 9, clustering: cluster explanations, and compare the clusters across training seeds."""

from __future__ import annotations

from typing import Any

from explainnn.analyses.clustering import clustering_step
from explainnn.config import ClusteringConfig
from explainnn.pipeline.context import RunContext
from explainnn.pipeline.model import train_or_load_model


def cluster_explanations(ctx: RunContext, options: ClusteringConfig) -> dict[str, Any]:
    """Write ``clustering/`` (see :func:`explainnn.analyses.clustering.clustering_step`).

    Every key of ``options`` but ``enabled`` is a keyword of
    ``clustering_step``; the models of ``options.seeds`` are trained (or
    loaded) like the run's own model, each with its own checkpoint.
    """
    result = clustering_step(
        ctx.model,
        ctx.dataset,
        ctx.run_dir / "clustering",
        retrain=lambda seed: train_or_load_model(ctx, ctx.config.model, seed=seed),
        **options.model_dump(exclude={"enabled"}),
        **ctx.step_options(),
    )
    ctx.analyses["clustering"] = result
    return result
