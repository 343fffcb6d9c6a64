"""What a metric is to explainnn: :class:`MetricSpec`, the registry and the settings every metric shares.

A metric is declared once, with :func:`register_metric`: its name, family,
direction, the inputs it applies to, the Quantus class (the ``quantus`` engine)
and the batched function (the ``fast`` engine) side by side, defaults scaled to
the input and, where Quantus 0.6 computes something other than the metric's
paper, what ``evaluation.definitions: paper`` changes and why (``paper``).
Everything else (:data:`METRICS`, the config's check of metric names, the
reference page) reads the registry.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from quantus.helpers.enums import ScoreDirection
from quantus.metrics.base import Metric

from explainnn.errors import ConfigError
from explainnn.evaluation.normalisation import normalise_per_sample

FAMILIES = ("faithfulness", "robustness", "complexity", "randomisation", "localisation")
MODALITIES = ("image", "sequence", "tokens", "tabular")
DIRECTIONS = ("higher", "lower")
DEFINITIONS = ("quantus", "paper")
"""``evaluation.definitions``: Quantus 0.6's definition of every metric, or the papers' where they differ."""
CALL_OPTIONS = ("softmax", "batch_size")
"""Options of a metric's call (the rest of ``evaluation.options.<metric>`` go to its constructor)."""
OWNED_OPTIONS = ("normalise_func", "normalise_func_kwargs", "return_aggregate", "aggregate_func",
                 "default_plot_func", "disable_warnings", "display_progressbar")
"""Constructor arguments explainnn sets itself: per-sample values, its own progress bar."""
RETIRED_OPTIONS = {"quantus_batches": "evaluation.definitions (quantus | paper), one switch for every metric"}
"""Options that no longer exist -> what replaced them (named in the one-line error)."""


@dataclass(frozen=True)
class MetricContext:
    """What a metric's defaults and applicability depend on.

    ``sample_shape`` is one sample as Quantus receives it (channel first):
    ``(C, H, W)`` images, ``(1, T)`` one-feature signals, ``(1, T, F)``
    sequences, ``(1, L, E)`` token embeddings and ``(1, F)`` tabular rows.
    """

    modality: str
    sample_shape: tuple[int, ...]
    n_classes: int
    seed: int = 0
    dataset: str = ""
    has_masks: bool = False

    @property
    def n_features(self) -> int:
        return int(np.prod(self.sample_shape))

    @property
    def describe(self) -> str:
        """The inputs in words (``tabular rows``, ``images``, ...)."""
        return describe_modality(self.modality)


Defaults = Callable[[MetricContext], dict[str, Any]]


def no_defaults(context: MetricContext) -> dict[str, Any]:
    """No defaults beyond Quantus' own."""
    return {}


def as_floats(scores: Any) -> np.ndarray:
    """Quantus' per-sample list as float64 values."""
    return np.asarray(scores, dtype=np.float64)


@dataclass(frozen=True)
class MetricSpec:
    """One evaluable metric: what it measures, both implementations and how to set it up.

    ``quantus`` is the Quantus metric class (the ``quantus`` engine, and where
    ``fast`` is None, both engines); ``fast`` the batched function
    ``fast(batch, a, **options)`` returning what the Quantus metric returns
    (:mod:`explainnn.evaluation.fast`). A ``fast`` function that takes
    ``definitions`` computes Quantus 0.6's definition (``"quantus"``) or the
    paper's (``"paper"``); ``paper`` says what changes and why, and is empty for
    a metric whose definitions agree.
    """

    name: str
    family: str
    quantus: type[Metric]
    fast: Callable[..., Any] | None = None
    modalities: tuple[str, ...] = MODALITIES
    defaults: Defaults = no_defaults
    needs_masks: bool = False
    needs: str = ""
    """What the metric needs of its inputs beyond :attr:`modalities` (said when it is skipped for a modality)."""
    min_classes: int = 1
    """The fewest classes the model must have (RandomLogit explains another class than the target)."""
    direction_override: str | None = None
    per_sample: Callable[[Any], np.ndarray] = as_floats
    note: str = ""
    """explainnn's settings in words (the reference page and the report's settings table)."""
    paper: str = ""
    """What ``evaluation.definitions: paper`` computes instead of Quantus 0.6, and why ("" = the same)."""
    fixed: tuple[str, ...] = ()
    """Options whose default makes the metric return one value per sample; they cannot be changed."""

    @property
    def direction(self) -> str:
        """``higher`` or ``lower``: which scores are better."""
        if self.direction_override:
            return self.direction_override
        return "higher" if self.quantus.score_direction == ScoreDirection.HIGHER else "lower"

    @property
    def explains_again(self) -> bool:
        """Whether the metric calls the attribution method again (on perturbed inputs or models)."""
        return self.family in ("robustness", "randomisation")

    @property
    def differs(self) -> bool:
        """Whether Quantus 0.6's definition and the paper's give different scores (``definitions`` matters)."""
        return bool(self.paper)

    def skip_reason(self, context: MetricContext) -> str | None:
        """Why the metric cannot apply to ``context`` (None when it can)."""
        if context.modality not in self.modalities:
            kinds = " and ".join(self.modalities)
            why = f" ({self.needs})" if self.needs else ""
            return f"{self.name} is defined for {kinds} inputs only{why}; these are {describe_modality(context.modality)}"
        if self.needs_masks and not context.has_masks:
            return (f"{self.name} needs ground-truth masks of the relevant input region; dataset "
                    f"'{context.dataset}' has none (mnist_maj does)")
        if context.n_classes < self.min_classes:
            return f"{self.name} needs at least {self.min_classes} classes; the model has {context.n_classes}"
        return None

    def valid_options(self) -> list[str]:
        """Keys ``evaluation.options.<metric>`` may set."""
        parameters = inspect.signature(self.quantus.__init__).parameters
        names = [p for p in parameters if p not in ("self", "kwargs", "args", *OWNED_OPTIONS, *self.fixed)]
        return sorted({*names, *CALL_OPTIONS})

    def check_options(self, options: dict[str, Any]) -> None:
        """One-line :class:`~explainnn.errors.ConfigError` for a key ``evaluation.options.<metric>`` cannot hold."""
        valid = self.valid_options()
        for key in options:
            if key in RETIRED_OPTIONS:
                raise ConfigError(f"evaluation.options.{self.name}.{key} was replaced by {RETIRED_OPTIONS[key]}; "
                                  f"remove it")
            if key in OWNED_OPTIONS or key in self.fixed:
                raise ConfigError(f"evaluation.options.{self.name}.{key} is set by explainnn (one value per sample, "
                                  f"explainnn's normalisation and progress bar) and cannot be changed; "
                                  f"valid options: {', '.join(valid)}")
            if key not in valid:
                raise ConfigError(f"unknown option '{key}' for metric {self.name}; valid options: {', '.join(valid)}")

    def settings(self, context: MetricContext, overrides: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Constructor and call keyword arguments: common settings, defaults for ``context``, then ``overrides``."""
        overrides = dict(overrides or {})
        self.check_options(overrides)
        init = {**_common(self.quantus), **self.defaults(context), **overrides}
        calls = {key: init.pop(key) for key in CALL_OPTIONS if key in init}
        return init, calls

    def create(self, init: dict[str, Any]) -> Metric:
        """The Quantus metric object (quiet, per-sample results, explainnn's normalisation)."""
        return self.quantus(**init, normalise_func=normalise_per_sample, return_aggregate=False,
                            disable_warnings=True, display_progressbar=False)

    def scores(self, raw: Any, n: int) -> np.ndarray:
        """An engine's return value as ``n`` per-sample floats (NaN where the metric is undefined)."""
        values = self.per_sample(raw)
        if values.shape != (n,):
            raise RuntimeError(f"{self.name} returned scores of shape {values.shape} for {n} samples")
        return values


def describe_modality(modality: str) -> str:
    """A modality in words, plural (``images``, ``tabular rows``)."""
    return {"image": "images", "sequence": "sequences", "tokens": "token embeddings",
            "tabular": "tabular rows"}.get(modality, modality)


def _common(cls: type[Metric]) -> dict[str, Any]:
    parameters = inspect.signature(cls.__init__).parameters
    common = {"normalise": True}
    if "abs" in parameters:
        common["abs"] = parameters["abs"].default
    return common


def removed_value(context: MetricContext) -> Any:
    """The value a removed feature takes: the sample's smallest (``black``), or 0 in tabular rows (whose features
    have no common scale; 0 is the mean of standardised features and the tabular attributions' reference)."""
    return 0.0 if context.modality == "tabular" else "black"


# The registry --------------------------------------------------------------------------

METRICS: dict[str, MetricSpec] = {}
"""Metric name (the Quantus class name) -> :class:`MetricSpec`, in report order; filled by :func:`register_metric`."""


def register_metric(spec: MetricSpec, *, replace: bool = False) -> MetricSpec:
    """Add ``spec`` to :data:`METRICS` (its name becomes valid in ``evaluation.metrics``); returns it.

    The declaration is checked here: a known family and modalities, a direction
    of ``higher`` or ``lower``, and ``paper`` given exactly when ``fast`` takes
    ``definitions`` (a metric whose two definitions differ says how). A name
    already registered is refused unless ``replace``.
    """
    if spec.name in METRICS and not replace:
        raise ValueError(f"metric '{spec.name}' is already registered (pass replace=True to replace it)")
    if spec.family not in FAMILIES:
        raise ValueError(f"metric '{spec.name}': unknown family '{spec.family}'; valid: {', '.join(FAMILIES)}")
    unknown = [m for m in spec.modalities if m not in MODALITIES]
    if unknown or not spec.modalities:
        raise ValueError(f"metric '{spec.name}': modalities must be among {', '.join(MODALITIES)}; got "
                         f"{spec.modalities}")
    if spec.direction not in DIRECTIONS:
        raise ValueError(f"metric '{spec.name}': direction must be higher or lower; got {spec.direction!r}")
    takes = spec.fast is not None and "definitions" in inspect.signature(spec.fast).parameters
    if takes != spec.differs:
        raise ValueError(f"metric '{spec.name}': a fast function that takes 'definitions' needs 'paper' (what the "
                         f"paper's definition changes), and 'paper' needs such a function")
    METRICS[spec.name] = spec
    return spec


def metric_spec(name: str) -> MetricSpec:
    """The :class:`MetricSpec` of a registered metric."""
    if name not in METRICS:
        close = difflib.get_close_matches(name, list(METRICS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown metric '{name}'{hint}; valid metrics: {', '.join(METRICS)}")
    return METRICS[name]


def available_metrics(family: str | None = None) -> list[str]:
    """Registered metric names in report order, optionally of one family."""
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"unknown metric family '{family}'; valid families: {', '.join(FAMILIES)}")
    return [name for name, spec in METRICS.items() if family is None or spec.family == family]


def valid_metrics(context: MetricContext) -> list[str]:
    """The registered metrics that apply to ``context`` (:meth:`MetricSpec.skip_reason` is None), in report order."""
    return [name for name, spec in METRICS.items() if spec.skip_reason(context) is None]


def directions(names: list[str] | None = None) -> dict[str, str]:
    """Metric name -> ``higher`` or ``lower`` (is better)."""
    return {name: metric_spec(name).direction for name in (names or list(METRICS))}


def check_definitions(definitions: str, engine: str) -> None:
    """One-line :class:`~explainnn.errors.ConfigError` for an unknown ``definitions`` or one the engine cannot
    compute (the Quantus engine computes Quantus' own definitions)."""
    if definitions not in DEFINITIONS:
        raise ConfigError(f"evaluation.definitions must be one of {', '.join(DEFINITIONS)}; got {definitions!r}")
    if definitions == "paper" and engine == "quantus":
        raise ConfigError("evaluation.definitions: paper is computed by the fast engine only (Quantus computes its "
                          "own definitions); set evaluation.engine: fast or evaluation.definitions: quantus")
