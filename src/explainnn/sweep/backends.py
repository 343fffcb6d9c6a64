"""Where a sweep's runs execute: Ray tasks (local instance or a cluster), or one after another here.

Each backend calls ``on_record(task, record)`` as each run finishes, in the order
they finish, so results stream into the merged table. Ray is optional: the
``auto`` backend falls back to running sequentially, and says so once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explainnn.errors import ConfigError
from explainnn.sweep.execute import execute_run, one_line
from explainnn.sweep.spec import Resources, SweepSettings


@dataclass(frozen=True)
class Task:
    """What a backend needs to execute one run."""

    key: str
    tree: dict[str, Any]
    sweep_dir: str
    until: str | None = None


OnRecord = Callable[[Task, dict[str, Any]], None]


def ray_available() -> bool:
    """Whether Ray can be imported here."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(settings: SweepSettings) -> str:
    """``ray`` or ``sequential`` for ``settings.backend``; ``ray`` without Ray installed is a one-line error."""
    if settings.backend == "sequential":
        return "sequential"
    if ray_available():
        return "ray"
    if settings.backend == "ray":
        raise ConfigError("sweep.backend: 'ray' needs Ray, which is not installed; "
                          "pip install 'explainnn[ray]' or set sweep.backend: sequential")
    return "sequential"


def run_sequential(phases: Sequence[Sequence[Task]], resources: Resources, on_record: OnRecord) -> None:
    """Execute the tasks one after another in this process, each with ``resources.num_cpus`` torch threads."""
    for task in (task for phase in phases for task in phase):
        on_record(task, execute_run(task.tree, task.key, task.sweep_dir, _threads(resources), task.until))


def run_on_ray(phases: Sequence[Sequence[Task]], settings: SweepSettings, on_record: OnRecord) -> str:
    """Execute every task as a Ray task with the sweep's resources, phase after phase; return where Ray ran.

    Uses the Ray instance this process is already connected to; else connects to
    ``settings.ray_address`` or ``RAY_ADDRESS`` (shipping the explainnn package to
    the cluster's workers), else starts a new local instance for the sweep
    (``local_cpus`` CPUs, default all; never one found running on this machine)
    and shuts it down afterwards. Ctrl-C
    cancels the runs still pending or running.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        address = settings.ray_address or os.environ.get("RAY_ADDRESS") or None
        if address:
            import explainnn

            ray.init(address=address, log_to_driver=False,
                     runtime_env={"py_modules": [str(Path(explainnn.__file__).parent)]})
        else:
            ray.init(address="local", num_cpus=settings.local_cpus, include_dashboard=False, log_to_driver=False)
    where = _describe_cluster(ray)
    resources = settings.resources
    remote = ray.remote(execute_run).options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                                             max_retries=0)
    pending: dict[Any, Task] = {}
    try:
        for tasks in phases:
            pending = {remote.remote(task.tree, task.key, task.sweep_dir, _threads(resources), task.until): task
                       for task in tasks}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(done[0])
                try:
                    record = ray.get(done[0])
                except Exception as exc:  # noqa: BLE001 - a crashed worker fails its run, not the sweep
                    record = {"key": task.key, "status": "failed", "error": one_line(_cause(exc)), "seconds": None}
                on_record(task, record)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return where


def _threads(resources: Resources) -> int:
    return max(1, int(resources.num_cpus))


def _cause(exc: BaseException) -> BaseException:
    """The worker's exception inside a Ray task error, when Ray kept it."""
    return getattr(exc, "cause", None) or exc


def _describe_cluster(ray: Any) -> str:
    total = ray.cluster_resources()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    gpus = f", {total['GPU']:g} GPUs" if total.get("GPU") else ""
    return f"Ray ({len(nodes)} node{'s' if len(nodes) != 1 else ''}, {total.get('CPU', 0):g} CPUs{gpus})"

