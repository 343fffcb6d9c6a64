"""Run a sweep: plan and validate every run, skip finished ones, execute the rest, merge and report.

    from explainnn import run_sweep
    result = run_sweep("sweeps/lenet_seeds.yaml")       # or a mapping with the same keys
    print(result.folder / "runs.csv")

The sweep folder (``sweep.output_dir``, default ``<output_dir>/sweeps/<name>``)
holds ``runs/<hash>/`` (each completed run's own folder and report),
``runs.csv``, ``classes.csv``, ``evaluation.csv``, ``overlap.csv``,
``agreement.csv``, ``sweep_report.html``/``.md`` and ``failed/<hash>.log``.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from explainnn.errors import ConfigError
from explainnn.files import write_text
from explainnn.sweep.agreement import agreement, seed_groups, write_agreement
from explainnn.sweep.backends import Task, choose_backend, run_on_ray, run_sequential
from explainnn.sweep.execute import PARTIAL, finished_record, run_folder
from explainnn.sweep.overlap import overlap_groups, write_overlap
from explainnn.sweep.report import build_sections, write_sweep_report
from explainnn.sweep.results import RunResult, read_run, write_tables
from explainnn.sweep.spec import PlannedRun, Sweep, flat_settings, load_sweep


@dataclass
class SweepResult:
    """What a sweep did: its folder, every run's result, how they were executed, and the records of the
    models trained once for several runs (``models``)."""

    folder: Path
    runs: list[RunResult]
    backend: str
    ran: int
    resumed: int
    failed: int
    seconds: float
    models: list[dict[str, Any]]

    @property
    def table(self) -> Path:
        return self.folder / "runs.csv"

    def summary(self) -> str:
        """One line: how many runs ran, were reused and failed, where, and how long it took."""
        return (f"sweep       {len(self.runs)} runs on {self.backend}: {self.ran} ran, {self.resumed} reused, "
                f"{self.failed} failed, {self.seconds:.1f} s; merged table runs.csv, report sweep_report.html")


def note(text: str) -> None:
    """One line on stderr, beside the progress bar."""
    tqdm.write(f"sweep: {text}", file=sys.stderr)


def run_sweep(sweep: str | Path | dict | Sweep, overrides: list[str] | tuple[str, ...] = (), *,
              backend: str | None = None, progress: bool = True, config_given: bool = False) -> SweepResult:
    """Execute every run of ``sweep`` (a sweep file, its mapping, or a loaded :class:`Sweep`).

    ``overrides`` (``key=value``) apply to every run; ``backend`` (``auto``, ``ray``,
    ``sequential``) replaces ``sweep.backend``; ``config_given`` (a ``--config`` beside
    ``--sweep``) is refused, as the sweep file names its base. Every run's config is validated
    before anything runs; finished runs (same resolved-config hash) are reused;
    a failing run is recorded with its one-line error and the others go on.
    """
    if config_given:
        raise ConfigError("--config and --sweep do not mix; name the base config in the sweep file (base: FILE)")
    plan = sweep if isinstance(sweep, Sweep) else load_sweep(sweep, overrides)
    settings = plan.settings if backend is None else plan.settings.model_copy(update={"backend": backend})
    chosen = choose_backend(settings)
    folder = plan.output_dir
    shutil.rmtree(folder / PARTIAL, ignore_errors=True)  # scratch of an interrupted earlier sweep
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "sweep.yaml", _describe_plan(plan))
    started = time.perf_counter()
    results, pending = _resume(plan)
    training, tasks = _tasks(pending, folder, share_models=settings.share_models)
    resumed = len(plan.runs) - len(tasks)
    if resumed:
        note(f"{resumed} of {len(plan.runs)} runs already finished in {folder}; skipping them")
    if chosen == "sequential" and settings.backend == "auto":
        note("Ray is not installed; running the runs one after another (pip install 'explainnn[ray]' to run "
             "them in parallel or on a cluster)")
    collect = _Collector(plan, results, tqdm(total=len(plan.runs), initial=resumed, desc="sweep", unit="run",
                                             disable=not progress, file=sys.stderr))
    where = "sequential" if tasks else "nothing new (every run reused)"
    try:
        if tasks and chosen == "ray":
            where = run_on_ray([training, tasks], settings, collect)
        elif tasks:
            run_sequential([training, tasks], settings.resources, collect)
    finally:
        collect.bar.close()
        shutil.rmtree(folder / PARTIAL, ignore_errors=True)
    ordered = sorted(results.values(), key=lambda result: result.index)
    write_tables(ordered, plan.varied, folder)
    seconds = time.perf_counter() - started
    failed = sum(not result.ok for result in ordered)
    _analyse_and_report(plan, ordered, where, seconds)
    return SweepResult(folder, ordered, where, len(tasks), resumed, failed, seconds, collect.models)


def _resume(plan: Sweep) -> tuple[dict[str, RunResult], list[PlannedRun]]:
    """Every run's result (filled from its folder when an earlier sweep finished it), and the runs still to do."""
    results: dict[str, RunResult] = {}
    pending: list[PlannedRun] = []
    for run in plan.runs:
        record = finished_record(plan.output_dir, run.key)
        result = RunResult(run.index, run.label, run.key, run.values, flat_settings(run.config), record or {})
        results[run.key] = result
        if record:
            result.resumed = True
            read_run(result, run_folder(plan.output_dir, run.key))
        else:
            pending.append(run)
    return results, pending


class _Collector:
    """Takes each finished task's record: fills its run's result, counts it, and rewrites the merged tables."""

    def __init__(self, plan: Sweep, results: dict[str, RunResult], bar: tqdm) -> None:
        self.plan, self.results, self.bar = plan, results, bar
        self.models: list[dict[str, Any]] = []

    def __call__(self, task: Task, record: dict[str, Any]) -> None:
        if task.until is not None:
            self.models.append(record)
            if record.get("status") != "ok":
                note(f"training the model shared by several runs failed ({record.get('error')}); "
                     "each of its runs will train its own")
            return
        result = self.results[task.key]
        result.record = record
        if record.get("status") == "ok":
            read_run(result, run_folder(self.plan.output_dir, task.key))
        else:
            note(f"run {result.index + 1} ({result.label}) failed: {record.get('error')}")
        self.bar.update(1)
        write_tables(list(self.results.values()), self.plan.varied, self.plan.output_dir)


def _tasks(pending: list[PlannedRun], folder: Path, *, share_models: bool) -> tuple[list[Task], list[Task]]:
    """The tasks that train models shared by several runs, and the runs' tasks.

    With ``share_models``, runs that would train the same model (same
    ``Config.training_hash``, no ``model.checkpoint`` of their own,
    ``training.train: auto``) load it from ``<sweep>/models/``, trained once by
    a first phase of tasks; a run alone with its model trains it itself there.
    """
    trees = {run.key: run.config.model_dump(mode="json") for run in pending}
    shared: dict[str, list[PlannedRun]] = {}
    for run in pending:
        config = run.config
        if share_models and config.model.checkpoint is None and config.training.train == "auto":
            path = folder / "models" / f"{config.data.name}-{config.model.name}-{config.training_hash()}.pt"
            trees[run.key]["model"]["checkpoint"] = str(path)
            shared.setdefault(str(path), []).append(run)
    training = [Task(f"model-{Path(path).stem}", trees[runs[0].key], str(folder), until="model")
                for path, runs in shared.items() if len(runs) > 1 and not Path(path).exists()]
    return training, [Task(run.key, trees[run.key], str(folder)) for run in pending]


def _analyse_and_report(plan: Sweep, runs: list[RunResult], where: str, seconds: float) -> None:
    done = [run for run in runs if run.ok]
    overlaps = overlap_groups(done)
    write_overlap(overlaps, plan.output_dir)
    configs = {run.key: run.config for run in plan.runs}
    agreements = [agreement(members, configs) for members in seed_groups(done)]
    write_agreement(agreements, plan.output_dir)
    failed = len(runs) - len(done)
    lines = [f"{len(runs)} runs from {plan.source}: {len(done)} complete, {failed} failed, "
             f"{sum(run.resumed for run in runs)} reused from an earlier sweep",
             f"executed on {where} in {seconds:.1f} s; varied: {', '.join(plan.varied) or '-'}"]
    write_sweep_report(f"Sweep {plan.name}", lines, build_sections(runs, overlaps, agreements, plan.output_dir),
                       plan.output_dir)


def _describe_plan(plan: Sweep) -> str:
    """``sweep.yaml``: the sweep's settings and every run's overrides and hash (the plan, for the record)."""
    import yaml

    document = {"name": plan.name, "source": plan.source, "sweep": plan.settings.model_dump(mode="json"),
                "runs": [{"run": run.index + 1, "key": run.key, "overrides": list(run.overrides)}
                         for run in plan.runs]}
    return yaml.safe_dump(document, sort_keys=False)
