"""Top-down discovery of the hidden units and edges that cause a class prediction.

Starting from the target output unit, each step takes the layer feeding the
current causal units, intervenes on every candidate unit of that layer (on its
edges into the current causal units, or on the unit itself), measures the change
of the target logit on the same samples, and keeps the candidates that a test
declares causes. The kept units become the causal units of the next step down,
until the input (or a layer without a parent) is reached.

All candidates of a layer are evaluated in one batched
:class:`~explainnn.interventions.InterventionRunner` call, which reuses the clean
activations below the intervened layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from explainnn.causal.graph import CausalGraph, node_id
from explainnn.causal.stats import TestResult, paired_test, ztest_research
from explainnn.errors import ConfigError, UserError
from explainnn.interventions import (
    EdgeIntervention,
    InterventionRunner,
    LayerInfo,
    NodeIntervention,
    soft_value,
)

On = Literal["edges", "nodes"]
Kind = Literal["hard", "soft"]
Test = Literal["paired", "ztest"]

ONS = ("edges", "nodes")
KINDS = ("hard", "soft")
TESTS = ("paired", "ztest")
INPUT = "input"


@dataclass(frozen=True)
class DiscoveryOptions:
    """The options of one discovery run (see :func:`discover`)."""

    on: On = "edges"
    intervention: Kind = "hard"
    beta: float = 0.0
    delta: float = 0.1
    n_samples: int = 100
    test: Test = "paired"
    alpha: float = 0.05
    min_effect: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("on", self.on, ONS)
        _choice("intervention", self.intervention, KINDS)
        _choice("test", self.test, TESTS)
        if not 0.0 <= self.beta <= 1.0 or not 0.0 <= self.delta <= 1.0:
            raise ConfigError(f"beta and delta must be in [0, 1]; got beta={self.beta}, delta={self.delta}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"alpha must be in (0, 1); got {self.alpha}")
        if self.min_effect < 0:
            raise ConfigError(f"min_effect must be >= 0; got {self.min_effect}")
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples < 2:
            raise ConfigError(f"n_samples must be an integer >= 2; got {self.n_samples!r}")
        if self.test == "ztest" and (self.on != "edges" or self.intervention != "hard"):
            raise ConfigError(
                "test 'ztest' reproduces the research code, which cuts edges (on: edges, intervention: hard); "
                f"got on={self.on}, intervention={self.intervention}"
            )

    def describe(self, value: float | None = None) -> str:
        """A short label of the intervention used, stored on every unit and edge."""
        what = "edge weights set to" if self.on == "edges" else "unit scaled by"
        if self.intervention == "hard":
            return "edges cut (weights set to 0)" if self.on == "edges" else "unit set to 0"
        return f"{what} u~U({self.beta:g}, {self.beta + self.delta:g})" + ("" if value is None else f" = {value:.4g}")


def _choice(key: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}: {value!r} is not a valid choice; valid: {', '.join(valid)}")


def select_samples(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int,
    n_samples: int,
    *,
    labels: torch.Tensor | None = None,
    batch_size: int = 512,
) -> torch.Tensor:
    """Indices of the first ``n_samples`` inputs (in order) that the model classifies as ``target``.

    With ``labels``, a sample must also be labelled ``target`` (correctly
    classified), as in the research code. Fewer matches than asked is an error
    only when fewer than two are found.
    """
    found: list[torch.Tensor] = []
    count = 0
    for start in range(0, len(inputs), batch_size):
        hit = _predict(model, inputs[start : start + batch_size]) == target
        if labels is not None:
            hit &= torch.as_tensor(labels[start : start + batch_size]).cpu() == target
        found.append(torch.nonzero(hit).flatten() + start)
        count += len(found[-1])
        if count >= n_samples:  # the first n in order are known: stop predicting
            break
    index = torch.cat(found)[:n_samples] if found else torch.zeros(0, dtype=torch.long)
    if len(index) < 2:
        raise UserError(
            f"only {len(index)} of {len(inputs)} inputs are classified as class {target}; "
            "discovery needs at least 2 (pass more inputs or another target)"
        )
    return index


def _predict(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model(inputs.to(_device(model))).argmax(-1).cpu()
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def causal_chain(layers: Sequence[LayerInfo], names: Sequence[str] | None = None) -> list[LayerInfo]:
    """The layers discovery walks, from the output layer down its parents.

    ``names`` restricts the walk to a top part of the chain: discovery stops below
    the lowest named layer. The output layer is always the first element.
    """
    if not layers:
        raise UserError("the model has no analysable layers (Linear, Conv1d/2d, LSTM, GRU, RNN, Embedding)")
    by_name = {layer.name: layer for layer in layers}
    chain = [layers[-1]]
    while chain[-1].parent not in (None, INPUT) and chain[-1].parent in by_name:
        chain.append(by_name[chain[-1].parent])
    if names is None:
        return chain
    valid = [layer.name for layer in chain[1:]]
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ConfigError(
            f"discovery.layers: {unknown[0]!r} is not on the path from the output; valid: {', '.join(valid)}"
        )
    lowest = max(valid.index(name) for name in names) + 1
    wanted = set(names)
    skipped = [layer.name for layer in chain[1 : lowest + 1] if layer.name not in wanted]
    if skipped:
        raise ConfigError(
            f"discovery.layers must be a contiguous run from the output down; add {', '.join(skipped)} "
            f"(chain: {', '.join(valid)})"
        )
    return chain[: lowest + 1]


def discover(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int,
    *,
    labels: torch.Tensor | None = None,
    layers: Sequence[str] | None = None,
    on: On = "edges",
    intervention: Kind = "hard",
    beta: float = 0.0,
    delta: float = 0.1,
    n_samples: int = 100,
    test: Test = "paired",
    alpha: float = 0.05,
    min_effect: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    include_input: bool = True,
    metadata: dict[str, Any] | None = None,
    progress: bool = False,
    runner: InterventionRunner | None = None,
) -> CausalGraph:
    """Learn the causal graph of the hidden units that make ``model`` predict ``target``.

    Samples are the first ``n_samples`` of ``inputs`` (in order) that the model
    classifies as ``target`` (and that are labelled ``target`` when ``labels`` is
    given). From the output unit down, every unit of the layer below is tested:

    * ``on="edges"``: its edges into the current causal units are set to 0
      (``intervention="hard"``) or to ``u ~ U(beta, beta + delta)`` (``"soft"``),
      all together, leaving its other paths intact - the research code's rule;
    * ``on="nodes"``: the unit itself is set to 0 or scaled by ``u``.

    ``test="paired"`` keeps a candidate when a one-sided paired t-test on the
    per-sample change of the target logit is significant after
    Benjamini-Hochberg correction at ``alpha`` across the layer's candidates and
    the mean drop is at least ``min_effect``; ``test="ztest"`` is the research
    code's rule (see :func:`explainnn.causal.stats.ztest_research`).
    ``include_input`` also tests the input features/channels feeding the first
    layer. The model is left exactly as it was. Same inputs and seed give the
    same graph. ``runner`` is an :class:`InterventionRunner` for ``model`` set up
    differently (e.g. another ``memory_budget_mb``); anything with its ``layers``
    and ``run`` methods works, which is how the benchmark times the naive loop.
    """
    options = DiscoveryOptions(on, intervention, beta, delta, n_samples, test, alpha, min_effect, seed)
    if device is not None:
        model = model.to(device)
    inputs = torch.as_tensor(inputs)
    target = _target(model, inputs, target)
    extra = 1 if options.test == "ztest" else 0
    index = select_samples(model, inputs, target, options.n_samples + extra, labels=labels)
    samples = inputs[index].to(_device(model))
    test_samples = samples[: len(samples) - extra] if extra and len(samples) > 2 else samples

    runner = runner or InterventionRunner(model)
    all_layers = runner.layers(samples[:1])
    chain = causal_chain(all_layers, layers)
    generator = torch.Generator().manual_seed(seed)

    graph = CausalGraph(
        {
            "model": metadata.get("model", type(model).__name__) if metadata else type(model).__name__,
            "target": target,
            "samples": index[: len(test_samples)].tolist(),
            "n_samples": len(test_samples),
            "options": {**options.__dict__, "layers": list(layers) if layers else None},
            "seed": seed,
            "layers": [layer.name for layer in reversed(chain)],
            **(metadata or {}),
        }
    )
    depth_of = {layer.name: depth for depth, layer in enumerate(reversed(chain), start=1)}
    output = chain[0]
    graph.add_unit(output.name, target, kind="output", depth=depth_of[output.name])
    clean_all = runner.run(samples, [], target) if extra else None
    effects = [target]
    tests: dict[str, list[dict]] = {}
    steps = list(zip(chain[:-1], chain[1:]))
    if include_input and chain[-1].parent == INPUT and chain[-1].kind != "embedding":
        steps.append((chain[-1], None))

    bar = _progress(len(steps), progress, f"discovery class {target}")
    for child, parent in steps:
        parent_name = parent.name if parent is not None else INPUT
        n_candidates = parent.n_units if parent is not None else child.parent_units
        specs, values = _interventions(options, child, parent, effects, n_candidates, generator)
        result = runner.run(test_samples, specs, target)
        decision = _test(options, result, clean_all, candidates=range(n_candidates))
        records = decision.to_records()
        for record, value in zip(records, values):
            record["intervention"] = options.describe(value)
        tests[parent_name] = records
        kept = decision.kept_candidates()
        depth = depth_of[parent_name] if parent is not None else 0
        kind = "hidden" if parent is not None else "input"
        for k in kept:
            stats = _edge_stats(records[k])
            cause = graph.add_unit(parent_name, k, kind=kind, depth=depth, **stats)
            for j in effects:
                graph.add_edge(cause, node_id(child.name, j), **stats)
        bar.update(1)
        if not kept:
            break
        effects = kept
    bar.close()
    graph.add_result("tests", tests)
    return graph


def discover_all(model: nn.Module, inputs: torch.Tensor, **options: Any) -> dict[int, CausalGraph]:
    """:func:`discover` for every class the model outputs (``target_class: all``).

    Classes with fewer than two correctly classified inputs are skipped.
    """
    n_classes = _n_classes(model, inputs)
    graphs = {}
    for target in range(n_classes):
        try:
            graphs[target] = discover(model, inputs, target, **options)
        except UserError as exc:
            if "discovery needs at least 2" not in str(exc):
                raise
    return graphs


def _n_classes(model: nn.Module, inputs: torch.Tensor) -> int:
    with torch.inference_mode():
        was_training = model.training
        model.eval()
        try:
            return int(model(torch.as_tensor(inputs)[:1].to(_device(model))).shape[-1])
        finally:
            model.train(was_training)


def _target(model: nn.Module, inputs: torch.Tensor, target: Any) -> int:
    n_classes = _n_classes(model, inputs)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < n_classes:
        raise ConfigError(f"target must be a class index in 0..{n_classes - 1}; got {target!r}")
    return int(target)


def _interventions(
    options: DiscoveryOptions,
    child: LayerInfo,
    parent: LayerInfo | None,
    effects: list[int],
    n_candidates: int,
    generator: torch.Generator,
) -> tuple[list, list[float]]:
    soft = options.intervention == "soft"
    values = [soft_value(options.beta, options.delta, generator) if soft else 0.0 for _ in range(n_candidates)]
    if options.on == "edges" or parent is None:
        specs = [EdgeIntervention(child.name, i, effects, value=u) for i, u in enumerate(values)]
    else:
        specs = [
            NodeIntervention(parent.name, i, "scale", u) if soft else NodeIntervention(parent.name, i, "zero")
            for i, u in enumerate(values)
        ]
    return specs, values


def _test(options: DiscoveryOptions, result, clean_all, candidates: range) -> TestResult:
    intervened = result.target_logit.cpu().numpy().astype(np.float64)
    prob = result.prob.cpu().numpy().astype(np.float64)
    if options.test == "ztest":
        clean = clean_all.clean_target_logit.cpu().numpy().astype(np.float64)
        clean_prob = clean_all.clean_prob.cpu().numpy().astype(np.float64)
        return ztest_research(intervened, clean, candidates=list(candidates),
                              intervened_prob=prob, clean_prob=clean_prob)
    return paired_test(
        intervened,
        result.clean_target_logit.cpu().numpy().astype(np.float64),
        alpha=options.alpha,
        min_effect=options.min_effect,
        candidates=list(candidates),
        intervened_prob=prob,
        clean_prob=result.clean_prob.cpu().numpy().astype(np.float64),
    )


def _edge_stats(record: dict) -> dict:
    keep = ("effect", "effect_std", "ci_low", "ci_high", "p_value", "q_value", "prob_effect", "n", "intervention")
    return {key: record[key] for key in keep if key in record}


def _progress(total: int, enabled: bool, label: str) -> tqdm:
    return tqdm(total=total, desc=label, unit="layer", leave=False, disable=not enabled)
