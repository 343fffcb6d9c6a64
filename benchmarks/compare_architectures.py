"""Compare how well explanations of RNN, LSTM and GRU classifiers find the evidence on mnist_maj.

Each architecture is trained on ``mnist_maj`` (three MNIST digits side by side,
labelled by the majority digit), then explained on
test samples it classifies correctly, for their label, by LRP (relevance handed on
by biases, and absorbed by them), sensitivity analysis, saliency, Integrated
Gradients and the causal method (Integrated Gradients through the causal units of
a graph discovered per class). The score is the evaluation's
``RelevanceShareCosine``: the cosine between the share of positive relevance in
each of the three 28x28 digit blocks and the ground-truth mask's share, (0.5,
0.5, 0) over the two majority digits. It is 1 when relevance falls on the
majority digits evenly and 0 when it falls only on the odd one; relevance spread
evenly over all three blocks scores 2 / sqrt(6) = 0.82.

The models read the 28 rows of 84 pixels as time steps, as explainnn's recurrent
models read every image (each step sees a slice of all three digits), or with
``--read columns`` the 84 columns of 28 pixels, so the digits arrive one after
the other and the network has to carry the first two in its state.

    python benchmarks/compare_architectures.py                     # about 5 minutes on 2 cores
    python benchmarks/compare_architectures.py --epochs 2 --n-test 30 --no-causal   # smoke run
    python benchmarks/compare_architectures.py --json results.json # also per-sample scores
    python benchmarks/compare_architectures.py --read columns      # digits in time, about 3x longer

Prints a Markdown table: architecture x method, mean cosine +- 95% CI (t
interval over samples; samples without positive relevance are left out and
counted), and test accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy import stats

import explainnn.attributions.lrp  # noqa: F401  (registers lrp and sensitivity)
from explainnn.attributions import attribute
from explainnn.causal import discover
from explainnn.data import Dataset, load_dataset
from explainnn.errors import UserError
from explainnn.evaluation.metrics import MetricContext, metric_spec
from explainnn.models import build_model
from explainnn.torch_utils import resolve_device, seed_everything
from explainnn.training import predict, train_model

METRIC = "RelevanceShareCosine"
READS = ("rows", "columns")


@dataclass(frozen=True)
class Architecture:
    label: str
    cell: str
    num_layers: int


@dataclass(frozen=True)
class Method:
    label: str
    name: str
    options: dict = field(default_factory=dict)

    @property
    def needs_graph(self) -> bool:
        return self.name == "causal"


ARCHITECTURES = (
    Architecture("RNN shallow", "rnn", 1),
    Architecture("LSTM 1 layer", "lstm", 1),
    Architecture("LSTM 2 layers", "lstm", 2),
    Architecture("GRU 1 layer", "gru", 1),
    Architecture("GRU 2 layers", "gru", 2),
)


def methods(ig_steps: int, causal: bool, lrp_epsilon: float) -> list[Method]:
    chosen = [
        Method("LRP", "lrp", {"epsilon": lrp_epsilon}),
        Method("LRP, biases absorb", "lrp", {"epsilon": lrp_epsilon, "bias_relevance": True}),
        Method("sensitivity", "sensitivity"),
        Method("saliency", "saliency"),
        Method("IG", "integrated_gradients", {"n_steps": ig_steps}),
    ]
    if causal:
        chosen.append(Method("causal (IG)", "causal", {"base_options": {"n_steps": ig_steps}}))
    return chosen


def _default_root() -> Path:
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return shared if shared.is_dir() else Path("data")


def transposed(dataset: Dataset) -> Dataset:
    """The images with height and width swapped, so a recurrent model reads their columns."""
    channels, height, width = dataset.info.input_shape
    swap = lambda x: x.transpose(-1, -2).contiguous()  # noqa: E731
    return replace(dataset, info=replace(dataset.info, input_shape=(channels, width, height)),
                   x_train=swap(dataset.x_train), x_test=swap(dataset.x_test), mask_train=None, mask_test=None)


def correctly_classified(model: torch.nn.Module, dataset: Dataset, n: int, device: torch.device) -> np.ndarray:
    """Indices of the first ``n`` test samples the model gets right."""
    right = (predict(model, dataset.x_test, device=device) == dataset.y_test).nonzero()[:, 0]
    return right[:n].numpy()


def causal_graphs(model: torch.nn.Module, dataset: Dataset, classes: list[int], n_samples: int,
                  seed: int) -> dict[int, object]:
    """One causal graph per class, discovered on correctly classified test samples of it."""
    graphs = {}
    for target in classes:
        graphs[target] = discover(model, dataset.x_test, target, labels=dataset.y_test, n_samples=n_samples,
                                  seed=seed)
    return graphs


def attributions(method: Method, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 graphs: dict[int, object]) -> np.ndarray:
    if not method.needs_graph:
        return attribute(model, x, y, method.name, **method.options)
    scores = np.zeros(tuple(x.shape), dtype=np.float32)
    for target, graph in graphs.items():
        rows = (y == target).nonzero()[:, 0]
        if len(rows):
            scores[rows.numpy()] = attribute(model, x[rows], target, method.name, graph=graph, **method.options)
    return scores


def cosine_scores(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor,
                  scores: np.ndarray, seed: int, device: torch.device) -> np.ndarray:
    """The evaluation's RelevanceShareCosine per sample (NaN where no relevance is positive)."""
    spec = metric_spec(METRIC)
    context = MetricContext("image", tuple(x.shape[1:]), 10, seed=seed, dataset="mnist_maj", has_masks=True)
    init, calls = spec.settings(context)
    metric = spec.create(init)
    raw = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=scores, s_batch=masks.numpy(),
                 channel_first=True, device=str(device), **calls)
    return spec.scores(raw, len(x))


def summary(values: np.ndarray) -> dict:
    valid = values[np.isfinite(values)]
    if len(valid) == 0:
        return {"mean": math.nan, "ci95": math.nan, "n": 0, "left_out": int(len(values))}
    half = float(stats.t.ppf(0.975, len(valid) - 1) * valid.std(ddof=1) / math.sqrt(len(valid))) if len(valid) > 1 \
        else math.nan
    return {"mean": float(valid.mean()), "ci95": half, "n": int(len(valid)), "left_out": int(len(values) - len(valid))}


def run(architecture: Architecture, dataset: Dataset, chosen: list[Method], args: argparse.Namespace,
        device: torch.device) -> dict:
    """Train one architecture, explain its correct test predictions, score every method."""
    started = time.perf_counter()
    seen = dataset if args.read == "rows" else transposed(dataset)
    seed_everything(args.seed)
    model = build_model(architecture.cell, seen.info, hidden_size=args.hidden, num_layers=architecture.num_layers)
    trained = train_model(model, seen, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          grad_clip=1.0, seed=args.seed, device=device, progress=args.progress)
    index = correctly_classified(model, seen, args.n_test, device)
    x, y, masks = dataset.x_test[index], dataset.y_test[index], dataset.mask_test[index]
    timings = {"train": trained.seconds}
    graphs: dict[int, object] = {}
    if any(method.needs_graph for method in chosen):
        clock = time.perf_counter()
        graphs = causal_graphs(model, seen, sorted(set(y.tolist())), args.causal_samples, args.seed)
        timings["discovery"] = time.perf_counter() - clock
    results = {}
    for method in chosen:
        clock = time.perf_counter()
        scores = attributions(method, model, seen.x_test[index], y, graphs)
        if args.read == "columns":
            scores = np.ascontiguousarray(scores.swapaxes(-1, -2))
        values = cosine_scores(model, x, y, masks, scores, args.seed, device)
        timings[method.label] = time.perf_counter() - clock
        results[method.label] = {**summary(values), "scores": [None if math.isnan(v) else v for v in values.tolist()]}
    print(f"{architecture.label}: accuracy {trained.test_accuracy:.3f}, {len(index)} samples, "
          + ", ".join(f"{key} {value:.0f}s" for key, value in timings.items())
          + f", total {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return {"architecture": architecture.label, "cell": architecture.cell, "num_layers": architecture.num_layers,
            "test_accuracy": trained.test_accuracy, "n_samples": len(index), "methods": results,
            "seconds": timings}


def markdown(rows: list[dict], chosen: list[Method]) -> str:
    lines = [
        "| architecture | test accuracy | " + " | ".join(method.label for method in chosen) + " |",
        "| --- | --- | " + " | ".join("---" for _ in chosen) + " |",
    ]
    for row in rows:
        cells = []
        for method in chosen:
            result = row["methods"][method.label]
            text = f"{result['mean']:.3f} ± {result['ci95']:.3f}"
            if result["left_out"]:
                text += f" ({result['left_out']} left out)"
            cells.append(text)
        lines.append(f"| {row['architecture']} | {row['test_accuracy']:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    labels = [architecture.label for architecture in ARCHITECTURES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=_default_root(), help="data folder (mnist IDX files)")
    parser.add_argument("--only", choices=labels, action="append", help="run only this architecture (repeatable)")
    parser.add_argument("--read", choices=READS, default="rows", help="time steps are image rows or columns")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-test", type=int, default=100, help="correctly classified test samples to explain")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units per recurrent layer")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients steps")
    parser.add_argument("--lrp-epsilon", type=float, default=1e-3,
                        help="LRP stabiliser; LSTMs read by columns gain from 0.1 (less amplification)")
    parser.add_argument("--causal", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the causal method (one discovery per class)")
    parser.add_argument("--causal-samples", type=int, default=30, help="samples per class for discovery")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; these small recurrent models run fastest on one")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    parser.add_argument("--json", type=Path, help="also write every number and per-sample score here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        dataset = load_dataset("mnist_maj", args.root, seed=args.seed, n_train=args.n_train,
                               n_test=max(1000, 2 * args.n_test))
        chosen = methods(args.ig_steps, args.causal, args.lrp_epsilon)
        selected = [a for a in ARCHITECTURES if not args.only or a.label in args.only]
        rows = [run(architecture, dataset, chosen, args, device) for architecture in selected]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown(rows, chosen)
    print(table)
    if args.json:
        settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, "metric": METRIC, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
