"""Sweeps on a real local Ray instance (2 CPUs, one per module): a 2 x 2 sweep merges its results, a failing
run is reported while the others finish, a re-run skips finished runs, and the sequential fallback
(Ray not importable) gives the same merged table."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import ray

from explainnn.sweep import run_sweep
from explainnn.sweep.execute import PARTIAL, RECORD

TINY = ["data.name=digits", "training.epochs=3", "training.lr=0.01", "training.augment=false",
        "discovery.n_samples=10", "discovery.layers=[fc2, fc1]", "discovery.stability.enabled=false",
        "attribution.enabled=false", "evaluation.enabled=false", "analyses.views.enabled=false",
        "analyses.clustering.enabled=true", "analyses.clustering.n_samples=30", "analyses.clustering.max_clusters=3",
        "analyses.clustering.method=saliency", "plots.enabled=false", "report=true", "circuit.enabled=false"]
GRID = {"seed": [0, 1], "discovery.target_class": [3, 7]}
CHECKS = ("sufficiency", "necessity")
COMPARED = ("label", "seed", "discovery.target_class", "status", "error", "test_accuracy", "train_accuracy",
            "classes", "graph_units", "graph_fraction", "sufficiency", "necessity", "key", "folder", "report")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def grid_sweep(ray_session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid") / "sweep"
    spec = {"overrides": TINY, "grid": GRID, "sweep": {"output_dir": str(folder)}}
    return spec, run_sweep(spec, progress=False)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_2x2_sweep_on_ray_merges_every_run(grid_sweep):
    spec, result = grid_sweep
    assert result.backend.startswith("Ray (1 node, 2 CPUs")
    assert (result.ran, result.resumed, result.failed) == (4, 0, 0)
    rows = _rows(result.table)
    assert [(row["seed"], row["discovery.target_class"], row["status"]) for row in rows] == [
        ("0", "3", "ok"), ("0", "7", "ok"), ("1", "3", "ok"), ("1", "7", "ok")]
    for row in rows:
        folder = result.folder / row["folder"]
        assert (folder / RECORD).is_file() and (folder / "training.json").is_file()
        assert row["classes"] == row["discovery.target_class"]
        assert 0 < float(row["graph_units"]) and 0 < float(row["test_accuracy"]) <= 1
        assert row["sufficiency"] != "" and (result.folder / row["report"]).is_file()
    assert not (result.folder / PARTIAL).exists()
    assert len(list((result.folder / "models").glob("*.pt"))) == 2  # one model per seed, shared by its classes
    assert len(_rows(result.folder / "classes.csv")) == 4
    overlap = _rows(result.folder / "overlap.csv")
    assert sorted((row["comparison"], row["group"]) for row in overlap) == [
        ("across classes", "seed=0"), ("across classes", "seed=1"),
        ("across training seeds", "discovery.target_class=3, class=3"),
        ("across training seeds", "discovery.target_class=7, class=7")]
    assert all(0 <= float(row["jaccard"]) <= 1 for row in overlap)
    assert len(list((result.folder / "overlap").glob("classes_*.png"))) == 2  # a matrix picture per model
    agreement = _rows(result.folder / "agreement.csv")
    assert [(row["a"], row["b"]) for row in agreement] == [("seed 0", "seed 1")]  # one pair of models
    assert -1 <= float(agreement[0]["ari"]) <= 1
    report = (result.folder / "sweep_report.html").read_text()
    assert "Causal-graph overlap across classes" in report and f'href="{rows[0]["report"]}"' in report
    assert (result.folder / "sweep_report.md").is_file()


def test_a_failing_run_is_reported_while_the_others_finish(ray_session, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    spec = {"overrides": TINY + ["analyses.clustering.enabled=false", "report=false"],
            "runs": [{"seed": 0}, {"seed": 1, "model.checkpoint": str(corrupt), "training.train": "never"},
                     {"seed": 2}],
            "sweep": {"output_dir": str(tmp_path / "sweep")}}
    result = run_sweep(spec, progress=False)
    assert (result.ran, result.failed) == (3, 1)
    rows = _rows(result.table)
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert "checkpoint" in rows[1]["error"] and "\n" not in rows[1]["error"]
    assert rows[1]["folder"] == "" and (result.folder / "failed" / f"{rows[1]['key']}.log").is_file()
    assert "Failed runs" in (result.folder / "sweep_report.html").read_text()


def test_re_running_skips_finished_runs(grid_sweep):
    spec, first = grid_sweep
    stamps = {path: path.stat().st_mtime_ns for path in first.folder.glob("runs/*/*")}
    again = run_sweep(spec, progress=False)
    assert (again.ran, again.resumed, again.failed) == (0, 4, 0)
    assert {path: path.stat().st_mtime_ns for path in first.folder.glob("runs/*/*")} == stamps
    rows = _rows(again.table)
    assert all(row["resumed"] == "True" for row in rows)
    assert [[row[key] for key in COMPARED] for row in rows] == [
        [row[key] for key in COMPARED] for row in _rows(first.table)]


def test_the_sequential_fallback_gives_the_same_merged_table(grid_sweep, tmp_path, monkeypatch, capsys):
    spec, on_ray = grid_sweep
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    result = run_sweep({**spec, "sweep": {"output_dir": str(tmp_path / "sequential")}}, progress=False)
    assert result.backend == "sequential" and result.ran == 4
    assert capsys.readouterr().err.count("Ray is not installed") == 1
    ours, theirs = _rows(result.table), _rows(on_ray.table)
    exact = [key for key in COMPARED if key not in CHECKS]
    assert [[row[key] for key in exact] for row in ours] == [[row[key] for key in exact] for row in theirs]
    # the circuit checks' float sums may differ in the last digits between this process and a Ray worker
    for mine, other in zip(ours, theirs):
        assert [float(mine[key]) for key in CHECKS] == pytest.approx([float(other[key]) for key in CHECKS], rel=1e-3)
    assert _rows(result.folder / "overlap.csv") == _rows(on_ray.folder / "overlap.csv")
