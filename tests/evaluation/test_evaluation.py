"""The evaluation on tiny trained models: every metric on every modality it claims, fairness rules, files."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from explainnn.attributions import METHODS, MethodInfo
from explainnn.causal import discover
from explainnn.config import load_config
from explainnn.data import Dataset, load_dataset, pad_images
from explainnn.errors import ConfigError, UserError
from explainnn.evaluation import (
    METRICS,
    EvaluationInputs,
    MetricContext,
    evaluate,
    evaluate_class,
    metric_spec,
    prepare_inputs,
    quantus_view,
    select_evaluation_samples,
)
from explainnn.models import RecurrentClassifier, build_model
from explainnn.torch_utils import seed_everything
from explainnn.training import train_model

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
N = 3
CHEAP = ["saliency", "gradient_x_input"]
FAST = {
    "FaithfulnessCorrelation": {"nr_runs": 5},
    "LocalLipschitzEstimate": {"nr_samples": 2},
    "MaxSensitivity": {"nr_samples": 2},
    "AvgSensitivity": {"nr_samples": 2},
}


def subset(dataset: Dataset, n_train: int, n_test: int = 48) -> Dataset:
    def cut(tensor, n):
        return None if tensor is None else tensor[:n]

    return replace(dataset, x_train=dataset.x_train[:n_train], y_train=dataset.y_train[:n_train],
                   x_test=dataset.x_test[:n_test], y_test=dataset.y_test[:n_test],
                   mask_train=cut(dataset.mask_train, n_train), mask_test=cut(dataset.mask_test, n_test))


def trained(name: str, dataset: Dataset, epochs: int = 2, **params) -> torch.nn.Module:
    seed_everything(0)
    model = build_model(name, dataset.info, **params)
    train_model(model, dataset, epochs=epochs, batch_size=32, lr=5e-3, progress=False)
    return model


def common_class(model: torch.nn.Module, dataset: Dataset) -> int:
    """The class with the most correctly classified test samples (tiny models miss some classes)."""
    with torch.no_grad():
        right = model(dataset.x_test).argmax(1) == dataset.y_test
    return int(torch.bincount(dataset.y_test[right], minlength=dataset.info.n_classes).argmax())


@pytest.fixture(scope="module")
def lenet(tmp_path_factory) -> tuple:
    mnist = subset(load_dataset("mnist", tmp_path_factory.mktemp("mnist")), 400)
    info = replace(mnist.info, input_shape=(1, 32, 32))
    padded = replace(mnist, info=info, x_train=pad_images(mnist.x_train, 32, "mnist"),
                     x_test=pad_images(mnist.x_test, 32, "mnist"))
    model = trained("lenet", padded)
    return model, padded, common_class(model, padded)


@pytest.fixture(scope="module")
def cases(lenet, tmp_path_factory) -> dict:
    """modality case -> (model, dataset, target)."""
    found = {"image": lenet}
    maj = subset(load_dataset("mnist_maj", tmp_path_factory.mktemp("maj"), n_train=300, n_test=48), 300)
    lstm = trained("lstm", maj, hidden_size=16)
    found["image+masks"] = (lstm, maj, common_class(lstm, maj))
    signals = subset(load_dataset("mnist1d", tmp_path_factory.mktemp("m1d"), num_samples=600), 400, n_test=120)
    gru = trained("gru", signals, epochs=3, hidden_size=16)
    found["sequence"] = (gru, signals, common_class(gru, signals))
    if (SHARED / "sst2" / "train.tsv").is_file():
        text = subset(load_dataset("sst2", SHARED, max_len=12, train_subset=600), 600)
        words = trained("gru", text, hidden_size=16, embedding_dim=8)
        found["tokens"] = (words, text, common_class(words, text))
    return found


def _run(model, dataset, target, methods=CHEAP, metrics=None, **kwargs):
    inputs = prepare_inputs(model, dataset, target, N)
    metrics = list(METRICS) if metrics is None else metrics
    options = {k: v for k, v in FAST.items() if k in metrics}
    return inputs, evaluate(model, inputs, methods, metrics, metric_options=options, progress=False, **kwargs)


@pytest.mark.parametrize("case", ["image", "image+masks", "sequence", "tokens"])
def test_every_metric_runs_on_every_modality_it_claims(cases, case) -> None:
    if case not in cases:
        pytest.skip(f"SST-2 files not found in {SHARED / 'sst2'}")
    model, dataset, target = cases[case]
    inputs, results = _run(model, dataset, target, reference="saliency")
    context = MetricContext(dataset.info.modality, tuple(inputs.x.shape[1:]), dataset.info.n_classes,
                            dataset=dataset.info.name, has_masks=dataset.mask_test is not None)
    ran = {(row["metric"], row["method"]) for row in results.scores}
    for name, spec in METRICS.items():
        reason = spec.skip_reason(context)
        if reason is None:
            assert {(name, m) for m in CHEAP} <= ran, f"{name} did not run on {case}"
            values = [row["value"] for row in results.scores if row["metric"] == name]
            assert len(values) == len(inputs.samples) * len(CHEAP)
            assert np.isfinite(values).mean() >= 0.5, f"{name} on {case}: {values}"
        else:
            assert {"metric": name, "method": "*", "reason": reason} in results.skipped
            assert all(row["metric"] != name for row in results.scores)
    assert len(results.summary) == len(ran) and results.comparisons
    assert len(inputs.samples) >= 2 and {row["sample"] for row in results.scores} == set(inputs.samples.tolist())


def test_inputs_reach_quantus_in_the_layout_it_accepts(cases) -> None:
    model, dataset, target = cases["sequence"]
    inputs = prepare_inputs(model, dataset, target, N)
    assert inputs.x.shape == (len(inputs.samples), 1, 40) and len(inputs.samples) >= 2
    assert type(inputs.model).__name__ == "ChannelFirstSequenceModel"
    wide = RecurrentClassifier("lstm", 3, 2, hidden_size=4)
    view_model, x, masks, options = quantus_view(wide, torch.rand(2, 7, 3), "sequence", torch.ones(2, 7, 3) > 0)
    assert view_model is wide and x.shape == (2, 1, 7, 3) and masks.shape == x.shape
    assert options == {"modality": "sequence"}
    inputs = EvaluationInputs(wide, x, np.zeros(2, dtype=np.int64), np.arange(2), "sequence", options)
    results = evaluate(wide, inputs, ["saliency"], ["Sparseness", "LocalLipschitzEstimate"],
                       metric_options={"LocalLipschitzEstimate": {"nr_samples": 2}}, progress=False)
    assert len(results.scores) == 4 and not results.skipped


def test_token_inputs_lose_the_shared_padding(cases) -> None:
    if "tokens" not in cases:
        pytest.skip("SST-2 files not found")
    model, dataset, _ = cases["tokens"]
    tokens = torch.tensor([[0, 0, 0, 5, 6], [0, 0, 7, 8, 9]])
    wrapper, x, masks, options = quantus_view(model, tokens, "tokens")
    assert x.shape == (2, 1, 3, 8) and masks is None and options == {}
    assert np.allclose(x[0, 0, 0], wrapper.pad_embedding.numpy())


def test_samples_are_correct_predictions_and_discovery_samples_come_last(lenet) -> None:
    model, dataset, target = lenet
    everything, _ = select_evaluation_samples(model, dataset.x_test, dataset.y_test, target, 100)
    with torch.no_grad():
        predicted = model(dataset.x_test[everything]).argmax(1)
    assert torch.all(predicted == target) and torch.all(dataset.y_test[everything] == target)
    chosen, used = select_evaluation_samples(model, dataset.x_test, dataset.y_test, target, len(everything),
                                             exclude=everything[:2].tolist())
    assert chosen[-2:].tolist() == everything[:2].tolist() and used.tolist() == [False] * (len(chosen) - 2) + [True] * 2
    inputs = prepare_inputs(model, dataset, target, 3, discovery_samples=everything[:2].tolist(), held_out=False)
    assert inputs.samples.tolist() == everything[:3].tolist() and inputs.in_discovery.tolist() == [True, True, False]
    held = prepare_inputs(model, dataset, target, 2, discovery_samples=everything[:2].tolist())
    assert len(everything) >= 4 and held.samples.tolist() == everything[2:4].tolist()
    assert not held.in_discovery.any()
    with pytest.raises(UserError, match="evaluation: inputs hold no samples"):
        select_evaluation_samples(model, dataset.x_test[:0], dataset.y_test[:0], target, 3)
    with pytest.raises(UserError, match="no test sample of class"):
        other = dataset.y_test != target
        select_evaluation_samples(model, dataset.x_test[other], dataset.y_test[other], target, 3)


def test_misclassified_samples_of_the_class_follow_the_correct_ones(lenet) -> None:
    model, dataset, target = lenet
    with torch.no_grad():
        predicted = model(dataset.x_test).argmax(1)
    labels = dataset.y_test.clone()
    labels[torch.nonzero(predicted != target).flatten()[:2]] = target  # two samples of the class it gets wrong
    correct = torch.nonzero((labels == target) & (predicted == target)).flatten().tolist()
    wrong = torch.nonzero((labels == target) & (predicted != target)).flatten().tolist()
    assert len(correct) >= 2 and len(wrong) >= 2
    chosen, used = select_evaluation_samples(model, dataset.x_test, labels, target, 1000,
                                             exclude=correct[:1], include_misclassified=True)
    assert chosen.tolist() == correct[1:] + wrong + correct[:1]
    assert used.tolist() == [False] * (len(chosen) - 1) + [True]
    assert select_evaluation_samples(model, dataset.x_test, labels, target, 1000)[0].tolist() == correct
    relabelled = replace(dataset, y_test=labels)
    inputs = prepare_inputs(model, relabelled, target, len(correct) + 1, include_misclassified=True)
    assert inputs.samples.tolist() == correct + wrong[:1]
    assert inputs.misclassified.tolist() == [False] * len(correct) + [True]
    assert (inputs.y == target).all()  # still explained and scored for the true class


@pytest.fixture(scope="module")
def graph(lenet):
    model, dataset, target = lenet
    return discover(model, dataset.x_test, target, labels=dataset.y_test, n_samples=4, on="nodes",
                    layers=["fc2", "fc1"])


def test_graph_reaches_every_explanation_and_the_model_is_untouched(lenet, graph, monkeypatch) -> None:
    model, dataset, target = lenet
    calls = []
    saliency = METHODS["saliency"].implementations["image"]

    def spy(model, inputs, target, *, graph):
        calls.append(graph)
        return saliency(model, inputs, target)

    monkeypatch.setitem(METHODS, "spy", MethodInfo("spy", True, False, {"image": spy}))
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    state = {key: value.clone() for key, value in model.state_dict().items()}
    python, numpy, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    metrics = ["LocalLipschitzEstimate", "RandomLogit", "EfficientMPRT", "MPRT", "Sparseness"]
    inputs, results = _run(model, dataset, target, methods=["causal", "spy", "saliency"], metrics=metrics,
                           graph=graph)
    assert not results.skipped
    # Once up front, twice for the perturbed inputs, once for the off-target class, and for the randomised copies.
    assert len(calls) >= 4 and all(g is graph for g in calls)
    assert {row["method"] for row in results.scores} == {"causal", "spy", "saliency"}
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert random.getstate() == python and torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy))
    model.eval()


def test_methods_meet_identical_samples_and_perturbations(lenet, monkeypatch) -> None:
    model, dataset, target = lenet
    monkeypatch.setitem(METHODS, "smoothgrad_twin", replace(METHODS["smoothgrad"], name="smoothgrad_twin"))
    metrics = ["FaithfulnessCorrelation", "LocalLipschitzEstimate", "MaxSensitivity", "RandomLogit", "PixelFlipping"]
    _, results = _run(model, dataset, target, methods=["smoothgrad", "smoothgrad_twin"], metrics=metrics,
                      method_options={"smoothgrad": {"nt_samples": 3}, "smoothgrad_twin": {"nt_samples": 3}},
                      reference="smoothgrad")
    values = {(r["method"], r["metric"], r["sample"]): r["value"] for r in results.scores}
    assert len(values) == 2 * len(metrics) * N
    for (method, metric, sample), value in values.items():
        if method == "smoothgrad":
            assert values[("smoothgrad_twin", metric, sample)] == value, metric
    assert len(results.comparisons) == len(metrics)
    assert all(row["p_value"] == 1.0 and row["reference_better"] is None for row in results.comparisons)


def test_both_engines_give_the_same_scores(lenet) -> None:
    """The batched engine and Quantus, through evaluate(): same seed, same draws, equal scores (rtol 1e-4)."""
    model, dataset, target = lenet
    metrics = ["FaithfulnessCorrelation", "PixelFlipping", "RegionPerturbation", "LocalLipschitzEstimate",
               "Sparseness", "Complexity"]
    runs = {engine: _run(model, dataset, target, metrics=metrics, reference="saliency", engine=engine)[1]
            for engine in ("fast", "quantus")}
    values = {engine: {(r["method"], r["metric"], r["sample"]): r["value"] for r in run.scores}
              for engine, run in runs.items()}
    assert values["fast"].keys() == values["quantus"].keys()
    keys = sorted(values["fast"])
    np.testing.assert_allclose([values["fast"][k] for k in keys], [values["quantus"][k] for k in keys],
                               rtol=1e-4, atol=1e-5)
    for engine, run in runs.items():
        assert run.settings["engine"] == engine
        assert {row["engine"] for row in run.timings if row["metric"] != "attributions"} == {engine}
        for row in run.timings:  # the time inside the attribution method: only where the metric re-explains
            assert 0.0 <= row["explain_seconds"] <= row["seconds"] + 1e-3
            assert (row["explain_seconds"] > 0) == (row["metric"] in ("attributions", "LocalLipschitzEstimate"))
    with pytest.raises(ConfigError, match="evaluation.engine must be one of fast, quantus"):
        _run(model, dataset, target, metrics=["Sparseness"], engine="numpy")


def test_unsupported_methods_and_bad_options_are_stated(cases) -> None:
    model, dataset, target = cases["image+masks"]
    _, results = _run(model, dataset, target, methods=["leave_one_out", "causal", "saliency"],
                      metrics=["Sparseness"])
    reasons = {row["method"]: row["reason"] for row in results.skipped}
    assert "no implementation for image inputs" in reasons["leave_one_out"]
    assert "needs a causal graph" in reasons["causal"]
    lenet_model, lenet_data, lenet_target = cases["image"]
    inputs = prepare_inputs(lenet_model, lenet_data, lenet_target, N)
    with pytest.raises(ConfigError, match="'IROF', which is not among the evaluated metrics"):
        evaluate(lenet_model, inputs, CHEAP, ["Sparseness"], metric_options={"IROF": {}}, progress=False)
    with pytest.raises(ConfigError, match="unknown option 'nr_sample' for metric MaxSensitivity"):
        evaluate(lenet_model, inputs, CHEAP, ["MaxSensitivity"], metric_options={"MaxSensitivity": {"nr_sample": 2}},
                 progress=False)
    with pytest.raises(ConfigError, match="lists 'saliency' twice"):
        evaluate(lenet_model, inputs, ["saliency", "saliency"], ["Sparseness"], progress=False)
    with pytest.raises(UserError, match="unknown attribution method 'salency'"):
        evaluate(lenet_model, inputs, ["salency"], ["Sparseness"], progress=False)


def test_evaluate_class_writes_nothing_the_step_writes_tables_pictures_and_a_report(lenet, graph, tmp_path,
                                                                                    capsys) -> None:
    from explainnn.pipeline.evaluation import describe, write_evaluation
    from explainnn.reports import write_report

    model, dataset, target = lenet
    run = tmp_path / "run"
    results = evaluate_class(model, dataset, target, graph, methods=["causal", "saliency"],
                             metrics=["FaithfulnessCorrelation", "IROF", "Sparseness", "LocalLipschitzEstimate"],
                             n_samples=N, options={k: v for k, v in FAST.items() if k in ("FaithfulnessCorrelation",
                                                                                          "LocalLipschitzEstimate")},
                             seed=0, progress=False)
    assert not run.exists() and capsys.readouterr().out == ""
    assert (results.engine, results.definitions, results.samples_used_by_discovery) == ("fast", "quantus", 0)
    assert results.seconds > 0
    folder = run / "evaluation"
    write_evaluation(results, folder, plots=True, dpi=40)
    for name in ("scores.csv", "summary.csv", "comparisons.csv", "skipped.csv", "timings.csv", "settings.json",
                 "metrics_faithfulness.png", "metrics_robustness.png", "metrics_complexity.png", "ranks.png"):
        assert (folder / name).is_file(), name
    header, *rows = (folder / "scores.csv").read_text().splitlines()
    assert header == "method,metric,sample,value" and len(rows) == 2 * 4 * N
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["metrics"]["IROF"]["init"]["normalise"] is True and settings["samples_used_by_discovery"] == 0
    assert settings["definitions"] == "quantus"
    arrays = np.load(folder / "attributions.npz", allow_pickle=False)
    assert arrays["attribution_causal"].shape == arrays["x"].shape == (N, 1, 32, 32)
    assert len(results.comparisons) == 4
    line = describe(results)
    assert line.startswith("evaluation  2 methods x 4 metrics") and "(fast engine, Quantus 0.6 definitions)" in line

    paths = write_report(run, training={"model": {"name": "lenet", "params": {}}, "dataset": "mnist",
                                        "train_accuracy": 0.9, "test_accuracy": 0.8}, graphs={target: graph})
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 4
    assert 'src="http' not in page and "<script" not in page and "<link" not in page
    assert f"Class {target}" in page and "LocalLipschitzEstimate" in page and "80.00%" in page
    markdown = paths["markdown"].read_text()
    assert "](evaluation/ranks.png)" in markdown and "| IROF |" in markdown
    assert "metrics as Quantus 0.6 defines them (evaluation.definitions: quantus)" in markdown


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_name_valid_metrics_methods_and_options(path) -> None:
    config = load_config(path, ["data.root=../shared/data"])
    evaluation = config.evaluation
    for name in evaluation.metrics:
        metric_spec(name)
    for name, options in evaluation.options.items():
        assert name in evaluation.metrics
        assert set(options) <= set(metric_spec(name).valid_options()), name
    for name in evaluation.methods or config.attribution.methods:
        assert name in METHODS, name


def test_stochastic_methods_are_explained_in_quantus_batches() -> None:
    """Sample 64 + k sits at position k of its call, as its copies will in Quantus' second batch; a deterministic
    method is explained in one call."""
    from explainnn.evaluation.evaluate import explain_in_batches

    def positions(model, x, y):
        return np.broadcast_to(np.arange(len(x), dtype=np.float32)[:, None], (len(x), 2))

    x, y = np.zeros((70, 2), dtype=np.float32), np.zeros(70, dtype=np.int64)
    stochastic = explain_in_batches(positions, None, x, y)
    np.testing.assert_array_equal(stochastic[:, 0], [*range(64), *range(6)])
    positions.deterministic = True  # type: ignore[attr-defined]
    np.testing.assert_array_equal(explain_in_batches(positions, None, x, y)[:, 0], np.arange(70))
