"""The edge-ablation forward's speed on LeNet: an earlier version of ``explainnn.causal.edges`` beside this one.

Both engines run in the same process, on the same model, samples and masks, one
after the other for every workload (repeated ``--repeats`` times, the best time
kept), so that the ratio is measured under the same load:

* ``step``: one differentiable forward and backward over the circuit samples
  (what one step of mask training costs);
* ``random``: ``--masks`` random masks (half the edges each), exact;
* ``singles``: every single removal from a circuit of ``--circuit`` edges (the
  top of the EAP ranking), exact - what one pass of exact pruning costs;
* ``prefixes``: 16 prefixes of the EAP ranking, exact (one bisection call).

The earlier version is read from git (``--before``, a commit) into a separate
module. Every workload's outputs of the two engines are compared (largest
absolute difference of the logits). The research LeNet (``circuit_faithfulness.py``'s
``setup``: trained on the offline digits, or loaded from ``--output``), class
``--target``, mean ablation over the first 1,000 training digits, 100 circuit
samples from the training digits. Prints one markdown table with the load
average (``os.getloadavg``) before and after.

    python benchmarks/edge_speed.py --before 94dafab --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from circuit_faithfulness import _default_root, setup
from explainnn.causal.edge_search import eap_scores
from explainnn.causal.mib import build_evaluator, prefix_mask, ranking

ROOT = Path(__file__).resolve().parents[1]


def engine_from(commit: str):
    """``explainnn.causal.edges`` as it was at ``commit``, imported under another name."""
    text = subprocess.run(["git", "show", f"{commit}:src/explainnn/causal/edges.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"explainnn_edges_{commit}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"explainnn_edges_{commit}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="94dafab", help="the commit whose edges.py is the earlier version")
    parser.add_argument("--root", type=Path, default=_default_root())
    parser.add_argument("--output", type=Path, default=Path("output/circuit_faithfulness"))
    parser.add_argument("--target", type=int, default=3)
    parser.add_argument("--masks", type=int, default=64)
    parser.add_argument("--circuit", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset, model, _ = setup("lenet", args.root, args.output, args.seed)
    model.eval()
    old = engine_from(args.before)
    evaluator, graph = build_evaluator(model, dataset.x_train, args.target, labels=dataset.y_train,
                                       ablation="mean", n_samples=100)
    new_engine = evaluator.ablation
    reference = dataset.x_train[:1000]
    old_engine = old.EdgeAblation(model, evaluator.inputs[:1], new_engine.edges, ablation="mean", reference=reference)
    rng = np.random.default_rng(args.seed)
    order = ranking(eap_scores(evaluator))
    circuit = prefix_mask(order, args.circuit, graph.n)
    members = np.flatnonzero(circuit)
    singles = np.repeat(circuit[None], len(members), 0)
    singles[np.arange(len(members)), members] = False
    workloads = {
        "random": torch.from_numpy((rng.random((args.masks, graph.n)) < 0.5).astype(np.float32)),
        "singles": torch.from_numpy(singles.astype(np.float32)),
        "prefixes": torch.from_numpy(np.stack([prefix_mask(order, int(k), graph.n)
                                               for k in np.linspace(100, 1600, 16)]).astype(np.float32)),
    }
    load_before = os.getloadavg()
    rows = []

    def step(engine) -> torch.Tensor:
        mask = torch.full((1, graph.n), 0.7, requires_grad=True)
        out = engine.logits(evaluator.inputs, mask)[0, :, args.target].mean()
        out.backward()
        assert mask.grad is not None
        return mask.grad

    timings = {}
    for name, engine in (("before", old_engine), ("after", new_engine)):
        timings[name] = best_time(lambda: step(engine), args.repeats)
    rows.append(("step (1 mask, differentiable)", 100, timings))
    for label, masks in workloads.items():
        timings = {}
        for name, engine in (("before", old_engine), ("after", new_engine)):
            with torch.no_grad():
                timings[name] = best_time(lambda: engine.logits(evaluator.inputs, masks), args.repeats)
        rows.append((f"{label} ({len(masks)} masks, exact)", len(masks) * 100, timings))
    load_after = os.getloadavg()
    print(f"LeNet, {graph.n} edges, 100 samples, mean ablation, {args.threads} threads, "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)\n")
    print("| workload | rows | before (s) | after (s) | ratio | max abs. difference |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, count, timings in rows:
        (t_old, out_old), (t_new, out_new) = timings["before"], timings["after"]
        diff = float((torch.as_tensor(out_old) - torch.as_tensor(out_new)).abs().max())
        print(f"| {label} | {count} | {t_old:.3f} | {t_new:.3f} | {t_old / t_new:.1f}x | {diff:.2e} |")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
