"""Scoring edge circuits as the Mechanistic Interpretability Benchmark (MIB, circuit track) scores them.

A circuit is a set of edges (:mod:`explainnn.causal.edges`); every edge outside
it is ablated (its parent's contribution to its child replaced by the value on a
counterfactual input, the mean over reference inputs, or zero) while the edges in
it carry their values. With ``F`` the mean over samples of a per-sample metric of
the output,

    ``f(C) = (F(C) - F(empty)) / (F(full) - F(empty))``,

the ratio of means (MIB's ``evaluate_area_under_curve``): 1 keeps the whole
model's behaviour, 0 is no better than ablating every edge.

**The metric.** MIB scores every task with ``logit_diff``: the logit of the
correct answer minus the logit of the counterfactual input's answer (its
``incorrect_idx``; for the multiple-choice tasks, the answer of the
counterfactual prompt). For a classifier under patching this is the target
logit minus the logit of the counterfactual input's class
(``metric="logit_diff"``, the default for ``ablation="patch"``). Mean and zero
ablation have no counterfactual class, so their default is the target logit
alone (``metric="logit"``, the quantity explainnn's node circuits keep).
The edges into the output layer are those into the units the metric reads: the
target, and under ``"logit_diff"`` also the counterfactuals' classes (MIB's
logits node takes every edge into the output, so the circuit's removals reach
both logits).

**Budgets.** MIB keeps the top ``int(p * E)`` edges of a ranking for ``p`` in
``(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1)`` (0.1% .. 100% of
the ``E`` edges, floor, as ``int`` in Python), then prunes the circuit
(``Graph.prune`` of EAP-IG): edges that are not on a path from the input to the
output are dropped (here: an edge is kept only when its parent is reachable from
an input unit and its child reaches an output unit along kept edges). The edge
count after pruning is reported beside the nominal one (MIB's
``weighted_edge_counts``); ``prune=False`` evaluates the prefixes as they are.

**CPR and CMD.** The area under ``f`` (CPR, higher is better) and under
``|1 - f|`` (CMD, lower is better) by the trapezoidal rule over the ten budgets
with the *fraction* of edges (0.001 .. 1) on a linear x-axis: no point at 0, the
100% point included, no clipping of ``f``, no division by the width of the axis
(0.999) - exactly MIB's ``evaluate_area_under_curve`` with its defaults
(``log_scale=False``), checked against hannamw/MIB-circuit-track
(``MIB_circuit_track/evaluation.py``, ``run_evaluation.py``). MIB computes CPR
from the ranking by signed score and CMD from the ranking by absolute score when
both exist (``absolute`` here chooses; scores are "higher = more important").

**Edges needed.** :func:`edges_needed` finds the shortest prefix of a ranking
that reaches a faithfulness level by exact bisection (several points per batched
call). ``f`` need not grow with the prefix (adding an edge can lower it), so
bisection returns a *crossing*: a prefix that reaches the level whose prefix one
edge shorter does not, the first one when ``f`` is monotone. It starts from the
first MIB budget that reaches the level, so the crossing lies below that budget.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from explainnn.causal.units import normalise
from explainnn.errors import ConfigError, TooFewSamples, UserError
from explainnn.interventions.hooks import ModelPatch

MIB_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""MIB's circuit sizes as fractions of all edges (``evaluate_area_under_curve``'s ``percentages``)."""
BUDGETS: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""The same sizes in percent of all edges."""
ABLATIONS = ("patch", "mean", "zero")
METRICS = ("logit", "logit_diff")
LEVELS = (0.8, 0.9)
MAX_MASKS = 512
"""Masks per :meth:`EdgeAblation.logits` call (it splits the masks x samples rows to its memory budget)."""
BISECTION_POINTS = 16
"""Prefix lengths measured per batched call while bisecting."""


def _backend() -> Any:
    """The module with ``enumerate_edges`` and ``EdgeAblation`` (imported when first needed)."""
    return importlib.import_module("explainnn.causal.edges")


# ----------------------------------------------------------------------------- formulas
def budget_sizes(total: int, fractions: Sequence[float] = MIB_FRACTIONS) -> np.ndarray:
    """``int(fraction * total)`` edges per budget, as MIB (floor)."""
    return np.array([int(fraction * total) for fraction in fractions], dtype=np.int64)


def area_under(fractions: Sequence[float], values: Sequence[float] | np.ndarray) -> float:
    """Trapezoidal area under ``values`` over ``fractions`` (linear axis, not normalised)."""
    x = np.asarray(fractions, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.shape != y.shape or len(x) < 2:
        raise UserError(f"area_under needs two or more matching points; got {x.shape} and {y.shape}")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def cpr(fractions: Sequence[float], faithfulness: Sequence[float] | np.ndarray) -> float:
    """MIB's CPR: the area under the faithfulness curve (higher is better)."""
    return area_under(fractions, faithfulness)


def cmd(fractions: Sequence[float], faithfulness: Sequence[float] | np.ndarray) -> float:
    """MIB's CMD: the area under ``|1 - f|`` (lower is better)."""
    return area_under(fractions, np.abs(1.0 - np.asarray(faithfulness, dtype=float)))


# ----------------------------------------------------------------------------- the edge graph
class EdgeGraph:
    """The units and edges of an edge set as index arrays, for connectivity and ordering.

    A unit is ``(layer, index)``. *Sources* are units that are no edge's child
    (the input units), *sinks* units that are no edge's parent (the output
    units the edges lead into). Layers are ordered by their longest distance from
    the sources along edges between different layers (``layer_rank``).
    """

    def __init__(self, edges: Any) -> None:
        self.edges = edges
        parent_layer = [str(v) for v in edges.parent_layer]
        child_layer = [str(v) for v in edges.child_layer]
        parent_unit = np.asarray(edges.parent_unit, dtype=np.int64).reshape(-1)
        child_unit = np.asarray(edges.child_unit, dtype=np.int64).reshape(-1)
        self.n = len(parent_layer)
        self.kinds = [str(v) for v in edges.kind] if getattr(edges, "kind", None) is not None else [""] * self.n
        units: dict[tuple[str, int], int] = {}
        for layer, unit in zip(parent_layer + child_layer, np.concatenate([parent_unit, child_unit]).tolist()):
            units.setdefault((layer, int(unit)), len(units))
        self.units = list(units)
        self.parent = np.array([units[(p, int(u))] for p, u in zip(parent_layer, parent_unit)], dtype=np.int64)
        self.child = np.array([units[(c, int(u))] for c, u in zip(child_layer, child_unit)], dtype=np.int64)
        count = len(self.units)
        self.source = np.bincount(self.child, minlength=count) == 0
        self.sink = np.bincount(self.parent, minlength=count) == 0
        self.layer_rank = _layer_ranks(parent_layer, child_layer)
        self.unit_rank = np.array([self.layer_rank[layer] for layer, _ in self.units], dtype=np.int64)
        self.same_layer = np.array([p == c for p, c in zip(parent_layer, child_layer)], dtype=bool)

    def label(self, edge: int) -> str:
        """``"layer:unit->layer:unit"`` of an edge."""
        (pl, pu), (cl, cu) = self.units[self.parent[edge]], self.units[self.child[edge]]
        return f"{pl}:{pu}->{cl}:{cu}"

    def forward_reach(self, mask: np.ndarray) -> np.ndarray:
        """Units reachable from a source along the edges set in ``mask``."""
        return self._reach(np.asarray(mask, dtype=bool), self.source.copy(), self.parent, self.child)

    def backward_reach(self, mask: np.ndarray) -> np.ndarray:
        """Units from which a sink is reachable along the edges set in ``mask``."""
        return self._reach(np.asarray(mask, dtype=bool), self.sink.copy(), self.child, self.parent)

    @staticmethod
    def _reach(mask: np.ndarray, reached: np.ndarray, tail: np.ndarray, head: np.ndarray) -> np.ndarray:
        tail, head = tail[mask], head[mask]
        while True:
            new = np.zeros_like(reached)
            new[head[reached[tail]]] = True
            if not (new & ~reached).any():
                return reached
            reached |= new

    def connected(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` without the edges off every input-to-output path (MIB's ``prune``)."""
        mask = np.asarray(mask, dtype=bool)
        return mask & self.forward_reach(mask)[self.parent] & self.backward_reach(mask)[self.child]


def _layer_ranks(parent_layer: Sequence[str], child_layer: Sequence[str]) -> dict[str, int]:
    """Longest distance of each layer from the layers without incoming edges (same-layer edges ignored)."""
    links = {(p, c) for p, c in zip(parent_layer, child_layer) if p != c}
    layers = list(dict.fromkeys(list(parent_layer) + list(child_layer)))
    rank = {layer: 0 for layer in layers}
    for _ in range(len(layers)):
        changed = False
        for p, c in links:
            if rank[c] < rank[p] + 1:
                rank[c] = rank[p] + 1
                changed = True
        if not changed:
            return rank
    raise UserError("the edges between layers form a cycle; cannot order the layers")


# ----------------------------------------------------------------------------- samples
@dataclass
class Samples:
    """The inputs a circuit is measured on, with their counterfactuals under patching.

    ``index``: positions of the samples in the inputs they were chosen from;
    ``counterfactual_index``: positions of each sample's counterfactual there
    (``None`` when the counterfactuals were given); ``counterfactual_classes``:
    the class the model assigns to each counterfactual.
    """

    index: np.ndarray
    inputs: torch.Tensor
    counterfactuals: torch.Tensor | None = None
    counterfactual_index: np.ndarray | None = None
    counterfactual_classes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)


def _predicted(model: nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """The model's predicted classes (evaluation mode, restored afterwards)."""
    device = _device(model)
    out = []
    with ModelPatch() as patch, torch.no_grad():
        patch.eval_mode(model)
        for start in range(0, len(inputs), batch_size):
            out.append(model(inputs[start : start + batch_size].to(device)).argmax(-1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def select_samples(model: nn.Module, inputs: torch.Tensor, target: int, n_samples: int, *,
                   labels: torch.Tensor | None = None, ablation: str = "patch",
                   counterfactuals: torch.Tensor | None = None) -> Samples:
    """The first ``n_samples`` inputs classified as ``target`` (and labelled so, with ``labels``), with their
    counterfactuals under ``ablation="patch"``.

    Pairing rule (patching, no ``counterfactuals`` given): the candidates are the
    inputs, in order, that the model assigns to a class other than ``target``
    (and, with ``labels``, correctly: label equal to the prediction); the ``i``-th
    sample is paired with the ``(i mod m)``-th of the ``m`` candidates. Given
    ``counterfactuals`` (one per input, aligned with ``inputs``), sample ``j`` is
    paired with ``counterfactuals[index[j]]``. Each counterfactual's class is the
    model's prediction for it.
    """
    _check_ablation(ablation)
    inputs = torch.as_tensor(inputs)
    predicted = _predicted(model, inputs)
    chosen = predicted == target
    if labels is not None:
        chosen &= np.asarray(torch.as_tensor(labels).cpu()) == target
    index = np.flatnonzero(chosen)[:n_samples]
    if len(index) < 2:
        raise TooFewSamples(f"only {len(index)} of {len(inputs)} inputs are classified as class {target}; "
                            "a circuit needs at least 2 (pass more inputs or another target)")
    samples = Samples(index, inputs[torch.as_tensor(index)])
    if ablation != "patch":
        return samples
    if counterfactuals is not None:
        counterfactuals = torch.as_tensor(counterfactuals)
        if len(counterfactuals) != len(inputs):
            raise UserError(f"counterfactuals must have one row per input ({len(inputs)}); got {len(counterfactuals)}")
        samples.counterfactuals = counterfactuals[torch.as_tensor(index)]
        samples.counterfactual_classes = _predicted(model, samples.counterfactuals)
        return samples
    other = predicted != target
    if labels is not None:
        other &= np.asarray(torch.as_tensor(labels).cpu()) == predicted
    candidates = np.flatnonzero(other)
    if not len(candidates):
        raise TooFewSamples(f"no input is {'correctly ' if labels is not None else ''}classified as a class other "
                            f"than {target}; patching needs counterfactual inputs")
    pair = candidates[np.arange(len(index)) % len(candidates)]
    samples.counterfactual_index = pair
    samples.counterfactuals = inputs[torch.as_tensor(pair)]
    samples.counterfactual_classes = predicted[pair]
    return samples


# ----------------------------------------------------------------------------- exact faithfulness
class EdgeFaithfulness:
    """Exact ``F`` and normalised faithfulness of masks over ``n_edges`` edges on fixed samples, via ``EdgeAblation``.

    ``F(mask)`` is the mean over the samples of the metric (``"logit"``: the
    target logit; ``"logit_diff"``: target logit minus the logit of the
    counterfactual's class). ``full`` and ``empty`` (``F`` with every edge kept /
    ablated) are measured at construction, in one call. Every evaluation runs
    with the model in evaluation mode and restores its flags.
    """

    def __init__(self, model: nn.Module, ablation: Any, samples: Samples, target: int, n_edges: int, *,
                 metric: str | None = None, ablation_kind: str = "patch", max_masks: int = MAX_MASKS) -> None:
        self.model, self.ablation, self.samples, self.target = model, ablation, samples, int(target)
        self.kind = ablation_kind
        self.metric = default_metric(ablation_kind) if metric is None else metric
        if self.metric not in METRICS:
            raise ConfigError(f"unknown metric {self.metric!r}; valid: {', '.join(METRICS)}")
        if self.metric == "logit_diff" and samples.counterfactual_classes is None:
            raise ConfigError("metric 'logit_diff' needs counterfactual inputs (ablation='patch')")
        self.max_masks = max_masks
        self.device = _device(model)
        self.inputs = samples.inputs.to(self.device)
        self.counterfactuals = None if samples.counterfactuals is None else samples.counterfactuals.to(self.device)
        self.other = (None if self.metric == "logit" else
                      torch.as_tensor(samples.counterfactual_classes, dtype=torch.long, device=self.device))
        self.n_edges = int(n_edges)
        ends = self.values(np.stack([np.ones(self.n_edges, bool), np.zeros(self.n_edges, bool)]))
        self.full, self.empty = float(ends[0]), float(ends[1])
        with torch.no_grad():
            self.clean_logits = self.logits(torch.ones(1, self.n_edges))[0]

    def logits(self, masks: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(K, N, C)`` logits of ``K`` float masks (differentiable w.r.t. ``masks``), evaluation mode; ``rows``:
        only those samples."""
        with ModelPatch() as patch:
            patch.eval_mode(self.model)
            masks = masks if masks.is_floating_point() else masks.to(torch.float32)
            if rows is None:
                return self.ablation.logits(self.inputs, masks.to(self.device), self.counterfactuals)
            return self.ablation.logits(self.inputs, masks.to(self.device), self.counterfactuals, rows=rows)

    def per_sample(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(K, N)`` metric of ``(K, N, C)`` logits (of the samples ``rows``, default all)."""
        value = logits[..., self.target]
        if self.other is not None:
            other = self.other if rows is None else self.other[rows]
            value = value - logits.gather(-1, other.view(1, -1, 1).expand(len(logits), -1, 1))[..., 0]
        return value

    def differentiable(self, masks: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(K,)`` ``F`` of float masks ``(K, E)``, differentiable (one call); ``rows``: on those samples only."""
        return self.per_sample(self.logits(masks, rows), rows).double().mean(1)

    def _chunks(self, masks: np.ndarray | torch.Tensor):
        """``masks`` as float ``(K, E)`` tensors of at most ``max_masks`` rows (the forward splits rows further)."""
        masks = torch.as_tensor(np.asarray(masks)) if not torch.is_tensor(masks) else masks
        if masks.dim() == 1:
            masks = masks[None]
        for start in range(0, len(masks), self.max_masks):
            yield masks[start : start + self.max_masks]

    def values(self, masks: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(K,)`` exact ``F`` of ``K`` masks (``(K, E)`` bool or float), batched."""
        out = []
        with torch.no_grad():
            for chunk in self._chunks(masks):
                out.append(self.per_sample(self.logits(chunk)).double().mean(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def __call__(self, masks: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(K,)`` exact normalised faithfulness of ``K`` masks."""
        return normalise(self.values(masks), self.full, self.empty)

    def kl(self, masks: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(K,)`` mean over samples of ``KL(full model || masked model)`` of the output distributions."""
        reference = torch.log_softmax(self.clean_logits.double(), -1)
        out = []
        with torch.no_grad():
            for chunk in self._chunks(masks):
                logp = torch.log_softmax(self.logits(chunk).double(), -1)
                out.append((reference.exp() * (reference - logp)).sum(-1).mean(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def default_metric(ablation: str) -> str:
    """MIB's ``logit_diff`` under patching; the target logit under mean and zero ablation."""
    return "logit_diff" if ablation == "patch" else "logit"


def _check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise ConfigError(f"unknown ablation {ablation!r}; valid: {', '.join(ABLATIONS)}")


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


# ----------------------------------------------------------------------------- curves
@dataclass
class EdgesNeeded:
    """The shortest prefix of a ranking found to reach ``level``: its length, the edges it keeps after
    pruning, their percentage of all edges and the exact faithfulness (NaN when no prefix reaches it)."""

    level: float
    prefix: int
    n_edges: int
    percent: float
    faithfulness: float


@dataclass
class MIBCurve:
    """Faithfulness at MIB's budgets, CPR and CMD, for one method and ablation.

    ``n_edges``: edges each budget allows (``int(fraction * total)``);
    ``n_kept``: edges evaluated after pruning; ``faithfulness``: exact ``f`` on
    the samples; ``needed``: the shortest prefixes reaching each level.
    """

    method: str
    ablation: str
    metric: str
    budgets: tuple[float, ...]
    n_edges: np.ndarray
    n_kept: np.ndarray
    faithfulness: np.ndarray
    cpr: float
    cmd: float
    total_edges: int
    full: float
    empty: float
    n_samples: int
    needed: dict[float, EdgesNeeded] = field(default_factory=dict)

    def to_rows(self) -> list[dict[str, Any]]:
        """One CSV row per budget (method, ablation, metric, budget in %, edges allowed and kept, f, CPR, CMD,
        and the edges needed for each level)."""
        extra: dict[str, Any] = {}
        for level, need in sorted(self.needed.items()):
            extra[f"edges_for_{level:g}"] = need.n_edges
            extra[f"percent_for_{level:g}"] = need.percent
        return [{"method": self.method, "ablation": self.ablation, "metric": self.metric, "budget_percent": budget,
                 "n_edges": int(n), "n_kept": int(k), "faithfulness": float(f), "cpr": self.cpr, "cmd": self.cmd,
                 "total_edges": self.total_edges, "n_samples": self.n_samples, **extra}
                for budget, n, k, f in zip(self.budgets, self.n_edges, self.n_kept, self.faithfulness)]


def ranking(scores: np.ndarray, absolute: bool = False) -> np.ndarray:
    """Edges by score, highest first (``absolute``: by ``|score|``); ties by edge number; NaN last."""
    key = np.abs(np.asarray(scores, dtype=float)) if absolute else np.asarray(scores, dtype=float)
    key = np.where(np.isnan(key), -np.inf, key)
    return np.argsort(-key, kind="stable")


def prefix_mask(order: np.ndarray, size: int, total: int) -> np.ndarray:
    """The boolean mask of the first ``size`` edges of ``order``."""
    mask = np.zeros(total, dtype=bool)
    mask[order[:size]] = True
    return mask


def score_curve(evaluator: EdgeFaithfulness, graph: EdgeGraph, scores: np.ndarray | None = None, *,
                circuits: Sequence[np.ndarray] | None = None, absolute: bool = False, prune: bool = True,
                method: str = "", levels: Sequence[float] = LEVELS,
                fractions: Sequence[float] = MIB_FRACTIONS) -> MIBCurve:
    """MIB's curve of an edge ranking (``scores``, higher = more important) or of a family of circuits.

    ``circuits``: one boolean mask per budget, each with at most the budget's
    edges (MIB's second submission format). Every budget is measured in one
    batched call; with ``scores``, the edges needed for each of ``levels``
    (:func:`edges_needed`) are added.
    """
    total = graph.n
    sizes = budget_sizes(total, fractions)
    if (scores is None) == (circuits is None):
        raise UserError("give either scores or circuits")
    if scores is not None:
        scores = np.asarray(scores, dtype=float)
        if scores.shape != (total,):
            raise UserError(f"scores must have one value per edge ({total}); got shape {scores.shape}")
        order = ranking(scores, absolute)
        masks = [prefix_mask(order, int(k), total) for k in sizes]
    else:
        masks = [np.asarray(m, dtype=bool) for m in circuits or []]
        if len(masks) != len(sizes):
            raise UserError(f"give one circuit per budget ({len(sizes)}); got {len(masks)}")
        for mask, k, fraction in zip(masks, sizes, fractions):
            if mask.shape != (total,) or mask.sum() > k:
                raise UserError(f"the circuit for {100 * fraction:g}% must be a mask of {total} edges with at most "
                                f"{k} set; got {mask.shape} with {int(mask.sum())}")
    if prune:
        masks = [graph.connected(m) for m in masks]
    values = evaluator(np.stack(masks))
    curve = MIBCurve(method, evaluator.kind, evaluator.metric, tuple(100.0 * f for f in fractions), sizes,
                     np.array([int(m.sum()) for m in masks]), values, cpr(fractions, values), cmd(fractions, values),
                     total, evaluator.full, evaluator.empty, len(evaluator.samples))
    if scores is not None:
        for level in levels:
            curve.needed[float(level)] = edges_needed(evaluator, graph, scores, level, absolute=absolute,
                                                      prune=prune, curve=curve)
    return curve


def edges_needed(evaluator: EdgeFaithfulness, graph: EdgeGraph, scores: np.ndarray, level: float, *,
                 absolute: bool = False, prune: bool = True, curve: MIBCurve | None = None,
                 points: int = BISECTION_POINTS) -> EdgesNeeded:
    """The shortest prefix of the ranking by ``scores`` whose exact faithfulness reaches ``level``.

    Exact bisection: ``points`` prefix lengths per batched call between a
    length known to fall short (``f < level``) and one known to reach it. With a
    ``curve`` of the same ranking, the search starts between the last budget
    below the level and the first one reaching it. ``f`` need not be monotone in
    the prefix length, so the answer is a crossing (it reaches the level, one
    edge fewer does not), the shortest prefix when ``f`` is monotone.
    """
    total = graph.n
    order = ranking(scores, absolute)

    def measure(sizes: Sequence[int] | np.ndarray) -> np.ndarray:
        masks = [prefix_mask(order, int(k), total) for k in sizes]
        return evaluator(np.stack([graph.connected(m) if prune else m for m in masks]))

    low, high, f_high = 0, total, math.nan
    if curve is not None and len(curve.faithfulness):
        hits = np.flatnonzero(curve.faithfulness >= level)
        if len(hits):
            first = int(hits[0])
            high, f_high = int(curve.n_edges[first]), float(curve.faithfulness[first])
            low = int(curve.n_edges[first - 1]) if first > 0 else 0
    if math.isnan(f_high):
        f_high = float(measure([high])[0])
    if not f_high >= level:
        return EdgesNeeded(float(level), total, total, 100.0, math.nan)
    while high - low > 1:
        sizes = np.unique(np.linspace(low, high, points + 2).round().astype(np.int64))
        sizes = sizes[(sizes > low) & (sizes < high)]
        values = measure(sizes)
        hit = np.flatnonzero(values >= level)
        if len(hit):
            high, f_high = int(sizes[hit[0]]), float(values[hit[0]])
            low = int(sizes[hit[0] - 1]) if hit[0] > 0 else low
        else:
            low = int(sizes[-1])
    mask = prefix_mask(order, high, total)
    kept = int((graph.connected(mask) if prune else mask).sum())
    return EdgesNeeded(float(level), high, kept, 100.0 * kept / total, f_high)


def build_evaluator(model: nn.Module, inputs: torch.Tensor, target: int, *, edges: Any | None = None,
                    labels: torch.Tensor | None = None, ablation: str = "patch",
                    counterfactuals: torch.Tensor | None = None, reference: torch.Tensor | None = None,
                    metric: str | None = None, n_samples: int = 300, layers: Sequence[str] | None = None,
                    samples: Samples | None = None) -> tuple[EdgeFaithfulness, EdgeGraph]:
    """An exact evaluator on the first ``n_samples`` inputs of ``target`` (:func:`select_samples`) and the graph of
    its edges. ``edges``: default every edge of ``layers``, into the output layer only into the units the metric
    reads (the target; with ``"logit_diff"`` also the counterfactuals' classes, so that what a circuit removes
    from either logit is ablated). ``reference`` (mean ablation): default the first 1,000 ``inputs``."""
    _check_ablation(ablation)
    inputs = torch.as_tensor(inputs)
    if samples is None:
        samples = select_samples(model, inputs, target, n_samples, labels=labels, ablation=ablation,
                                 counterfactuals=counterfactuals)
    backend = _backend()
    example = samples.inputs[:1].to(_device(model))
    if edges is None:
        outputs = [int(target)]
        if (default_metric(ablation) if metric is None else metric) == "logit_diff" and \
                samples.counterfactual_classes is not None:
            outputs += sorted(set(samples.counterfactual_classes.tolist()) - {int(target)})
        edges = target_edges(model, example, outputs, layers=layers)
    if ablation == "mean" and reference is None:
        reference = inputs[:1000]
    engine = backend.EdgeAblation(model, example, edges, ablation=ablation,
                                  reference=None if reference is None else torch.as_tensor(reference).to(example.device))
    evaluator = EdgeFaithfulness(model, engine, samples, target, int(edges.n), metric=metric, ablation_kind=ablation)
    return evaluator, EdgeGraph(edges)


def target_edges(model: nn.Module, example: torch.Tensor, target: int | Sequence[int], *,
                 layers: Sequence[str] | None = None) -> Any:
    """Every edge of ``layers`` (default all) of the model, those into the output layer only into ``target`` (one
    class or several)."""
    from explainnn.interventions import find_layers

    backend = _backend()
    output = find_layers(model, example)[-1].name
    edges = backend.enumerate_edges(model, example, layers=layers)
    wanted = [int(t) for t in np.atleast_1d(np.asarray(target))]
    return edges.subset(edges.into_target(output, wanted))


def mib_curve(model: nn.Module, inputs: torch.Tensor, target: int, scores: np.ndarray | None = None, *,
              circuits: Sequence[np.ndarray] | None = None, edges: Any | None = None,
              labels: torch.Tensor | None = None, ablation: str = "patch",
              counterfactuals: torch.Tensor | None = None, reference: torch.Tensor | None = None,
              metric: str | None = None, n_samples: int = 300, layers: Sequence[str] | None = None,
              absolute: bool = False, prune: bool = True, method: str = "",
              levels: Sequence[float] = LEVELS) -> MIBCurve:
    """MIB's faithfulness curve, CPR and CMD of an edge ranking (or circuit family) on held-out ``inputs``.

    ``scores`` (one per edge of ``edges``, higher = more important) or
    ``circuits`` (one boolean mask per budget) as in :func:`score_curve`;
    ``edges`` must be the edge set the scores were computed on (default: as
    :func:`build_evaluator` chooses, the set the searches use on the same samples). Samples: the first
    ``n_samples`` of ``inputs`` classified as ``target`` (and labelled so with
    ``labels``), counterfactuals paired as in :func:`select_samples`;
    ``reference``: the mean-ablation inputs (default the first 1,000 ``inputs``);
    ``metric``: ``"logit_diff"`` (default under patching, MIB's) or ``"logit"``.
    The model is left as it was.
    """
    evaluator, graph = build_evaluator(model, inputs, target, edges=edges, labels=labels, ablation=ablation,
                                       counterfactuals=counterfactuals, reference=reference, metric=metric,
                                       n_samples=n_samples, layers=layers)
    return score_curve(evaluator, graph, scores, circuits=circuits, absolute=absolute, prune=prune,
                       method=method, levels=levels)
