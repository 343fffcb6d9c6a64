"""Speed of causal-graph discovery, side by side with the research code's naive loop.

Prints, in one run on the same model and samples:

* full-graph discovery on LeNet (all layers, edges, hard, paired test) with the
  batched engine, and the same discovery with the research code's method: for
  every candidate, copy the model, edit its weights, and run the samples one at
  a time (``explainnn.interventions.reference_run``); both must give the same graph;
* the full stability sweep (51 betas x 10 repeats on the layer below the output).

    python benchmarks/bench_discovery.py [--samples 100] [--checkpoint PATH] [--device cpu]

The LeNet is the default run's checkpoint when it exists (``output/mnist/lenet/model.pt``),
else one trained here for a few epochs (the timing does not depend on accuracy
beyond the size of the graph).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable, TypeVar

import torch

from explainnn.causal import discover, stability
from explainnn.data import load_dataset
from explainnn.interventions import InterventionRunner, reference_run
from explainnn.models import build_model
from explainnn.torch_utils import resolve_device, seed_everything
from explainnn.training import train_or_load

T = TypeVar("T")


class NaiveRunner:
    """The research code's loop behind the runner's interface: copy, edit, one sample at a time."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._fast = InterventionRunner(model)

    def layers(self, example: torch.Tensor):
        return self._fast.layers(example)

    def run(self, inputs, interventions, target):
        return reference_run(self.model, inputs, interventions, target)


def median_seconds(call: Callable[[], T], repeats: int = 7) -> tuple[float, T]:
    """The median wall time of ``repeats`` calls (a ~0.1 s call varies by 2-3x between single runs) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--checkpoint", default="output/mnist/lenet/model.pt")
    parser.add_argument("--device", default="cpu")
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    parser.add_argument("--root", default=str(shared if shared.is_dir() else "data"),
                        help="data folder; with the real MNIST t10k files the samples come from them")
    parser.add_argument("--skip-naive", action="store_true", help="only time the batched engine")
    args = parser.parse_args()
    seed_everything(0)
    device = resolve_device(args.device)
    dataset = load_dataset("mnist", args.root, image_size=32)
    model = build_model("lenet", dataset.info)
    mode = "auto" if Path(args.checkpoint).exists() else "always"
    model, _ = train_or_load(model, dataset, checkpoint=Path(args.checkpoint), mode=mode, metadata={},
                             train_kwargs={"epochs": 12, "batch_size": 64, "lr": 1e-3, "augment": True,
                                           "progress": False}, device=device)
    inputs, labels = dataset.x_test.to(device), dataset.y_test.to(device)
    options = dict(labels=labels, n_samples=args.samples)

    discover(model, inputs, 3, **options)  # warm-up: layer tracing, allocator
    ours, graph = median_seconds(lambda: discover(model, inputs, 3, **options))
    n_interventions = sum(len(records) for records in graph.results["tests"].values())
    rows = [("full-graph discovery, LeNet class 3", f"{n_interventions} interventions x {graph.metadata['n_samples']} samples", ours)]

    if not args.skip_naive:
        start = time.perf_counter()
        naive_graph = discover(model, inputs, 3, runner=NaiveRunner(model), **options)
        naive = time.perf_counter() - start
        same = naive_graph.causes("fc2") == graph.causes("fc2") and all(
            naive_graph.causes(layer) == graph.causes(layer) for layer in graph.layers())
        rows[0] = rows[0] + (naive, same)

    betas = [round(0.01 * i, 2) for i in range(51)]
    start = time.perf_counter()
    result = stability(model, inputs, graph, betas=betas, repeats=10)
    sweep = time.perf_counter() - start

    print(f"device: {device}, torch threads: {torch.get_num_threads()}; ours: the median of 7 runs, the naive loop: "
          "one run\n")
    print("| task | size | ours (s) | naive loop (s) | speed-up | same graph |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for row in rows:
        if len(row) == 5:
            print(f"| {row[0]} | {row[1]} | {row[2]:.2f} | {row[3]:.1f} | {row[3] / row[2]:.0f}x | {row[4]} |")
        else:
            print(f"| {row[0]} | {row[1]} | {row[2]:.2f} | - | - | - |")
    layer_size = result.appearance.shape[1]
    print(f"| stability sweep, layer {result.layer} | 51 betas x 10 repeats x {layer_size} units "
          f"= {51 * 10 * layer_size} interventions x {graph.metadata['n_samples']} samples | {sweep:.1f} | - | - | - |")


if __name__ == "__main__":
    main()
