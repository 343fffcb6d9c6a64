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
same seed both draw the same perturbations, and their scores are equal
(``tests/test_fast_metrics.py``) except where the fast engine follows a
metric's paper instead of Quantus (listed in :mod:`explainnn.evaluation.fast`).

Inputs are handed to Quantus in the layout it accepts, channel first:
images ``(N, C, H, W)`` as they are; sequences with one feature as signals
``(N, 1, T)`` through :class:`~explainnn.attributions.ChannelFirstSequenceModel`,
wider ones as ``(N, 1, T, F)``; token models in embedding space ``(N, 1, L, E)``
through :class:`~explainnn.attributions.EmbeddingSpaceModel`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from explainnn.attributions import (
    ChannelFirstSequenceModel,
    EmbeddingSpaceModel,
    explain_func,
    method_info,
)
from explainnn.errors import ConfigError, UserError
from explainnn.evaluation.fast import FAST_METRICS, Batch, run_metric
from explainnn.evaluation.metrics import MetricContext, MetricSpec, metric_spec
from explainnn.evaluation.summary import compare, markdown_table, summarise
from explainnn.torch_utils import eval_mode, model_device, seeded

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

    @property
    def method_modality(self) -> str:
        """The modality the attribution methods see: token models are explained in embedding space."""
        return "image" if self.modality == "image" else "sequence"


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
    if modality == "tokens":
        pad = getattr(model, "pad_index", pad_index)
        words = (x != pad).any(dim=0)
        first = int(torch.nonzero(words).flatten()[0]) if bool(words.any()) else 0
        wrapper = EmbeddingSpaceModel(model)
        embedded = wrapper.embed(x[:, first:]).cpu().numpy()
        return wrapper, embedded, None, {}
    raise UserError(f"unknown modality '{modality}'; valid modalities: image, sequence, tokens")


def select_samples(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: int,
    n_samples: int,
    *,
    exclude: Sequence[int] = (),
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of up to ``n_samples`` correctly classified samples of ``target``, and which are in ``exclude``.

    Samples outside ``exclude`` (those the causal graph was learned from) come
    first, in order; excluded ones fill up only when too few others exist.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"evaluation.n_samples must be a positive integer; got {n_samples!r}")
    device = model_device(model)
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            predictions.append(model(x[start:start + batch_size].to(device)).argmax(dim=1).cpu())
    predicted = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
    hits = torch.nonzero((predicted == target) & (torch.as_tensor(y).cpu() == target)).flatten().tolist()
    if not hits:
        raise UserError(f"no test sample of class {target} is classified correctly; evaluation needs at least one "
                        "(train the model longer or choose another discovery.target_class)")
    used = set(int(i) for i in exclude)
    ordered = [i for i in hits if i not in used] + [i for i in hits if i in used]
    chosen = np.asarray(ordered[:n_samples], dtype=np.int64)
    return chosen, np.isin(chosen, list(used))


def prepare_inputs(model: nn.Module, dataset: Any, target: int, n_samples: int, *,
                   discovery_samples: Sequence[int] = (), held_out: bool = True) -> EvaluationInputs:
    """Select the evaluation samples of ``dataset``'s test split and lay them out for Quantus.

    ``discovery_samples`` (test indices the causal graph was learned from) come
    last when ``held_out``; either way ``in_discovery`` marks them.
    """
    with eval_mode(model):
        index, _ = select_samples(model, dataset.x_test, dataset.y_test, target, n_samples,
                                  exclude=discovery_samples if held_out else ())
    in_discovery = np.isin(index, np.asarray(list(discovery_samples), dtype=np.int64))
    chosen = torch.as_tensor(index)
    masks = dataset.mask_test[chosen] if dataset.mask_test is not None else None
    view_model, x, s, options = quantus_view(model, dataset.x_test[chosen], dataset.info.modality, masks,
                                             dataset.info.pad_index)
    return EvaluationInputs(
        model=view_model, x=x, y=np.full(len(index), int(target), dtype=np.int64), samples=index,
        modality=dataset.info.modality, explain_options=options, masks=s, in_discovery=in_discovery,
        dataset=dataset.info.name,
    )


@dataclass
class EvaluationResults:
    """Everything one evaluation produced; :meth:`save` writes it in open formats."""

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
    """
    if engine not in ENGINES:
        raise ConfigError(f"evaluation.engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    methods, metrics = _unique(methods, "methods"), _unique(metrics, "metrics")
    specs = [metric_spec(name) for name in metrics]
    method_options = {name: dict(values or {}) for name, values in (method_options or {}).items()}
    metric_options = dict(metric_options or {})
    for name in metric_options:
        if name not in metrics:
            raise ConfigError(f"evaluation.options has settings for '{name}', which is not among the evaluated "
                              f"metrics; evaluated: {', '.join(metrics)}")
    infos = {name: method_info(name) for name in methods}
    device = model_device(model)
    context = MetricContext(
        modality=inputs.modality, sample_shape=tuple(inputs.x.shape[1:]), n_classes=_n_classes(inputs),
        seed=seed, dataset=inputs.dataset, has_masks=inputs.masks is not None,
    )
    settings = {spec.name: spec.settings(context, metric_options.get(spec.name)) for spec in specs}

    skipped: list[dict] = []
    runnable = []
    for spec in specs:
        reason = spec.skip_reason(context)
        if reason:
            skipped.append({"metric": spec.name, "method": "*", "reason": reason})
        else:
            runnable.append(spec)

    if engine == "quantus":
        method_options = _reference_methods(infos, method_options)
    explainers = _explainers(infos, inputs, graph, method_options, skipped)

    n = len(inputs.x)
    total = len(explainers) * (1 + len(runnable)) * n
    bar = tqdm(total=total, desc="evaluation", unit="sample", disable=not progress, dynamic_ncols=True)
    batch = Batch(inputs.model, inputs.x, inputs.y, masks=inputs.masks)
    engines = {spec.name: engine if spec.name in FAST_METRICS else "quantus" for spec in runnable}
    snapshot = _state(model)
    attributions: dict[str, np.ndarray] = {}
    timings: list[dict] = []
    scores: list[dict] = []
    try:
        with eval_mode(model), eval_mode(inputs.model):
            for name, explain in list(explainers.items()):
                bar.set_postfix_str(f"attributions / {name}", refresh=False)
                started = time.perf_counter()
                try:
                    with seeded(seed, device):
                        attributions[name] = np.asarray(explain(inputs.model, inputs.x, inputs.y), dtype=np.float32)
                except UserError as error:
                    skipped.append({"metric": "*", "method": name, "reason": str(error)})
                    del explainers[name]
                    bar.update((1 + len(runnable)) * n)
                    continue
                timings.append({"metric": "attributions", "method": name, "engine": "",
                                "seconds": round(time.perf_counter() - started, 4)})
                bar.update(n)
            for spec in runnable:
                init, calls = settings[spec.name]
                for name, explain in explainers.items():
                    bar.set_postfix_str(f"{spec.name} / {name}", refresh=False)
                    started = time.perf_counter()
                    try:
                        if engines[spec.name] == "fast":
                            values = _run_fast(spec, init, calls, batch, attributions[name], explain, seed, device)
                        else:
                            values = _run(spec, init, calls, inputs, attributions[name], explain, seed, device)
                    except UserError as error:
                        skipped.append({"metric": spec.name, "method": name, "reason": str(error)})
                        bar.update(n)
                        continue
                    timings.append({"metric": spec.name, "method": name, "engine": engines[spec.name],
                                    "seconds": round(time.perf_counter() - started, 4)})
                    scores.extend({"method": name, "metric": spec.name, "sample": int(sample), "value": float(value)}
                                  for sample, value in zip(inputs.samples, values))
                    bar.update(n)
    finally:
        bar.close()
    _check_unchanged(model, snapshot)

    directions = {spec.name: spec.direction for spec in specs}
    families = {spec.name: spec.family for spec in specs}
    summary = summarise(scores, directions, families=families)
    comparisons = compare(scores, directions, reference=reference, correction=correction)
    record = _record(inputs, seed, reference, correction, method_options, explainers, methods, specs, settings)
    record["engine"] = engine
    for name, used in engines.items():
        record["metrics"][name]["engine"] = used
    return EvaluationResults(
        scores=scores, summary=summary, comparisons=comparisons, skipped=skipped, timings=timings,
        settings=record, samples=inputs.samples, attributions=attributions, x=inputs.x, y=inputs.y,
        reference=reference,
    )


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
              device: torch.device) -> np.ndarray:
    with seeded(seed, device):
        raw = run_metric(spec, init, calls, batch, a_batch, explain, seed)
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
