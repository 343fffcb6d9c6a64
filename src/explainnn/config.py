"""The run configuration: schema, loading, command-line overrides, one-line errors.

``config.yaml`` is the user's main interface, so every mistake in it must come
back as a single line naming the key, the bad value and what is valid. The
schema is a tree of pydantic models with ``extra="forbid"``; pydantic's
structured errors are translated into those lines by :func:`format_error`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from explainnn.errors import ConfigError


class _YamlLoader(yaml.SafeLoader):
    """YAML with 1.2 booleans: only true/false are booleans, so a key named ``on`` stays a string."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which dataset to load and where its files live."""

    name: str = "mnist"
    root: str = "data"
    download: bool = False
    image_size: int | None = Field(default=32, ge=1, le=1024)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from explainnn.data import available_datasets

        return _check_choice(value, available_datasets())


class ModelConfig(_Section):
    """Which architecture to build, and where its checkpoint lives."""

    name: str = "lenet"
    checkpoint: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from explainnn.models import MODELS

        return _check_choice(value, sorted(MODELS))


_TRAINING_HASH_NEUTRAL = {"optimizer": "adam", "schedule": "constant", "warmup": 0.0}
"""Training options whose default trains exactly as before the option existed (left out of ``training_hash``)."""


class TrainingConfig(_Section):
    """Train-or-load policy and optimiser settings (Adam or AdamW, with an optional warmup and decay of the
    learning rate)."""

    train: Literal["auto", "always", "never"] = "auto"
    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=1_000_000)
    lr: float = Field(default=1e-3, gt=0, le=10)
    weight_decay: float = Field(default=0.0, ge=0)
    augment: bool = True
    grad_clip: float | None = Field(default=None, gt=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup: float = Field(default=0.0, ge=0, lt=1)


class StabilityConfig(_Section):
    """Re-learning the graph under soft interventions for a grid of beta."""

    enabled: bool = True
    betas: list[float] = Field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    repeats: int = Field(default=5, ge=1, le=10_000)
    bootstrap: bool = True
    layer: str | None = None
    seeds: list[int] = Field(default_factory=list)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("must list at least one beta")
        bad = [b for b in value if not 0.0 <= b <= 1.0]
        if bad:
            raise ValueError(f"every beta must be in [0, 1], got {bad[0]}")
        return value


class DiscoveryConfig(_Section):
    """Causal-graph discovery (see docs/concepts.md, the statistics of discovery)."""

    enabled: bool = True
    target_class: Union[int, Literal["all"]] = 3
    layers: list[str] | None = None
    intervene_on: Literal["edges", "nodes"] = "edges"
    intervention: Literal["hard", "soft"] = "hard"
    beta: float = Field(default=0.0, ge=0.0, le=1.0)
    delta: float = Field(default=0.1, ge=0.0, le=1.0)
    soft_rule: Literal["scale", "set"] = "scale"
    n_samples: int = Field(default=100, ge=2, le=100_000)
    samples_from: Literal["train", "test"] = "train"
    test: Literal["paired", "ztest"] = "paired"
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    min_effect: float = Field(default=0.0, ge=0.0)
    check_circuit: bool = True
    stability: StabilityConfig = Field(default_factory=StabilityConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_key_on(cls, data: Any) -> Any:
        """A key ``on`` (or the ``true`` a YAML 1.1 tool reads it as) is one line naming ``intervene_on``."""
        if isinstance(data, dict) and "on" in data:
            raise ValueError("has a key 'on', which is not a key of this section; write intervene_on: edges|nodes")
        if isinstance(data, dict) and ("true" in data or True in data):
            raise ValueError("has a key 'true': a YAML 1.1 tool (such as PyYAML's safe_load) read the key 'on' "
                             "as true; write intervene_on: edges|nodes instead")
        return data

    @model_validator(mode="after")
    def _ztest_cuts_edges(self) -> DiscoveryConfig:
        if self.test == "ztest" and (self.intervene_on != "edges" or self.intervention != "hard"):
            raise ValueError("test 'ztest' reproduces the research code, which cuts edges; it needs intervene_on: "
                             f"edges and intervention: hard (got {self.intervene_on}, {self.intervention})")
        return self

    @field_validator("target_class", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, int) and value < 0):
            raise ValueError(f"must be a class index >= 0 or 'all', got {value!r}")
        if isinstance(value, str) and value != "all":
            raise ValueError(f"must be a class index >= 0 or 'all', got {value!r}")
        return value

    def discover_options(self) -> dict[str, Any]:
        """The keywords of :func:`explainnn.causal.discover` this section sets: every key but the step's own."""
        options = self.model_dump(exclude={"enabled", "target_class", "check_circuit", "stability", "samples_from"})
        options["on"] = options.pop("intervene_on")
        return options


EDGE_METHODS = ("edge_pruning", "eap", "eap_ig", "acdc", "random", "nodes")
"""The edge-circuit searches and rankings of :mod:`explainnn.causal.edge_search` (its ``METHODS``)."""
EdgeMethod = Literal["edge_pruning", "eap", "eap_ig", "acdc", "random", "nodes"]


class CircuitConfig(_Section):
    """The minimal faithful circuit of the target class (see docs/concepts.md, circuits).

    ``level``: ``edges`` (the fewest unit-to-unit edges, found by ``method``) or
    ``nodes`` (the fewest hidden units). ``ablation``: what a removed edge
    carries (``patch``: its value on a counterfactual input; ``mean``; ``zero``);
    unset, ``patch`` for edges and ``mean`` for nodes, the only ablation the node
    circuit takes. ``mib``: score the MIB curves (f at each budget, CPR, CMD) of
    the edge circuit's ranking and of ``methods`` on held-out test samples.
    ``n_random`` and ``curves`` are the node circuit's checks; ``method``,
    ``mib`` and ``methods`` the edge circuit's.
    """

    enabled: bool = True
    level: Literal["edges", "nodes"] = "edges"
    ablation: Literal["patch", "mean", "zero"] | None = None
    method: EdgeMethod = "edge_pruning"
    faithfulness: float = Field(default=0.8, gt=0.0, le=1.0)
    n_samples: int = Field(default=100, ge=2, le=100_000)
    layers: list[str] | None = None
    steps: int = Field(default=200, ge=0, le=100_000)
    n_random: int = Field(default=200, ge=100, le=100_000)
    eval_samples: int = Field(default=300, ge=2, le=100_000)
    curves: bool = True
    mib: bool = True
    methods: list[EdgeMethod] = Field(default_factory=lambda: list[EdgeMethod](["eap", "eap_ig", "random"]))

    @field_validator("methods")
    @classmethod
    def _distinct_methods(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"lists {repeated[0]!r} more than once; name each method once")
        return value

    @model_validator(mode="after")
    def _ablation_of_the_level(self) -> CircuitConfig:
        if self.level == "nodes" and self.ablation not in (None, "mean"):
            raise ValueError(f"level 'nodes' ablates units by their mean; ablation {self.ablation!r} needs "
                             "level: edges (or leave ablation unset)")
        return self

    def edge_ablation(self) -> str:
        """The ablation the circuit uses: ``ablation``, or the level's default (``patch`` for edges, ``mean`` for
        nodes)."""
        return self.ablation or ("patch" if self.level == "edges" else "mean")


class AttributionConfig(_Section):
    """Input attributions: the causal method beside the standard baselines."""

    enabled: bool = True
    methods: list[str] = Field(
        default_factory=lambda: [
            "causal",
            "integrated_gradients",
            "saliency",
            "smoothgrad",
            "lime",
            "kernel_shap",
        ]
    )
    n_samples: int = Field(default=6, ge=1, le=100_000)
    causal_paths_layer: str | None = "conv2"
    options: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"lime": {"n_perturbations": 200}, "kernel_shap": {"n_perturbations": 200}}
    )

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        return _known_methods(value)

    @field_validator("options")
    @classmethod
    def _options_of_methods(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        _known_methods(list(value))
        return value


class EvaluationConfig(_Section):
    """Quantus metrics comparing every attribution method on the same samples."""

    enabled: bool = True
    metrics: list[str] = Field(
        default_factory=lambda: [
            "FaithfulnessCorrelation",
            "IROF",
            "LocalLipschitzEstimate",
            "Sparseness",
            "Complexity",
            "RandomLogit",
        ]
    )
    methods: list[str] | None = None
    n_samples: int = Field(default=100, ge=1, le=100_000)
    include_misclassified: bool = True
    engine: Literal["fast", "quantus"] = "fast"
    definitions: Literal["quantus", "paper"] = "quantus"
    options: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"LocalLipschitzEstimate": {"nr_samples": 5}, "FaithfulnessCorrelation": {"nr_runs": 50}}
    )

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: list[str]) -> list[str]:
        return _known_metrics(value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _known_methods(value)

    @model_validator(mode="after")
    def _options_of_evaluated_metrics(self) -> EvaluationConfig:
        from explainnn.evaluation.metrics import check_definitions, metric_spec

        for name in self.options:
            if name not in self.metrics:
                raise ValueError(f"options has settings for '{name}', which is not among the evaluated metrics "
                                 f"({', '.join(self.metrics)}); add it to evaluation.metrics or remove its settings")
        try:
            check_definitions(self.definitions, self.engine)
            for name, values in self.options.items():
                metric_spec(name).check_options(dict(values or {}))
        except ConfigError as error:
            raise ValueError(str(error).removeprefix("evaluation.")) from None
        return self


class ViewsConfig(_Section):
    """Views of what a network learned: filters, activation maps, activation maximisation, 2-D embeddings."""

    enabled: bool = True
    filters: bool = True
    activation_maps: bool = True
    maximize: bool = True
    layer: str | None = None
    projection: Literal["pca", "tsne", "none"] = "pca"
    n_samples: int = Field(default=500, ge=10, le=100_000)


class TextAnalysisConfig(_Section):
    """Dataset-level token explanations for text models (skipped for other data)."""

    enabled: bool = True
    methods: list[str] = Field(
        default_factory=lambda: ["integrated_gradients", "leave_one_out", "likelihood_importance", "attention"]
    )
    n_samples: int = Field(default=200, ge=1, le=100_000)
    top_k: int = Field(default=15, ge=1, le=1000)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        return _known_methods(value)


class ClusteringConfig(_Section):
    """Clustering of explanation vectors, and its agreement across training seeds."""

    enabled: bool = True
    method: str = "integrated_gradients"
    n_samples: int = Field(default=300, ge=10, le=100_000)
    max_clusters: int = Field(default=8, ge=2, le=100)
    seeds: list[int] = Field(default_factory=list)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        _known_methods([value])
        return value


class AnalysesConfig(_Section):
    """Further analyses from the project's seed research (see docs/methods.md)."""

    views: ViewsConfig = Field(default_factory=ViewsConfig)
    text: TextAnalysisConfig = Field(default_factory=TextAnalysisConfig)
    clustering: ClusteringConfig = Field(default_factory=ClusteringConfig)


class PlotsConfig(_Section):
    """Pictures written under the run's output folder."""

    enabled: bool = True
    dpi: int = Field(default=120, ge=30, le=600)


class Config(_Section):
    """The whole run. Field order is the order of ``config.yaml``."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    output_dir: str = "output"
    progress: bool = True
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    analyses: AnalysesConfig = Field(default_factory=AnalysesConfig)
    report: bool = True
    plots: PlotsConfig = Field(default_factory=PlotsConfig)

    def run_dir(self) -> Path:
        """Where this run writes its results: ``<output_dir>/<dataset>/<model>``."""
        return Path(self.output_dir) / self.data.name / self.model.name

    def checkpoint_path(self) -> Path:
        """``model.checkpoint`` or, when unset, ``model.pt`` in the run folder."""
        if self.model.checkpoint:
            return Path(self.model.checkpoint)
        return self.run_dir() / "model.pt"

    def training_hash(self) -> str:
        """A short hash of everything that determines the trained weights."""
        training = self.training.model_dump(exclude={"train"})
        # Options at the value that trains as before they existed leave the hash as it was, so checkpoints
        # trained then still match their configs.
        for key, unchanged in _TRAINING_HASH_NEUTRAL.items():
            if training.get(key) == unchanged:
                del training[key]
        keys = {
            "seed": self.seed,
            "data": self.data.model_dump(exclude={"root", "download"}),
            "model": self.model.model_dump(exclude={"checkpoint"}),
            "training": training,
        }
        text = json.dumps(keys, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _known_methods(names: list[str]) -> list[str]:
    """Every name a registered attribution method (imported here, so a typo stops the run before training)."""
    from explainnn.attributions import available_methods

    for name in names:
        _check_choice(name, available_methods(), what="attribution method")
    return names


def _known_metrics(names: list[str]) -> list[str]:
    from explainnn.evaluation.metrics import available_metrics

    for name in names:
        _check_choice(name, available_metrics(), what="metric")
    return names


def _check_choice(value: str, choices: list[str], what: str = "choice") -> str:
    if value not in choices:
        raise ValueError(f"{value!r} is not a valid {what}{_suggest(value, choices)}; valid: {', '.join(choices)}")
    return value


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(path: tuple, schema: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The schema section that a location in the config (or another ``schema``) points into."""
    model: type[BaseModel] = schema or Config
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping of keys to values",
    "model_type": "a section (a mapping of keys to values)",
    "model_attributes_type": "a section (a mapping of keys to values)",
}


def _union_tag(part: Any) -> bool:
    """A location part naming a branch of a union type (``int``, ``literal['all']``), not a key."""
    text = str(part)
    return text in ("int", "str", "float", "bool") or text.startswith(("literal[", "function-"))


def format_error(error: Mapping[str, Any], schema: type[BaseModel] | None = None) -> str:
    """Turn one pydantic error into the one-line message the user sees.

    ``schema`` is the model that was validated (default :class:`Config`); it names
    the valid keys of the section holding an unknown key.
    """
    loc = tuple(p for p in error["loc"] if not _union_tag(p))
    key = ".".join(str(p) for p in loc) or "<top level>"
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        section = _model_at(loc[:-1], schema)
        valid = list(section.model_fields) if section else []
        where = ".".join(str(p) for p in loc[:-1])
        hint = _suggest(loc[-1], valid)
        scope = f" in section '{where}'" if where else ""
        return f"unknown key '{key}'{scope}{hint}; valid keys: {', '.join(valid)}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        choices = [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip()]
        return f"{key}: {value!r} is not a valid choice{_suggest(str(value), choices)}; valid: {', '.join(choices)}"
    if kind in _TYPE_WORDS:
        return f"{key}: expected {_TYPE_WORDS[kind]}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ctx = error.get("ctx", {})
        bound = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}", "less_than_equal": "<= {le}"}
        plain = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in ctx.items()}
        return f"{key}: must be {bound[kind].format(**plain)}, got {value!r}"
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        return f"{key}: {message}"
    return f"{key}: {error['msg']} (got {value!r})"


def _raise_first(exc: ValidationError) -> None:
    errors = exc.errors()
    # A union (int | 'all') reports one error per branch; the first is enough.
    raise ConfigError(format_error(errors[0])) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``discovery.target_class=7`` into (['discovery', 'target_class'], 7)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. discovery.target_class=7")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key; write it like section.key=value")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def _check_override_path(parts: list[str]) -> None:
    """Refuse ``seed.x=1``: a prefix of the key that names a plain value, not a section."""
    model: type[BaseModel] = Config
    for i, part in enumerate(parts[:-1]):
        field = model.model_fields.get(part)
        if field is None:
            return  # unknown keys get the schema's "did you mean" error
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        if getattr(annotation, "__origin__", None) is dict:
            return  # free-form options: any nested key is allowed
        where = ".".join(parts[: i + 1])
        raise ConfigError(f"override {'.'.join(parts)}: '{where}' is a value, not a section")


def _set_nested(tree: dict, parts: list[str], value: Any) -> None:
    _check_override_path(parts)
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"override {'.'.join(parts)}: '{where}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def build_config(raw: dict | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Validate a raw mapping (plus ``key.path=value`` overrides) into a :class:`Config`."""
    tree: dict = json.loads(json.dumps(raw or {}, default=str)) if raw else {}
    if not isinstance(tree, dict):
        raise ConfigError(f"the config must be a mapping of sections to values, got {type(raw).__name__}")
    for text in overrides:
        parts, value = parse_override(text)
        _set_nested(tree, parts, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        _raise_first(exc)
        raise  # unreachable; keeps type checkers happy


def read_yaml(path: str | Path, *, what: str = "config", option: str = "--config",
              sections: str = "device, seed, data, ...") -> dict:
    """The mapping in a YAML file (YAML 1.2 booleans); a missing file or bad YAML is one-line :class:`ConfigError`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder; pass {option} PATH to a YAML file")
    if not path.is_file():
        raise ConfigError(f"{what} file {str(path)!r} not found; pass {option} PATH to a YAML file")
    try:
        raw = _yaml_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a {what} is a YAML text file") \
            from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {problem}{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections ({sections})")
    return raw


PATH_KEYS: tuple[tuple[str, ...], ...] = (("output_dir",), ("data", "root"), ("model", "checkpoint"))
"""The config keys that hold paths. In a config file a relative one is relative to the file's folder."""


def _joined(folder: Path, value: Any) -> Any:
    """``value`` joined to ``folder`` when it is a relative path; anything else (absolute, empty, not text) as it is."""
    if not isinstance(value, str) or not value.strip() or Path(value).is_absolute():
        return value
    return os.path.normpath(os.path.join(folder, value))


def rebase_paths(raw: Mapping[str, Any], folder: str | Path) -> dict:
    """A copy of ``raw`` (a config read from a file in ``folder``) with its relative paths made relative to
    the current folder, so they point where the file meant: ``data.root: ../data`` in ``configs/x.yaml``
    becomes ``data``. Only the :data:`PATH_KEYS` the file sets change; defaults and overrides do not."""
    tree: dict = json.loads(json.dumps(dict(raw), default=str))
    for keys in PATH_KEYS:
        node: Any = tree
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = _joined(Path(folder), node[keys[-1]])
    return tree


def read_config(path: str | Path) -> dict:
    """The mapping in a config file, its relative paths (:data:`PATH_KEYS`) resolved against the file's folder."""
    return rebase_paths(read_yaml(path), Path(path).parent)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a config file (or the defaults when ``path`` is None) and apply ``section.key=value`` overrides.

    Relative paths in the file (``data.root``, ``output_dir``, ``model.checkpoint``) are relative to the
    file's folder; relative paths in the overrides and the defaults are relative to the current folder.
    """
    raw = read_config(path) if path is not None else {}
    return build_config(raw, overrides)


def dump_config(config: Config) -> str:
    """The fully resolved config as YAML, saved with every run."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
