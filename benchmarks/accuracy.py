"""Train the reference models and report their test accuracy as a Markdown table.

These are the models the experiments explain, with the hyperparameters of the
shipped configs; each reaches its target on 2 CPU cores in a few minutes.

    python benchmarks/accuracy.py                  # all models
    python benchmarks/accuracy.py --only gru-sst2  # one model
    python benchmarks/accuracy.py --epochs 2       # quick smoke run
    python benchmarks/accuracy.py --device cuda    # on a GPU
    python benchmarks/accuracy.py --threads 1      # torch on one thread

The first line names the machine the seconds were measured on (torch threads,
CPU cores, CPU model). Exits with status 1 when a model misses its target accuracy.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from explainnn.data import load_dataset
from explainnn.errors import UserError
from explainnn.models import build_model
from explainnn.torch_utils import seed_everything
from explainnn.training import train_model


@dataclass(frozen=True)
class Benchmark:
    key: str
    model: str
    dataset: str
    target: float
    train: dict
    model_params: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)


BENCHMARKS = (
    Benchmark(
        "lenet-mnist", "lenet", "mnist", 0.96,
        train={"epochs": 20, "batch_size": 64, "lr": 1e-3, "augment": True},
        dataset_options={"image_size": 32},
    ),
    Benchmark(
        "lstm-mnist", "lstm", "mnist", 0.90,
        train={"epochs": 15, "batch_size": 64, "lr": 2e-3, "grad_clip": 1.0},
        model_params={"hidden_size": 128},
    ),
    Benchmark(
        "lstm-mnist1d", "lstm", "mnist1d", 0.80,
        train={"epochs": 30, "batch_size": 64, "lr": 2e-3, "grad_clip": 1.0},
        model_params={"hidden_size": 128},
    ),
    Benchmark(
        "gru-mnist1d", "gru", "mnist1d", 0.80,
        train={"epochs": 20, "batch_size": 64, "lr": 2e-3, "grad_clip": 1.0},
        model_params={"hidden_size": 128},
    ),
    Benchmark(
        "gru-sst2", "gru", "sst2", 0.75,
        train={"epochs": 2, "batch_size": 128, "lr": 2e-3, "grad_clip": 1.0},
        model_params={"hidden_size": 128, "embedding_dim": 64},
    ),
    Benchmark(
        "transformer-sst2", "transformer", "sst2", 0.80,
        train={"epochs": 2, "batch_size": 64, "lr": 1e-3, "optimizer": "adamw", "weight_decay": 0.01,
               "schedule": "linear", "warmup": 0.05},
        model_params={"d_model": 64, "num_heads": 4, "num_layers": 2, "dim_feedforward": 128, "dropout": 0.2,
                      "pooling": "mean"},
    ),
    Benchmark(
        "vit-mnist", "vit", "mnist", 0.95,
        train={"epochs": 30, "batch_size": 64, "lr": 2e-3, "augment": True, "optimizer": "adamw",
               "weight_decay": 0.05, "schedule": "cosine", "warmup": 0.05},
        model_params={"patch_size": 7, "d_model": 64, "num_heads": 4, "num_layers": 4, "dim_feedforward": 128,
                      "dropout": 0.0},
    ),
)


def machine(device: str) -> str:
    """The machine the seconds are measured on: torch threads, CPU cores and model (and the GPU, if used)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    text = f"{threads} torch thread{'' if threads == 1 else 's'} of a {os.cpu_count()}-core machine ({cpu})"
    if device != "cpu" and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def _default_root() -> Path:
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return shared if shared.is_dir() else Path("data")


def _describe(settings: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in settings.items()) or "-"


def run(benchmark: Benchmark, root: Path, epochs: int | None, seed: int, device: str) -> dict:
    dataset = load_dataset(benchmark.dataset, root=root, seed=seed, **benchmark.dataset_options)
    seed_everything(seed)
    model = build_model(benchmark.model, dataset.info, **benchmark.model_params)
    train = dict(benchmark.train, **({"epochs": epochs} if epochs is not None else {}))
    result = train_model(model, dataset, seed=seed, device=device, **train)
    return {
        "benchmark": benchmark,
        "train": train,
        "samples": f"{len(dataset.x_train):,} / {len(dataset.x_test):,}",
        "result": result,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | dataset | train / test | model params | training | test accuracy | target | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        bench, result = row["benchmark"], row["result"]
        data = bench.dataset + (f" ({_describe(bench.dataset_options)})" if bench.dataset_options else "")
        mark = "" if result.test_accuracy >= bench.target else " (missed)"
        lines.append(
            f"| {bench.model} | {data} | {row['samples']} | {_describe(bench.model_params)} | "
            f"{_describe(row['train'])} | {result.test_accuracy:.2%}{mark} | {bench.target:.0%} | "
            f"{result.seconds:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    keys = [bench.key for bench in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=_default_root(), help="data folder")
    parser.add_argument("--only", choices=keys, action="append", help="run only this benchmark (repeatable)")
    parser.add_argument("--epochs", type=int, help="override the number of epochs of every model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="cpu (default) measures the reference 2-core timings")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    selected = [bench for bench in BENCHMARKS if not args.only or bench.key in args.only]
    try:
        rows = [run(bench, args.root, args.epochs, args.seed, args.device) for bench in selected]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"seed {args.seed}, {machine(args.device)}\n")
    print(markdown(rows))
    return 0 if all(row["result"].test_accuracy >= row["benchmark"].target for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
