"""Where a sweep's runs execute: Ray tasks (local instance or a cluster), or one after another here.

Each backend calls ``on_record(task, record)`` as each run finishes, in the order
they finish, so results stream into the merged table. Ray is optional: the
``auto`` backend falls back to running sequentially, and says so once.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explainnn.errors import ConfigError, UserError
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


class ClusterError(UserError):
    """A Ray cluster that cannot be joined, or a local Ray instance that cannot be started."""


@dataclass
class RaySession:
    """The Ray instance a sweep runs on: where it is (for the summary), and whether the sweep started it."""

    where: str
    started_here: bool

    def close(self) -> None:
        """Disconnect from Ray (shutting down a local instance) when the sweep connected or started it."""
        if self.started_here:
            import ray

            ray.shutdown()


def connect_ray(settings: SweepSettings, *, probe_timeout: float = 5.0) -> RaySession:
    """Join the Ray instance the sweep runs on, before anything of the sweep is written.

    Uses the Ray instance this process is already connected to; else connects to
    ``settings.ray_address`` or ``RAY_ADDRESS`` (shipping the explainnn package to
    the cluster's workers), else starts a new local instance for the sweep
    (``local_cpus`` CPUs, default all; never one found running on this machine),
    which :meth:`RaySession.close` shuts down. A cluster address that nothing
    answers at (a TCP connection within ``probe_timeout`` seconds), or whose
    cluster rejects this machine's authentication token, fails at once; any
    failure to join or start is a one-line :class:`ClusterError` naming the
    address and what to check.
    """
    import ray

    if ray.is_initialized():
        return RaySession(_describe_cluster(ray), started_here=False)
    source, address = ("sweep.ray_address", settings.ray_address) if settings.ray_address else (
        "RAY_ADDRESS", os.environ.get("RAY_ADDRESS") or None)
    try:
        if address:
            import explainnn

            _probe(address, source, probe_timeout)
            _check_gcs(address, source)
            ray.init(address=address, log_to_driver=False,
                     runtime_env={"py_modules": [str(Path(explainnn.__file__).parent)]})
        else:
            ray.init(address="local", num_cpus=settings.local_cpus, include_dashboard=False, log_to_driver=False)
        return RaySession(_describe_cluster(ray), started_here=True)
    except ClusterError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever Ray raises, the user gets one line saying what to check
        ray.shutdown()
        if address:
            raise ClusterError(_cannot_join(source, address, _reason(exc))) from exc
        raise ClusterError(f"cannot start a local Ray instance ({_reason(exc)}); set sweep.ray_address to a "
                           "running cluster, or sweep.backend: sequential to run without Ray") from exc


def _probe(address: str, source: str, timeout: float) -> None:
    """Fail at once when nothing accepts a TCP connection at ``address`` (``host:port`` or ``ray://host:port``);
    Ray itself retries such an address for minutes. Other forms (``auto``) are left to Ray."""
    endpoint = address.removeprefix("ray://")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ClusterError(_cannot_join(source, address, f"nothing answers there: {reason}")) from exc


def _check_gcs(address: str, source: str) -> None:
    """Ask the cluster's GCS for its id, as ``ray.init`` does first: a rejected token is known within milliseconds
    here, where ``ray.init`` retries it for about 20 seconds and then names only the address. Ray Client
    (``ray://``) and ``auto`` addresses, and Ray versions without this client, are left to ``ray.init``."""
    if address.startswith("ray://") or ":" not in address:
        return
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]
        from ray.exceptions import AuthenticationError
    except ImportError:
        return
    try:
        GcsClient(address=address).cluster_id  # noqa: B018 - the request is the check
    except TypeError:
        return  # another Ray version's client
    except AuthenticationError as exc:
        reason = getattr(exc, "message", "") or "authentication token missing or incorrect"
        raise ClusterError(_cannot_join(source, address, f"the cluster rejected this machine: {reason}")) from exc
    except Exception as exc:  # noqa: BLE001 - any other failure to reach the GCS, in one line
        raise ClusterError(_cannot_join(source, address, _reason(exc))) from exc


def _cannot_join(source: str, address: str, reason: str) -> str:
    """The one-line error for a cluster that cannot be joined: the address, the reason and what to check."""
    import ray

    python = ".".join(map(str, sys.version_info[:2]))
    return (f"{source}: cannot join the Ray cluster at {address} ({reason}). Check that the address is reachable "
            "from this machine (`ray start --head` prints it; Ray Client addresses start with ray://), that the "
            f"cluster runs the same Ray and Python versions as this machine (Ray {ray.__version__}, Python "
            f"{python}), and, if the cluster uses token authentication, that this machine sets RAY_AUTH_MODE=token "
            "and has the cluster's token (`ray get-auth-token` on the head node prints it) in RAY_AUTH_TOKEN, in a "
            "file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token")


def _reason(exc: BaseException) -> str:
    """The first line of Ray's message, shortened (Ray's own messages run to paragraphs)."""
    text = one_line(exc)
    return text if len(text) <= 200 else text[:197] + "..."


def run_on_ray(phases: Sequence[Sequence[Task]], resources: Resources, on_record: OnRecord) -> None:
    """Execute every task as a Ray task with ``resources``, phase after phase, on the Ray instance this process
    is connected to (:func:`connect_ray`). Ctrl-C cancels the runs still pending or running."""
    import ray

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

