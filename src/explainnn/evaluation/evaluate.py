"""Run every metric on every attribution method, on the same samples, into one tidy table.

Fairness is built in rather than left to the caller:

* every method explains the same samples (correctly classified test samples
  of the target class, those the causal graph was *not* learned from first);
* each method's attributions are computed once and handed to every metric as
  ``a_batch``; metrics that must explain again (robustness, randomisation) call
  the same method with the same options (and the same ``graph``);
* every metric has one set of settings (normalisation, ``abs``, softmax, ...)
  for all methods (:mod:`explainnn.evaluation.metrics`);
* before each (metric, method) run the random generators are reset to the same
  seed, so every method meets the same perturbed inputs, random subsets and
  off-target classes; the caller's random state is restored afterwards;
* the model is never modified (Quantus' randomisation tests re-initialise
  layers of a deep copy); this is checked after every run.

Two engines compute the metrics (``engine``): ``fast``, the batched
re-implementation in :mod:`explainnn.evaluation.fast` (the default; metrics it
does not implement run with Quantus), and ``quantus``, Quantus itself. With the
same seed both draw the same perturbations, and with ``definitions="quantus"``
(the default) their scores are equal (``tests/evaluation/test_fast_metrics.py``,
``tests/evaluation/test_definitions.py``); ``definitions="paper"`` has the fast engine
compute the papers' definitions where Quantus 0.6 departs from them (each
metric's :attr:`~explainnn.evaluation.metrics.MetricSpec.paper`).

Inputs are handed to Quantus in the layout it accepts, channel first:
images ``(N, C, H, W)`` as they are; sequences with one feature as signals
``(N, 1, T)`` through :class:`~explainnn.attributions.ChannelFirstSequenceModel`,
wider ones as ``(N, 1, T, F)``; token models in embedding space ``(N, 1, L, E)``
through :class:`~explainnn.attributions.EmbeddingSpaceModel`; tabular rows as
one-channel rows ``(N, 1, F)`` through :class:`TabularRowsModel` (Quantus 0.6
mis-sizes plain ``(N, F)`` inputs: FaithfulnessCorrelation refuses every
``subset_size`` and the localisation metrics every mask). :func:`evaluate` lays
out ``EvaluationInputs`` of modality ``tabular`` given as ``(N, F)`` itself.

:func:`evaluate` checks its inputs before any work (:func:`explainnn.inputs.check_inputs`:
the model reads them, one target class per sample) and refuses, in one line,
a request whose every metric would be skipped, naming the metrics that apply.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from explainnn.attributions import (
    ChannelFirstSequenceModel,
    EmbeddingSpaceModel,
    explain_func,
    method_info,
)
from explainnn.errors import ConfigError, DataError, UserError
from explainnn.evaluation.fast import Batch, run_metric
from explainnn.evaluation.metrics import MetricContext, MetricSpec, check_definitions, metric_spec, valid_metrics
from explainnn.evaluation.summary import compare, markdown_table, summarise
from explainnn.inputs import check_inputs
from explainnn.progress import progress_bar
from explainnn.torch_utils import eval_mode, model_device, seeded

logger = logging.getLogger(__name__)

ENGINES = ("fast", "quantus")
"""``evaluation.engine`` choices: the batched re-implementation or Quantus itself."""

QUANTUS_NOTICES = (
    r"The settings for perturbing input e\.g\., 'perturb_func' didn't cause change in input",
    r"`trapz` is deprecated",
)
"""Quantus' notices that say nothing about the results (removing black pixels of a digit with a black
baseline changes nothing, by design); silenced around each metric run."""


@dataclass
class EvaluationInputs:
    """The evaluated samples, as Quantus receives them, and where they came from."""

    model: nn.Module
    x: np.ndarray
    y: np.ndarray
    samples: np.ndarray
    modality: str
    explain_options: dict[str, Any] = field(default_factory=dict)
    masks: np.ndarray | None = None
    in_discovery: np.ndarray | None = None
    dataset: str = ""
    misclassified: np.ndarray | None = None

    @property
    def method_modality(self) -> str:
        """The modality the attribution methods see: token models are explained in embedding space."""
        return self.modality if self.modality in ("image", "tabular") else "sequence"


class TabularRowsModel(nn.Module):
    """A model of tabular rows ``(N, F)`` fed one-channel rows ``(N, 1, F)``, the layout Quantus sizes correctly.

    It reads ``(N, F)`` rows as well, and declares ``input_modality = "tabular"``
    so that :func:`~explainnn.attributions.attribute` explains ``(N, 1, F)``
    inputs as rows and returns ``(N, 1, F)`` attributions.
    """

    input_modality = "tabular"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if rows.dim() == 3 and rows.shape[1] == 1:
            rows = rows[:, 0]
        if rows.dim() != 2:
            raise DataError(f"TabularRowsModel reads (N, F) or (N, 1, F) rows; got shape {tuple(rows.shape)}")
        return self.model(rows)


def quantus_view(model: nn.Module, x: torch.Tensor, modality: str, masks: torch.Tensor | None = None,
                 pad_index: int | None = None) -> tuple[nn.Module, np.ndarray, np.ndarray | None, dict]:
    """``(model, x, masks, explain_options)`` in the channel-first layout Quantus accepts.

    Token ids lose the padding columns shared by every sample (left padding), so
    perturbations in embedding space do not turn padding into words.
    """
    x = torch.as_tensor(x)
    plain = masks.cpu().numpy() if masks is not None else None
    if modality == "image":
        return model, x.cpu().numpy(), plain, {}
    if modality == "sequence":
        if x.shape[-1] == 1:
            signals = x.transpose(1, 2)
            mask = None if plain is None else np.ascontiguousarray(plain.transpose(0, 2, 1))
            return ChannelFirstSequenceModel(model), signals.cpu().numpy(), mask, {}
        mask = None if plain is None else plain[:, None]
        return model, x[:, None].cpu().numpy(), mask, {"modality": "sequence"}
    if modality == "tabular":
        mask = None if plain is None else plain[:, None]
        return TabularRowsModel(model), x[:, None].cpu().numpy(), mask, {}
    if modality == "tokens":
        pad = getattr(model, "pad_index", pad_index)
        words = x.ne(int(pad) if pad is not None else -1).any(dim=0)
        first = int(torch.nonzero(words).flatten()[0]) if bool(words.any()) else 0
        wrapper = EmbeddingSpaceModel(model)
        embedded = wrapper.embed(x[:, first:]).cpu().numpy()
        return wrapper, embedded, None, {}
    raise UserError(f"unknown modality '{modality}'; valid modalities: image, sequence, tokens, tabular")


def select_evaluation_samples(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: int,
    n_samples: int,
    *,
    exclude: Sequence[int] = (),
    include_misclassified: bool = False,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of up to ``n_samples`` samples of class ``target`` to evaluate on, and which are in ``exclude``.

    Correctly classified samples outside ``exclude`` (those the causal graph was
    learned from) come first, in order; with ``include_misclassified`` the
    samples labelled ``target`` that the model classifies as another class come
    next (every method still explains ``target``, their true class); excluded
    correctly classified ones fill up only when too few others exist.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"evaluation.n_samples must be a positive integer; got {n_samples!r}")
    x = check_inputs(model, x, labels=y, target=target, what="evaluation")
    predicted = _predictions(model, x, batch_size)
    labelled = torch.as_tensor(y).cpu() == target
    hits = torch.nonzero((predicted == target) & labelled).flatten().tolist()
    if not hits:
        raise UserError(f"no test sample of class {target} is classified correctly; evaluation needs at least one "
                        "(train the model longer or choose another discovery.target_class)")
    used = set(int(i) for i in exclude)
    misses = torch.nonzero((predicted != target) & labelled).flatten().tolist() if include_misclassified else []
    ordered = ([i for i in hits if i not in used] + [i for i in misses if i not in used]
               + [i for i in hits if i in used])
    chosen = np.asarray(ordered[:n_samples], dtype=np.int64)
    return chosen, np.isin(chosen, list(used))


def _predictions(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The predicted class of every row of ``x``, ``batch_size`` rows per pass."""
    device = model_device(model)
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            predictions.append(model(x[start:start + batch_size].to(device)).argmax(dim=1).cpu())
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


def prepare_inputs(model: nn.Module, dataset: Any, target: int, n_samples: int, *,
                   discovery_samples: Sequence[int] = (), held_out: bool = True,
                   include_misclassified: bool = False) -> EvaluationInputs:
    """Select the evaluation samples of ``dataset``'s test split and lay them out for Quantus.

    ``discovery_samples`` (test indices the causal graph was learned from) come
    last when ``held_out``; either way ``in_discovery`` marks them.
    ``include_misclassified`` admits test samples of class ``target`` that the
    model misclassifies, after the correctly classified ones
    (:func:`select_evaluation_samples`); ``misclassified`` marks them.
    """
    with eval_mode(model):
        index, _ = select_evaluation_samples(model, dataset.x_test, dataset.y_test, target, n_samples,
                                             exclude=discovery_samples if held_out else (),
                                             include_misclassified=include_misclassified)
        chosen = torch.as_tensor(index)
        predicted = _predictions(model, dataset.x_test[chosen], 512)
    in_discovery = np.isin(index, np.asarray(list(discovery_samples), dtype=np.int64))
    masks = dataset.mask_test[chosen] if dataset.mask_test is not None else None
    view_model, x, s, options = quantus_view(model, dataset.x_test[chosen], dataset.info.modality, masks,
                                             dataset.info.pad_index)
    return EvaluationInputs(
        model=view_model, x=x, y=np.full(len(index), int(target), dtype=np.int64), samples=index,
        modality=dataset.info.modality, explain_options=options, masks=s, in_discovery=in_discovery,
        dataset=dataset.info.name, misclassified=predicted.numpy() != int(target),
    )


@dataclass
class EvaluationResults:
    """Everything one evaluation produced; :func:`~explainnn.evaluation.io.save_results` writes it in open formats.

    ``scores``, ``summary``, ``comparisons``, ``skipped`` and ``timings`` are the
    rows of the tables of the same names (:data:`~explainnn.evaluation.io.TABLES`);
    ``settings`` is ``settings.json``. The fields after ``reference`` say how the
    scores were computed and on which samples.
    """

    scores: list[dict]
    summary: list[dict]
    comparisons: list[dict]
    skipped: list[dict]
    timings: list[dict]
    settings: dict[str, Any]
    samples: np.ndarray
    attributions: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray
    reference: str = "causal"
    engine: str = "fast"
    """``fast`` or ``quantus``; metrics without a batched implementation ran with Quantus (``timings``)."""
    definitions: str = "quantus"
    """``quantus`` (Quantus 0.6's definition of every metric) or ``paper``."""
    samples_used_by_discovery: int = 0
    """How many of the samples the causal graph was learned from (too few others were left)."""
    samples_misclassified: int = 0
    """How many of the samples the model misclassifies (``include_misclassified``)."""
    seconds: float = 0.0
    """Wall time of the evaluation (sample selection included when :func:`evaluate_class` ran it)."""

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(row["method"] for row in self.summary))

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(row["metric"] for row in self.summary))

    def markdown(self) -> str:
        """The summary table (mean +- 95% CI, rank, paired p-value against the reference) in Markdown."""
        return markdown_table(self.summary, self.comparisons, reference=self.reference)


def evaluate(
    model: nn.Module,
    inputs: EvaluationInputs,
    methods: Sequence[str],
    metrics: Sequence[str],
    *,
    graph: Any = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    progress: bool = True,
    reference: str = "causal",
    correction: str = "holm",
    engine: str = "fast",
    definitions: str = "quantus",
) -> EvaluationResults:
    """Score every method with every metric on ``inputs``; see the module docstring for the rules.

    ``model`` is the model itself (``inputs.model`` may wrap it); it is checked
    to be bit-identical afterwards. A method that does not support the inputs,
    needs a graph that is missing, or refuses the inputs with a
    :class:`~explainnn.errors.UserError` is skipped for every metric; a metric
    that cannot apply to the inputs is skipped for every method; each skip is
    listed with its reason in ``results.skipped``. ``method_options`` may hold
    options of methods that are not evaluated (the attribution step's); they are
    ignored. ``engine`` is ``fast`` (batched; metrics it lacks run with Quantus)
    or ``quantus``; ``results.timings`` says which engine ran each metric.
    ``definitions`` is ``quantus`` (Quantus 0.6's definition of every metric,
    so both engines give the same scores) or ``paper`` (the papers' where they
    differ; fast engine only).

    Before any work, ``inputs`` are checked (the model reads ``inputs.x``, one
    class in range per sample in ``inputs.y``, one index per sample in
    ``inputs.samples``, masks of the inputs' shape), and a request whose every
    metric cannot apply to the inputs is a one-line
    :class:`~explainnn.errors.ConfigError` naming the modality and the metrics
    that apply. Tabular inputs may be given as ``(N, F)`` rows; they are laid
    out for Quantus here (:class:`TabularRowsModel`).
    """
    started = time.perf_counter()
    if engine not in ENGINES:
        raise ConfigError(f"evaluation.engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    check_definitions(definitions, engine)
    _check_inputs(inputs)
    inputs = _laid_out(inputs)
    methods, metrics = _unique(methods, "methods"), _unique(metrics, "metrics")
    specs = [metric_spec(name) for name in metrics]
    method_options = {name: dict(values or {}) for name, values in (method_options or {}).items()}
    settings = _metric_settings(inputs, specs, metric_options, seed)
    skipped: list[dict] = []
    runnable = _runnable(specs, inputs, seed, skipped)
    if not runnable:
        raise ConfigError(_nothing_applies(specs, _metric_context(inputs, seed)))
    infos = {name: method_info(name) for name in methods}
    if engine == "quantus":
        method_options = _reference_methods(infos, method_options)
    explainers = _explainers(infos, inputs, graph, method_options, skipped)
    engines = {spec.name: engine if spec.fast is not None else "quantus" for spec in runnable}

    run = _Scoring(inputs, explainers, seed, model_device(model), skipped, definitions)
    bar = progress_bar(total=len(explainers) * (1 + len(runnable)) * len(inputs.x), desc="evaluation", unit="sample",
                       enabled=progress, dynamic_ncols=True)
    snapshot = _state(model)
    try:
        with eval_mode(model), eval_mode(inputs.model):
            run.explain_all(bar, n_metrics=len(runnable))
            for spec in runnable:
                run.score(spec, settings[spec.name], engines[spec.name], bar)
    finally:
        bar.close()
    _check_unchanged(model, snapshot)

    record = _record(inputs, seed, reference, correction, method_options, explainers, methods, specs, settings)
    record["engine"] = engine
    record["definitions"] = definitions
    for name, used in engines.items():
        record["metrics"][name]["engine"] = used
    results = _results(run, specs, record, reference, correction)
    return replace(results, engine=engine, definitions=definitions, seconds=time.perf_counter() - started)


def evaluate_class(
    model: nn.Module,
    dataset: Any,
    target: int,
    graph: Any = None,
    *,
    methods: Sequence[str],
    metrics: Sequence[str],
    n_samples: int = 20,
    options: dict[str, dict[str, Any]] | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    progress: bool = True,
    reference: str = "causal",
    held_out: bool = True,
    engine: str = "fast",
    definitions: str = "quantus",
    include_misclassified: bool = False,
) -> EvaluationResults:
    """Evaluate ``methods`` with ``metrics`` on up to ``n_samples`` test samples of class ``target`` of ``dataset``.

    The samples are chosen by :func:`prepare_inputs`: correctly classified test
    samples of the class first, those ``graph`` (a
    :class:`~explainnn.causal.CausalGraph` or None, handed to the methods that
    need one) was learned from last when ``held_out``, and with
    ``include_misclassified`` the class's misclassified test samples after the
    correctly classified ones (still explained and scored for ``target``).
    ``options`` are per-metric settings (``evaluation.options``),
    ``method_options`` per-method attribution options; ``engine`` and
    ``definitions`` as in :func:`evaluate`. Fewer samples than ``n_samples``
    are evaluated when the class has fewer (``len(results.samples)`` says how
    many). Nothing is written: :func:`~explainnn.evaluation.io.save_results`
    and :func:`~explainnn.evaluation.plots.plot_evaluation` write the results.
    """
    started = time.perf_counter()
    check_definitions(definitions, engine)
    metadata = getattr(graph, "metadata", {}) if graph is not None else {}
    # Graph samples are test indices unless the graph was learned from another split (discovery.samples_from).
    in_test = metadata.get("inputs", "test split") == "test split"
    learned_from = list(metadata.get("samples", [])) if in_test else []
    inputs = prepare_inputs(model, dataset, int(target), n_samples, discovery_samples=learned_from,
                            held_out=held_out, include_misclassified=include_misclassified)
    if len(inputs.samples) < n_samples:
        logger.info("only %d test samples of class %d to evaluate on (asked for %d)", len(inputs.samples),
                    int(target), n_samples)
    results = evaluate(
        model, inputs, methods, metrics, graph=graph, method_options=method_options, metric_options=options,
        seed=seed, progress=progress, reference=reference, engine=engine, definitions=definitions,
    )
    return replace(results, seconds=time.perf_counter() - started)


def _laid_out(inputs: EvaluationInputs) -> EvaluationInputs:
    """``inputs`` in Quantus' layout: tabular ``(N, F)`` rows become one-channel rows through :class:`TabularRowsModel`."""
    if inputs.modality != "tabular" or np.ndim(inputs.x) != 2:
        return inputs
    model = inputs.model if isinstance(inputs.model, TabularRowsModel) else TabularRowsModel(inputs.model)
    masks = None if inputs.masks is None else np.asarray(inputs.masks)[:, None]
    return replace(inputs, model=model, x=np.asarray(inputs.x)[:, None], masks=masks)


def _check_inputs(inputs: EvaluationInputs) -> None:
    """One-line errors for inputs the model cannot read and for classes, sample indices or masks that do not fit."""
    check_inputs(inputs.model, inputs.x, labels=inputs.y, what="evaluate")
    n = len(inputs.x)
    if np.ndim(inputs.samples) != 1 or len(inputs.samples) != n:
        raise UserError(f"evaluate: inputs.samples hold {np.shape(inputs.samples)[0] if np.ndim(inputs.samples) else 0} "
                        f"indices for {n} inputs; pass one sample index per input")
    if inputs.masks is not None and np.shape(inputs.masks) != np.shape(inputs.x):
        raise UserError(f"evaluate: inputs.masks have shape {np.shape(inputs.masks)}; they must have the shape of "
                        f"inputs.x, {np.shape(inputs.x)}")


def _nothing_applies(specs: list[MetricSpec], context: MetricContext) -> str:
    """The one-line refusal of a request whose every metric is skipped: why, and the metrics that would apply."""
    def why(spec: MetricSpec) -> str:
        if context.modality not in spec.modalities:
            return f"{' and '.join(spec.modalities)} only"
        if spec.needs_masks and not context.has_masks:
            return "needs ground-truth masks"
        return spec.skip_reason(context) or ""

    masks = "" if context.has_masks else " without ground-truth masks"
    valid = valid_metrics(context)
    return (f"evaluation: none of the requested metrics applies to {context.describe}{masks} "
            f"({'; '.join(f'{spec.name}: {why(spec)}' for spec in specs)}); metrics valid for them: "
            f"{', '.join(valid) if valid else 'none'}")


def _results(run: _Scoring, specs: list[MetricSpec], record: dict[str, Any], reference: str,
             correction: str) -> EvaluationResults:
    """The scores of ``run`` with their summary and paired comparisons, and the run's settings ``record``."""
    directions = {spec.name: spec.direction for spec in specs}
    inputs = run.inputs
    return EvaluationResults(
        scores=run.scores, summary=summarise(run.scores, directions, families={s.name: s.family for s in specs}),
        comparisons=compare(run.scores, directions, reference=reference, correction=correction),
        skipped=run.skipped, timings=run.timings, settings=record, samples=inputs.samples,
        attributions=run.attributions, x=inputs.x, y=inputs.y, reference=reference,
        samples_used_by_discovery=int(record["samples_used_by_discovery"]),
        samples_misclassified=int(record["samples_misclassified"]),
    )


def _metric_settings(inputs: EvaluationInputs, specs: list[MetricSpec],
                     metric_options: dict[str, dict[str, Any]] | None, seed: int) -> dict[str, tuple[dict, dict]]:
    """Each metric's Quantus ``(init, call)`` settings for ``inputs``; options of metrics not evaluated are refused."""
    metric_options = dict(metric_options or {})
    names = [spec.name for spec in specs]
    for name in metric_options:
        if name not in names:
            raise ConfigError(f"evaluation.options has settings for '{name}', which is not among the evaluated "
                              f"metrics; evaluated: {', '.join(names)}")
    context = _metric_context(inputs, seed)
    return {spec.name: spec.settings(context, metric_options.get(spec.name)) for spec in specs}


def _metric_context(inputs: EvaluationInputs, seed: int) -> MetricContext:
    return MetricContext(
        modality=inputs.modality, sample_shape=tuple(inputs.x.shape[1:]), n_classes=_n_classes(inputs),
        seed=seed, dataset=inputs.dataset, has_masks=inputs.masks is not None,
    )


def _runnable(specs: list[MetricSpec], inputs: EvaluationInputs, seed: int, skipped: list[dict]) -> list[MetricSpec]:
    """The metrics that apply to ``inputs``; the others go to ``skipped`` with their reason."""
    context = _metric_context(inputs, seed)
    runnable = []
    for spec in specs:
        reason = spec.skip_reason(context)
        if reason:
            skipped.append({"metric": spec.name, "method": "*", "reason": reason})
        else:
            runnable.append(spec)
    return runnable


class _Scoring:
    """One evaluation's work: every method's attributions, then every metric on them; rows and timings collected."""

    def __init__(self, inputs: EvaluationInputs, explainers: dict[str, Any], seed: int, device: torch.device,
                 skipped: list[dict], definitions: str = "quantus") -> None:
        self.inputs, self.explainers, self.seed, self.device, self.skipped = inputs, explainers, seed, device, skipped
        self.definitions = definitions
        self.batch = Batch(inputs.model, inputs.x, inputs.y, masks=inputs.masks)
        self.attributions: dict[str, np.ndarray] = {}
        self.timings: list[dict] = []
        self.scores: list[dict] = []

    def explain_all(self, bar: Any, *, n_metrics: int) -> None:
        """Each method's attributions of the samples, once (a method that refuses them is skipped from here on)."""
        n = len(self.inputs.x)
        for name, explain in list(self.explainers.items()):
            bar.set_postfix_str(f"attributions / {name}", refresh=False)
            started = time.perf_counter()
            try:
                with seeded(self.seed, self.device):
                    self.attributions[name] = explain_in_batches(explain, self.inputs.model, self.inputs.x,
                                                                 self.inputs.y)
            except UserError as error:
                self.skipped.append({"metric": "*", "method": name, "reason": str(error)})
                del self.explainers[name]
                bar.update((1 + n_metrics) * n)
                continue
            self._timed("attributions", name, "", started, time.perf_counter() - started)
            bar.update(n)

    def score(self, spec: MetricSpec, settings: tuple[dict, dict], engine: str, bar: Any) -> None:
        """``spec`` on every method's attributions with ``engine``; a method the metric refuses is skipped."""
        init, calls = settings
        for name, method in self.explainers.items():
            bar.set_postfix_str(f"{spec.name} / {name}", refresh=False)
            started, inside = time.perf_counter(), [0.0]
            explain = _clocked(method, inside)
            try:
                if engine == "fast":
                    values = _run_fast(spec, init, calls, self.batch, self.attributions[name], explain, self.seed,
                                       self.device, self.definitions)
                else:
                    values = _run(spec, init, calls, self.inputs, self.attributions[name], explain, self.seed,
                                  self.device)
            except UserError as error:
                self.skipped.append({"metric": spec.name, "method": name, "reason": str(error)})
                bar.update(len(self.inputs.x))
                continue
            self._timed(spec.name, name, engine, started, inside[0])
            self.scores.extend({"method": name, "metric": spec.name, "sample": int(sample), "value": float(value)}
                               for sample, value in zip(self.inputs.samples, values))
            bar.update(len(self.inputs.x))

    def _timed(self, metric: str, method: str, engine: str, started: float, explaining: float) -> None:
        """A row of ``timings.csv``: the seconds of one run and, of those, the seconds spent inside the
        attribution method (its explanations, or re-explanations of perturbed inputs for a metric)."""
        self.timings.append({"metric": metric, "method": method, "engine": engine,
                             "seconds": round(time.perf_counter() - started, 4),
                             "explain_seconds": round(explaining, 4)})


QUANTUS_BATCH = 64
"""Quantus' default ``batch_size``: the metrics hand an attribution method perturbed copies this many at a time."""


def explain_in_batches(explain: Any, model: nn.Module, x: np.ndarray, y: np.ndarray,
                       batch_size: int = QUANTUS_BATCH) -> np.ndarray:
    """``explain``'s attributions of ``x``, as float32: in one call for a deterministic method, else in
    Quantus' batches of ``batch_size``.

    A stochastic method draws by position in its call, from the same seed each
    call; explained in the batches in which the robustness and randomisation
    metrics later re-explain their copies, every sample meets the draws its
    copies meet (common random numbers, as LIME and KernelSHAP seeded per input
    do by construction), also beyond the first ``batch_size`` samples.
    """
    if getattr(explain, "deterministic", False) or len(x) <= batch_size:
        return np.asarray(explain(model, x, y), dtype=np.float32)
    return np.concatenate([np.asarray(explain(model, x[start:start + batch_size], y[start:start + batch_size]),
                                      dtype=np.float32) for start in range(0, len(x), batch_size)])


def _clocked(explain: Any, seconds: list[float]) -> Any:
    """``explain`` adding the seconds spent inside it to ``seconds[0]`` (its attributes, such as
    ``deterministic``, carried over)."""

    @functools.wraps(explain)
    def clocked(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return explain(*args, **kwargs)
        finally:
            seconds[0] += time.perf_counter() - started

    return clocked


def _reference_methods(infos: dict[str, Any], method_options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Quantus engine runs the reference implementations throughout: methods with a batched and a
    reference implementation (LIME, KernelSHAP: ``batched``) use the reference one unless told otherwise."""
    chosen = {name: dict(values) for name, values in method_options.items()}
    for name, info in infos.items():
        if "batched" in info.options():
            chosen.setdefault(name, {}).setdefault("batched", False)
    return chosen


def _explainers(infos: dict[str, Any], inputs: EvaluationInputs, graph: Any,
                method_options: dict[str, dict[str, Any]], skipped: list[dict]) -> dict[str, Any]:
    """A Quantus ``explain_func`` per method that can explain ``inputs``; the others go to ``skipped``."""
    explainers: dict[str, Any] = {}
    for name, info in infos.items():
        if inputs.method_modality not in info.modalities:
            where = "token embeddings" if inputs.modality == "tokens" else f"{inputs.method_modality} inputs"
            skipped.append({"metric": "*", "method": name,
                            "reason": f"{name} has no implementation for {where} "
                                      f"(it supports: {', '.join(info.modalities)})"})
            continue
        if info.needs_graph and graph is None:
            skipped.append({"metric": "*", "method": name,
                            "reason": f"{name} needs a causal graph and there is none (is discovery enabled?)"})
            continue
        options = {**inputs.explain_options, **method_options.get(name, {})}
        if info.needs_graph:
            options["graph"] = graph
        explainers[name] = explain_func(name, **options)
    return explainers


def _record(inputs: EvaluationInputs, seed: int, reference: str, correction: str,
            method_options: dict[str, dict[str, Any]], explainers: dict[str, Any], methods: list[str],
            specs: list[MetricSpec], settings: dict[str, tuple[dict, dict]]) -> dict[str, Any]:
    """The JSON-able settings of an evaluation (the graph itself is saved by the discovery step)."""
    return {
        "dataset": inputs.dataset,
        "modality": inputs.modality,
        "quantus_layout": list(inputs.x.shape),
        "target": int(inputs.y[0]) if len(inputs.y) else None,
        "seed": seed,
        "reference": reference,
        "correction": correction,
        "normalisation": "each sample divided by its largest |attribution| (normalise=True for every metric)",
        "samples": [int(i) for i in inputs.samples],
        "samples_used_by_discovery": int(inputs.in_discovery.sum()) if inputs.in_discovery is not None else 0,
        "samples_misclassified": int(inputs.misclassified.sum()) if inputs.misclassified is not None else 0,
        "methods": {name: {**inputs.explain_options, **method_options.get(name, {})} if name in explainers
                    else "skipped" for name in methods},
        "metrics": {spec.name: {"family": spec.family, "direction": spec.direction, "note": spec.note,
                                "init": settings[spec.name][0], "call": settings[spec.name][1]} for spec in specs},
    }


def _run(spec: MetricSpec, init: dict, calls: dict, inputs: EvaluationInputs, a_batch: np.ndarray,
         explain: Any, seed: int, device: torch.device) -> np.ndarray:
    metric = spec.create(init)
    with seeded(seed, device), warnings.catch_warnings():
        for message in QUANTUS_NOTICES:
            warnings.filterwarnings("ignore", message=message)
        raw = metric(
            model=inputs.model, x_batch=inputs.x, y_batch=inputs.y, a_batch=a_batch.copy(), s_batch=inputs.masks,
            channel_first=True, explain_func=explain, explain_func_kwargs={}, model_predict_kwargs=None,
            device=str(device), **calls,
        )
    return spec.scores(raw, len(inputs.x))


def _run_fast(spec: MetricSpec, init: dict, calls: dict, batch: Batch, a_batch: np.ndarray, explain: Any, seed: int,
              device: torch.device, definitions: str) -> np.ndarray:
    with seeded(seed, device):
        raw = run_metric(spec, init, calls, batch, a_batch, explain, seed, definitions)
    return spec.scores(raw, len(batch))


def _unique(names: Sequence[str], what: str) -> list[str]:
    names = list(names)
    if not names:
        raise ConfigError(f"evaluation needs at least one entry in {what}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"evaluation {what} lists '{duplicates[0]}' twice")
    return names


def _n_classes(inputs: EvaluationInputs) -> int:
    with torch.inference_mode(), eval_mode(inputs.model):
        sample = torch.as_tensor(inputs.x[:1]).to(model_device(inputs.model))
        return int(inputs.model(sample).shape[-1])


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _check_unchanged(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    current = model.state_dict()
    changed = [key for key, value in snapshot.items() if key not in current or not torch.equal(current[key], value)]
    if changed or set(current) != set(snapshot):
        raise RuntimeError(f"the evaluation modified the model ({', '.join(changed) or 'its parameter set'}); "
                           "this is a bug in explainnn or a metric")
