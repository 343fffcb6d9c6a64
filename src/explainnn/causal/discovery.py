"""Top-down discovery of the hidden units and edges that cause a class prediction.

The walk follows the model's traced computational graph, a DAG of weight layers
(:attr:`LayerInfo.parents <explainnn.interventions.LayerInfo>`): starting from
the target output unit, layers are visited from the output down (reverse
execution order). At each parent layer the candidates are its units that feed
the current causal units of any of its children, on every branch (residual
blocks, skip connections, concatenations, parallel branches); each candidate is
intervened on (its edges into a child's causal units, or the unit itself), the
change of the target logit is measured on the same samples, and a test decides
which candidates are causes. Kept units become causal units of their layer, so
their own parents are tested in turn, down to the input.

All candidates of a parent layer are evaluated in one batched
:class:`~explainnn.interventions.InterventionRunner` call, which reuses the clean
activations below the intervened layers. Anything the engine cannot intervene
on stops the run before any work with a one-line error naming the layer.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from explainnn.causal.graph import CausalGraph, node_id
from explainnn.causal.stats import TestResult, paired_fdr_test, ztest_research
from explainnn.errors import ConfigError, InterventionError, TooFewSamples, UserError
from explainnn.inputs import check_inputs
from explainnn.interventions import (
    EdgeIntervention,
    InterventionRunner,
    LayerInfo,
    NodeIntervention,
    soft_edge,
    soft_node,
)
from explainnn.interventions.edits import connections, recurrent_connections
from explainnn.interventions.layers import ParentLink, unsupported_layers
from explainnn.interventions.spec import SOFT_RULES
from explainnn.torch_utils import eval_mode, model_device

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
    soft_rule: str = "scale"

    def __post_init__(self) -> None:
        _choice("on", self.on, ONS)
        _choice("intervention", self.intervention, KINDS)
        _choice("soft_rule", self.soft_rule, SOFT_RULES)
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
        verb = "scaled by" if self.soft_rule == "scale" else "set to"
        what = f"edge weights {verb}" if self.on == "edges" else f"unit {verb}"
        if self.intervention == "hard":
            return "edges cut (weights set to 0)" if self.on == "edges" else "unit set to 0"
        return f"{what} u~U({self.beta:g}, {self.beta + self.delta:g})" + ("" if value is None else f" = {value:.4g}")


@dataclass(frozen=True)
class DiscoveryResult:
    """One class's discovery: the causal graph, the split it was learned from and every candidate's test.

    ``tests`` maps each tested parent layer to one record per candidate (the
    :meth:`TestResult.to_records <explainnn.causal.stats.TestResult.to_records>`
    fields plus ``intervention``, and ``child``/``via`` for edges). The graph
    keeps the same records in its saved metadata (``graph.json``), so a graph
    read back from a file gives the same result with :meth:`of`.
    """

    graph: CausalGraph
    tests: dict[str, list[dict[str, Any]]]
    split: str = "train"

    @classmethod
    def of(cls, graph: CausalGraph, split: str = "train") -> DiscoveryResult:
        """The result of a graph :func:`discover` returned (or one loaded from its JSON file)."""
        return cls(graph, graph.results.get("tests", {}), split)

    @property
    def target(self) -> int:
        """The explained class."""
        return int(self.graph.metadata["target"])

    def tests_table(self) -> list[dict[str, Any]]:
        """One row per tested candidate, layer first (the rows of ``tests.csv``)."""
        return [{"layer": layer, **record} for layer, records in self.tests.items() for record in records]


def _choice(key: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}: {value!r} is not a valid choice; valid: {', '.join(valid)}")


def indices_classified_as(
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
    # With labels, only the inputs labelled ``target`` can qualify: predict those alone.
    candidates = (
        torch.nonzero(torch.as_tensor(labels).cpu() == target).flatten()
        if labels is not None else torch.arange(len(inputs))
    )
    found: list[torch.Tensor] = []
    count = start = 0
    while start < len(candidates) and count < n_samples:  # once the first n in order are known, stop
        needed = n_samples - count
        size = min(batch_size, needed + needed // 8 + 8)  # a little more than is still needed
        batch = candidates[start : start + size]
        hit = _predict(model, inputs[batch.to(inputs.device)]) == target
        found.append(batch[hit])
        count += len(found[-1])
        start += size
    index = torch.cat(found)[:n_samples] if found else torch.zeros(0, dtype=torch.long)
    which = "labelled and classified" if labels is not None else "classified"
    if len(index) < 2:
        raise TooFewSamples(
            f"only {len(index)} of {len(inputs)} inputs are {which} as class {target}; "
            "discovery needs at least 2 (pass more inputs or another target)"
        )
    if len(index) < n_samples:
        warnings.warn(f"only {len(index)} of {len(inputs)} inputs are {which} as class {target}; using "
                      f"{len(index)} samples, not the {n_samples} asked for", FewerSamples, stacklevel=2)
    return index


class FewerSamples(UserWarning):
    """Fewer inputs qualify as samples than ``n_samples`` asked for; the run uses those there are."""


def _predict(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with eval_mode(model), torch.inference_mode():
        return model(inputs.to(model_device(model))).argmax(-1).cpu()


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
    soft_rule: str = "scale",
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
      (``intervention="hard"``, the research code's rule) or, ``"soft"``, scaled
      by ``u ~ U(beta, beta + delta)`` (``soft_rule="scale"``, so beta walks from
      a cut at 0 to no change at 1) or set to ``u`` (``soft_rule="set"``, the
      research code's soft rule), all together, leaving its other paths intact;
    * ``on="nodes"``: the unit itself is set to 0, or scaled by (set to) ``u``.

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
    options = DiscoveryOptions(on, intervention, beta, delta, n_samples, test, alpha, min_effect, seed, soft_rule)
    if device is not None:
        model = model.to(device)
    inputs = check_inputs(model, inputs, labels=labels, target=target, what="discover")
    return _discover(model, inputs, target, options, labels=labels, layers=layers,
                     include_input=include_input, metadata=metadata, progress=progress, runner=runner)


def _discover(model: nn.Module, inputs: torch.Tensor, target: int, options: DiscoveryOptions, *,
              labels: torch.Tensor | None, layers: Sequence[str] | None, include_input: bool,
              metadata: dict[str, Any] | None, progress: bool, runner: InterventionRunner | None) -> CausalGraph:
    """The walk of :func:`discover`: samples, layers, then one batched test per parent layer."""
    target = _target(model, inputs, target)
    extra = 1 if options.test == "ztest" else 0  # the research rule's clean mean reads one more sample
    index = indices_classified_as(model, inputs, target, options.n_samples + extra, labels=labels)
    samples = inputs[index].to(model_device(model))
    test_samples = samples[: len(samples) - extra] if extra and len(samples) > 2 else samples

    runner = runner or InterventionRunner(model)
    walk = walk_layers(runner.layers(samples[:1]), layers)
    _preflight(model, samples[:1], walk, include_input)
    generator = torch.Generator().manual_seed(options.seed)
    depth_of = _depths(walk)
    graph = _empty_graph(model, target, index[: len(test_samples)], options, layers, walk, metadata)
    output = walk[0]
    graph.add_unit(output.name, target, kind="output", depth=depth_of[output.name])
    clean_all = runner.run(samples, [], target) if extra else None
    causes: dict[str, list[int]] = {output.name: [target]}
    tests: dict[str, list[dict]] = {}
    wiring: dict = {}
    steps = _parent_steps(walk, include_input)
    by_name = {layer.name: layer for layer in walk}

    bar = _progress(len(steps), progress, f"discovery class {target}")
    for parent, links in steps:
        kids = [(child, link) for child, link in links if causes.get(child.name)]
        candidates = _candidates(options, kids, causes)
        bar.update(1)
        if not candidates:
            continue
        specs, values = _interventions(options, parent, candidates, generator)
        decision = _test(options, runner.run(test_samples, specs, target), clean_all,
                         candidates=[c.unit for c in candidates])
        tests[parent] = _test_records(options, decision, candidates, values)
        depth = 0 if parent == INPUT else depth_of[parent]
        kept_units = _add_causes(graph, parent, depth, candidates, tests[parent], decision.kept,
                                 lambda candidate: candidate.targets(kids, causes, wiring))
        if parent != INPUT:
            causes[parent] = kept_units
            layer = by_name[parent]
            if layer.unit_kind.stateful and kept_units:
                tested = {c.unit for c in candidates}
                causes[parent] = _through_recurrence(options, runner, layer, graph, depth, kept_units, tested,
                                                     tests[parent], generator, (test_samples, clean_all, target))
    bar.close()
    graph.add_result("tests", tests)
    return graph


def _through_recurrence(options: DiscoveryOptions, runner: InterventionRunner, layer: LayerInfo, graph: CausalGraph,
                        depth: int, kept: list[int], tested: set[int], records: list[dict[str, Any]],
                        generator: torch.Generator, run: tuple) -> list[int]:
    """Causes of a recurrent layer's causal units through its own recurrence; returns all its causal units.

    A unit can act on the output only through other units of its layer (unit ``i``
    at step ``t - 1`` feeds unit ``j`` at step ``t`` through the hidden-to-hidden
    weights, within one direction), so the units the layer's children reach are
    closed under the recurrence, one round per new set of causal units:

    * ``on="edges"``: each unit's recurrent edges into the causal units found in
      the last round are cut (or softly scaled) together, at every step; a kept
      unit gets those edges (``via="recurrent"``) and becomes causal;
    * ``on="nodes"``: units not tested yet that feed a causal unit through the
      recurrence are intervened on as nodes; a kept unit becomes causal. Edges are
      drawn, as between layers, from the weights: a causal unit with no weight
      into a causal unit above gets recurrent edges to the causal units it feeds
      (a unit with weights above keeps only those, so a trained dense layer's
      graph is not filled with every hidden-to-hidden pair).

    Each round is one batched run and one Benjamini-Hochberg family. The records
    join the layer's tests with ``child`` the layer itself and ``via="recurrent"``.
    """
    samples, clean_all, target = run
    feeds = recurrent_connections(layer)  # (parent unit, child unit)
    causal, new = set(kept), set(kept)
    while new:
        if options.on == "edges":
            found = [(i, tuple(j for j in sorted(new) if j != i and feeds[i, j])) for i in range(layer.n_units)]
            candidates = [(i, effects) for i, effects in found if effects]
        else:
            candidates = [(i, tuple(j for j in sorted(causal) if j != i and feeds[i, j]))
                          for i in range(layer.n_units) if i not in causal and i not in tested]
            candidates = [(i, effects) for i, effects in candidates if effects]
            tested.update(i for i, _ in candidates)
        if not candidates:
            break
        specs = [_recurrent_spec(options, layer.name, i, effects, generator) for i, effects in candidates]
        decision = _test(options, runner.run(samples, specs, target), clean_all, candidates=[i for i, _ in candidates])
        round_records = decision.to_records()
        new = set()
        for (i, effects), record, keep, spec in zip(candidates, round_records, decision.kept, specs):
            record.update(intervention=options.describe(getattr(spec, "value", None) or 0.0), child=layer.name,
                          via="recurrent")
            if not keep:
                continue
            stats = _edge_stats(record)
            cause = node_id(layer.name, i)
            if i not in causal:
                graph.add_unit(layer.name, i, depth=depth, **stats)
                new.add(i)
            if options.on == "edges":
                graph.add_edges(cause, [node_id(layer.name, j) for j in effects], **stats, via="recurrent")
        records.extend(round_records)
        causal |= new
    if options.on == "nodes":  # a causal unit whose weights reach no causal unit above acts through the recurrence
        for i in sorted(causal):
            cause = node_id(layer.name, i)
            fed = [node_id(layer.name, j) for j in sorted(causal) if j != i and feeds[i, j]]
            if graph.digraph.out_degree(cause) == 0 and fed:
                stats = {key: value for key, value in graph.digraph.nodes[cause].items()
                         if key not in ("layer", "index", "kind", "depth")}
                graph.add_edges(cause, fed, **stats, via="recurrent")
    return sorted(causal)


def _recurrent_spec(options: DiscoveryOptions, layer: str, unit: int, effects: tuple[int, ...],
                    generator: torch.Generator) -> EdgeIntervention | NodeIntervention:
    """The intervention of one candidate of :func:`_through_recurrence`."""
    soft, beta, delta, rule = options.intervention == "soft", options.beta, options.delta, options.soft_rule
    if options.on == "edges":
        if soft:
            return soft_edge(layer, unit, list(effects), beta, delta, generator, recurrent=True, rule=rule)
        return EdgeIntervention(layer, unit, effects, value=0.0, recurrent=True)
    return soft_node(layer, unit, beta, delta, generator, rule=rule) if soft else NodeIntervention(layer, unit, "zero")


def _empty_graph(model: nn.Module, target: int, index: torch.Tensor, options: DiscoveryOptions,
                 layers: Sequence[str] | None, walk: list[LayerInfo], metadata: dict[str, Any] | None) -> CausalGraph:
    """The graph before any unit: what was learned from (model, target, samples, options, layers)."""
    return CausalGraph(
        {
            "model": metadata.get("model", type(model).__name__) if metadata else type(model).__name__,
            "target": target,
            "samples": index.tolist(),
            "n_samples": len(index),
            "options": {**options.__dict__, "layers": list(layers) if layers else None},
            "seed": options.seed,
            "layers": [layer.name for layer in sorted(walk, key=lambda info: info.order)],
            **(metadata or {}),
        }
    )


def _test_records(options: DiscoveryOptions, decision: TestResult, candidates: list[_Candidate],
                  values: list[float]) -> list[dict[str, Any]]:
    """The test's records of one parent layer, with each candidate's intervention and, for edges, its child."""
    records = decision.to_records()
    for record, candidate, value in zip(records, candidates, values):
        record["intervention"] = options.describe(value)
        if candidate.child is not None and candidate.link is not None:
            record["child"] = candidate.child.name
            record["via"] = candidate.link.via
    return records


def _add_causes(graph: CausalGraph, parent: str, depth: int, candidates: list[_Candidate],
                records: list[dict[str, Any]], kept: np.ndarray, targets: Any) -> list[int]:
    """Add the kept candidates of ``parent`` and their edges to ``graph``; return their sorted unit indices.

    ``targets(candidate)`` gives the (child, link, effect units) a kept candidate connects to.
    """
    kind: Literal["input", "hidden"] = "input" if parent == INPUT else "hidden"
    kept_units: set[int] = set()
    for candidate, record, keep in zip(candidates, records, kept):
        if not keep:
            continue
        stats = _edge_stats(record)
        cause = graph.add_unit(parent, candidate.unit, kind=kind, depth=depth, **stats)
        kept_units.add(candidate.unit)
        for child, link, effects in targets(candidate):
            graph.add_edges(cause, [node_id(child.name, j) for j in effects], **stats, via=link.via)
    return sorted(kept_units)


def walk_layers(layers: Sequence[LayerInfo], names: Sequence[str] | None = None) -> list[LayerInfo]:
    """The layers discovery visits: the output layer, then every layer on a path to it, in reverse execution order.

    ``names`` restricts the walk to a top part of the DAG: only the named layers
    are tested (every layer between a named one and the output must be named too).
    """
    if not layers:
        raise UserError("the model has no analysable layers (Linear, Conv1d/2d, LSTM, GRU, RNN, Embedding)")
    by_name = {layer.name: layer for layer in layers}
    output = layers[-1]
    above: dict[str, set[str]] = {output.name: set()}  # layer -> the layers it feeds on paths to the output
    for layer in sorted(layers, key=lambda info: -info.order):
        if layer.name not in above:
            continue
        for link in layer.parents:
            if link.name in by_name:
                above.setdefault(link.name, set()).add(layer.name)
    reachable = [layer for layer in sorted(layers, key=lambda info: -info.order) if layer.name in above]
    if names is None:
        return reachable
    valid = [layer.name for layer in reachable[1:]]
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ConfigError(
            f"discovery.layers: {unknown[0]!r} is not on the path from the output; valid: {', '.join(valid)}"
        )
    wanted = set(names) | {output.name}
    missing = sorted({child for name in names for child in _descendants(name, above)} - wanted,
                     key=lambda name: -by_name[name].order)
    if missing:
        raise ConfigError(
            f"discovery.layers must be a contiguous run from the output down; add {', '.join(missing)} "
            f"(layers: {', '.join(valid)})"
        )
    return [layer for layer in reachable if layer.name in wanted]


def _descendants(name: str, above: dict[str, set[str]]) -> set[str]:
    found, todo = set(), list(above[name])
    while todo:
        child = todo.pop()
        if child not in found:
            found.add(child)
            todo.extend(above[child])
    return found


def _depths(walk: list[LayerInfo]) -> dict[str, int]:
    """Depth 0 is the input; a layer sits one above the deepest of its parents in the walk."""
    depth: dict[str, int] = {}
    for layer in sorted(walk, key=lambda info: info.order):
        below = [depth[link.name] for link in layer.parents if link.name in depth]
        depth[layer.name] = 1 + max(below, default=0)
    return depth


def _parent_steps(walk: list[LayerInfo], include_input: bool) -> list[tuple[str, list[tuple[LayerInfo, ParentLink]]]]:
    """Per parent layer (reverse execution order, the input last): its children in the walk and their links."""
    names = {layer.name for layer in walk}
    steps: list[tuple[str, list]] = []
    for parent in [layer.name for layer in walk[1:]] + [INPUT]:
        if parent == INPUT and not include_input:
            continue
        links = [(child, link) for child in walk for link in child.parents
                 if link.name == parent and (parent == INPUT or parent in names)]
        if links:
            steps.append((parent, links))
    return steps


def _preflight(model: nn.Module, example: torch.Tensor, walk: list[LayerInfo], include_input: bool) -> None:
    """Everything the walk will intervene on is supported, or a one-line error before any work."""
    for name, reason in unsupported_layers(model, example):
        raise InterventionError(f"cannot discover through module '{name}': {reason}")
    names = {layer.name for layer in walk}
    for layer in walk:
        if layer.calls != 1:
            raise InterventionError(
                f"layer '{layer.name}' runs {layer.calls} times per forward pass; interventions need a layer that runs once"
            )
        tested = [link for link in layer.parents if link.name in names or (link.name == INPUT and include_input)]
        if layer is not walk[0] and not layer.parents and not layer.unit_kind.reads_ids:
            raise InterventionError(f"layer '{layer.name}' has no traced parent: {layer.note}")
        for link in tested:
            if link.via == "path" and link.name == INPUT:
                raise InterventionError(
                    f"layer '{layer.name}': the input reaches it together with other parents; edges from the "
                    "input along a shared path are not supported (pass include_input=False)"
                )
            if link.via == "path" and layer.unit_kind.stateful:
                raise InterventionError(
                    f"layer '{layer.name}': its inputs are shared by several parents ({link.name}, ...); path "
                    "edges into recurrent layers are not supported"
                )


@dataclass(frozen=True)
class _Candidate:
    """A unit of a parent layer; for edges, with the child whose causal units its edges reach."""

    unit: int
    child: LayerInfo | None = None
    link: ParentLink | None = None
    effects: tuple[int, ...] = ()

    def targets(self, kids, causes, wiring: dict) -> list[tuple[LayerInfo, ParentLink, list[int]]]:
        """The causal units this candidate's kept intervention connects to (``wiring`` caches the weights' pattern)."""
        if self.child is not None:
            assert self.link is not None  # an edge candidate carries its child's link
            return [(self.child, self.link, _drawn(self.child, self.link, self.unit, self.effects, wiring))]
        return [(child, link, _drawn(child, link, self.unit, _reached(child, link, self.unit, causes[child.name]),
                                     wiring))
                for child, link in kids]


def _reached(child: LayerInfo, link: ParentLink, unit: int, effects: Sequence[int]) -> list[int]:
    """The units of ``effects`` that parent ``unit`` has an edge to (grouped convs: within its group)."""
    features = link.unit_map[unit]
    if not features:
        return []
    groups = getattr(child.module, "groups", 1)
    if groups == 1:
        return list(effects)
    per_in, per_out = child.in_features // groups, child.n_units // groups
    own = {f // per_in for f in features}
    return [j for j in effects if j // per_out in own]


def _drawn(child: LayerInfo, link: ParentLink, unit: int, effects: Sequence[int], wiring: dict) -> list[int]:
    """The edges a kept candidate gets: to the effects it has a non-zero weight into (all, in a trained dense layer)."""
    key = (child.name, link.name)
    if key not in wiring:
        wiring[key] = [set(torch.nonzero(row).flatten().tolist()) for row in connections(child, link)]
    connected = wiring[key][unit]
    return [j for j in effects if j in connected]


def _candidates(options: DiscoveryOptions, kids, causes) -> list[_Candidate]:
    if not kids:
        return []
    if options.on == "edges" or kids[0][1].name == INPUT:
        found = []
        for child, link in kids:
            for unit in range(link.n_units):
                effects = _reached(child, link, unit, causes[child.name])
                if effects:
                    found.append(_Candidate(unit, child, link, tuple(effects)))
        return found
    units = sorted({unit for child, link in kids for unit in range(link.n_units)
                    if _reached(child, link, unit, causes[child.name])})
    return [_Candidate(unit) for unit in units]


def discover_all(model: nn.Module, inputs: torch.Tensor, **options: Any) -> dict[int, CausalGraph]:
    """:func:`discover` for every class the model outputs (``target_class: all``).

    Classes with fewer than two correctly classified inputs are skipped.
    """
    n_classes = _n_classes(model, inputs)
    graphs = {}
    for target in range(n_classes):
        try:
            graphs[target] = discover(model, inputs, target, **options)
        except TooFewSamples:
            continue
    return graphs


def _n_classes(model: nn.Module, inputs: torch.Tensor) -> int:
    with eval_mode(model), torch.inference_mode():
        return int(model(torch.as_tensor(inputs)[:1].to(model_device(model))).shape[-1])


def _target(model: nn.Module, inputs: torch.Tensor, target: Any) -> int:
    n_classes = _n_classes(model, inputs)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < n_classes:
        raise ConfigError(f"target must be a class index in 0..{n_classes - 1}; got {target!r}")
    return int(target)


def _interventions(
    options: DiscoveryOptions,
    parent: str,
    candidates: list[_Candidate],
    generator: torch.Generator,
) -> tuple[list, list[float]]:
    """One spec per candidate: its edges into the child's causal units, or the unit itself."""
    soft, beta, delta, rule = options.intervention == "soft", options.beta, options.delta, options.soft_rule
    specs: list[NodeIntervention | EdgeIntervention] = []
    for c in candidates:
        if c.child is not None:
            assert c.link is not None
            if soft:
                spec = soft_edge(c.child.name, c.unit, list(c.effects), beta, delta, generator, rule=rule)
                specs.append(dataclasses.replace(spec, parent_layer=c.link.name))
            else:  # built once, with its parent layer (a replace would validate every index again)
                specs.append(EdgeIntervention(c.child.name, c.unit, c.effects, value=0.0, parent_layer=c.link.name))
        else:
            specs.append(soft_node(parent, c.unit, beta, delta, generator, rule=rule) if soft
                         else NodeIntervention(parent, c.unit, "zero"))
    return specs, [getattr(spec, "value", None) or 0.0 for spec in specs]


def _test(options: DiscoveryOptions, result, clean_all, candidates: Sequence[int]) -> TestResult:
    intervened = result.target_logit.cpu().numpy().astype(np.float64)
    prob = result.prob.cpu().numpy().astype(np.float64)
    if options.test == "ztest":
        clean = clean_all.clean_target_logit.cpu().numpy().astype(np.float64)
        clean_prob = clean_all.clean_prob.cpu().numpy().astype(np.float64)
        return ztest_research(intervened, clean, candidates=list(candidates),
                              intervened_prob=prob, clean_prob=clean_prob)
    return paired_fdr_test(
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
