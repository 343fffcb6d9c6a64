"""Edge circuits in the run: the circuit step at level edges, its files, run line and report, the picture's legend,
``explainnn.circuit``'s routing and the circuit section's one-line errors."""

from __future__ import annotations

import contextlib
import csv
import io
import re

import numpy as np
import pytest
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from torch import nn

import explainnn
import explainnn.causal as causal
from explainnn.causal import CausalGraph, EdgeCircuitReport
from explainnn.causal.draw import EDGE_COLOUR_LABELS, OPPOSES_COLOUR, SUPPORTS_COLOUR, draw_edge_circuit
from explainnn.config import EDGE_METHODS, build_config
from explainnn.errors import ConfigError
from explainnn.pipeline import Run
from explainnn.pipeline.circuit import EDGE_FIELDS, describe_edge_circuit

SMALL = ["progress=false", "data.name=digits", "training.epochs=6", "training.lr=0.003", "device=cpu",
         "discovery.n_samples=10", "discovery.stability.enabled=false", "discovery.check_circuit=false",
         "circuit.level=edges", "circuit.method=eap", "circuit.faithfulness=0.5", "circuit.n_samples=10",
         "circuit.eval_samples=20",
         "circuit.methods=[eap_ig, random]", "attribution.enabled=false", "evaluation.enabled=false",
         "analyses.views.enabled=false", "analyses.clustering.enabled=false", "analyses.text.enabled=false",
         "report=true"]


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edge_run")
    run = Run(build_config(overrides=SMALL), run_dir=folder)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ctx = run.all()
    return run, ctx, printed.getvalue()


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_edge_circuit_step_writes_its_files(edge_run):
    run, ctx, _ = edge_run
    folder = run.run_dir / "circuit" / "class_3"
    for name in ("edge_circuit.json", "edges.csv", "mib.csv", "mib.png", "edge_circuit.png"):
        assert (folder / name).stat().st_size > 0, name
    report = ctx.edge_circuits[3]
    assert isinstance(report, EdgeCircuitReport) and ctx.circuit_graphs[3] is report.graph
    graph = CausalGraph.from_json(folder / "edge_circuit.json")
    assert graph == report.graph and graph.metadata["inputs"] == "train split"
    found = graph.results["edge_circuit"]
    assert 0 < found["n_edges"] == report.size < found["total_edges"] == report.total_edges
    assert found["faithfulness"] >= 0.5  # exact, on the circuit samples
    edges = _rows(folder / "edges.csv")
    assert list(edges[0]) == EDGE_FIELDS and len(edges) == report.size
    effects = [abs(float(row["effect"])) for row in edges]
    assert effects == sorted(effects, reverse=True)
    circuit_edges = {(u, v) for u, v, _ in graph.edges()}
    assert all((row["parent"], row["child"]) in circuit_edges for row in edges)
    discovered = ctx.discoveries[3].graph.digraph
    for row in edges:  # discovery's numbers exactly where it holds the same unit pair, empty elsewhere
        stats = discovered.get_edge_data(row["parent"], row["child"])
        if stats is None:
            assert row["discovery_p_value"] == ""
        else:
            assert float(row["discovery_p_value"]) == pytest.approx(stats["p_value"])
            assert float(row["discovery_ci_low"]) <= float(row["discovery_ci_high"])
    assert any(row["discovery_p_value"] for row in edges)


def test_held_out_faithfulness_and_the_mib_curves_use_test_samples_the_search_never_saw(edge_run):
    run, ctx, _ = edge_run
    report = ctx.edge_circuits[3]
    held = report.held_out
    x = ctx.dataset
    of_class = int((x.y_test == 3).sum())
    assert 2 <= held.n_samples <= min(20, of_class) and held.split == "test"
    assert all(int(x.y_test[i]) == 3 for i in held.samples)
    assert report.graph.results["held_out"] == held.to_dict()
    assert np.isfinite(report.held_out_faithfulness)
    rows = _rows(run.run_dir / "circuit" / "class_3" / "mib.csv")
    methods = [row["method"] for row in rows]
    assert list(dict.fromkeys(methods)) == ["explainnn", "eap_ig", "random"] and len(rows) == 30
    assert {int(row["n_samples"]) for row in rows} == {held.n_samples}
    own = [row for row in rows if row["method"] == "explainnn"]
    assert [float(row["budget_percent"]) for row in own] == [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    assert float(own[-1]["faithfulness"]) == pytest.approx(1.0)  # every edge kept is the full model
    assert set(report.curves) == {"explainnn", "eap_ig", "random"}
    assert float(own[0]["cpr"]) == pytest.approx(report.curves["explainnn"].cpr)


def test_the_run_prints_one_line_for_the_edge_circuit(edge_run):
    _, ctx, printed = edge_run
    graph = ctx.edge_circuits[3].graph
    found, held, mib = graph.results["edge_circuit"], graph.results["held_out"], graph.results["mib"]
    line = describe_edge_circuit(graph)
    assert line in printed.splitlines()
    assert re.fullmatch(r"circuit     class 3: [\d,]+ of [\d,]+ edges \(\d+\.\d%\), held-out f -?\d\.\d\d on \d+ samples, "
                        r"CPR -?\d\.\d\d \(EAP-IG -?\d\.\d\d, random -?\d\.\d\d\)", line), line
    assert f"{found['n_edges']:,} of {found['total_edges']:,} edges" in line
    assert f"held-out f {held['faithfulness']:.2f} on {held['n_samples']} samples" in line
    assert f"CPR {mib['explainnn']['cpr']:.2f} (EAP-IG {mib['eap_ig']['cpr']:.2f}" in line


def test_the_report_shows_the_edge_circuit_first_its_edges_and_the_mib_section(edge_run):
    run, _, _ = edge_run
    text = (run.run_dir / "report.md").read_text()
    main, mib, secondary = (text.index("circuit/class_3/edge_circuit.png"), text.index("#### Circuit faithfulness (MIB)"),
                            text.index("discovery/class_3/graph.png"))
    assert main < mib < secondary  # the edge circuit is the class's main picture, discovery's graph after it
    assert "#### The edge circuit's strongest edges" in text and "| parent | child | kind |" in text
    assert "| method | edges for f >= 0.8" in text and "| EAP-IG |" in text and "| explainnn |" in text
    assert "Significance graph (discovery)" in text
    page = (run.run_dir / "report.html").read_text()
    assert "<h4>Circuit faithfulness (MIB)</h4>" in page and "CPR (higher is better)" in page
    assert page.index("circuit/class_3/edge_circuit.png") < page.index("discovery/class_3/graph.png")
    assert "## Minimal circuits" not in text  # the node circuit did not run


# ----------------------------------------------------------------------------- the picture
def _circuit(effects):
    graph = CausalGraph({"target": 0})
    a = graph.add_unit("input", 0, kind="input", depth=0)
    hidden = [graph.add_unit("h", i, depth=1) for i in range(len(effects))]
    out = graph.add_unit("out", 0, kind="output", depth=2)
    for unit, effect in zip(hidden, effects):
        graph.add_edge(a, unit, effect=effect, kind="input")
        graph.add_edge(unit, out, effect=effect / 2, kind="weights")
    return graph


def _legend(figure):
    legend = figure.axes[0].get_legend()
    return {handle.get_label(): handle.get_color() for handle in legend.legend_handles if isinstance(handle, Line2D)}


@pytest.mark.parametrize("effects, colours", [
    ([0.4, 0.1, -0.2], {SUPPORTS_COLOUR, OPPOSES_COLOUR}),
    ([0.4, 0.1], {SUPPORTS_COLOUR}),
    ([-0.3], {OPPOSES_COLOUR}),
])
def test_the_pictures_legend_lists_exactly_the_colours_drawn(effects, colours):
    from matplotlib.colors import to_hex

    figure = draw_edge_circuit(_circuit(effects))
    drawn = {to_hex(patch.get_edgecolor(), keep_alpha=False)
             for patch in figure.axes[0].patches if isinstance(patch, FancyArrowPatch)}
    assert drawn == {to_hex(colour) for colour in colours}
    legend = _legend(figure)
    listed = {to_hex(colour) for label, colour in legend.items() if label in EDGE_COLOUR_LABELS.values()}
    assert listed == drawn
    for colour in colours:  # each colour under its own meaning
        assert legend[EDGE_COLOUR_LABELS[colour]] == colour
    labels = {text.get_text() for text in figure.axes[0].texts}
    assert {"input:0", "out:0", "h:0"} <= labels  # units labelled "layer:index"


def test_the_picture_widens_edges_with_their_effect_and_draws_only_the_strongest():
    figure = draw_edge_circuit(_circuit([0.4, 0.1, -0.2]), max_edges=3)
    patches = [patch for patch in figure.axes[0].patches if isinstance(patch, FancyArrowPatch)]
    assert len(patches) == 3
    widths = sorted(patch.get_linewidth() for patch in patches)
    assert widths[-1] > widths[0]
    assert "3 weaker ones left out" in figure.axes[0].get_title()
    assert "h:1" not in {text.get_text() for text in figure.axes[0].texts}  # its edges are the weakest


# ----------------------------------------------------------------------------- explainnn.circuit
class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 6)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


@pytest.fixture()
def calls(monkeypatch):
    seen = {}

    def record(name):
        def fake(*args, **kwargs):
            seen[name] = (args, kwargs)
            return CausalGraph()
        return fake

    monkeypatch.setattr(causal, "edge_circuit", record("edges"))
    monkeypatch.setattr(causal, "node_circuit", record("nodes"))
    return seen


def test_circuit_is_exported_at_the_top_level_and_from_causal():
    assert explainnn.circuit is causal.circuit and "circuit" in explainnn.__all__
    for name in ("edge_circuit", "find_edge_circuit", "edge_scores", "mib_curve", "edges_needed", "MIBCurve",
                 "enumerate_edges", "EdgeAblation", "Edges"):
        assert hasattr(causal, name) and name in causal.__all__, name


def test_circuit_routes_edges_with_model_inputs_target_first(calls):
    model, x = TwoLayer(), torch.randn(12, 4)
    counterfactuals = torch.randn(12, 4)
    explainnn.circuit(model, x, 2, faithfulness=0.9, counterfactuals=counterfactuals, layers=["fc1"], seed=3,
                      steps=7, method="eap")
    args, kwargs = calls["edges"]
    assert args[0] is model and torch.equal(args[1], x) and args[2] == 2
    assert kwargs["ablation"] == "patch" and kwargs["faithfulness"] == 0.9 and kwargs["seed"] == 3
    assert kwargs["counterfactuals"] is counterfactuals and kwargs["layers"] == ["fc1"]
    assert kwargs["steps"] == 7 and kwargs["method"] == "eap" and "nodes" not in calls


def test_circuit_routes_nodes_with_mean_ablation_and_the_common_arguments(calls):
    model, x, y = TwoLayer(), torch.randn(12, 4), torch.zeros(12, dtype=torch.long)
    explainnn.circuit(model, x, 1, level="nodes", labels=y, faithfulness=0.7, seed=2, steps=5, n_samples=8)
    args, kwargs = calls["nodes"]
    assert args[0] is model and torch.equal(args[1], x) and args[2] == 1
    assert kwargs == {"faithfulness": 0.7, "labels": y, "layers": None, "seed": 2, "steps": 5, "n_samples": 8}
    explainnn.circuit(model, x, 1, level="nodes", ablation="mean")
    assert "edges" not in calls


@pytest.mark.parametrize("call, fragment", [
    (dict(level="units"), "level must be one of edges, nodes; got 'units'"),
    (dict(ablation="resample"), "ablation must be one of patch, mean, zero; got 'resample'"),
    (dict(level="nodes", ablation="patch"), "level 'nodes' ablates units by their mean"),
    (dict(level="nodes", counterfactuals=torch.zeros(12, 4)), "level 'nodes' does not take counterfactuals"),
    (dict(level="nodes", tau=0.1), "level 'nodes' does not take the option 'tau'"),
    (dict(sparsity=2.0), "level 'edges' does not take the option 'sparsity'"),
])
def test_circuit_refuses_what_a_level_does_not_take_in_one_line(calls, call, fragment):
    with pytest.raises(ConfigError) as error:
        explainnn.circuit(TwoLayer(), torch.randn(12, 4), 0, **call)
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert not calls  # refused before any work


def test_circuit_finds_an_edge_circuit_and_a_node_circuit():
    model = TwoLayer()
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    target = int(model(x).argmax(-1).mode().values)
    edges = explainnn.circuit(model, x, target, method="eap", n_samples=20, ablation="mean")
    found = edges.results["edge_circuit"]
    assert found["faithfulness"] >= 0.8 and 0 < found["n_edges"] <= found["total_edges"]
    assert found["ablation"] == "mean" and all("effect" in attrs for _, _, attrs in edges.edges())
    nodes = explainnn.circuit(model, x, target, level="nodes", n_samples=20, steps=20)
    assert "circuit_search" in nodes.results and "edge_circuit" not in nodes.results


# ----------------------------------------------------------------------------- the config
def _error(*overrides):
    with pytest.raises(ConfigError) as info:
        build_config(None, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_circuit_section_defaults_to_edges_under_patching_with_mib_baselines():
    options = build_config().circuit
    assert options.level == "edges" and options.edge_ablation() == "patch" and options.mib
    assert options.methods == ["eap", "eap_ig", "random"] and options.method == "edge_pruning"
    assert build_config(None, ["circuit.level=nodes"]).circuit.edge_ablation() == "mean"
    from explainnn.causal.edge_search import METHODS

    assert tuple(EDGE_METHODS) == tuple(METHODS)


@pytest.mark.parametrize("override, fragment", [
    ("circuit.level=edge", "circuit.level: 'edge' is not a valid choice (did you mean 'edges'?)"),
    ("circuit.ablation=patching", "circuit.ablation: 'patching' is not a valid choice"),
    ("circuit.methods=[eap, acdcc]", "circuit.methods.1: 'acdcc' is not a valid choice (did you mean 'acdc'?)"),
    ("circuit.methods=[eap, eap]", "circuit.methods: lists 'eap' more than once"),
    ("circuit.mib=maybe", "circuit.mib: expected true or false"),
    ("circuit.faithfulness=1.5", "circuit.faithfulness: must be <= 1"),
])
def test_bad_circuit_values_are_one_line(override, fragment):
    assert fragment in _error(override)


def test_patching_needs_the_edge_level():
    message = _error("circuit.level=nodes", "circuit.ablation=patch")
    assert "level 'nodes' ablates units by their mean" in message and "level: edges" in message


def test_a_bad_circuit_value_exits_2_before_any_work(tmp_path, capsys):
    from explainnn.main import main

    code = main(["circuit.level=edgs", f"output_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "circuit.level" in err and "did you mean 'edges'" in err
    assert not any(tmp_path.iterdir())
