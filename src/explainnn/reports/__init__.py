"""Run reports: one self-contained ``report.html`` and a ``report.md`` per run folder.

``write_report(run_dir, ...)`` gathers what the run produced (see
:mod:`explainnn.reports.content`) and writes both files into the run folder.
Sections of disabled steps say so instead of failing, and a report can be
rebuilt from a finished run folder alone::

    python -m explainnn.reports output/mnist/lenet
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from explainnn.reports.content import CircuitSection, ClassSection, EvaluationSection, Picture, Report, collect
from explainnn.reports.html import render_html, write_html
from explainnn.reports.markdown import render_markdown, write_markdown


def write_report(
    run_dir: str | Path,
    *,
    config_yaml: str | None = None,
    training: Mapping[str, Any] | None = None,
    graphs: Mapping[int, Any] | None = None,
    artifacts: Mapping[str, str | Path] | None = None,
    title: str | None = None,
) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` into ``run_dir``; return ``{"html": path, "markdown": path}``.

    ``config_yaml`` (the resolved config text), ``training`` (the checkpoint's
    training record) and ``graphs`` (target class -> ``CausalGraph``) are read
    from the run folder when not given; the evaluation tables and every PNG of
    the run folder always are (``views/*.png`` gets a section "Views", and so
    on). ``artifacts`` adds pictures from elsewhere (caption -> PNG path) under
    "Other pictures".
    """
    report = collect(run_dir, config_yaml=config_yaml, training=training, graphs=graphs, artifacts=artifacts,
                     title=title)
    return {"html": write_html(report), "markdown": write_markdown(report)}


__all__ = [
    "CircuitSection",
    "ClassSection",
    "EvaluationSection",
    "Picture",
    "Report",
    "collect",
    "render_html",
    "render_markdown",
    "write_html",
    "write_markdown",
    "write_report",
]
