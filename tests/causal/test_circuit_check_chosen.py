"""The necessity test where the circuit chooses: saturated layers left intact (explainnn.causal.circuit_check)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainnn.causal import CausalGraph, circuit_faithfulness
from explainnn.causal.minimal_circuit import Faithfulness
from explainnn.causal.units import HiddenUnits, target_logits


class SmallFirstLayer(nn.Module):
    """A 3-unit first layer every path runs through, then 8 units of which 0-3 feed class 0."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.h0 = nn.Linear(4, 3)
        self.h1 = nn.Linear(3, 8)
        self.out = nn.Linear(8, 2)
        with torch.no_grad():
            self.h0.weight.copy_(torch.rand(3, 4, generator=g) + 0.5)
            self.h0.bias.zero_()
            self.h1.weight.copy_(torch.rand(8, 3, generator=g) + 0.2)
            self.h1.bias.zero_()
            self.out.weight.zero_()
            self.out.bias.zero_()
            self.out.weight[0, :4] = torch.tensor([2.0, 1.5, 1.0, 0.5])
            self.out.weight[1, 4:] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.h1(torch.relu(self.h0(x)))))


def _graph(units: dict[str, list[int]], target: int = 0) -> CausalGraph:
    graph = CausalGraph({"target": target, "layers": ["h0", "h1", "out"]})
    out = graph.add_unit("out", target, kind="output", depth=3)
    for depth, (layer, indices) in enumerate(units.items(), start=1):
        for i in indices:
            graph.add_edge(graph.add_unit(layer, i, depth=depth), out)
    return graph


def _inputs(n: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 4, generator=torch.Generator().manual_seed(seed))


def test_saturated_layers_hold_every_unit_or_all_but_one():
    units = HiddenUnits.of(SmallFirstLayer(), _inputs(2))
    assert units.sizes == [3, 8]
    mask = units.mask({"h0": [0, 2], "h1": [0, 1, 2]})
    assert units.saturated(mask).tolist() == [True, False]
    assert units.saturated(units.mask({"h0": [1], "h1": [3]})).tolist() == [False, False]
    assert units.saturated(units.mask({"h1": [3]})).tolist() == [False, False]  # no unit: no choice made
    # Every unit of the set in saturated layers: nothing would be left to compare, so none counts as saturated.
    assert units.saturated(units.mask({"h0": [0, 1, 2], "h1": list(range(7))})).tolist() == [False, False]
    assert units.saturated(units.mask({"h0": [0, 1, 2]})).tolist() == [False, False]


def test_without_a_saturated_layer_the_test_is_the_plain_one():
    model = SmallFirstLayer()
    report = circuit_faithfulness(model, _inputs(), _graph({"h0": [0], "h1": [0, 1]}), n_random=30)
    chosen = report.necessity_where_chosen
    assert chosen.layers_left_intact == []
    assert chosen.normalized == report.necessity.normalized
    assert chosen.p_value_vs_random == report.necessity.p_value_vs_random


def _mean_ablated_logit(model: SmallFirstLayer, x: torch.Tensor, reference: torch.Tensor, units: list[int]) -> float:
    """The naive oracle: h1's ``units`` set to their mean over ``reference`` by a plain hook, h0 untouched."""
    with torch.no_grad():
        mean = model.h1(torch.relu(model.h0(reference))).mean(0)

        def hook(module, args, output):
            output = output.clone()
            output[:, units] = mean[units]
            return output

        handle = model.h1.register_forward_hook(hook)
        try:
            return float(model(x)[:, 0].double().mean())
        finally:
            handle.remove()


@pytest.mark.parametrize("per_layer", [True, False])
def test_saturated_first_layer_is_left_intact_and_matches_a_hand_computation(per_layer):
    model = SmallFirstLayer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, reference = _inputs(), _inputs(60, seed=2)
    graph = _graph({"h0": [0, 1, 2], "h1": [0, 1]})
    report = circuit_faithfulness(model, x, graph, reference=reference, n_random=40, per_layer=per_layer, seed=3)
    chosen = report.necessity_where_chosen
    assert chosen.layers_left_intact == ["h0"]
    clean, empty = report.clean_logit, report.empty_logit
    expected = (clean - _mean_ablated_logit(model, x, reference, [0, 1])) / (clean - empty)
    assert chosen.normalized == pytest.approx(expected, abs=1e-6)
    if per_layer:
        # The plain test ablates all of h0 for the circuit and every random set: the network's output is a
        # constant, so the circuit's necessity is no different from the random sets' (ties count against it).
        assert report.necessity.p_value_vs_random > 0.5
    # With h0 intact the circuit's two h1 units (the heaviest class-0 weights) beat random pairs of h1 units.
    assert chosen.normalized > chosen.random_normalized_mean
    assert chosen.p_value_vs_random < report.necessity.p_value_vs_random
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_run_line_and_the_report_table_show_the_test_where_the_circuit_chooses():
    from explainnn.pipeline.circuit import describe_circuit
    from explainnn.reports.tables import circuit_table

    model = SmallFirstLayer()
    graph = _graph({"h0": [0, 1, 2], "h1": [0, 1]})
    graph.metadata.update(n_samples=40, inputs="train split")
    graph.add_result("circuit_search", {"size": 5, "total_units": 11, "fraction": 5 / 11})
    report = circuit_faithfulness(model, _inputs(), graph, reference=_inputs(60, seed=2), n_random=20)
    chosen = report.necessity_where_chosen
    line = describe_circuit(graph)
    assert f"with h0 left intact: necessity {chosen.normalized:.2f}" in line
    _, rows = circuit_table(report, "minimal circuit")
    assert any(row[0].startswith("necessity where the minimal circuit chooses (h0 left intact)") for row in rows)
    plain = _graph({"h0": [0], "h1": [0, 1]})
    plain.metadata.update(n_samples=40, inputs="train split")
    plain.add_result("circuit_search", {"size": 3, "total_units": 11, "fraction": 3 / 11})
    circuit_faithfulness(model, _inputs(), plain, n_random=20)
    assert "left intact" not in describe_circuit(plain)


def test_the_search_measures_the_necessity_the_check_tests():
    model = SmallFirstLayer()
    x, reference = _inputs(), _inputs(60, seed=2)
    units = HiddenUnits.of(model, x[:1])
    objective = Faithfulness.of(model, units, x, 0, reference)
    saturating, plain = units.mask({"h0": [0, 1, 2], "h1": [0, 1]}), units.mask({"h0": [0], "h1": [0, 1]})
    _, necessity = objective.with_necessity([saturating, plain])
    span = objective.full - objective.empty
    assert necessity[0] == pytest.approx((objective.full - _mean_ablated_logit(model, x, reference, [0, 1])) / span,
                                         abs=1e-6)
    report = circuit_faithfulness(model, x, _graph({"h0": [0, 1, 2], "h1": [0, 1]}), reference=reference, n_random=5)
    assert necessity[0] == pytest.approx(report.necessity_where_chosen.normalized, abs=1e-6)
    ablated = units.ablate(plain)
    logit = target_logits(objective.runner, x, 0, [ablated]).mean()
    assert necessity[1] == pytest.approx((objective.full - logit) / span, abs=1e-9)
