"""Step 9, clustering: cluster explanations, and compare the clusters across training seeds."""

from __future__ import annotations

from explainnn.analyses.clustering import ExplanationClusters, explanation_clusters, plot_clusters, plot_seed_agreement
from explainnn.config import ClusteringConfig
from explainnn.files import write_csv, write_json, write_npz
from explainnn.pipeline.context import RunContext


def analyse_clusters(ctx: RunContext, options: ClusteringConfig) -> ExplanationClusters:
    """:func:`~explainnn.analyses.clustering.explanation_clusters` of the test split, written to ``clustering/``.

    Every key of ``options`` but ``enabled`` is a keyword of ``explanation_clusters``;
    the models of ``options.seeds`` come from the model step (``ctx.seed_models``:
    trained or loaded like the run's own model, each with its own checkpoint).
    Writes ``explanations.npz``, ``clusters.csv`` (sample, class, prediction, cluster
    for the best k), ``silhouette.csv``, ``summary.json`` and, with ``plots``,
    ``clusters.png``; with seeds ``seed_agreement.csv`` and ``.png``. Prints the
    step's line; stores the result in ``ctx.analyses.clustering``.
    """
    result = explanation_clusters(ctx.model, ctx.dataset, **options.model_dump(exclude={"enabled"}),
                                  retrain=ctx.seed_models.model if options.seeds else None, seed=ctx.seed,
                                  progress=ctx.progress)
    out_dir = ctx.run_dir / "clustering"
    clustering = result.clustering
    write_npz(out_dir / "explanations.npz", {"explanations": result.vectors, "index": result.index,
                                             "classes": result.classes, "predicted": result.predicted,
                                             "clusters": clustering.best_labels})
    write_csv(out_dir / "clusters.csv", result.cluster_rows(), ["sample", "class", "predicted", "cluster"])
    write_csv(out_dir / "silhouette.csv", clustering.rows(), ["k", "silhouette", "inertia", "best"])
    if ctx.plots:
        plot_clusters(result.vectors, clustering, classes=result.classes, class_names=ctx.dataset.info.class_names,
                      projection="pca", title=f"{result.method} explanations of {len(result.index)} "
                      f"{result.dataset} test samples", path=out_dir / "clusters.png", dpi=ctx.dpi)
    if result.agreement is None:
        ctx.echo("clustering  seed agreement: skipped (no training seeds listed in analyses.clustering.seeds)")
    else:
        names = result.agreement_names
        write_csv(out_dir / "seed_agreement.csv", result.agreement_rows(), ["model", *names])
        if ctx.plots:
            plot_seed_agreement(result.agreement, names, path=out_dir / "seed_agreement.png", dpi=ctx.dpi,
                                title=f"{result.method} clusters (k={clustering.best_k}) across seeds")
    summary = result.summary()
    write_json(out_dir / "summary.json", summary)
    ctx.echo(describe_clusters(result, summary))
    ctx.analyses.clustering = result
    return result


def describe_clusters(result: ExplanationClusters, summary: dict) -> str:
    """The step's line: best k, its silhouette, ARI with the classes and across seeds."""
    clustering = result.clustering
    line = (f"clustering  {summary['method']} on {summary['n_samples']} samples: best k {clustering.best_k} "
            f"(silhouette {clustering.silhouette[clustering.ks.index(clustering.best_k)]:.2f}), "
            f"ARI with classes {summary['class_ari']:.2f}")
    if summary["seed_ari_mean"] is not None:
        line += f"; ARI across {len(summary['seeds']) + 1} training seeds {summary['seed_ari_mean']:.2f}"
    return line
