"""The ordered steps of a run, and :class:`Run`, which runs them (all, or up to one) from a config."""

from __future__ import annotations

import time
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np
from torch import nn

from explainnn.causal import CausalGraph, CircuitCheck, StabilityResult
from explainnn.causal.edge_search import EdgeCircuitReport
from explainnn.config import Config, ModelConfig, build_config, load_config
from explainnn.data import Dataset
from explainnn.errors import UserError
from explainnn.evaluation import EvaluationResults
from explainnn.files import write_csv
from explainnn.pipeline.attribution import explain_classes
from explainnn.pipeline.checks import ChecksOptions, check_graphs
from explainnn.pipeline.circuit import CircuitReport, find_circuits
from explainnn.pipeline.clustering import analyse_clusters
from explainnn.pipeline.context import RunContext, SeedModels
from explainnn.pipeline.data import load_data
from explainnn.pipeline.discovery import discover_graphs
from explainnn.pipeline.evaluation import evaluate_classes
from explainnn.pipeline.model import train_or_load_model
from explainnn.pipeline.report import write_run_report
from explainnn.pipeline.text import analyse_text
from explainnn.pipeline.views import draw_views
from explainnn.torch_utils import seed_everything


@dataclass(frozen=True)
class Step:
    """One step: its ``name``, the function ``run(ctx, options)`` and the config ``section`` holding its options.

    The step runs when its options say ``enabled`` (a boolean section such as
    ``report`` is its own flag), unless ``enabled`` decides otherwise. A step whose
    options are more than its section reads them through ``options_of(config)``
    (a typed record of exactly what it uses), so a step never reads the config.
    """

    name: str
    run: Callable[[RunContext, Any], Any]
    section: str
    enabled: Callable[[Config], bool] | None = None
    options_of: Callable[[Config], Any] | None = None

    def options(self, config: Config) -> Any:
        """The step's options: the pydantic model of its config section, or ``options_of(config)``."""
        if self.options_of is not None:
            return self.options_of(config)
        return attrgetter(self.section)(config)

    def is_enabled(self, config: Config) -> bool:
        """Whether ``config`` runs this step."""
        if self.enabled is not None:
            return self.enabled(config)
        options = attrgetter(self.section)(config)
        return options if isinstance(options, bool) else getattr(options, "enabled", True)


def load_model(ctx: RunContext, options: ModelConfig) -> nn.Module:
    """The model step: :func:`~explainnn.pipeline.model.train_or_load_model`, and ``ctx.seed_models``, the same
    model trained with another seed, for the steps that compare seeds."""
    model = train_or_load_model(ctx, options)
    ctx.seed_models = SeedModels(lambda seed: train_or_load_model(ctx, options, seed=seed))
    return model


def _checks_enabled(config: Config) -> bool:
    discovery = config.discovery
    return discovery.enabled and (discovery.check_circuit or discovery.stability.enabled)


STEPS: tuple[Step, ...] = (
    Step("data", load_data, "data"),
    Step("model", load_model, "model"),
    Step("discovery", discover_graphs, "discovery"),
    Step("checks", check_graphs, "discovery", enabled=_checks_enabled, options_of=ChecksOptions.of),
    Step("circuit", find_circuits, "circuit"),
    Step("attribution", explain_classes, "attribution"),
    Step("evaluation", evaluate_classes, "evaluation"),
    Step("views", draw_views, "analyses.views"),
    Step("text", analyse_text, "analyses.text"),
    Step("clustering", analyse_clusters, "analyses.clustering"),
    Step("report", write_run_report, "report"),
)
STEP_NAMES = tuple(step.name for step in STEPS)


class Run:
    """The pipeline from Python: build it from a config, then ask for what you need.

    >>> run = Run("config.yaml", "training.epochs=3", "evaluation.enabled=false")  # doctest: +SKIP
    >>> run.graph.summary()          # runs data, model, discovery and checks  # doctest: +SKIP
    >>> run.all()                    # every enabled step, as the command line does  # doctest: +SKIP

    ``config`` is a :class:`~explainnn.config.Config`, a path to a YAML file or
    None (the defaults); ``overrides`` are ``section.key=value`` strings as on
    the command line; ``run_dir`` replaces ``<output_dir>/<dataset>/<model>``;
    ``out`` is where the steps print their lines (default stdout).
    Each property runs the enabled steps up to the one that produces it, once.
    """

    def __init__(self, config: Config | str | Path | None = None, *overrides: str,
                 run_dir: str | Path | None = None, out: TextIO | None = None):
        if isinstance(config, Config):
            config = build_config(config.model_dump(mode="json"), overrides) if overrides else config
        else:
            config = load_config(config, overrides)
        seed_everything(config.seed)
        self.context = RunContext(config, run_dir, out=out)
        self.done: list[str] = []

    def run(self, until: str | None = None) -> RunContext:
        """Run every enabled step (up to and including ``until``) that has not run yet; return the context."""
        if until is not None and until not in STEP_NAMES:
            raise UserError(f"unknown step {until!r}; steps: {', '.join(STEP_NAMES)}")
        config = self.context.config
        for step in STEPS:
            if step.name not in self.done and step.is_enabled(config):
                start = time.perf_counter()
                step.run(self.context, step.options(config))
                self.context.step_seconds[step.name] = round(time.perf_counter() - start, 3)
                self.done.append(step.name)
                self._write_timings()
            if step.name == until:
                break
        return self.context

    def _write_timings(self) -> None:
        """Write ``<run_dir>/step_timings.csv``: the wall seconds of every step run so far."""
        if self.context.run_dir.is_dir():
            rows = [{"step": name, "seconds": sec} for name, sec in self.context.step_seconds.items()]
            write_csv(self.context.run_dir / "step_timings.csv", rows, ["step", "seconds"])

    def all(self) -> RunContext:
        """Run every enabled step; return the context."""
        return self.run()

    @property
    def config(self) -> Config:
        return self.context.config

    @property
    def run_dir(self) -> Path:
        return self.context.run_dir

    @property
    def dataset(self) -> Dataset:
        """The dataset (runs the data step)."""
        return self.run("data").dataset

    @property
    def model(self) -> nn.Module:
        """The trained or loaded model (runs the steps up to the model step)."""
        return self.run("model").model

    @property
    def graphs(self) -> dict[int, CausalGraph]:
        """The checked causal graph of every target class (runs the steps up to the checks)."""
        return self.run("checks").graphs

    @property
    def graph(self) -> CausalGraph:
        """The causal graph of the one target class (an error when there are several or none)."""
        graphs = self.graphs
        if len(graphs) != 1:
            raise UserError(f"the run has {len(graphs)} graphs (classes {sorted(graphs)}); use run.graphs[k]")
        return next(iter(graphs.values()))

    @property
    def faithfulness(self) -> CircuitCheck:
        """The one graph's sufficiency and necessity against random unit sets (``circuit_faithfulness``'s result)."""
        return self.run("checks").faithfulness[self._only_class()]

    @property
    def stability(self) -> StabilityResult:
        """The one graph's stability sweep (a :class:`~explainnn.causal.StabilityResult`)."""
        return self.run("checks").stability[self._only_class()]

    def _only_class(self) -> int:
        return int(self.graph.metadata["target"])

    @property
    def circuits(self) -> dict[int, CircuitReport]:
        """``{class: CircuitReport}``: each class's minimal node circuit and its checks (``circuit.level: nodes``;
        runs the steps up to the circuit)."""
        return self.run("circuit").circuits

    @property
    def edge_circuits(self) -> dict[int, EdgeCircuitReport]:
        """``{class: EdgeCircuitReport}``: each class's minimal edge circuit, its held-out faithfulness and MIB
        curves (``circuit.level: edges``, the default; runs the steps up to the circuit)."""
        return self.run("circuit").edge_circuits

    @property
    def attributions(self) -> dict[int, dict[str, np.ndarray]]:
        """``{class: {method: attributions}}`` (runs the steps up to the attribution step)."""
        return self.run("attribution").attributions

    @property
    def evaluations(self) -> dict[int, EvaluationResults]:
        """``{class: EvaluationResults}`` (runs the steps up to the evaluation step)."""
        return self.run("evaluation").evaluations


def run(config: Config | str | Path | None = None, *overrides: str, run_dir: str | Path | None = None,
        out: TextIO | None = None) -> RunContext:
    """Run every enabled step of ``config`` into ``run_dir`` (default ``<output_dir>/<dataset>/<model>``),
    the steps' lines printed on ``out`` (default stdout).

    The one call the command line, the notebook and sweeps share; returns the
    :class:`RunContext` holding every step's result.
    """
    return Run(config, *overrides, run_dir=run_dir, out=out).all()
