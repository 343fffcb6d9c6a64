"""A LeNet sweep of 10 classes x 2 training seeds on Ray against the same sweep run sequentially, in one run.

The sweep (base ``config.yaml``, MNIST offline, LeNet): every class 0-9 for
training seeds 0 and 1, each run learning and checking one class's causal graph
(attribution, evaluation and the other analyses off, so the runs are the
discovery the sweep distributes). The two trained models (one per seed) are
trained once each and shared by their ten runs (``sweep.share_models``).

* **Ray**: a local Ray instance with ``--cpus`` CPUs; every run is a task with
  one CPU (one torch thread), so ``--cpus`` runs go at once.
* **sequential**: the same runs one after another in this process, each with
  ``--cpus`` torch threads (the fair use of the same cores without Ray).

Printed: wall time of each (Ray's start-up reported separately), the speed-up,
the time inside the runs, the per-task overhead of each backend (CPU slots x
wall time minus the time inside tasks, per task), the round trip of an empty
Ray task, and whether both completed the same runs. (The numbers inside the runs
differ slightly between the two, as the models are trained with 1 and with
``--cpus`` torch threads; the tests compare the merged tables at equal threads.)

    python benchmarks/bench_sweep.py                      # about 10 minutes on 2 cores
    python benchmarks/bench_sweep.py --classes 0 1 --seeds 0 --epochs 1   # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

COMPARED = ("label", "status", "classes", "key")


def sweep_spec(args: argparse.Namespace, folder: Path, cpus: float) -> dict:
    root = Path(__file__).resolve().parents[1]
    return {
        "base": str(root / "config.yaml"),
        "overrides": [f"data.root={root / 'data'}", f"training.epochs={args.epochs}",
                      f"discovery.n_samples={args.samples}", "discovery.stability.enabled=false",
                      "attribution.enabled=false", "evaluation.enabled=false", "analyses.views.enabled=false",
                      "analyses.clustering.enabled=false", "plots.enabled=false", "report=false"],
        "grid": {"seed": args.seeds, "discovery.target_class": args.classes},
        "sweep": {"output_dir": str(folder), "resources": {"num_cpus": cpus}},
    }


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return [[row[key] for key in COMPARED] for row in csv.DictReader(handle)]


def overhead(result, wall: float, slots: int) -> dict:
    """Time inside tasks and the per-task overhead: (slots x wall - time inside tasks) / tasks."""
    inside = [run.record.get("seconds") or 0.0 for run in result.runs] + [m.get("seconds") or 0.0
                                                                        for m in result.models]
    return {"tasks": len(inside), "inside_s": sum(inside),
            "overhead_per_task_s": (slots * wall - sum(inside)) / len(inside)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--cpus", type=int, default=2, help="CPU cores used by either backend")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of each of the shared models")
    parser.add_argument("--samples", type=int, default=50, help="discovery samples per class")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray
    import torch

    from explainnn.sweep import run_sweep

    torch.set_num_threads(args.cpus)
    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    try:
        clock = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - clock
        empty = ray.remote(lambda: None)
        ray.get(empty.remote())  # a warm worker
        clock = time.perf_counter()
        ray.get([empty.remote() for _ in range(100)])
        round_trip = (time.perf_counter() - clock) / 100

        clock = time.perf_counter()
        on_ray = run_sweep(sweep_spec(args, work / "ray", 1), backend="ray", progress=False)
        ray_wall = time.perf_counter() - clock
        ray.shutdown()

        clock = time.perf_counter()
        sequential = run_sweep(sweep_spec(args, work / "sequential", args.cpus), backend="sequential",
                               progress=False)
        sequential_wall = time.perf_counter() - clock
        same = rows(on_ray.table) == rows(sequential.table)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    numbers = {
        "runs": len(on_ray.runs), "failed": on_ray.failed + sequential.failed, "cpus": args.cpus,
        "ray_startup_s": startup, "ray_wall_s": ray_wall, "sequential_wall_s": sequential_wall,
        "speedup": sequential_wall / ray_wall, "speedup_with_startup": sequential_wall / (ray_wall + startup),
        "ray": overhead(on_ray, ray_wall, args.cpus), "sequential": overhead(sequential, sequential_wall, 1),
        "empty_task_round_trip_ms": 1000 * round_trip, "same_runs": same,
        "ray_version": ray.__version__, "torch_threads_sequential": args.cpus,
    }
    print(f"{numbers['runs']} runs ({len(args.classes)} classes x {len(args.seeds)} seeds), {args.cpus} CPU cores, "
          f"{len(on_ray.models)} shared models trained once")
    print("| backend | wall time | time inside tasks | overhead per task |")
    print("| --- | ---: | ---: | ---: |")
    for name, wall, key in (("Ray, 1 CPU per task", ray_wall, "ray"),
                            (f"sequential, {args.cpus} threads", sequential_wall, "sequential")):
        part = numbers[key]
        print(f"| {name} | {wall:.1f} s | {part['inside_s']:.1f} s ({part['tasks']} tasks) | "
              f"{part['overhead_per_task_s']:.2f} s |")
    print(f"speed-up {numbers['speedup']:.2f}x ({numbers['speedup_with_startup']:.2f}x counting Ray's start-up of "
          f"{startup:.1f} s); an empty Ray task round trip {numbers['empty_task_round_trip_ms']:.1f} ms; "
          f"same runs completed: {same}; failed runs: {numbers['failed']}")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))
    return 0 if same and not numbers["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
