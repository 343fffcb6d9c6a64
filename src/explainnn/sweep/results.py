"""What a completed run produced, read from its folder, and the sweep's merged tables.

Everything is read from the files a run writes (``training.json``,
``discovery/class_<k>/graph.json``, ``evaluation/**/summary.csv``,
``sweep_run.json``), so the sweep does not depend on how the pipeline is
wired inside. The tables:

* ``runs.csv``: one row per run: its overrides (one column per varied key),
  status and one-line error, accuracy, the causal graph's size and its
  sufficiency and necessity (means over the run's classes), timings, and its
  folder and report;
* ``classes.csv``: one row per run and discovered class;
* ``evaluation.csv``: one row per run, class, metric and method (mean and 95% CI).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explainnn.causal import CausalGraph
from explainnn.evaluation.io import read_csv
from explainnn.files import write_csv

RUN_FIELDS = ("run", "label", "status", "error", "resumed", "test_accuracy", "train_accuracy", "classes",
              "graph_units", "graph_fraction", "sufficiency", "necessity", "seconds", "training_seconds",
              "host", "key", "folder", "report")
CLASS_FIELDS = ("run", "label", "class", "graph_units", "hidden_units", "graph_fraction", "sufficiency",
                "random_sufficiency", "sufficiency_p", "necessity", "necessity_p", "graph")
EVALUATION_FIELDS = ("run", "label", "class", "metric", "method", "n", "mean", "ci_low", "ci_high", "rank")


@dataclass
class ClassResult:
    """One discovered class of a run: its causal graph's hidden units and the graph's faithfulness checks
    (``checks``: the sufficiency and necessity the pipeline records in the graph's ``results["circuit"]``)."""

    target: int
    units: frozenset[str]
    layer_units: dict[str, int]
    layer_sizes: dict[str, int]
    checks: dict[str, Any]
    graph_path: Path

    def row(self) -> dict[str, Any]:
        hidden = sum(self.layer_sizes.values())
        sufficiency, necessity = self.checks.get("sufficiency", {}), self.checks.get("necessity", {})
        return {"class": self.target, "graph_units": len(self.units), "hidden_units": hidden or None,
                "graph_fraction": len(self.units) / hidden if hidden else None,
                "sufficiency": sufficiency.get("normalized"),
                "random_sufficiency": sufficiency.get("random_normalized_mean"),
                "sufficiency_p": sufficiency.get("p_value_vs_random"),
                "necessity": necessity.get("logit_drop_fraction"),
                "necessity_p": necessity.get("p_value_vs_random")}


@dataclass
class RunResult:
    """Everything the sweep knows about one run."""

    index: int
    label: str
    key: str
    values: dict[str, Any]
    settings: dict[str, Any]
    record: dict[str, Any]
    folder: Path | None = None
    training: dict[str, Any] = field(default_factory=dict)
    classes: list[ClassResult] = field(default_factory=list)
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"

    def row(self, sweep_dir: Path) -> dict[str, Any]:
        rows = [result.row() for result in self.classes]
        report = self.folder / "report.html" if self.folder else None
        training = self.training.get("training", {})
        return {
            "run": self.index + 1, "label": self.label, **self.values,
            "status": self.record.get("status"), "error": self.record.get("error", ""), "resumed": self.resumed,
            "test_accuracy": self.training.get("test_accuracy"), "train_accuracy": self.training.get("train_accuracy"),
            "classes": " ".join(str(result.target) for result in self.classes),
            "graph_units": _mean(row["graph_units"] for row in rows),
            "graph_fraction": _mean(row["graph_fraction"] for row in rows),
            "sufficiency": _mean(row["sufficiency"] for row in rows),
            "necessity": _mean(row["necessity"] for row in rows),
            "seconds": self.record.get("seconds"), "training_seconds": training.get("seconds"),
            "host": self.record.get("host", ""), "key": self.key,
            "folder": _relative(self.folder, sweep_dir) if self.folder else "",
            "report": _relative(report, sweep_dir) if report and report.is_file() else "",
        }


def graph_hidden_units(graph: CausalGraph) -> tuple[frozenset[str], dict[str, int], dict[str, int]]:
    """The graph's hidden causal units (``"layer:index"``), their count per layer, and each layer's size.

    A layer's size is the number of its units tested by discovery (or the graph's
    sufficiency and necessity check's record of it).
    """
    hidden = graph.layers()[1:-1]
    units = frozenset(f"{layer}:{index}" for layer in hidden for index in graph.causes(layer))
    counts = {layer: len(graph.causes(layer)) for layer in hidden}
    tests = graph.results.get("tests", {})
    recorded = graph.results.get("circuit", {}).get("layer_size", {})
    sizes = {layer: len(tests[layer]) if layer in tests else recorded.get(layer, 0) for layer in hidden}
    return units, counts, sizes


def read_classes(folder: Path) -> list[ClassResult]:
    """Every class a run discovered a graph for, in class order."""
    found = []
    for path in folder.glob("discovery/class_*/graph.json"):
        graph = CausalGraph.from_json(path)
        units, counts, sizes = graph_hidden_units(graph)
        found.append(ClassResult(int(graph.metadata["target"]), units, counts, sizes,
                                 dict(graph.results.get("circuit") or {}), path))
    return sorted(found, key=lambda result: result.target)


def read_evaluation(folder: Path) -> list[dict[str, Any]]:
    """The evaluation summaries of a run (``evaluation/summary.csv`` or one per class)."""
    rows = []
    for path in sorted(folder.glob("evaluation/**/summary.csv")):
        settings = path.parent / "settings.json"
        target = json.loads(settings.read_text(encoding="utf-8")).get("target") if settings.is_file() else None
        if target is None and path.parent.name.startswith("class_"):
            target = int(path.parent.name.removeprefix("class_"))
        rows += [{**row, "class": target} for row in read_csv(path)]
    return rows


def read_run(result: RunResult, folder: Path) -> RunResult:
    """Fill ``result`` from a completed run folder."""
    result.folder = folder
    training = folder / "training.json"
    result.training = json.loads(training.read_text(encoding="utf-8")) if training.is_file() else {}
    result.classes = read_classes(folder)
    result.evaluation = read_evaluation(folder)
    return result


def write_tables(results: list[RunResult], varied: list[str], sweep_dir: Path) -> dict[str, Path]:
    """Write ``runs.csv``, ``classes.csv`` and ``evaluation.csv`` (atomically) into the sweep folder."""
    ordered = sorted(results, key=lambda result: result.index)
    runs = [result.row(sweep_dir) for result in ordered]
    classes = [{"run": r.index + 1, "label": r.label, **c.row(), "graph": _relative(c.graph_path, sweep_dir)}
               for r in ordered for c in r.classes]
    evaluation = [{"run": r.index + 1, "label": r.label, **row} for r in ordered for row in r.evaluation]
    fields = [*RUN_FIELDS[:2], *varied, *RUN_FIELDS[2:]]
    return {"runs": write_csv(sweep_dir / "runs.csv", runs, fields),
            "classes": write_csv(sweep_dir / "classes.csv", classes, CLASS_FIELDS),
            "evaluation": write_csv(sweep_dir / "evaluation.csv", evaluation, EVALUATION_FIELDS)}


def _mean(values: Any) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(numbers) / len(numbers) if numbers else None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
