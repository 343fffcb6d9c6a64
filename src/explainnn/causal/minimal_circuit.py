"""Minimal faithful circuits: the fewest hidden units that carry a class's logit.

:func:`circuit` finds the smallest set of hidden units ``C`` such that
mean-ablating every *other* unit of the analysed layers keeps at least
``faithfulness`` of the normalised target logit,
``(F(C) - F(empty)) / (F(full) - F(empty))`` (see :mod:`explainnn.causal.units`).
It combines the two families of circuit-discovery methods:

1. **Learned masks** (subnetwork probing, Cao et al. 2021; edge pruning,
   Bhaskar et al. 2024): every unit gets a hard-concrete gate (Louizos et al.
   2018) that blends its activation with its mean, ``mean + z (a - mean)``;
   the gates' log-odds are trained with Adam to keep the normalised logit above
   ``faithfulness`` (a hinge with a small margin) while an L0 penalty (the
   expected number of open gates) closes as many as possible. The trained
   log-odds rank the units. The gates are forward hooks on each layer's output;
   for a recurrent layer the blend acts on the output sequence only (not inside
   the recurrence), a relaxation the exact steps below correct.
2. **Exact pruning** (ACDC, Conmy et al. 2023): with exact mean-ablation
   interventions from the batched runner, the shortest prefix of the ranking
   that reaches ``faithfulness + EXACT_MARGIN`` is found; from that prefix plus
   half as many units again, units are removed while the circuit stays at or
   above that level - each round tries every single removal in one batched
   call and drops the cheapest 5% of the circuit together when that stays
   faithful (fewer, down to one, when it does not). A local search then
   exchanges one of the cheapest circuit units for one of the best-ranked
   outside units whenever that raises the faithfulness, and prunes again. The
   result is 1-minimal: removing any one unit takes it below the level.
   ``EXACT_MARGIN`` (0.01) is a small safety margin so that the circuit keeps
   ``faithfulness`` on new samples too (chosen on training digits, never on
   the held-out checks).
3. **Necessity**, below the level and the size: ablating the circuit (the
   rest kept) should cost more of the logit than ablating random unit sets
   with the same number of units per layer, the check of
   :func:`~explainnn.causal.circuit_faithfulness`. After pruning, exchanges
   *within a layer* raise the necessity while the sufficiency stays at least
   where pruning left it (:func:`raise_necessity`): with the per-layer sizes
   fixed, the random sets the check compares with are fixed too, so a higher
   necessity is a better rank among them. The necessity is the check's
   "where the circuit chooses": layers the circuit holds all or all but one of
   are left intact in the ablation. Pruning resumes after each
   exchange, so the circuit stays 1-minimal; neither the size nor the
   sufficiency is traded for necessity.

The returned circuit's faithfulness is therefore always an exact number on the
circuit samples; check it on held-out samples with
:func:`~explainnn.causal.circuit.circuit_faithfulness`. Same inputs and seed
give the same circuit; the model is left exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from explainnn.causal.discovery import indices_classified_as
from explainnn.causal.graph import CausalGraph
from explainnn.causal.units import HiddenUnits, normalise, target_logits
from explainnn.errors import ConfigError, UserError
from explainnn.inputs import check_inputs
from explainnn.interventions import InterventionRunner, LayerInfo, find_layers
from explainnn.interventions.hooks import ModelPatch
from explainnn.torch_utils import Adam

GAMMA, ZETA, TEMPERATURE = -0.1, 1.1, 2.0 / 3.0
"""Hard-concrete stretch limits and temperature (Louizos et al. 2018)."""
N_REFERENCE = 1000
PREFIX_GRID = 48
PRUNE_CHUNK = 0.05
"""Exact pruning removes up to this share of the circuit per round (the cheapest removals, checked together)."""
EXACT_MARGIN = 0.01
"""Exact pruning keeps at least ``faithfulness + EXACT_MARGIN`` on the circuit samples, so that the circuit still
keeps ``faithfulness`` on new samples (set on training digits, never on the held-out checks)."""
HEADROOM = 0.5
"""Exact pruning starts from the shortest faithful prefix of the ranking plus this share more units."""
SWAP_MEMBERS = 4
SWAP_CANDIDATES = 8
MAX_SWAPS = 10
"""Local search after pruning: exchange one of the 4 circuit units whose removal costs least for one of the
8 best-ranked outside units when that raises the faithfulness, then prune again; at most 10 exchanges."""
NECESSITY_PAIRS = 16
MAX_NECESSITY_SWAPS = 10
MAX_SCREENS = 3
"""Necessity exchanges: each round checks exactly the 16 same-layer exchanges not tried yet whose estimate (from
every single removal and addition, measured in one batched call, at most 3 times) raises necessity most; at most 10
exchanges."""


@dataclass
class CircuitSearch:
    """Everything :func:`find_circuit` computed: the circuit and how it was reached.

    ``scores`` are the learned gate log-odds per unit (the ranking); ``prefix``
    the size of the shortest faithful prefix of that ranking; ``removed`` the
    units pruned on the way to the circuit, in order (a unit exchanged back in
    later may appear), with ``trace`` the exact faithfulness after the pruning
    round that removed each; ``drop[u]`` what removing unit ``u`` alone from the
    final circuit costs (normalised).
    """

    units: HiddenUnits
    target: int
    samples: np.ndarray
    scores: np.ndarray
    mask: np.ndarray
    faithfulness: float
    full: float
    empty: float
    prefix: int
    removed: list[int] = field(default_factory=list)
    trace: list[float] = field(default_factory=list)
    drop: dict[int, float] = field(default_factory=dict)
    necessity: float = float("nan")
    necessity_swaps: int = 0
    """``necessity``: the circuit's exact normalised necessity on the circuit samples; ``necessity_swaps``: the
    necessity exchanges made."""

    @property
    def size(self) -> int:
        return int(self.mask.sum())

    def ranking(self) -> np.ndarray:
        """Units by learned score, highest first (ties by unit number)."""
        return np.argsort(-self.scores, kind="stable")


def circuit(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int,
    *,
    labels: torch.Tensor | None = None,
    faithfulness: float = 0.8,
    layers: Sequence[str] | None = None,
    n_samples: int = 100,
    reference: torch.Tensor | None = None,
    steps: int = 200,
    lr: float = 0.1,
    sparsity: float = 3.0,
    margin: float = 0.05,
    seed: int = 0,
    metadata: dict[str, Any] | None = None,
    progress: bool = False,
) -> CausalGraph:
    """The smallest set of hidden units that keeps ``faithfulness`` of the normalised target logit.

    Samples are the first ``n_samples`` inputs the model classifies as
    ``target`` (and that are labelled ``target`` when ``labels`` is given), as in
    :func:`~explainnn.causal.discover`. Mean ablation uses the mean activation
    over ``reference`` (default: the first 1,000 ``inputs``, all classes).
    ``layers`` restricts the circuit to some hidden layers (default: every
    hidden layer of ``find_layers``, embeddings excluded). ``steps``, ``lr``,
    ``sparsity`` (weight of the L0 penalty) and ``margin`` (added to
    ``faithfulness`` in the training hinge) set the mask learning. Returns a
    :class:`CausalGraph` whose hidden units are the circuit, each with its
    learned ``score`` and ``drop`` (exact normalised faithfulness lost when it
    alone is removed); ``graph.results["circuit_search"]`` holds the sizes, the
    exact faithfulness and the exact necessity on the circuit samples. Of
    equally small circuits that keep the level, the search prefers the one
    whose ablation costs most (module docstring, step 3). The model is left
    exactly as it was.
    """
    inputs = check_inputs(model, inputs, labels=labels, target=target, what="circuit")
    search = find_circuit(model, inputs, target, labels=labels, faithfulness=faithfulness, layers=layers,
                          n_samples=n_samples, reference=reference, steps=steps, lr=lr, sparsity=sparsity,
                          margin=margin, seed=seed, progress=progress)
    options = {"faithfulness": faithfulness, "layers": list(layers) if layers else None, "n_samples": n_samples,
               "steps": steps, "lr": lr, "sparsity": sparsity, "margin": margin, "ablation": "mean",
               "method": "learned hard-concrete masks + exact 1-minimal pruning + necessity exchanges"}
    return circuit_graph(model, search, inputs[:1], options=options, seed=seed, metadata=metadata)


def find_circuit(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int,
    *,
    labels: torch.Tensor | None = None,
    faithfulness: float = 0.8,
    layers: Sequence[str] | None = None,
    n_samples: int = 100,
    reference: torch.Tensor | None = None,
    steps: int = 200,
    lr: float = 0.1,
    sparsity: float = 3.0,
    margin: float = 0.05,
    seed: int = 0,
    progress: bool = False,
) -> CircuitSearch:
    """The search behind :func:`circuit` (same arguments), returned with its ranking and pruning trace."""
    inputs = check_inputs(model, inputs, labels=labels, target=target, what="find_circuit")
    if reference is not None:
        reference = check_inputs(model, reference, what="find_circuit", name="reference")
    _check_options(faithfulness, steps, n_samples, lr, sparsity, margin)
    device = _device(model)
    index = indices_classified_as(model, inputs, target, n_samples, labels=labels)
    samples = inputs[index].to(device)
    reference = (inputs[:N_REFERENCE] if reference is None else torch.as_tensor(reference)).to(device)
    units = HiddenUnits.of(model, samples[:1], layers)
    objective = Faithfulness.of(model, units, samples, target, reference)
    scores = learn_scores(model, units, samples, target, reference, faithfulness=faithfulness, steps=steps,
                          lr=lr, sparsity=sparsity, margin=margin, seed=seed, progress=progress)
    ranking = np.argsort(-scores, kind="stable")
    threshold = min(1.0, faithfulness + EXACT_MARGIN)
    prefix = _shortest_prefix(ranking, threshold, objective)
    start = np.zeros(units.total, dtype=bool)
    start[ranking[: min(units.total, int(np.ceil(prefix * (1 + HEADROOM))))]] = True
    pruning = prune_and_exchange(start, ranking, threshold, objective, joint=objective.with_necessity,
                                 layer_of=units.layer_of())
    drop = {u: pruning.value - v for u, v in pruning.without.items()}
    return CircuitSearch(units, int(target), index.numpy(), scores, pruning.mask, pruning.value, objective.full,
                         objective.empty, prefix, pruning.removed, pruning.trace, drop, pruning.necessity,
                         pruning.necessity_swaps)


def _check_options(faithfulness: float, steps: int, n_samples: int, lr: float, sparsity: float,
                   margin: float) -> None:
    if not 0.0 < faithfulness <= 1.0:
        raise ConfigError(f"faithfulness must be in (0, 1]; got {faithfulness}")
    for key, value in (("steps", steps), ("n_samples", n_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "steps" else 2):
            raise ConfigError(f"{key} must be an integer >= {0 if key == 'steps' else 2}; got {value!r}")
    if lr <= 0 or sparsity < 0 or margin < 0:
        raise ConfigError(f"lr must be > 0, sparsity and margin >= 0; got lr={lr}, sparsity={sparsity}, margin={margin}")


@dataclass
class Faithfulness:
    """Exact normalised faithfulness of unit masks on fixed samples: ``(F(mask) - F(empty)) / (F(full) - F(empty))``."""

    units: HiddenUnits
    runner: InterventionRunner
    samples: torch.Tensor
    target: int
    full: float
    empty: float

    @classmethod
    def of(cls, model: nn.Module, units: HiddenUnits, samples: torch.Tensor, target: int,
           reference: torch.Tensor) -> "Faithfulness":
        """Measure ``F(full)`` and ``F(empty)``; an error when ablating every unit does not lower the logit."""
        runner = InterventionRunner(model, reference=reference)
        empty = float(target_logits(runner, samples, target, [units.keep(np.zeros(units.total, bool))]).mean())
        full = _clean_logit(model, samples, target)
        if full - empty <= 0:
            raise UserError(f"ablating every analysed unit does not lower the logit of class {target} "
                            f"({full:.4g} -> {empty:.4g}); there is no circuit to find")
        return cls(units, runner, samples, int(target), full, empty)

    def __call__(self, masks: Sequence[np.ndarray]) -> np.ndarray:
        """``(len(masks),)`` normalised faithfulness, one batched runner call."""
        rows = [self.units.keep(m) for m in masks]
        return normalise(target_logits(self.runner, self.samples, self.target, rows).mean(1), self.full, self.empty)

    def with_necessity(self, masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised sufficiency (only the mask kept) and necessity ``(F(full) - F(mask ablated)) / (F(full) -
        F(empty))`` of each mask, both from one batched runner call.

        Necessity is the one the check tests, *where the mask chooses*: layers the
        mask holds all of, or all but one of (:meth:`HiddenUnits.saturated`), are
        left intact in its ablation (ablating them would remove the input for
        every set with the same per-layer sizes alike).
        """
        layer_of = self.units.layer_of()
        rows = [row for m in masks
                for row in (self.units.keep(m), self.units.ablate(m & ~self.units.saturated(m)[layer_of]))]
        logits = target_logits(self.runner, self.samples, self.target, rows).mean(1).reshape(-1, 2)
        return normalise(logits[:, 0], self.full, self.empty), 1.0 - normalise(logits[:, 1], self.full, self.empty)


@dataclass
class Pruning:
    """The result of :func:`prune_and_exchange`: the mask, its exact faithfulness, the removals and the values
    after each, and ``without[u]``: the faithfulness with member ``u`` removed; with a necessity measure, the
    mask's exact necessity and the number of necessity exchanges made."""

    mask: np.ndarray
    value: float
    removed: list[int] = field(default_factory=list)
    trace: list[float] = field(default_factory=list)
    without: dict[int, float] = field(default_factory=dict)
    necessity: float = float("nan")
    necessity_swaps: int = 0


Joint = Callable[[Sequence[np.ndarray]], tuple[np.ndarray, np.ndarray]]


def prune_and_exchange(mask: np.ndarray, ranking: np.ndarray, faithfulness: float,
                       objective: Callable[[Sequence[np.ndarray]], np.ndarray], *, joint: Joint | None = None,
                       layer_of: np.ndarray | None = None) -> Pruning:
    """Exact 1-minimal pruning from ``mask``, alternating with exchanges (see the module docstring).

    Each round removes the unit whose removal costs least while the circuit stays
    at or above ``faithfulness``; when no removal is allowed, the best exchange of
    one of the ``SWAP_MEMBERS`` cheapest-to-remove members for one of the
    ``SWAP_CANDIDATES`` best-ranked outside units is made if it raises the
    faithfulness, and pruning resumes (at most ``MAX_SWAPS`` exchanges).

    With ``joint`` (masks -> their sufficiency and necessity, one call) and
    ``layer_of`` (each unit's layer), necessity exchanges follow
    (:func:`raise_necessity`): the size stays the smallest found, the level is
    kept, and the necessity rises.
    """
    state = Pruning(mask.copy(), float(objective([mask])[0]))
    for swaps in range(MAX_SWAPS + 1):
        state.without = _prune(state, faithfulness, objective)
        swapped = _best_swap(state, ranking, objective) if swaps < MAX_SWAPS else None
        if swapped is None:
            break
        state.mask, state.value = swapped
    if joint is not None:
        if layer_of is None:
            raise ValueError("necessity exchanges need layer_of")
        raise_necessity(state, faithfulness, objective, joint, layer_of)
    return state


def raise_necessity(state: Pruning, faithfulness: float, objective: Callable[[Sequence[np.ndarray]], np.ndarray],
                    joint: Joint, layer_of: np.ndarray) -> Pruning:
    """Exchange circuit units for outside units of the same layer while that raises the necessity (in place).

    Necessity is judged against random unit sets with the same number of units
    per layer (:func:`~explainnn.causal.circuit_faithfulness`), so exchanges stay
    within a layer: the circuit's per-layer sizes, and with them that null
    distribution, are unchanged, and a higher necessity is a better rank among
    it. Every single removal and addition is measured in one batched call
    (:func:`_screen`); each round then checks exactly the ``NECESSITY_PAIRS``
    exchanges not tried yet whose estimate (the two single changes added)
    raises necessity most, and makes the best one that keeps the sufficiency at
    or above its value before the exchanges (and ``faithfulness``): choosing
    among many exchanges the ones that just reach the level would exploit the
    noise of the circuit samples, and the circuit would lose sufficiency on new
    samples. Pruning resumes after each exchange (a removal
    beats any exchange), so the result stays 1-minimal. The estimates are
    measured again only when a round finds nothing after an exchange (at most
    ``MAX_SCREENS`` times); it stops when a round on fresh estimates finds
    nothing, or after ``MAX_NECESSITY_SWAPS`` exchanges.
    """
    state.necessity = float(joint([state.mask])[1][0])
    floor = max(faithfulness, state.value)
    screen, fresh, screens = None, False, 0
    while state.necessity_swaps < MAX_NECESSITY_SWAPS:
        if screen is None:
            if screens == MAX_SCREENS:
                break
            screen, fresh, screens = _screen(state, joint, layer_of), True, screens + 1
        members, outside, est_s, est_n, candidate = screen
        candidate &= state.mask[members][:, None] & ~state.mask[outside][None, :]
        pairs = _promising(candidate & (est_n > state.necessity), est_s, est_n, floor)
        candidate.ravel()[pairs] = False
        trials = [_with(_without(state.mask, int(members[i])), int(outside[j]))
                  for i, j in zip(*np.unravel_index(pairs, candidate.shape))]
        values, necessities = joint(trials) if trials else (np.zeros(0), np.zeros(0))
        gain = np.where(values >= floor, necessities, -np.inf)
        if not len(gain) or gain.max() <= state.necessity + 1e-9:
            if fresh:
                break
            screen = None  # the estimates predate the last exchange: measure again
            continue
        pick = int(np.argmax(gain))
        state.mask, state.value, state.necessity = trials[pick], float(values[pick]), float(necessities[pick])
        state.necessity_swaps += 1
        fresh = False
        size = int(state.mask.sum())
        state.without = _prune(state, faithfulness, objective)
        if state.mask.sum() < size:
            state.necessity = float(joint([state.mask])[1][0])
    return state


def _screen(state: Pruning, joint: Joint, layer_of: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every single removal from and addition to the circuit (within its layers), measured in one call.

    Returns the members, the outside units, the estimated sufficiency and
    necessity of each exchange (``S(C - u) + S(C + v) - S(C)``, likewise for
    necessity) and the ``(members, outside)`` mask of same-layer exchanges. A
    single removal can change which layers are saturated (5 of 6 units become
    4 of 6), so estimates that involve a saturated layer are rough; the exact
    check of each exchange (per-layer sizes unchanged) decides.
    """
    members = np.flatnonzero(state.mask)
    outside = np.flatnonzero(~state.mask & np.isin(layer_of, layer_of[members]))
    sufficiency, necessity = joint([_without(state.mask, u) for u in members]
                                   + [_with(state.mask, v) for v in outside])
    k = len(members)
    est_s = sufficiency[:k, None] + sufficiency[None, k:] - state.value
    est_n = necessity[:k, None] + necessity[None, k:] - state.necessity
    return members, outside, est_s, est_n, layer_of[members][:, None] == layer_of[outside][None, :]


def _promising(allowed: np.ndarray, est_s: np.ndarray, est_n: np.ndarray, faithfulness: float) -> np.ndarray:
    """Flat indices of the ``NECESSITY_PAIRS`` allowed exchanges to check, best estimated necessity first.

    Half go to the exchanges estimated to keep the level, the rest to the best
    estimates of all: for redundant units (one can replace the other) the
    additive estimate of the sufficiency is far too low.
    """
    order = np.argsort(-est_n.ravel(), kind="stable")
    ranked = order[allowed.ravel()[order]]
    feasible = ranked[est_s.ravel()[ranked] >= faithfulness][: NECESSITY_PAIRS // 2]
    return np.concatenate([feasible, ranked[~np.isin(ranked, feasible)][: NECESSITY_PAIRS - len(feasible)]])


def _prune(state: Pruning, faithfulness: float, objective) -> dict[int, float]:
    """Remove units while faithful; returns the faithfulness without each member of the final mask.

    Each round measures every single removal; the ``PRUNE_CHUNK`` share of the
    members whose removal costs least go together when that stays faithful (one
    exact check; fewer are tried, down to one, when it does not).
    """
    while True:
        members = np.flatnonzero(state.mask)
        if not len(members):
            return {}
        values = objective([_without(state.mask, u) for u in members])
        order = np.argsort(-values, kind="stable")
        if values[order[0]] < faithfulness:
            return {int(u): float(v) for u, v in zip(members, values)}
        allowed = int((values >= faithfulness).sum())
        for count in range(min(allowed, max(1, int(np.ceil(PRUNE_CHUNK * len(members))))), 0, -1):
            trial = state.mask.copy()
            trial[members[order[:count]]] = False
            value = float(values[order[0]]) if count == 1 else float(objective([trial])[0])
            if value >= faithfulness:
                break
        state.mask, state.value = trial, value
        state.removed.extend(int(u) for u in members[order[:count]])
        state.trace.extend([value] * count)


def _without(mask: np.ndarray, unit: int) -> np.ndarray:
    out = mask.copy()
    out[unit] = False
    return out


def _with(mask: np.ndarray, unit: int) -> np.ndarray:
    out = mask.copy()
    out[unit] = True
    return out


def _best_swap(state: Pruning, ranking: np.ndarray, objective) -> tuple[np.ndarray, float] | None:
    """The exchange of a cheap-to-remove member for a best-ranked outside unit that most raises faithfulness."""
    members = sorted(state.without, key=lambda u: (-state.without[u], u))[:SWAP_MEMBERS]
    outside = [int(u) for u in ranking if not state.mask[u]][:SWAP_CANDIDATES]
    if not members or not outside:
        return None
    trials = []
    for u in members:
        for v in outside:
            trial = _without(state.mask, u)
            trial[v] = True
            trials.append(trial)
    values = objective(trials)
    best = int(np.argmax(values))
    return (trials[best], float(values[best])) if values[best] > state.value + 1e-9 else None


def _clean_logit(model: nn.Module, samples: torch.Tensor, target: int) -> float:
    with ModelPatch() as patch, torch.inference_mode():
        patch.eval_mode(model)
        return float(model(samples)[:, target].double().mean())


def _shortest_prefix(ranking: np.ndarray, faithfulness: float, faithful) -> int:
    """Smallest ``k`` whose top-``k`` prefix is faithful: a grid of sizes, then every size below the first hit."""
    total = len(ranking)

    def masks(sizes):
        out = []
        for k in sizes:
            m = np.zeros(total, dtype=bool)
            m[ranking[:k]] = True
            out.append(m)
        return out

    grid = np.unique(np.linspace(1, total, min(total, PREFIX_GRID)).round().astype(int))
    values = faithful(masks(grid))
    hits = np.flatnonzero(values >= faithfulness)
    if not len(hits):
        return total
    first = int(hits[0])
    low = int(grid[first - 1]) + 1 if first > 0 else 1
    between = list(range(low, int(grid[first])))
    if between:
        inner = faithful(masks(between))
        passing = np.flatnonzero(inner >= faithfulness)
        if len(passing):
            return between[int(passing[0])]
    return int(grid[first])


def learn_scores(
    model: nn.Module,
    units: HiddenUnits,
    samples: torch.Tensor,
    target: int,
    reference: torch.Tensor,
    *,
    faithfulness: float = 0.8,
    steps: int = 200,
    lr: float = 0.1,
    sparsity: float = 3.0,
    margin: float = 0.05,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Learned hard-concrete gate log-odds, one per unit (higher = more needed).

    Loss: ``relu(faithfulness + margin - f(z)) + sparsity * E[open gates] / units``,
    ``f`` the normalised target logit of the gated model (one gate sample per
    step, shared by the samples). Units of layers a hook cannot gate (inner
    layers of a stacked RNN) get ``+inf``: the exact pruning decides about them.
    """
    gates = UnitGates(model, units, reference)
    generator = torch.Generator().manual_seed(seed)
    log_alpha = torch.full((units.total,), 3.0, dtype=torch.float32, requires_grad=True)
    adam = Adam(log_alpha, lr)
    shift = TEMPERATURE * float(np.log(-GAMMA / ZETA))
    with ModelPatch() as patch:
        patch.eval_mode(model)
        gates.install(patch)
        with torch.no_grad():
            gates.z = torch.ones(units.total)
            full = float(model(samples)[:, target].mean())
            gates.z = torch.zeros(units.total)
            empty = float(model(samples)[:, target].mean())
        span = full - empty if full != empty else 1.0
        for _ in tqdm(range(steps), desc="circuit masks", unit="step", leave=False, disable=not progress):
            u = torch.rand(units.total, generator=generator).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / TEMPERATURE)
            gates.z = (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0).to(samples.device)
            f = (model(samples)[:, target].mean() - empty) / span
            expected_open = torch.sigmoid(log_alpha - shift).sum()
            loss = torch.relu(faithfulness + margin - f) + sparsity * expected_open / units.total
            (grad,) = torch.autograd.grad(loss, [log_alpha])
            adam.step(grad)
    scores = log_alpha.detach().double().numpy().copy()
    scores[~gates.gated] = np.inf
    return scores


class UnitGates:
    """Forward hooks blending each gated layer's output with its mean over ``reference``: ``mean + z (a - mean)``.

    ``z`` (one gate per unit, set before each forward) may require gradients: at
    ``z = 1`` the gradient of a logit is the attribution-patching estimate of
    each unit's mean-ablation effect. ``gated`` marks the units a hook can reach
    (all but the inner layers of a stacked RNN).
    """

    def __init__(self, model: nn.Module, units: HiddenUnits, reference: torch.Tensor) -> None:
        self.units = units
        self.z = torch.ones(units.total)
        self.magnitude: dict[str, np.ndarray] = {}
        self.gated = np.zeros(units.total, dtype=bool)
        self.hooked: list[tuple[LayerInfo, int]] = []
        for info, start in zip(units.layers, units.offsets):
            if info.is_output:
                self.hooked.append((info, start))
                self.gated[start : start + info.n_units] = True
        self.means = self._means(model, reference)

    def _means(self, model: nn.Module, reference: torch.Tensor) -> dict[str, torch.Tensor]:
        seen: dict[str, torch.Tensor] = {}
        with ModelPatch() as patch, torch.inference_mode():
            patch.eval_mode(model)
            for info, _ in self.hooked:
                patch.forward_hook(info.module, self._recorder(info, seen))
            model(reference.to(_device(model)))
        return {name: value.clone() for name, value in seen.items()}

    @staticmethod
    def _recorder(info: LayerInfo, seen: dict):
        def hook(module, args, output):
            sequence, axis = _sequence(info, output)
            seen[info.name] = sequence.detach().mean(dim=axis, keepdim=True)

        return hook

    def install(self, patch: ModelPatch, record: bool = False) -> None:
        """Hook every gated layer; ``record`` also keeps each unit's mean absolute activation in ``magnitude``."""
        for info, start in self.hooked:
            patch.forward_hook(info.module, self._gate(info, start, record))

    def _gate(self, info: LayerInfo, start: int, record: bool):
        def hook(module, args, output):
            sequence, _ = _sequence(info, output)
            z = self.z[start : start + info.n_units].to(sequence.device, sequence.dtype)
            axis = _unit_axis(info, module)
            if record:
                other = [d for d in range(sequence.dim()) if d != axis]
                self.magnitude[info.name] = sequence.detach().abs().mean(dim=other).double().cpu().numpy()
            shape = [1] * sequence.dim()
            shape[axis] = info.n_units
            mean = self.means[info.name]
            blended = mean + z.view(shape) * (sequence - mean)
            return info.unit_kind.replace_output(info, output, blended)

        return hook


def _sequence(info: LayerInfo, output: Any) -> tuple[torch.Tensor, int]:
    """The gated tensor of a layer's output, and its batch axis."""
    return info.unit_kind.output_tensor(info, output)


def _unit_axis(info: LayerInfo, module: nn.Module) -> int:
    return info.unit_axis


def circuit_graph(model: nn.Module, search: CircuitSearch, example: torch.Tensor, *, options: dict[str, Any],
                  seed: int = 0, metadata: dict[str, Any] | None = None) -> CausalGraph:
    """The circuit of ``search`` as a :class:`CausalGraph` (hidden units, their layers' wiring, the output)."""
    all_layers = find_layers(model, example.to(_device(model)))
    output = all_layers[-1]
    names = search.units.names
    meta = {
        "model": type(model).__name__,
        "kind": "circuit",
        "target": search.target,
        "samples": search.samples.tolist(),
        "n_samples": int(len(search.samples)),
        "options": options,
        "seed": seed,
        "layers": names + [output.name],
        **(metadata or {}),
    }
    graph = CausalGraph(meta)
    out = graph.add_unit(output.name, search.target, kind="output", depth=len(names) + 1)
    chosen = search.units.split(search.mask)
    added: dict[str, list[str]] = {}
    for depth, (info, start) in enumerate(zip(search.units.layers, search.units.offsets), start=1):
        added[info.name] = [
            graph.add_unit(info.name, i, kind="hidden", depth=depth, score=float(search.scores[start + i]),
                           drop=search.drop.get(start + i, float("nan")))
            for i in chosen[info.name]
        ]
    by_name = {info.name: info for info in all_layers}
    for info in search.units.layers:
        children = [other for other in search.units.layers if other.parent == info.name]
        targets = [u for child in children for u in added[child.name]]
        if by_name[output.name].parent == info.name or not children and info is search.units.layers[-1]:
            targets.append(out)
        for cause in added[info.name]:
            for effect in targets:
                graph.add_edge(cause, effect)
    graph.add_result("circuit_search", {
        "faithfulness": search.faithfulness,
        "target_faithfulness": options.get("faithfulness"),
        "size": search.size,
        "total_units": search.units.total,
        "fraction": search.size / search.units.total,
        "per_layer": {name: len(chosen[name]) for name in names},
        "layer_size": dict(zip(names, search.units.sizes)),
        "prefix": search.prefix,
        "full_logit": search.full,
        "empty_logit": search.empty,
        "pruned": [search.units.label(u) for u in search.removed],
        "necessity": search.necessity,
        "necessity_exchanges": search.necessity_swaps,
    })
    return graph


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
