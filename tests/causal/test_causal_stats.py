"""Significance tests of discovery: planted effects, BH by hand, degenerate data, the research rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy import stats as st

from explainnn.causal.stats import TestResult, fdr_qvalues, paired_fdr_test, ztest_research
from explainnn.errors import ConfigError, DataError, UserError


@pytest.fixture
def planted() -> tuple[np.ndarray, np.ndarray]:
    """Candidate 0 lowers the logit by 1, candidate 1 does nothing, candidate 2 raises it by 1."""
    rng = np.random.default_rng(0)
    clean = rng.normal(5.0, 2.0, size=60)
    noise = rng.normal(0.0, 0.3, size=(3, 60))
    intervened = clean + np.array([[-1.0], [0.0], [1.0]]) + noise
    return intervened, clean


# ------------------------------------------------------------------ paired test
@pytest.mark.parametrize("method", ["t", "wilcoxon"])
def test_clear_drop_is_kept_and_null_or_rise_is_not(planted, method):
    intervened, clean = planted
    result = paired_fdr_test(intervened, clean, method=method)
    assert result.kept.tolist() == [True, False, False]
    assert result.effect[0] == pytest.approx(-1.0, abs=0.15)
    assert result.p_value[0] < 1e-6 and result.p_value[1] > 0.05 and result.p_value[2] > 0.99


def test_two_sided_also_keeps_units_that_raise_the_logit(planted):
    result = paired_fdr_test(*planted, alternative="two-sided")
    assert result.kept.tolist() == [True, False, True]
    assert paired_fdr_test(*planted, alternative="greater").kept.tolist() == [False, False, True]


def test_t_statistics_match_scipy_paired_test_and_interval(planted):
    intervened, clean = planted
    result = paired_fdr_test(intervened, clean, confidence=0.9)
    for k in range(3):
        ref = st.ttest_rel(intervened[k], clean, alternative="less")
        assert result.statistic[k] == pytest.approx(ref.statistic)
        assert result.p_value[k] == pytest.approx(ref.pvalue)
        ci = st.ttest_rel(intervened[k], clean).confidence_interval(0.9)
        assert (result.ci_low[k], result.ci_high[k]) == pytest.approx((ci.low, ci.high))
        assert result.effect_std[k] == pytest.approx(np.std(intervened[k] - clean, ddof=1))
    assert result.n.tolist() == [60, 60, 60]
    assert result.method == "paired_t" and result.selection == "fdr" and result.confidence == 0.9


def test_min_effect_drops_significant_but_tiny_effects():
    rng = np.random.default_rng(1)
    clean = rng.normal(0.0, 1.0, size=2000)
    intervened = np.stack([clean - 0.02 + rng.normal(0, 0.05, 2000), clean - 0.5 + rng.normal(0, 0.05, 2000)])
    assert paired_fdr_test(intervened, clean).kept.tolist() == [True, True]
    assert paired_fdr_test(intervened, clean, min_effect=0.1).kept.tolist() == [False, True]


def test_bh_q_values_match_a_hand_computed_example():
    # sorted p: 0.01, 0.03, 0.04, 0.20 -> p*m/rank: 0.04, 0.06, 0.0533, 0.20 -> running min from the top
    q = fdr_qvalues([0.01, 0.04, 0.03, 0.20])
    assert q == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert fdr_qvalues([]).shape == (0,)
    with pytest.raises(DataError):
        fdr_qvalues([0.5, float("nan")])


def test_kept_uses_q_not_p():
    """Twenty candidates whose smallest p is about 0.02: significant alone, not after BH at 0.05."""
    rng = np.random.default_rng(3)
    clean = rng.normal(size=30)
    d = rng.normal(size=(20, 30))
    d = d - d.mean(axis=1, keepdims=True) + d.std(axis=1, ddof=1, keepdims=True) / np.sqrt(30) * -2.15
    d[1:] += 0.6
    result = paired_fdr_test(clean + d, clean)
    assert result.p_value[0] < 0.05
    assert np.allclose(result.q_value, fdr_qvalues(result.p_value))
    assert result.q_value[0] > 0.05 and not result.kept.any()


def test_all_zero_differences_give_p_one_not_nan():
    clean = np.array([1.0, 2.0, 3.0, 4.0])
    result = paired_fdr_test(np.stack([clean, clean]), clean, method="t")
    assert result.p_value.tolist() == [1.0, 1.0] and result.q_value.tolist() == [1.0, 1.0]
    assert result.statistic.tolist() == [0.0, 0.0] and not result.kept.any()
    assert paired_fdr_test(clean, clean, method="wilcoxon").p_value.tolist() == [1.0]


def test_float32_roundoff_counts_as_no_effect():
    clean = torch.tensor([1.1, 2.3, 3.7, 10.9], dtype=torch.float32)
    jitter = torch.nextafter(clean, torch.full_like(clean, 100.0))  # one ulp up, as recomputing in another order
    result = paired_fdr_test(torch.stack([jitter, clean - 1.0]), clean)
    assert result.p_value[0] == 1.0 and not result.kept[0]
    assert result.kept[1]


def test_identical_nonzero_differences_are_certain():
    clean = np.array([1.0, 2.0, 3.0])
    result = paired_fdr_test(np.stack([clean - 0.5, clean + 0.5]), clean)
    assert result.p_value.tolist() == [0.0, 1.0]
    assert result.statistic.tolist() == [-math.inf, math.inf]
    assert result.kept.tolist() == [True, False]
    assert (result.ci_low[0], result.ci_high[0]) == (-0.5, -0.5)
    wilcoxon = paired_fdr_test(np.stack([clean - 0.5]), clean, method="wilcoxon")
    assert wilcoxon.p_value[0] == pytest.approx(0.125)  # exact: 1 / 2**3


def test_single_sample_cannot_be_significant():
    result = paired_fdr_test(np.array([[0.0], [5.0]]), np.array([3.0]))
    assert result.p_value.tolist() == [1.0, 1.0] and not result.kept.any()
    assert result.effect.tolist() == [-3.0, 2.0]
    assert np.isnan(result.effect_std).all() and np.isnan(result.ci_low).all()


def test_probability_effect_and_torch_inputs(planted):
    intervened, clean = planted
    probs = 1.0 / (1.0 + np.exp(-clean))
    probs_int = 1.0 / (1.0 + np.exp(-intervened))
    result = paired_fdr_test(
        torch.from_numpy(intervened).float(), torch.from_numpy(clean).float(),
        intervened_prob=probs_int, clean_prob=probs,
    )
    assert result.prob_effect == pytest.approx((probs_int - probs).mean(axis=1))
    assert result.prob_effect[0] < 0 < result.prob_effect[2]
    with pytest.raises(DataError, match="both"):
        paired_fdr_test(intervened, clean, intervened_prob=probs_int)


def test_records_are_plain_json_with_candidate_labels(planted):
    result = paired_fdr_test(*planted, candidates=[7, 3, 11], intervened_prob=planted[0] * 0, clean_prob=planted[1] * 0)
    records = result.to_records()
    json.dumps(records)
    assert [r["candidate"] for r in records] == [7, 3, 11]
    assert result.kept_candidates() == [7]
    assert set(records[0]) == {
        "candidate", "effect", "effect_std", "ci_low", "ci_high", "statistic",
        "p_value", "q_value", "prob_effect", "n", "kept", "method",
    }
    assert len(result) == 3 and isinstance(result, TestResult)
    with pytest.raises(ValueError):
        result.p_value[0] = 0.5


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"intervened": [[1.0, float("nan")]], "clean": [1.0, 2.0]}, DataError, "NaN"),
        ({"intervened": [[1.0, 2.0]], "clean": [1.0, float("inf")]}, DataError, "infinite"),
        ({"intervened": [[1.0, 2.0, 3.0]], "clean": [1.0, 2.0]}, DataError, "must match"),
        ({"intervened": np.zeros((2, 2, 2)), "clean": [1.0, 2.0]}, DataError, "candidates, samples"),
        ({"intervened": [[1.0, 2.0]], "clean": [1.0, 2.0], "alpha": 1.5}, ConfigError, "alpha"),
        ({"intervened": [[1.0, 2.0]], "clean": [1.0, 2.0], "min_effect": -1}, ConfigError, "min_effect"),
        ({"intervened": [[1.0, 2.0]], "clean": [1.0, 2.0], "alternative": "lower"}, ConfigError, "two-sided"),
        ({"intervened": [[1.0, 2.0]], "clean": [1.0, 2.0], "method": "z"}, ConfigError, "wilcoxon"),
        ({"intervened": [[1.0, 2.0]], "clean": [1.0, 2.0], "candidates": [1, 2]}, DataError, "candidates"),
    ],
)
def test_bad_inputs_are_one_line_user_errors(kwargs, error, message):
    with pytest.raises(error, match=message) as caught:
        paired_fdr_test(**kwargs)
    assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=40))
def test_q_values_are_monotone_in_p_at_least_p_and_at_most_one(p_values):
    p = np.array(p_values)
    q = fdr_qvalues(p)
    assert np.all(q >= p - 1e-12) and np.all(q <= 1.0)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(q[order]) >= -1e-12)


@settings(max_examples=40, deadline=None)
@given(
    hs.integers(1, 4).flatmap(
        lambda k: hs.integers(1, 8).flatmap(
            lambda n: hs.tuples(
                hs.lists(hs.lists(hs.integers(-5, 5), min_size=n, max_size=n), min_size=k, max_size=k),
                hs.lists(hs.integers(-5, 5), min_size=n, max_size=n),
            )
        )
    ),
    hs.sampled_from(["t", "wilcoxon"]),
)
def test_p_and_q_values_are_never_nan(data, method):
    intervened, clean = data
    result = paired_fdr_test(np.array(intervened, dtype=float) / 4, np.array(clean, dtype=float) / 4, method=method)
    for values in (result.p_value, result.q_value):
        assert np.all((values >= 0.0) & (values <= 1.0))


# ----------------------------------------------------------- research z-test
def test_research_rule_uses_n_plus_one_clean_samples():
    # Clean: 4 samples at 10 plus the extra (n+1)-th at 20 -> mean 12, unbiased variance 20.
    clean = np.array([10.0, 10.0, 10.0, 10.0, 20.0])
    intervened = np.array(
        [
            [8.5, 9.5, 9.0, 9.0],  # mean 9: below the first 4 clean samples, but not below 12 - 1.65 * se
            [7.5, 8.5, 8.0, 8.0],  # mean 8: kept
            [12.0, 12.0, 12.0, 12.0],
        ]
    )
    result = ztest_research(intervened, clean)
    var_int = 0.5 / 3  # unbiased variance of [8.5, 9.5, 9, 9] and of [7.5, 8.5, 8, 8]
    se = math.sqrt(var_int / 4 + 20.0 / 4)
    assert 12.0 - 1.65 * se == pytest.approx(8.2951, abs=1e-4)
    assert result.kept.tolist() == [False, True, False]
    assert result.selection == "threshold" and result.method == "ztest_research"
    assert result.effect.tolist() == pytest.approx([-3.0, -4.0, 0.0])
    assert result.statistic[1] == pytest.approx(-4.0 / se)
    assert result.p_value[1] == pytest.approx(st.norm.cdf(-4.0 / se))
    assert np.isfinite(result.q_value).all() and result.n.tolist() == [4, 4, 4]
    # Without the quirk (clean over the same 4 samples) candidate 0 would pass.
    assert ztest_research(intervened, clean[:4]).kept.tolist() == [True, True, False]


def test_research_rule_falls_back_to_relative_change():
    clean = np.full(5, 10.0)
    intervened = np.array(
        [
            [8.0, 12.0, 8.0, 11.9],  # mean relative change -0.0025: kept by the fallback
            [8.0, 12.0, 8.0, 12.0],  # 0
            [9.0, 11.0, 9.0, 11.02],  # +0.0005
        ]
    )
    result = ztest_research(intervened, clean)
    assert result.selection == "relative_change"
    assert result.kept.tolist() == [True, False, False]


def test_research_rule_last_resort_is_the_lowest_five_percent():
    clean = np.full(5, 10.0)
    intervened = np.array([[8.0, 12.0, 8.0, 12.0], [9.0, 11.0, 9.0, 11.2], [8.0, 12.0, 8.0, 12.04]])
    result = ztest_research(intervened, clean)
    assert result.selection == "quantile"
    assert result.kept.tolist() == [True, False, False]


def test_research_rule_with_one_sample_uses_relative_change_below_five_percent():
    clean = np.array([10.0, 30.0])  # the second (n+1-th) sample enters only the clean mean
    result = ztest_research(np.array([[10.4], [11.0], [5.0]]), clean)
    assert result.selection == "single_sample"
    assert result.kept.tolist() == [True, False, True]
    assert result.p_value.tolist() == [1.0, 1.0, 1.0]


def test_research_rule_checks_sample_counts_and_probabilities():
    with pytest.raises(DataError, match="n \\+ 1 = 4"):
        ztest_research(np.ones((2, 3)), np.ones(6))
    result = ztest_research(
        np.array([[1.0, 2.0]]), np.array([2.0, 3.0, 4.0]),
        intervened_prob=np.array([[0.1, 0.2]]), clean_prob=np.array([0.3, 0.4, 0.5]),
    )
    assert result.prob_effect == pytest.approx([0.15 - 0.4])
