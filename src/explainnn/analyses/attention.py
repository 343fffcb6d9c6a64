"""Attention vs gradients: do a model's attention weights rank its inputs as gradient explanations do?

:func:`attention_vs_gradients` repeats the attention-reproducibility study for a
``pooling="attention"`` model: Kendall tau and Spearman between attention and
``|attribution|`` per sample, and the Jensen-Shannon divergence of the two as
distributions; :func:`plot_attention_agreement` draws their histograms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.special import rel_entr
from scipy.stats import kendalltau, spearmanr
from torch import nn

from explainnn.analyses.common import as_numpy, attribute_in_batches, method_list, per_step, resolve_targets
from explainnn.attributions import attribute, modality_of
from explainnn.errors import UserError
from explainnn.files import save_figure, write_csv

GRADIENT_METHODS = ("saliency", "integrated_gradients")
"""The explanations attention is compared with (as in the attention-reproducibility paper)."""


@dataclass(frozen=True)
class AttentionAgreement:
    """Per-sample agreement between attention weights and each gradient explanation.

    ``kendall_tau`` and ``spearman`` rank-correlate attention with ``|attribution|``
    over a sample's real steps; ``js_divergence`` is the Jensen-Shannon divergence
    (base 2, in [0, 1]) between the two normalised to sum to one. NaN where a
    sample has fewer than two steps or either side is constant (no ranking) or zero.
    """

    methods: tuple[str, ...]
    kendall_tau: dict[str, np.ndarray]
    spearman: dict[str, np.ndarray]
    js_divergence: dict[str, np.ndarray]
    n_steps: np.ndarray

    STATISTICS = ("kendall_tau", "spearman", "js_divergence")

    def summary(self) -> list[dict[str, Any]]:
        """Per method: mean and median of each statistic over the samples where it is defined."""
        rows = []
        for method in self.methods:
            row: dict[str, Any] = {"method": method}
            for name in self.STATISTICS:
                values = getattr(self, name)[method]
                finite = values[np.isfinite(values)]
                row[f"{name}_mean"] = float(finite.mean()) if len(finite) else float("nan")
                row[f"{name}_median"] = float(np.median(finite)) if len(finite) else float("nan")
            row["n"] = int(np.isfinite(self.kendall_tau[method]).sum())
            rows.append(row)
        return rows

    def rows(self) -> list[dict[str, Any]]:
        return [{"sample": i, "method": method, "steps": int(self.n_steps[i]),
                 **{name: float(getattr(self, name)[method][i]) for name in self.STATISTICS}}
                for method in self.methods for i in range(len(self.n_steps))]

    def to_csv(self, folder: str | Path) -> list[Path]:
        """``attention_agreement.csv`` (per sample) and ``attention_agreement_summary.csv``."""
        folder = Path(folder)
        write_csv(folder / "attention_agreement.csv", self.rows(), ["sample", "method", "steps", *self.STATISTICS])
        summary = self.summary()
        write_csv(folder / "attention_agreement_summary.csv", summary, list(summary[0]) if summary else ["method"])
        return [folder / "attention_agreement.csv", folder / "attention_agreement_summary.csv"]


def agreement_statistics(attention: np.ndarray | torch.Tensor, attributions: Mapping[str, np.ndarray | torch.Tensor],
                         mask: np.ndarray | torch.Tensor | None = None) -> AttentionAgreement:
    """Kendall tau, Spearman and JS divergence of ``(N, T)`` attention vs each ``(N, T)`` attribution.

    ``mask`` (bool ``(N, T)``, True at real steps) leaves padding out; attributions
    are compared by magnitude.
    """
    weights = as_numpy(attention).astype(np.float64)
    if weights.ndim != 2:
        raise UserError(f"attention must be (N, T) weights; got shape {weights.shape}")
    keep = np.ones(weights.shape, dtype=bool) if mask is None else as_numpy(mask).astype(bool)
    if keep.shape != weights.shape:
        raise UserError(f"mask must have the attention's shape {weights.shape}; got {keep.shape}")
    if not attributions:
        raise UserError("attributions must name at least one method: method -> (N, T) array")
    tau, rho, js = {}, {}, {}
    for method, values in attributions.items():
        magnitude = np.abs(as_numpy(values).astype(np.float64))
        if magnitude.shape != weights.shape:
            raise UserError(f"attributions of '{method}' have shape {magnitude.shape}; attention has {weights.shape}")
        tau[method], rho[method], js[method] = (np.full(len(weights), np.nan) for _ in range(3))
        for i, (a, g, k) in enumerate(zip(weights, magnitude, keep)):
            a, g = a[k], g[k]
            if len(a) >= 2 and np.ptp(a) > 0 and np.ptp(g) > 0:
                tau[method][i] = kendalltau(a, g).statistic
                rho[method][i] = spearmanr(a, g).statistic
            if a.sum() > 0 and g.sum() > 0:
                js[method][i] = js_divergence(a / a.sum(), g / g.sum())
    return AttentionAgreement(tuple(attributions), tau, rho, js, keep.sum(axis=1))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 for equal distributions, at most 1)."""
    middle = (p + q) / 2
    return float(max(0.0, (rel_entr(p, middle).sum() + rel_entr(q, middle).sum()) / (2 * np.log(2))))


def attention_vs_gradients(
    model: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    *,
    methods: Sequence[str] = GRADIENT_METHODS,
    target: str | int | Sequence[int] | np.ndarray | torch.Tensor = "predicted",
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    attributions: Mapping[str, np.ndarray] | None = None,
) -> AttentionAgreement:
    """Compare a ``pooling="attention"`` model's weights with gradient explanations.

    Works on token ids (padding left out), ``(N, T, F)`` sequences and images read
    as rows (attributions summed in magnitude over each step's features).
    ``attributions`` may hand in already computed token/input-shaped arrays of some
    ``methods`` for the same inputs and target.
    """
    batch = torch.as_tensor(as_numpy(inputs))
    modality = modality_of(model, batch)
    targets = resolve_targets(model, batch, target)
    weights = per_step(attribute(model, batch, targets, "attention", seed=seed), modality, magnitude=False)
    known = dict(attributions or {})
    options = dict(options or {})
    steps = {}
    for method in method_list(methods):
        values = known.get(method)
        if values is None:
            values = attribute_in_batches(method, model, batch, targets, seed, options.get(method, {}), False)
        steps[method] = per_step(values, modality, magnitude=True)
    pad = getattr(model, "pad_index", None)
    mask = batch.ne(pad).numpy() if modality == "tokens" and pad is not None else None
    return agreement_statistics(weights, steps, mask)


def plot_attention_agreement(agreement: AttentionAgreement, *, path: str | Path | None = None,
                             dpi: int = 120) -> Figure:
    """Histograms of Kendall tau, Spearman and JS divergence per method."""
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    axes = figure.subplots(1, 3)
    ranges = {"kendall_tau": (-1, 1), "spearman": (-1, 1), "js_divergence": (0, 1)}
    titles = {"kendall_tau": "Kendall tau", "spearman": "Spearman rho", "js_divergence": "JS divergence"}
    for axis, name in zip(axes, AttentionAgreement.STATISTICS):
        for method in agreement.methods:
            values = getattr(agreement, name)[method]
            values = values[np.isfinite(values)]
            label = f"{method} (mean {values.mean():.2f})" if len(values) else f"{method} (undefined)"
            axis.hist(values, bins=20, range=ranges[name], alpha=0.55, label=label)
        axis.set_title(f"attention vs gradients: {titles[name]}")
        axis.set_xlabel(titles[name])
        axis.legend(fontsize="small")
    axes[0].set_ylabel("samples")
    return save_figure(figure, path, dpi=dpi)
