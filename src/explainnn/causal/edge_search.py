"""Edge circuits: the fewest unit-to-unit edges that keep a class's behaviour, and the baselines' rankings.

Every method works on the same edges (:func:`~explainnn.causal.mib.target_edges`:
every edge of the layer DAG, into the output layer only into the target) and
the same exact edge-ablation forward (``EdgeAblation``), with the faithfulness
``f = (F(C) - F(empty)) / (F(full) - F(empty))`` of :mod:`explainnn.causal.mib`.
A *mask* ``m`` in ``[0, 1]^E`` blends each edge between its ablated and its
clean value, so ``F(m)`` is differentiable and ``m = 1`` is the full model.

Rankings (:func:`edge_scores`, higher = more important):

* ``"eap"`` - edge attribution patching: ``dF/dm_e`` at ``m = 1``, i.e.
  ``(a_clean - a_ablated) . dF/d(child input)``, the first-order estimate of
  what removing edge ``e`` alone costs (one backward pass).
* ``"eap_ig"`` - the mask gradient averaged over ``m = (k/steps) 1`` for
  ``k = 0 .. steps-1`` (left Riemann sum, as EAP-IG's ``get_scores_eap_ig``; 5
  steps by default): integrated gradients of ``F`` along the straight path from
  every edge ablated to none, so the scores add up to about
  ``F(full) - F(empty)``. EAP-IG itself ("EAP-IG-inputs") interpolates only the
  input between counterfactual and clean and multiplies the averaged gradients
  by the *full-run* activation differences; on the mask path every edge is
  interpolated, so a parent's value along the path is itself interpolated.
  Both are integrated gradients from the ablated to the clean model; they
  coincide for edges out of the input.
* ``"acdc"`` - an ACDC-style exact threshold search (Conmy et al. 2023): children
  in reverse topological order (output first); for each, removing each of its
  remaining incoming edges is measured exactly (one batched call), the removals
  whose metric increase is below ``tau`` are tried one after another in
  ascending order of increase (all prefixes of that order in one batched call),
  and the longest run whose every step raised the metric by less than ``tau``
  is kept removed; repeated until no incoming edge of the child can go. Each
  removal therefore satisfies ACDC's rule against the circuit at that moment.
  The metric is ACDC's KL divergence from the full model's output distribution
  (``acdc_metric="kl"``) or the lost normalised faithfulness ``1 - f``
  (``"faithfulness"``). With the target logit as the only metric, a child no
  longer connected to the target loses its incoming edges without a measurement
  (their effect is exactly zero; under KL or a logit difference the other outputs
  still read it, so it is measured). Scores:
  the increase measured when each edge was last tried, the edges ACDC keeps
  ranked above all it removes.
* ``"random"`` - a seeded random permutation.
* ``"nodes"`` - the node circuit's induced edges (:func:`induced_edges` of
  :func:`~explainnn.causal.find_circuit`'s units) ranked first.
* ``"edge_pruning"`` - learned hard-concrete edge masks (Louizos et al. 2018;
  Edge Pruning, Bhaskar et al. 2024): ``log_alpha`` per edge, temperature 2/3,
  stretch ``(-0.1, 1.1)``; one mask sample per step shared by the samples;
  Adam on the faithfulness loss (``"hinge"``: ``relu(faithfulness + margin -
  f)``; ``"kl"``: KL from the full model's outputs, Edge Pruning's; ``"mse"``:
  ``(1 - f)^2``) plus the Lagrangian ``l1 (d - t) + l2 (d - t)^2`` of the
  expected share of open gates ``d`` (the expected L0 over ``E``) and a target
  density ``t`` lowered from 1 to ``final_density`` (log-linearly, as Edge
  Pruning's "logarithmic" warmup, over the first ``warmup`` share of the
  steps), ``l1, l2`` raised by gradient ascent; each step sees a seeded draw of
  ``batch`` circuit samples (default all of them). Scores: the trained ``log_alpha``.

:func:`edge_circuit` turns a method into a circuit whose faithfulness is an
exact number: for ``edge_pruning`` the shortest prefix of the learned ranking
that reaches ``faithfulness + margin`` on the circuit samples (exact bisection),
widened by ``headroom``, then exact pruning (:func:`prune_edges`: every single
removal in one call, then the removals that keep the level, taken together in
order of their cost, the longest run that stays at or above the level found by
exact bisection; later passes re-measure only the removals still open, and a full
pass ends the pruning when no edge can go, so the circuit is 1-minimal). For the
rankings (``eap``, ``eap_ig``, ``random``) the circuit is the shortest prefix
reaching the level; ``acdc`` returns ACDC's circuit at ``tau``; ``nodes`` the
node circuit's induced edges. Same inputs and seed give the same circuit; the
model is left as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from explainnn.causal.graph import CausalGraph
from explainnn.causal.mib import (
    EdgeFaithfulness,
    EdgeGraph,
    MIBCurve,
    build_evaluator,
    edges_needed,
    prefix_mask,
    ranking,
)
from explainnn.errors import ConfigError, UserError
from explainnn.torch_utils import Adam

METHODS = ("edge_pruning", "eap", "eap_ig", "acdc", "random", "nodes")
GAMMA, ZETA, TEMPERATURE = -0.1, 1.1, 2.0 / 3.0
"""Hard-concrete stretch limits and temperature (Louizos et al. 2018; Edge Pruning's ``l0.py``)."""
EXACT_MARGIN = 0.01
"""Exact pruning keeps ``faithfulness + EXACT_MARGIN`` on the circuit samples, so new samples keep ``faithfulness``."""
PRUNE_POINTS = 16
"""Run lengths measured per batched call while bisecting the removals of one pruning pass."""
HEADROOM = 0.25
"""Exact pruning starts from the shortest faithful prefix plus this share more edges."""
ACDC_TAU = 0.01
IG_STEPS = 5
SHELLS = 8
"""Levels of the nested ranking inside an edge circuit (:func:`circuit_ranking`)."""


@dataclass
class EdgeScores:
    """One method's edge scores (higher = more important) on ``edges``, from the circuit ``samples``."""

    method: str
    edges: Any
    scores: np.ndarray
    target: int
    samples: np.ndarray
    ablation: str
    circuit: np.ndarray | None = None
    """The method's own circuit when it has one (ACDC, the node circuit's induced edges)."""

    def ranking(self) -> np.ndarray:
        """Edges by score, highest first (ties by edge number)."""
        return ranking(self.scores)


@dataclass
class EdgeSearch:
    """An edge circuit and how it was found: ``mask`` over ``edges``, its exact ``faithfulness`` on the circuit
    samples, ``effect[e]`` = ``f(C) - f(C without e)`` for each member, the ranking ``scores`` and the prefix the
    exact stage started from."""

    method: str
    edges: Any
    graph: EdgeGraph
    mask: np.ndarray
    scores: np.ndarray
    faithfulness: float
    level: float
    full: float
    empty: float
    target: int
    samples: np.ndarray
    ablation: str
    metric: str
    prefix: int = 0
    effect: dict[int, float] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)
    evaluator: EdgeFaithfulness | None = field(default=None, repr=False, compare=False)
    """The exact faithfulness on the circuit samples the search used (for :func:`circuit_ranking`)."""

    @property
    def size(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class HeldOutFaithfulness:
    """An edge circuit's exact faithfulness on held-out samples (``graph.results["held_out"]`` is :meth:`to_dict`).

    ``samples``: the held-out inputs' indices in their ``split``; ``full`` and
    ``empty``: ``F`` with every edge kept and ablated on them."""

    faithfulness: float
    n_samples: int
    samples: list[int]
    split: str
    metric: str
    ablation: str
    full: float
    empty: float

    def to_dict(self) -> dict[str, Any]:
        return {"faithfulness": self.faithfulness, "n_samples": self.n_samples, "samples": list(self.samples),
                "split": self.split, "metric": self.metric, "ablation": self.ablation, "full": self.full,
                "empty": self.empty}


@dataclass(frozen=True)
class EdgeCircuitReport:
    """One class's edge circuit, found and checked: ``graph`` (the circuit as a :class:`CausalGraph`; its
    ``results`` keep the numbers below as JSON), ``search`` how it was found (:func:`find_edge_circuit`),
    ``held_out`` its exact faithfulness on held-out samples and ``curves`` the MIB curves on those samples, one
    per ranking (``"explainnn"``: :func:`circuit_ranking`; then the baselines), empty when none was measured."""

    graph: CausalGraph
    search: EdgeSearch
    held_out: HeldOutFaithfulness
    curves: dict[str, MIBCurve] = field(default_factory=dict)

    @property
    def target(self) -> int:
        """The explained class."""
        return int(self.search.target)

    @property
    def size(self) -> int:
        """Edges in the circuit."""
        return int(self.search.size)

    @property
    def total_edges(self) -> int:
        """Edges the circuit was chosen from."""
        return int(self.search.graph.n)

    @property
    def held_out_faithfulness(self) -> float:
        """The circuit's exact normalised faithfulness on the held-out samples."""
        return float(self.held_out.faithfulness)


# ----------------------------------------------------------------------------- setup
@dataclass
class _Setup:
    model: nn.Module
    evaluator: EdgeFaithfulness
    graph: EdgeGraph
    edges: Any
    ablation: str


def _setup(model: nn.Module, inputs: torch.Tensor, target: int, *, ablation: str, counterfactuals, labels, layers,
           n_samples: int, reference, metric, edges=None) -> _Setup:
    evaluator, graph = build_evaluator(model, inputs, target, edges=edges, labels=labels, ablation=ablation,
                                       counterfactuals=counterfactuals, reference=reference, metric=metric,
                                       n_samples=n_samples, layers=layers)
    if not evaluator.full - evaluator.empty > 0:
        raise UserError(f"ablating every edge does not lower the metric of class {target} "
                        f"({evaluator.full:.4g} -> {evaluator.empty:.4g}); there is no circuit to find")
    return _Setup(model, evaluator, graph, graph.edges, ablation)


# ----------------------------------------------------------------------------- gradient rankings
def eap_scores(evaluator: EdgeFaithfulness) -> np.ndarray:
    """EAP: ``dF/dm`` at the all-ones mask (one forward and one backward pass)."""
    masks = torch.ones(1, evaluator.n_edges, requires_grad=True)
    (grad,) = torch.autograd.grad(evaluator.differentiable(masks).sum(), [masks])
    return grad[0].double().cpu().numpy()


def eap_ig_scores(evaluator: EdgeFaithfulness, steps: int = IG_STEPS) -> np.ndarray:
    """EAP-IG on the mask path: the mean of ``dF/dm`` over ``m = (k/steps) 1``, ``k = 0 .. steps-1``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1; got {steps!r}")
    alphas = torch.arange(steps, dtype=torch.float32) / steps
    masks = (alphas[:, None] * torch.ones(1, evaluator.n_edges)).requires_grad_(True)
    (grad,) = torch.autograd.grad(evaluator.differentiable(masks).sum(), [masks])
    return grad.double().mean(0).cpu().numpy()


def random_scores(n_edges: int, seed: int = 0) -> np.ndarray:
    """A random ranking of ``n_edges`` edges (seeded): scores ``n - rank``."""
    order = np.random.default_rng(seed).permutation(n_edges)
    scores = np.empty(n_edges)
    scores[order] = np.arange(n_edges, 0, -1, dtype=float)
    return scores


# ----------------------------------------------------------------------------- node circuit's edges
def induced_edges(graph: EdgeGraph, units: Mapping[str, Iterable[int]] | CausalGraph) -> np.ndarray:
    """The edges a node circuit induces: between kept units, from input units into kept units, into the output.

    ``units``: ``{layer: kept unit indices}`` or the :class:`CausalGraph` of a
    node circuit (its ``circuit_search`` result names the analysed layers; each
    graph's hidden units are the kept ones). Units of layers the circuit does
    not analyse count as kept (a node circuit leaves them intact); source units
    (inputs) and sink units (the target) always count as kept.
    """
    if isinstance(units, CausalGraph):
        analysed = list(units.results.get("circuit_search", {}).get("per_layer", {}) or units.hidden_layers())
        present = set(units.layers())
        chosen = {layer: _indices(units, layer) if layer in present else [] for layer in analysed}
    else:
        chosen = {str(layer): [int(i) for i in ids] for layer, ids in units.items()}
    kept = np.array([layer not in chosen or unit in set(chosen[layer]) for layer, unit in graph.units], dtype=bool)
    kept |= graph.source | graph.sink
    return kept[graph.parent] & kept[graph.child]


def _indices(graph: CausalGraph, layer: str) -> list[int]:
    return [int(nid.rsplit(":", 1)[1]) for nid in graph.units(layer)]


# ----------------------------------------------------------------------------- ACDC
def acdc(evaluator: EdgeFaithfulness, graph: EdgeGraph, *, tau: float = ACDC_TAU, metric: str = "kl",
         progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """ACDC-style exact threshold search (module docstring); returns the circuit mask and the scores."""
    if metric not in ("kl", "faithfulness"):
        raise ConfigError(f"ACDC metric must be 'kl' or 'faithfulness'; got {metric!r}")
    if not tau >= 0:
        raise ConfigError(f"tau must be >= 0; got {tau}")

    def measure(masks: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(masks)
        return evaluator.kl(stacked) if metric == "kl" else 1.0 - evaluator(stacked)

    # Only a metric of the target logit alone ignores a child cut off from it (the other outputs read it).
    target_only = metric == "faithfulness" and evaluator.metric == "logit"
    mask = np.ones(graph.n, dtype=bool)
    increase = np.full(graph.n, np.nan)
    current = float(measure([mask])[0])
    children = np.unique(graph.child)
    order = sorted(children.tolist(), key=lambda u: (-graph.unit_rank[u], graph.units[u][0], graph.units[u][1]))
    for child in tqdm(order, desc="acdc", unit="unit", leave=False, disable=not progress):
        incoming = np.flatnonzero((graph.child == child) & mask)
        if not len(incoming):
            continue
        if target_only and not graph.sink[child] and not graph.backward_reach(mask)[child]:
            mask[incoming] = False
            increase[incoming] = 0.0
            continue
        while len(incoming):
            values = measure([_without(mask, e) for e in incoming])
            delta = values - current
            increase[incoming] = delta
            ok = np.argsort(delta, kind="stable")
            ok = ok[delta[ok] < tau]
            if not len(ok):
                break
            candidates = incoming[ok]
            trial, steps = mask.copy(), []
            for e in candidates:
                trial = _without(trial, e)
                steps.append(trial)
            run = np.concatenate([[current], measure(steps)])
            good = np.diff(run) < tau
            count = len(good) if good.all() else int(np.argmin(good))
            count = max(count, 1)  # the first step is the single removal measured above
            mask[candidates[:count]] = False
            increase[candidates[:count]] = np.diff(run)[:count]
            current = float(run[count])
            incoming = np.flatnonzero((graph.child == child) & mask)
    increase = np.nan_to_num(increase, nan=0.0)
    spread = float(increase.max() - increase.min()) + 1.0 if graph.n else 1.0
    scores = increase + np.where(mask, spread, 0.0)
    return mask, scores


def _without(mask: np.ndarray, edge: int) -> np.ndarray:
    out = mask.copy()
    out[edge] = False
    return out


# ----------------------------------------------------------------------------- Edge Pruning


def target_density(step: int, steps: int, final_density: float, warmup: float) -> float:
    """The scheduled share of open edges: from 1 at step 0 to ``final_density`` after ``warmup * steps`` steps,
    linear in ``log(density)``."""
    span = max(1, int(round(warmup * steps)))
    progress = min(1.0, step / span)
    return float(math.exp(progress * math.log(final_density)))


def learn_edge_scores(evaluator: EdgeFaithfulness, *, faithfulness: float = 0.8, steps: int = 200,
                      lr: float = 0.1, lr_lambda: float = 0.05, final_density: float = 0.01, warmup: float = 0.8,
                      objective: str = "hinge", margin: float = 0.05, init: float = 3.0, batch: int | None = None,
                      seed: int = 0, progress: bool = False) -> np.ndarray:
    """Edge Pruning's learned hard-concrete masks; returns the trained ``log_alpha`` per edge (module docstring).

    ``steps`` Adam steps at learning rate ``lr`` (``lr_lambda`` for the
    multipliers); ``final_density`` and ``warmup`` set the target schedule;
    ``objective`` and ``margin`` the faithfulness loss (the hinge aims at
    ``faithfulness + margin``); ``init``: the starting ``log_alpha``; ``batch``:
    samples per step (a seeded draw without replacement; ``None``: all).
    """
    if objective not in ("hinge", "kl", "mse"):
        raise ConfigError(f"objective must be 'hinge', 'kl' or 'mse'; got {objective!r}")
    if not 0 < final_density <= 1 or not 0 < warmup <= 1:
        raise ConfigError(f"final_density and warmup must be in (0, 1]; got {final_density}, {warmup}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be an integer >= 0; got {steps!r}")
    n, count = evaluator.n_edges, len(evaluator.samples)
    generator = torch.Generator().manual_seed(seed)
    log_alpha = torch.full((n,), float(init), dtype=torch.float32, requires_grad=True)
    lambdas = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    adam, ascent = Adam(log_alpha, lr), Adam(lambdas, lr_lambda, maximize=True)
    shift = TEMPERATURE * math.log(-GAMMA / ZETA)
    span = evaluator.full - evaluator.empty
    clean = torch.log_softmax(evaluator.clean_logits.double(), -1).detach()
    for step in tqdm(range(steps), desc="edge masks", unit="step", leave=False, disable=not progress):
        u = torch.rand(n, generator=generator).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / TEMPERATURE)
        z = (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)[None]
        rows = None if batch is None or batch >= count else torch.randperm(count, generator=generator)[:batch]
        if objective == "kl":
            logp = torch.log_softmax(evaluator.logits(z, rows).double(), -1)[0]
            target = clean if rows is None else clean[rows.to(clean.device)]
            loss = (target.exp() * (target - logp)).sum(-1).mean()
        else:
            f = (evaluator.differentiable(z, rows)[0] - evaluator.empty) / span
            loss = torch.relu(faithfulness + margin - f) if objective == "hinge" else (1.0 - f) ** 2
        density = torch.sigmoid(log_alpha - shift).double().mean()
        gap = density - target_density(step, steps, final_density, warmup)
        loss = loss + lambdas[0] * gap + lambdas[1] * gap**2
        grad_alpha, grad_lambda = torch.autograd.grad(loss, [log_alpha, lambdas])
        adam.step(grad_alpha)
        ascent.step(grad_lambda)
    return log_alpha.detach().double().cpu().numpy()


# ----------------------------------------------------------------------------- exact pruning
def prune_edges(evaluator: EdgeFaithfulness, mask: np.ndarray, scores: np.ndarray, level: float, *,
                points: int = PRUNE_POINTS) -> tuple[np.ndarray, float, list[int], dict[int, float]]:
    """Exact pruning of ``mask`` to a 1-minimal circuit at or above ``level``.

    Each pass measures single removals from the circuit (one batched call),
    orders the removals that keep the level by their cost (cheapest first, ties by
    lower ``scores``) and removes the longest run of them that keeps the level
    together, found by exact bisection over the run length (``points`` lengths per
    call). The first pass measures every member; later passes only the members
    whose single removal kept the level last time but were not taken (removing
    edges rarely makes another edge cheaper to remove), and when none of those can
    go, a full pass over every member checks again. Pruning ends when a full pass
    finds no single removal that keeps the level, so the circuit is 1-minimal.
    Returns the mask, its exact faithfulness, the removed edges in order and
    ``{edge: f(C) - f(C without edge)}`` for the final members (from the last full
    pass).
    """
    mask = np.asarray(mask, dtype=bool).copy()
    value = float(evaluator(mask[None])[0])
    removed: list[int] = []
    pending: np.ndarray | None = None  # members to measure in the next partial pass; None: every member
    while True:
        full_pass = pending is None
        members = np.flatnonzero(mask) if pending is None else pending[mask[pending]]
        if not len(members):
            if full_pass:
                return mask, value, removed, {}
            pending = None
            continue
        before = value
        mask, value, taken, singles, pending = _prune_pass(evaluator, mask, value, scores, level, points, members)
        if not taken:
            if full_pass:
                return mask, value, removed, {int(e): float(before - v) for e, v in zip(members, singles)}
            pending = None
            continue
        removed.extend(taken)


def removal_effects(evaluator: EdgeFaithfulness, mask: np.ndarray, value: float) -> dict[int, float]:
    """``{edge: f(C) - f(C without edge)}`` for every member of the circuit (exact, batched)."""
    members = np.flatnonzero(mask)
    if not len(members):
        return {}
    values = evaluator(np.stack([_without(mask, e) for e in members]))
    return {int(e): float(value - v) for e, v in zip(members, values)}


def circuit_ranking(search: EdgeSearch, evaluator: EdgeFaithfulness | None = None, *, shells: int = SHELLS,
                    points: int = PRUNE_POINTS) -> np.ndarray:
    """The edge circuit as a ranking of every edge (scores, higher first), for MIB curves.

    Inside the circuit the ranking is nested: from the circuit ``C`` (exact
    faithfulness ``f0``), the circuit is pruned on the circuit samples to the
    levels ``f0 (shells - 1) / shells, ..., f0 / shells`` in turn, each from the
    one before (one exact pass per level: every single removal measured, the
    cheapest run that keeps the level taken together, found by exact bisection).
    Edges that survive more levels rank higher; within a level, edges removed
    later rank higher, and the edges of the last level rank by their exact
    single-removal cost. So every prefix up to the circuit's size is a circuit the
    exact search chose for that budget. Outside the circuit edges rank by the first-order gain
    of adding each to the circuit, ``dF/dm_e`` at the circuit's mask (attribution
    patching around the circuit: one backward pass). Costs ``shells`` passes over
    the circuit's members; ``evaluator``: the circuit samples' exact faithfulness
    (default the search's own). The model is left as it was.
    """
    evaluator = search.evaluator if evaluator is None else evaluator
    if evaluator is None:
        raise UserError("circuit_ranking needs the search's evaluator: pass the circuit samples' EdgeFaithfulness")
    if isinstance(shells, bool) or not isinstance(shells, int) or shells < 1:
        raise ConfigError(f"shells must be an integer >= 1; got {shells!r}")
    mask = np.asarray(search.mask, dtype=bool).copy()
    n = len(mask)
    order: list[int] = []  # least important first
    value = float(search.faithfulness)
    for k in range(shells - 1, 0, -1):
        if mask.sum() <= 1:
            break
        level = search.faithfulness * k / shells
        mask, value, removed, _, _ = _prune_pass(evaluator, mask, value, search.scores, level, points)
        order.extend(removed)
    members = np.flatnonzero(mask)
    if len(members):
        singles = evaluator(np.stack([_without(mask, e) for e in members])) if len(members) > 1 else np.zeros(1)
        order.extend(int(e) for e in members[np.lexsort((search.scores[members], value - singles))])
    masks = torch.as_tensor(np.asarray(search.mask, dtype=np.float32))[None].requires_grad_(True)
    (grad,) = torch.autograd.grad(evaluator.differentiable(masks).sum(), [masks])
    gain = grad[0].double().cpu().numpy()
    outside = np.flatnonzero(~np.asarray(search.mask, dtype=bool))
    outside = outside[np.lexsort((-search.scores[outside], -gain[outside]))][::-1]  # least gain first
    ranked = np.concatenate([outside, np.array(order, dtype=np.int64)]).astype(np.int64)
    scores = np.empty(n)
    scores[ranked] = np.arange(1, n + 1, dtype=float)
    return scores


def _prune_pass(evaluator: EdgeFaithfulness, mask: np.ndarray, value: float, scores: np.ndarray, level: float,
                points: int, members: np.ndarray | None = None
                ) -> tuple[np.ndarray, float, list[int], np.ndarray, np.ndarray]:
    """One pass of :func:`prune_edges` at ``level`` over ``members`` (default every member): each single removal
    measured, the longest cheapest run that keeps the level removed. Returns the mask, its faithfulness, the
    removed edges in order, the single-removal values of ``members`` and the removals that kept the level but
    were not taken."""
    members = np.flatnonzero(mask) if members is None else members
    singles = evaluator(np.stack([_without(mask, e) for e in members]))
    order = np.lexsort((scores[members], -singles))
    order = order[singles[order] >= level]
    if not len(order):
        return mask, value, [], singles, np.zeros(0, dtype=np.int64)
    candidates = members[order]

    def cut(count: int) -> np.ndarray:
        trial = mask.copy()
        trial[candidates[:count]] = False
        return trial

    count, f_count = _longest_run(evaluator, cut, len(candidates), float(singles[order[0]]), level, points)
    return cut(count), f_count, [int(e) for e in candidates[:count]], singles, candidates[count:]


def _longest_run(evaluator: EdgeFaithfulness, cut, top: int, f_one: float, level: float,
                 points: int) -> tuple[int, float]:
    """The longest run length ``1 .. top`` whose circuit ``cut(length)`` keeps ``level`` (exact bisection, ``points``
    lengths per call), given that length 1 keeps it with faithfulness ``f_one``; with its faithfulness."""
    if top <= 1:
        return 1, f_one
    f_top = float(evaluator(cut(top)[None])[0])
    if f_top >= level:
        return top, f_top
    low, high, f_low = 1, top, f_one  # f(low) >= level > f(high)
    while high - low > 1:
        sizes = np.unique(np.linspace(low, high, points + 2).round().astype(np.int64))
        sizes = sizes[(sizes > low) & (sizes < high)]
        values = evaluator(np.stack([cut(int(k)) for k in sizes]))
        miss = np.flatnonzero(values < level)
        if len(miss):
            high = int(sizes[miss[0]])
            if miss[0] > 0:
                low, f_low = int(sizes[miss[0] - 1]), float(values[miss[0] - 1])
        else:
            low, f_low = int(sizes[-1]), float(values[-1])
    return low, f_low


# ----------------------------------------------------------------------------- public entries
def edge_scores(model: nn.Module, inputs: torch.Tensor, target: int, *, method: str = "eap",
                ablation: str = "patch", counterfactuals: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, layers: Sequence[str] | None = None, seed: int = 0,
                n_samples: int = 100, reference: torch.Tensor | None = None, metric: str | None = None,
                edges: Any | None = None, steps: int | None = None, tau: float = ACDC_TAU,
                acdc_metric: str = "kl", faithfulness: float = 0.8, progress: bool = False,
                **options: Any) -> EdgeScores:
    """One method's edge scores (higher = more important), for MIB curves (:func:`~explainnn.causal.mib.mib_curve`).

    ``method``: one of ``METHODS`` (module docstring). Samples: the first
    ``n_samples`` ``inputs`` classified as ``target`` (and labelled so, with
    ``labels``), counterfactuals paired by
    :func:`~explainnn.causal.mib.select_samples` (or given, one per input);
    ``reference``: mean-ablation inputs (default the first 1,000 ``inputs``);
    ``metric``: ``F``'s metric (default ``"logit_diff"`` under patching,
    ``"logit"`` otherwise); ``edges``: the edge set (default every edge of
    ``layers`` into the target); ``steps``: IG steps (``eap_ig``, default 5) or
    mask-training steps (``edge_pruning``, default 200); ``tau`` and
    ``acdc_metric``: ACDC's threshold and metric; ``faithfulness``: the level the
    ``edge_pruning`` hinge and the ``nodes`` circuit aim at; ``options``: further
    arguments of :func:`learn_edge_scores` or :func:`~explainnn.causal.find_circuit`.
    The model is left as it was.
    """
    _check_method(method)
    setup = _setup(model, inputs, target, ablation=ablation, counterfactuals=counterfactuals, labels=labels,
                   layers=layers, n_samples=n_samples, reference=reference, metric=metric, edges=edges)
    return _scores(setup, method, inputs, target, labels=labels, layers=layers, seed=seed, steps=steps, tau=tau,
                   acdc_metric=acdc_metric, faithfulness=faithfulness, progress=progress, **options)


def _scores(setup: _Setup, method: str, inputs: torch.Tensor, target: int, *, labels, layers, seed: int,
            steps: int | None, tau: float, acdc_metric: str, faithfulness: float, progress: bool,
            **options: Any) -> EdgeScores:
    evaluator, graph = setup.evaluator, setup.graph
    circuit = None
    if method == "eap":
        scores = eap_scores(evaluator)
    elif method == "eap_ig":
        scores = eap_ig_scores(evaluator, IG_STEPS if steps is None else steps)
    elif method == "random":
        scores = random_scores(graph.n, seed)
    elif method == "acdc":
        circuit, scores = acdc(evaluator, graph, tau=tau, metric=acdc_metric, progress=progress)
    elif method == "nodes":
        from explainnn.causal.minimal_circuit import circuit as node_circuit

        node_layers = options.pop("node_layers", None)
        nodes = node_circuit(setup.model, inputs, target, labels=labels, faithfulness=faithfulness,
                             layers=node_layers, n_samples=len(evaluator.samples), seed=seed, **options)
        circuit = induced_edges(graph, nodes)
        scores = circuit.astype(float) + random_scores(graph.n, seed) / (graph.n + 1.0)
    else:
        scores = learn_edge_scores(evaluator, faithfulness=faithfulness, steps=200 if steps is None else steps,
                                   seed=seed, progress=progress, **options)
    return EdgeScores(method, setup.edges, np.asarray(scores, dtype=float), int(target),
                      np.asarray(evaluator.samples.index), setup.ablation, circuit)


def find_edge_circuit(model: nn.Module, inputs: torch.Tensor, target: int, *, faithfulness: float = 0.8,
                      ablation: str = "patch", counterfactuals: torch.Tensor | None = None,
                      labels: torch.Tensor | None = None, layers: Sequence[str] | None = None, seed: int = 0,
                      method: str = "edge_pruning", n_samples: int = 100, reference: torch.Tensor | None = None,
                      metric: str | None = None, edges: Any | None = None, margin: float = EXACT_MARGIN,
                      headroom: float = HEADROOM, steps: int | None = None, tau: float = ACDC_TAU,
                      acdc_metric: str = "kl", progress: bool = False, **options: Any) -> EdgeSearch:
    """The search behind :func:`edge_circuit` (same arguments), returned with its scores and exact numbers."""
    _check_method(method)
    if not 0.0 < faithfulness <= 1.0:
        raise ConfigError(f"faithfulness must be in (0, 1]; got {faithfulness}")
    if margin < 0 or headroom < 0:
        raise ConfigError(f"margin and headroom must be >= 0; got {margin}, {headroom}")
    setup = _setup(model, inputs, target, ablation=ablation, counterfactuals=counterfactuals, labels=labels,
                   layers=layers, n_samples=n_samples, reference=reference, metric=metric, edges=edges)
    evaluator, graph = setup.evaluator, setup.graph
    level = min(1.0, faithfulness + margin)
    found = _scores(setup, method, inputs, target, labels=labels, layers=layers, seed=seed, steps=steps, tau=tau,
                    acdc_metric=acdc_metric, faithfulness=faithfulness, progress=progress, **options)
    scores = found.scores
    removed: list[int] = []
    effect: dict[int, float] = {}
    prefix = 0
    if found.circuit is not None:
        mask = found.circuit
        value = float(evaluator(mask[None])[0])
    else:
        need = edges_needed(evaluator, graph, scores, level, prune=False)
        prefix = need.prefix
        order = ranking(scores)
        if method == "edge_pruning":
            start = prefix_mask(order, min(graph.n, int(math.ceil(prefix * (1 + headroom)))), graph.n)
            mask, value, removed, effect = prune_edges(evaluator, start, scores, level)
        else:
            mask = prefix_mask(order, prefix, graph.n)
            value = need.faithfulness if not math.isnan(need.faithfulness) else float(evaluator(mask[None])[0])
    if method != "edge_pruning" or found.circuit is not None:
        effect = removal_effects(evaluator, mask, value)
    return EdgeSearch(method, setup.edges, graph, mask, scores, value, level, evaluator.full, evaluator.empty,
                      int(target), np.asarray(evaluator.samples.index), ablation, evaluator.metric, prefix, effect,
                      removed, evaluator)


def edge_circuit(model: nn.Module, inputs: torch.Tensor, target: int, *, faithfulness: float = 0.8,
                 ablation: str = "patch", counterfactuals: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, layers: Sequence[str] | None = None, seed: int = 0,
                 method: str = "edge_pruning", n_samples: int = 100, reference: torch.Tensor | None = None,
                 metric: str | None = None, edges: Any | None = None, margin: float = EXACT_MARGIN,
                 headroom: float = HEADROOM, steps: int | None = None, tau: float = ACDC_TAU,
                 acdc_metric: str = "kl", metadata: dict[str, Any] | None = None, progress: bool = False,
                 **options: Any) -> CausalGraph:
    """The smallest edge set that keeps ``faithfulness`` of the normalised metric, as a :class:`CausalGraph`.

    ``ablation``: what a removed edge carries - its value on a counterfactual
    input (``"patch"``, MIB's default; ``counterfactuals`` one per input, default
    paired by :func:`~explainnn.causal.mib.select_samples`), its mean over
    ``reference`` (``"mean"``, default the first 1,000 ``inputs``) or zero.
    Samples: the first ``n_samples`` inputs classified as ``target`` (and
    labelled so, with ``labels``). ``layers``: the layers whose edges are
    searched (default all). ``method``: ``"edge_pruning"`` (default), ``"eap"``,
    ``"eap_ig"``, ``"acdc"``, ``"random"`` or ``"nodes"`` (module docstring);
    ``margin``: added to ``faithfulness`` on the circuit samples; ``headroom``,
    ``steps``, ``tau``, ``acdc_metric`` and ``options``
    (:func:`learn_edge_scores`'s) tune the methods. Each edge of the graph
    carries ``effect`` (the exact normalised faithfulness lost when it alone is
    removed from the circuit), ``kind`` and ``score``; hidden-to-hidden edges of a
    recurrent layer (unit ``i`` at step ``t - 1`` to unit ``j`` at step ``t``) are
    edges of the graph with ``via="recurrent"``, except those from a unit to
    itself, which a :class:`CausalGraph` cannot hold: they are listed in
    ``results["edge_circuit"]["same_layer_edges"]`` (``{"edge": "layer:i->layer:i", ...}``);
    ``results["edge_circuit"]`` holds the exact faithfulness and sizes. The model
    is left exactly as it was.
    """
    search = find_edge_circuit(model, inputs, target, faithfulness=faithfulness, ablation=ablation,
                               counterfactuals=counterfactuals, labels=labels, layers=layers, seed=seed,
                               method=method, n_samples=n_samples, reference=reference, metric=metric, edges=edges,
                               margin=margin, headroom=headroom, steps=steps, tau=tau, acdc_metric=acdc_metric,
                               progress=progress, **options)
    option_record = {"faithfulness": faithfulness, "ablation": ablation, "method": method,
                     "layers": list(layers) if layers else None, "n_samples": n_samples, "margin": margin,
                     "headroom": headroom, "steps": steps, "tau": tau, "acdc_metric": acdc_metric,
                     "metric": search.metric}
    return edge_circuit_graph(model, search, options=option_record, seed=seed, metadata=metadata)


def edge_circuit_graph(model: nn.Module, search: EdgeSearch, *, options: dict[str, Any] | None = None,
                       seed: int = 0, metadata: dict[str, Any] | None = None) -> CausalGraph:
    """The circuit of ``search`` as a :class:`CausalGraph`: the units its edges join, the edges with their exact
    ``effect``, ``kind`` and ``score``."""
    graph = search.graph
    ranks = graph.layer_rank
    sink_layers = {graph.units[u][0] for u in np.flatnonzero(graph.sink)} - {
        graph.units[u][0] for u in np.flatnonzero(~graph.sink)}
    source_layers = {graph.units[u][0] for u in np.flatnonzero(graph.source)} - {
        graph.units[u][0] for u in np.flatnonzero(~graph.source)}
    meta = {"model": type(model).__name__, "kind": "edge_circuit", "target": search.target,
            "samples": search.samples.tolist(), "n_samples": int(len(search.samples)), "options": options or {},
            "seed": seed, "layers": sorted(ranks, key=lambda layer: (ranks[layer], layer)), **(metadata or {})}
    out = CausalGraph(meta)

    def node(unit: int) -> str:
        layer, index = graph.units[unit]
        kind: Literal["input", "hidden", "output"] = (
            "output" if layer in sink_layers else ("input" if layer in source_layers else "hidden"))
        return out.add_unit(layer, index, kind=kind, depth=ranks[layer])

    same_layer = []
    for e in np.flatnonzero(search.mask):
        attrs = {"effect": search.effect.get(int(e), float("nan")), "kind": graph.kinds[e],
                 "score": float(search.scores[e])}
        if graph.same_layer[e]:
            if graph.parent[e] == graph.child[e]:  # unit i at step t - 1 to itself at step t: no self-loops
                same_layer.append({"edge": graph.label(int(e)), **attrs})
                continue
            attrs["via"] = "recurrent"
        out.add_edge(node(int(graph.parent[e])), node(int(graph.child[e])), **attrs)
    out.add_result("edge_circuit", {
        "method": search.method, "ablation": search.ablation, "metric": search.metric,
        "faithfulness": search.faithfulness, "level": search.level, "n_edges": search.size,
        "total_edges": graph.n, "fraction": search.size / graph.n if graph.n else float("nan"),
        "full": search.full, "empty": search.empty, "prefix": search.prefix,
        "same_layer_edges": same_layer,
    })
    return out


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown edge-circuit method {method!r}; valid: {', '.join(METHODS)}")


__all__ = [
    "METHODS",
    "EdgeCircuitReport",
    "EdgeScores",
    "EdgeSearch",
    "HeldOutFaithfulness",
    "acdc",
    "circuit_ranking",
    "eap_ig_scores",
    "eap_scores",
    "edge_circuit",
    "edge_circuit_graph",
    "edge_scores",
    "find_edge_circuit",
    "induced_edges",
    "learn_edge_scores",
    "prune_edges",
    "random_scores",
    "removal_effects",
    "target_density",
]
