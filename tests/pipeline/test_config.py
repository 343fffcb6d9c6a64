"""Config validation: every class of bad input gives one line naming key, value and valid options."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from explainnn.config import Config, build_config, dump_config, load_config, parse_override, read_yaml
from explainnn.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _error(raw=None, overrides=()):
    with pytest.raises(ConfigError) as info:
        build_config(raw, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_config_yaml_equals_the_schema_defaults(monkeypatch):
    monkeypatch.chdir(ROOT)  # its relative paths are relative to its folder, the repository root
    assert load_config("config.yaml") == Config()
    assert build_config(read_yaml(ROOT / "config.yaml")) == Config()


def test_every_schema_key_is_commented_in_config_yaml():
    text = (ROOT / "config.yaml").read_text()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped:
            key, rest = stripped.split(":", 1)
            if rest.strip():  # leaf keys carry a value and a comment
                assert "#" in rest, f"config.yaml key {key!r} has no comment"


def test_unknown_key_suggests_the_closest():
    message = _error({"discovery": {"targt_class": 3}})
    assert "discovery.targt_class" in message
    assert "did you mean 'target_class'" in message
    assert "valid keys:" in message


def test_unknown_top_level_section():
    message = _error({"trainig": {}})
    assert "'trainig'" in message and "did you mean 'training'" in message


def test_wrong_type():
    message = _error({"training": {"epochs": "ten"}})
    assert message == "training.epochs: expected an integer, got 'ten'"


def test_out_of_range():
    message = _error({"training": {"lr": -1}})
    assert message == "training.lr: must be > 0, got -1"
    assert "discovery.alpha" in _error({"discovery": {"alpha": 1.5}})


def test_invalid_choice_lists_valid_options():
    message = _error({"discovery": {"intervene_on": "edge"}})
    assert "discovery.intervene_on: 'edge' is not a valid choice" in message
    assert "did you mean 'edges'" in message and "edges, nodes" in message


def test_invalid_choice_names_the_key_not_the_section():
    assert _error({"discovery": {"intervention": "medium"}}).startswith("discovery.intervention: 'medium'")
    assert _error(overrides=["training.train=sometimes"]).startswith("training.train: 'sometimes'")


def test_on_is_not_a_key_and_the_error_names_intervene_on(tmp_path):
    expected = "discovery: has a key 'on', which is not a key of this section; write intervene_on: edges|nodes"
    assert _error({"discovery": {"on": "nodes"}}) == expected
    assert _error(overrides=["discovery.on=nodes"]) == expected
    path = tmp_path / "config.yaml"
    path.write_text("discovery:\n  on: nodes\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == expected
    assert "intervene_on: edges" in dump_config(Config())


def test_a_config_written_by_a_yaml_11_tool_names_the_fix(tmp_path):
    """PyYAML's safe_load reads the key ``on`` as True; the error says what happened and what to write."""
    raw = yaml.safe_load("discovery:\n  on: nodes\n")
    assert True in raw["discovery"]
    message = _error(raw)
    assert "YAML 1.1" in message and "intervene_on" in message
    path = tmp_path / "tool.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="intervene_on"):
        load_config(path)
    # The new key name survives a YAML 1.1 round trip.
    config = build_config(overrides=["discovery.intervene_on=nodes"])
    assert build_config(yaml.safe_load(yaml.safe_dump(config.model_dump(mode="json")))) == config


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"attribution": {"methods": ["integrated_gradient"]}}, "did you mean 'integrated_gradients'"),
        ({"attribution": {"options": {"limes": {"n_samples": 5}}}}, "attribution.options: 'limes'"),
        ({"evaluation": {"metrics": ["IROFF"], "options": {}}}, "evaluation.metrics: 'IROFF' is not a valid metric"),
        ({"evaluation": {"methods": ["salincy"]}}, "evaluation.methods: 'salincy'"),
        ({"analyses": {"text": {"methods": ["leave_one_ou"]}}}, "analyses.text.methods"),
        ({"analyses": {"clustering": {"method": "ig"}}}, "analyses.clustering.method: 'ig'"),
    ],
)
def test_unknown_method_and_metric_names(raw, fragment):
    assert fragment in _error(raw)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"discovery": {"intervene_on": "nodes", "test": "ztest"}}, "needs intervene_on: edges"),
        ({"discovery": {"intervention": "soft", "test": "ztest"}}, "intervention: hard"),
        ({"evaluation": {"metrics": ["IROF"]}}, "settings for 'LocalLipschitzEstimate'"),
    ],
)
def test_incompatible_combinations(raw, fragment):
    assert fragment in _error(raw)


def test_unknown_dataset_and_model_list_the_registry():
    message = _error({"data": {"name": "mnsit"}})
    assert "data.name" in message and "did you mean 'mnist'" in message and "sst2" in message
    message = _error({"model": {"name": "bert"}})
    assert "model.name" in message and "lenet" in message and "lstm" in message


@pytest.mark.parametrize("bad", ["seven", -1, True, 2.5])
def test_target_class_must_be_index_or_all(bad):
    message = _error({"discovery": {"target_class": bad}})
    assert message.startswith("discovery.target_class")


def test_target_class_all_and_int():
    assert build_config({"discovery": {"target_class": "all"}}).discovery.target_class == "all"
    assert build_config(overrides=["discovery.target_class=7"]).discovery.target_class == 7


def test_stability_betas_range():
    message = _error({"discovery": {"stability": {"betas": [0.1, 2.0]}}})
    assert message == "discovery.stability.betas: every beta must be in [0, 1], got 2.0"


def test_section_given_as_scalar():
    message = _error({"training": 5})
    assert message.startswith("training: expected a section")


def test_overrides_are_typed_and_validated():
    config = build_config(overrides=["training.epochs=3", "discovery.layers=[fc2, fc1]", "device=cpu"])
    assert config.training.epochs == 3
    assert config.discovery.layers == ["fc2", "fc1"]
    assert "did you mean 'epochs'" in _error(overrides=["training.epoch=3"])
    assert "expected an integer" in _error(overrides=["training.epochs=many"])


def test_override_syntax_errors():
    assert "section.key=value" in _error(overrides=["training.epochs"])
    assert "empty key" in _error(overrides=["training..epochs=3"])
    assert "empty key" in _error(overrides=["=3"])
    assert "expected a list" in _error(overrides=["attribution.methods=[saliency"])
    assert "expected a section" in _error(overrides=["discovery=7"])
    assert "is a value, not a section" in _error(overrides=["seed.x=1"])
    assert parse_override("data.options.max_len=20") == (["data", "options", "max_len"], 20)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(binary)


def test_dump_round_trips():
    config = build_config({"seed": 5, "discovery": {"target_class": "all", "intervene_on": "nodes"}})
    assert build_config(yaml.safe_load(dump_config(config))) == config


def test_training_hash_tracks_what_shapes_the_weights():
    base = Config()
    assert base.training_hash() == Config().training_hash()
    assert base.training_hash() != build_config({"training": {"epochs": 2}}).training_hash()
    assert base.training_hash() == build_config({"discovery": {"target_class": 5}}).training_hash()
    assert base.training_hash() == build_config({"data": {"root": "elsewhere"}}).training_hash()


def test_paths():
    config = build_config({"output_dir": "out", "data": {"name": "digits"}})
    assert config.run_dir() == Path("out/digits/lenet")
    assert config.checkpoint_path() == Path("out/digits/lenet/model.pt")


def _readme_table_keys() -> set[str]:
    """The keys the configuration reference (docs/configuration.md, generated from the schema) documents, one per
    row; a section's own row names the section."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    return {row.split("|")[1].strip().strip("`") for row in text.splitlines() if row.startswith("| `")}


def _schema_keys(model: type[BaseModel] = Config, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _schema_keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_readme_config_reference_documents_every_key_and_no_other():
    documented = _readme_table_keys()
    sections = {key for key in documented if any(k.startswith(key + ".") for k in _schema_keys())}
    covered = {key for key in _schema_keys() if key in documented or any(key.startswith(s + ".") for s in sections)}
    assert covered == _schema_keys(), f"undocumented keys: {sorted(_schema_keys() - covered)}"
    unknown = documented - _schema_keys() - sections
    assert not unknown, f"the README documents keys the schema lacks: {sorted(unknown)}"


def test_readme_table_parser_sees_a_missing_key():
    assert "discovery.alpha" in _readme_table_keys() and "training.batch_size" in _readme_table_keys()
    assert "discovery.no_such_key" not in _readme_table_keys()
