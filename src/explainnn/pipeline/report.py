"""Step 10, report: one self-contained ``report.html`` and a ``report.md`` from what the run folder holds."""

from __future__ import annotations

from pathlib import Path

from explainnn.config import dump_config
from explainnn.pipeline.context import RunContext
from explainnn.reports import write_report


def write_run_report(ctx: RunContext, options: bool = True) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` into the run folder (``options`` is the ``report`` key)."""
    written = write_report(ctx.run_dir, config_yaml=dump_config(ctx.config), training=ctx.training,
                           graphs=ctx.graphs)
    ctx.echo(f"report      {written['html']} and {written['markdown'].name}")
    ctx.report = written
    return written
