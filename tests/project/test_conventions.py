"""The step convention, checked on the source: only the pipeline and the command line print, library code logs,
and the analysis steps read nothing of the config but their own options."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from explainnn.progress import TerminalLines, show_log_lines

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "explainnn"
PRINTING = {
    "main.py": "the command line",
}
"""Modules outside ``pipeline/`` that may print: command-line entry points only."""
CAPTURING = {
    "sweep/execute.py": "one sweep run's stderr (warnings, log messages, a traceback) goes to the run's log file",
}
"""Modules that may redirect the standard streams, and why."""


def _sources() -> dict[str, str]:
    return {path.relative_to(PACKAGE).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(PACKAGE.rglob("*.py"))}


def test_only_the_pipeline_and_command_lines_print():
    printing = sorted(name for name, text in _sources().items()
                      if "print(" in text and not name.startswith("pipeline/") and name not in PRINTING)
    assert printing == [], "library modules log (logging.getLogger(__name__)) or return data; they do not print"


def test_nothing_silences_output_by_redirecting_the_standard_streams():
    redirecting = sorted(name for name, text in _sources().items()
                         if re.search(r"redirect_std(out|err)", text) and name not in CAPTURING)
    assert redirecting == []
    assert not any("redirect_stdout" in text for text in _sources().values()), "steps print through ctx.echo"


def test_the_analysis_steps_read_only_their_options_and_earlier_results():
    for name in ("checks", "views", "text", "clustering"):
        text = (PACKAGE / "pipeline" / f"{name}.py").read_text(encoding="utf-8")
        assert "ctx.config" not in text, name
        assert "train_or_load_model" not in text, name  # another step's function: ctx.seed_models instead


def test_library_modules_log_through_their_own_logger():
    for name, text in _sources().items():
        if "logging.getLogger(" in text and name != "progress.py":
            assert re.findall(r"logging\.getLogger\(([^)]*)\)", text) == ["__name__"], name


def test_analyses_and_sweeps_draw_bars_only_through_progress():
    for name, text in _sources().items():
        if name.startswith(("analyses/", "sweep/")):
            assert not re.search(r"\btqdm\(|tqdm\.write\(", text), name


def test_log_lines_go_to_stderr_once(capsys, monkeypatch):
    package = logging.getLogger("explainnn")
    monkeypatch.setattr(package, "handlers", [h for h in package.handlers if not isinstance(h, TerminalLines)])
    monkeypatch.setattr(package, "level", logging.NOTSET)
    show_log_lines()
    show_log_lines()
    assert sum(isinstance(h, TerminalLines) for h in package.handlers) == 1
    logger = logging.getLogger("explainnn.tests.conventions")
    logger.info("one line")
    logger.debug("not shown")
    assert capsys.readouterr() == ("", "one line\n")
