"""Run a sweep: plan and validate every run, skip finished ones, execute the rest, merge and report.

    from explainnn import run_sweep
    result = run_sweep("sweeps/lenet_seeds.yaml")       # or a mapping with the same keys
    result.table                                        # <sweep folder>/runs.csv

The sweep folder (``sweep.output_dir``, default ``<output_dir>/sweeps/<name>``)
holds ``runs/<hash>/`` (each completed run's own folder and report),
``runs.csv``, ``classes.csv``, ``evaluation.csv``, ``overlap.csv``,
``agreement.csv``, ``sweep_report.html``/``.md`` and ``failed/<hash>.log``.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from explainnn.errors import ConfigError
from explainnn.files import write_text
from explainnn.progress import bar_shown, progress_bar, show_log_lines
from explainnn.sweep.agreement import agreement, seed_groups, write_agreement
from explainnn.sweep.backends import Task, choose_backend, connect_ray, run_on_ray, run_sequential
from explainnn.sweep.execute import PARTIAL, finished_record, run_folder
from explainnn.sweep.overlap import overlap_groups, write_overlap
from explainnn.sweep.report import build_sections, write_sweep_report
from explainnn.sweep.results import RunResult, read_run, write_tables
from explainnn.sweep.spec import PlannedRun, Sweep, flat_settings, load_sweep

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """What a sweep did: its folder, every run's result, how they were executed, the records of the models
    trained once for several runs (``models``), and its wall times in seconds: ``wall_seconds`` from the
    start of :func:`run_sweep` to the report written, made of ``setup_seconds`` (validating every run's
    config, starting or joining Ray), ``runs_seconds`` (executing the runs) and ``analysis_seconds`` (the
    cross-run analyses, overlap and agreement, and the report). Each run's own time is its ``seconds`` in
    ``runs.csv``."""

    folder: Path
    runs: list[RunResult]
    backend: str
    ran: int
    resumed: int
    failed: int
    wall_seconds: float
    setup_seconds: float
    runs_seconds: float
    analysis_seconds: float
    models: list[dict[str, Any]]

    @property
    def table(self) -> Path:
        return self.folder / "runs.csv"

    def summary(self) -> str:
        """One line: how many runs ran, were reused and failed, where, and how long the whole sweep took."""
        return (f"sweep       {len(self.runs)} runs on {self.backend}: {self.ran} ran, {self.resumed} reused, "
                f"{self.failed} failed; {self.wall_seconds:.1f} s wall time in all (setup "
                f"{self.setup_seconds:.1f} s, running the runs {self.runs_seconds:.1f} s, overlap, agreement and "
                f"report {self.analysis_seconds:.1f} s); "
                "merged table runs.csv, report sweep_report.html")


def note(text: str) -> None:
    """One line of the sweep's log (``sweep: <text>``; on stderr, above the bar, through :func:`show_log_lines`)."""
    logger.info("sweep: %s", text)


def run_sweep(sweep: str | Path | dict | Sweep, overrides: list[str] | tuple[str, ...] = (), *,
              backend: str | None = None, progress: bool = True, config_given: bool = False) -> SweepResult:
    """Execute every run of ``sweep`` (a sweep file, its mapping, or a loaded :class:`Sweep`).

    ``overrides`` (``key=value``) apply to every run; ``backend`` (``auto``, ``ray``,
    ``sequential``) replaces ``sweep.backend``; ``config_given`` (a ``--config`` beside
    ``--sweep``) is refused, as the sweep file names its base. Every run's config is validated
    and the Ray instance joined before anything is written; finished runs (same resolved-config
    hash) are reused; a failing run is recorded with its one-line error and the others go on.
    ``progress``: a bar over the runs and one over the analyses on a terminal; elsewhere (logs,
    CI) one line per finished run and per analysis step. The sweep's lines are log messages
    (logger ``explainnn.sweep.run``, level info), shown on stderr (:func:`show_log_lines`).
    """
    started = time.perf_counter()
    show_log_lines()
    if config_given:
        raise ConfigError("--config and --sweep do not mix; name the base config in the sweep file (base: FILE)")
    plan = sweep if isinstance(sweep, Sweep) else load_sweep(sweep, overrides)
    settings = plan.settings if backend is None else plan.settings.model_copy(update={"backend": backend})
    chosen = choose_backend(settings)
    folder = plan.output_dir
    results, pending = _resume(plan)
    training, tasks = _tasks(pending, folder, share_models=settings.share_models)
    resumed = len(plan.runs) - len(tasks)
    if chosen == "sequential" and settings.backend == "auto":
        note("Ray is not installed; running the runs one after another (pip install 'explainnn[ray]' to run "
             "them in parallel or on a cluster)")
    session = connect_ray(settings) if tasks and chosen == "ray" else None  # a ClusterError leaves no file
    where = session.where if session else "sequential" if tasks else "nothing new (every run reused)"
    try:
        shutil.rmtree(folder / PARTIAL, ignore_errors=True)  # scratch of an interrupted earlier sweep
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "sweep.yaml", _describe_plan(plan))
        if resumed:
            note(f"{resumed} of {len(plan.runs)} runs already finished in {folder}; skipping them")
        running = time.perf_counter()
        collect = _Collector(plan, results, progress_bar(total=len(plan.runs), initial=resumed, desc="sweep",
                                                         unit="run", enabled=progress),
                             finished=resumed, lines=progress and not bar_shown(progress), shared=len(training))
        try:
            if session:
                run_on_ray([training, tasks], settings.resources, collect)
            elif tasks:
                run_sequential([training, tasks], settings.resources, collect)
        finally:
            collect.bar.close()
            shutil.rmtree(folder / PARTIAL, ignore_errors=True)
    finally:
        if session:
            session.close()
    ordered = sorted(results.values(), key=lambda result: result.index)
    write_tables(ordered, plan.varied, folder)
    runs_seconds = time.perf_counter() - running
    failed = sum(not result.ok for result in ordered)
    analysing = time.perf_counter()
    _analyse_and_report(plan, ordered, where, started=started, setup_seconds=running - started,
                        runs_seconds=runs_seconds, progress=progress)
    ended = time.perf_counter()
    result = SweepResult(folder, ordered, where, len(tasks), resumed, failed, ended - started, running - started,
                         runs_seconds, ended - analysing, collect.models)
    if progress:
        note(f"done: {result.wall_seconds:.1f} s wall time in all")
    return result


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
    """Takes each finished task's record: fills its run's result, counts it, and rewrites the merged tables.

    ``lines``: where no bar is drawn (logs, CI), one line per finished run; ``shared``: the number of
    models trained once for several runs, each reported by one line when it is done.
    """

    def __init__(self, plan: Sweep, results: dict[str, RunResult], bar: tqdm, *, finished: int = 0,
                 lines: bool = False, shared: int = 0) -> None:
        self.plan, self.results, self.bar, self.lines, self.shared = plan, results, bar, lines, shared
        self.finished = finished
        self.models: list[dict[str, Any]] = []

    def __call__(self, task: Task, record: dict[str, Any]) -> None:
        if task.until is not None:
            self.models.append(record)
            if record.get("status") != "ok":
                note(f"training the model shared by several runs failed ({record.get('error')}); "
                     "each of its runs will train its own")
            elif self.lines or not self.bar.disable:
                note(f"shared model {len(self.models)} of {self.shared} trained ({_seconds(record)})")
            return
        result = self.results[task.key]
        result.record = record
        self.bar.update(1)
        self.finished += 1
        if record.get("status") == "ok":
            read_run(result, run_folder(self.plan.output_dir, task.key))
            if self.lines:
                note(f"run {self.finished} of {len(self.results)} done: {result.label} ({_seconds(record)})")
        else:
            note(f"run {result.index + 1} ({result.label}) failed: {record.get('error')}")
        write_tables(list(self.results.values()), self.plan.varied, self.plan.output_dir)


def _seconds(record: dict[str, Any]) -> str:
    seconds = record.get("seconds")
    return f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "time unknown"


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


def _analyse_and_report(plan: Sweep, runs: list[RunResult], where: str, *, started: float, setup_seconds: float,
                        runs_seconds: float, progress: bool) -> None:
    """Overlap, agreement (a step per group of seeds) and the report, under a bar (terminal) or a line per step."""
    done = [run for run in runs if run.ok]
    groups = seed_groups(done)
    lines = progress and not bar_shown(progress)
    steps = 2 + len(groups)
    if progress:
        models = sum(len(members) for members in groups)
        note(f"analysing {len(done)} completed runs in {steps} steps: causal-graph overlap, explanation-cluster "
             f"agreement of {len(groups)} group{'s' if len(groups) != 1 else ''} of seeds ({models} models), "
             "the report")
    analysing = time.perf_counter()
    step = 0

    def advance(text: str, clock: float) -> None:
        nonlocal step
        step += 1
        bar.update(1)
        if lines:
            note(f"step {step} of {steps}: {text}, {time.perf_counter() - clock:.1f} s")

    with progress_bar(total=steps, desc="sweep analyses", unit="step", enabled=progress) as bar:
        clock = time.perf_counter()
        bar.set_postfix_str("overlap")
        overlaps = overlap_groups(done)
        write_overlap(overlaps, plan.output_dir)
        pairs = sum(len(group.members) * (len(group.members) - 1) // 2 for group in overlaps)
        advance(f"overlap of {len(overlaps)} groups of causal graphs ({pairs} pairs)", clock)
        configs = {run.key: run.config for run in plan.runs}
        agreements = []
        for number, members in enumerate(groups, 1):
            clock = time.perf_counter()
            bar.set_postfix_str(f"agreement {number} of {len(groups)}")
            agreements.append(agreement(members, configs))
            group = agreements[-1]
            advance(f"explanation-cluster agreement {number} of {len(groups)}: {len(members)} models "
                    f"({', '.join(group.names)}{'; ' + group.fixed if group.fixed else ''}), mean ARI "
                    f"{group.mean:.2f}", clock)
        clock = time.perf_counter()
        bar.set_postfix_str("report")
        write_agreement(agreements, plan.output_dir)
        failed = len(runs) - len(done)
        summary = [f"{len(runs)} runs from {plan.source}: {len(done)} complete, {failed} failed, "
                   f"{sum(run.resumed for run in runs)} reused from an earlier sweep",
                   f"executed on {where}; varied: {', '.join(plan.varied) or '-'}",
                   f"wall time up to this report {time.perf_counter() - started:.1f} s: setup (validating the "
                   f"configs, starting or joining Ray) {setup_seconds:.1f} s, running the runs {runs_seconds:.1f} s, "
                   f"overlap and agreement {time.perf_counter() - analysing:.1f} s "
                   "(each run's own time: seconds in runs.csv)"]
        write_sweep_report(f"Sweep {plan.name}", summary,
                           build_sections(runs, overlaps, agreements, plan.output_dir), plan.output_dir)
        advance("agreement pictures and report sweep_report.html", clock)


def _describe_plan(plan: Sweep) -> str:
    """``sweep.yaml``: the sweep's settings and every run's overrides and hash (the plan, for the record)."""
    import yaml

    document = {"name": plan.name, "source": plan.source, "sweep": plan.settings.model_dump(mode="json"),
                "runs": [{"run": run.index + 1, "key": run.key, "overrides": list(run.overrides)}
                         for run in plan.runs]}
    return yaml.safe_dump(document, sort_keys=False)
