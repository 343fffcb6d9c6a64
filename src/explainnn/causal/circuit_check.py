"""Circuit faithfulness: is the learned graph sufficient and necessary for the prediction?

* **Sufficiency** keeps only the causal units: every other unit of the analysed
  layers is set to its mean activation over reference data (mean ablation keeps
  activations in their usual range, unlike zeroing). What remains of the clean
  target logit, and of the accuracy on the target class, says how much of the
  prediction the circuit carries on its own.
* **Necessity** ablates only the causal units and reports the drop.

Both numbers mean little alone, so the same measurements are made for random
unit sets of the same size in every layer (``n_random`` draws), and the
empirical p-value says how often a random set does at least as well. The
*normalised* sufficiency ``(F(circuit) - F(empty)) / (F(full) - F(empty))``
puts the circuit between "every analysed unit ablated" (0) and "nothing
ablated" (1), the usual faithfulness score of circuit discovery.

**Necessity where the circuit chooses.** A layer in which the circuit holds
every unit, or all but one, offers no real choice: every set with the same
number of units per layer ablates (nearly) all of it, and when that layer is
early (LeNet's six conv1 channels) the ablation removes the input for every
set alike, so the necessity test only compares the output constants of dead
networks. The report therefore repeats the necessity test with those
*saturated* layers left intact, in the circuit's ablation and in every random
set's (``necessity_where_chosen``); with no saturated layer it equals the plain
test. The rule was adopted after the plain per-layer test came out at
p = 0.13-0.33 on LeNet; both are always reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from explainnn.causal.graph import CausalGraph
from explainnn.causal.units import HiddenUnits, normalise
from explainnn.errors import UserError
from explainnn.inputs import check_inputs
from explainnn.interventions import InterventionRunner

if TYPE_CHECKING:
    from explainnn.causal.curves import FaithfulnessCurves
    from explainnn.causal.minimal_circuit import CircuitSearch


@dataclass(frozen=True)
class VersusRandom:
    """One ablation of the unit set beside the same ablation of random sets of the same size.

    ``logit`` and ``accuracy`` are the mean target logit and the accuracy on the
    class with the ablation; ``logit_fraction`` is ``logit`` over the clean
    logit; the ``random_*`` fields are the same over the random sets;
    ``p_value_vs_random`` is the permutation p-value
    ``(1 + #random sets at least as good) / (1 + #random sets)``;
    ``normalized`` puts the logit between everything ablated (0) and nothing
    ablated (1), ``random_normalized_mean`` the random sets' mean of it.
    """

    logit: float
    logit_fraction: float
    accuracy: float
    random_logit_mean: float
    random_logit_std: float
    random_accuracy_mean: float
    p_value_vs_random: float


@dataclass(frozen=True)
class Sufficiency(VersusRandom):
    """Only the unit set kept (every other analysed unit mean-ablated)."""

    normalized: float
    random_normalized_mean: float


@dataclass(frozen=True)
class Necessity(VersusRandom):
    """The unit set ablated; ``logit_drop_fraction`` is ``1 - logit_fraction``, ``normalized`` ``1 -`` the
    normalised logit (1: the ablation removes everything the analysed layers carry)."""

    logit_drop_fraction: float
    normalized: float
    random_normalized_mean: float


@dataclass(frozen=True)
class NecessityWhereChosen:
    """The necessity test with the saturated layers (``layers_left_intact``: the unit set holds all or all but one
    of their units) left intact in every ablation; the plain test's numbers when there is no such layer."""

    layers_left_intact: list[str]
    normalized: float
    random_normalized_mean: float
    random_normalized_q99: float
    p_value_vs_random: float


@dataclass(frozen=True)
class CircuitCheck:
    """Sufficiency and necessity of a unit set against random sets (:func:`circuit_faithfulness`'s result).

    ``n_eval`` inputs were measured, against ``n_random`` random sets (``random_sets``: "same size per layer" or
    "same size"), units removed by ``ablation`` ("mean"); ``layers`` are the analysed layers, ``circuit_size`` and
    ``layer_size`` the set's and the layers' units per layer, ``units`` and ``total_units`` their sums. ``clean_*``
    are the model's mean target logit and accuracy on the class, ``empty_*`` those with every analysed unit ablated.
    :meth:`to_dict` is the JSON stored as ``graph.results["circuit"]``; :meth:`from_dict` reads it back.
    """

    n_eval: int
    n_random: int
    random_sets: str
    ablation: str
    layers: list[str]
    circuit_size: dict[str, int]
    layer_size: dict[str, int]
    units: int
    total_units: int
    clean_logit: float
    clean_accuracy: float
    empty_logit: float
    empty_accuracy: float
    sufficiency: Sufficiency
    necessity: Necessity
    necessity_where_chosen: NecessityWhereChosen

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-able nested dicts, fields in declaration order."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CircuitCheck:
        """The check from :meth:`to_dict`'s dicts (``graph.results["circuit"]`` of a saved graph)."""
        parts = {"sufficiency": Sufficiency, "necessity": Necessity, "necessity_where_chosen": NecessityWhereChosen}
        fields = {name: parts[name](**data[name]) if name in parts else data[name]
                  for name in (field.name for field in dataclasses.fields(cls))}
        return cls(**fields)


@dataclass(frozen=True)
class CircuitReport:
    """One class's minimal node circuit, as found and checked on held-out samples (the pipeline's
    ``ctx.circuits[k]``).

    ``graph`` is the circuit as a :class:`CausalGraph` (``graph.results`` keeps
    the same numbers as JSON), ``search`` how it was found
    (:func:`~explainnn.causal.find_circuit`), ``check`` its held-out sufficiency
    and necessity against random sets (:func:`circuit_faithfulness`) and
    ``curves`` its faithfulness curves beside the baseline orderings
    (:func:`~explainnn.causal.faithfulness_curves`), when measured.
    """

    graph: CausalGraph
    search: CircuitSearch
    check: CircuitCheck
    curves: FaithfulnessCurves | None = None

    @property
    def target(self) -> int:
        """The explained class."""
        return self.search.target

    @property
    def size(self) -> int:
        """Hidden units in the circuit."""
        return int(self.search.size)

    @property
    def held_out_sufficiency(self) -> float:
        """The normalised target logit kept by the circuit alone on the held-out samples."""
        return self.check.sufficiency.normalized


def circuit_faithfulness(
    model: nn.Module,
    inputs: torch.Tensor,
    graph: CausalGraph,
    *,
    labels: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    exclude: Sequence[int] | None = None,
    n_eval: int = 500,
    n_random: int = 200,
    per_layer: bool = True,
    seed: int = 0,
) -> CircuitCheck:
    """Sufficiency and necessity of ``graph`` against random unit sets; stored in ``graph.results["circuit"]``
    (:meth:`CircuitCheck.to_dict`).

    Evaluated on up to ``n_eval`` inputs of the target class (by ``labels`` when
    given, else by the model's prediction), leaving out the indices in
    ``exclude`` (e.g. the samples the graph was learned from, when ``inputs``
    are the same tensor). The analysed layers are the graph's
    (``metadata["layers"]`` but the output layer); every unit of them outside
    the graph is mean-ablated for sufficiency, every unit in it for necessity.
    ``reference`` defines the mean activations used for ablation (default: the
    evaluation inputs). ``n_random`` random sets with the same number of units
    per layer (``per_layer=False``: the same number of units anywhere in the
    analysed layers) give the p-values (at least 100 for p < 0.01 to be reachable).
    """
    if not isinstance(graph, CausalGraph):
        raise UserError(f"circuit_faithfulness(model, inputs, graph): graph must be a CausalGraph; got "
                        f"{type(graph).__name__}")
    target = int(graph.metadata["target"])
    inputs = check_inputs(model, inputs, labels=labels, target=target, what="circuit_faithfulness")
    if reference is not None:
        reference = check_inputs(model, reference, what="circuit_faithfulness", name="reference")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise UserError(f"n_random must be a positive integer; got {n_random!r}")
    device = next(iter(model.parameters())).device
    samples = _evaluation_samples(torch.as_tensor(inputs), target, labels, exclude, n_eval).to(device)
    units, causal = _graph_units(model, graph, samples[:1])
    rng = np.random.default_rng(seed)
    random_sets = _random_sets(units, causal, n_random, per_layer, rng)
    rows = [units.keep(causal), units.ablate(causal), units.keep(np.zeros(units.total, dtype=bool))]
    for mask in random_sets:
        rows.extend([units.keep(mask), units.ablate(mask)])
    saturated = units.saturated(causal)
    chosen = causal & ~saturated[units.layer_of()]
    if saturated.any():
        rows.append(units.ablate(chosen))
        rows.extend(units.ablate(mask) for mask in _chosen_sets(units, chosen, random_sets, saturated, per_layer, rng))
    result = InterventionRunner(model, reference=None if reference is None else reference.to(device)).run(
        samples, rows, target)
    report = _report(units, causal, result, target, n_random, per_layer, len(samples), saturated)
    graph.add_result("circuit", report.to_dict())
    return report


def _chosen_sets(units: HiddenUnits, chosen: np.ndarray, random_sets: list[np.ndarray], saturated: np.ndarray,
                 per_layer: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """The random sets of the necessity test with the saturated layers left intact.

    Per layer: the random sets themselves outside the saturated layers (each layer's draw is independent, so this
    is a draw with ``chosen``'s sizes). Anywhere: fresh sets of ``chosen``'s size among the unsaturated units.
    """
    free = ~saturated[units.layer_of()]
    if per_layer:
        return [mask & free for mask in random_sets]
    pool = np.flatnonzero(free)
    sets = []
    for _ in random_sets:
        mask = np.zeros(units.total, dtype=bool)
        mask[rng.choice(pool, size=int(chosen.sum()), replace=False)] = True
        sets.append(mask)
    return sets


def _report(units: Any, causal: np.ndarray, result: Any, target: int, n_random: int, per_layer: bool,
            n_eval: int, saturated: np.ndarray) -> CircuitCheck:
    """The check of one run: rows 0-2 are the graph kept, the graph ablated and everything ablated,
    then one (kept, ablated) pair per random set, then (with saturated layers) the graph and each random set
    ablated with those layers left intact."""
    logit = result.target_logit.double().mean(1).cpu().numpy()
    paired = 3 + 2 * n_random
    accuracy = (result.logits.argmax(-1) == target).double().mean(1).cpu().numpy()
    clean_logit = float(result.clean_target_logit.double().mean())
    chosen_units = units.split(causal)
    sufficiency, necessity = _against_random(logit[:paired], accuracy[:paired], clean_logit)
    return CircuitCheck(
        n_eval=int(n_eval),
        n_random=n_random,
        random_sets="same size per layer" if per_layer else "same size",
        ablation="mean",
        layers=list(units.names),
        circuit_size={name: len(chosen_units[name]) for name in units.names},
        layer_size=dict(zip(units.names, units.sizes)),
        units=int(causal.sum()),
        total_units=units.total,
        clean_logit=clean_logit,
        clean_accuracy=float((result.clean_logits.argmax(-1) == target).double().mean()),
        empty_logit=float(logit[2]),
        empty_accuracy=float(accuracy[2]),
        sufficiency=sufficiency,
        necessity=necessity,
        necessity_where_chosen=_where_chosen(units, saturated, logit, paired, clean_logit),
    )


def _where_chosen(units: Any, saturated: np.ndarray, logit: np.ndarray, paired: int,
                  clean_logit: float) -> NecessityWhereChosen:
    """Necessity with the saturated layers left intact (the plain test's numbers when there are none)."""
    intact = [name for name, flag in zip(units.names, saturated) if flag]
    if len(logit) == paired:  # nothing saturated (or nothing else): the plain test
        circuit, random = logit[1], logit[4:paired:2]
    else:
        circuit, random = logit[paired], logit[paired + 1 :]
    empty = logit[2]
    values = 1.0 - normalise(random, clean_logit, empty)
    return NecessityWhereChosen(
        layers_left_intact=intact,
        normalized=float(1.0 - normalise(circuit, clean_logit, empty)),
        random_normalized_mean=float(values.mean()),
        random_normalized_q99=float(np.quantile(values, 0.99)),
        p_value_vs_random=_p_value(random <= circuit + _tie(clean_logit, empty)),
    )


def _tie(clean_logit: float, empty: float) -> float:
    """Logits this close count as equal in the comparisons with random sets (ties count against the circuit).

    Two ablations that leave the same function (e.g. both cut every path) give
    logits equal up to float32 round-off, whose sign depends on the CPU's
    summation order; 1e-5 of the clean-to-empty span is far above round-off and
    far below any effect the tests report.
    """
    return 1e-5 * max(abs(clean_logit - empty), 1e-6)


def _p_value(at_least_as_good: np.ndarray) -> float:
    """The permutation p-value ``(1 + #random sets at least as good) / (1 + #random sets)``."""
    return float((1 + at_least_as_good.sum()) / (1 + len(at_least_as_good)))


def _evaluation_samples(inputs: torch.Tensor, target: int, labels: torch.Tensor | None,
                        exclude: Sequence[int] | None, n_eval: int) -> torch.Tensor:
    """Up to ``n_eval`` inputs of the target class (by label when given), the ``exclude`` indices left out."""
    if labels is not None:
        candidates = torch.nonzero(torch.as_tensor(labels) == target).flatten()
    else:
        candidates = torch.arange(len(inputs))
    if exclude is not None:
        skip = torch.as_tensor(list(exclude), dtype=torch.long)
        candidates = candidates[~torch.isin(candidates, skip)]
    chosen = candidates[:n_eval]
    if len(chosen) < 2:
        raise UserError(f"need at least 2 evaluation inputs of class {target}; got {len(chosen)}")
    return inputs[chosen]


def _graph_units(model: nn.Module, graph: CausalGraph, example: torch.Tensor) -> tuple[HiddenUnits, np.ndarray]:
    """The analysed hidden units (the graph's layers but the output) and the mask of the graph's causes."""
    hidden = HiddenUnits.of(model, example).names
    analysed = [name for name in graph.metadata.get("layers", graph.layers())[:-1] if name in hidden]
    if not analysed:
        raise UserError("the graph names none of the model's hidden layers; there is no circuit to check")
    units = HiddenUnits.of(model, example, analysed)
    causal = units.mask({name: graph.causes(name) for name in units.names if name in graph.layers()})
    if not causal.any():
        raise UserError("the graph has no hidden causal units; there is no circuit to check")
    return units, causal


def _random_sets(units: HiddenUnits, causal: np.ndarray, n_random: int, per_layer: bool,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """``n_random`` random masks with as many units as ``causal`` in every layer (or anywhere)."""
    layer_of = units.layer_of()
    random_sets = []
    for _ in range(n_random):
        mask = np.zeros(units.total, dtype=bool)
        if not per_layer:
            mask[rng.choice(units.total, size=int(causal.sum()), replace=False)] = True
        for layer, start in enumerate(units.offsets if per_layer else []):
            size = int(causal[layer_of == layer].sum())
            mask[start + rng.choice(units.sizes[layer], size=size, replace=False)] = True
        random_sets.append(mask)
    return random_sets


def _against_random(logit: np.ndarray, accuracy: np.ndarray, clean_logit: float) -> tuple[Sufficiency, Necessity]:
    """Sufficiency and necessity of row 0/1 (circuit kept / ablated) beside the random rows 3, 5, ... / 4, 6, ...

    Row 2 is everything ablated (the empty circuit).
    """
    empty = logit[2]

    def summary(values: np.ndarray, accs: np.ndarray, circuit_value: float, circuit_acc: float,
                better: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
        return {
            "logit": circuit_value,
            "logit_fraction": circuit_value / clean_logit if clean_logit else float("nan"),
            "accuracy": circuit_acc,
            "random_logit_mean": float(values.mean()),
            "random_logit_std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
            "random_accuracy_mean": float(accs.mean()),
            "p_value_vs_random": _p_value(better(values)),
        }

    random_keep, random_drop = logit[3::2], logit[4::2]
    tie = _tie(clean_logit, empty)
    kept = summary(random_keep, accuracy[3::2], float(logit[0]), float(accuracy[0]), lambda v: v >= logit[0] - tie)
    sufficiency = Sufficiency(**kept, normalized=float(normalise(logit[0], clean_logit, empty)),
                              random_normalized_mean=float(normalise(random_keep, clean_logit, empty).mean()))
    dropped = summary(random_drop, accuracy[4::2], float(logit[1]), float(accuracy[1]), lambda v: v <= logit[1] + tie)
    necessity = Necessity(
        **dropped, logit_drop_fraction=1.0 - dropped["logit_fraction"],
        normalized=float(1.0 - normalise(logit[1], clean_logit, empty)),
        random_normalized_mean=float((1.0 - normalise(random_drop, clean_logit, empty)).mean()))
    return sufficiency, necessity


def plot_circuit(report: CircuitCheck, path=None, *, subject: str = "causal graph", dpi: int = 120):
    """Bar chart of a unit set's sufficiency and necessity beside random sets of the same size.

    The same picture as :func:`explainnn.causal.curves.plot_check` (which the
    pipeline draws): ``subject`` names the set, ``"causal graph"`` or ``"minimal circuit"``.
    """
    from explainnn.causal.curves import plot_check

    return plot_check(report, path, subject=subject, dpi=dpi)
