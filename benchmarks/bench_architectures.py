"""Speed of discovery on real architectures, ratios measured side by side in one run.

1. ResNet-18 (CIFAR variant, ``explainnn.models.resnet.ResNet18``), 32x32 inputs, all
   layers, edges, hard cuts, paired test: full-graph discovery with the batched engine,
   against
   * a plain forward pass over the same number of rows (every intervention x sample
     row that discovery evaluated), in batches of ``--batch`` rows, and
   * the naive loop (copy the model, edit its weights or hook the path, one sample at
     a time: ``explainnn.interventions.reference_run``), timed on a fixed subset of
     ``--naive-per-step`` candidates of every step and extrapolated to all candidates
     of the step (the naive time per candidate does not depend on which one it is).

   The same three timings for ShuffleNetV2 x0.5 (channel split, shuffle and concat) and
   MobileNetV3-Small (depthwise convs, squeeze-and-excitation gating, hardswish), full-size
   definitions in ``benchmarks/zoo.py`` with CIFAR strides (``--only shufflenet`` /
   ``--only mobilenetv3``), and for the text transformer of ``configs/transformer_sst2.yaml``
   (units: attention heads and MLP neurons; ``--only transformer``) on SST-2 dev sentences.
2. The research-style LeNet (functional ``relu``, one ``MaxPool2d`` used twice) against
   the package's ``LeNet`` (the same weights, so the same function and graph) and the
   naive loop, full-graph discovery of class 3; the LeNet is trained here for
   ``--lenet-epochs`` epochs on the offline MNIST digits and tested on MNIST t10k.

Everything runs on ``--threads`` CPU threads (2 by default) in one process, so the ratios
are measured side by side; ``--device cuda`` runs the ResNet, ShuffleNet and MobileNet parts on a GPU instead (all
three timings on the same GPU; the LeNet part stays on the CPU). Weights are seeded (random, eval-mode BatchNorm statistics
made non-trivial) for the CIFAR models, whose inputs are real CIFAR-10 test images when the
shared data folder holds them (else uniform noise).

    python benchmarks/bench_architectures.py [--samples 100] [--width 64] [--threads 2] [--device cpu]
    python benchmarks/bench_architectures.py --only shufflenet --samples 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from architectures import ResearchLeNet, seeded  # noqa: E402
from bench_discovery import NaiveRunner, median_seconds  # noqa: E402 - the research loop, the timing rule
from explainnn.causal import discover  # noqa: E402
from explainnn.interventions import InterventionRunner, reference_run  # noqa: E402
from explainnn.models import LeNet  # noqa: E402
from explainnn.models.resnet import ResNet18  # noqa: E402


class TimedRunner:
    """The batched runner, recording every run's rows and time (discovery calls ``layers`` and ``run``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.runner = InterventionRunner(model)
        self.steps: list[tuple[list, torch.Tensor, object, float]] = []

    def layers(self, example: torch.Tensor):
        return self.runner.layers(example)

    def run(self, inputs, interventions, target):
        start = time.perf_counter()
        result = self.runner.run(inputs, interventions, target)
        self.steps.append((list(interventions), inputs, target, time.perf_counter() - start))
        return result


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ZOO = ("resnet", "shufflenet", "mobilenetv3", "transformer")
"""The models timed by :func:`bench_model` (``--only`` picks one)."""


def _images(kind: str, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Real test images (CIFAR-10 JPEGs / MNIST t10k from the shared data folder), else noise of that shape."""
    try:
        if kind == "cifar":
            import numpy as np
            from PIL import Image

            folders = sorted(p for p in (SHARED / "cifar10_images" / "test").iterdir() if p.is_dir())
            files = [f for group in zip(*(sorted(folder.glob("*.jpg")) for folder in folders)) for f in group][:n]
            arrays = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 for f in files]
            images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        else:
            from explainnn.data import load_dataset

            images = load_dataset("mnist", str(SHARED), image_size=shape[-1]).x_test[:n].float()
        if len(images) == n and tuple(images.shape[1:]) == shape:
            return images
    except Exception:  # noqa: BLE001 - without the data the timing runs on noise of the same shape
        pass
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _target(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(model(inputs).argmax(-1).mode().values)


def _plain_forward(model: torch.nn.Module, inputs: torch.Tensor, rows: int, batch: int, cap: int | None) -> float:
    """Seconds of plain forward passes over ``rows`` rows (timed on at most ``cap`` rows, scaled linearly)."""
    chunk = inputs.repeat((batch + len(inputs) - 1) // len(inputs), *[1] * (inputs.dim() - 1))[:batch]
    timed = rows if cap is None else min(rows, cap)
    _sync(inputs.device)
    start = time.perf_counter()
    with torch.inference_mode():
        done = 0
        while done < timed:
            model(chunk[: min(batch, timed - done)])
            done += batch
    _sync(inputs.device)
    return (time.perf_counter() - start) * rows / timed


def _naive_extrapolated(model: torch.nn.Module, steps: list, per_step: int) -> tuple[float, int]:
    """Naive seconds for every step, timing ``per_step`` evenly spread candidates of each."""
    total, timed = 0.0, 0
    for specs, inputs, target, _ in steps:
        if not specs:
            continue
        picked = specs[:: max(1, len(specs) // per_step)][:per_step]
        _sync(inputs.device)
        start = time.perf_counter()
        reference_run(model, inputs, picked, target)
        _sync(inputs.device)
        total += (time.perf_counter() - start) * len(specs) / len(picked)
        timed += len(picked)
    return total, timed


def _zoo_model(name: str, width: int) -> tuple[str, torch.nn.Module, torch.Tensor | None]:
    """The label and seeded model of ``name``, and its inputs when they are not CIFAR images."""
    if name == "resnet":
        return f"ResNet-18 (CIFAR variant, width {width}), 32x32", ResNet18(3, 10, width), None
    from zoo import MobileNetV3Small, ShuffleNetV2

    if name == "shufflenet":
        return "ShuffleNetV2 x0.5 (CIFAR strides), 32x32", ShuffleNetV2(), None
    if name == "mobilenetv3":
        return "MobileNetV3-Small (CIFAR strides), 32x32", MobileNetV3Small(), None
    from explainnn.data import load_dataset
    from explainnn.models import build_model

    dataset = load_dataset("sst2", str(SHARED), max_len=50)  # the settings of configs/transformer_sst2.yaml
    model = build_model("transformer", dataset.info, d_model=64, num_heads=4, num_layers=2, dim_feedforward=128)
    return ("text transformer (2 pre-norm blocks, 4 heads, d 64), SST-2 dev sentences", model,
            dataset.x_test[:400])


def bench_model(name: str, args: argparse.Namespace) -> None:
    """Full-graph discovery of one model against a plain forward over the same rows and the naive loop."""
    device = torch.device(args.device)
    label, model, given = _zoo_model(name, args.width)
    model = seeded(model, seed=0, scale=1.0).to(device)
    inputs = (given if given is not None else _images("cifar", max(4 * args.samples, 200), (3, 32, 32))).to(device)
    target = _target(model, inputs)
    timed = TimedRunner(model)
    start = time.perf_counter()
    timed.layers(inputs[:1])  # one-off: the layer DAG (NaN probe), cached per model
    tracing = time.perf_counter() - start
    start = time.perf_counter()
    graph = discover(model, inputs, target, n_samples=args.samples, runner=timed)
    ours = time.perf_counter() - start
    steps = [step for step in timed.steps if step[0]]
    rows = sum(len(specs) * len(inputs_) for specs, inputs_, _, _ in steps)
    candidates = sum(len(specs) for specs, *_ in steps)
    plain = _plain_forward(model, inputs[: args.samples], rows, args.batch, args.forward_rows)
    naive, timed_naive = _naive_extrapolated(model, steps, args.naive_per_step)
    layers = [name for name in graph.layers() if graph.units(name)]
    print(f"{label}, edges, hard, {graph.metadata['n_samples']} samples, class {target}, on {device}")
    print(f"  graph: {len(layers)} layers with causal units of {len(graph.metadata['layers'])} analysed, "
          f"{graph.graph.number_of_nodes()} units, {graph.graph.number_of_edges()} edges; "
          f"{candidates} candidates in {len(steps)} steps = {rows} rows")
    print(f"  layer DAG tracing (once) {tracing:9.1f} s")
    print(f"  batched discovery        {ours:9.1f} s")
    how = "" if args.forward_rows is None or args.forward_rows >= rows else f" (timed on {args.forward_rows} rows, scaled)"
    print(f"  plain forward, same rows {plain:9.1f} s   discovery / forward = {ours / plain:.2f}x{how}")
    print(f"  naive loop (extrapolated from {timed_naive} timed candidates) {naive:9.1f} s   "
          f"speed-up {naive / ours:.0f}x", flush=True)


def _trained_lenet(epochs: int) -> tuple[LeNet, torch.Tensor, torch.Tensor]:
    """The package LeNet trained for a few epochs on the offline MNIST digits, and the test images/labels."""
    from explainnn.data import load_dataset
    from explainnn.training import train_model

    dataset = load_dataset("mnist", str(SHARED) if SHARED.is_dir() else "data", image_size=32)
    torch.manual_seed(0)
    model = LeNet(1, 32, 10)
    train_model(model, dataset, epochs=epochs, batch_size=64, lr=1e-3, progress=False)
    return model.eval(), dataset.x_test.float(), dataset.y_test


def bench_lenets(args: argparse.Namespace) -> None:
    package, inputs, labels = _trained_lenet(args.lenet_epochs)
    research = ResearchLeNet()
    research.load_state_dict(package.state_dict())
    research.eval()
    target = 3
    options = dict(n_samples=args.samples, labels=labels)
    times, graphs = {}, {}
    for name, model in (("package LeNet", package), ("research LeNet", research)):
        discover(model, inputs, target, **options)  # warm-up: tracing, fx graph, allocator
        times[name], graphs[name] = median_seconds(lambda: discover(model, inputs, target, **options))
    start = time.perf_counter()
    naive_graph = discover(research, inputs, target, runner=NaiveRunner(research), **options)
    naive = time.perf_counter() - start
    same = all(sorted(g.graph.edges) == sorted(naive_graph.graph.edges) for g in graphs.values())
    n_interventions = sum(len(r) for r in graphs["research LeNet"].results["tests"].values())
    print(f"LeNet, full-graph discovery, edges, hard, {graphs['research LeNet'].metadata['n_samples']} samples, "
          f"class {target}, {n_interventions} interventions; same graph from all three: {same}; ours: the median of 7 "
          "runs, the naive loop: one run")
    for name, seconds in times.items():
        print(f"  {name:<15} {seconds:7.2f} s   speed-up vs naive {naive / seconds:6.0f}x")
    print(f"  naive loop      {naive:7.2f} s   (research LeNet)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64 in the paper)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="rows per plain forward batch")
    parser.add_argument("--forward-rows", type=int, default=None,
                        help="time the plain forward on this many rows and scale linearly (default: all rows)")
    parser.add_argument("--naive-per-step", type=int, default=2)
    parser.add_argument("--lenet-epochs", type=int, default=3, help="training epochs of the LeNet (offline MNIST)")
    parser.add_argument("--only", choices=("lenet", *ZOO), default=None)
    parser.add_argument("--device", default="cpu", help="device of the CIFAR models (cpu or cuda)")
    parser.add_argument("--root", type=Path, default=None, help="the shared data folder (CIFAR-10 JPEGs, MNIST)")
    args = parser.parse_args()
    if args.root is not None:
        global SHARED
        SHARED = args.root
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.only in (None, "lenet"):
        bench_lenets(args)
    for name in ZOO:
        if args.only in (None, name):
            bench_model(name, args)


if __name__ == "__main__":
    main()
