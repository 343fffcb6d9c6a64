"""Minimal faithful circuits on networks whose circuit is planted by hand, so the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.causal import CausalGraph, circuit_faithfulness
from explainnn.causal import node_circuit as circuit
from explainnn.causal.minimal_circuit import (
    EXACT_MARGIN,
    Faithfulness,
    Pruning,
    find_circuit,
    prune_and_exchange,
    raise_necessity,
)
from explainnn.causal.units import HiddenUnits, normalise, target_logits
from explainnn.errors import ConfigError, UserError
from explainnn.interventions import InterventionRunner


class PlantedMLP(nn.Module):
    """Class 0 = h2[0] + h2[2] + h2[4] + h2[5], each fed by one h1 unit reading one input feature.

    Each planted path carries a quarter of the logit, so at faithfulness 0.8 the
    circuit must hold all four paths (three give 0.75): h1 {1, 3, 4, 6}, h2 {0, 2, 4, 5}.
    Every other unit is active but feeds classes 1 and 2 only.
    """

    PLANTED = {"h1": [1, 3, 4, 6], "h2": [0, 2, 4, 5]}

    def __init__(self) -> None:
        super().__init__()
        self.h1 = nn.Linear(6, 8)
        self.h2 = nn.Linear(8, 6)
        self.out = nn.Linear(6, 3)
        with torch.no_grad():
            for layer in (self.h1, self.h2, self.out):
                layer.weight.zero_()
                layer.bias.zero_()
            for feature, (a, b) in enumerate(zip(self.PLANTED["h1"], self.PLANTED["h2"])):
                self.h1.weight[a, feature] = 1.0
                self.h2.weight[b, a] = 1.0
                self.out.weight[0, b] = 1.0
            for a in (0, 2, 5, 7):  # distractors read features 4 and 5
                self.h1.weight[a, 4 + a % 2] = 1.0
            self.h2.weight[1, 0] = self.h2.weight[1, 2] = 1.0
            self.h2.weight[3, 5] = self.h2.weight[3, 7] = 1.0
            self.out.weight[1, 1] = 1.0
            self.out.weight[2, 3] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.h2(torch.relu(self.h1(x)))))


def _mlp_data(n: int = 80, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Half class 0 (planted features at 2), half class 1 (planted features at 0.5, distractors high)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.05 * torch.rand(n, 6, generator=g)
    x[: n // 2, :4] += 2.0
    x[n // 2 :, :4] += 0.5
    x[n // 2 :, 4:] += 3.0
    y = torch.zeros(n, dtype=torch.long)
    y[n // 2 :] = 1
    return x, y


class PlantedCNN(nn.Module):
    """Class 0 = sum of conv channels 1 and 3 (half each); channels 0, 2 and 4 feed class 1 only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 5, 3)
        self.fc = nn.Linear(5 * 4 * 4, 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0] = 0.1
            self.conv.weight[3, 0] = 0.1
            for c in (0, 2, 4):
                self.conv.weight[c, 1] = 0.1
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            self.fc.weight[0, 16:32] = 1.0
            self.fc.weight[0, 48:64] = 1.0
            self.fc.weight[1, 0:16] = 0.5
            self.fc.weight[1, 32:48] = 0.5
            self.fc.weight[1, 64:80] = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def _cnn_data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = 0.1 * torch.rand(n, 2, 6, 6, generator=g)
    x[: n // 2, 0] += 1.0
    x[n // 2 :, 1] += 1.0
    y = (torch.arange(n) >= n // 2).long()
    return x, y


class PlantedRNN(nn.Module):
    """Class 0 reads hidden units 0 and 2 at the last step (ReLU RNN); units 1 and 3 feed class 1."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(2, 4, batch_first=True, nonlinearity="relu")
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.rnn.weight_ih_l0[0, 0] = 1.0
            self.rnn.weight_ih_l0[2, 0] = 1.0
            self.rnn.weight_hh_l0[0, 0] = 0.5
            self.rnn.weight_ih_l0[1, 1] = 1.0
            self.rnn.weight_ih_l0[3, 1] = 1.0
            self.fc.weight[0, 0] = self.fc.weight[0, 2] = 1.0
            self.fc.weight[1, 1] = self.fc.weight[1, 3] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def _rnn_data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = 0.1 * torch.rand(n, 5, 2, generator=g)
    x[: n // 2, :, 0] += 1.0
    x[n // 2 :, :, 1] += 1.0
    y = (torch.arange(n) >= n // 2).long()
    return x, y


def test_mlp_circuit_is_exactly_the_planted_units():
    x, y = _mlp_data()
    graph = circuit(PlantedMLP(), x, 0, labels=y, faithfulness=0.8, n_samples=30, steps=150)
    assert isinstance(graph, CausalGraph)
    assert {name: graph.causes(name) for name in ("h1", "h2")} == PlantedMLP.PLANTED
    search = graph.results["circuit_search"]
    assert search["size"] == 8 and search["total_units"] == 14
    assert search["faithfulness"] == pytest.approx(1.0, abs=1e-6)
    assert all(graph.unit("h2", i)["drop"] == pytest.approx(0.25, abs=0.02) for i in PlantedMLP.PLANTED["h2"])


def test_lower_faithfulness_needs_fewer_planted_paths():
    x, y = _mlp_data()
    search = find_circuit(PlantedMLP(), x, 0, labels=y, faithfulness=0.7, n_samples=30, steps=150)
    chosen = search.units.split(search.mask)
    assert len(chosen["h1"]) == len(chosen["h2"]) == 3  # three quarters >= 0.7
    assert set(chosen["h1"]) <= set(PlantedMLP.PLANTED["h1"]) and set(chosen["h2"]) <= set(PlantedMLP.PLANTED["h2"])
    assert search.faithfulness == pytest.approx(0.75, abs=0.02)


def test_cnn_circuit_is_the_planted_channels():
    x, y = _cnn_data()
    graph = circuit(PlantedCNN(), x, 0, labels=y, faithfulness=0.8, n_samples=20, steps=100)
    assert graph.causes("conv") == [1, 3]


def test_rnn_circuit_is_the_planted_hidden_units():
    x, y = _rnn_data()
    graph = circuit(PlantedRNN(), x, 0, labels=y, faithfulness=0.8, n_samples=20, steps=100)
    assert graph.causes("rnn") == [0, 2]


def test_same_inputs_and_seed_give_the_same_circuit_and_the_model_is_unchanged(tmp_path):
    model = PlantedMLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    training = model.training
    x, y = _mlp_data()
    a = circuit(model, x, 0, labels=y, n_samples=30, steps=60, seed=4)
    b = circuit(model, x, 0, labels=y, n_samples=30, steps=60, seed=4)
    assert a == b
    a.to_json(tmp_path / "circuit.json")
    assert CausalGraph.from_json(tmp_path / "circuit.json") == a
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training == training
    assert not model._forward_hooks and not model.h1._forward_hooks and not model.h2._forward_hooks


def test_faithfulness_formula_matches_a_hand_computation():
    model = PlantedMLP()
    x, y = _mlp_data()
    samples, reference = x[y == 0], x
    units = HiddenUnits.of(model, x[:1])
    keep = units.mask({"h1": [1, 3], "h2": [0, 2]})  # two planted paths of four
    runner = InterventionRunner(model, reference=reference)
    value = target_logits(runner, samples, 0, [units.keep(keep)]).mean()
    empty = target_logits(runner, samples, 0, [units.keep(np.zeros(units.total, bool))]).mean()
    full = model(samples)[:, 0].double().mean().item()
    # By hand: each path adds (its feature's value - the feature's reference mean).
    means = reference.double().mean(0)
    by_hand = (samples.double()[:, :4] - means[:4]).mean(0)
    expected = float(by_hand[:2].sum() / by_hand.sum())
    assert float(normalise(value, full, empty)) == pytest.approx(expected, abs=1e-6)
    assert float(normalise(value, full, empty)) == pytest.approx(0.5, abs=0.01)


def test_held_out_check_of_a_circuit_and_p_values_with_many_draws():
    model = PlantedMLP()
    x, y = _mlp_data(seed=0)
    held_x, held_y = _mlp_data(seed=1)
    graph = circuit(model, x, 0, labels=y, n_samples=30, steps=100)
    report = circuit_faithfulness(model, held_x, graph, labels=held_y, reference=x, n_random=150)
    assert report.n_random == 150
    assert report.sufficiency.normalized == pytest.approx(1.0, abs=0.02)
    assert report.necessity.normalized == pytest.approx(1.0, abs=0.02)
    # 1 in 1,050 random sets of 4 + 4 units is the planted one: p is small but not always < 0.01
    assert 1 / 151 <= report.sufficiency.p_value_vs_random < 0.05
    # Ablating 4 of 6 h2 units at random usually cuts every planted path too: necessity ties are common here
    assert 1 / 151 <= report.necessity.p_value_vs_random <= 1.0
    assert report.necessity.random_normalized_mean < report.necessity.normalized


@pytest.mark.parametrize(
    ("options", "error", "fragment"),
    [({"faithfulness": 1.5}, ConfigError, "faithfulness"),
     ({"layers": ["nope"]}, UserError, "not a hidden layer"),
     ({"steps": -1}, ConfigError, "steps")],
)
def test_bad_options_are_one_line_errors(options, error, fragment):
    x, y = _mlp_data()
    with pytest.raises(error, match=fragment) as info:
        circuit(PlantedMLP(), x, 0, labels=y, **options)
    assert "\n" not in str(info.value)


def test_pruning_keeps_the_fewest_units_of_an_additive_objective():
    # Two units carry 0.45 each, 38 carry 0.1 / 38: at 0.9 only the two big ones are needed.
    weights = np.r_[0.45, 0.45, np.full(38, 0.1 / 38)]
    calls = []

    def objective(masks):
        calls.append(len(masks))
        return np.array([weights[m].sum() for m in masks])

    start = np.ones(40, dtype=bool)
    pruning = prune_and_exchange(start, np.arange(40), 0.9 - 1e-9, objective)
    assert np.flatnonzero(pruning.mask).tolist() == [0, 1]
    assert pruning.value == pytest.approx(0.9)
    assert sorted(pruning.removed) == list(range(2, 40)) and len(pruning.trace) == 38
    assert pruning.without == {0: pytest.approx(0.45), 1: pytest.approx(0.45)}
    assert sum(n > 1 for n in calls) < 38  # fewer rounds than removals: several units go in one round


def test_circuit_is_one_minimal_above_the_target_plus_margin():
    x, y = _mlp_data()
    search = find_circuit(PlantedMLP(), x, 0, labels=y, faithfulness=0.6, n_samples=30, steps=60)
    assert search.size == 6  # three planted paths (0.75); two (0.5) are not enough
    assert search.faithfulness >= 0.6 + EXACT_MARGIN
    assert all(search.faithfulness - drop < 0.6 + EXACT_MARGIN for drop in search.drop.values())


class RedundantMLP(nn.Module):
    """Class 0 = A + max(B, D) + relu(B - A) / 2 over three copies of feature 0 in ``h1``: B = h1[0], A = h1[1],
    D = h1[2] (h1[3] and h1[4] read feature 1 and feed class 1).

    With only ``h1`` searched, {A, B} and {A, D} both keep the whole logit (sufficiency 1; {B, D} keeps 0.75 and
    every single unit at most 0.75), but ablating {A, B} loses half the logit and ablating {A, D} only a quarter
    (B takes over through the last term): at faithfulness 0.8 the most necessary minimal circuit is {A, B}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.h1 = nn.Linear(2, 5)
        self.h2 = nn.Linear(5, 5)
        self.out = nn.Linear(5, 2)
        with torch.no_grad():
            for layer in (self.h1, self.h2, self.out):
                layer.weight.zero_()
                layer.bias.zero_()
            self.h1.weight[:3, 0] = 1.0
            self.h1.weight[3:, 1] = 1.0
            self.h2.weight[0, [0, 2]] = torch.tensor([1.0, -1.0])  # relu(B - D)
            self.h2.weight[1, 2] = 1.0  # D
            self.h2.weight[2, 1] = 1.0  # A
            self.h2.weight[3, [0, 1]] = torch.tensor([1.0, -1.0])  # relu(B - A)
            self.h2.weight[4, 3] = self.h2.weight[4, 4] = 1.0
            self.out.weight[0, :4] = torch.tensor([1.0, 1.0, 1.0, 0.5])
            self.out.weight[1, 4] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.h2(torch.relu(self.h1(x)))))


def test_of_two_equally_sufficient_circuits_the_search_keeps_the_necessary_one():
    model = RedundantMLP()
    g = torch.Generator().manual_seed(3)
    x = 0.05 * torch.rand(60, 2, generator=g)
    x[:30, 0] += 2.0
    x[30:, 1] += 2.0
    y = (torch.arange(60) >= 30).long()
    units = HiddenUnits.of(model, x[:1], ["h1"])
    objective = Faithfulness.of(model, units, x[:30], 0, x)
    sufficiency, necessity = objective.with_necessity([units.mask({"h1": [1, 0]}), units.mask({"h1": [1, 2]})])
    assert sufficiency == pytest.approx([1.0, 1.0], abs=1e-6)  # the planted tie
    assert necessity == pytest.approx([0.5, 0.25], abs=0.02)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    search = find_circuit(model, x, 0, labels=y, layers=["h1"], n_samples=30, steps=60, reference=x)
    assert search.units.split(search.mask) == {"h1": [0, 1]}
    assert search.necessity == pytest.approx(0.5, abs=0.02) and search.faithfulness == pytest.approx(1.0, abs=1e-6)
    again = find_circuit(model, x, 0, labels=y, layers=["h1"], n_samples=30, steps=60, reference=x)
    assert np.array_equal(again.mask, search.mask) and again.necessity_swaps == search.necessity_swaps
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.h1._forward_hooks


def _additive(weights):
    return lambda masks: np.array([weights[m].sum() for m in masks])


def test_pruning_and_exchanges_keep_the_necessary_one_of_equally_sufficient_units():
    # Units 0-2 are equally sufficient (0.45 each; 0.9 needs two); 0 and 1 are necessary, 2 is not.
    sufficiency = _additive(np.r_[0.45, 0.45, 0.45, np.full(7, 0.01)])
    necessity = _additive(np.r_[0.5, 0.5, 0.05, np.full(7, 0.01)])

    def joint(masks):
        return sufficiency(masks), necessity(masks)

    start = np.ones(10, dtype=bool)
    plain = prune_and_exchange(start, np.arange(10), 0.9 - 1e-9, sufficiency)
    assert np.flatnonzero(plain.mask).tolist() == [1, 2]  # sufficiency alone: ties go by unit number
    assert np.isnan(plain.necessity)
    both = prune_and_exchange(start, np.arange(10), 0.9 - 1e-9, sufficiency, joint=joint,
                              layer_of=np.zeros(10, dtype=int))
    assert np.flatnonzero(both.mask).tolist() == [0, 1]
    assert both.value == pytest.approx(0.9) and both.necessity == pytest.approx(1.0)
    with pytest.raises(ValueError, match="layer_of"):
        prune_and_exchange(start, np.arange(10), 0.9, sufficiency, joint=joint)


def test_necessity_exchanges_stay_in_a_layer_and_keep_the_level():
    # From {1, 2}: unit 0 (same layer) raises necessity at the same sufficiency; unit 3 would raise it more but lies
    # in another layer (the per-layer null would change); unit 4 too, but the circuit would lose its sufficiency.
    sufficiency = _additive(np.r_[0.45, 0.45, 0.45, 0.45, 0.1, 0.0])
    necessity = _additive(np.r_[0.5, 0.5, 0.05, 0.9, 0.9, 0.0])
    layer_of = np.array([0, 0, 0, 1, 0, 0])

    def joint(masks):
        return sufficiency(masks), necessity(masks)

    mask = np.zeros(6, dtype=bool)
    mask[[1, 2]] = True
    state = raise_necessity(Pruning(mask, 0.9), 0.9 - 1e-9, sufficiency, joint, layer_of)
    assert np.flatnonzero(state.mask).tolist() == [0, 1]
    assert state.necessity_swaps == 1 and state.necessity == pytest.approx(1.0) and state.value == pytest.approx(0.9)
    assert np.bincount(layer_of[state.mask], minlength=2).tolist() == [2, 0]
    unchanged = raise_necessity(Pruning(state.mask.copy(), 0.9), 0.9 - 1e-9, sufficiency, joint, layer_of)
    assert unchanged.necessity_swaps == 0 and np.array_equal(unchanged.mask, state.mask)
