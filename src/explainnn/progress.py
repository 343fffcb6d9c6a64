"""Progress bars on terminals only, and the one place log lines reach the terminal.

Redirected to a file (CI, batch jobs, ``> log``), every update of a bar would be
written out; there the steps' own one-line messages say how far a run is.
:func:`bar_shown` tells a caller which of the two it gets, so a loop whose steps
print nothing of their own can log one line per step instead of the bar.

Library code logs with :mod:`logging` (``logging.getLogger(__name__)``) and never
prints. :func:`show_log_lines` makes the messages of explainnn's loggers (info and
above) plain lines on stderr, written above any bar that is being drawn; the
command line and :func:`~explainnn.sweep.run_sweep` call it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable

from tqdm import tqdm

LOGGER = "explainnn"
"""The logger above every module's own (``explainnn.sweep.run``, ...)."""


def bar_shown(enabled: bool = True) -> bool:
    """Whether :func:`progress_bar` draws a bar: ``enabled`` and stderr is a terminal."""
    return enabled and sys.stderr.isatty()


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **options: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` (or with ``total=``), drawn only when ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, disable=not bar_shown(enabled), **options)


class TerminalLines(logging.Handler):
    """Each record's message as one line on the current ``sys.stderr``, above a bar being drawn (``tqdm.write``)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never stop the run
            self.handleError(record)


def show_log_lines(level: int = logging.INFO) -> None:
    """Show the messages of explainnn's loggers at ``level`` and above as plain lines on stderr.

    Adds one :class:`TerminalLines` handler to the ``explainnn`` logger (a second
    call adds nothing). Records still propagate, so an application's own logging
    configuration receives them too.
    """
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(handler, TerminalLines) for handler in logger.handlers):
        logger.addHandler(TerminalLines())
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
