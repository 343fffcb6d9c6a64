"""Smoke run of benchmarks/circuit_edges.py (``--quick``, LeNet only): the CSV columns and the generated table."""

from __future__ import annotations

import csv
import importlib
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def edges_benchmark():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("circuit_edges")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_quick_run_writes_the_csvs_the_picture_and_the_table(edges_benchmark, shared_data, tmp_path):
    started = time.process_time()  # CPU time: on a shared machine the wall time also counts other processes
    code = edges_benchmark.main(["--quick", "--models", "lenet", "--classes", "3", "--ablations", "patch",
                                 "--threads", "1", "--root", str(shared_data), "--models-dir", str(tmp_path / "models"),
                                 "--output", str(tmp_path / "out"), "--doc", str(tmp_path / "circuit_edges.md")])
    seconds = time.process_time() - started
    assert code == 0
    folder = tmp_path / "out" / "lenet"
    with open(folder / "curves.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for column in ("model", "class", "method", "ablation", "metric", "budget_percent", "n_edges", "n_kept",
                   "faithfulness", "cpr", "cmd", "total_edges", "n_samples", "percent_for_0.8", "percent_for_0.9"):
        assert column in rows[0], column
    methods = {row["method"] for row in rows}
    assert {"explainnn", "eap", "eap_ig", "acdc", "nodes", "random"} <= methods
    assert len(rows) == len(methods) * len(edges_benchmark.BUDGETS)
    with open(folder / "summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 1
    for column in ("circuit_edges", "circuit_percent", "faithfulness_held_out", "seconds_circuit", "node_edges",
                   "ratio"):
        assert column in summary[0], column
    assert (folder / "lenet.png").stat().st_size > 0
    text = (tmp_path / "circuit_edges.md").read_text()
    assert "benchmarks/circuit_edges.py" in text and "torch" in text and "cores" in text
    assert "| model, class | ablation | method | CPR | CMD |" in text
    assert "| lenet, 3 | patch | explainnn |" in text
    assert seconds < 60, f"the quick run took {seconds:.0f} s of CPU time"
