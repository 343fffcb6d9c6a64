"""The command line's config file: a notice when none is found, and paths relative to the file that holds them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from explainnn.config import PATH_KEYS, Config, load_config

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "src" / "explainnn" / "main.py"
QUIET = ["progress=false", "discovery.enabled=false", "circuit.enabled=false", "attribution.enabled=false",
         "evaluation.enabled=false", "analyses.views.enabled=false", "analyses.clustering.enabled=false",
         "report=false", "plots.enabled=false", "device=cpu"]
TINY = [*QUIET, "data.name=digits", "training.epochs=1"]


def _main(args, cwd, monkeypatch, capsys):
    from explainnn.main import main

    monkeypatch.chdir(cwd)
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_no_config_file_is_announced_once_on_stderr(tmp_path):
    """The real command line in a folder without config.yaml: one notice naming the folder, then the run."""
    result = subprocess.run([sys.executable, str(MAIN), *TINY, "output_dir=out"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"explainnn: no config.yaml in {tmp_path}; using the built-in defaults (pass --config FILE)"]
    assert (tmp_path / "out" / "digits" / "lenet" / "model.pt").is_file()


def test_no_notice_with_a_config_file_or_a_mistake(tmp_path, monkeypatch, capsys):
    (tmp_path / "config.yaml").write_text("data:\n  name: digits\n")
    code, _, err = _main([*TINY, "output_dir=here"], tmp_path, monkeypatch, capsys)
    assert code == 0 and err == ""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, _, err = _main(["--config", str(tmp_path / "config.yaml"), *TINY, "output_dir=out"], elsewhere,
                         monkeypatch, capsys)
    assert code == 0 and err == ""
    # a mistake is its one line only; a given --config that is missing is an error, not the defaults
    code, _, err = _main([*TINY, "training.epochs=0"], elsewhere, monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("explainnn: error: training.epochs")
    code, _, err = _main(["--config", "config.yaml", *TINY], elsewhere, monkeypatch, capsys)
    assert code == 2 and err.splitlines() == ["explainnn: error: config file 'config.yaml' not found; pass --config "
                                              "PATH to a YAML file"]
    assert not (elsewhere / "output").exists()


def _string_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= _string_fields(annotation, (*prefix, name))
        elif annotation in (str, str | None):
            found.add((*prefix, name))
    return found


def test_path_keys_are_every_path_in_the_schema():
    """A new text key is either a path (listed in PATH_KEYS, resolved against the config file) or named here."""
    not_paths = {("data", "name"), ("model", "name"), ("discovery", "stability", "layer"),
                 ("attribution", "causal_paths_layer"), ("analyses", "views", "layer"),
                 ("analyses", "clustering", "method")}
    assert _string_fields(Config) == set(PATH_KEYS) | not_paths


def test_relative_paths_in_a_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    path = project / "configs" / "run.yaml"
    path.write_text(yaml.safe_dump({"output_dir": "../out", "data": {"root": "../data"},
                                    "model": {"checkpoint": "models/m.pt"}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert Path(config.data.root).resolve() == project / "data"
    assert Path(config.output_dir).resolve() == project / "out"
    assert Path(config.model.checkpoint or "").resolve() == project / "configs" / "models" / "m.pt"
    assert config.checkpoint_path().resolve() == project / "configs" / "models" / "m.pt"
    # the same file named relative to the current folder gives the same places
    relative = load_config(Path("..") / "project" / "configs" / "run.yaml")
    assert Path(relative.data.root).resolve() == project / "data" and relative.data.root == "../project/data"
    # overrides are relative to the current folder; so are the defaults of keys the file does not set
    config = load_config(path, ["data.root=mine", "model.checkpoint=m.pt"])
    assert config.data.root == "mine" and config.model.checkpoint == "m.pt"
    path.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "abs")}, "model": {"checkpoint": None}}))
    config = load_config(path)
    assert config.data.root == str(tmp_path / "abs") and config.model.checkpoint is None
    assert config.output_dir == "output"
    # a wrong type is still the schema's one-line error
    path.write_text("output_dir: [a, b]\n")
    with pytest.raises(Exception, match="output_dir: expected a string"):
        load_config(path)


def test_config_yaml_paths_are_unchanged_at_the_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    config = load_config("config.yaml")
    assert (config.data.root, config.output_dir) == ("data", "output")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_find_their_data_from_any_folder(path, tmp_path, monkeypatch):
    """Each config in configs/ reads the folder it means (the repository's data/, or ../shared/data for the
    CIFAR-10 images), named by an absolute path from another folder or relatively from the repository root."""
    wanted = ROOT.parent / "shared" / "data" if path.stem == "resnet_cifar10" else ROOT / "data"
    raw = yaml.safe_load(path.read_text())
    if "root" not in raw.get("data", {}):
        # mnist1d is generated locally (reads no files); mnist_maj is the base of a sweep, whose base config is
        # read as it is (its paths relative to the current folder), so it keeps the default data.root
        assert path.stem in ("mnist1d_lstm", "mnist_maj")
        return
    monkeypatch.chdir(tmp_path)
    assert Path(load_config(path).data.root).resolve() == wanted.resolve()
    monkeypatch.chdir(ROOT)
    assert Path(load_config(path.relative_to(ROOT)).data.root).resolve() == wanted.resolve()


def test_a_config_elsewhere_finds_its_images_and_writes_where_it_says(tmp_path, monkeypatch, capsys):
    """``--config /abs/project/configs/run.yaml`` run from another folder: the images next to the project are
    found (data.root: ../images) and the results land in the project (output_dir: ../out)."""
    from PIL import Image

    project = tmp_path / "project"
    for label, value in (("dark", 20), ("light", 230)):
        folder = project / "images" / label
        folder.mkdir(parents=True)
        for number in range(10):
            Image.new("L", (8, 8), value + number).save(folder / f"{number}.png")
    (project / "configs").mkdir()
    config = project / "configs" / "run.yaml"
    config.write_text("output_dir: ../out\ndata:\n  name: image_folder\n  root: ../images\n"
                      "discovery:\n  target_class: 1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = _main(["--config", str(config), *QUIET, "training.epochs=1"], elsewhere, monkeypatch, capsys)
    assert code == 0, err
    assert (project / "out" / "image_folder" / "lenet" / "model.pt").is_file()
    assert list(elsewhere.iterdir()) == []
    assert "image_folder: 16 train / 4 test" in out
