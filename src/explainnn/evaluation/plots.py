"""Pictures of an evaluation: one bar chart per metric family and a heatmap of ranks.

Built with matplotlib's object API on the Agg canvas (no window, safe in
scripts). Bars show each method's mean with its 95% confidence interval; the
reference method (``causal``) is drawn in a strong colour so it stands out, and
every panel says whether higher or lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from explainnn.errors import UserError
from explainnn.files import save_figure

REFERENCE_COLOUR = "#d62728"
BASELINE_COLOUR = "#7f7f7f"
ARROWS = {"higher": "↑ higher is better", "lower": "↓ lower is better"}


def _by_metric(summary: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    grouped: dict[str, list[Mapping]] = {}
    for row in summary:
        grouped.setdefault(str(row["metric"]), []).append(row)
    return grouped


def plot_family(summary: Sequence[Mapping], family: str, path: str | Path | None = None, *,
                reference: str = "causal", dpi: int = 120) -> Figure:
    """Horizontal bars (mean and 95% CI per method), one panel per metric of ``family``."""
    grouped = {metric: rows for metric, rows in _by_metric(summary).items() if rows[0].get("family") == family}
    if not grouped:
        raise UserError(f"the summary has no metric of family '{family}'")
    n_methods = max(len(rows) for rows in grouped.values())
    figure = Figure(figsize=(4.2 * len(grouped), 0.45 * n_methods + 1.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(grouped), squeeze=False)[0])
    for axis, (metric, rows) in zip(axes, grouped.items()):
        names = [str(row["method"]) for row in rows]
        means = np.asarray([row["mean"] for row in rows], dtype=np.float64)
        low = np.asarray([row["ci_low"] for row in rows], dtype=np.float64)
        high = np.asarray([row["ci_high"] for row in rows], dtype=np.float64)
        errors = np.vstack([np.nan_to_num(means - low), np.nan_to_num(high - means)])
        colours = [REFERENCE_COLOUR if name == reference else BASELINE_COLOUR for name in names]
        positions = np.arange(len(rows))[::-1]
        axis.barh(positions, np.nan_to_num(means), xerr=errors, color=colours, capsize=3, height=0.65)
        axis.set_yticks(positions, [_label(row) for row in rows], fontsize=8)
        axis.axvline(0, color="black", linewidth=0.6)
        axis.set_title(f"{metric}\n{ARROWS[str(rows[0]['direction'])]}", fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
        for position, mean in zip(positions, means):
            if not math.isfinite(mean):
                axis.text(0, position, " n/a", va="center", fontsize=7)
    figure.suptitle(f"{family.capitalize()}: mean and 95% CI per method (rank in brackets)", fontsize=10)
    return save_figure(figure, path, dpi=dpi, tight=True)


def _label(row: Mapping) -> str:
    rank = row.get("rank")
    return f"{row['method']} ({rank:g})" if rank is not None else f"{row['method']} (-)"


def plot_ranks(summary: Sequence[Mapping], path: str | Path | None = None, *, dpi: int = 120) -> Figure:
    """Methods x metrics heatmap of ranks (1 = best by the metric's direction), with the mean rank."""
    grouped = _by_metric(summary)
    if not grouped:
        raise UserError("the summary is empty; there is nothing to rank")
    metrics = list(grouped)
    methods = list(dict.fromkeys(str(row["method"]) for row in summary))
    ranks = np.full((len(methods), len(metrics)), np.nan)
    for column, metric in enumerate(metrics):
        for row in grouped[metric]:
            if row.get("rank") is not None:
                ranks[methods.index(str(row["method"])), column] = float(row["rank"])
    with np.errstate(all="ignore"):
        mean_rank = np.nanmean(ranks, axis=1)
    order = np.argsort(np.where(np.isfinite(mean_rank), mean_rank, np.inf), kind="stable")
    ranks, methods, mean_rank = ranks[order], [methods[i] for i in order], mean_rank[order]
    figure = Figure(figsize=(1.0 * len(metrics) + 3.0, 0.42 * len(methods) + 2.2), layout="constrained")
    axis = figure.subplots()
    shown = axis.imshow(np.ma.masked_invalid(ranks), cmap="viridis_r", vmin=1, vmax=max(len(methods), 2),
                        aspect="auto")
    for i in range(len(methods)):
        for j in range(len(metrics)):
            value = ranks[i, j]
            text = "-" if not math.isfinite(value) else f"{value:g}"
            light = math.isfinite(value) and value <= (1 + len(methods)) / 2
            axis.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if light else "white")
    labels = [f"{name} (mean {value:.2g})" if math.isfinite(value) else name
              for name, value in zip(methods, mean_rank)]
    axis.set_yticks(range(len(methods)), labels, fontsize=8)
    arrows = {metric: "↑" if grouped[metric][0]["direction"] == "higher" else "↓" for metric in metrics}
    axis.set_xticks(range(len(metrics)), [f"{m} {arrows[m]}" for m in metrics], rotation=35, ha="right",
                    fontsize=8)
    figure.colorbar(shown, ax=axis, label="rank (1 = best)", shrink=0.8)
    axis.set_title("Rank of each method per metric", fontsize=10)
    return save_figure(figure, path, dpi=dpi, tight=True)


def plot_evaluation(summary: Sequence[Mapping], folder: str | Path, *, reference: str = "causal",
                    dpi: int = 120) -> dict[str, Path]:
    """Write ``metrics_<family>.png`` for every family present and ``ranks.png``; return their paths."""
    folder = Path(folder)
    written: dict[str, Path] = {}
    families = list(dict.fromkeys(str(row.get("family")) for row in summary if row.get("family")))
    for family in families:
        path = folder / f"metrics_{family}.png"
        plot_family(summary, family, path, reference=reference, dpi=dpi)
        written[f"metrics_{family}"] = path
    if summary:
        plot_ranks(summary, folder / "ranks.png", dpi=dpi)
        written["ranks"] = folder / "ranks.png"
    return written
