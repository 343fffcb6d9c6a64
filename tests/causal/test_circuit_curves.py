"""Faithfulness curves: exact sufficiency / necessity of nested unit sets, the baselines, areas, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainnn.causal import faithfulness_curves, find_circuit, plot_curves
from explainnn.causal.curves import OURS, RANDOM, baseline_orders, circuit_order
from test_circuit_minimal import PlantedMLP, _mlp_data


@pytest.fixture(scope="module")
def curves_and_search():
    model = PlantedMLP()
    x, y = _mlp_data()
    held_x, held_y = _mlp_data(seed=1)
    search = find_circuit(model, x, 0, labels=y, n_samples=30, steps=60)
    samples = x[search.samples]
    orders = {OURS: circuit_order(model, search, samples, x)}
    orders.update(baseline_orders(model, search.units, samples, 0, x))
    curves = faithfulness_curves(model, held_x[held_y == 0], 0, orders, units=search.units, reference=x,
                                 sizes=range(15), n_random=10, circuit_size=search.size)
    return model, search, orders, curves


def test_circuit_order_starts_with_the_circuit(curves_and_search):
    _, search, orders, curves = curves_and_search
    assert set(orders[OURS][: search.size]) == set(np.flatnonzero(search.mask))
    assert sorted(orders[OURS]) == list(range(search.units.total))
    assert curves.sufficiency[OURS][search.size] == pytest.approx(1.0, abs=1e-6)
    assert curves.necessity[OURS][search.size] == pytest.approx(1.0, abs=1e-6)


def test_curve_ends_and_ordering_against_random(curves_and_search):
    _, _, _, curves = curves_and_search
    for method in curves.methods():
        assert curves.sufficiency[method][0] == pytest.approx(0.0, abs=1e-9)  # nothing kept = empty
        assert curves.sufficiency[method][-1] == pytest.approx(1.0, abs=1e-9)  # everything kept = full
        assert curves.necessity[method][0] == pytest.approx(0.0, abs=1e-9)
        assert curves.necessity[method][-1] == pytest.approx(1.0, abs=1e-9)
    assert set(curves.methods()) == {OURS, "single_unit_effect", "activation_magnitude", "attribution_patching", RANDOM}
    assert curves.dominates(OURS, "sufficiency")
    areas = curves.areas()
    assert areas[OURS]["sufficiency_area"] > areas[RANDOM]["sufficiency_area"]
    assert areas[OURS]["cmd"] == pytest.approx(1.0 - areas[OURS]["sufficiency_area"], abs=1e-6)


def test_attribution_patching_matches_the_exact_effect_on_a_linear_path(curves_and_search):
    model, search, orders, _ = curves_and_search
    # On the planted paths the network is linear, so the first-order estimate is exact: both put the
    # eight planted units (equal effects) ahead of the distractors, which do not touch class 0.
    planted = set(np.flatnonzero(search.units.mask(PlantedMLP.PLANTED)))
    assert set(orders["attribution_patching"][:8]) == planted
    assert set(orders["single_unit_effect"][:8]) == planted


def test_files(curves_and_search, tmp_path):
    _, _, _, curves = curves_and_search
    rows = curves.to_csv(tmp_path / "curves.csv").read_text().splitlines()
    assert rows[0] == "method,units,fraction,sufficiency,necessity" and len(rows) == 1 + 5 * 15
    assert len(curves.areas_to_csv(tmp_path / "areas.csv").read_text().splitlines()) == 6
    plot_curves(curves, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert curves.summary()["circuit_size"] == 8


class SignedUnits(torch.nn.Module):
    """Class 0 = 2 h0 + h1 - 0.5 h2 (+ 0 h3): units that help, one that hurts, one that does nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 4)
        self.out = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.eye(4))
            self.hidden.bias.zero_()
            self.out.weight.zero_()
            self.out.weight[0] = torch.tensor([2.0, 1.0, -0.5, 0.0])
            self.out.bias.copy_(torch.tensor([0.0, 0.1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


def test_circuit_order_grows_by_exact_gain_above_the_circuit():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([2.0 + 0.1 * torch.rand(20, 4, generator=g), 0.1 * torch.rand(20, 4, generator=g)])
    y = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    model = SignedUnits()
    search = find_circuit(model, x, 0, labels=y, faithfulness=0.7, n_samples=20, steps=50)
    assert np.flatnonzero(search.mask).tolist() == [0]  # h0 alone keeps 2 / 2.5 = 0.8
    order = circuit_order(model, search, x[search.samples], x)
    assert order.tolist() == [0, 1, 3, 2]  # then the helpful unit, the idle one, and the harmful one last
