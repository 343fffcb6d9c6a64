"""Stability of a learned graph under soft interventions and resampled inputs.

The research code asked whether the causes found with hard interventions
(weights set to 0) survive softer ones. For one layer, this re-runs the layer's
test for every ``beta`` of a grid, ``repeats`` times, each time with fresh draws
of ``u ~ U(beta, beta + delta)`` and (with ``bootstrap``) a resample of the
samples with replacement, and compares the kept units with the hard graph's
causes of that layer:

* the Jaccard similarity ``|A ∩ B| / |A ∪ B|`` per beta and repeat;
* each unit's appearance rate (share of repeats in which it is kept) per beta.

The soft rule is the graph's own (``soft_rule``, default ``scale``): weights (or
units) are multiplied by ``u``, so beta walks from a cut (0) towards no change
(1) and the Jaccard curve falls from 1 to 0 as the intervention fades; ``set``
replaces them by ``u`` (the research code's rule). :func:`seed_stability` repeats
the sweep on networks trained with other seeds, so that the shape of the curve
and the size of the graph are measured across training runs, not assumed (unit
indices of independently trained networks do not correspond, so units are not
compared across seeds).

Every intervention of the whole sweep runs in one batched runner call. Because
the samples are independent, a bootstrap resample of the samples is the same
resample of the columns of the ``(interventions, samples)`` result, so
resampling costs no extra forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from explainnn.causal.graph import CausalGraph
from explainnn.causal.stats import paired_fdr_test
from explainnn.errors import UserError
from explainnn.files import save_figure, write_csv
from explainnn.interventions import InterventionRunner, soft_edge, soft_node
from explainnn.torch_utils import model_device


@dataclass(frozen=True)
class StabilityResult:
    """Jaccard similarities ``(B, R)`` and appearance rates ``(B, units)`` of one layer."""

    layer: str
    betas: np.ndarray
    delta: float
    jaccard: np.ndarray
    n_kept: np.ndarray
    appearance: np.ndarray
    hard_causes: tuple[int, ...]
    bootstrap: bool
    soft_rule: str = "scale"

    def summary(self) -> dict:
        """Per-beta mean and standard deviation of the Jaccard similarity (JSON-ready)."""
        return {
            "layer": self.layer,
            "delta": self.delta,
            "soft_rule": self.soft_rule,
            "bootstrap": self.bootstrap,
            "repeats": int(self.jaccard.shape[1]),
            "hard_causes": list(self.hard_causes),
            "betas": [float(b) for b in self.betas],
            "jaccard_mean": [float(v) for v in self.jaccard.mean(1)],
            "jaccard_std": [float(v) for v in self.jaccard.std(1)],
            "n_kept_mean": [float(v) for v in self.n_kept.mean(1)],
            "n_kept_hard_mean": [float(v) for v in self.n_kept_hard.mean(1)],
        }

    @property
    def n_kept_hard(self) -> np.ndarray:
        """``(B, R)``: how many of each repeat's kept units are hard-graph causes.

        Recovered from the Jaccard similarity and the two set sizes: with
        ``J = I / (K + H - I)``, ``I = J (K + H) / (1 + J)``.
        """
        both = self.n_kept + len(self.hard_causes)
        return np.rint(self.jaccard * both / (1.0 + self.jaccard)).astype(int)

    def amplifies(self) -> np.ndarray:
        """Per beta, whether every draw ``u ~ U(beta, beta + delta)`` is >= 1 under the ``scale`` rule.

        Such an intervention strengthens the weights (units) instead of weakening
        them, so the one-sided test then keeps the units whose strengthening
        lowers the target logit: inhibitory ones, not the hard graph's causes.
        """
        return (self.betas >= 1.0) if self.soft_rule == "scale" else np.zeros(len(self.betas), dtype=bool)

    def to_csv(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``stability.csv`` (beta, repeat, jaccard, n_kept) and ``appearance.csv``."""
        folder = Path(folder)
        runs, rates = folder / "stability.csv", folder / "appearance.csv"
        write_csv(runs, [{"layer": self.layer, "beta": f"{beta:g}", "repeat": r, "jaccard": f"{self.jaccard[b, r]:.6g}",
                          "n_kept": int(self.n_kept[b, r])}
                         for b, beta in enumerate(self.betas) for r in range(self.jaccard.shape[1])],
                  ["layer", "beta", "repeat", "jaccard", "n_kept"])
        hard = set(self.hard_causes)
        write_csv(rates, [{"layer": self.layer, "beta": f"{beta:g}", "unit": unit,
                           "appearance_rate": f"{self.appearance[b, unit]:.6g}", "in_hard_graph": unit in hard}
                          for b, beta in enumerate(self.betas) for unit in range(self.appearance.shape[1])],
                  ["layer", "beta", "unit", "appearance_rate", "in_hard_graph"])
        return runs, rates


def stability(
    model: nn.Module,
    inputs: torch.Tensor,
    graph: CausalGraph,
    *,
    layer: str | None = None,
    betas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    delta: float | None = None,
    repeats: int = 5,
    bootstrap: bool = True,
    seed: int = 0,
    soft_rule: str | None = None,
) -> StabilityResult:
    """Re-learn one layer of ``graph`` under soft interventions for each beta.

    ``inputs`` must be the inputs ``graph`` was learned from (its samples are
    taken by index from ``graph.metadata["samples"]``). ``layer`` defaults to the
    hidden layer closest to the output. Uses the graph's own test options
    (``on``, ``alpha``, ``min_effect``, ``soft_rule``) with the paired test;
    ``soft_rule`` overrides the rule (``scale`` or ``set``).
    """
    options = graph.metadata["options"]
    rule = soft_rule or options.get("soft_rule", "scale")
    delta = float(options["delta"] if delta is None else delta)
    layer = _stability_layer(graph, layer)
    hard = tuple(graph.causes(layer)) if layer in graph.layers() else ()
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"repeats must be a positive integer; got {repeats!r}")

    samples = torch.as_tensor(inputs)[torch.tensor(graph.metadata["samples"])].to(model_device(model))
    runner = InterventionRunner(model)
    infos = {info.name: info for info in runner.layers(samples[:1])}
    n_units = infos[layer].n_units
    order, target = graph.metadata["layers"], int(graph.metadata["target"])
    child = _child_of(layer, order, infos)
    children = graph.causes(child) if child != order[-1] else [target]
    if not children:
        raise UserError(f"layer {child!r} has no causal units, so {layer!r} has no edges to re-test")
    betas_array = np.asarray(list(betas), dtype=float)
    generator = torch.Generator().manual_seed(seed)
    specs = [
        replace(soft_edge(child, i, children, float(beta), delta, generator, rule=rule), parent_layer=layer)
        if options["on"] == "edges"
        else soft_node(layer, i, float(beta), delta, generator, rule=rule)
        for beta in betas_array for _ in range(repeats) for i in range(n_units)
    ]
    result = runner.run(samples, specs, target)
    logits = result.target_logit.double().cpu().numpy().reshape(len(betas_array), repeats, n_units, -1)
    clean = result.clean_target_logit.double().cpu().numpy()
    jaccard, n_kept, counts = _retest(logits, clean, set(hard), alpha=options["alpha"],
                                      min_effect=options["min_effect"], bootstrap=bootstrap, seed=seed)
    return StabilityResult(layer, betas_array, delta, jaccard, n_kept, counts / repeats, hard, bootstrap, rule)


def _stability_layer(graph: CausalGraph, layer: str | None) -> str:
    """``layer`` checked against the graph's analysed layers; by default its hidden layer closest to the output."""
    order = graph.metadata["layers"]
    if layer is None:
        hidden = graph.hidden_layers()
        if not hidden:
            raise UserError("the graph has no hidden causal units; nothing to re-learn")
        layer = hidden[-1]
    if layer not in order[:-1]:
        raise UserError(f"stability layer {layer!r} is not an analysed layer; valid: {', '.join(order[:-1])}")
    return layer


def _retest(logits: np.ndarray, clean: np.ndarray, hard: set[int], *, alpha: float, min_effect: float,
            bootstrap: bool, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paired test on each (beta, repeat) block of ``logits`` (B, R, units, N), on bootstrap resamples.

    Returns the Jaccard similarity of each kept set with ``hard`` (B, R), the
    kept sets' sizes (B, R) and how often each unit was kept (B, units).
    """
    n_betas, repeats, n_units, _ = logits.shape
    rng = np.random.default_rng(seed)
    n = len(clean)
    jaccard = np.zeros((n_betas, repeats))
    n_kept = np.zeros((n_betas, repeats), dtype=int)
    counts = np.zeros((n_betas, n_units))
    for b in range(n_betas):
        for r in range(repeats):
            columns = rng.integers(0, n, n) if bootstrap else np.arange(n)
            test = paired_fdr_test(logits[b, r][:, columns], clean[columns], alpha=alpha, min_effect=min_effect)
            kept = set(test.kept_candidates())
            jaccard[b, r] = _jaccard(kept, hard)
            n_kept[b, r] = len(kept)
            counts[b, list(kept)] += 1
    return jaccard, n_kept, counts


def _child_of(layer: str, order: Sequence[str], infos: dict) -> str:
    """The first analysed layer after ``layer`` that ``layer`` feeds directly (the model's DAG, not the list)."""
    for name in order[order.index(layer) + 1 :]:
        if any(link.name == layer for link in infos[name].parents):
            return name
    raise UserError(f"no analysed layer takes its input from {layer!r}, so it has no edges to re-test")


def _jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def plot_stability(result: StabilityResult, path: str | Path | None = None, *, dpi: int = 120):
    """Jaccard similarity vs beta beside the units kept, and histograms of the units' appearance rates per beta.

    The left panel draws the Jaccard similarity to the hard graph's causes
    (red, left axis) and, on the right axis, the units the re-test kept and how
    many of them are hard causes (blue), so that a Jaccard of 0 beside many kept
    units reads as "a different set", not "nothing". Under the ``scale`` rule
    betas with ``u >= 1`` strengthen rather than weaken (shaded and labelled):
    the units kept there are those whose strengthening lowers the target. A
    kept set and a hard set both empty count as Jaccard 1 (the same set). The
    histograms split the units into hard causes and the others.
    """
    from matplotlib.figure import Figure

    shown = np.unique(np.linspace(0, len(result.betas) - 1, min(6, len(result.betas))).round().astype(int))
    figure = Figure(figsize=(5.5 + 2.2 * len(shown), 4.2), dpi=dpi, layout="constrained")
    grid = figure.add_gridspec(1, 1 + len(shown), width_ratios=[3] + [1] * len(shown))
    _jaccard_panel(figure.add_subplot(grid[0, 0]), result)
    bins = np.linspace(0, 1, 11)
    hard = np.zeros(result.appearance.shape[1], dtype=bool)
    hard[list(result.hard_causes)] = True
    amplifies = result.amplifies()
    for column, b in enumerate(shown, start=1):
        hist = figure.add_subplot(grid[0, column])
        hist.hist([result.appearance[b][hard], result.appearance[b][~hard]], bins=bins.tolist(), stacked=True,
                  color=["#d62728", "0.6"], label=["hard causes", "other units"])
        hist.set_title(f"beta={result.betas[b]:g}{' (u >= 1)' if amplifies[b] else ''}", fontsize=9)
        hist.set_xlabel("appearance rate", fontsize=8)
        hist.tick_params(labelsize=7)
        if column == 1:
            hist.set_ylabel("units")
            hist.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    return save_figure(figure, path)


def _jaccard_panel(ax, result: StabilityResult) -> None:
    """Jaccard (left axis) and the units kept, all and hard causes (right axis), per beta; ``u >= 1`` shaded."""
    mean, std = result.jaccard.mean(1), result.jaccard.std(1)
    handles = ax.plot(result.betas, mean, marker="o", color="#d62728", label="Jaccard similarity (left axis)")
    ax.fill_between(result.betas, mean - std, mean + std, color="#d62728", alpha=0.2)
    ax.set_ylim(-0.02, 1.02)
    verb = "w x u" if result.soft_rule == "scale" else "w := u"
    ax.set_xlabel(f"beta ({verb}, u ~ U(beta, beta + delta))")
    ax.set_ylabel("Jaccard similarity to the hard graph", color="#d62728")
    n_hard = len(result.hard_causes)
    ax.set_title(f"Stability of {result.layer} (delta={result.delta:g}, {n_hard} hard causes)", fontsize=9)
    counts = ax.twinx()
    kept, kept_hard = result.n_kept.mean(1), result.n_kept_hard.mean(1)
    handles += counts.plot(result.betas, kept, marker="s", color="#1f77b4", linestyle="--", linewidth=1,
                           markersize=4, label="units kept (right axis)")
    handles += counts.plot(result.betas, kept_hard, marker="^", color="#1f77b4", linewidth=1, markersize=4,
                           label="of them hard causes (right axis)")
    largest = max(1.0, float(kept.max()), float(n_hard))
    counts.set_ylim(-0.02 * largest, 1.15 * largest)
    counts.set_ylabel("units (mean over repeats)", color="#1f77b4")
    amplifies = result.amplifies()
    if amplifies.any():
        span = max(float(np.ptp(result.betas)), 1e-6)
        handles.append(ax.axvspan(float(result.betas[amplifies].min()) - 0.04 * span,
                                  float(result.betas.max()) + 0.04 * span, color="0.85", zorder=0,
                                  label="u >= 1: strengthens, no cut; the units kept lower\nthe target when strengthened"))
    for b in np.flatnonzero((mean == 0) & (kept > 0)):
        ax.annotate(f"{kept[b]:.1f} kept,\n{kept_hard[b]:.1f} of them\nhard causes", (result.betas[b], 0.0),
                    xytext=(-40, 45), textcoords="offset points", ha="right", va="bottom", fontsize=7,
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6", "linewidth": 0.5},
                    arrowprops={"arrowstyle": "-", "color": "0.4", "linewidth": 0.6})
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)


@dataclass(frozen=True)
class SeedStability:
    """The stability sweep repeated on networks trained with different seeds.

    ``jaccard`` is ``(S, B)``: each seed's mean Jaccard similarity per beta (its
    soft graphs against its own hard graph); ``n_causes`` the hard graph's causes
    of the swept layer, ``n_units`` that layer's size, per seed.
    """

    seeds: tuple[int, ...]
    layers: tuple[str, ...]
    betas: np.ndarray
    jaccard: np.ndarray
    n_causes: np.ndarray
    n_units: np.ndarray

    def summary(self) -> dict:
        """Across-seed mean and standard deviation per beta, and the graph sizes (JSON-ready)."""
        return {
            "seeds": list(self.seeds),
            "layers": list(self.layers),
            "betas": [float(b) for b in self.betas],
            "jaccard_mean": [float(v) for v in self.jaccard.mean(0)],
            "jaccard_std": [float(v) for v in self.jaccard.std(0)],
            "n_causes": [int(v) for v in self.n_causes],
            "n_units": [int(v) for v in self.n_units],
        }

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per seed and beta: seed, layer, beta, jaccard_mean, n_causes, n_units."""
        return write_csv(path, [{"seed": seed, "layer": self.layers[s], "beta": f"{beta:g}",
                                 "jaccard_mean": f"{self.jaccard[s, b]:.6g}", "n_causes": int(self.n_causes[s]),
                                 "n_units": int(self.n_units[s])}
                                for s, seed in enumerate(self.seeds) for b, beta in enumerate(self.betas)],
                         ["seed", "layer", "beta", "jaccard_mean", "n_causes", "n_units"])


def seed_stability(
    models: Mapping[int, nn.Module],
    inputs: torch.Tensor,
    target: int,
    *,
    labels: torch.Tensor | None = None,
    discovery: Mapping[str, Any] | None = None,
    betas: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8),
    delta: float | None = None,
    repeats: int = 5,
    bootstrap: bool = True,
    seed: int = 0,
) -> SeedStability:
    """Learn the hard graph and run :func:`stability` on each model of ``models`` (training seed -> model).

    ``discovery`` holds :func:`~explainnn.causal.discover` options (the same for
    every seed); each sweep studies the hidden layer closest to the output.
    """
    from explainnn.causal.discovery import discover

    if len(models) < 2:
        raise UserError(f"seed stability needs at least 2 trained models; got {len(models)}")
    rows, layers, causes, sizes = [], [], [], []
    for model in models.values():
        graph = discover(model, inputs, target, labels=labels, seed=seed, **dict(discovery or {}))
        result = stability(model, inputs, graph, betas=betas, delta=delta, repeats=repeats,
                           bootstrap=bootstrap, seed=seed)
        rows.append(result.jaccard.mean(1))
        layers.append(result.layer)
        causes.append(len(result.hard_causes))
        sizes.append(result.appearance.shape[1])
    return SeedStability(tuple(int(s) for s in models), tuple(layers), np.asarray(list(betas), dtype=float),
                         np.stack(rows), np.asarray(causes), np.asarray(sizes))


def plot_seed_stability(result: SeedStability, path: str | Path | None = None, *, dpi: int = 120):
    """Jaccard similarity vs beta, one line per training seed."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.4), dpi=dpi)
    ax = figure.subplots()
    for s, seed in enumerate(result.seeds):
        ax.plot(result.betas, result.jaccard[s], marker="o",
                label=f"seed {seed} ({result.n_causes[s]}/{result.n_units[s]} causes)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("beta")
    ax.set_ylabel("Jaccard similarity to the seed's hard graph")
    ax.set_title("Stability across training seeds", fontsize=9)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path)
