"""Step 10, report: one self-contained ``report.html`` and a ``report.md`` from what the run folder holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from explainnn.config import dump_config
from explainnn.errors import UserError
from explainnn.pipeline.context import RunContext
from explainnn.reports import write_report


def write_run_report(ctx: RunContext, options: bool = True) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` into the run folder (``options`` is the ``report`` key)."""
    written = write_report(ctx.run_dir, config_yaml=dump_config(ctx.config), training=ctx.training,
                           graphs=ctx.graphs)
    ctx.echo(f"report      {written['html']} and {written['markdown'].name}")
    ctx.report = written
    return written


def rebuild_report(argv: list[str] | None = None) -> int:
    """``python -m explainnn.reports RUN_DIR``: rebuild the report of a finished run; exit code 2 on a user error."""
    parser = argparse.ArgumentParser(prog="python -m explainnn.reports",
                                     description="Rebuild the report of a finished run.")
    parser.add_argument("run_dir", help="a run folder, e.g. output/mnist/lenet")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.run_dir)
    except UserError as exc:
        print(f"explainnn: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {paths['html']} and {paths['markdown']}")
    return 0
