"""The run report as Markdown (``report.md``), for reading on a code host or in an editor.

Pictures are linked by their paths relative to the run folder, where
``report.md`` is written, so they show wherever the folder is browsed.
"""

from __future__ import annotations

from pathlib import Path

from explainnn.files import write_text
from explainnn.reports import tables
from explainnn.reports.content import Picture, Report


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(table: tables.Table) -> str:
    headers, rows = table
    if not rows:
        return "_nothing to show_\n"
    lines = ["| " + " | ".join(_cell(h) or " " for h in headers) + " |",
             "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _picture(picture: Picture) -> str:
    return f"![{picture.caption}]({picture.relative})\n\n_{picture.caption}_\n"


def render_markdown(report: Report) -> str:
    """The whole report as Markdown (a string)."""
    parts = [f"# {report.title}\n", f"Run folder `{report.run_dir}`; report written {report.created}.\n",
             "## Model\n",
             _table(tables.training_table(report.training)) if report.training else "_no training record_\n",
             "## Causal graphs\n"]
    if not report.classes:
        parts.append("_discovery did not run (discovery.enabled: false) or wrote nothing_\n")
    for section in report.classes:
        parts.append(f"### Class {section.target}\n")
        pictures = section.pictures
        if section.edge_circuit:
            parts.append(f"Edge circuit: {tables.edge_circuit_line(section)}\n")
            if pictures and pictures[0].path.name == "edge_circuit.png":
                parts.append(_picture(pictures[0]))
                pictures = pictures[1:]
            parts.append(f"#### The edge circuit's strongest edges (of {len(section.top_edges)} shown; all in "
                         "edges.csv)\n")
            parts.append(_table(tables.top_edges_table(section)))
            parts.append("#### Circuit faithfulness (MIB)\n")
            parts.append(_table(tables.mib_table(section)) if section.mib else "_no MIB curves (circuit.mib: false)_\n")
            if section.mib_picture:
                parts.append(_picture(section.mib_picture))
            if section.layers:
                parts.append("#### Significance graph (discovery)\n")
        if section.layers:
            parts.append(f"{section.metadata.get('n_samples', '?')} samples "
                         f"({section.metadata.get('inputs', 'test split')}); {section.n_edges} edges.\n")
            parts.append(_table(tables.layers_table(section)))
        if section.circuit is not None:
            parts.append("#### Sufficiency and necessity of the causal graph\n")
            parts.append(_table(tables.circuit_table(section.circuit, "causal graph")))
        if section.stability:
            parts.append(f"#### Stability of the causal graph (layer {section.stability.get('layer')})\n")
            parts.append(_table(tables.stability_table(section.stability)))
            note = tables.stability_note(section.stability)
            if note:
                parts.append(note + "\n")
        parts.extend(_picture(picture) for picture in pictures)
    if report.circuits:
        parts.append("## Minimal circuits\n")
    for circuit in report.circuits:
        parts.append(f"### Class {circuit.target}\n")
        line = tables.circuit_line(circuit)
        if line:
            parts.append(line + "\n")
        if circuit.check is not None:
            parts.append("#### Sufficiency and necessity of the minimal circuit\n")
            parts.append(_table(tables.circuit_table(circuit.check, "minimal circuit")))
        parts.extend(_picture(picture) for picture in circuit.pictures)
    parts.append("## Attributions\n")
    if report.attributions:
        parts.extend(_picture(picture) for picture in report.attributions)
    else:
        parts.append("_no attribution pictures (attribution.enabled: false or plots.enabled: false)_\n")
    parts.append("## Evaluation\n")
    if not report.evaluations:
        parts.append("_the evaluation did not run (evaluation.enabled: false)_\n")
    for evaluation in report.evaluations:
        if len(report.evaluations) > 1:
            parts.append(f"### {evaluation.name}\n")
        line = tables.samples_line(evaluation)
        if line:
            parts.append(line + "\n")
        parts.append(_table(tables.metrics_table(evaluation)))
        parts.extend(_picture(picture) for picture in evaluation.pictures)
        if evaluation.skipped:
            parts.append("#### Skipped\n")
            parts.append(_table(tables.skipped_table(evaluation)))
        if evaluation.settings.get("metrics"):
            parts.append("#### Metric settings (identical for every method)\n")
            parts.append(_table(tables.settings_table(evaluation)))
    for title, pictures in report.others.items():
        parts.append(f"## {title}\n")
        parts.extend(_picture(picture) for picture in pictures)
    parts.append("## Configuration\n")
    parts.append(f"```yaml\n{report.config_yaml.rstrip()}\n```\n" if report.config_yaml else "_no config.yaml_\n")
    if report.files:
        parts.append("## Files\n")
        parts.extend(f"- [{name}]({name})" for name in report.files)
        parts.append("")
    return "\n".join(parts)


def write_markdown(report: Report, path: str | Path | None = None) -> Path:
    """Write ``report.md`` (default: in the run folder) atomically; return its path."""
    return write_text(Path(path) if path is not None else report.run_dir / "report.md", render_markdown(report))
