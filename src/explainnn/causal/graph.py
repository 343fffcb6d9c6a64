"""The causal graph that discovery learns: units as nodes, causal effects as edges.

A unit is one neuron or channel of a layer, named ``"layer:index"`` after the
module name from ``model.named_modules()`` (a stacked RNN's internal layers are
``<name>.l0``, ``<name>.l1``, ...). Edges run from cause to effect and carry the
test statistics of the intervention that found them. Everything stored - node
and edge attributes and the metadata - is JSON-only (str, int, float, bool,
None, lists and str-keyed dicts; NumPy/torch scalars and arrays are converted on
the way in), so a saved graph loads back equal to the one in memory.
"""

from __future__ import annotations

import functools
import json
import math
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

import networkx as nx

from explainnn.errors import DataError, UserError
from explainnn.files import atomic_path, write_csv, write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Kind = Literal["input", "hidden", "output"]

SCHEMA = "explainnn.causal_graph"
SCHEMA_VERSION = 1
KINDS = ("input", "hidden", "output")
EDGE_COLUMNS = ("cause_unit", "effect_unit", "cause_layer", "cause_index", "effect_layer", "effect_index")
UNIT_COLUMNS = ("id", "layer", "index", "kind", "depth")
_RESERVED_NODE_KEYS = frozenset({"id", "layer", "index", "kind", "depth"})
_RESERVED_EDGE_KEYS = frozenset({"source", "target", *EDGE_COLUMNS})
_VERSIONED_PACKAGES = ("explainnn", "torch", "numpy", "scipy", "networkx", "captum", "quantus")


def node_id(layer: str, index: int) -> str:
    """The node id of unit ``index`` of ``layer``: ``"layer:index"``."""
    return f"{layer}:{index}"


def library_versions() -> dict[str, str]:
    """Versions of Python and the installed libraries that shape a graph's numbers."""
    return dict(_library_versions())


@functools.lru_cache(maxsize=1)
def _library_versions() -> tuple[tuple[str, str], ...]:
    """Read once per process: package metadata lookups cost more than a small discovery's bookkeeping."""
    versions = {"python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    return tuple(versions.items())


class CausalGraph:
    """A layered causal graph of a network's units, with its provenance.

    ``graph`` is the underlying ``networkx.DiGraph``: nodes carry ``layer``,
    ``index``, ``kind`` (input / hidden / output) and ``depth`` (0 at the input,
    growing towards the output) plus any statistics; edges run from cause to
    effect, from lower to higher depth, except recurrent edges (``via="recurrent"``),
    which join two units of one recurrent layer (unit ``i`` at step ``t - 1`` to
    unit ``j`` at step ``t``), so a graph of a recurrent model may hold cycles. ``metadata`` describes the run (model,
    dataset, target, samples, options, seed, ...); ``versions`` is filled with
    the library versions when absent, and ``results`` is a free-form JSON-only
    dict for later analyses (circuit faithfulness, stability).
    """

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.graph = nx.DiGraph()
        self._layer_unit: dict[str, str] = {}
        self.metadata: dict[str, Any] = _json_value(dict(metadata or {}), "metadata")
        self.metadata.setdefault("versions", library_versions())
        if not isinstance(self.metadata.setdefault("results", {}), dict):
            raise UserError("metadata['results'] must be a dict of JSON values")

    # ----------------------------------------------------------------- building
    def add_unit(self, layer: str, index: int, /, *, kind: Kind = "hidden", depth: int, **attrs: Any) -> str:
        """Add (or update the statistics of) a unit and return its node id.

        Every unit of a layer must share one depth; re-adding a unit keeps its
        kind and depth and merges the new attributes.
        """
        if not isinstance(layer, str) or not layer or ":" in layer:
            raise UserError(f"layer must be a non-empty module name without ':'; got {layer!r}")
        index = _int(index, "unit index")
        depth = _int(depth, "depth")
        if kind not in KINDS:
            raise UserError(f"unknown unit kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        reserved = _RESERVED_NODE_KEYS.intersection(attrs)
        if reserved:
            raise UserError(f"unit attributes may not be named {', '.join(sorted(reserved))}")
        layer_depth = self._layer_depth(layer)
        if layer_depth is not None and layer_depth != depth:
            raise UserError(f"layer {layer!r} is at depth {layer_depth}; cannot add a unit at depth {depth}")
        nid = node_id(layer, index)
        if nid in self.graph and self.graph.nodes[nid]["kind"] != kind:
            raise UserError(f"unit {nid!r} is already of kind {self.graph.nodes[nid]['kind']}, not {kind}")
        values = {key: _json_value(value, f"unit attribute {key!r}") for key, value in attrs.items()}
        self.graph.add_node(nid, layer=layer, index=index, kind=kind, depth=depth, **values)
        return nid

    def add_edge(self, cause: str, effect: str, /, **stats: Any) -> None:
        """Add the edge ``cause -> effect`` between two existing units, with its statistics."""
        self.add_edges(cause, [effect], **stats)

    def add_edges(self, cause: str, effects: Iterable[str], /, **stats: Any) -> None:
        """Add ``cause -> effect`` for every unit of ``effects``, all with the same statistics (checked once)."""
        effects = list(effects)
        for nid in (cause, *effects):
            if nid not in self.graph:
                raise UserError(f"unknown unit {nid!r}; add it with add_unit first")
        nodes = self.graph.nodes
        depth = nodes[cause]["depth"]
        recurrent = stats.get("via") == "recurrent"
        for effect in effects:
            if recurrent:  # hidden-to-hidden within one recurrent layer, from step t - 1 to step t
                if nodes[effect]["layer"] != nodes[cause]["layer"] or effect == cause:
                    raise UserError(f"recurrent edge {cause!r} -> {effect!r} must join two units of one layer")
            elif depth >= nodes[effect]["depth"]:
                raise UserError(f"edge {cause!r} -> {effect!r} must run from a lower to a higher depth")
        reserved = _RESERVED_EDGE_KEYS.intersection(stats)
        if reserved:
            raise UserError(f"edge attributes may not be named {', '.join(sorted(reserved))}")
        values = {key: _json_value(value, f"edge attribute {key!r}") for key, value in stats.items()}
        self.graph.add_edges_from(((cause, effect) for effect in effects), **values)

    def add_result(self, name: str, value: Any) -> None:
        """Store a JSON-only analysis result under ``metadata['results'][name]``."""
        if not isinstance(name, str) or not name:
            raise UserError(f"result name must be a non-empty string; got {name!r}")
        self.metadata["results"][name] = _json_value(value, f"result {name!r}")

    # ----------------------------------------------------------------- querying
    @property
    def results(self) -> dict[str, Any]:
        """The free-form analysis results stored with the graph."""
        return self.metadata["results"]

    @property
    def digraph(self) -> nx.DiGraph:
        """The underlying ``networkx.DiGraph`` of units (also reachable as ``graph``, its older name)."""
        return self.graph

    def layer_kind(self, layer: str) -> Kind:
        """The kind of ``layer``'s units: ``input``, ``hidden`` or ``output``."""
        return self.graph.nodes[self.units(layer)[0]]["kind"]

    def layer_depth(self, layer: str) -> int:
        """The depth of ``layer`` (0 at the input, growing towards the output)."""
        self._check_layer(layer)
        return self._layer_depths()[layer]

    def hidden_layers(self) -> list[str]:
        """The layers of hidden units, from the input towards the output."""
        return [layer for layer in self.layers() if self.layer_kind(layer) == "hidden"]

    def layers(self) -> list[str]:
        """Layer names ordered from the input to the output (by depth, then name)."""
        depths = self._layer_depths()
        return sorted(depths, key=lambda layer: (depths[layer], layer))

    def units(self, layer: str | None = None) -> list[str]:
        """Node ids of one layer's units, or of all units, ordered by depth, layer and index."""
        if layer is not None:
            self._check_layer(layer)
        nodes = self.graph.nodes
        chosen = [n for n in nodes if layer is None or nodes[n]["layer"] == layer]
        return sorted(chosen, key=lambda n: (nodes[n]["depth"], nodes[n]["layer"], nodes[n]["index"]))

    def unit(self, layer: str, index: int) -> dict[str, Any]:
        """The attributes of one unit (a read-only view)."""
        nid = node_id(layer, index)
        if nid not in self.graph:
            self._check_layer(layer)
            raise UserError(f"layer {layer!r} has no unit {index}; its units: {self._indices(layer)}")
        return self.graph.nodes[nid]

    def causes(self, layer: str) -> list[int]:
        """Sorted indices of the units of ``layer`` that cause an output unit.

        A unit is a cause when a directed path leads from it to an output node; in
        the output layer itself the output units (the targets) are returned.
        """
        self._check_layer(layer)
        outputs = [n for n, role in self.graph.nodes(data="kind") if role == "output"]
        reach = set(outputs).union(*(nx.ancestors(self.graph, n) for n in outputs))
        return sorted(self.graph.nodes[n]["index"] for n in reach if self.graph.nodes[n]["layer"] == layer)

    def edges(self, data: bool = True) -> list:
        """Edges as ``(cause, effect, attrs)`` (or ``(cause, effect)``), ordered by cause then effect."""
        nodes = self.graph.nodes

        def order(edge: tuple) -> tuple:
            u, v = edge[0], edge[1]
            return (nodes[u]["depth"], nodes[u]["index"], nodes[v]["depth"], nodes[v]["index"], u, v)

        return sorted(self.graph.edges(data=data), key=order)

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __eq__(self, other: object) -> bool:
        """Same nodes, edges, attributes and metadata; floats compare exactly, NaN equals NaN."""
        if not isinstance(other, CausalGraph):
            return NotImplemented
        mine, theirs = self.graph, other.graph
        return (
            _same(self.metadata, other.metadata)
            and set(mine.nodes) == set(theirs.nodes)
            and set(mine.edges) == set(theirs.edges)
            and all(_same(mine.nodes[n], theirs.nodes[n]) for n in mine.nodes)
            and all(_same(mine.edges[e], theirs.edges[e]) for e in mine.edges)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def summary(self) -> str:
        """A few lines: size, target, and the units of every layer."""
        meta = self.metadata
        about = ", ".join(f"{key} {meta[key]}" for key in ("model", "dataset", "target") if key in meta)
        lines = [
            f"CausalGraph: {self.graph.number_of_nodes()} units, {self.graph.number_of_edges()} edges"
            + (f" ({about})" if about else "")
        ]
        layers = self.layers()
        width = max((len(layer) for layer in layers), default=0)
        for layer in layers:
            indices = self._indices(layer)
            shown = ", ".join(str(i) for i in indices[:12]) + (", ..." if len(indices) > 12 else "")
            kind = self.layer_kind(layer)
            lines.append(f"  {layer:<{width}}  {kind:<6}  {len(indices):>4} unit{'s' if len(indices) != 1 else ''}: {shown}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<CausalGraph: {self.graph.number_of_nodes()} units, {self.graph.number_of_edges()} edges>"

    # ------------------------------------------------------------------- tables
    def edge_table(self) -> list[dict[str, Any]]:
        """One row per edge: cause and effect unit ids, layers and indices, then the statistics."""
        nodes = self.graph.nodes
        return [
            {
                "cause_unit": u,
                "effect_unit": v,
                "cause_layer": nodes[u]["layer"],
                "cause_index": nodes[u]["index"],
                "effect_layer": nodes[v]["layer"],
                "effect_index": nodes[v]["index"],
                **attrs,
            }
            for u, v, attrs in self.edges(data=True)
        ]

    def unit_table(self) -> list[dict[str, Any]]:
        """One row per unit: id, layer, index, kind, depth, then its statistics."""
        return [{"id": n, **self.graph.nodes[n]} for n in self.units()]

    def to_csv(self, path: str | Path, table: Literal["edges", "units"] = "edges") -> Path:
        """Write the edge (or unit) table as CSV; lists and dicts become JSON text."""
        if table not in ("edges", "units"):
            raise UserError(f"unknown table {table!r}; valid tables: edges, units")
        rows = self.edge_table() if table == "edges" else self.unit_table()
        head = list(EDGE_COLUMNS if table == "edges" else UNIT_COLUMNS)
        extra = sorted({key for row in rows for key in row} - set(head))
        return write_csv(path, ({key: _scalar_text(value) for key, value in row.items()} for row in rows), head + extra)

    # ------------------------------------------------------------------ storage
    def to_json(self, path: str | Path) -> Path:
        """Save as JSON: schema, version, metadata and the node-link graph.

        Non-finite floats are written as ``NaN``/``Infinity``, as Python's ``json``
        module reads and writes them, so ``from_json(to_json(g)) == g`` holds.
        """
        document = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "metadata": self.metadata,
            "graph": nx.node_link_data(self.graph, edges="edges"),
        }
        return write_text(path, json.dumps(document, indent=1) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> CausalGraph:
        """Load a graph written by :meth:`to_json`; refuse other files and schema versions."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"causal graph file '{path}' does not exist")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"'{path}' is not valid JSON ({error})") from None
        if not isinstance(document, dict) or document.get("schema") != SCHEMA:
            found = document.get("schema") if isinstance(document, dict) else None
            raise DataError(f"'{path}' is not an explainnn causal graph (schema {found!r}, expected {SCHEMA!r})")
        version = document.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DataError(
                f"'{path}' has causal-graph schema version {version!r}; this explainnn reads version {SCHEMA_VERSION}"
            )
        try:
            graph = nx.node_link_graph(document["graph"], directed=True, multigraph=False, edges="edges")
            metadata = document["metadata"]
            if not isinstance(metadata, dict) or not isinstance(metadata.get("results"), dict):
                raise TypeError("metadata must be a dict with a 'results' dict")
            for nid, attrs in graph.nodes(data=True):
                if nid != node_id(attrs["layer"], attrs["index"]) or attrs["kind"] not in KINDS:
                    raise ValueError(f"unit {nid!r} has inconsistent attributes")
                _int(attrs["depth"], "depth")
        except (KeyError, TypeError, ValueError, UserError, nx.NetworkXError) as error:
            raise DataError(f"'{path}' is a malformed causal graph ({error})") from None
        loaded = cls()
        loaded.graph = graph
        loaded.metadata = metadata
        return loaded

    def to_graphml(self, path: str | Path) -> Path:
        """Export GraphML for Gephi, Cytoscape or ``nx.read_graphml``.

        GraphML holds only scalar attributes, so lists, dicts and None are written
        as JSON text, and the metadata as JSON text in the graph attribute
        ``metadata`` next to ``schema`` and ``schema_version``. Unlike JSON this
        export is one-way: numbers keep their type, structured values come back as
        strings.
        """
        export = nx.DiGraph()
        export.graph.update(
            schema=SCHEMA, schema_version=SCHEMA_VERSION, metadata=json.dumps(self.metadata, sort_keys=True)
        )
        for n, attrs in self.graph.nodes(data=True):
            export.add_node(n, **{key: _scalar_text(value) for key, value in attrs.items()})
        for u, v, attrs in self.graph.edges(data=True):
            export.add_edge(u, v, **{key: _scalar_text(value) for key, value in attrs.items()})
        with atomic_path(path) as tmp:
            nx.write_graphml(export, tmp, infer_numeric_types=True)
        return Path(path)

    def draw(self, path: str | Path | None = None, **options: Any) -> Figure:
        """Draw the graph with :func:`explainnn.causal.draw.draw_graph`; returns the Figure."""
        from explainnn.causal.draw import draw_graph

        return draw_graph(self, path, **options)

    # ----------------------------------------------------------------- helpers
    def _layer_depth(self, layer: str) -> int | None:
        """Depth of an existing layer; a remembered unit of it saves a scan of the graph per added unit."""
        nid = self._layer_unit.get(layer)
        if nid is None or nid not in self.graph:
            nid = next((n for n, name in self.graph.nodes(data="layer") if name == layer), None)
            if nid is None:
                return None
            self._layer_unit[layer] = nid
        return self.graph.nodes[nid]["depth"]

    def _layer_depths(self) -> dict[str, int]:
        return {attrs["layer"]: attrs["depth"] for _, attrs in self.graph.nodes(data=True)}

    def _indices(self, layer: str) -> list[int]:
        return sorted(self.graph.nodes[n]["index"] for n in self.units(layer))

    def _check_layer(self, layer: str) -> None:
        layers = self.layers()
        if layer not in layers:
            valid = ", ".join(layers) if layers else "none (the graph is empty)"
            raise UserError(f"unknown layer {layer!r}; valid layers: {valid}")


def _int(value: Any, what: str) -> int:
    """Accept Python and NumPy/torch integers >= 0 (not bools) as a plain int."""
    if isinstance(value, bool) or not hasattr(value, "__index__") or value.__index__() < 0:
        raise UserError(f"{what} must be an integer >= 0; got {value!r}")
    return int(value.__index__())


def _json_value(value: Any, what: str) -> Any:
    """A JSON-native copy of ``value``: NumPy/torch numbers and arrays become Python ones, tuples lists."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        bad = [key for key in value if not isinstance(key, str)]
        if bad:
            raise UserError(f"{what} has a non-string key {bad[0]!r}; JSON objects need string keys")
        return {key: _json_value(item, what) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item, what) for item in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # NumPy or torch scalar or array
        return _json_value(value.tolist(), what)
    raise UserError(f"{what} must be JSON data (str, number, bool, None, list, dict); got {type(value).__name__}")


def _same(a: Any, b: Any) -> bool:
    """Deep equality in which NaN equals NaN and bools differ from numbers."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _scalar_text(value: Any) -> Any:
    """Scalars as they are; lists, dicts and None as JSON text (for GraphML and CSV)."""
    if value is None or isinstance(value, (list, dict)):
        return json.dumps(value)
    return value
