"""The sweep's progress and timing, without Ray: a line per finished run and per analysis step where no
terminal shows a bar, the bars (and no such lines) on a terminal, and the total wall time up to the report."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
import torch

from explainnn.config import build_config
from explainnn.pipeline import Run
from explainnn.sweep import run_sweep
from explainnn.sweep.agreement import _dataset

TINY = ["data.name=digits", "training.epochs=3", "training.lr=0.01", "training.augment=false",
        "discovery.n_samples=10", "discovery.layers=[fc2, fc1]", "discovery.stability.enabled=false",
        "attribution.enabled=false", "evaluation.enabled=false", "analyses.views.enabled=false",
        "analyses.clustering.enabled=true", "analyses.clustering.n_samples=30", "analyses.clustering.max_clusters=3",
        "analyses.clustering.method=saliency", "circuit.enabled=false", "plots.enabled=false",
        "report=false"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("progress") / "sweep"
    return {"overrides": TINY, "grid": {"seed": [0, 1]},
            "sweep": {"backend": "sequential", "output_dir": str(folder)}}


@pytest.fixture(scope="module")
def logged(spec):
    """The sweep run once with stderr not a terminal (a log file, CI); its captured output and the outer time."""
    capture = pytest.MonkeyPatch()
    out, err = _Capture(), _Capture()
    capture.setattr(sys, "stdout", out)
    capture.setattr(sys, "stderr", err)
    try:
        started = time.perf_counter()
        result = run_sweep(spec)
        outer = time.perf_counter() - started
    finally:
        capture.undo()
    return result, out.getvalue(), err.getvalue(), outer


class _Capture:
    """A text stream that is not a terminal."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        return "".join(self.parts)


def test_in_a_log_each_run_and_each_analysis_step_is_one_line(logged):
    result, out, err, _ = logged
    assert (result.ran, result.failed) == (2, 0)
    lines = err.splitlines()
    assert "\r" not in err and not any("it/s" in line or "run/s" in line or "%|" in line for line in lines)  # no bar
    runs = [line for line in lines if line.startswith("sweep: run ")]
    assert [re.sub(r"\d+\.\d s", "S", line) for line in runs] == ["sweep: run 1 of 2 done: seed=0 (S)",
                                                                 "sweep: run 2 of 2 done: seed=1 (S)"]
    steps = [line for line in lines if line.startswith("sweep: step ")]
    assert len(steps) == 3, err  # overlap, one agreement group (seeds 0 and 1), report
    assert re.match(r"sweep: step 1 of 3: overlap of \d+ groups of causal graphs \(\d+ pairs\), \d+\.\d s$", steps[0])
    assert re.match(r"sweep: step 2 of 3: explanation-cluster agreement 1 of 1: 2 models \(seed 0, seed 1\), "
                    r"mean ARI -?\d\.\d\d, \d+\.\d s$", steps[1])
    assert steps[2].startswith("sweep: step 3 of 3: agreement pictures and report sweep_report.html")
    assert lines[-1] == f"sweep: done: {result.wall_seconds:.1f} s wall time in all"
    assert out == ""  # the agreement step loads the data without the pipeline's data line


def test_the_wall_time_covers_the_runs_the_analyses_and_the_report(logged):
    result, _, _, outer = logged
    assert result.wall_seconds <= outer and result.wall_seconds > outer - 0.5
    assert 0 < result.setup_seconds and 0 < result.runs_seconds and 0 < result.analysis_seconds
    parts = result.setup_seconds + result.runs_seconds + result.analysis_seconds
    assert result.wall_seconds - 0.5 < parts <= result.wall_seconds  # the three parts make up the whole
    # each run's own time is its own: the sum over the runs is at most the time running them (sequential)
    assert sum(run.record["seconds"] for run in result.runs) <= result.runs_seconds
    summary = result.summary()
    assert f"{result.wall_seconds:.1f} s wall time in all (setup {result.setup_seconds:.1f} s, running the runs " \
           f"{result.runs_seconds:.1f} s, overlap, agreement and report {result.analysis_seconds:.1f} s)" in summary
    report = (result.folder / "sweep_report.md").read_text()
    assert re.search(r"wall time up to this report \d+\.\d s: setup \(validating the configs, starting or joining "
                     r"Ray\) \d+\.\d s, running the runs \d+\.\d s, overlap and agreement \d+\.\d s", report)


def test_on_a_terminal_bars_show_and_the_step_lines_do_not(logged, spec, monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    again = run_sweep(spec)  # every run reused; the analyses run again
    err = capsys.readouterr().err
    assert again.resumed == 2 and again.ran == 0
    assert "sweep analyses" in err and "3/3" in err  # the analyses' bar, at its end
    assert "agreement 1 of 1" in err  # the step under way, beside the bar
    assert "sweep: step " not in err and "sweep: run " not in err
    assert "sweep: analysing 2 completed runs in 3 steps" in err


def test_without_progress_nothing_but_notes(logged, spec, capsys):
    run_sweep(spec, progress=False)
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["sweep: 2 of 2 runs already finished in "
                                        f"{Path(spec['sweep']['output_dir'])}; skipping them"]


def test_the_agreement_loads_the_same_data_as_the_run(tmp_path):
    config = build_config({}, [*TINY, f"output_dir={tmp_path}", "seed=1"])
    ours, pipeline = _dataset(config), Run(config).dataset
    assert torch.equal(ours.x_test, pipeline.x_test) and torch.equal(ours.y_test, pipeline.y_test)
    assert ours.info == pipeline.info
