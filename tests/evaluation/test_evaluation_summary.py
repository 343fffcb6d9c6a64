"""Summary statistics on hand-made score tables, CSV round trips, and the metric registry (no models)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from explainnn.errors import ConfigError
from explainnn.evaluation import (
    FAMILIES,
    METRICS,
    MetricContext,
    RelevanceShareCosine,
    adjust,
    available_metrics,
    compare,
    confidence_interval,
    holm,
    markdown_table,
    metric_spec,
    normalise_per_sample,
    paired_wilcoxon,
    read_csv,
    summarise,
)
from explainnn.evaluation.io import TABLES, write_table

# Five samples; "Faith" is higher-is-better, "Lip" lower-is-better.
VALUES = {
    ("causal", "Faith"): [0.9, 0.8, 0.7, 0.6, 0.5],
    ("ig", "Faith"): [0.5, 0.6, 0.3, 0.4, 0.2],
    ("saliency", "Faith"): [0.9, 0.8, 0.7, 0.6, 0.5],
    ("causal", "Lip"): [1.0, 2.0, 3.0, 4.0, float("nan")],
    ("ig", "Lip"): [2.0, 4.0, 6.0, 8.0, 10.0],
    ("saliency", "Lip"): [0.5, 1.0, 1.5, 2.5, 3.0],
}
DIRECTIONS = {"Faith": "higher", "Lip": "lower"}
SAMPLES = [11, 12, 13, 14, 15]


@pytest.fixture()
def scores() -> list[dict]:
    return [{"method": method, "metric": metric, "sample": sample, "value": value}
            for (method, metric), values in VALUES.items() for sample, value in zip(SAMPLES, values)]


def _row(rows, metric, method):
    return next(r for r in rows if r["metric"] == metric and r["method"] == method)


def test_mean_ci_std_and_missing_by_hand(scores) -> None:
    rows = summarise(scores, DIRECTIONS, families={"Faith": "faithfulness", "Lip": "robustness"})
    assert len(rows) == 6
    ig = _row(rows, "Faith", "ig")
    assert ig["mean"] == pytest.approx(0.4) and ig["n"] == 5 and ig["n_missing"] == 0
    assert ig["std"] == pytest.approx(math.sqrt(0.025)) and ig["median"] == pytest.approx(0.4)
    half = 2.7764451051977987 * math.sqrt(0.025) / math.sqrt(5)  # t(0.975, df=4)
    assert (ig["ci_low"], ig["ci_high"]) == pytest.approx((0.4 - half, 0.4 + half))
    assert ig["family"] == "faithfulness" and ig["direction"] == "higher"
    causal = _row(rows, "Lip", "causal")
    assert causal["n"] == 4 and causal["n_missing"] == 1 and causal["mean"] == pytest.approx(2.5)
    half = 3.182446305284263 * np.std([1, 2, 3, 4], ddof=1) / 2  # t(0.975, df=3)
    assert (causal["ci_low"], causal["ci_high"]) == pytest.approx((2.5 - half, 2.5 + half))


def test_ranks_follow_the_direction_and_share_ties(scores) -> None:
    rows = summarise(scores, DIRECTIONS)
    assert [_row(rows, "Faith", m)["rank"] for m in ("causal", "ig", "saliency")] == [1.5, 3.0, 1.5]
    # Lower is better: saliency 1.7, causal 2.5, ig 6.0.
    assert [_row(rows, "Lip", m)["rank"] for m in ("causal", "ig", "saliency")] == [2.0, 3.0, 1.0]


def test_confidence_interval_edge_cases() -> None:
    assert all(math.isnan(v) for v in confidence_interval([1.0]))
    assert confidence_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in confidence_interval([float("nan"), 1.0]))


def test_paired_wilcoxon_is_direction_aware_and_exact(scores) -> None:
    rows = compare(scores, DIRECTIONS, reference="causal", correction="none")
    faith_ig = next(r for r in rows if r["metric"] == "Faith" and r["baseline"] == "ig")
    # Five positive differences: the exact two-sided p-value is 2 / 2**5.
    assert faith_ig["p_value"] == pytest.approx(0.0625) and faith_ig["reference_better"] is True
    assert faith_ig["n_pairs"] == 5 and faith_ig["mean_difference"] == pytest.approx(0.3)
    tie = next(r for r in rows if r["metric"] == "Faith" and r["baseline"] == "saliency")
    assert tie["p_value"] == 1.0 and tie["reference_better"] is None and not tie["significant"]
    # Lower is better: causal is below ig on the 4 shared finite samples (the NaN pair is dropped)...
    lip_ig = next(r for r in rows if r["metric"] == "Lip" and r["baseline"] == "ig")
    assert lip_ig["n_pairs"] == 4 and lip_ig["reference_better"] is True
    assert lip_ig["p_value"] == pytest.approx(stats.wilcoxon([-1, -2, -3, -4]).pvalue)
    # ... and above saliency, so it is worse there.
    lip_saliency = next(r for r in rows if r["metric"] == "Lip" and r["baseline"] == "saliency")
    assert lip_saliency["reference_better"] is False and lip_saliency["mean_difference"] > 0


def test_holm_and_bh_corrections_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.20]
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert adjust(p, "bh") == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert adjust(p, "none") == p
    with pytest.raises(ConfigError, match="valid: holm, bh, none"):
        adjust(p, "bonferroni")


def test_adjusted_p_values_are_per_metric(scores) -> None:
    rows = compare(scores, DIRECTIONS, reference="causal")
    lip = [r for r in rows if r["metric"] == "Lip"]
    assert [r["p_adjusted"] for r in lip] == pytest.approx(holm([r["p_value"] for r in lip]))
    assert all(r["correction"] == "holm" for r in rows)
    assert compare(scores, DIRECTIONS, reference="lrp") == []


def test_paired_wilcoxon_without_pairs() -> None:
    result = paired_wilcoxon([float("nan")], [1.0], "higher")
    assert result.n_pairs == 0 and math.isnan(result.p_value) and result.reference_better is None
    assert list(result.to_dict()) == ["n_pairs", "mean_difference", "median_difference", "statistic", "p_value",
                                      "reference_better"]


def test_missing_direction_is_an_error(scores) -> None:
    with pytest.raises(ConfigError, match="metric 'Lip' needs a direction"):
        summarise(scores, {"Faith": "higher"})


def test_markdown_table_lists_every_row(scores) -> None:
    text = markdown_table(summarise(scores, DIRECTIONS), compare(scores, DIRECTIONS))
    lines = text.splitlines()
    assert len(lines) == 2 + 6 and "p vs causal" in lines[0]
    assert any("| Faith | higher | ig | 0.400 ± " in line and "better" in line for line in lines)


def test_csv_round_trip_keeps_types_nan_and_none(tmp_path, scores) -> None:
    summary = summarise(scores, DIRECTIONS)
    summary[0]["rank"] = None
    write_table(tmp_path / "summary.csv", summary, TABLES["summary"])
    back = read_csv(tmp_path / "summary.csv")
    assert back[0]["rank"] is None and back[1]["rank"] == summary[1]["rank"]
    assert back[1]["mean"] == summary[1]["mean"] and isinstance(back[1]["n"], int)
    comparisons = compare(scores, DIRECTIONS)
    write_table(tmp_path / "comparisons.csv", comparisons, TABLES["comparisons"])
    again = read_csv(tmp_path / "comparisons.csv")
    assert [r["reference_better"] for r in again] == [r["reference_better"] for r in comparisons]
    write_table(tmp_path / "scores.csv", scores, TABLES["scores"])
    back_scores = read_csv(tmp_path / "scores.csv")
    missing = [r for r in back_scores if r["method"] == "causal" and r["metric"] == "Lip" and r["sample"] == 15]
    assert len(back_scores) == len(scores) and math.isnan(missing[0]["value"])


# The metric registry -------------------------------------------------------------------


def test_every_metric_has_a_family_direction_and_modalities() -> None:
    assert set(available_metrics()) == set(METRICS)
    for name, spec in METRICS.items():
        assert spec.family in FAMILIES and spec.direction in ("higher", "lower") and spec.modalities
    assert metric_spec("RegionPerturbation").direction == "higher"
    assert metric_spec("LocalLipschitzEstimate").direction == "lower"
    assert available_metrics("localisation")[-1] == "RelevanceShareCosine"


def test_settings_are_common_scaled_and_checked() -> None:
    image = MetricContext("image", (1, 32, 32), n_classes=10, seed=3)
    init, calls = metric_spec("FaithfulnessCorrelation").settings(image, {"nr_runs": 7, "softmax": True})
    assert init["normalise"] is True and init["abs"] is False and init["nr_runs"] == 7
    assert init["subset_size"] == 224 and calls == {"softmax": True}
    assert metric_spec("Sparseness").settings(image)[0]["abs"] is True
    assert metric_spec("PixelFlipping").settings(image)[0]["features_in_step"] == 16
    signal = MetricContext("sequence", (1, 40), n_classes=10)
    assert metric_spec("PixelFlipping").settings(signal)[0]["features_in_step"] == 1
    assert metric_spec("FaithfulnessCorrelation").settings(signal)[0]["subset_size"] == 10
    assert metric_spec("RandomLogit").settings(image)[0] == {"normalise": True, "abs": False, "num_classes": 10,
                                                             "seed": 3}
    with pytest.raises(ConfigError, match="unknown option 'nr_sample' for metric LocalLipschitzEstimate; valid"):
        metric_spec("LocalLipschitzEstimate").settings(image, {"nr_sample": 3})
    with pytest.raises(ConfigError, match="is set by explainnn"):
        metric_spec("IROF").settings(image, {"return_aggregate": True})
    with pytest.raises(ConfigError, match="PixelFlipping.return_auc_per_sample is set by explainnn"):
        metric_spec("PixelFlipping").settings(image, {"return_auc_per_sample": False})
    assert "return_last_correlation" not in metric_spec("MPRT").valid_options()
    with pytest.raises(ConfigError, match="did you mean 'IROF'"):
        metric_spec("IRFO")


def test_skip_reasons_name_the_modality_and_masks() -> None:
    tokens = MetricContext("tokens", (1, 12, 16), n_classes=2, dataset="sst2")
    reason = metric_spec("IROF").skip_reason(tokens)
    assert "image inputs only" in reason and reason.endswith("these are token embeddings")
    assert "dataset 'sst2' has none" in metric_spec("PointingGame").skip_reason(tokens)
    assert metric_spec("Sparseness").skip_reason(tokens) is None
    masked = MetricContext("image", (1, 28, 84), n_classes=10, has_masks=True)
    assert metric_spec("PointingGame").skip_reason(masked) is None


def test_normalise_per_sample() -> None:
    a = np.array([[[1.0, -4.0]], [[0.0, 0.0]], [[0.5, 0.25]]])
    out = normalise_per_sample(a)
    assert np.allclose(out[0], [[0.25, -1.0]]) and np.all(out[1] == 0) and np.allclose(out[2], [[1.0, 0.5]])


def test_relevance_share_cosine_by_hand() -> None:
    masks = np.zeros((3, 1, 2, 6), dtype=bool)
    masks[..., :4] = True  # blocks 0 and 1 are relevant, block 2 is not
    a = np.zeros((3, 1, 2, 6))
    a[0, ..., :4] = 1.0  # equal relevance on the two relevant blocks
    a[1, ..., 4:] = 1.0  # relevance only on the irrelevant block
    a[2, ..., :2] = 1.0  # one relevant block only
    a[2, ..., 4:] = -5.0  # negative evidence does not count
    metric = RelevanceShareCosine(n_blocks=3)
    scores = metric(model=None, x_batch=np.ones_like(a), y_batch=np.zeros(3, dtype=int), a_batch=a, s_batch=masks)
    assert scores == pytest.approx([1.0, 0.0, 1 / math.sqrt(2)])


def test_write_table_takes_the_path_first_and_writes_nan_as_an_empty_cell(tmp_path) -> None:
    write_table(tmp_path / "table.csv", [{"method": "ig", "value": float("nan")}], ["method", "value"])
    assert (tmp_path / "table.csv").read_text().splitlines() == ["method,value", "ig,"]


def _headline_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce_headline.py"
    spec = importlib.util.spec_from_file_location("reproduce_headline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_headline_benchmark_agreement_needs_overlapping_intervals_and_equal_ranks() -> None:
    script = _headline_script()
    fast = [{"metric": "M", "method": "a", "mean": 1.0, "ci_low": 0.9, "ci_high": 1.1, "rank": 1},
            {"metric": "M", "method": "b", "mean": 2.0, "ci_low": 1.9, "ci_high": 2.1, "rank": 2}]
    same = [dict(row, mean=row["mean"] + 0.05) for row in fast]
    assert script.agreement(fast, same).startswith("engines agree")
    outside = [dict(fast[0], mean=1.5, ci_low=1.4, ci_high=1.6), fast[1]]
    assert "M / a" in script.agreement(fast, outside) and "M / b" not in script.agreement(fast, outside)
    swapped = [dict(fast[0], rank=2), dict(fast[1], rank=1)]
    assert script.agreement(fast, swapped).startswith("engines differ")
    timings = [{"metric": "attributions", "seconds": 1.5, "explain_seconds": 1.5},
               {"metric": "IROF", "seconds": 2.0, "explain_seconds": 0.0},
               {"metric": "attributions", "seconds": 0.5, "explain_seconds": 0.5},
               {"metric": "LLE", "seconds": 3.0, "explain_seconds": 2.5}]
    assert script.engine_seconds(timings) == ("seconds: attributions 2.0, IROF 2.0, LLE 3.0; outside the attribution "
                                              "methods: IROF 2.0, LLE 0.5")


def test_headline_benchmark_states_the_largest_per_sample_difference_of_the_engines() -> None:
    script = _headline_script()
    scores = [{"method": "a", "metric": "M", "sample": 0, "value": 1.0},
              {"method": "a", "metric": "N", "sample": 0, "value": float("nan")}]
    line = script.score_agreement(scores, [dict(scores[0], value=1.00001), scores[1]], "quantus")
    assert "(definitions: quantus)" in line and "M 1.0e-05, N 0.0e+00" in line and line.endswith("atol 1e-05")
    assert "not all within" in script.score_agreement(scores, [dict(scores[0], value=1.1), scores[1]], "quantus")
