"""Evaluating a model of tabular (N, F) rows: every metric that applies scores on both engines, and they agree;
the others are skipped with their reason, and a request with nothing that applies is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torch import nn

from explainnn.attributions import attribute, explain_func
from explainnn.data import Dataset
from explainnn.data.base import DatasetInfo
from explainnn.errors import ConfigError
from explainnn.evaluation import (
    METRICS,
    EvaluationInputs,
    MetricContext,
    TabularRowsModel,
    WholeMapSSIM,
    evaluate,
    metric_spec,
    prepare_inputs,
    quantus_view,
    valid_metrics,
)
from explainnn.evaluation.fast import Batch, run_metric

FEATURES, CLASSES = 9, 3
TOL = {"rtol": 1e-4, "atol": 1e-5}  # as tests/evaluation/test_fast_metrics.py: both engines compute in float32
METHODS = ["saliency", "gradient_x_input", "integrated_gradients", "smoothgrad", "occlusion", "kernel_shap"]
CHEAP = {"FaithfulnessCorrelation": {"nr_runs": 8}, "LocalLipschitzEstimate": {"nr_samples": 3},
         "MaxSensitivity": {"nr_samples": 3}, "AvgSensitivity": {"nr_samples": 3}}
PAPER = ("MaxSensitivity", "AvgSensitivity")
"""Where the fast engine follows the paper instead of Quantus 0.6 (no division by ||a||); compared below with
Quantus given the paper's denominator."""


class Rows(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, CLASSES))
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(len(x))
        return self.net(x)


@pytest.fixture(scope="module")
def trained() -> tuple[Rows, torch.Tensor, torch.Tensor]:
    """A small MLP trained on standardised rows whose class is the largest of three feature sums."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(600, FEATURES, generator=generator)
    y = x.reshape(-1, CLASSES, FEATURES // CLASSES).sum(-1).argmax(1)
    torch.manual_seed(0)
    model = Rows()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.8
    model.rows.clear()
    return model, x, y


def _inputs(trained, n: int = 10, masks: bool = True) -> EvaluationInputs:
    """``n`` correctly classified rows of the most common class, as a user builds them: (N, F), no wrapper."""
    model, x, y = trained
    with torch.no_grad():
        right = model(x).argmax(1) == y
    target = int(torch.bincount(y[right]).argmax())
    index = torch.nonzero(right & (y == target)).flatten()[:n]
    rows = x[index].numpy()
    relevant = np.zeros_like(rows, dtype=bool)
    relevant[:, target * 3:(target + 1) * 3] = True  # the features that decide the class
    return EvaluationInputs(model, rows, np.full(len(rows), target), index.numpy(), "tabular",
                            masks=relevant if masks else None)


def _context(inputs: EvaluationInputs) -> MetricContext:
    return MetricContext("tabular", (1, FEATURES), CLASSES, has_masks=inputs.masks is not None)


def test_tabular_rows_are_scored_by_every_metric_but_the_picture_ones() -> None:
    with_masks = valid_metrics(MetricContext("tabular", (1, FEATURES), CLASSES, has_masks=True))
    assert set(METRICS) - set(with_masks) == {"IROF", "RegionPerturbation"}
    without = valid_metrics(MetricContext("tabular", (1, FEATURES), CLASSES))
    assert set(with_masks) - set(without) == {name for name, spec in METRICS.items() if spec.needs_masks}
    reason = metric_spec("IROF").skip_reason(MetricContext("tabular", (1, FEATURES), CLASSES))
    assert reason == ("IROF is defined for image inputs only (it removes superpixels of a picture); "
                      "these are tabular rows")


def test_both_engines_score_tabular_rows_and_agree(trained) -> None:
    inputs = _inputs(trained)
    metrics = [name for name in valid_metrics(_context(inputs)) if name not in PAPER]
    options = {name: values for name, values in CHEAP.items() if name in metrics}
    runs = {engine: evaluate(inputs.model, inputs, METHODS, [*metrics, "IROF"], metric_options=options,
                             progress=False, reference="saliency", engine=engine)
            for engine in ("fast", "quantus")}
    values = {}
    for engine, results in runs.items():
        assert results.metrics == metrics and results.methods == METHODS  # every applicable metric, every method
        assert len(results.summary) == len(metrics) * len(METHODS)
        assert results.skipped == [{"metric": "IROF", "method": "*",
                                    "reason": metric_spec("IROF").skip_reason(_context(inputs))}]
        assert results.settings["quantus_layout"] == [len(inputs.x), 1, FEATURES]
        assert {row["engine"] for row in results.timings if row["metric"] in ("PixelFlipping", "Sparseness")} == {engine}
        values[engine] = {(r["method"], r["metric"], r["sample"]): r["value"] for r in results.scores}
        for name in metrics:
            scores = [v for (_, metric, _), v in values[engine].items() if metric == name]
            assert np.isfinite(scores).mean() >= 0.5, (engine, name, scores)
    assert values["fast"].keys() == values["quantus"].keys()
    keys = sorted(values["fast"])
    np.testing.assert_allclose([values["fast"][k] for k in keys], [values["quantus"][k] for k in keys], **TOL)


@pytest.mark.parametrize("name", PAPER)
@pytest.mark.parametrize("definitions", ["quantus", "paper"])
def test_sensitivity_on_tabular_rows_is_quantus_or_quantus_with_the_papers_denominator(trained, name,
                                                                                       definitions) -> None:
    inputs = _inputs(trained, n=7)
    model, x, _, _ = quantus_view(inputs.model, torch.as_tensor(inputs.x), "tabular")
    spec = metric_spec(name)
    init, calls = spec.settings(_context(inputs), {"nr_samples": 4, "batch_size": 3})
    explain = explain_func("gradient_x_input")
    a = attribute(model, x, inputs.y, "gradient_x_input")
    np.random.seed(5)
    paper = {"norm_denominator": lambda a: np.ones(len(a))} if definitions == "paper" else {}
    quantus = spec.create({**init, **paper})(
        model=model, x_batch=x, y_batch=inputs.y, a_batch=a.copy(), channel_first=True, explain_func=explain,
        explain_func_kwargs={}, device="cpu", **calls)
    fast = run_metric(spec, init, calls, Batch(model, x, inputs.y, rows=64), a, explain, 5, definitions)
    np.testing.assert_allclose(spec.scores(fast, len(x)), spec.scores(quantus, len(x)), **TOL)


def test_tabular_defaults_remove_features_to_zero_and_compare_whole_maps(trained) -> None:
    context = _context(_inputs(trained))
    for name in ("FaithfulnessCorrelation", "PixelFlipping"):
        init, _ = metric_spec(name).settings(context)
        assert init["perturb_baseline"] == 0.0
        image, _ = metric_spec(name).settings(MetricContext("image", (1, 8, 8), CLASSES))
        assert image["perturb_baseline"] == "black"
    assert metric_spec("PixelFlipping").settings(context)[0]["features_in_step"] == 1
    assert isinstance(metric_spec("RandomLogit").settings(context)[0]["similarity_func"], WholeMapSSIM)
    assert "similarity_func" not in metric_spec("RandomLogit").settings(MetricContext("image", (1, 8, 8), 3))[0]


def test_whole_map_ssim_is_skimages_with_one_window_and_ignores_the_column_order() -> None:
    rng = np.random.RandomState(0)
    a, b = rng.normal(size=(4, FEATURES)), rng.normal(size=(4, FEATURES))
    b[0] = a[0] * 0.5 + 0.1
    ours = WholeMapSSIM()(a, b, batched=True)
    for i in range(4):
        data_range = float(np.ptp(np.concatenate([a[i], b[i]])))
        reference = structural_similarity(a[i], b[i], win_size=FEATURES, data_range=data_range)
        np.testing.assert_allclose(ours[i], reference, rtol=1e-9)
        assert WholeMapSSIM()(a[i], b[i]) == pytest.approx(ours[i], rel=1e-12)
    order = rng.permutation(FEATURES)
    np.testing.assert_allclose(WholeMapSSIM()(a[:, order], b[:, order], batched=True), ours, rtol=1e-12)


def test_nothing_applicable_is_one_line_naming_the_modality_and_valid_metrics_before_any_work(trained) -> None:
    model = trained[0]
    inputs = _inputs(trained, masks=False)
    model.rows.clear()
    with pytest.raises(ConfigError) as error:
        evaluate(model, inputs, METHODS, ["IROF", "RegionPerturbation", "PointingGame"], progress=False)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("evaluation: none of the requested metrics applies to tabular rows without "
                              "ground-truth masks (IROF: image only; RegionPerturbation: image only; "
                              "PointingGame: needs ground-truth masks); metrics valid for them: "
                              "FaithfulnessCorrelation, PixelFlipping,")
    assert message.endswith(", ".join(valid_metrics(_context(inputs))))
    assert max(model.rows) == 1  # the entry checks' one-sample passes only: nothing was explained or scored


def test_rows_reach_quantus_as_one_channel_rows_and_attributions_keep_that_layout(trained) -> None:
    model, x, y = trained
    info = DatasetInfo("rows", "tabular", (FEATURES,), CLASSES, ("a", "b", "c"), "test")  # type: ignore[arg-type]
    dataset = Dataset(info, x[:400], y[:400], x[400:], y[400:])
    inputs = prepare_inputs(model, dataset, int(y[400]), 5)
    assert isinstance(inputs.model, TabularRowsModel) and inputs.x.shape == (5, 1, FEATURES)
    assert inputs.method_modality == "tabular"
    one_channel = attribute(inputs.model, inputs.x, inputs.y, "occlusion")
    plain = attribute(model, inputs.x[:, 0], inputs.y, "occlusion")
    assert one_channel.shape == (5, 1, FEATURES)
    np.testing.assert_allclose(one_channel[:, 0], plain, rtol=1e-6, atol=1e-7)
