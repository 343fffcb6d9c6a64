"""What a run report shows, gathered from memory or from the run folder.

:func:`collect` builds a :class:`Report` from whatever the run produced. The
config, the training record and the graphs may be passed in (the pipeline has
them in memory) or are read from the run folder (``config.yaml``,
``training.json``, ``discovery/class_<k>/graph.json``); the minimal circuits
(``circuit/class_<k>/circuit.json``) and the evaluation tables are always read
from the folder (``evaluation/summary.csv`` and its neighbours, in that folder or
in one sub-folder per class). Pictures are found by looking: every PNG under
``discovery/class_<k>/``, ``circuit/class_<k>/``, ``attributions/`` and
``evaluation/``. Three names are kept apart: the *edge circuit*
(``circuit/class_<k>/edge_circuit.json``, ``edges.csv``, ``mib.csv``) is a class's
main causal graph, the fewest unit-to-unit edges that keep its behaviour, shown
first with its strongest edges and its MIB curves; the *significance graph* is
discovery's graph, shown after it as a secondary view; the *minimal circuit* is
the node-level circuit's smallest faithful unit set. A step that was
disabled simply leaves its section empty, so a report can be written after any
subset of the steps, and rebuilt later from the folder alone.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from explainnn.causal.circuit_check import CircuitCheck
from explainnn.errors import UserError

EDGE_CIRCUIT_PICTURE = ("edge_circuit.png",
                        "Causal graph: the edge circuit, the fewest unit-to-unit edges that keep the class "
                        "(width: exact effect of removing the edge)")
MIB_PICTURE = ("mib.png", "Circuit faithfulness (MIB): f on held-out samples against the share of edges kept")
EDGE_CIRCUIT_FILES = {EDGE_CIRCUIT_PICTURE[0], MIB_PICTURE[0]}
"""The edge circuit's pictures, shown in the class's section and the MIB section, not among the minimal circuit's."""
TOP_EDGES = 15
"""Edges of an edge circuit the report's table lists (largest |effect| first)."""
DISCOVERY_PICTURES = {
    "graph.png": "Significance graph (discovery): every tested cause, a secondary view",
    "circuit.png": "Causal graph: sufficiency and necessity against random unit sets",
    "stability.png": "Causal graph: stability under soft interventions",
}
CIRCUIT_PICTURES = {
    "circuit_graph.png": "Minimal circuit: its units and their connections",
    "circuit_check.png": "Minimal circuit: sufficiency and necessity against random unit sets",
    "curves.png": "Minimal circuit: faithfulness curves beside the baseline orderings",
}
TABLE_SUFFIXES = (".csv", ".json", ".graphml", ".yaml", ".npz")
OWN_FOLDERS = ("discovery", "circuit", "attributions", "evaluation")
"""Run sub-folders with a section of their own; PNGs elsewhere are shown by folder."""


@dataclass(frozen=True)
class Picture:
    """A PNG of the run: a caption and its path relative to the run folder."""

    caption: str
    path: Path
    relative: str


@dataclass
class ClassSection:
    """One target class: its causal graph, circuit check, stability and pictures."""

    target: int
    layers: list[dict[str, Any]] = field(default_factory=list)
    n_edges: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    circuit: CircuitCheck | None = None
    stability: dict[str, Any] | None = None
    pictures: list[Picture] = field(default_factory=list)
    edge_circuit: dict[str, Any] | None = None
    """The edge circuit's record: ``metadata``, ``edge_circuit`` (sizes), ``held_out`` and ``mib`` of its graph."""
    top_edges: list[dict[str, str]] = field(default_factory=list)
    """The strongest rows of ``edges.csv`` (at most ``TOP_EDGES``)."""
    mib: list[dict[str, str]] = field(default_factory=list)
    """``mib.csv``'s rows."""
    mib_picture: Picture | None = None


@dataclass
class CircuitSection:
    """One target class's minimal circuit: how it was found, its held-out check and its pictures."""

    target: int
    metadata: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] | None = None
    check: CircuitCheck | None = None
    pictures: list[Picture] = field(default_factory=list)


@dataclass
class EvaluationSection:
    """The metrics tables and pictures of one evaluation folder."""

    name: str
    summary: list[dict] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    pictures: list[Picture] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return str(self.settings.get("reference", "causal"))


@dataclass
class Report:
    """Everything a report shows; rendered by :mod:`.html` and :mod:`.markdown`."""

    title: str
    run_dir: Path
    created: str
    config_yaml: str | None = None
    training: dict[str, Any] | None = None
    classes: list[ClassSection] = field(default_factory=list)
    circuits: list[CircuitSection] = field(default_factory=list)
    attributions: list[Picture] = field(default_factory=list)
    evaluations: list[EvaluationSection] = field(default_factory=list)
    others: dict[str, list[Picture]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def collect(
    run_dir: str | Path,
    *,
    config_yaml: str | None = None,
    training: Mapping[str, Any] | None = None,
    graphs: Mapping[int, Any] | None = None,
    artifacts: Mapping[str, str | Path] | None = None,
    title: str | None = None,
) -> Report:
    """Gather the report of the run in ``run_dir`` (see the module docstring for the sources)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {str(run_dir)!r} not found; run the pipeline first or pass the folder it wrote")
    config_yaml = config_yaml if config_yaml is not None else _read_text(run_dir / "config.yaml")
    training = dict(training) if training is not None else _read_json(run_dir / "training.json")
    report = Report(
        title=title or _title(run_dir, training),
        run_dir=run_dir,
        created=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        config_yaml=config_yaml,
        training=training,
    )
    report.classes = _classes(run_dir, graphs)
    report.circuits = _circuits(run_dir)
    report.attributions = _pictures(run_dir, run_dir / "attributions")
    report.evaluations = _evaluations(run_dir)
    shown = {picture.path.resolve() for section in report.classes for picture in section.pictures}
    shown |= {section.mib_picture.path.resolve() for section in report.classes if section.mib_picture}
    shown |= {picture.path.resolve() for section in report.circuits for picture in section.pictures}
    shown |= {picture.path.resolve() for picture in report.attributions}
    shown |= {picture.path.resolve() for section in report.evaluations for picture in section.pictures}
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name not in OWN_FOLDERS):
        found = [picture for picture in _pictures(run_dir, folder) if picture.path.resolve() not in shown]
        if found:
            report.others[folder.name.replace("_", " ").capitalize()] = found
    for caption, path in (artifacts or {}).items():
        path = Path(path)
        if path.suffix.lower() == ".png" and path.is_file() and path.resolve() not in shown:
            report.others.setdefault("Other pictures", []).append(Picture(str(caption), path, _relative(path, run_dir)))
    report.files = sorted(
        _relative(path, run_dir) for path in run_dir.rglob("*")
        if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES and not path.name.startswith(".")
    )
    return report


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _circuit_check(record: Any) -> CircuitCheck | None:
    """The sufficiency/necessity check stored in a graph's results, or None where there is none (or it holds
    other fields than :class:`~explainnn.causal.CircuitCheck`'s, as a run folder of another version may)."""
    if not isinstance(record, Mapping):
        return None
    try:
        return CircuitCheck.from_dict(record)
    except (KeyError, TypeError):
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None


def _title(run_dir: Path, training: Mapping[str, Any] | None) -> str:
    if training:
        model = training.get("model", {})
        name = model.get("name", "") if isinstance(model, Mapping) else str(model)
        return f"explainnn report: {name} on {training.get('dataset', '')}"
    return f"explainnn report: {run_dir.parent.name}/{run_dir.name}"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _caption(path: Path, folder: Path) -> str:
    name = path.stem.replace("_", " ")
    where = path.parent.resolve().relative_to(folder.resolve()).as_posix() if path.parent != folder else ""
    return f"{where.replace('_', ' ')}: {name}" if where and where != "." else name


def _pictures(run_dir: Path, folder: Path, captions: Mapping[str, str] | None = None) -> list[Picture]:
    if not folder.is_dir():
        return []
    found = sorted(folder.rglob("*.png"), key=lambda p: (_order(p.name, captions), p.as_posix()))
    return [Picture((captions or {}).get(p.name, _caption(p, folder)), p, _relative(p, run_dir)) for p in found]


def _order(name: str, captions: Mapping[str, str] | None) -> int:
    names = list(captions or {})
    return names.index(name) if name in names else len(names)


def _class_number(folder: Path) -> int | None:
    match = re.fullmatch(r"class_(\d+)", folder.name)
    return int(match.group(1)) if match else None


def _classes(run_dir: Path, graphs: Mapping[int, Any] | None) -> list[ClassSection]:
    discovery = run_dir / "discovery"
    folders = {}
    if discovery.is_dir():
        folders = {number: p for p in discovery.iterdir()
                   if p.is_dir() and (number := _class_number(p)) is not None}
    edge_folders = {}
    if (run_dir / "circuit").is_dir():
        edge_folders = {number: p for p in (run_dir / "circuit").iterdir()
                        if (p / "edge_circuit.json").is_file() and (number := _class_number(p)) is not None}
    targets = sorted(set(folders) | set(graphs or {}) | set(edge_folders))
    sections = []
    for target in targets:
        folder = folders.get(target, discovery / f"class_{target}")
        graph = (graphs or {}).get(target)
        if graph is None and (folder / "graph.json").is_file():
            from explainnn.causal import CausalGraph

            graph = CausalGraph.from_json(folder / "graph.json")
        section = ClassSection(target=int(target), pictures=_pictures(run_dir, folder, DISCOVERY_PICTURES))
        if target in edge_folders:
            _add_edge_circuit(run_dir, edge_folders[target], section)
        if graph is not None:
            section.metadata = dict(graph.metadata)
            section.n_edges = graph.digraph.number_of_edges()
            for layer in graph.layers():
                units = graph.units(layer)
                kind = graph.layer_kind(layer) if units else ""
                section.layers.append({"layer": layer, "kind": kind, "units": len(units),
                                       "causes": len(graph.causes(layer))})
            section.circuit = _circuit_check(graph.results.get("circuit"))
            section.stability = graph.results.get("stability")
        sections.append(section)
    return sections


def _add_edge_circuit(run_dir: Path, folder: Path, section: ClassSection) -> None:
    """The edge circuit of ``folder`` as the class's main causal graph: its record, strongest edges, MIB curves and
    pictures (the circuit's picture first, before discovery's)."""
    record = _read_json(folder / "edge_circuit.json") or {}
    metadata = dict(record.get("metadata", {}))
    results = metadata.pop("results", {}) or {}
    metadata.pop("samples", None)
    section.edge_circuit = {"metadata": metadata, "edge_circuit": results.get("edge_circuit") or {},
                            "held_out": results.get("held_out") or {}, "mib": results.get("mib") or {}}
    section.top_edges = _read_csv(folder / "edges.csv")[:TOP_EDGES]
    section.mib = _read_csv(folder / "mib.csv")
    name, caption = EDGE_CIRCUIT_PICTURE
    if (folder / name).is_file():
        section.pictures.insert(0, Picture(caption, folder / name, _relative(folder / name, run_dir)))
    name, caption = MIB_PICTURE
    if (folder / name).is_file():
        section.mib_picture = Picture(caption, folder / name, _relative(folder / name, run_dir))


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _circuits(run_dir: Path) -> list[CircuitSection]:
    """Every ``circuit/class_<k>/`` folder with a minimal (node) circuit: its search and check (``circuit.json``) and
    pictures."""
    root = run_dir / "circuit"
    if not root.is_dir():
        return []
    sections = []
    for folder in sorted((p for p in root.iterdir() if p.is_dir() and _class_number(p) is not None),
                         key=lambda p: _class_number(p) or 0):
        pictures = [picture for picture in _pictures(run_dir, folder, CIRCUIT_PICTURES)
                    if not (picture.path.parent == folder and picture.path.name in EDGE_CIRCUIT_FILES)]
        if not pictures and not (folder / "circuit.json").is_file():
            continue
        section = CircuitSection(target=int(_class_number(folder) or 0), pictures=pictures)
        record = _read_json(folder / "circuit.json")
        if record is not None:
            metadata = dict(record.get("metadata", {}))
            results = metadata.pop("results", {}) or {}
            metadata.pop("samples", None)
            section.metadata = metadata
            section.search = results.get("circuit_search")
            section.check = _circuit_check(results.get("circuit"))
        sections.append(section)
    return sections


def _evaluation_order(picture: Picture) -> tuple[int, str]:
    """The rank heatmap first, then one chart per metric family in the usual order."""
    from explainnn.evaluation.metrics import FAMILIES

    stem = picture.path.stem
    if stem == "ranks":
        return 0, stem
    family = stem.removeprefix("metrics_")
    return (1 + FAMILIES.index(family), stem) if family in FAMILIES else (len(FAMILIES) + 1, stem)


def _evaluations(run_dir: Path) -> list[EvaluationSection]:
    """Every folder under ``evaluation/`` that holds a ``summary.csv`` (one per target class or one in all)."""
    from explainnn.evaluation.io import load_tables

    root = run_dir / "evaluation"
    if not root.is_dir():
        return []
    sections = []
    for folder in [root] + sorted(p for p in root.rglob("*") if p.is_dir()):
        tables = load_tables(folder)
        if tables.summary is None:
            continue
        name = "Evaluation" if folder == root else f"Evaluation: {_relative(folder, root)}"
        section = EvaluationSection(name, summary=tables.summary, comparisons=tables.comparisons or [],
                                    skipped=tables.skipped or [], settings=tables.settings or {})
        pictures = [p for p in _pictures(run_dir, folder) if p.path.parent == folder]
        section.pictures = sorted(pictures, key=_evaluation_order)
        sections.append(section)
    return sections
