"""Time every attribution method: seconds per 100 samples, as a Markdown table.

Two models: LeNet on MNIST padded to 1x32x32, and an LSTM (hidden 128, the
reference size) reading 1x28x28 MNIST digits as 28 rows. The models are
untrained: the work a method does (forward/backward passes, surrogate fits) does
not depend on the weights, so the timings hold for trained models too. Methods
run with their default options (e.g. 64 IG steps, 500 LIME/KernelSHAP samples,
25 SmoothGrad samples) on real digits (the offline MNIST loader); each method is
warmed up on 2 samples before the timed call.

    python benchmarks/bench_attributions.py                      # 100 samples, CPU
    python benchmarks/bench_attributions.py --samples 20         # quicker estimate
    python benchmarks/bench_attributions.py --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings

import torch

from explainnn.attributions import attribute, available_methods, method_info
from explainnn.data import load_dataset
from explainnn.errors import UserError
from explainnn.models import build_model
from explainnn.torch_utils import resolve_device, seed_everything

PER = 100


def seconds_per_hundred(method: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                        device: torch.device) -> float | None:
    """Wall time of one batched call scaled to 100 samples; None if the model is not supported."""
    try:
        attribute(model, x[:2], y[:2], method)
    except UserError:
        return None
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    attribute(model, x, y, method)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) * PER / len(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=PER, help="samples per timed call (default 100)")
    parser.add_argument("--root", default="data", help="data folder (MNIST works offline without files)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--methods", default=None, help="comma-separated subset of methods")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        methods = [m for m in available_methods("image") if m != "attention"]
        if args.methods:
            methods = [method_info(m.strip()).name for m in args.methods.split(",")]
        if args.samples < 2:
            raise UserError(f"--samples must be at least 2 (feature_permutation needs a batch); got {args.samples}")
        seed_everything(0)
        mnist = load_dataset("mnist", args.root)
        padded = load_dataset("mnist", args.root, image_size=32)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cases = {
        "LeNet, 1x32x32": (build_model("lenet", padded.info), padded.x_test),
        "LSTM-128 over rows, 1x28x28": (build_model("lstm", mnist.info, hidden_size=128), mnist.x_test),
    }
    labels = mnist.y_test[: args.samples].to(device)
    timings: dict[str, list[float | None]] = {m: [] for m in methods}
    for model, images in cases.values():
        model.to(device).eval()
        x = images[: args.samples].to(device)
        for method in methods:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                timings[method].append(seconds_per_hundred(method, model, x, labels, device))

    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch threads")
    print(f"Seconds per {PER} samples, default options, untrained models; {hardware}; "
          f"timed on {args.samples} samples; torch {torch.__version__}.\n")
    print("| method | " + " | ".join(cases) + " |")
    print("| --- | " + " | ".join("---:" for _ in cases) + " |")
    for method, values in timings.items():
        cells = ["n/a (not supported)" if v is None else f"{v:.2f}" for v in values]
        print(f"| {method} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
