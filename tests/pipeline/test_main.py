"""The command line: one-line errors with exit code 2, and a tiny end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "src" / "explainnn" / "main.py"
QUIET = ["progress=false", "discovery.enabled=false", "circuit.enabled=false", "attribution.enabled=false",
         "evaluation.enabled=false", "analyses.views.enabled=false", "analyses.clustering.enabled=false", "report=false"]


def _run(args, cwd):
    return subprocess.run(
        [sys.executable, str(MAIN), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_the_script_reports_a_mistake_in_one_line_with_exit_2(tmp_path):
    """The real command line (a subprocess); the other mistakes below run ``main`` in-process, which is faster."""
    result = _run(["discovery.targt_class=3", f"output_dir={tmp_path / 'out'}"], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("explainnn: error: ") and "did you mean 'target_class'" in lines[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def _main_fails_cleanly(args, tmp_path, monkeypatch, capsys) -> str:
    """Run ``main`` in-process: exit code 2, one line on stderr, and nothing in the output folder.

    ``tmp_path`` has no config.yaml, so a valid config is announced as the built-in defaults first (that
    notice is not part of the error).
    """
    from explainnn.main import main, no_config_notice

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = main([*args, f"output_dir={out}"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if line != no_config_notice()]
    assert code == 2, captured.out + captured.err
    assert len(lines) == 1 and lines[0].startswith("explainnn: error: "), captured.err
    assert not out.exists(), sorted(out.rglob("*"))
    return lines[0]


def _write(path: Path, content: bytes | str) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


@pytest.mark.parametrize(
    "config_file, fragment",
    [
        (None, "not found"),
        ("folder", "is a folder"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20, "not a text file"),
        ("data:\n  name: [unclosed\n", "at line"),
        ("- a list\n", "top level must be a mapping"),
        ("discovery:\n  true: nodes\n", "YAML 1.1"),
        ("discovery:\n  on: nodes\n", "discovery: has a key 'on', which is not a key of this section; write "
                                      "intervene_on: edges|nodes"),
    ],
    ids=["missing", "folder", "binary", "invalid-yaml", "not-a-mapping", "yaml-1.1-on", "on"],
)
def test_bad_config_files(tmp_path, monkeypatch, capsys, config_file, fragment):
    if config_file is None:
        path = str(tmp_path / "nowhere.yaml")
    elif config_file == "folder":
        (tmp_path / "configs").mkdir()
        path = str(tmp_path / "configs")
    else:
        path = _write(tmp_path / "config.yaml", config_file)
    assert fragment in _main_fails_cleanly(["--config", path], tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["discovery.targt_class=3"], "did you mean 'target_class'"),                     # unknown key
        (["trainig.epochs=3"], "did you mean 'training'"),
        (["training.epochs=ten"], "expected an integer"),                                 # wrong type
        (["training.lr=-1"], "training.lr: must be > 0"),                                  # out of range
        (["discovery.alpha=2"], "discovery.alpha: must be < 1"),
        (["data.name=mnsit"], "did you mean 'mnist'"),                                     # unknown names
        (["model.name=bert"], "model.name"),
        (["model.name=transformer"], "use vit for images"),                               # model and data disagree
        (["attribution.methods=[saliency, integrated_gradient]"], "did you mean 'integrated_gradients'"),
        (["evaluation.metrics=[IROFF]", "evaluation.options={}"], "not a valid metric"),
        (["discovery.intervention=medium"], "discovery.intervention: 'medium'"),
        (["discovery.intervene_on=nodes", "discovery.test=ztest"], "needs intervene_on: edges"),  # combinations
        (["discovery.on=nodes"], "has a key 'on', which is not a key of this section; write intervene_on"),
        (["training.epochs"], "section.key=value"),                                       # malformed overrides
        (["=3"], "empty key"),
        (["seed.x=1"], "is a value, not a section"),
        (["attribution.methods=[saliency"], "expected a list"),
        (["device=gpu"], "valid: auto, cpu, cuda"),
    ],
)
def test_config_mistakes_stop_before_any_work(tmp_path, monkeypatch, capsys, args, fragment):
    assert fragment in _main_fails_cleanly(args, tmp_path, monkeypatch, capsys)


def test_missing_and_corrupt_checkpoints(tmp_path, monkeypatch, capsys):
    digits = [*QUIET, "data.name=digits", "training.epochs=1"]
    message = _main_fails_cleanly([*digits, "training.train=never"], tmp_path, monkeypatch, capsys)
    assert "not found" in message and "never" in message
    corrupt = _write(tmp_path / "broken.pt", b"not a checkpoint at all" * 10)
    message = _main_fails_cleanly([*digits, f"model.checkpoint={corrupt}"], tmp_path, monkeypatch, capsys)
    assert "broken.pt" in message
    truncated = _write(tmp_path / "truncated.pt", b"PK\x03\x04" + b"\x00" * 40)
    message = _main_fails_cleanly([*digits, f"model.checkpoint={truncated}"], tmp_path, monkeypatch, capsys)
    assert "truncated.pt" in message


def test_missing_data_files_and_failed_downloads(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "no-data"
    empty.mkdir()
    message = _main_fails_cleanly([*QUIET, "data.name=fashion_mnist", f"data.root={empty}"], tmp_path, monkeypatch,
                                  capsys)
    assert "fashion_mnist" in message

    def offline(*args, **kwargs):
        import urllib.error

        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    message = _main_fails_cleanly([*QUIET, "data.name=fashion_mnist", f"data.root={empty}", "data.download=true"],
                                  tmp_path, monkeypatch, capsys)
    assert "fashion_mnist" in message or "download" in message


def test_target_class_out_of_range_for_the_dataset(tmp_path, monkeypatch, capsys):
    message = _main_fails_cleanly([*QUIET, "data.name=digits", "discovery.target_class=12"], tmp_path, monkeypatch,
                                  capsys)
    assert "classes 0-9" in message


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


SMALL_RUN = ["progress=false", "data.name=digits", "training.epochs=10", "training.lr=0.003", "device=cpu",
             "discovery.n_samples=20", "discovery.stability.betas=[0.0, 0.5]", "discovery.stability.repeats=2",
             "attribution.methods=[causal, saliency, integrated_gradients]", "attribution.n_samples=3",
             "evaluation.metrics=[Sparseness, RandomLogit]", "evaluation.options={}", "evaluation.n_samples=4",
             "analyses.views.enabled=false", "analyses.clustering.enabled=false", "report=false", "circuit.mib=false"]
SAME_FILES = ["discovery/class_3/graph.json", "discovery/class_3/tests.csv", "discovery/class_3/edges.csv",
              "discovery/class_3/units.csv", "discovery/class_3/stability.csv", "attributions/class_3/attributions.npz",
              "evaluation/scores.csv", "evaluation/summary.csv"]


def machine_key() -> str:
    """What a run's floats depend on besides the code: CPU model, architecture, torch and numpy builds, threads.

    Training and every float after it differ across CPUs (vector width, summation
    order), so exact reference numbers are only ever compared on the machine
    that wrote them.
    """
    import platform

    import numpy as np
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{platform.machine()} {cpu} torch {torch.__version__} numpy {np.__version__} threads 1"


def run_fingerprint(run_dir: Path) -> dict[str, object]:
    """What a ``SMALL_RUN`` folder's numbers are, flat: ``{name: number or text}``.

    Training accuracy; the graph's units and edges with each edge's effect; every
    tested candidate's effect, p-value and decision; the stability sweep; sums of
    each attribution map; every evaluation score.
    """
    import csv

    import numpy as np

    folder = run_dir / "discovery" / "class_3"
    found: dict[str, object] = {}
    found["test_accuracy"] = json.loads((run_dir / "training.json").read_text())["test_accuracy"]
    graph = json.loads((folder / "graph.json").read_text())["graph"]
    found["units"] = " ".join(sorted(node["id"] for node in graph["nodes"]))
    for edge in graph["edges"]:
        found[f"edge {edge['source']}->{edge['target']}"] = edge["effect"]

    def rows(path: Path) -> list[dict[str, str]]:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))

    for row in rows(folder / "tests.csv"):
        key = f"test {row['layer']}:{row['candidate']}->{row.get('child', '')}"
        found[key + " effect"], found[key + " p"] = float(row["effect"]), float(row["p_value"])
        found[key + " kept"] = row["kept"]
    for row in rows(folder / "stability.csv"):
        found[f"stability beta {row['beta']} repeat {row['repeat']}"] = float(row["jaccard"])
    with np.load(run_dir / "attributions" / "class_3" / "attributions.npz") as maps:
        for name in maps.files:
            found[f"attribution {name} sum"] = float(np.sum(maps[name], dtype=np.float64))
            found[f"attribution {name} abs"] = float(np.sum(np.abs(maps[name]), dtype=np.float64))
    for number, row in enumerate(rows(run_dir / "evaluation" / "scores.csv")):
        for key, value in row.items():
            try:
                found[f"score {number} {key}"] = float(value)
            except ValueError:
                found[f"score {number} {key}"] = value
    return found


def assert_same_fingerprint(found: dict[str, object], expected: dict[str, object]) -> None:
    """Same names, same texts, numbers equal to float32 round-off (NaN equals NaN)."""
    assert sorted(found) == sorted(expected)
    for key, value in expected.items():
        if isinstance(value, float):
            assert found[key] == pytest.approx(value, rel=1e-5, abs=1e-7, nan_ok=True), key
        else:
            assert found[key] == value, key


def assert_portable_fingerprint(found: dict[str, object]) -> None:
    """What holds for ``SMALL_RUN`` on any CPU: training worked, the graph is whole, every number is in range."""
    import math

    assert 0.8 <= float(found["test_accuracy"]) <= 1.0  # type: ignore[arg-type]
    units = str(found["units"]).split()
    layers = {unit.split(":")[0] for unit in units}
    assert "fc3:3" in units and {"fc2", "fc1", "conv2", "conv1", "input"} <= layers, units
    edges = [key for key in found if key.startswith("edge ")]
    assert edges and all(float(found[key]) < 0 for key in edges)  # type: ignore[arg-type]  # kept: the logit drops
    tested = [key[: -len(" kept")] for key in found if key.startswith("test ") and key.endswith(" kept")]
    assert tested and all(0.0 <= float(found[key + " p"]) <= 1.0 for key in tested  # type: ignore[arg-type]
                          if not math.isnan(float(found[key + " p"])))  # type: ignore[arg-type]
    assert all(0.0 <= float(found[key]) <= 1.0 for key in found if key.startswith("stability "))  # type: ignore
    assert {"attribution causal abs", "attribution saliency abs", "attribution integrated_gradients abs"} <= set(found)
    assert any(key.startswith("score ") for key in found)


@pytest.mark.slow
def test_a_run_writes_graph_checks_and_pictures_and_python_gives_the_same_files(tmp_path, request):
    """The command line and ``explainnn.pipeline.run`` from Python: same config and seed, byte-identical results.

    Portable checks hold on any CPU (structure, ranges, a model that learned).
    The exact numbers are compared with those this machine gave on an earlier
    run (pytest's cache, keyed by :func:`machine_key`; never committed, so a
    fresh clone records them first): clear them with ``pytest --cache-clear``
    when a change is meant to alter results.
    """
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count as this process (conftest: one_thread)
    result = subprocess.run([sys.executable, str(MAIN), *SMALL_RUN, f"output_dir={tmp_path / 'out'}"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "out" / "digits" / "lenet"
    folder = run_dir / "discovery" / "class_3"
    for name in ("graph.json", "graph.graphml", "edges.csv", "units.csv", "tests.csv", "graph.png",
                 "circuit.png", "stability.csv", "appearance.csv", "stability.png"):
        assert (folder / name).stat().st_size > 0, name
    from explainnn.causal import CausalGraph

    graph = CausalGraph.from_json(folder / "graph.json")
    assert graph.metadata["target"] == 3 and graph.metadata["dataset"] == "digits"
    assert {"circuit", "stability", "tests"} <= set(graph.results)
    assert "discovery   class 3:" in result.stdout and "checks      class 3: sufficiency" in result.stdout

    from explainnn.config import build_config
    from explainnn.pipeline import run

    context = run(build_config(overrides=SMALL_RUN), run_dir=tmp_path / "python")
    assert sorted(context.graphs) == [3] and set(context.attributions[3]) == {"causal", "saliency",
                                                                             "integrated_gradients"}
    for name in SAME_FILES:
        assert (tmp_path / "python" / name).read_bytes() == (run_dir / name).read_bytes(), name
    found = run_fingerprint(tmp_path / "python")
    assert_portable_fingerprint(found)
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    key = "explainnn/small_run/" + machine_key().replace("/", "_")
    earlier = cache.get(key, None) if cache is not None else None
    if earlier is None and cache is not None:
        cache.set(key, found)
    elif earlier is not None:
        assert_same_fingerprint(found, earlier)

    from explainnn import Run

    lazy = Run(build_config(overrides=[*SMALL_RUN, "training.train=never", f"model.checkpoint={run_dir / 'model.pt'}"]),
               run_dir=tmp_path / "lazy")
    assert lazy.graph == graph and lazy.done == ["data", "model", "discovery", "checks"]
    assert lazy.faithfulness.to_dict() == graph.results["circuit"]
    assert lazy.stability.summary() == graph.results["stability"]
    assert not (tmp_path / "lazy" / "attributions").exists()


def _readme_python_example() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\n", readme.index("### Explain your own model from Python")) + len("```python\n")
    return readme[start : readme.index("```", start)]


@pytest.mark.slow
def test_readme_python_example_runs_as_printed(tmp_path):
    """The README's own-model example, pasted into a fresh Python in an empty folder."""
    result = subprocess.run([sys.executable, "-c", _readme_python_example()], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CausalGraph:" in result.stdout and "features.0" in result.stdout
    assert (tmp_path / "graph.json").is_file() and (tmp_path / "graph.png").is_file()
