"""Reports from run folders: self-contained HTML, Markdown, and graceful degradation when steps were off."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from explainnn.causal import CausalGraph
from explainnn.errors import UserError
from explainnn.evaluation import compare, summarise
from explainnn.evaluation.io import TABLES, write_table
from explainnn.pipeline.report import rebuild_report as reports_main
from explainnn.reports import collect, write_report

TRAINING = {
    "model": {"name": "lenet", "params": {}},
    "dataset": "mnist",
    "train_accuracy": 0.97,
    "test_accuracy": 0.9589,
    "training": {"epochs": 2, "lr": 0.001, "seconds": 3.2, "history": [{"epoch": 1, "loss": 0.5}, {"epoch": 2,
                                                                                                  "loss": 0.25}]},
}
CIRCUIT = {
    "n_eval": 50, "n_random": 20, "random_sets": "same size per layer", "ablation": "mean", "layers": ["fc1"],
    "circuit_size": {"fc1": 2}, "layer_size": {"fc1": 8}, "units": 2, "total_units": 8,
    "clean_logit": 10.0, "clean_accuracy": 1.0, "empty_logit": 1.0, "empty_accuracy": 0.0,
    "sufficiency": {"logit": 8.0, "logit_fraction": 0.8, "accuracy": 0.9, "random_logit_mean": 3.0,
                    "random_logit_std": 1.0, "random_accuracy_mean": 0.1, "p_value_vs_random": 0.047619,
                    "normalized": 0.7778, "random_normalized_mean": 0.2222},
    "necessity": {"logit": 2.0, "logit_fraction": 0.2, "accuracy": 0.05, "random_logit_mean": 9.0,
                  "random_logit_std": 0.5, "random_accuracy_mean": 0.95, "p_value_vs_random": 0.047619,
                  "logit_drop_fraction": 0.8, "normalized": 0.8889, "random_normalized_mean": 0.1111},
    "necessity_where_chosen": {"layers_left_intact": [], "normalized": 0.8889, "random_normalized_mean": 0.1111,
                               "random_normalized_q99": 0.3, "p_value_vs_random": 0.047619},
}
"""A graph's ``results["circuit"]``, as :meth:`explainnn.causal.CircuitCheck.to_dict` writes it."""
STABILITY = {"layer": "fc1", "delta": 0.1, "bootstrap": True, "repeats": 5, "hard_causes": [1, 4],
             "betas": [0.0, 0.5], "jaccard_mean": [1.0, 0.5], "jaccard_std": [0.0, 0.1], "n_kept_mean": [2.0, 1.4]}


def picture(path: Path) -> Path:
    figure = Figure(figsize=(1, 1))
    FigureCanvasAgg(figure)
    figure.subplots().plot([0, 1], [1, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=30)
    return path


def graph() -> CausalGraph:
    made = CausalGraph({"model": "lenet", "dataset": "mnist", "target": 3, "n_samples": 50,
                        "options": {"on": "nodes", "intervention": "hard", "test": "paired"}})
    made.add_unit("fc1", 1, depth=1)
    made.add_unit("fc1", 4, depth=1)
    made.add_unit("fc2", 3, kind="output", depth=2)
    made.add_edge("fc1:1", "fc2:3")
    made.add_edge("fc1:4", "fc2:3")
    made.add_result("circuit", CIRCUIT)
    made.add_result("stability", STABILITY)
    return made


def evaluation_tables(folder: Path, misclassified: int | None = 0) -> None:
    scores = [{"method": method, "metric": metric, "sample": sample, "value": value + (method == "causal")}
              for method in ("causal", "saliency") for metric in ("IROF", "LocalLipschitzEstimate")
              for sample, value in enumerate([0.1, 0.4, 0.3, 0.2])]
    directions = {"IROF": "higher", "LocalLipschitzEstimate": "lower"}
    families = {"IROF": "faithfulness", "LocalLipschitzEstimate": "robustness"}
    write_table(folder / "scores.csv", scores, TABLES["scores"])
    write_table(folder / "summary.csv", summarise(scores, directions, families=families), TABLES["summary"])
    write_table(folder / "comparisons.csv", compare(scores, directions), TABLES["comparisons"])
    write_table(folder / "skipped.csv", [{"metric": "PointingGame", "method": "*", "reason": "needs <masks> & more"}],
                TABLES["skipped"])
    settings = {"reference": "causal", "samples": [0, 1, 2, 3], "target": 3, "seed": 0, "modality": "image",
                "quantus_layout": [4, 1, 32, 32], "samples_used_by_discovery": 0,
                **({} if misclassified is None else {"samples_misclassified": misclassified}),
                "metrics": {"IROF": {"family": "faithfulness", "init": {"normalise": True}, "call": {}, "note": ""}}}
    (folder / "settings.json").write_text(json.dumps(settings))
    picture(folder / "ranks.png")


@pytest.fixture()
def run(tmp_path) -> Path:
    folder = tmp_path / "mnist" / "lenet"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 0\ndata:\n  name: mnist\n")
    (folder / "training.json").write_text(json.dumps(TRAINING))
    discovery = folder / "discovery" / "class_3"
    graph().to_json(discovery / "graph.json")
    for name in ("graph.png", "circuit.png", "stability.png"):
        picture(discovery / name)
    picture(folder / "attributions" / "class_3" / "grid.png")
    evaluation_tables(folder / "evaluation")
    return folder


def test_full_report_is_one_self_contained_file(run) -> None:
    paths = write_report(run)
    assert paths == {"html": run / "report.html", "markdown": run / "report.md"}
    page = paths["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("data:image/png;base64,") == 5
    assert not re.search(r'<(img|script|link)[^>]+(src|href)="(?!data:)', page)
    for text in ("lenet on mnist", "95.89%", "Class 3", "causes of the target", "0.778", "p vs random",
                 "Jaccard", "LocalLipschitzEstimate", "needs &lt;masks&gt; &amp; more", "seed: 0",
                 '<a href="evaluation/summary.csv">', "final training loss"):
        assert text in page, text
    assert (page.index("Causal graph") < page.index("Causal graph: sufficiency and necessity")
            < page.index("Causal graph: stability"))


def test_markdown_links_pictures_relative_to_the_run_folder(run) -> None:
    text = write_report(run)["markdown"].read_text()
    for relative in ("discovery/class_3/graph.png", "attributions/class_3/grid.png", "evaluation/ranks.png"):
        assert f"]({relative})" in text and (run / relative).is_file()
    assert "| IROF | faithfulness | ↑ higher | causal |" in text and "```yaml\nseed: 0" in text
    table = [line for line in text.splitlines() if line.startswith("| LocalLipschitzEstimate")]
    assert len(table) == 2 and "worse" in table[1]  # causal has the higher (worse) Lipschitz estimate


def test_in_memory_pieces_replace_the_files(run) -> None:
    report = collect(run, config_yaml="seed: 7\n", training={**TRAINING, "test_accuracy": 0.5},
                     graphs={3: graph()}, title="custom")
    assert report.config_yaml == "seed: 7\n" and report.title == "custom"
    assert report.training["test_accuracy"] == 0.5 and report.classes[0].n_edges == 2
    assert [row["causes"] for row in report.classes[0].layers] == [2, 1]


def test_disabled_steps_degrade_to_a_stated_gap(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "training.json").write_text(json.dumps(TRAINING))
    page = write_report(folder)["html"].read_text()
    assert "discovery did not run" in page and "the evaluation did not run" in page
    assert "no attribution pictures" in page and "no config.yaml" in page
    markdown = (folder / "report.md").read_text()
    assert "_the evaluation did not run (evaluation.enabled: false)_" in markdown


def test_evaluations_per_class_get_one_section_each(run) -> None:
    evaluation_tables(run / "evaluation" / "class_5")
    report = collect(run)
    assert [section.name for section in report.evaluations] == ["Evaluation", "Evaluation: class_5"]
    assert all(len(section.pictures) == 1 for section in report.evaluations)


def test_pictures_of_other_steps_and_a_missing_folder(run, tmp_path) -> None:
    extra = picture(tmp_path / "elsewhere.png")
    picture(run / "views" / "filters_conv1.png")
    report = collect(run, artifacts={"an extra view": extra, "a table": run / "evaluation" / "summary.csv"})
    assert [p.caption for p in report.others["Other pictures"]] == ["an extra view"]
    assert [p.relative for p in report.others["Views"]] == ["views/filters_conv1.png"]
    assert "<h2>Views</h2>" in write_report(run)["html"].read_text()
    with pytest.raises(UserError, match="run folder .* not found"):
        write_report(tmp_path / "nowhere")


def test_command_line_rebuilds_a_report(run, capsys) -> None:
    assert reports_main([str(run)]) == 0
    assert (run / "report.html").is_file() and "wrote" in capsys.readouterr().out
    assert reports_main([str(run / "missing")]) == 2
    assert capsys.readouterr().err.startswith("explainnn: error: run folder")


def minimal_circuit(folder: Path) -> None:
    """``circuit/class_3/``: a minimal circuit of 2 fc1 units with its checks and pictures, as the circuit step writes."""
    made = CausalGraph({"model": "lenet", "dataset": "mnist", "target": 3, "n_samples": 40, "kind": "circuit",
                        "inputs": "train split", "samples": list(range(40))})
    made.add_unit("fc1", 1, depth=1)
    made.add_unit("fc1", 4, depth=1)
    made.add_unit("fc2", 3, kind="output", depth=2)
    made.add_edge("fc1:1", "fc2:3")
    made.add_result("circuit_search", {"size": 2, "total_units": 8, "fraction": 0.25, "per_layer": {"fc1": 2},
                                       "layer_size": {"fc1": 8}, "faithfulness": 0.83, "target_faithfulness": 0.8})
    made.add_result("circuit", CIRCUIT)
    made.to_json(folder / "circuit.json")
    for name in ("circuit_graph.png", "circuit_check.png", "curves.png"):
        picture(folder / name)


@pytest.mark.parametrize("misclassified, expected", [
    (3, "4 test samples of class 3: 1 correctly classified, 3 misclassified"),
    (0, "4 test samples of class 3, all correctly classified"),
    (None, "4 test samples of class 3;"),
], ids=["three-misclassified", "none-misclassified", "not-recorded"])
def test_the_samples_line_counts_what_the_evaluation_used(run, misclassified, expected) -> None:
    evaluation_tables(run / "evaluation", misclassified=misclassified)
    paths = write_report(run)
    for text in (paths["markdown"].read_text(), paths["html"].read_text()):
        assert expected in text
        assert "correctly classified test samples" not in text  # the old claim, wrong with misclassified ones


def test_the_causal_graph_and_the_minimal_circuit_have_one_name_each(run) -> None:
    minimal_circuit(run / "circuit" / "class_3")
    report = collect(run)
    assert [section.target for section in report.circuits] == [3]
    assert "Circuit" not in report.others  # the minimal circuit's pictures are in their own section
    for text in (write_report(run)["markdown"].read_text(),):
        graph_part, circuit_part = text.split("## Minimal circuits")
        circuit_part = circuit_part.split("## Attributions")[0]
        assert "Sufficiency and necessity of the causal graph" in graph_part
        assert "|   | causal graph | random sets of the same size" in graph_part
        assert "minimal circuit" not in graph_part.lower()
        assert "Sufficiency and necessity of the minimal circuit" in circuit_part
        assert "causal graph" not in circuit_part and "causal circuit" not in text
        assert "2 of 8 hidden units (25%: fc1 2/8), found on 40 samples (train split)" in circuit_part
        for name in ("circuit_graph.png", "circuit_check.png", "curves.png"):
            assert f"](circuit/class_3/{name})" in circuit_part
    page = (run / "report.html").read_text()
    assert page.index("<h2>Causal graphs</h2>") < page.index("<h2>Minimal circuits</h2>") < page.index(
        "<h2>Attributions</h2>")
    assert "Sufficiency and necessity of the minimal circuit" in page


def test_a_jaccard_of_zero_beside_kept_units_is_explained(tmp_path) -> None:
    folder = tmp_path / "run"
    made = graph()
    made.add_result("stability", {**STABILITY, "soft_rule": "scale", "betas": [0.0, 1.0], "jaccard_mean": [1.0, 0.0],
                                  "n_kept_mean": [2.0, 25.8], "n_kept_hard_mean": [2.0, 0.0]})
    made.to_json(folder / "discovery" / "class_3" / "graph.json")
    text = write_report(folder)["markdown"].read_text()
    assert "| beta | Jaccard (mean ± sd) | units kept (mean) | of them hard causes (mean) |" in text
    assert "| 1 | 0.000 ± 0.100 | 25.8 | 0.0 |" in text
    assert "Jaccard 0 at beta 1 beside units kept" in text and "strengthens instead of cutting" in text


def test_no_note_when_every_jaccard_is_above_zero(run) -> None:
    assert "Jaccard 0" not in write_report(run)["markdown"].read_text()
