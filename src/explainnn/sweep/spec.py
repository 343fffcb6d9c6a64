"""The sweep file: its schema, its expansion into runs, and each run's resolved config and hash.

A sweep file names a base config, overrides for every run, and a ``grid`` whose
every combination is one run and/or a ``runs`` list of override sets::

    base: config.yaml
    overrides: [analyses.views.enabled=false]
    grid:
      seed: [0, 1, 2]
      discovery.target_class: [3, 7]
    sweep: {backend: auto, resources: {num_cpus: 1}}

Every run's config is resolved and validated when the file is loaded, so a bad
sweep file stops with the config module's one-line errors before anything runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from explainnn.config import Config, build_config, format_error, parse_override, read_yaml
from explainnn.errors import ConfigError

HASH_EXCLUDES = ("output_dir", "progress")
"""Config keys that do not change a run's results, left out of its hash."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Section):
    """What one run asks of the scheduler (a Ray task's ``num_cpus``/``num_gpus``); also its torch threads."""

    num_cpus: float = Field(default=1, gt=0, le=1024)
    num_gpus: float = Field(default=0, ge=0, le=64)


class SweepSettings(_Section):
    """How and where the runs execute."""

    name: str | None = None
    output_dir: str | None = None
    backend: Literal["auto", "ray", "sequential"] = "auto"
    ray_address: str | None = None
    local_cpus: int | None = Field(default=None, ge=1, le=100_000)
    share_models: bool = True
    resources: Resources = Field(default_factory=Resources)


class SweepFile(_Section):
    """The schema of a sweep file (see the module docstring)."""

    base: str | None = None
    overrides: list[str] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    runs: list[Union[dict[str, Any], list[str]]] = Field(default_factory=list)
    sweep: SweepSettings = Field(default_factory=SweepSettings)

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [key for key, values in value.items() if not values]
        if empty:
            raise ValueError(f"'{empty[0]}' lists no values; give at least one")
        return value

    @model_validator(mode="after")
    def _some_runs(self) -> SweepFile:
        if not self.grid and not self.runs:
            raise ValueError("a sweep needs a 'grid' (every combination is one run) or a 'runs' list of override sets")
        return self


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its own overrides, its resolved config and the hash that names its folder."""

    index: int
    overrides: tuple[str, ...]
    values: dict[str, Any]
    config: Config
    key: str

    @property
    def label(self) -> str:
        return " ".join(self.overrides) or "base"


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: its settings, where it writes, and its runs (every config already validated)."""

    name: str
    settings: SweepSettings
    output_dir: Path
    runs: tuple[PlannedRun, ...]
    source: str

    @property
    def varied(self) -> list[str]:
        """The keys the runs set, in first-seen order."""
        return list(dict.fromkeys(key for run in self.runs for key in run.values))


def config_hash(config: Config) -> str:
    """A short hash of everything in ``config`` that shapes a run's results."""
    tree = config.model_dump(mode="json", exclude=set(HASH_EXCLUDES))
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:12]


def flat_settings(config: Config) -> dict[str, Any]:
    """The resolved config as ``{"section.key": value}`` (less :data:`HASH_EXCLUDES`), for grouping runs."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[prefix] = node

    walk("", config.model_dump(mode="json", exclude=set(HASH_EXCLUDES)))
    return flat


def override_text(key: str, value: Any) -> str:
    """``key=value`` that :func:`~explainnn.config.parse_override` reads back as ``value``."""
    text = value if isinstance(value, str) else json.dumps(value)
    if parse_override(f"{key}={text}")[1] != value:
        text = json.dumps(value)
    return f"{key}={text}"


def load_sweep(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read and validate a sweep (a YAML file or its mapping); ``overrides`` apply to every run.

    Raises :class:`~explainnn.errors.ConfigError` with one line naming the file and,
    for a run's config, the run, before anything runs.
    """
    where = str(source) if not isinstance(source, dict) else "sweep"
    raw = read_yaml(source, what="sweep", option="--sweep", sections="base, overrides, grid, runs, sweep") \
        if not isinstance(source, dict) else source
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {format_error(exc.errors()[0], SweepFile)}") from None
    base = read_yaml(spec.base) if spec.base is not None else {}
    shared = [*spec.overrides, *overrides]
    runs = _plan(spec, base, shared, where)
    name = spec.sweep.name or (Path(source).stem if not isinstance(source, dict) else "sweep")
    output = Path(spec.sweep.output_dir) if spec.sweep.output_dir else Path(runs[0].config.output_dir) / "sweeps" / name
    return Sweep(name=name, settings=spec.sweep, output_dir=output, runs=tuple(runs), source=where)


def _run_values(entry: dict[str, Any] | list[str], number: int, where: str) -> dict[str, Any]:
    if isinstance(entry, dict):
        return dict(entry)
    values: dict[str, Any] = {}
    for text in entry:
        try:
            parts, value = parse_override(text)
        except ConfigError as exc:
            raise ConfigError(f"{where}: runs entry {number}: {exc}") from None
        values[".".join(parts)] = value
    return values


def _plan(spec: SweepFile, base: dict, shared: list[str], where: str) -> list[PlannedRun]:
    sets = [_run_values(entry, number, where) for number, entry in enumerate(spec.runs, 1)] or [{}]
    keys = list(spec.grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*spec.grid.values())] if keys else [{}]
    planned: list[PlannedRun] = []
    seen: dict[str, PlannedRun] = {}
    for values in ({**one, **combo} for one in sets for combo in combos):
        texts = tuple(override_text(key, value) for key, value in values.items())
        index = len(planned)
        try:
            config = build_config(base, [*shared, *texts])
        except ConfigError as exc:
            label = " ".join(texts) or "base"
            raise ConfigError(f"{where}: run {index + 1} ({label}): {exc}") from None
        run = PlannedRun(index=index, overrides=texts, values=values, config=config, key=config_hash(config))
        if run.key in seen:
            raise ConfigError(f"{where}: runs {seen[run.key].index + 1} ({seen[run.key].label}) and {index + 1} "
                              f"({run.label}) resolve to the same config; remove one")
        seen[run.key] = run
        planned.append(run)
    return planned
