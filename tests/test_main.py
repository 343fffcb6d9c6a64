"""The command line: one-line errors with exit code 2, and a tiny end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "src" / "explainnn" / "main.py"
QUIET = ["progress=false", "discovery.enabled=false", "attribution.enabled=false", "evaluation.enabled=false"]


def _run(args, cwd):
    return subprocess.run(
        [sys.executable, str(MAIN), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["discovery.targt_class=3"], "did you mean 'target_class'"),
        (["training.epochs=ten"], "training.epochs: expected an integer"),
        (["data.name=mnsit"], "did you mean 'mnist'"),
        (["--config", "nowhere.yaml"], "not found"),
        (["device=gpu"], "valid: auto, cpu, cuda"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path, args, fragment):
    result = _run(args, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("explainnn: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_target_class_out_of_range_for_the_dataset(tmp_path):
    result = _run([*QUIET, "data.name=digits", "discovery.target_class=12", "training.epochs=1"], tmp_path)
    assert result.returncode == 2
    assert "classes 0-9" in result.stderr and "Traceback" not in result.stderr


def test_never_train_without_checkpoint_is_a_user_error(tmp_path):
    result = _run([*QUIET, "data.name=digits", "training.train=never", f"output_dir={tmp_path}"], tmp_path)
    assert result.returncode == 2
    assert "never" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_end_to_end_train_then_load(tmp_path):
    args = [*QUIET, "data.name=digits", "training.epochs=2", "device=cpu", f"output_dir={tmp_path / 'out'}"]
    first = _run(args, tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "out" / "digits" / "lenet"
    assert (run_dir / "model.pt").is_file()
    assert (run_dir / "config.yaml").is_file()
    trained = json.loads((run_dir / "training.json").read_text())
    assert 0.0 <= trained["test_accuracy"] <= 1.0
    assert "Traceback" not in first.stderr
    second = _run(args, tmp_path)
    assert second.returncode == 0, second.stderr
    loaded = json.loads((run_dir / "training.json").read_text())
    assert loaded["test_accuracy"] == pytest.approx(trained["test_accuracy"])
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


@pytest.mark.slow
def test_discovery_step_writes_graph_checks_and_pictures(tmp_path):
    args = ["progress=false", "attribution.enabled=false", "evaluation.enabled=false", "data.name=digits",
            "training.epochs=10", "training.lr=0.003", "device=cpu", f"output_dir={tmp_path / 'out'}",
            "discovery.n_samples=20",
            "discovery.stability.betas=[0.0, 0.5]", "discovery.stability.repeats=2"]
    result = _run(args, tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / "digits" / "lenet" / "discovery" / "class_3"
    for name in ("graph.json", "graph.graphml", "edges.csv", "units.csv", "tests.csv", "graph.png",
                 "circuit.png", "stability.csv", "appearance.csv", "stability.png"):
        assert (folder / name).stat().st_size > 0, name
    from explainnn.causal import CausalGraph

    graph = CausalGraph.from_json(folder / "graph.json")
    assert graph.metadata["target"] == 3 and graph.metadata["dataset"] == "digits"
    assert {"circuit", "stability", "tests"} <= set(graph.results)
    assert "discovery   class 3:" in result.stdout
