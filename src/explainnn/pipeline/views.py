"""Step 7, views: what the network learned (filters, activation maps, activation maximisation, embeddings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from explainnn.analyses.embeddings import plot_embedding, write_embedding_csv
from explainnn.analyses.views import Views, draw_maximization, learned_views, plot_activation_maps, plot_filters
from explainnn.config import ViewsConfig
from explainnn.files import atomic_path
from explainnn.pipeline.context import RunContext


def draw_views(ctx: RunContext, options: ViewsConfig) -> dict[str, Path]:
    """:func:`~explainnn.analyses.views.learned_views` with the first explained class's graph, written to ``views/``.

    Every key of ``options`` but ``enabled`` is a keyword of ``learned_views``. Writes
    ``filters.png`` (the first conv layer's kernels), ``activation_maps_<layer>.png``,
    ``maximization_<layer>.png`` and ``.npz`` (``inputs``, ``units``, ``activations``),
    ``embedding_<layer>.png`` and ``.csv`` (``index, x, y, label, class``); without
    ``plots`` only the npz and csv files. Prints a line per view that does not apply
    and one for those drawn; stores the views in ``ctx.analyses.views`` and returns
    ``{view: path}`` of what was written (also ``ctx.analyses.view_files``).
    """
    classes = ctx.explained_classes()
    graph = ctx.graphs.get(classes[0]) if classes else None
    model, dataset, dpi = ctx.model, ctx.dataset, ctx.dpi
    views = learned_views(model, dataset, graph=graph, **options.model_dump(exclude={"enabled"}), seed=ctx.seed,
                          plots=ctx.plots, progress=ctx.progress)
    out_dir = ctx.run_dir / "views"
    written: dict[str, Path] = {}
    x = dataset.x_test
    if views.filters is not None:
        written["filters"] = out_dir / "filters.png"
        plot_filters(model, written["filters"], layer=views.filters, example_input=x[:1], dpi=dpi)
    if views.activation_maps is not None:
        maps = views.activation_maps
        written["activation_maps"] = out_dir / f"activation_maps_{maps.layer}.png"
        plot_activation_maps(model, x[maps.sample], maps.layer, written["activation_maps"], graph=graph, dpi=dpi)
    if views.maximization is not None:
        best = views.maximization
        written["maximization_npz"] = out_dir / f"maximization_{best.layer}.npz"
        with atomic_path(written["maximization_npz"]) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, inputs=best.inputs.numpy(), units=np.asarray(best.units),
                                activations=best.activations)
        if ctx.plots:
            written["maximization"] = out_dir / f"maximization_{best.layer}.png"
            draw_maximization(best.inputs, best.units, written["maximization"], layer=best.layer,
                              activations=best.activations, causal=sorted(best.causal), value_range=best.value_range,
                              note=best.note, dpi=dpi)
    if views.embedding is not None:
        shown = views.embedding
        class_names = dataset.info.class_names
        written["embedding_csv"] = write_embedding_csv(out_dir / f"embedding_{shown.layer}.csv", shown.coords,
                                                       shown.labels, class_names, shown.chosen)
        if ctx.plots:
            written["embedding"] = out_dir / f"embedding_{shown.layer}.png"
            title = (f"{shown.layer} on {dataset.info.name}: {shown.projection.upper()} of {len(shown.chosen)} test "
                     f"samples ({shown.n_units} units)")
            plot_embedding(shown.coords, shown.labels, class_names, written["embedding"], title, dpi=dpi)
    for view, reason in views.skipped:
        ctx.echo(f"views       {view}: skipped ({reason})")
    ctx.echo(f"views       {'; '.join(describe_views(views)) or 'nothing applied'}")
    ctx.analyses.views, ctx.analyses.view_files = views, written
    return written


def describe_views(views: Views) -> list[str]:
    """What was drawn, one phrase per view."""
    done = []
    if views.filters is not None:
        done.append(f"filters {views.filters}")
    if views.activation_maps is not None:
        maps = views.activation_maps
        done.append(f"activation maps {maps.layer} (test #{maps.sample}, class {maps.class_name})")
    if views.maximization is not None:
        best = views.maximization
        done.append(f"maximisation {best.layer} ({len(best.units)} {best.source} units)")
    if views.embedding is not None:
        shown = views.embedding
        done.append(f"embedding {shown.layer} ({shown.projection}, {len(shown.chosen)} samples)")
    return done
