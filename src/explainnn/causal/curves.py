"""Faithfulness curves: how much of the logit circuits of every size keep, and how much they carry.

For a nested family of unit sets (``top-k`` of an ordering of the hidden units),
at each size ``k`` two exact, normalised numbers are measured on evaluation
samples:

* **sufficiency** ``(F(C) - F(empty)) / (F(full) - F(empty))``: everything but
  ``C`` mean-ablated (1 = the whole model's logit);
* **necessity** ``(F(full) - F(without C)) / (F(full) - F(empty))``: only ``C``
  mean-ablated (1 = as much lost as when every unit is ablated).

The orderings compared: explainnn's circuits (:func:`circuit_order`: the
circuit's units by how late exact pruning would remove them, then the other
units in the order exact forward selection adds them), and the usual
rankings - single-unit interventional effect (mean-ablate one unit, rank by
the absolute change of the logit), activation magnitude (mean absolute
activation), gradient x activation (attribution patching: the first-order
estimate ``grad . (a - mean)`` of each unit's ablation effect, ranked by absolute
value; Nanda 2023, Syed et al. 2023) - and random orderings (mean curve). The
area under each curve over the fraction of units (0 to 1) summarises it, as
MIB's CPR (area under sufficiency, higher is better) and CMD (area under
``|1 - sufficiency|``, lower is better) do (Mueller et al. 2025).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from explainnn.causal.circuit_check import CircuitCheck, VersusRandom
from explainnn.causal.minimal_circuit import CircuitSearch, Faithfulness, UnitGates, _device
from explainnn.causal.units import HiddenUnits, normalise, target_logits
from explainnn.errors import UserError
from explainnn.files import atomic_path, save_figure
from explainnn.interventions import InterventionRunner
from explainnn.interventions.hooks import ModelPatch

BASELINES = ("single_unit_effect", "activation_magnitude", "attribution_patching")
OURS = "explainnn_circuit"
RANDOM = "random"
SHRINK, GROWTH = 0.1, 0.25
"""Below the circuit's size each round of exact pruning removes this share of the circuit; above it each round of
exact forward selection adds this share of the remaining units."""


def circuit_order(model: nn.Module, search: CircuitSearch, samples: torch.Tensor,
                  reference: torch.Tensor) -> np.ndarray:
    """explainnn's nested circuits as one ordering of all units: top-``k`` is the circuit of size ``k``.

    Below the circuit's size, exact pruning continues (on ``samples``, the
    circuit's own samples) down to nothing, a tenth of the units per round
    (:data:`SHRINK`); above it, exact forward selection grows the circuit in
    rounds, each adding the quarter of the remaining units whose addition raises
    the faithfulness most (:data:`GROWTH`).
    """
    reference = reference.to(_device(model))
    objective = Faithfulness.of(model, search.units, samples.to(reference.device), search.target, reference)
    smaller = _shrink(search.mask, objective)
    return np.asarray(smaller[::-1] + _grow(search.mask, objective), dtype=int)


def _shrink(mask: np.ndarray, objective: Faithfulness) -> list[int]:
    """The units of ``mask`` in the order exact pruning removes them (least needed first).

    Each round measures every single removal and removes the ``SHRINK`` share of
    the members whose removal costs least (at least one).
    """
    mask = mask.copy()
    removal: list[int] = []
    while mask.any():
        members = np.flatnonzero(mask)
        values = objective([mask & (np.arange(len(mask)) != u) for u in members])
        chosen = members[np.argsort(-values, kind="stable")[: max(1, int(np.ceil(SHRINK * len(members))))]]
        mask[chosen] = False
        removal.extend(int(u) for u in chosen)
    return removal


def _grow(mask: np.ndarray, objective: Faithfulness) -> list[int]:
    """The units outside ``mask`` in the order exact forward selection adds them (most helpful first)."""
    mask = mask.copy()
    added: list[int] = []
    while not mask.all():
        outside = np.flatnonzero(~mask)
        trials = []
        for unit in outside:
            trial = mask.copy()
            trial[unit] = True
            trials.append(trial)
        gains = objective(trials)
        chosen = outside[np.argsort(-gains, kind="stable")[: max(1, int(np.ceil(GROWTH * len(outside))))]]
        mask[chosen] = True
        added.extend(int(u) for u in chosen)
    return added


def baseline_orders(model: nn.Module, units: HiddenUnits, samples: torch.Tensor, target: int,
                    reference: torch.Tensor) -> dict[str, np.ndarray]:
    """The baseline rankings of the units on ``samples`` (highest first): see the module docstring."""
    reference = reference.to(_device(model))
    samples = samples.to(reference.device)
    runner = InterventionRunner(model, reference=reference)
    single = [np.eye(units.total, dtype=bool)[u] for u in range(units.total)]
    ablated = target_logits(runner, samples, target, [units.ablate(m) for m in single]).mean(1)
    clean = runner.run(samples, [], target).clean_target_logit.double().mean().item()
    effect = np.abs(clean - ablated)
    gates = UnitGates(model, units, reference)
    magnitude = np.zeros(units.total)
    patching = np.zeros(units.total)
    with ModelPatch() as patch:
        patch.eval_mode(model)
        gates.install(patch, record=True)
        gates.z = torch.ones(units.total, requires_grad=True)
        logit = model(samples)[:, target].sum() / len(samples)
        (grad,) = torch.autograd.grad(logit, [gates.z])
    for info, start in gates.hooked:
        magnitude[start : start + info.n_units] = gates.magnitude[info.name]
    patching[gates.gated] = np.abs(grad.double().numpy()[gates.gated])
    return {
        "single_unit_effect": _order(effect),
        "activation_magnitude": _order(magnitude),
        "attribution_patching": _order(patching),
    }


def _order(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


@dataclass(frozen=True)
class FaithfulnessCurves:
    """Normalised sufficiency and necessity ``(S,)`` per method at ``sizes`` (numbers of units)."""

    sizes: np.ndarray
    total: int
    sufficiency: dict[str, np.ndarray]
    necessity: dict[str, np.ndarray]
    n_eval: int
    n_random: int
    circuit_size: int | None = None

    @property
    def fractions(self) -> np.ndarray:
        return self.sizes / self.total

    def methods(self) -> list[str]:
        return list(self.sufficiency)

    def areas(self) -> dict[str, dict[str, float]]:
        """Per method: area under sufficiency (CPR-like), under necessity, and under ``|1 - sufficiency|`` (CMD)."""
        x = self.fractions
        return {
            method: {
                "sufficiency_area": float(np.trapezoid(self.sufficiency[method], x)),
                "necessity_area": float(np.trapezoid(self.necessity[method], x)),
                "cmd": float(np.trapezoid(np.abs(1.0 - self.sufficiency[method]), x)),
            }
            for method in self.methods()
        }

    def dominates(self, method: str = OURS, which: str = "sufficiency", tolerance: float = 0.0) -> bool:
        """Whether ``method``'s curve is at or above every other method's at every size."""
        curves = getattr(self, which)
        return all(bool(np.all(curves[method] >= curves[other] - tolerance)) for other in curves if other != method)

    def summary(self) -> dict:
        """JSON-ready: sizes, curves and areas."""
        return {
            "sizes": [int(k) for k in self.sizes],
            "total_units": self.total,
            "n_eval": self.n_eval,
            "n_random": self.n_random,
            "circuit_size": self.circuit_size,
            "sufficiency": {m: [float(v) for v in c] for m, c in self.sufficiency.items()},
            "necessity": {m: [float(v) for v in c] for m, c in self.necessity.items()},
            "areas": self.areas(),
        }

    def to_csv(self, path: str | Path) -> Path:
        """One row per method and size: method, units, fraction, sufficiency, necessity."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["method", "units", "fraction", "sufficiency", "necessity"])
            for method in self.methods():
                for s, k in enumerate(self.sizes):
                    writer.writerow([method, int(k), f"{k / self.total:.6g}", f"{self.sufficiency[method][s]:.6g}",
                                     f"{self.necessity[method][s]:.6g}"])
        return path

    def areas_to_csv(self, path: str | Path) -> Path:
        """One row per method: the three areas."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["method", "sufficiency_area", "necessity_area", "cmd"])
            for method, areas in self.areas().items():
                writer.writerow([method, *(f"{areas[k]:.6g}" for k in ("sufficiency_area", "necessity_area", "cmd"))])
        return path


def faithfulness_curves(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int,
    orders: dict[str, np.ndarray],
    *,
    units: HiddenUnits,
    reference: torch.Tensor,
    sizes: Sequence[int] | None = None,
    points: int = 41,
    n_random: int = 20,
    seed: int = 0,
    circuit_size: int | None = None,
) -> FaithfulnessCurves:
    """Exact sufficiency and necessity of the top-``k`` units of each ordering, on ``inputs`` (evaluation samples).

    ``orders`` maps a method name to an ordering of all ``units.total`` units;
    ``n_random`` random orderings are averaged into the ``random`` curve. ``sizes``
    defaults to ``points`` evenly spaced sizes from 0 to all units, plus ``circuit_size``.
    """
    total = units.total
    for name, order in orders.items():
        if sorted(np.asarray(order).tolist()) != list(range(total)):
            raise UserError(f"ordering {name!r} is not a permutation of the {total} units")
    if sizes is None:
        grid = np.linspace(0, total, max(2, points)).round().astype(int).tolist()
        sizes = grid + ([int(circuit_size)] if circuit_size is not None else [])
    steps = np.unique(np.asarray(sizes, dtype=int))
    if steps.min() < 0 or steps.max() > total:
        raise UserError(f"curve sizes must be in 0..{total}")
    rng = np.random.default_rng(seed)
    all_orders = dict(orders)
    randoms = [f"{RANDOM}_{r}" for r in range(n_random)]
    for name in randoms:
        all_orders[name] = rng.permutation(total)
    device = next(iter(model.parameters())).device
    inputs = torch.as_tensor(inputs).to(device)
    runner = InterventionRunner(model, reference=reference.to(device))
    rows = []
    for order in all_orders.values():
        for k in steps:
            mask = np.zeros(total, dtype=bool)
            mask[np.asarray(order)[:k]] = True
            rows.extend([units.keep(mask), units.ablate(mask)])
    logits = target_logits(runner, inputs, target, rows).mean(1).reshape(len(all_orders), len(steps), 2)
    full = float(runner.run(inputs, [], target).clean_target_logit.double().mean())
    empty = float(target_logits(runner, inputs, target, [units.keep(np.zeros(total, dtype=bool))]).mean())
    sufficiency = {name: normalise(logits[i, :, 0], full, empty) for i, name in enumerate(all_orders)}
    necessity = {name: 1.0 - normalise(logits[i, :, 1], full, empty) for i, name in enumerate(all_orders)}
    if randoms:
        sufficiency[RANDOM] = np.mean([sufficiency.pop(name) for name in randoms], axis=0)
        necessity[RANDOM] = np.mean([necessity.pop(name) for name in randoms], axis=0)
    return FaithfulnessCurves(steps, total, sufficiency, necessity, int(len(inputs)), n_random, circuit_size)


COLOURS = {OURS: "#d62728", "single_unit_effect": "#1f77b4", "activation_magnitude": "#2ca02c",
           "attribution_patching": "#9467bd", RANDOM: "#7f7f7f"}


def _curve_limits(curves: FaithfulnessCurves) -> tuple[float, float]:
    """y limits holding every curve with a margin, and at least [-0.1, 1.1] (curves may pass 1 or fall below 0)."""
    values = np.concatenate([np.asarray(v, dtype=float) for which in (curves.sufficiency, curves.necessity)
                             for v in which.values()] or [np.zeros(1)])
    values = values[np.isfinite(values)]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    margin = 0.05 * max(high - low, 1.0)
    return min(-0.1, low - margin), max(1.1, high + margin)


def plot_curves(curves: FaithfulnessCurves, path: str | Path | None = None, *, dpi: int = 120, title: str = ""):
    """Sufficiency and necessity against the fraction of units, one line per method, areas in the legend.

    Both panels share y limits that hold every curve (a circuit may keep more
    than the whole model's logit, or an ordering may fall below the empty
    model's), and the legend sits below the panels, never over a curve.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.6), dpi=dpi, layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    areas = curves.areas()
    low, high = _curve_limits(curves)
    for ax, which, key in ((axes[0], "sufficiency", "sufficiency_area"), (axes[1], "necessity", "necessity_area")):
        for method, values in getattr(curves, which).items():
            ax.plot(curves.fractions, values, label=f"{method} (area {areas[method][key]:.2f})",
                    color=COLOURS.get(method), linewidth=2.2 if method == OURS else 1.2,
                    linestyle="--" if method == RANDOM else "-")
        if curves.circuit_size is not None:
            ax.axvline(curves.circuit_size / curves.total, color=COLOURS[OURS], linewidth=0.8, linestyle=":",
                       label=f"size of the minimal circuit ({curves.circuit_size} units)")
        ax.set_xlabel("fraction of hidden units in the set")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(low, high)
        ax.axhline(0, color="black", linewidth=0.4)
        ax.axhline(1, color="black", linewidth=0.4, linestyle=(0, (1, 3)))
        doing = "kept alone" if which == "sufficiency" else "ablated"
        ax.set_title(f"{which.capitalize()}: the top units of each ordering {doing}", fontsize=9)
        ax.legend(title="ordering (area under the curve)", title_fontsize=7, fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, -0.17), ncol=2, frameon=False)
    axes[0].set_ylabel("normalised value (1 = whole model)")
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)


def plot_check(report: CircuitCheck, path: str | Path | None = None, *, subject: str = "causal graph",
               dpi: int = 120):
    """Bar chart of a unit set's sufficiency and necessity beside random sets of the same size.

    ``report`` is :func:`~explainnn.causal.circuit_faithfulness`'s; ``subject``
    names the set in the bar labels and titles: ``"causal graph"`` for
    discovery's graph, ``"minimal circuit"`` for the circuit step's. Bar labels
    are wrapped onto two lines so they never run into each other, and each
    bar's accuracy on the class is written above its error bar.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.8), dpi=dpi, layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    labels = ["clean\nmodel", subject.replace(" ", "\n", 1), f"random sets\n(n={report.n_random})"]
    parts: tuple[tuple[str, VersusRandom, str], ...] = (
        ("sufficiency", report.sufficiency, f"Sufficiency: only the {subject} kept"),
        ("necessity", report.necessity, f"Necessity: the {subject} ablated"))
    tops = []
    for ax, (key, part, title) in zip(axes, parts):
        values = [report.clean_logit, part.logit, part.random_logit_mean]
        spread = part.random_logit_std if np.isfinite(part.random_logit_std) else 0.0
        errors = [0.0, 0.0, spread]
        ax.bar(range(3), values, yerr=errors, color=["#999999", "#d62728", "#1f77b4"], capsize=4)
        ax.set_xticks(range(3), labels, fontsize=8)
        for position, (value, error, acc) in enumerate(zip(values, errors, [report.clean_accuracy, part.accuracy,
                                                                           part.random_accuracy_mean])):
            top = max(value, 0.0) + error
            tops.append(top)
            ax.annotate(f"acc {acc:.0%}", (position, top), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8)
        title += f"\np = {part.p_value_vs_random:.3f} vs random"
        chosen = report.necessity_where_chosen
        if key == "necessity" and chosen.layers_left_intact:
            title += (f"; with {', '.join(chosen.layers_left_intact)} left intact: "
                      f"p = {chosen.p_value_vs_random:.3f}")
        ax.set_title(title, fontsize=9)
        ax.axhline(0, color="black", linewidth=0.5)
    axes[0].set_ylabel("mean target logit")
    bottoms = [min(0.0, part.logit, part.random_logit_mean - (
        part.random_logit_std if np.isfinite(part.random_logit_std) else 0.0)) for _, part, _ in parts]
    low, high = min(bottoms), max(tops + [report.clean_logit])
    span = (high - low) or 1.0
    axes[0].set_ylim(low - 0.05 * span, high + 0.12 * span)
    return save_figure(figure, path)
