"""Evaluation results on disk: tidy CSV tables, settings as JSON, attributions as ``.npz``.

Files written by :func:`save_results` into the evaluation folder:

* ``scores.csv``: the tidy table ``method, metric, sample, value`` (``sample``
  is the index in the dataset's test split; empty value = NaN);
* ``summary.csv``: per metric x method ``n, mean, std, median, ci_low, ci_high,
  direction, rank``;
* ``comparisons.csv``: the paired tests of the reference method against each
  baseline;
* ``skipped.csv``: every metric/method that did not run and why;
* ``timings.csv``: seconds per attribution and per metric run, the engine that ran the metric, and
  ``explain_seconds``: of those seconds, the time inside the attribution method (re-explanations);
* ``settings.json``: samples, method options and every metric's settings;
* ``attributions.npz``: the inputs as Quantus saw them (``x``, ``y``,
  ``samples``) and each method's attributions (load with
  ``numpy.load(path, allow_pickle=False)``).

:func:`load_tables` reads the tables back with their types (an :class:`EvaluationTables`), for reports.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from explainnn import files
from explainnn.files import write_json, write_npz

if TYPE_CHECKING:
    from explainnn.evaluation.evaluate import EvaluationResults

TABLES = {
    "scores": ("method", "metric", "sample", "value"),
    "summary": ("metric", "family", "direction", "method", "n", "n_missing", "mean", "std", "median", "ci_low",
                "ci_high", "rank"),
    "comparisons": ("metric", "direction", "reference", "baseline", "n_pairs", "mean_difference",
                    "median_difference", "statistic", "p_value", "p_adjusted", "correction", "reference_better",
                    "significant"),
    "skipped": ("metric", "method", "reason"),
    "timings": ("metric", "method", "engine", "seconds", "explain_seconds"),
}
_INTEGERS = {"sample", "n", "n_missing", "n_pairs"}
_FLOATS = {"value", "mean", "std", "median", "ci_low", "ci_high", "rank", "mean_difference", "median_difference",
           "statistic", "p_value", "p_adjusted", "seconds", "explain_seconds"}
_BOOLEANS = {"reference_better", "significant"}


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return value


def write_table(path: str | Path, rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> Path:
    """Write ``rows`` with columns ``fields`` atomically; None and NaN become empty cells."""
    return files.write_csv(path, ({key: _cell(row.get(key)) for key in fields} for row in rows), fields)


def _typed(key: str, text: str) -> Any:
    if key in _FLOATS:
        return float(text) if text != "" else float("nan") if key != "rank" else None
    if key in _INTEGERS:
        return int(text) if text != "" else None
    if key in _BOOLEANS:
        return {"True": True, "False": False}.get(text)
    return text


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a table written by :func:`write_table`, numbers and booleans restored."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{key: _typed(key, value) for key, value in row.items()} for row in csv.DictReader(handle)]


def save_results(results: EvaluationResults, folder: str | Path) -> dict[str, Path]:
    """Write an :class:`~explainnn.evaluation.evaluate.EvaluationResults` into ``folder``; return the paths."""
    folder = Path(folder)
    written = {name: write_table(folder / f"{name}.csv", getattr(results, name), fields)
               for name, fields in TABLES.items()}
    written["settings"] = write_json(folder / "settings.json", results.settings)
    arrays = {"x": results.x, "y": results.y, "samples": results.samples}
    arrays.update({f"attribution_{name}": values for name, values in results.attributions.items()})
    path = folder / "attributions.npz"
    write_npz(path, arrays)
    written["attributions"] = path
    return written


@dataclass
class EvaluationTables:
    """The tables of an evaluation folder, read back with their types; a table whose file is missing is None."""

    scores: list[dict[str, Any]] | None = None
    summary: list[dict[str, Any]] | None = None
    comparisons: list[dict[str, Any]] | None = None
    skipped: list[dict[str, Any]] | None = None
    timings: list[dict[str, Any]] | None = None
    settings: dict[str, Any] | None = None
    """``settings.json``."""


def load_tables(folder: str | Path) -> EvaluationTables:
    """The tables (and ``settings``) found in an evaluation folder; missing files are None."""
    folder = Path(folder)
    found = EvaluationTables()
    for name in TABLES:
        path = folder / f"{name}.csv"
        if path.is_file():
            setattr(found, name, read_csv(path))
    settings = folder / "settings.json"
    if settings.is_file():
        found.settings = json.loads(settings.read_text(encoding="utf-8"))
    return found
