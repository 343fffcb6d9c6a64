"""Significance tests that decide which candidate units are causes of a prediction.

Discovery intervenes on each candidate unit of a layer (or on its edges into the
current causal children) and records the target logit for the same N samples,
with and without the intervention. The tests here turn those logits into one
decision per candidate.

Why these choices:

* **Paired design.** Every sample is measured twice, clean and intervened, so the
  per-sample difference removes the between-sample variance of the logit, which
  is usually far larger than the effect of one unit. A paired test on the
  differences is much more powerful than comparing two group means.
* **One-sided by default.** A unit causes the prediction when removing it lowers
  the target logit, so the alternative is "mean difference < 0"; units whose
  removal raises the logit are not evidence for the prediction. Use
  ``alternative="two-sided"`` to find units that matter either way.
* **Benjamini-Hochberg.** A layer has tens to thousands of candidates tested at
  once; controlling the false discovery rate at ``alpha`` across them keeps the
  expected share of spurious causes in the graph bounded, without the loss of
  power of a family-wise (Bonferroni) correction.
* **Minimum effect.** With many samples a negligible drop becomes significant;
  ``min_effect`` (in logit units) asks for an effect that also matters.
* **Wilcoxon option.** Logit differences can be heavy-tailed or skewed (ReLU
  units that are silent for most samples); the signed-rank test does not assume
  normality.

``ztest_research`` reproduces the selection rule of the original research code,
quirks included, so earlier results can be checked; it is not recommended for
new work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
from scipy import stats as st

from explainnn.errors import ConfigError, DataError

Alternative = Literal["less", "two-sided", "greater"]
PairedMethod = Literal["t", "wilcoxon"]

ALTERNATIVES = ("less", "two-sided", "greater")
PAIRED_METHODS = ("t", "wilcoxon")

#: Critical value and fallback thresholds of the research code's rule.
RESEARCH_Z = 1.65
RESEARCH_RELATIVE_DROP = -0.001
RESEARCH_SINGLE_SAMPLE_THRESHOLD = 0.05
RESEARCH_FALLBACK_QUANTILE = 0.05


@dataclass(frozen=True, eq=False)
class TestResult:
    """Per-candidate statistics of one layer's test, as read-only arrays of length K.

    ``effect`` is the mean change of the target logit caused by the intervention
    (negative = the intervention lowers the logit); ``effect_std`` the standard
    deviation of the per-sample change; ``ci_low``/``ci_high`` a two-sided
    ``confidence`` interval of ``effect``; ``statistic`` the test's own statistic
    (t, Wilcoxon's W or the research rule's z); ``p_value`` and the
    Benjamini-Hochberg ``q_value`` are always finite; ``n`` the number of samples;
    ``kept`` the decision. ``prob_effect`` is the mean change of the target
    probability, when the caller passed probabilities. ``candidates`` are the unit
    indices the rows belong to, and ``selection`` says which rule set ``kept``.
    Quantities that one sample cannot define (a standard deviation, an interval)
    are NaN.
    """

    __test__ = False  # not a pytest test class, despite its name

    method: str
    alternative: str
    confidence: float
    selection: str
    candidates: np.ndarray
    effect: np.ndarray
    effect_std: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    statistic: np.ndarray
    p_value: np.ndarray
    q_value: np.ndarray
    n: np.ndarray
    kept: np.ndarray
    prob_effect: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in _ARRAY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                value.setflags(write=False)

    def __len__(self) -> int:
        return len(self.candidates)

    def kept_candidates(self) -> list[int]:
        """The unit indices that passed, in candidate order."""
        return [int(c) for c in self.candidates[self.kept]]

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per candidate (plain Python scalars), for tables and graph edges."""
        records = []
        for k in range(len(self)):
            record: dict[str, Any] = {"candidate": int(self.candidates[k])}
            for name in _FLOAT_FIELDS:
                record[name] = float(getattr(self, name)[k])
            if self.prob_effect is not None:
                record["prob_effect"] = float(self.prob_effect[k])
            record["n"] = int(self.n[k])
            record["kept"] = bool(self.kept[k])
            record["method"] = self.method
            records.append(record)
        return records


_FLOAT_FIELDS = ("effect", "effect_std", "ci_low", "ci_high", "statistic", "p_value", "q_value")
_ARRAY_FIELDS = ("candidates", *_FLOAT_FIELDS, "n", "kept", "prob_effect")


def fdr_qvalues(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values: the smallest FDR level at which each test is rejected.

    Thin wrapper over ``scipy.stats.false_discovery_control`` that accepts an
    empty list and refuses p-values outside [0, 1] with a one-line error.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise DataError(f"p-values must be a 1-D array; got shape {p.shape}")
    if p.size == 0:
        return p.copy()
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise DataError("p-values must lie in [0, 1] and not be NaN")
    return st.false_discovery_control(p, method="bh")


def paired_fdr_test(intervened: Any, clean: Any, *, alpha: float = 0.05, min_effect: float = 0.0,
                    alternative: Alternative = "less", method: PairedMethod = "t", confidence: float = 0.95,
                    candidates: Sequence[int] | None = None, intervened_prob: Any = None,
                    clean_prob: Any = None) -> TestResult:
    """Test K candidates on the per-sample change of the target logit, then Benjamini-Hochberg across them.

    ``intervened`` is (K, N) — the target logit of N samples under each of K
    interventions (a 1-D array is one candidate) — and ``clean`` is (N,), the same
    samples without intervention; tensors or arrays. For each candidate the
    differences ``d = intervened[k] - clean`` are tested with a one-sample t-test
    (equivalently ``ttest_rel``) or Wilcoxon's signed-rank test against the
    ``alternative`` (``"less"``: the intervention lowers the logit). q-values are
    Benjamini-Hochberg across the K candidates, and a candidate is kept when
    ``q <= alpha`` and its mean change in the tested direction is at least
    ``min_effect`` (``-effect`` for ``"less"``, ``effect`` for ``"greater"``,
    ``|effect|`` for ``"two-sided"``). Where the tests themselves are undefined
    (one sample; differences that are all equal) :func:`_paired_p_values` says
    what is returned.

    NaN or infinite inputs are refused. Pass ``intervened_prob`` (K, N) and
    ``clean_prob`` (N,) to also get ``prob_effect``, the mean change of the target
    probability.
    """
    _check_paired_options(alpha=alpha, min_effect=min_effect, alternative=alternative, method=method,
                          confidence=confidence)
    x, eps_x = _as_matrix(intervened, "intervened")
    y, eps_y = _as_vector(clean, "clean")
    k_count, n = x.shape
    if y.shape[0] != n:
        raise DataError(f"intervened has {n} samples per candidate but clean has {y.shape[0]}; they must match")
    if n < 1:
        raise DataError("the paired test needs at least one sample")
    cand = _candidates(candidates, k_count)

    d = x - y
    effect = d.mean(axis=1)
    std = d.std(axis=1, ddof=1) if n > 1 else np.full(k_count, np.nan)
    tol = 4.0 * max(eps_x, eps_y) * np.maximum(np.abs(x).max(axis=1, initial=0.0), np.abs(y).max(initial=0.0))
    statistic, p = _paired_p_values(d, effect, tol, method=method, alternative=alternative)
    half = st.t.ppf(0.5 + confidence / 2.0, n - 1) * std / np.sqrt(n) if n > 1 else np.full(k_count, np.nan)
    q = fdr_qvalues(p)
    kept = (q <= alpha) & (_size_in_direction(effect, alternative) >= min_effect)
    return TestResult(method="paired_t" if method == "t" else "wilcoxon", alternative=alternative,
                      confidence=confidence, selection="fdr", candidates=cand, effect=effect, effect_std=std,
                      ci_low=effect - half, ci_high=effect + half, statistic=statistic, p_value=p, q_value=q,
                      n=np.full(k_count, n, dtype=np.int64), kept=kept,
                      prob_effect=_prob_effect(intervened_prob, clean_prob, (k_count, n), n))


def _check_paired_options(*, alpha: float, min_effect: float, alternative: str, method: str,
                          confidence: float) -> None:
    """One-line errors for the paired test's options."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1); got {alpha!r}")
    if not (np.isfinite(min_effect) and min_effect >= 0.0):
        raise ConfigError(f"min_effect must be a finite number >= 0; got {min_effect!r}")
    _check_confidence(confidence)
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"unknown alternative {alternative!r}; valid: {', '.join(ALTERNATIVES)}")
    if method not in PAIRED_METHODS:
        raise ConfigError(f"unknown paired-test method {method!r}; valid: {', '.join(PAIRED_METHODS)}")


def _paired_p_values(d: np.ndarray, effect: np.ndarray, tol: np.ndarray, *, method: str,
                     alternative: Alternative) -> tuple[np.ndarray, np.ndarray]:
    """The statistic and p-value of each row of differences ``d`` (K, N), with the degenerate cases decided.

    * ``N = 1``: one sample cannot show significance, so ``p = 1`` and the
      statistic is NaN.
    * Differences that are all equal (spread within ``tol``, a few units of the
      inputs' floating-point precision, e.g. float32 logits recomputed in another
      order): if their mean is zero (within the same tolerance) the intervention
      has no effect and ``p = 1``; otherwise every sample moved by the same
      nonzero amount, which the t-test treats as certain: ``p = 0`` when the
      change lies in the tested direction (strictly negative for ``"less"``),
      else ``p = 1``, and the statistic is ±inf. The Wilcoxon test needs no such
      rule for nonzero differences: its p-value there is small but positive
      (2**-N when exact).
    """
    k_count, n = d.shape
    constant = np.ptp(d, axis=1) <= tol
    no_effect = constant & (np.abs(effect) <= tol)
    statistic = np.full(k_count, np.nan)
    p = np.ones(k_count)
    if n < 2:
        return statistic, p
    if method == "t":
        tested = ~constant
        if tested.any():
            res = st.ttest_1samp(d[tested], 0.0, axis=1, alternative=alternative)
            statistic[tested] = res.statistic
            p[tested] = res.pvalue
        shifted = constant & ~no_effect
        statistic[shifted] = np.copysign(np.inf, effect[shifted])
        p[shifted] = np.where(_in_direction(effect[shifted], alternative), 0.0, 1.0)
    else:
        for k in np.flatnonzero(~no_effect):
            res = st.wilcoxon(d[k], alternative=alternative)
            statistic[k] = res.statistic
            p[k] = res.pvalue
    statistic[no_effect] = 0.0
    p[no_effect] = 1.0
    return statistic, p


def ztest_research(intervened: Any, clean: Any, *, confidence: float = 0.95, candidates: Sequence[int] | None = None,
                   intervened_prob: Any = None, clean_prob: Any = None) -> TestResult:
    """The research code's selection rule, reproduced exactly for checking old results.

    ``intervened`` is (K, n), the target logit of the first n correctly classified
    samples under each candidate's intervention (the research code used edge
    interventions with u = 0 on all edges from the candidate into the current
    effect units); ``clean`` is the clean target logit of the first n + 1 such
    samples. Its quirks, kept on purpose:

    * The clean mean and standard deviation are taken over n + 1 samples (the
      research loader appended one sample before checking its count), while the
      interventions and the per-sample relative changes use the first n; a clean
      array of exactly n samples (the data ran out first) is accepted too.
    * Standard deviations are unbiased (ddof = 1), and both variances are divided
      by n: ``se = sqrt(s_int**2 / n + s_clean**2 / n)``.
    * Candidate k is kept when ``mean(intervened[k]) < mean_clean - 1.65 * se``
      (a one-sided z-test at about 5 %, without multiple-testing correction).
    * When no candidate passes, those whose mean relative change
      ``mean(intervened[k] / clean[:n] - 1)`` is below -0.001 are kept; when none
      is, those at or below the 5 % quantile of the mean relative changes.
    * With n = 1 (no standard deviation) the candidates with relative change below
      +0.05 are kept, followed by the same fallbacks.

    The rule is evaluated in float64; the research code used float32, so a
    candidate within float32 rounding of the threshold may be decided differently.
    For uniform tables the result also carries ``effect = mean_int - mean_clean``,
    ``effect_std = sqrt(s_int**2 + s_clean**2)``, the statistic
    ``z = effect / se``, its normal one-sided p-value ``Phi(z)`` (1 when ``se`` and
    ``effect`` are both 0), Benjamini-Hochberg q-values and a normal interval;
    none of these changes ``kept``. ``selection`` names the rule that decided:
    ``"threshold"``, ``"single_sample"``, ``"relative_change"`` or ``"quantile"``.
    """
    _check_confidence(confidence)
    x, _ = _as_matrix(intervened, "intervened")
    y_all, _ = _as_vector(clean, "clean")
    k_count, n = x.shape
    if n < 1:
        raise DataError("the research z-test needs at least one sample")
    if y_all.shape[0] not in (n, n + 1):
        raise DataError(
            f"clean must hold n + 1 = {n + 1} samples (or n = {n} when the data ran out); got {y_all.shape[0]}"
        )
    cand = _candidates(candidates, k_count)
    mean_int, mean_clean, s_int, s_clean, se, relative = _research_moments(x, y_all)
    kept, selection = _research_selection(mean_int, mean_clean, se, relative, n)
    effect = mean_int - mean_clean
    with np.errstate(divide="ignore", invalid="ignore"):
        z = effect / se
    z = np.where((se == 0.0) & (effect == 0.0), 0.0, z)
    p = np.where(np.isnan(z), 1.0, st.norm.cdf(z))
    half = st.norm.ppf(0.5 + confidence / 2.0) * se
    return TestResult(method="ztest_research", alternative="less", confidence=confidence, selection=selection,
                      candidates=cand, effect=effect, effect_std=np.sqrt(s_int**2 + s_clean**2),
                      ci_low=effect - half, ci_high=effect + half, statistic=z, p_value=p, q_value=fdr_qvalues(p),
                      n=np.full(k_count, n, dtype=np.int64), kept=kept,
                      prob_effect=_prob_effect(intervened_prob, clean_prob, (k_count, n), y_all.shape[0]))


def _research_moments(x: np.ndarray, y_all: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, float, np.ndarray,
                                                                 np.ndarray]:
    """The research rule's moments: intervened means, clean mean (over all n or n + 1 clean samples), the
    unbiased standard deviations, ``se`` and each candidate's mean relative change over the first n samples."""
    k_count, n = x.shape
    mean_int = x.mean(axis=1)
    mean_clean = float(y_all.mean())
    s_int = x.std(axis=1, ddof=1) if n > 1 else np.full(k_count, np.nan)
    s_clean = float(y_all.std(ddof=1)) if y_all.size > 1 else np.nan
    se = np.sqrt(s_int**2 / n + s_clean**2 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = (x / y_all[:n] - 1.0).mean(axis=1)
    return mean_int, mean_clean, s_int, s_clean, se, relative


def _research_selection(mean_int: np.ndarray, mean_clean: float, se: np.ndarray, relative: np.ndarray,
                        n: int) -> tuple[np.ndarray, str]:
    """The research rule's decision and the name of the rule that made it (see :func:`ztest_research`)."""
    if n > 1:
        kept = mean_int < mean_clean - RESEARCH_Z * se
        selection = "threshold"
    else:
        kept = relative < RESEARCH_SINGLE_SAMPLE_THRESHOLD
        selection = "single_sample"
    if not kept.any() and len(kept) > 0:
        kept = relative < RESEARCH_RELATIVE_DROP
        selection = "relative_change"
        if not kept.any():
            kept = relative <= np.quantile(relative, RESEARCH_FALLBACK_QUANTILE)
            selection = "quantile"
    return kept, selection


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1); got {confidence!r}")


def _in_direction(effect: np.ndarray, alternative: str) -> np.ndarray:
    if alternative == "less":
        return effect < 0.0
    if alternative == "greater":
        return effect > 0.0
    return effect != 0.0


def _size_in_direction(effect: np.ndarray, alternative: str) -> np.ndarray:
    if alternative == "less":
        return -effect
    if alternative == "greater":
        return effect
    return np.abs(effect)


def _as_float_array(value: Any, name: str) -> tuple[np.ndarray, float]:
    """Return ``value`` as float64 plus the machine epsilon of its own precision."""
    if hasattr(value, "detach"):  # a torch tensor; torch is only imported when one is passed
        import torch

        value = value.detach().cpu()
        eps = torch.finfo(value.dtype).eps if value.is_floating_point() else None
        value = value.double().numpy()
    else:
        value = np.asarray(value)
        eps = float(np.finfo(value.dtype).eps) if np.issubdtype(value.dtype, np.floating) else None
    if value.dtype == object or not np.issubdtype(value.dtype, np.number):
        raise DataError(f"{name} must hold numbers; got dtype {value.dtype}")
    array = value.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise DataError(f"{name} contains NaN or infinite values; check the model's outputs")
    return array, eps if eps is not None else float(np.finfo(np.float64).eps)


def _as_matrix(value: Any, name: str) -> tuple[np.ndarray, float]:
    array, eps = _as_float_array(value, name)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise DataError(f"{name} must be (candidates, samples); got shape {array.shape}")
    return array, eps


def _as_vector(value: Any, name: str) -> tuple[np.ndarray, float]:
    array, eps = _as_float_array(value, name)
    if array.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of samples; got shape {array.shape}")
    return array, eps


def _candidates(candidates: Sequence[int] | None, k_count: int) -> np.ndarray:
    if candidates is None:
        return np.arange(k_count, dtype=np.int64)
    cand = np.asarray(candidates)
    if cand.shape != (k_count,) or (k_count and not np.issubdtype(cand.dtype, np.integer)):
        raise DataError(f"candidates must be {k_count} integer unit indices, one per row of intervened")
    return cand.astype(np.int64)


def _prob_effect(intervened_prob: Any, clean_prob: Any, shape: tuple[int, int], n_clean: int) -> np.ndarray | None:
    """Mean change of the target probability; the clean mean is over ``n_clean`` samples."""
    if intervened_prob is None and clean_prob is None:
        return None
    if intervened_prob is None or clean_prob is None:
        raise DataError("pass both intervened_prob and clean_prob, or neither")
    xp, _ = _as_matrix(intervened_prob, "intervened_prob")
    yp, _ = _as_vector(clean_prob, "clean_prob")
    if xp.shape != shape or yp.shape != (n_clean,):
        raise DataError(
            f"probabilities must have shapes {shape} and ({n_clean},) like the logits; "
            f"got {xp.shape} and {yp.shape}"
        )
    return xp.mean(axis=1) - yp.mean()
