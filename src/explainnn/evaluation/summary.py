"""Summary statistics of a tidy score table: means, confidence intervals, ranks, paired tests.

The input is the tidy table the evaluation writes, one row per
``(method, metric, sample, value)``. Every method is scored on the same
samples, so the reference method (``causal``) is compared with each baseline
*pairwise*: a two-sided Wilcoxon signed-rank test on the per-sample differences
(pairs where either value is NaN are dropped), with Holm's (default) or
Benjamini-Hochberg's correction across the baselines of one metric. The
direction of the difference is read from the same test: the reference is better
when the ranks of the differences in its favour (by the metric's direction)
outweigh the others.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from explainnn.errors import ConfigError

CORRECTIONS = ("holm", "bh", "none")
ScoreRow = Mapping[str, object]


def _grouped(scores: Iterable[ScoreRow]) -> dict[str, dict[str, dict[object, float]]]:
    """metric -> method -> sample -> value (first occurrence order kept)."""
    table: dict[str, dict[str, dict[object, float]]] = defaultdict(dict)
    for row in scores:
        metric, method = str(row["metric"]), str(row["method"])
        value: Any = row["value"]
        table[metric].setdefault(method, {})[row["sample"]] = float("nan") if value in (None, "") else float(value)
    return table


def _check_directions(metrics: Iterable[str], directions: Mapping[str, str]) -> None:
    for metric in metrics:
        if directions.get(metric) not in ("higher", "lower"):
            given = directions.get(metric)
            raise ConfigError(f"metric '{metric}' needs a direction 'higher' or 'lower'; got {given!r}")


def confidence_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of the finite ``values`` (NaN bounds with fewer than two)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(finite) < 2:
        return float("nan"), float("nan")
    mean = float(finite.mean())
    sem = float(finite.std(ddof=1)) / math.sqrt(len(finite))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(confidence, len(finite) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def rank_methods(means: Mapping[str, float], direction: str) -> dict[str, float | None]:
    """Rank 1 for the best mean by ``direction``; ties share the average rank; NaN means get None."""
    finite = {name: value for name, value in means.items() if math.isfinite(value)}
    if not finite:
        return {name: None for name in means}
    names = list(finite)
    keys = np.asarray([finite[name] for name in names])
    ranks = stats.rankdata(-keys if direction == "higher" else keys, method="average")
    ranked = dict(zip(names, (float(r) for r in ranks)))
    return {name: ranked.get(name) for name in means}


def summarise(
    scores: Iterable[ScoreRow],
    directions: Mapping[str, str],
    *,
    confidence: float = 0.95,
    families: Mapping[str, str] | None = None,
) -> list[dict]:
    """One row per metric x method: n, mean, std, median, CI of the mean, direction, rank.

    NaN values (a metric undefined for a sample) are left out and counted in
    ``n_missing``.
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1); got {confidence!r}")
    table = _grouped(scores)
    _check_directions(table, directions)
    rows = []
    for metric, methods in table.items():
        means = {}
        for method, values in methods.items():
            finite = [v for v in values.values() if math.isfinite(v)]
            means[method] = float(np.mean(finite)) if finite else float("nan")
        ranks = rank_methods(means, directions[metric])
        for method, values in methods.items():
            kept = np.asarray([v for v in values.values() if math.isfinite(v)], dtype=np.float64)
            low, high = confidence_interval(kept.tolist(), confidence)
            rows.append({
                "metric": metric,
                "family": (families or {}).get(metric, ""),
                "direction": directions[metric],
                "method": method,
                "n": int(len(kept)),
                "n_missing": int(len(values) - len(kept)),
                "mean": means[method],
                "std": float(kept.std(ddof=1)) if len(kept) > 1 else float("nan"),
                "median": float(np.median(kept)) if len(kept) else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "rank": ranks[method],
            })
    return rows


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), order kept."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.empty_like(p)
    running = 0.0
    for position, index in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (len(p) - position) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def adjust(p_values: Sequence[float], correction: str = "holm") -> list[float]:
    """Multiple-testing correction: ``holm``, ``bh`` (Benjamini-Hochberg) or ``none``."""
    if correction not in CORRECTIONS:
        raise ConfigError(f"unknown correction '{correction}'; valid: {', '.join(CORRECTIONS)}")
    if len(p_values) == 0 or correction == "none":
        return list(map(float, p_values))
    if correction == "holm":
        return holm(p_values)
    return [float(v) for v in stats.false_discovery_control(np.asarray(p_values, dtype=np.float64), method="bh")]


@dataclass(frozen=True)
class WilcoxonTest:
    """One paired comparison (:func:`paired_wilcoxon`): ``n_pairs`` finite pairs, ``mean_difference`` and
    ``median_difference`` (reference - baseline, raw), the signed-rank ``statistic``, the two-sided ``p_value``
    (1.0 when every difference is zero, NaN without pairs) and ``reference_better`` (True, False, or None for a
    tie). :meth:`to_dict` gives the fields as the columns of ``comparisons.csv``."""

    n_pairs: int
    mean_difference: float = float("nan")
    median_difference: float = float("nan")
    statistic: float = float("nan")
    p_value: float = float("nan")
    reference_better: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields by name, in declaration order."""
        return dataclasses.asdict(self)


def paired_wilcoxon(reference: Sequence[float], baseline: Sequence[float], direction: str) -> WilcoxonTest:
    """Two-sided Wilcoxon signed-rank test of paired values, oriented so that positive favours ``reference``.

    Pairs where either value is NaN are dropped, and so are zero differences
    (Wilcoxon's rule); see :class:`WilcoxonTest` for what it returns.
    """
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    difference = a[keep] - b[keep]
    if not len(difference):
        return WilcoxonTest(n_pairs=0)
    found = WilcoxonTest(n_pairs=int(keep.sum()), mean_difference=float(difference.mean()),
                         median_difference=float(np.median(difference)))
    oriented = difference if direction == "higher" else -difference
    nonzero = oriented[oriented != 0]
    if not len(nonzero):
        return dataclasses.replace(found, p_value=1.0)
    ranks = stats.rankdata(np.abs(nonzero))
    in_favour, against = float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())
    test = stats.wilcoxon(nonzero, alternative="two-sided", zero_method="wilcox")
    return dataclasses.replace(found, statistic=float(test.statistic), p_value=float(test.pvalue),
                               reference_better=None if in_favour == against else in_favour > against)


def compare(
    scores: Iterable[ScoreRow],
    directions: Mapping[str, str],
    *,
    reference: str = "causal",
    correction: str = "holm",
    alpha: float = 0.05,
) -> list[dict]:
    """Paired tests of ``reference`` against every other method, per metric.

    Rows (of ``comparisons.csv``): metric, direction, reference, baseline, the :class:`WilcoxonTest` fields,
    ``p_adjusted`` (``correction`` across the metric's baselines) and
    ``significant`` (``p_adjusted < alpha``). Empty when ``reference`` was not
    evaluated.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1); got {alpha!r}")
    table = _grouped(scores)
    _check_directions(table, directions)
    rows = []
    for metric, methods in table.items():
        if reference not in methods:
            continue
        ours = methods[reference]
        found = []
        for baseline, values in methods.items():
            if baseline == reference:
                continue
            shared = [sample for sample in ours if sample in values]
            test = paired_wilcoxon([ours[s] for s in shared], [values[s] for s in shared], directions[metric])
            found.append({"metric": metric, "direction": directions[metric], "reference": reference,
                          "baseline": baseline, **test.to_dict()})
        testable = [row for row in found if math.isfinite(row["p_value"])]
        for row, p in zip(testable, adjust([row["p_value"] for row in testable], correction)):
            row["p_adjusted"] = p
        for row in found:
            row.setdefault("p_adjusted", float("nan"))
            row["correction"] = correction
            row["significant"] = bool(math.isfinite(row["p_adjusted"]) and row["p_adjusted"] < alpha)
        rows.extend(found)
    return rows


def format_number(value: float | None, digits: int = 3) -> str:
    """A number for a table: 3 significant digits, scientific notation when very small or large."""
    if value is None or not math.isfinite(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude >= 10 ** (digits + 1) or magnitude < 10 ** -(digits - 1)):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}" if magnitude >= 1 else f"{value:.{digits}f}"


def format_p(p: float) -> str:
    """A p-value for a table: ``<0.001`` below one in a thousand."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def verdict(row: Mapping[str, object]) -> str:
    """``better``/``worse``/``no difference`` of the reference, with significance."""
    better = row.get("reference_better")
    if better is None:
        return "tie"
    word = "better" if better else "worse"
    return f"{word} (significant)" if row.get("significant") else f"{word} (n.s.)"


def markdown_table(summary: Sequence[Mapping], comparisons: Sequence[Mapping] = (), *,
                   reference: str = "causal") -> str:
    """The summary as a Markdown table: mean +- CI half-width, rank, paired p-value against ``reference``."""
    tests = {(row["metric"], row["baseline"]): row for row in comparisons}
    lines = [
        f"| metric | better | method | mean ± 95% CI | n | rank | p vs {reference} (adj.) | {reference} is |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in summary:
        low, high = row["ci_low"], row["ci_high"]
        half = (high - low) / 2 if math.isfinite(low) and math.isfinite(high) else float("nan")
        spread = f" ± {format_number(half)}" if math.isfinite(half) else ""
        test = tests.get((row["metric"], row["method"]))
        p = f"{format_p(test['p_value'])} ({format_p(test['p_adjusted'])})" if test else "-"
        rank = "n/a" if row["rank"] is None else f"{row['rank']:g}"
        lines.append(
            f"| {row['metric']} | {row['direction']} | {row['method']} | {format_number(row['mean'])}{spread} | "
            f"{row['n']} | {rank} | {p} | {verdict(test) if test else '-'} |"
        )
    return "\n".join(lines)
