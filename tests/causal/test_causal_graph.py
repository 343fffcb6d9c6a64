"""CausalGraph: building, causes(), JSON round trip, GraphML/CSV export and drawing."""

from __future__ import annotations

import csv
import json
import math

import networkx as nx
import numpy as np
import pytest
from matplotlib.figure import Figure

from explainnn.causal import SCHEMA, SCHEMA_VERSION, CausalGraph, draw_graph, node_id
from explainnn.errors import DataError, UserError


@pytest.fixture
def lenet_graph() -> CausalGraph:
    """A small LeNet-like graph for target 3; units are added out of order on purpose."""
    g = CausalGraph(
        {
            "model": "lenet",
            "dataset": "mnist",
            "target": 3,
            "samples": 100,
            "seed": 0,
            "options": {"test": "paired", "alpha": 0.05, "nested": {"beta": [0.0, 0.1], "u": float("nan")}},
        }
    )
    g.add_unit("fc3", 3, kind="output", depth=5)
    for index in (52, 7, 30):
        g.add_unit("fc2", index, depth=4, effect=-0.5, p_value=np.float64(0.001), kept=np.bool_(True))
        g.add_edge(node_id("fc2", index), "fc3:3", effect=-0.5 - index / 100, q_value=0.01,
                   intervention={"kind": "edge", "u": 0.0}, n=np.int64(100))
    g.add_unit("fc2", 80, depth=4)  # tested and stored, but without a path to the output
    for index in (11, 2):
        g.add_unit("fc1", index, depth=3)
        g.add_edge(node_id("fc1", index), "fc2:7", effect=0.25, ci=(0.1, float("nan")))
    g.add_unit("fc1", 5, depth=3)
    g.add_edge("fc1:5", "fc2:80", effect=-1.0)
    g.add_unit("input", 0, kind="input", depth=0)
    g.add_edge("input:0", "fc1:2", effect=-2.0)
    return g


def test_layers_units_and_causes_are_ordered(lenet_graph):
    g = lenet_graph
    assert g.layers() == ["input", "fc1", "fc2", "fc3"]
    assert g.causes("fc2") == [7, 30, 52]
    assert g.causes("fc1") == [2, 11]  # fc1:5 only reaches fc2:80, which does not reach the target
    assert g.causes("fc3") == [3] and g.causes("input") == [0]
    assert g.units("fc2") == ["fc2:7", "fc2:30", "fc2:52", "fc2:80"]
    assert g.units()[0] == "input:0" and g.units()[-1] == "fc3:3"
    assert g.unit("fc2", 7)["kept"] is True and g.unit("fc2", 7)["p_value"] == 0.001
    assert [(u, v) for u, v, _ in g.edges()][:2] == [("input:0", "fc1:2"), ("fc1:2", "fc2:7")]
    assert len(g) == 9


def test_unknown_layer_names_the_valid_ones(lenet_graph):
    with pytest.raises(UserError, match="unknown layer 'fc9'; valid layers: input, fc1, fc2, fc3"):
        lenet_graph.causes("fc9")
    with pytest.raises(UserError, match="has no unit 4"):
        lenet_graph.unit("fc2", 4)


def test_building_mistakes_are_refused(lenet_graph):
    g = lenet_graph
    with pytest.raises(UserError, match="depth 4"):
        g.add_unit("fc2", 1, depth=2)
    with pytest.raises(UserError, match="kind"):
        g.add_unit("fc2", 1, kind="hiden", depth=4)
    with pytest.raises(UserError, match="already of kind output"):
        g.add_unit("fc3", 3, kind="hidden", depth=5)
    with pytest.raises(UserError, match="lower to a higher depth"):
        g.add_edge("fc3:3", "fc2:7")
    with pytest.raises(UserError, match="unknown unit 'fc2:99'"):
        g.add_edge("fc2:99", "fc3:3")
    with pytest.raises(UserError, match="may not be named"):
        g.add_edge("fc2:7", "fc3:3", source="x")
    with pytest.raises(UserError, match="JSON data"):
        g.add_unit("fc2", 1, depth=4, note=object())
    with pytest.raises(UserError, match="non-string key"):
        g.add_result("per_class", {3: 0.5})
    with pytest.raises(UserError, match="integer >= 0"):
        g.add_unit("fc2", 1.5, depth=4)
    with pytest.raises(UserError, match="integer >= 0"):
        g.add_unit("fc2", -1, depth=4)


def test_re_adding_a_unit_merges_its_statistics(lenet_graph):
    lenet_graph.add_unit("fc2", 7, depth=4, q_value=0.002)
    assert lenet_graph.unit("fc2", 7)["q_value"] == 0.002 and lenet_graph.unit("fc2", 7)["effect"] == -0.5


def test_json_round_trip_is_exact(lenet_graph, tmp_path):
    g = lenet_graph
    g.add_result("circuit", {"sufficiency": 0.93, "random": [0.1, float("nan")], "ok": True, "none": None})
    path = g.to_json(tmp_path / "out" / "graph.json")
    loaded = CausalGraph.from_json(path)
    assert loaded == g
    assert math.isnan(loaded.metadata["options"]["nested"]["u"])
    assert loaded.results["circuit"]["sufficiency"] == 0.93
    assert loaded.graph.edges["fc1:2", "fc2:7"]["ci"][0] == 0.1
    assert isinstance(loaded.unit("fc2", 7)["kept"], bool)
    assert "versions" in loaded.metadata and "numpy" in loaded.metadata["versions"]
    assert [p.name for p in path.parent.iterdir()] == ["graph.json"]  # no temporary files left behind

    document = json.loads(path.read_text())
    assert (document["schema"], document["schema_version"]) == (SCHEMA, SCHEMA_VERSION)
    assert {"nodes", "edges"} <= set(document["graph"])

    loaded.graph.edges["fc2:7", "fc3:3"]["effect"] += 1e-12
    assert loaded != g
    assert CausalGraph({"a": float("nan")}) != CausalGraph({"a": 1.0})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 2}, "schema version 2; this explainnn reads version 1"),
        ({"schema": "something.else"}, "not an explainnn causal graph"),
        ({"graph": {"nodes": [{"id": "fc1:1", "layer": "fc1"}], "edges": []}}, "malformed"),
    ],
)
def test_foreign_files_and_versions_are_refused(lenet_graph, tmp_path, change, message):
    path = lenet_graph.to_json(tmp_path / "graph.json")
    document = json.loads(path.read_text())
    document.update(change)
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=message) as caught:
        CausalGraph.from_json(path)
    assert "\n" not in str(caught.value)


def test_missing_and_broken_files_are_user_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CausalGraph.from_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        CausalGraph.from_json(tmp_path / "bad.json")


def test_graphml_export_is_readable_by_networkx(lenet_graph, tmp_path):
    path = lenet_graph.to_graphml(tmp_path / "graph.graphml")
    read = nx.read_graphml(path)
    assert read.is_directed()
    assert set(read.nodes) == set(lenet_graph.graph.nodes)
    assert set(read.edges) == set(lenet_graph.graph.edges)
    assert read.nodes["fc2:7"]["index"] == 7 and read.nodes["fc2:7"]["kind"] == "hidden"
    edge = read.edges["fc2:7", "fc3:3"]
    assert edge["effect"] == pytest.approx(-0.57)
    assert json.loads(edge["intervention"]) == {"kind": "edge", "u": 0.0}
    metadata = json.loads(read.graph["metadata"].replace("NaN", "null"))
    assert metadata["target"] == 3 and read.graph["schema_version"] == SCHEMA_VERSION


def test_csv_tables(lenet_graph, tmp_path):
    with open(lenet_graph.to_csv(tmp_path / "edges.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == lenet_graph.graph.number_of_edges()
    first = rows[0]
    assert list(first)[:6] == ["cause_unit", "effect_unit", "cause_layer", "cause_index", "effect_layer", "effect_index"]
    assert (first["cause_unit"], first["effect_unit"], first["effect"]) == ("input:0", "fc1:2", "-2.0")
    with open(lenet_graph.to_csv(tmp_path / "units.csv", table="units"), newline="") as handle:
        units = list(csv.DictReader(handle))
    assert [u["id"] for u in units] == lenet_graph.units()
    with pytest.raises(UserError, match="valid tables"):
        lenet_graph.to_csv(tmp_path / "x.csv", table="nodes")


def test_summary_lists_every_layer(lenet_graph):
    text = lenet_graph.summary()
    assert text.splitlines()[0] == "CausalGraph: 9 units, 7 edges (model lenet, dataset mnist, target 3)"
    assert "fc2" in text and "7, 30, 52, 80" in text


def test_drawing_writes_a_png(lenet_graph, tmp_path):
    fig = draw_graph(lenet_graph, tmp_path / "graph.png", title="LeNet, target 3")
    assert isinstance(fig, Figure)
    data = (tmp_path / "graph.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    lenet_graph.draw(tmp_path / "few.png", max_units_per_layer=2)
    assert (tmp_path / "few.png").stat().st_size > 0


def test_drawing_into_given_axes_and_empty_graph(tmp_path):
    fig = Figure()
    ax = fig.add_subplot()
    assert draw_graph(CausalGraph(), ax=ax) is fig
    with pytest.raises(UserError, match="max_units_per_layer"):
        draw_graph(CausalGraph(), max_units_per_layer=0)
