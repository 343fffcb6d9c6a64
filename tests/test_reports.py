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
from explainnn.evaluation import compare, summarise, write_csv
from explainnn.evaluation.io import TABLES
from explainnn.reports import collect, write_report
from explainnn.reports.__main__ import main as reports_main

TRAINING = {
    "model": {"name": "lenet", "params": {}},
    "dataset": "mnist",
    "train_accuracy": 0.97,
    "test_accuracy": 0.9589,
    "training": {"epochs": 2, "lr": 0.001, "seconds": 3.2, "history": [{"epoch": 1, "loss": 0.5}, {"epoch": 2,
                                                                                                  "loss": 0.25}]},
}
CIRCUIT = {
    "n_eval": 50, "n_random": 20, "ablation": "mean", "layers": ["fc1"], "circuit_size": {"fc1": 2},
    "layer_size": {"fc1": 8}, "clean_logit": 10.0, "clean_accuracy": 1.0, "empty_logit": 1.0, "empty_accuracy": 0.0,
    "sufficiency": {"logit": 8.0, "logit_fraction": 0.8, "accuracy": 0.9, "random_logit_mean": 3.0,
                    "random_logit_std": 1.0, "random_accuracy_mean": 0.1, "p_value_vs_random": 0.047619,
                    "normalized": 0.7778, "random_normalized_mean": 0.2222},
    "necessity": {"logit": 2.0, "logit_fraction": 0.2, "accuracy": 0.05, "random_logit_mean": 9.0,
                  "random_logit_std": 0.5, "random_accuracy_mean": 0.95, "p_value_vs_random": 0.047619,
                  "logit_drop_fraction": 0.8},
}
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


def evaluation_tables(folder: Path) -> None:
    scores = [{"method": method, "metric": metric, "sample": sample, "value": value + (method == "causal")}
              for method in ("causal", "saliency") for metric in ("IROF", "LocalLipschitzEstimate")
              for sample, value in enumerate([0.1, 0.4, 0.3, 0.2])]
    directions = {"IROF": "higher", "LocalLipschitzEstimate": "lower"}
    families = {"IROF": "faithfulness", "LocalLipschitzEstimate": "robustness"}
    write_csv(scores, folder / "scores.csv", TABLES["scores"])
    write_csv(summarise(scores, directions, families=families), folder / "summary.csv", TABLES["summary"])
    write_csv(compare(scores, directions), folder / "comparisons.csv", TABLES["comparisons"])
    write_csv([{"metric": "PointingGame", "method": "*", "reason": "needs <masks> & more"}], folder / "skipped.csv",
              TABLES["skipped"])
    settings = {"reference": "causal", "samples": [0, 1, 2, 3], "target": 3, "seed": 0, "modality": "image",
                "quantus_layout": [4, 1, 32, 32], "samples_used_by_discovery": 0,
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
    assert page.index("Causal graph") < page.index("Circuit sufficiency") < page.index("Stability of the graph")


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
