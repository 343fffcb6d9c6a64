"""One run of a sweep, in a Ray worker or in this process: the normal pipeline for one resolved config.

The pipeline (:func:`explainnn.pipeline.run`) writes the run into a scratch folder
under ``<sweep>/.partial/``, renamed to
``<sweep>/runs/<hash>/`` only when it completed, with ``sweep_run.json`` (its
record) inside; so an interrupted sweep leaves only complete run folders, and a
re-run recognises finished runs by their folder. A failing run is recorded with
its one-line error; its log (with the traceback) goes to ``<sweep>/failed/<hash>.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from explainnn.errors import UserError
from explainnn.files import write_json

RECORD = "sweep_run.json"
"""The record a completed run folder holds (status, timings, host)."""
RUNS = "runs"
PARTIAL = ".partial"
FAILED = "failed"
LOG = "log.txt"


def run_folder(sweep_dir: str | Path, key: str) -> Path:
    """Where the completed run with hash ``key`` lives."""
    return Path(sweep_dir) / RUNS / key


def finished_record(sweep_dir: str | Path, key: str) -> dict[str, Any] | None:
    """The record of a completed run, or None when the run has not finished."""
    path = run_folder(sweep_dir, key) / RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record if record.get("status") == "ok" else None


def one_line(exc: BaseException) -> str:
    """A failure as one line: a user error's message, or the exception type and its first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}".rstrip(": ")
    return line[:500]


def execute_run(tree: dict[str, Any], key: str, sweep_dir: str | Path, threads: int | None = None,
                until: str | None = None) -> dict[str, Any]:
    """Run the resolved config ``tree`` (a ``Config.model_dump``) into ``<sweep_dir>/runs/<key>``.

    Returns the run's record: ``key``, ``status`` (``ok``/``failed``), ``error``
    (one line), ``seconds``, ``started``, ``host``. ``threads`` sets torch's CPU
    threads for the run (restored afterwards). ``until`` stops after that
    pipeline step and keeps no run folder (``"model"`` trains a model shared by
    several runs into its ``model.checkpoint``). Ctrl-C removes the scratch
    folder and propagates.
    """
    import torch

    from explainnn.config import build_config
    from explainnn.pipeline import Run, run

    sweep_dir = Path(sweep_dir)
    folder = sweep_dir / PARTIAL / f"{key}-{uuid.uuid4().hex[:8]}"
    config = build_config({**tree, "progress": False})
    folder.mkdir(parents=True)
    record: dict[str, Any] = {"key": key, "status": "ok", "error": "", "host": socket.gethostname(),
                              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    previous = torch.get_num_threads()
    clock = time.perf_counter()
    try:
        if threads:
            torch.set_num_threads(threads)
        # The run's log holds its steps' lines (``out``) and what the run writes on stderr (warnings, log
        # messages, a traceback), so a worker's output never mixes with the sweep's.
        with open(folder / LOG, "w", encoding="utf-8") as log, contextlib.redirect_stderr(log):
            try:
                if until is None:
                    run(config, run_dir=folder, out=log)
                else:
                    Run(config, run_dir=folder, out=log).run(until)
            except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the sweep
                traceback.print_exc(file=log)
                record.update(status="failed", error=one_line(exc))
        record["seconds"] = round(time.perf_counter() - clock, 3)
        if record["status"] == "ok" and until is None:
            write_json(folder / RECORD, record)
            final = run_folder(sweep_dir, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(folder, final)
        elif record["status"] != "ok":
            (sweep_dir / FAILED).mkdir(parents=True, exist_ok=True)
            os.replace(folder / LOG, sweep_dir / FAILED / f"{key}.log")
        return record
    finally:
        torch.set_num_threads(previous)
        shutil.rmtree(folder, ignore_errors=True)
