"""Rebuild the report of a finished run: ``python -m explainnn.reports RUN_DIR`` (``pipeline.report.rebuild_report``)."""

from __future__ import annotations

import sys

from explainnn.pipeline.report import rebuild_report

if __name__ == "__main__":
    sys.exit(rebuild_report())
