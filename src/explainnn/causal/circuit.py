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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from explainnn.causal.graph import CausalGraph
from explainnn.errors import UserError
from explainnn.interventions import InterventionRunner, NodeIntervention


def circuit_faithfulness(
    model: nn.Module,
    graph: CausalGraph,
    inputs: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    n_eval: int = 500,
    n_random: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Sufficiency and necessity of ``graph`` against random unit sets; stored in ``graph.results["circuit"]``.

    Evaluated on up to ``n_eval`` inputs of the target class (by ``labels`` when
    given, else by the model's prediction). ``reference`` defines the mean
    activations used for ablation (default: the evaluation inputs).
    """
    target = int(graph.metadata["target"])
    layers = [name for name in graph.layers() if _kind(graph, name) == "hidden"]
    if not layers:
        raise UserError("the graph has no hidden causal units; there is no circuit to check")
    inputs = torch.as_tensor(inputs)
    device = next(iter(model.parameters())).device
    if labels is not None:
        chosen = torch.nonzero(torch.as_tensor(labels) == target).flatten()[:n_eval]
    else:
        chosen = torch.arange(min(len(inputs), n_eval))
    if len(chosen) < 2:
        raise UserError(f"need at least 2 evaluation inputs of class {target}; got {len(chosen)}")
    samples = inputs[chosen].to(device)
    runner = InterventionRunner(model, reference=None if reference is None else reference.to(device))
    n_units = {info.name: info.n_units for info in runner.layers(samples[:1])}
    causal = {name: graph.causes(name) for name in layers}

    rng = np.random.default_rng(seed)
    random_sets = [
        {name: sorted(rng.choice(n_units[name], size=len(causal[name]), replace=False).tolist()) for name in layers}
        for _ in range(n_random)
    ]
    rows = [
        _ablate(n_units, causal, keep=True),
        _ablate(n_units, causal, keep=False),
        _ablate(n_units, {name: [] for name in layers}, keep=True),
    ]
    for chosen_set in random_sets:
        rows.append(_ablate(n_units, chosen_set, keep=True))
        rows.append(_ablate(n_units, chosen_set, keep=False))
    result = runner.run(samples, rows, target)

    logit = result.target_logit.double().mean(1).cpu().numpy()
    accuracy = (result.logits.argmax(-1) == target).double().mean(1).cpu().numpy()
    clean_logit = float(result.clean_target_logit.double().mean())
    clean_accuracy = float((result.clean_logits.argmax(-1) == target).double().mean())
    empty = logit[2]

    def summary(values: np.ndarray, accs: np.ndarray, circuit_value: float, circuit_acc: float, better) -> dict:
        return {
            "logit": circuit_value,
            "logit_fraction": circuit_value / clean_logit if clean_logit else float("nan"),
            "accuracy": circuit_acc,
            "random_logit_mean": float(values.mean()),
            "random_logit_std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
            "random_accuracy_mean": float(accs.mean()),
            "p_value_vs_random": float((1 + better(values).sum()) / (1 + len(values))),
        }

    random_keep, random_drop = logit[3::2], logit[4::2]
    sufficiency = summary(random_keep, accuracy[3::2], float(logit[0]), float(accuracy[0]),
                          lambda v: v >= logit[0])
    span = clean_logit - empty
    sufficiency["normalized"] = float((logit[0] - empty) / span) if span else float("nan")
    sufficiency["random_normalized_mean"] = float(((random_keep - empty) / span).mean()) if span else float("nan")
    necessity = summary(random_drop, accuracy[4::2], float(logit[1]), float(accuracy[1]),
                        lambda v: v <= logit[1])
    necessity["logit_drop_fraction"] = 1.0 - necessity["logit_fraction"]
    report = {
        "n_eval": int(len(samples)),
        "n_random": n_random,
        "ablation": "mean",
        "layers": layers,
        "circuit_size": {name: len(causal[name]) for name in layers},
        "layer_size": {name: n_units[name] for name in layers},
        "clean_logit": clean_logit,
        "clean_accuracy": clean_accuracy,
        "empty_logit": float(empty),
        "empty_accuracy": float(accuracy[2]),
        "sufficiency": sufficiency,
        "necessity": necessity,
    }
    graph.add_result("circuit", report)
    return report


def _kind(graph: CausalGraph, layer: str) -> str:
    unit = graph.units(layer)[0]
    return graph.graph.nodes[unit]["kind"]


def _ablate(n_units: dict[str, int], units: dict[str, list[int]], *, keep: bool) -> list[NodeIntervention]:
    """Mean-ablate the complement of ``units`` (``keep``) or ``units`` themselves, in every layer."""
    row = []
    for name, chosen in units.items():
        targets = sorted(set(range(n_units[name])) - set(chosen)) if keep else list(chosen)
        if targets:
            row.append(NodeIntervention(name, targets, "mean"))
    # Nothing to ablate: an exact no-op keeps the row (the runner needs one spec per row).
    return row or [NodeIntervention(next(iter(units)), [0], "scale", 1.0)]


def plot_circuit(report: dict[str, Any], path=None, *, dpi: int = 120):
    """Bar chart of the circuit's sufficiency and necessity beside random sets of the same size."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.4), dpi=dpi)
    axes = figure.subplots(1, 2)
    for ax, key, title in ((axes[0], "sufficiency", "Sufficiency: only these units kept"),
                           (axes[1], "necessity", "Necessity: these units ablated")):
        part = report[key]
        values = [report["clean_logit"], part["logit"], part["random_logit_mean"]]
        errors = [0.0, 0.0, part["random_logit_std"] if np.isfinite(part["random_logit_std"]) else 0.0]
        bars = ax.bar(["clean", "causal graph", f"random (n={report['n_random']})"], values, yerr=errors,
                      color=["#999999", "#d62728", "#1f77b4"], capsize=4)
        for bar, acc in zip(bars, [report["clean_accuracy"], part["accuracy"], part["random_accuracy_mean"]]):
            ax.annotate(f"acc {acc:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(f"{title}\np = {part['p_value_vs_random']:.3f} vs random", fontsize=9)
        ax.set_ylabel("mean target logit")
        ax.axhline(0, color="black", linewidth=0.5)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path)
    return figure
