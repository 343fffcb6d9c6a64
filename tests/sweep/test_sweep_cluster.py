"""A Ray cluster the sweep cannot join: one line naming the address and what to check, exit code 2,
quickly, and nothing of the sweep written. Only loopback addresses are used. (A real cluster with token
authentication is not started here: its mode is read once per process.)"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from explainnn.errors import UserError  # noqa: E402
from explainnn.main import main  # noqa: E402
from explainnn.sweep import backends, run_sweep  # noqa: E402
from explainnn.sweep.backends import ClusterError  # noqa: E402

CHECKS = ("reachable", f"Ray {ray.__version__}", "Python {}.{}".format(*sys.version_info[:2]), "RAY_AUTH_TOKEN",
          "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token", "ray get-auth-token")


@pytest.fixture(autouse=True)
def no_ray_connection() -> Iterator[None]:
    """The sweep must make its own connection (a test module's Ray instance would be reused instead)."""
    if ray.is_initialized():
        pytest.skip("this process is already connected to Ray")
    yield
    assert not ray.is_initialized()  # a failed connection leaves nothing connected


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sweep_file(tmp_path: Path, address: str | None) -> Path:
    settings = {"backend": "ray", "output_dir": str(tmp_path / "sweep")}
    if address is not None:
        settings["ray_address"] = address
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"grid": {"seed": [0, 1]}, "sweep": settings}))
    return path


def test_a_closed_cluster_port_is_one_line_and_exit_code_2_at_once(tmp_path, capsys):
    address = f"127.0.0.1:{closed_port()}"
    started = time.perf_counter()
    code = main(["--sweep", str(sweep_file(tmp_path, address))])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2 and seconds < 20  # Ray alone retries such an address for minutes
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("explainnn: error: sweep.ray_address: cannot join the Ray "
                                                   f"cluster at {address} (nothing answers there")
    assert all(check in lines[0] for check in CHECKS)
    assert not (tmp_path / "sweep").exists()  # nothing written


def test_the_address_from_RAY_ADDRESS_is_named_as_such(tmp_path, monkeypatch, capsys):
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    assert main(["--sweep", str(sweep_file(tmp_path, None))]) == 2
    assert f"explainnn: error: RAY_ADDRESS: cannot join the Ray cluster at {address}" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


@pytest.fixture
def accepting() -> Iterator[str]:
    """A loopback address that accepts TCP connections (so the quick TCP probe passes)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def listening(accepting, monkeypatch) -> str:
    """An accepting address whose GCS check passes, so ``ray.init`` is reached."""
    monkeypatch.setattr(backends, "_check_gcs", lambda address, source: None)
    return accepting


class RejectingGcs:
    """Ray's GCS client, as a cluster with token authentication answers a machine without its token."""

    def __init__(self, address: str) -> None:
        self.address = address

    @property
    def cluster_id(self):
        raise ray.exceptions.AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing or "
                                                 "incorrect")


def test_a_rejected_token_is_one_line_before_ray_init(tmp_path, monkeypatch, accepting):
    monkeypatch.setattr(ray._raylet, "GcsClient", RejectingGcs)
    monkeypatch.setattr(ray, "init", lambda *a, **o: pytest.fail("ray.init must not be reached"))
    with pytest.raises(ClusterError) as caught:
        run_sweep({"grid": {"seed": [0, 1]},
                   "sweep": {"backend": "ray", "ray_address": accepting, "output_dir": str(tmp_path / "sweep")}},
                  progress=False)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        f"sweep.ray_address: cannot join the Ray cluster at {accepting} (the cluster rejected this machine: RPC "
        "error: InvalidAuthToken: Authentication token is missing or incorrect). Check")
    assert all(check in message for check in (*CHECKS, "RAY_AUTH_MODE=token"))
    assert not (tmp_path / "sweep").exists()


def test_a_connection_error_from_ray_init_becomes_a_cluster_error(tmp_path, monkeypatch, listening):
    calls = []

    def refuse(*args, **options):
        calls.append(options.get("address"))
        raise ConnectionError("Could not read 'session_name' from GCS\nsecond line of the traceback")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ClusterError) as caught:
        run_sweep({"grid": {"seed": [0, 1]},
                   "sweep": {"backend": "ray", "ray_address": listening, "output_dir": str(tmp_path / "sweep")}},
                  progress=False)
    message = str(caught.value)
    assert calls == [listening] and isinstance(caught.value, UserError) and "\n" not in message
    assert message.startswith(f"sweep.ray_address: cannot join the Ray cluster at {listening} (ConnectionError: "
                              "Could not read 'session_name' from GCS)")
    assert all(check in message for check in CHECKS)
    assert not (tmp_path / "sweep").exists()


def test_the_command_line_shows_ray_init_failures_as_one_line(tmp_path, monkeypatch, capsys, listening):
    def refuse(*args, **options):
        raise ConnectionError("authentication failed\n" + "detail " * 100)

    monkeypatch.setattr(ray, "init", refuse)
    assert main(["--sweep", str(sweep_file(tmp_path, listening))]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"cannot join the Ray cluster at {listening} (ConnectionError: authentication " \
        "failed)" in lines[0]


def test_a_long_ray_message_is_shortened(tmp_path, monkeypatch, listening):
    monkeypatch.setattr(ray, "init", lambda *a, **o: (_ for _ in ()).throw(RuntimeError("x" * 1000)))
    with pytest.raises(ClusterError) as caught:
        run_sweep({"grid": {"seed": [0, 1]},
                   "sweep": {"backend": "ray", "ray_address": listening, "output_dir": str(tmp_path / "sweep")}},
                  progress=False)
    assert "(RuntimeError: " + "x" * 100 in str(caught.value) and "x" * 300 not in str(caught.value)


def test_a_local_ray_instance_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    def broken(*args, **options):
        raise RuntimeError("Failed to start the raylet")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "init", broken)
    with pytest.raises(ClusterError, match=r"^cannot start a local Ray instance \(RuntimeError: Failed to start "
                                           r"the raylet\); .* sweep.backend: sequential"):
        run_sweep({"grid": {"seed": [0, 1]}, "sweep": {"backend": "ray", "output_dir": str(tmp_path / "sweep")}},
                  progress=False)
    assert not (tmp_path / "sweep").exists()
