"""The run context: what every step reads, and what each step leaves for the next."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import torch
from torch import nn

from explainnn.causal import CausalGraph, CircuitCheck, CircuitReport, DiscoveryResult, SeedStability, StabilityResult
from explainnn.config import Config
from explainnn.data import Dataset
from explainnn.errors import UserError

if TYPE_CHECKING:
    from explainnn.analyses.clustering import ExplanationClusters
    from explainnn.analyses.text import TextAnalysis
    from explainnn.analyses.views import Views
    from explainnn.causal.edge_search import EdgeCircuitReport
    from explainnn.evaluation import EvaluationResults


@dataclass
class Analyses:
    """The analysis steps' results (``ctx.analyses``); None where a step did not run or does not apply.

    ``views`` (:class:`~explainnn.analyses.views.Views`) and ``view_files`` (``{view: path}`` of
    the files the views step wrote), ``text`` (:class:`~explainnn.analyses.text.TextAnalysis`,
    token data only), ``clustering`` (:class:`~explainnn.analyses.clustering.ExplanationClusters`).
    """

    views: Views | None = None
    view_files: dict[str, Path] = field(default_factory=dict)
    text: TextAnalysis | None = None
    clustering: ExplanationClusters | None = None


@dataclass(frozen=True)
class SeedModels:
    """The model step's result for later steps that compare training seeds (``ctx.seed_models``).

    ``model(seed)`` is the run's model trained with another ``seed`` (or loaded from
    its own checkpoint): the stability sweep across seeds and the clustering's seed
    agreement ask for them, without reading the model or training sections.
    """

    train: Callable[[int], nn.Module]

    def model(self, seed: int) -> nn.Module:
        """The model of this run's config trained with ``seed``."""
        return self.train(seed)

class RunContext:
    """One run's shared state: the resolved config, its folder and device, and each step's result.

    Steps fill it in pipeline order: ``dataset`` (data), ``model`` and
    ``training`` (model), ``discoveries`` (discovery, one
    :class:`~explainnn.causal.DiscoveryResult` per class; ``graphs`` holds their
    graphs), ``faithfulness``, ``stability`` and ``seed_stability`` (checks:
    :class:`~explainnn.causal.CircuitCheck`, :class:`~explainnn.causal.StabilityResult`,
    :class:`~explainnn.causal.SeedStability`), ``edge_circuits`` or ``circuits``
    (circuit, ``circuit.level`` edges or nodes: one
    :class:`~explainnn.causal.EdgeCircuitReport` or
    :class:`~explainnn.causal.CircuitReport` per class; ``circuit_graphs``
    holds their graphs), ``attributions``,
    ``evaluations`` (one :class:`~explainnn.evaluation.EvaluationResults` per class), and ``analyses`` (an :class:`Analyses`: views, text,
    clustering). ``seed_models`` (a :class:`SeedModels`, set with the model)
    trains the same model with another seed. Reading ``dataset``, ``model`` or
    ``seed_models`` before their step ran is a one-line error naming the step.
    Steps print their lines through :meth:`echo`, on ``out`` (a text stream, such
    as a sweep run's log file) or, by default, stdout.
    """

    def __init__(self, config: Config, run_dir: str | Path | None = None, device: torch.device | None = None,
                 out: TextIO | None = None):
        from explainnn.torch_utils import resolve_device

        self.config = config
        self.out = out
        self.run_dir = Path(run_dir) if run_dir is not None else config.run_dir()
        self.device = device if device is not None else resolve_device(config.device)
        self.training: dict[str, Any] = {}
        self.discoveries: dict[int, DiscoveryResult] = {}
        self.faithfulness: dict[int, CircuitCheck] = {}
        self.stability: dict[int, StabilityResult] = {}
        self.seed_stability: dict[int, SeedStability] = {}
        self.circuits: dict[int, CircuitReport] = {}
        self.edge_circuits: dict[int, EdgeCircuitReport] = {}
        self.attributions: dict[int, dict[str, np.ndarray]] = {}
        self.evaluations: dict[int, EvaluationResults] = {}
        self.analyses = Analyses()
        self.report: dict[str, Path] = {}
        self.step_seconds: dict[str, float] = {}
        self._dataset: Dataset | None = None
        self._model: nn.Module | None = None
        self._seed_models: SeedModels | None = None

    # ------------------------------------------------------------- step results
    @property
    def graphs(self) -> dict[int, CausalGraph]:
        """The causal graph of each explained class (from :attr:`discoveries`, the discovery step's results)."""
        return {target: result.graph for target, result in self.discoveries.items()}

    @property
    def circuit_graphs(self) -> dict[int, CausalGraph]:
        """The circuit of each explained class as a graph (from :attr:`edge_circuits` and :attr:`circuits`, the
        circuit step's results; the edge circuit where a class has both)."""
        graphs = {target: report.graph for target, report in self.circuits.items()}
        graphs.update({target: report.graph for target, report in self.edge_circuits.items()})
        return dict(sorted(graphs.items()))

    @property
    def dataset(self) -> Dataset:
        """The loaded dataset (the data step's result)."""
        if self._dataset is None:
            raise UserError("no dataset yet: the data step has not run")
        return self._dataset

    @dataset.setter
    def dataset(self, value: Dataset) -> None:
        self._dataset = value

    @property
    def model(self) -> nn.Module:
        """The trained or loaded model, in eval mode on :attr:`device` (the model step's result)."""
        if self._model is None:
            raise UserError("no model yet: the model step has not run")
        return self._model

    @model.setter
    def model(self, value: nn.Module) -> None:
        self._model = value

    @property
    def seed_models(self) -> SeedModels:
        """The run's model trained with other seeds (the model step's result, beside :attr:`model`)."""
        if self._seed_models is None:
            raise UserError("no seed models yet: the model step has not run")
        return self._seed_models

    @seed_models.setter
    def seed_models(self, value: SeedModels) -> None:
        self._seed_models = value

    def echo(self, line: str) -> None:
        """Print one line of the run's output: on ``out`` when the run was given one, else on stdout."""
        print(line, file=self.out if self.out is not None else sys.stdout)

    # ------------------------------------------------------------ settings
    @property
    def checkpoint(self) -> Path:
        """``model.checkpoint`` or, when unset, ``model.pt`` in the run folder."""
        return Path(self.config.model.checkpoint) if self.config.model.checkpoint else self.run_dir / "model.pt"

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def plots(self) -> bool:
        """Whether steps draw pictures (``plots.enabled``)."""
        return self.config.plots.enabled

    @property
    def dpi(self) -> int:
        """The resolution of every picture (``plots.dpi``)."""
        return self.config.plots.dpi

    @property
    def progress(self) -> bool:
        """Progress bars: asked for (``progress``) and drawn on a terminal; elsewhere steps print a line each."""
        return self.config.progress and sys.stderr.isatty()

    def explained_classes(self) -> list[int]:
        """The classes later steps explain: those with a graph, else ``discovery.target_class`` unless ``all``."""
        target = self.config.discovery.target_class
        return sorted(self.graphs) or ([] if target == "all" else [int(target)])
