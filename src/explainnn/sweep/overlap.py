"""Causal-graph overlap across runs: Jaccard similarity of the hidden causal units of runs that differ in one key.

Two comparisons are made from the runs of a sweep:

* **across classes** (runs, or classes of one run, that differ only in the
  target class): which classes share causal units of the *same* model;
* **across training seeds** (runs that differ only in ``seed``, same class):
  whether re-training gives the same causal graph. Hidden units of independently
  trained networks are not aligned (unit 5 of one model has no counterpart
  "unit 5" in another), so unit identity overlap across seeds is compared with
  its chance level (random sets of the same sizes per layer); the graph's number
  of causal units per layer is the comparable quantity.

Each comparison gives a matrix per group, a row per pair in ``overlap.csv``, and
a heatmap per group (across seeds: per group of three or more seeds).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from explainnn.files import save_figure, write_csv
from explainnn.sweep.results import ClassResult, RunResult

COMPARISONS = {"discovery.target_class": "across classes", "seed": "across training seeds"}
PAIR_FIELDS = ("comparison", "group", "a", "b", "jaccard", "chance", "units_a", "units_b")


@dataclass(frozen=True)
class Member:
    """One causal graph in a comparison: a run's class."""

    name: str
    run: RunResult
    result: ClassResult


@dataclass
class OverlapGroup:
    """Causal graphs that differ only in the compared key, with their pairwise Jaccard and chance level."""

    comparison: str
    fixed: str
    members: list[Member]
    jaccard: np.ndarray
    chance: np.ndarray
    picture: Path | None = None

    def mean(self, matrix: np.ndarray) -> float:
        upper = np.triu_indices(len(self.members), 1)
        return float(np.nanmean(matrix[upper])) if len(upper[0]) else float("nan")


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b|; NaN when both are empty."""
    union = len(a | b)
    return len(a & b) / union if union else float("nan")


def chance_jaccard(a: ClassResult, b: ClassResult) -> float:
    """Expected Jaccard of random unit sets with ``a``'s and ``b``'s sizes per layer (ratio of expectations)."""
    shared = sum(a.layer_units.get(layer, 0) * b.layer_units.get(layer, 0) / size
                 for layer, size in a.layer_sizes.items() if size)
    union = len(a.units) + len(b.units) - shared
    return shared / union if union else float("nan")


def overlap_groups(runs: Sequence[RunResult]) -> list[OverlapGroup]:
    """Every group of two or more causal graphs that differ in exactly one compared key."""
    groups = []
    for key, comparison in COMPARISONS.items():
        buckets: dict[str, list[Member]] = {}
        for run in runs:
            for result in run.classes:
                setting = _setting(run, result.target)
                varied = setting.pop(key)
                fixed = json.dumps(setting, sort_keys=True)
                name = f"class {result.target}" if key != "seed" else f"seed {varied}"
                buckets.setdefault(fixed, []).append(Member(name, run, result))
        for members in buckets.values():
            if len(members) < 2:
                continue
            names = [member.name for member in members]
            if len(set(names)) < len(names):
                names = [f"{member.name} (run {member.run.index + 1})" for member in members]
                members = [Member(name, m.run, m.result) for name, m in zip(names, members)]
            size = len(members)
            matrix, chance = np.ones((size, size)), np.ones((size, size))
            for i in range(size):
                for j in range(i + 1, size):
                    a, b = members[i].result, members[j].result
                    matrix[i, j] = matrix[j, i] = jaccard(a.units, b.units)
                    chance[i, j] = chance[j, i] = chance_jaccard(a, b)
            groups.append(OverlapGroup(comparison, _fixed_label(members, key), members, matrix, chance))
    return groups


def plot_overlap(group: OverlapGroup, path: Path, *, dpi: int = 120) -> Figure:
    """Heatmap of the group's pairwise Jaccard similarities, values in the cells."""
    names = [member.name for member in group.members]
    side = 1.4 + 0.55 * len(names)
    figure = Figure(figsize=(side + 1.4, side), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(group.jaccard, vmin=0.0, vmax=1.0, cmap="viridis")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    if len(names) <= 16:
        for (i, j), value in np.ndenumerate(group.jaccard):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                      color="white" if value < 0.6 else "black")
    figure.colorbar(image, ax=axis, label="Jaccard similarity of hidden causal units")
    axis.set_title(f"causal-graph overlap {group.comparison}" + (f"\n{group.fixed}" if group.fixed else ""),
                   fontsize="medium")
    save_figure(figure, path, dpi=dpi)
    return figure


def write_overlap(groups: Sequence[OverlapGroup], sweep_dir: Path, *, plots: bool = True, dpi: int = 120) -> Path:
    """``overlap.csv`` (one row per pair) and ``overlap/*.png`` (every group across classes; across seeds,
    groups of three or more)."""
    rows = []
    for number, group in enumerate(groups, 1):
        members = group.members
        rows += [{"comparison": group.comparison, "group": group.fixed, "a": members[i].name, "b": members[j].name,
                  "jaccard": float(group.jaccard[i, j]), "chance": float(group.chance[i, j]),
                  "units_a": len(members[i].result.units), "units_b": len(members[j].result.units)}
                 for i in range(len(members)) for j in range(i + 1, len(members))]
        across_classes = group.comparison == COMPARISONS["discovery.target_class"]
        if plots and (across_classes or len(members) >= 3):
            slug = "classes" if across_classes else "seeds"
            group.picture = sweep_dir / "overlap" / f"{slug}_{number}.png"
            plot_overlap(group, group.picture, dpi=dpi)
    return write_csv(sweep_dir / "overlap.csv", rows, PAIR_FIELDS)


def _setting(run: RunResult, target: int) -> dict[str, Any]:
    """The run's resolved settings for one class (the class in place of ``all``), less the per-sweep keys."""
    record = dict(run.settings)
    record["discovery.target_class"] = target
    return record


def _fixed_label(members: Sequence[Member], key: str) -> str:
    """What the group's members share among the sweep's varied values (e.g. ``seed=1``)."""
    shared = {k: v for k, v in members[0].run.values.items()
              if k != key and all(m.run.values.get(k) == v for m in members)}
    if key == "seed":
        shared["class"] = members[0].result.target
    return ", ".join(f"{k}={v}" for k, v in shared.items())
