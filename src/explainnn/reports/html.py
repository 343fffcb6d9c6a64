"""The run report as one self-contained HTML file.

Pictures are inlined as base64 ``data:`` URIs and the style sheet is inline, so
``report.html`` opens in any browser without a server and survives being
mailed or moved; links to the run's CSV/JSON files are relative and work while
the report sits in its run folder.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from explainnn.files import write_text
from explainnn.reports import tables
from explainnn.reports.content import Picture, Report

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { border-bottom: 2px solid #d62728; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr.reference td { background: #fdeaea; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: 12px; }
.note { color: #555; font-size: 13px; }
.missing { color: #888; font-style: italic; }
"""


def _table(table: tables.Table, *, numeric: tuple[int, ...] = (), highlight: str | None = None,
           highlight_column: int | None = None) -> str:
    headers, rows = table
    if not rows:
        return '<p class="missing">nothing to show</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        marked = highlight is not None and highlight_column is not None and row[highlight_column] == highlight
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' if i in numeric else f"<td>{html.escape(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f'<tr class="reference">{cells}</tr>' if marked else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _picture(picture: Picture) -> str:
    data = base64.b64encode(picture.path.read_bytes()).decode("ascii")
    caption = html.escape(picture.caption)
    return (f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption} <span class=\"note\">({html.escape(picture.relative)})</span></figcaption>"
            "</figure>")


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def render_html(report: Report) -> str:
    """The whole report as an HTML document (a string)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
        f'<p class="note">Run folder <code>{html.escape(str(report.run_dir))}</code>; report written '
        f"{html.escape(report.created)}.</p>",
        "<h2>Model</h2>",
        _table(tables.training_table(report.training)) if report.training else _missing(
            "no training record (training.json) in the run folder"),
        "<h2>Causal graphs</h2>",
    ]
    parts += _class_sections(report)
    if report.circuits:
        parts.append("<h2>Minimal circuits</h2>")
        parts += _circuit_sections(report)
    parts.append("<h2>Attributions</h2>")
    if report.attributions:
        parts.extend(_picture(picture) for picture in report.attributions)
    else:
        parts.append(_missing("no attribution pictures (attribution.enabled: false or plots.enabled: false)"))
    parts.append("<h2>Evaluation</h2>")
    parts += _evaluation_sections(report)
    for title, pictures in report.others.items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.extend(_picture(picture) for picture in pictures)
    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{html.escape(report.config_yaml)}</pre>" if report.config_yaml else _missing(
        "no config.yaml in the run folder"))
    if report.files:
        parts.append("<h2>Files</h2><ul>")
        parts.extend(f'<li><a href="{html.escape(name)}">{html.escape(name)}</a></li>' for name in report.files)
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _class_sections(report: Report) -> list[str]:
    """Per explained class: the graph's layers, the circuit checks, stability and the pictures."""
    parts: list[str] = []
    if not report.classes:
        parts.append(_missing("discovery did not run (discovery.enabled: false) or wrote nothing"))
    for section in report.classes:
        parts.append(f"<h3>Class {section.target}</h3>")
        if section.edge_circuit:
            parts.append(f'<p class="note">Edge circuit: {html.escape(tables.edge_circuit_line(section))}</p>')
            main = section.pictures[:1] if section.pictures and section.pictures[0].path.name == "edge_circuit.png" \
                else []
            parts.extend(_picture(picture) for picture in main)
            parts.append(f"<h4>The edge circuit's strongest edges (of {len(section.top_edges)} shown; all in "
                         "edges.csv)</h4>")
            parts.append(_table(tables.top_edges_table(section), numeric=(3, 4)))
            parts.append("<h4>Circuit faithfulness (MIB)</h4>")
            if section.mib:
                parts.append(_table(tables.mib_table(section), numeric=(1, 2, 3, 4)))
            else:
                parts.append(_missing("no MIB curves (circuit.mib: false)"))
            if section.mib_picture:
                parts.append(_picture(section.mib_picture))
            if section.layers:
                parts.append("<h4>Significance graph (discovery)</h4>")
        if section.layers:
            options = section.metadata.get("options", {})
            described = ", ".join(f"{k} {v}" for k, v in options.items() if v is not None and k != "layers")
            parts.append(f'<p class="note">{section.metadata.get("n_samples", "?")} samples '
                         f'({html.escape(str(section.metadata.get("inputs", "test split")))}); {section.n_edges} '
                         f"edges; {html.escape(described)}</p>")
            parts.append(_table(tables.layers_table(section), numeric=(2, 3)))
        if section.circuit is not None:
            parts.append("<h4>Sufficiency and necessity of the causal graph</h4>")
            parts.append(_table(tables.circuit_table(section.circuit, "causal graph"), numeric=(1, 2, 3)))
        if section.stability:
            parts.append(f"<h4>Stability of the causal graph (layer "
                         f"{html.escape(str(section.stability.get('layer')))})</h4>")
            parts.append(_table(tables.stability_table(section.stability), numeric=(1, 2, 3)))
            note = tables.stability_note(section.stability)
            if note:
                parts.append(f'<p class="note">{html.escape(note)}</p>')
        shown = section.pictures[1:] if section.edge_circuit and section.pictures and \
            section.pictures[0].path.name == "edge_circuit.png" else section.pictures
        parts.extend(_picture(picture) for picture in shown)
    return parts


def _circuit_sections(report: Report) -> list[str]:
    """Per class: the minimal circuit's size, its held-out sufficiency and necessity, and its pictures."""
    parts: list[str] = []
    for section in report.circuits:
        parts.append(f"<h3>Class {section.target}</h3>")
        line = tables.circuit_line(section)
        if line:
            parts.append(f'<p class="note">{html.escape(line)}</p>')
        if section.check is not None:
            parts.append("<h4>Sufficiency and necessity of the minimal circuit</h4>")
            parts.append(_table(tables.circuit_table(section.check, "minimal circuit"), numeric=(1, 2, 3)))
        parts.extend(_picture(picture) for picture in section.pictures)
    return parts


def _evaluation_sections(report: Report) -> list[str]:
    """Per evaluation: the samples line, the metrics table, pictures, skipped metrics and settings."""
    parts: list[str] = []
    if not report.evaluations:
        parts.append(_missing("the evaluation did not run (evaluation.enabled: false)"))
    for evaluation in report.evaluations:
        if len(report.evaluations) > 1:
            parts.append(f"<h3>{html.escape(evaluation.name)}</h3>")
        line = tables.samples_line(evaluation)
        if line:
            parts.append(f'<p class="note">{html.escape(line)}</p>')
        parts.append(_table(tables.metrics_table(evaluation), numeric=(4, 6, 7, 8), highlight=evaluation.reference,
                            highlight_column=3))
        parts.extend(_picture(picture) for picture in evaluation.pictures)
        if evaluation.skipped:
            parts.append("<h4>Skipped</h4>")
            parts.append(_table(tables.skipped_table(evaluation)))
        if evaluation.settings.get("metrics"):
            parts.append("<details><summary>Metric settings (identical for every method)</summary>")
            parts.append(_table(tables.settings_table(evaluation)))
            parts.append("</details>")
    return parts


def write_html(report: Report, path: str | Path | None = None) -> Path:
    """Write ``report.html`` (default: in the run folder) atomically; return its path."""
    return write_text(Path(path) if path is not None else report.run_dir / "report.html", render_html(report))
