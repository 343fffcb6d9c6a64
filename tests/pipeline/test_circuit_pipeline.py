"""The circuit step of the pipeline, and held-out splitting: graph/circuit samples never meet the checks' samples."""

from __future__ import annotations

import pytest

from explainnn.causal import CausalGraph
from explainnn.config import build_config
from explainnn.pipeline import CircuitReport, Run
from explainnn.pipeline.circuit import CURVE_POINTS, describe_circuit

SMALL = ["progress=false", "data.name=digits", "training.epochs=8", "training.lr=0.003", "device=cpu",
         "discovery.n_samples=20", "discovery.stability.enabled=false", "circuit.n_samples=20", "circuit.steps=40",
         "circuit.level=nodes", "circuit.n_random=100", "circuit.eval_samples=30", "attribution.enabled=false",
         "evaluation.methods=[saliency]", "evaluation.metrics=[Sparseness]", "evaluation.options={}",
         "evaluation.n_samples=10", "analyses.views.enabled=false", "analyses.clustering.enabled=false",
         "analyses.text.enabled=false", "report=true"]


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    run = Run(build_config(overrides=SMALL), run_dir=folder)
    return run, run.all()


def test_graph_and_circuit_come_from_the_training_split_and_the_checks_from_the_test_split(train_run, capsys):
    run, ctx = train_run
    graph, circuit = ctx.graphs[3], ctx.circuit_graphs[3]
    assert graph.metadata["inputs"] == circuit.metadata["inputs"] == "train split"
    x = ctx.dataset
    # The samples really are training samples of class 3 the model classifies correctly.
    assert all(int(x.y_train[i]) == 3 for i in circuit.metadata["samples"])
    check = circuit.results["circuit"]
    assert check["n_eval"] == min(30, int((x.y_test == 3).sum()))
    assert ctx.evaluations[3].settings["samples_used_by_discovery"] == 0
    size = circuit.results["circuit_search"]
    assert 0 < size["size"] <= size["total_units"] and size["faithfulness"] >= 0.8
    report = run.circuits[3]  # the typed result the step carries on the context
    assert isinstance(report, CircuitReport) and report.graph is circuit and report.target == 3
    assert report.size == size["size"] and report.check.to_dict() == check and report.curves is not None
    assert report.held_out_sufficiency == check["sufficiency"]["normalized"]


def test_circuit_files_and_the_report(train_run):
    run, ctx = train_run
    folder = run.run_dir / "circuit" / "class_3"
    for name in ("circuit.json", "circuit.graphml", "units.csv", "curves.csv", "curve_areas.csv", "curves.png",
                 "circuit_graph.png", "circuit_check.png"):
        assert (folder / name).stat().st_size > 0, name
    assert CausalGraph.from_json(folder / "circuit.json") == ctx.circuit_graphs[3]
    report = (run.run_dir / "report.md").read_text()
    assert "(train split)" in report and "curves.png" in report and "circuit_graph.png" in report


def test_test_split_discovery_leaves_its_samples_out_of_the_checks(train_run, tmp_path):
    trained = train_run[0].run_dir / "model.pt"
    ctx = Run(build_config(overrides=[*SMALL, "discovery.samples_from=test", "evaluation.enabled=false",
                                      "circuit.curves=false", "report=false", "training.train=never",
                                      f"model.checkpoint={trained}"]), run_dir=tmp_path).all()
    circuit = ctx.circuit_graphs[3]
    assert circuit.metadata["inputs"] == "test split"
    of_class = int((ctx.dataset.y_test == 3).sum())
    assert circuit.results["circuit"]["n_eval"] == min(30, of_class - len(circuit.metadata["samples"]))
    graph = ctx.graphs[3]
    assert graph.results["circuit"]["n_eval"] == of_class - len(graph.metadata["samples"])


def test_the_run_prints_the_circuit_size_and_its_held_out_sufficiency(train_run):
    _, ctx = train_run
    circuit = ctx.circuit_graphs[3]
    search, check = circuit.results["circuit_search"], circuit.results["circuit"]
    line = describe_circuit(circuit)
    assert f"{search['size']} of {search['total_units']} hidden units" in line
    assert f"held out ({check['n_eval']} test samples): sufficiency {check['sufficiency']['normalized']:.2f}" in line
    sizes = circuit.results["curves"]["sizes"]
    assert len(sizes) in (CURVE_POINTS, CURVE_POINTS + 1) and search["size"] in sizes
