"""Sweep files without Ray: expansion into runs, one-line errors before anything runs, hashing,
causal-graph overlap arithmetic, and the fault isolation of one run (failure, Ctrl-C)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

import explainnn.pipeline
from explainnn.config import build_config
from explainnn.errors import ConfigError
from explainnn.main import main
from explainnn.sweep import load_sweep, run_sweep
from explainnn.sweep.execute import FAILED, PARTIAL, RUNS, execute_run
from explainnn.sweep.overlap import chance_jaccard, jaccard
from explainnn.sweep.results import ClassResult
from explainnn.sweep.spec import config_hash, override_text


def _write(tmp_path: Path, document: dict | str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def test_grid_every_combination_is_one_run(tmp_path):
    sweep = load_sweep({"overrides": ["analyses.views.enabled=false"],
                        "grid": {"seed": [0, 1, 2], "discovery.target_class": [3, 7]},
                        "sweep": {"output_dir": str(tmp_path / "out")}})
    assert len(sweep.runs) == 6
    assert [run.values for run in sweep.runs[:3]] == [{"seed": 0, "discovery.target_class": 3},
                                                       {"seed": 0, "discovery.target_class": 7},
                                                       {"seed": 1, "discovery.target_class": 3}]
    assert sweep.runs[1].label == "seed=0 discovery.target_class=7"
    assert all(not run.config.analyses.views.enabled for run in sweep.runs)
    assert sweep.runs[5].config.seed == 2 and sweep.runs[5].config.discovery.target_class == 7
    assert len({run.key for run in sweep.runs}) == 6
    assert sweep.varied == ["seed", "discovery.target_class"]
    assert sweep.output_dir == tmp_path / "out"


def test_runs_list_accepts_override_strings_and_mappings_and_combines_with_grid(tmp_path):
    sweep = load_sweep({"runs": [["model.name=lstm", "model.params.num_layers=2"], {"model.name": "gru"}],
                        "grid": {"seed": [0, 1]}})
    assert [run.label for run in sweep.runs] == [
        "model.name=lstm model.params.num_layers=2 seed=0", "model.name=lstm model.params.num_layers=2 seed=1",
        "model.name=gru seed=0", "model.name=gru seed=1"]
    assert sweep.runs[0].config.model.params == {"num_layers": 2}
    assert sweep.runs[3].config.model.name == "gru" and sweep.runs[3].config.seed == 1
    assert sweep.output_dir == Path("output") / "sweeps" / "sweep"


def test_base_file_and_command_line_overrides_apply_to_every_run(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("seed: 4\ntraining:\n  epochs: 2\n")
    sweep = load_sweep({"base": str(base), "grid": {"discovery.target_class": [1, 2]}}, ["training.lr=0.01"])
    assert all(run.config.seed == 4 and run.config.training.epochs == 2 and run.config.training.lr == 0.01
               for run in sweep.runs)


def test_hash_ignores_where_results_go_but_not_what_shapes_them():
    a = build_config({}, ["seed=1"])
    assert config_hash(a) == config_hash(build_config({}, ["seed=1", "output_dir=elsewhere", "progress=false"]))
    assert config_hash(a) != config_hash(build_config({}, ["seed=2"]))
    assert config_hash(a) != config_hash(build_config({}, ["seed=1", "discovery.alpha=0.01"]))


@pytest.mark.parametrize("value", ["lstm", 3, 0.5, True, None, [1, 2], "all", "007", "true", "1e3"])
def test_override_text_reads_back_as_the_value(value):
    from explainnn.config import parse_override

    assert parse_override(override_text("a.b", value))[1] == value


@pytest.mark.parametrize(("document", "expected"), [
    ({"gird": {"seed": [0]}}, "unknown key 'gird' (did you mean 'grid'?); valid keys: base, overrides, grid, runs, "
                              "sweep"),
    ({"grid": {"seed": 3}}, "grid.seed: expected a list, got 3"),
    ({"grid": {"seed": []}}, "grid: 'seed' lists no values; give at least one"),
    ({"overrides": ["seed=1"]}, "a sweep needs a 'grid'"),
    ({"grid": {"seed": [0]}, "sweep": {"backend": "rey"}}, "sweep.backend: 'rey' is not a valid choice (did you "
                                                            "mean 'ray'?)"),
    ({"grid": {"seed": [0]}, "sweep": {"resources": {"num_cpu": 1}}}, "unknown key 'sweep.resources.num_cpu' in "
                                                                     "section 'sweep.resources' (did you mean "
                                                                     "'num_cpus'?)"),
    ({"grid": {"seed": [0, -1]}}, "run 2 (seed=-1): seed: must be >= 0, got -1"),
    ({"grid": {"discovery.targt_class": [1]}}, "run 1 (discovery.targt_class=1): unknown key "
                                               "'discovery.targt_class' in section 'discovery' (did you mean "
                                               "'target_class'?)"),
    ({"runs": [["seed=1"], ["seed"]]}, "runs entry 2: override 'seed' must look like section.key=value"),
    ({"runs": [["seed=1"], {"seed": 1}]}, "runs 1 (seed=1) and 2 (seed=1) resolve to the same config"),
    ({"base": "missing.yaml", "grid": {"seed": [0]}}, "config file 'missing.yaml' not found"),
    ("grid: [seed\n", "sweep.yaml: "),
    ("- 1\n", "the top level must be a mapping of sections (base, overrides, grid, runs, sweep)"),
])
def test_bad_sweep_files_give_one_line_and_exit_2_before_anything_runs(tmp_path, capsys, monkeypatch, document,
                                                                        expected):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, document)
    assert main(["--sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("explainnn: error: ") and err.count("\n") == 1 and expected in err
    assert not (tmp_path / "output").exists()


def test_ray_backend_without_ray_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    path = _write(tmp_path, {"grid": {"seed": [0]}, "sweep": {"backend": "ray", "output_dir": str(tmp_path / "o")}})
    assert main(["--sweep", str(path)]) == 2
    assert "sweep.backend: 'ray' needs Ray, which is not installed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_config_and_sweep_do_not_mix(tmp_path, capsys):
    path = _write(tmp_path, {"grid": {"seed": [0]}})
    assert main(["--config", "config.yaml", "--sweep", str(path)]) == 2
    assert "--config and --sweep do not mix" in capsys.readouterr().err


def _graph(units: dict[str, list[int]], sizes: dict[str, int]) -> ClassResult:
    ids = frozenset(f"{layer}:{i}" for layer, indices in units.items() for i in indices)
    return ClassResult(0, ids, {layer: len(v) for layer, v in units.items()}, sizes, {}, Path("graph.json"))


def test_jaccard_and_its_chance_level():
    assert jaccard(frozenset({"a:1", "a:2", "b:1"}), frozenset({"a:2", "b:1", "b:2"})) == pytest.approx(2 / 4)
    assert jaccard(frozenset(), frozenset()) != jaccard(frozenset(), frozenset())  # NaN
    a = _graph({"fc1": list(range(10)), "fc2": [0, 1]}, {"fc1": 100, "fc2": 4})
    b = _graph({"fc1": list(range(20)), "fc2": [0, 1]}, {"fc1": 100, "fc2": 4})
    shared = 10 * 20 / 100 + 2 * 2 / 4  # expected intersection of random sets per layer
    assert chance_jaccard(a, b) == pytest.approx(shared / (12 + 22 - shared))


def _tiny_tree(tmp_path: Path) -> dict:
    return build_config({}, [f"output_dir={tmp_path}", "data.name=digits"]).model_dump(mode="json")


def test_a_failing_run_is_recorded_with_one_line_and_leaves_no_run_folder(tmp_path, monkeypatch):
    def fail(config, *overrides, run_dir=None, out=None):
        Path(run_dir, "half_written.txt").write_text("x")
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(explainnn.pipeline, "run", fail)
    record = execute_run(_tiny_tree(tmp_path), "abc", str(tmp_path))
    assert record["status"] == "failed" and record["error"] == "RuntimeError: boom"
    assert not (tmp_path / RUNS / "abc").exists() and not any((tmp_path / PARTIAL).iterdir())
    assert "Traceback" in (tmp_path / FAILED / "abc.log").read_text()


def test_ctrl_c_leaves_only_complete_run_folders(tmp_path, monkeypatch):
    def interrupted(config, *overrides, run_dir=None, out=None):
        Path(run_dir, "training.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(explainnn.pipeline, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        execute_run(_tiny_tree(tmp_path), "abc", str(tmp_path))
    assert not (tmp_path / RUNS).exists() and not any((tmp_path / PARTIAL).iterdir())


def test_sequential_sweep_records_failures_and_goes_on(tmp_path, monkeypatch, capsys):
    calls = []

    def flaky(config, *overrides, run_dir=None, out=None):
        calls.append(config.seed)
        if config.seed == 1:
            raise ConfigError("discovery.target_class: 12 is out of range")
        Path(run_dir, "training.json").write_text('{"test_accuracy": 0.5}')

    monkeypatch.setattr(explainnn.pipeline, "run", flaky)
    spec = {"grid": {"seed": [0, 1, 2]}, "sweep": {"backend": "sequential", "output_dir": str(tmp_path / "s")}}
    result = run_sweep(spec, progress=False)
    assert calls == [0, 1, 2] and result.failed == 1 and result.ran == 3
    rows = (tmp_path / "s" / "runs.csv").read_text().splitlines()
    assert len(rows) == 4 and ",failed,discovery.target_class: 12 is out of range," in rows[2]
    assert "run 2 (seed=1) failed: discovery.target_class: 12 is out of range" in capsys.readouterr().err
    again = run_sweep(spec, progress=False)  # finished runs are skipped, the failed one is retried
    assert calls == [0, 1, 2, 1] and again.resumed == 2 and again.ran == 1
    assert not (tmp_path / "s" / PARTIAL).exists()


@pytest.mark.parametrize("name", ["lenet_seeds.yaml", "architectures_mnist_maj.yaml"])
def test_the_shipped_sweep_files_are_valid(name, monkeypatch):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)  # their paths are relative to the project folder
    sweep = load_sweep(root / "sweeps" / name)
    assert len(sweep.runs) >= 5 and sweep.output_dir == Path("output") / "sweeps" / Path(name).stem


def test_the_command_line_prints_the_sweep_folder_last(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(explainnn.pipeline, "run", lambda config, *o, run_dir=None, out=None: None)
    path = _write(tmp_path, {"grid": {"seed": [0, 1]},
                             "sweep": {"backend": "sequential", "output_dir": str(tmp_path / "s")}})
    assert main(["--sweep", str(path), "training.epochs=1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(tmp_path / "s") and "2 runs on sequential: 2 ran, 0 reused, 0 failed" in out[-2]
    assert (tmp_path / "s" / "runs.csv").is_file() and (tmp_path / "s" / "sweep_report.html").is_file()
