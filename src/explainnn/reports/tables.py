"""The report's tables as plain ``(headers, rows)`` of strings, shared by the HTML and Markdown renderers."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from explainnn.causal.circuit_check import CircuitCheck
from explainnn.causal.draw import MIB_NAMES
from explainnn.evaluation.summary import format_number, format_p, verdict
from explainnn.reports.content import CircuitSection, ClassSection, EvaluationSection

Table = tuple[list[str], list[list[str]]]


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _share(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def training_table(training: Mapping[str, Any]) -> Table:
    """Model, data, accuracy and optimiser settings of the checkpoint."""
    model = training.get("model", {})
    name = model.get("name", "") if isinstance(model, Mapping) else str(model)
    params = model.get("params", {}) if isinstance(model, Mapping) else {}
    settings = dict(training.get("training", {}))
    history = settings.pop("history", None)
    rows = [
        ["model", name + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")],
        ["dataset", str(training.get("dataset", ""))],
        ["train accuracy", _percent(training.get("train_accuracy"))],
        ["test accuracy", _percent(training.get("test_accuracy"))],
    ]
    rows += [["training seconds" if key == "seconds" else key.replace("_", " "), str(value)]
             for key, value in settings.items()]
    if history:
        rows.append(["final training loss", format_number(history[-1].get("loss"))])
    return ["", "value"], rows


def layers_table(section: ClassSection) -> Table:
    """Units of every layer in the graph and how many of them cause the target."""
    rows = [[row["layer"], row["kind"], str(row["units"]), str(row["causes"])] for row in section.layers]
    return ["layer", "kind", "units in graph", "causes of the target"], rows


def circuit_table(circuit: CircuitCheck, subject: str = "causal graph") -> Table:
    """Sufficiency (keep only the units of ``subject``) and necessity (ablate them) against random unit sets.

    ``subject`` names the unit set: ``"causal graph"`` (discovery's graph) or
    ``"minimal circuit"``.
    """
    sufficiency, necessity = circuit.sufficiency, circuit.necessity
    clean = circuit.clean_logit
    random_drop = (1 - necessity.random_logit_mean / clean) if clean else float("nan")
    rows = [
        ["sufficiency: normalised target logit kept", format_number(sufficiency.normalized),
         format_number(sufficiency.random_normalized_mean), format_p(sufficiency.p_value_vs_random)],
        ["sufficiency: accuracy on the class", _percent(sufficiency.accuracy),
         _percent(sufficiency.random_accuracy_mean), ""],
        ["necessity: fraction of the target logit lost", format_number(necessity.logit_drop_fraction),
         format_number(random_drop), format_p(necessity.p_value_vs_random)],
        ["necessity: accuracy on the class", _percent(necessity.accuracy),
         _percent(necessity.random_accuracy_mean), ""],
    ]
    chosen = circuit.necessity_where_chosen
    if chosen.layers_left_intact:
        rows.append([f"necessity where the {subject} chooses ({', '.join(chosen.layers_left_intact)} left intact): "
                     "normalised", format_number(chosen.normalized),
                     format_number(chosen.random_normalized_mean), format_p(chosen.p_value_vs_random)])
    sizes = ", ".join(f"{layer} {size}/{circuit.layer_size.get(layer, '?')}"
                      for layer, size in circuit.circuit_size.items())
    headers = ["", subject, f"random sets of the same size (mean of {circuit.n_random})", "p vs random"]
    rows.append([f"units per layer ({circuit.ablation} ablation, {circuit.n_eval} inputs)", sizes, "", ""])
    return headers, rows


def stability_table(stability: Mapping[str, Any]) -> Table:
    """Jaccard similarity of the re-learned causes with the hard-intervention causes, per beta."""
    rows = [[f"{beta:g}", f"{mean:.3f} ± {std:.3f}", f"{kept:.1f}"]
            for beta, mean, std, kept in zip(stability["betas"], stability["jaccard_mean"], stability["jaccard_std"],
                                             stability["n_kept_mean"])]
    headers = ["beta", "Jaccard (mean ± sd)", "units kept (mean)"]
    if "n_kept_hard_mean" in stability:
        headers.append("of them hard causes (mean)")
        for row, hard in zip(rows, stability["n_kept_hard_mean"]):
            row.append(f"{hard:.1f}")
    return headers, rows


def stability_note(stability: Mapping[str, Any]) -> str:
    """What a Jaccard of 0 beside kept units means, when the sweep has such a beta (else nothing)."""
    betas, means, kept = stability["betas"], stability["jaccard_mean"], stability["n_kept_mean"]
    zero = [f"{beta:g}" for beta, mean, n in zip(betas, means, kept) if mean == 0 and n > 0]
    if not zero:
        return ""
    note = (f"Jaccard 0 at beta {', '.join(zero)} beside units kept: the re-test kept units, none of them a cause "
            "in the hard graph.")
    if stability.get("soft_rule", "scale") == "scale" and any(float(b) >= 1 for b in zero):
        note += (" At beta >= 1 the scale rule multiplies by u >= 1, which strengthens instead of cutting, so the "
                 "units kept are those whose strengthening lowers the target logit.")
    return note


def circuit_line(section: CircuitSection) -> str:
    """The minimal circuit's size, where it was found and what it keeps."""
    search, metadata = section.search or {}, section.metadata
    if not search:
        return ""
    per_layer = ", ".join(f"{layer} {size}/{search.get('layer_size', {}).get(layer, '?')}"
                          for layer, size in search.get("per_layer", {}).items())
    held = f"; checked on {section.check.n_eval} held-out test samples" if section.check is not None else ""
    return (f"{search.get('size', '?')} of {search.get('total_units', '?')} hidden units "
            f"({_share(search.get('fraction'))}: {per_layer}), found on {metadata.get('n_samples', '?')} samples "
            f"({metadata.get('inputs', '?')}) to keep {format_number(search.get('target_faithfulness'))} of the "
            f"normalised target logit (kept {format_number(search.get('faithfulness'))}){held}.")


def metrics_table(section: EvaluationSection) -> Table:
    """Mean ± 95% CI, rank and paired test against the reference, per metric and method."""
    reference = section.reference
    tests = {(row["metric"], row["baseline"]): row for row in section.comparisons}
    rows = []
    for row in section.summary:
        low, high = row["ci_low"], row["ci_high"]
        ci = f"[{format_number(low)}, {format_number(high)}]" if math.isfinite(low) and math.isfinite(high) else "n/a"
        test = tests.get((row["metric"], row["method"]))
        rows.append([
            row["metric"], row.get("family", ""), "↑ higher" if row["direction"] == "higher" else "↓ lower",
            row["method"], format_number(row["mean"]), ci, str(row["n"]),
            "n/a" if row["rank"] is None else f"{row['rank']:g}",
            format_p(test["p_adjusted"]) if test else "",
            verdict(test) if test else ("reference" if row["method"] == reference else ""),
        ])
    headers = ["metric", "family", "better", "method", "mean", "95% CI", "n", "rank",
               f"p vs {reference} (Holm)", f"{reference} is"]
    if section.comparisons:
        correction = section.comparisons[0].get("correction", "holm")
        headers[8] = f"p vs {reference} ({correction})"
    return headers, rows


def skipped_table(section: EvaluationSection) -> Table:
    rows = [["all" if row["metric"] == "*" else row["metric"], "all" if row["method"] == "*" else row["method"],
             row["reason"]] for row in section.skipped]
    return ["metric", "method", "reason"], rows


def settings_table(section: EvaluationSection) -> Table:
    """Every metric's settings (the same for every method)."""
    rows = []
    for name, record in section.settings.get("metrics", {}).items():
        options = {**record.get("init", {}), **record.get("call", {})}
        rows.append([name, record.get("family", ""), ", ".join(f"{k}={v}" for k, v in options.items()),
                     record.get("note", "")])
    return ["metric", "family", "settings", "note"], rows


def samples_line(section: EvaluationSection) -> str:
    """Which samples the metrics ran on: how many, how many of them misclassified, and which were held out."""
    settings = section.settings
    samples: Sequence[int] = settings.get("samples", [])
    if not samples:
        return ""
    target = settings.get("target")
    used = settings.get("samples_used_by_discovery", 0)
    if not used:
        held = "none of them used to learn the graph"
    elif used == len(samples):
        held = "all of them used to learn the graph: no other test sample of the class was left"
    else:
        held = f"{used} of them used to learn the graph, too few others were left"
    missed = settings.get("samples_misclassified")
    if missed is None:
        kind = f"{len(samples)} test samples of class {target}"
    elif not missed:
        kind = f"{len(samples)} test samples of class {target}, all correctly classified"
    else:
        kind = (f"{len(samples)} test samples of class {target}: {len(samples) - missed} correctly classified, "
                f"{missed} misclassified (explained for their true class {target})")
    definitions = {"quantus": "metrics as Quantus 0.6 defines them (evaluation.definitions: quantus)",
                   "paper": "metrics as their papers define them where Quantus 0.6 differs (evaluation.definitions: "
                            "paper)"}.get(settings.get("definitions", ""), "")
    return (f"{kind}; {held}; {settings.get('normalisation', '')}; seed {settings.get('seed')}; "
            + (f"{definitions}; " if definitions else "")
            + f"inputs as Quantus saw them: {settings.get('modality')} {tuple(settings.get('quantus_layout', []))}.")


def _number(text: Any, digits: int = 3) -> str:
    """A CSV cell as a rounded number (empty stays empty)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return str(text or "")
    return f"{value:.{digits}g}" if math.isfinite(value) else "n/a"


def edge_circuit_line(section: ClassSection) -> str:
    """The edge circuit's size, where it was found and its exact faithfulness there and on held-out samples."""
    record = section.edge_circuit or {}
    found, held, meta = record.get("edge_circuit", {}), record.get("held_out", {}), record.get("metadata", {})
    if not found:
        return ""
    options = meta.get("options", {})
    line = (f"{found.get('n_edges', 0):,} of {found.get('total_edges', 0):,} edges ({_percent(found.get('fraction'))}), "
            f"found by {MIB_NAMES.get(str(found.get('method')), found.get('method'))} on "
            f"{meta.get('n_samples', '?')} samples ({meta.get('inputs', '?')}) to keep "
            f"{format_number(options.get('faithfulness'))} of the normalised {found.get('metric', '')} under "
            f"{found.get('ablation', '')} ablation (kept {format_number(found.get('faithfulness'))})")
    if held:
        line += (f"; held-out faithfulness {format_number(held.get('faithfulness'))} on {held.get('n_samples', '?')} "
                 f"test samples")
    return line + "."


def top_edges_table(section: ClassSection) -> Table:
    """The edge circuit's strongest edges: exact effect of removing each, and discovery's test of the unit pair."""
    rows = [[row.get("parent", ""), row.get("child", ""), row.get("kind", ""), _number(row.get("effect")),
             _number(row.get("discovery_p_value")) or "not in the significance graph",
             (f"[{_number(row.get('discovery_ci_low'))}, {_number(row.get('discovery_ci_high'))}]"
              if row.get("discovery_ci_low") not in (None, "") else "")]
            for row in section.top_edges]
    return ["parent", "child", "kind", "effect of removing it (f lost)", "discovery p-value",
            "discovery 95% CI of the logit change"], rows


def mib_table(section: ClassSection) -> Table:
    """One row per ranking: edges needed for held-out f >= 0.8 (and 0.9), CPR (higher is better), CMD (lower)."""
    rows, seen = [], set()
    for row in section.mib:
        method = row.get("method", "")
        if method in seen:
            continue
        seen.add(method)

        def needed(level: str, row: Mapping[str, Any] = row) -> str:
            edges, percent = row.get(f"edges_for_{level}"), row.get(f"percent_for_{level}")
            return f"{int(float(edges)):,} ({_number(percent)}%)" if edges not in (None, "") else "n/a"

        rows.append([MIB_NAMES.get(method, method), needed("0.8"), needed("0.9"), _number(row.get("cpr")),
                     _number(row.get("cmd"))])
    n = section.mib[0].get("n_samples", "?") if section.mib else "?"
    return ["method", f"edges for f >= 0.8 ({n} held-out samples)", "edges for f >= 0.9", "CPR (higher is better)",
            "CMD (lower is better)"], rows
