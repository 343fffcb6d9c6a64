"""The exchange search behind benchmarks/circuit_limits.py (the evidence for how small a circuit can be)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def limits():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("circuit_limits")
    finally:
        sys.path.remove(str(BENCHMARKS))


def _additive(weights: np.ndarray):
    return lambda masks: np.array([weights[m].sum() for m in masks])


def test_exchanges_reach_the_best_set_of_a_size_from_the_worst_start(limits):
    weights = np.random.default_rng(0).normal(size=30)
    start = np.zeros(30, dtype=bool)
    start[np.argsort(weights)[:8]] = True  # the 8 worst units
    mask, value = limits.exchange_search(start, _additive(weights), pairs=4)
    assert mask.sum() == 8
    assert sorted(np.flatnonzero(mask)) == sorted(np.argsort(-weights)[:8])
    assert value == pytest.approx(np.sort(weights)[-8:].sum())


def test_an_exchange_is_taken_only_when_it_raises_the_exact_value(limits):
    # Units 0 and 1 only count together (an AND): the additive estimate sees nothing in adding either one alone.
    def objective(masks):
        return np.array([float(m[0] and m[1]) * 2.0 + 0.1 * m[2:].sum() for m in masks])

    start = np.zeros(6, dtype=bool)
    start[[2, 3]] = True
    mask, value = limits.exchange_search(start, objective, pairs=16)
    assert value >= objective([start])[0]
    assert mask.sum() == 2 and value == pytest.approx(objective([mask])[0])
