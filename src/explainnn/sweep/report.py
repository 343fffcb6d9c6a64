"""The sweep report: ``sweep_report.html`` (one file, pictures inlined) and ``sweep_report.md``.

It holds the merged run table with a link to each run's folder and report, the
failures, the causal-graph overlap across classes and across training seeds, the
explanation-cluster agreement across seeds, and the evaluation of every run side
by side (the architecture comparison when the runs vary ``model.*``). The same
blocks render to both formats.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from explainnn.evaluation.summary import format_number
from explainnn.files import write_text
from explainnn.reports.html import STYLE
from explainnn.sweep.agreement import AgreementGroup
from explainnn.sweep.overlap import COMPARISONS, OverlapGroup
from explainnn.sweep.results import RunResult

Table = tuple[list[str], list[list[str]]]


@dataclass
class Section:
    """A heading with paragraphs, tables (cells may be ``(text, link)``) and pictures, in that order."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list]]] = field(default_factory=list)
    pictures: list[tuple[Path, str]] = field(default_factory=list)


def _percent(value: object) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "n/a"


def _number(value: object) -> str:
    return format_number(value) if isinstance(value, (int, float)) else "n/a"


def runs_section(runs: Sequence[RunResult], sweep_dir: Path) -> Section:
    headers = ["run", "overrides", "status", "test accuracy", "classes", "graph units", "fraction of hidden units",
               "sufficiency", "necessity", "seconds", "folder", "report"]
    rows = []
    for run in runs:
        row = run.row(sweep_dir)
        rows.append([str(row["run"]), row["label"], row["status"] + (" (resumed)" if run.resumed else ""),
                     _percent(row["test_accuracy"]), row["classes"] or "-", _number(row["graph_units"]),
                     _percent(row["graph_fraction"]), _number(row["sufficiency"]), _number(row["necessity"]),
                     _number(row["seconds"]), (row["folder"], row["folder"]) if row["folder"] else "",
                     ("report", row["report"]) if row["report"] else ""])
    return Section("Runs", ["One row per run (runs.csv). Graph units: hidden causal units of the discovered causal "
                            "graph, mean over the run's classes; sufficiency: the normalised target logit kept by "
                            "the graph's units alone, necessity: the fraction lost when they are ablated "
                            "(classes.csv per class)."],
                   [(headers, rows)])


def failures_section(runs: Sequence[RunResult]) -> Section | None:
    failed = [run for run in runs if not run.ok]
    if not failed:
        return None
    rows = [[str(run.index + 1), run.label, run.record.get("error", ""),
             (f"failed/{run.key}.log", f"failed/{run.key}.log")] for run in failed]
    return Section("Failed runs", ["Each failed run is recorded with its one-line error; the others went on. "
                                   "Re-running the sweep retries them and skips the finished runs."],
                   [(["run", "overrides", "error", "log"], rows)])


def overlap_section(groups: Sequence[OverlapGroup], comparison: str) -> Section | None:
    chosen = [group for group in groups if group.comparison == comparison]
    if not chosen:
        return None
    rows = [[group.fixed or "-", ", ".join(member.name for member in group.members), format_number(group.mean(
        group.jaccard)), format_number(group.mean(group.chance))] for group in chosen]
    text = ["Jaccard similarity |A ∩ B| / |A ∪ B| of the hidden causal units, mean over pairs (overlap.csv per "
            "pair); chance: the expected value for random unit sets of the same size per layer."]
    if comparison == COMPARISONS["seed"]:
        text.append("Hidden units of independently trained networks are not aligned (any permutation of a layer's "
                    "units gives the same function), so overlap of unit identities across seeds is expected near "
                    "chance even when the graphs' units play the same role; compare their sizes (Runs, classes.csv).")
    pictures = [(group.picture, f"causal-graph overlap {comparison}: {group.fixed}")
                for group in chosen if group.picture]
    return Section(f"Causal-graph overlap {comparison}", text, [(["shared settings", "causal graphs", "mean Jaccard",
                                                             "chance"], rows)], pictures)


def agreement_section(groups: Sequence[AgreementGroup]) -> Section | None:
    if not groups:
        return None
    rows = [[group.fixed or "-", ", ".join(group.names), group.method, str(group.k), str(group.n_samples),
             format_number(group.mean)] for group in groups]
    return Section("Explanation clusters across training seeds",
                   ["Adjusted Rand index between k-means clusterings of each seed's explanations of the same "
                    "inputs (the first run's samples, explained for their true class); 1 = the same grouping, "
                    "about 0 = chance (agreement.csv per pair)."],
                   [(["shared settings", "runs", "method", "k", "samples", "mean ARI"], rows)],
                   [(group.picture, f"ARI across seeds: {group.fixed}") for group in groups if group.picture])


def evaluation_section(runs: Sequence[RunResult]) -> Section | None:
    rows = [(run, row) for run in runs for row in run.evaluation]
    if not rows:
        return None
    section = Section("Explanation quality across runs",
                      ["Each run's evaluation (mean ± 95% CI over its samples; evaluation.csv): with runs that "
                       "vary model.*, this is the architecture comparison."])
    for metric in dict.fromkeys(row["metric"] for _, row in rows):
        chosen = [(run, row) for run, row in rows if row["metric"] == metric]
        methods = list(dict.fromkeys(row["method"] for _, row in chosen))
        cells: dict[tuple, dict] = {(run.index, row["class"], row["method"]): row for run, row in chosen}
        keys = list(dict.fromkeys((run.index, row["class"]) for run, row in chosen))
        labels = {run.index: run for run, _ in chosen}
        table = []
        for index, target in keys:
            run = labels[index]
            line = [run.label + (f" (class {target})" if target is not None else ""),
                    _percent(run.training.get("test_accuracy"))]
            for method in methods:
                cell = cells.get((index, target, method))
                line.append(f"{format_number(cell['mean'])} ± {format_number((cell['ci_high'] - cell['ci_low']) / 2)}"
                            if cell else "")
            table.append(line)
        direction = chosen[0][1].get("direction", "")
        section.tables.append(([f"{metric} ({direction} is better)" if direction else metric, "accuracy", *methods],
                               table))
    return section


def build_sections(runs: Sequence[RunResult], overlaps: Sequence[OverlapGroup], agreements: Sequence[AgreementGroup],
                   sweep_dir: Path) -> list[Section]:
    """Every section of the report that has something to show."""
    sections = [runs_section(runs, sweep_dir), failures_section(runs),
                *(overlap_section(overlaps, comparison) for comparison in COMPARISONS.values()),
                agreement_section(agreements), evaluation_section(runs)]
    return [section for section in sections if section is not None]


def _html_cell(cell: object) -> str:
    if isinstance(cell, tuple):
        text, link = cell
        return f'<a href="{html.escape(link)}">{html.escape(text)}</a>'
    return html.escape(str(cell))


def render_html(title: str, lines: Sequence[str], sections: Sequence[Section], sweep_dir: Path) -> str:
    """The report as one HTML document (pictures inlined; links relative to the sweep folder)."""
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", *(f'<p class="note">{html.escape(line)}</p>' for line in lines)]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(text)}</p>" for text in section.paragraphs]
        for headers, rows in section.tables:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        for path, caption in section.pictures:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(caption)} <span class=\"note\">"
                         f"({html.escape(str(path.relative_to(sweep_dir)))})</span></figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_cell(cell: object) -> str:
    text = f"[{cell[0]}]({cell[1]})" if isinstance(cell, tuple) else str(cell)
    return text.replace("|", "\\|").replace("\n", " ") or " "


def render_markdown(title: str, lines: Sequence[str], sections: Sequence[Section], sweep_dir: Path) -> str:
    """The report as Markdown (pictures and run folders linked relative to the sweep folder)."""
    parts = [f"# {title}\n", *(f"{line}  " for line in lines), ""]
    for section in sections:
        parts += [f"## {section.title}\n", *(f"{text}\n" for text in section.paragraphs)]
        for headers, rows in section.tables:
            parts += ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |",
                      *("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows), ""]
        parts += [f"![{caption}]({path.relative_to(sweep_dir)})\n" for path, caption in section.pictures]
    return "\n".join(parts) + "\n"


def write_sweep_report(title: str, lines: Sequence[str], sections: Sequence[Section], sweep_dir: Path) -> dict:
    """Write ``sweep_report.html`` and ``sweep_report.md`` into the sweep folder; return their paths."""
    stamp = f"written {datetime.now(timezone.utc).isoformat(timespec='seconds')}"
    lines = [*lines, stamp]
    return {"html": write_text(sweep_dir / "sweep_report.html", render_html(title, lines, sections, sweep_dir)),
            "markdown": write_text(sweep_dir / "sweep_report.md", render_markdown(title, lines, sections, sweep_dir))}
