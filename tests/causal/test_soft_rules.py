"""Soft interventions: ``scale`` (w x u, the default) and ``set`` (w := u, the research rule), edges and nodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.causal import discover, stability
from explainnn.errors import ConfigError, InterventionError
from explainnn.interventions import EdgeIntervention, InterventionRunner, NodeIntervention, soft_edge, soft_node
from test_circuit_minimal import PlantedMLP, _mlp_data


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_scale_is_the_default_and_multiplies_the_weights():
    model, x = _mlp(), torch.rand(5, 3)
    spec = soft_edge("2", 1, None, 0.3, 0.2, torch.Generator().manual_seed(0))
    assert spec.mode == "scale" and 0.3 <= spec.value <= 0.5
    edited = _mlp()
    with torch.no_grad():
        edited[2].weight[:, 1] *= spec.value
    got = InterventionRunner(model).run(x, [spec]).logits[0]
    torch.testing.assert_close(got, edited(x), rtol=1e-5, atol=1e-6)


def test_set_rule_replaces_the_weights_by_u():
    model, x = _mlp(), torch.rand(5, 3)
    spec = soft_edge("2", 1, None, 0.3, 0.2, torch.Generator().manual_seed(0), rule="set")
    assert spec.mode == "set"
    edited = _mlp()
    with torch.no_grad():
        edited[2].weight[:, 1] = spec.value
    torch.testing.assert_close(InterventionRunner(model).run(x, [spec]).logits[0], edited(x), rtol=1e-5, atol=1e-6)


def test_node_rules_scale_or_set_the_unit():
    model, x = _mlp(), torch.rand(5, 3)
    generator = torch.Generator().manual_seed(1)
    scaled, fixed = soft_node("0", 2, 0.4, 0.1, generator), soft_node("0", 2, 0.4, 0.1, generator, rule="set")
    assert (scaled.mode, fixed.mode) == ("scale", "constant")
    runner = InterventionRunner(model)
    expected = runner.run(x, [NodeIntervention("0", 2, "scale", scaled.value),
                              NodeIntervention("0", 2, "constant", fixed.value)]).logits
    torch.testing.assert_close(runner.run(x, [scaled, fixed]).logits, expected)


def test_scale_walks_from_a_cut_at_zero_to_no_change_at_one():
    model, x = _mlp(), torch.rand(6, 3)
    runner = InterventionRunner(model)
    cut = runner.run(x, [EdgeIntervention("2", 1, None, 0.0)]).logits
    at_zero = runner.run(x, [soft_edge("2", 1, None, 0.0, 0.0)]).logits
    at_one = runner.run(x, [soft_edge("2", 1, None, 1.0, 0.0)])
    torch.testing.assert_close(at_zero, cut)
    torch.testing.assert_close(at_one.logits[0], at_one.clean_logits)


def test_unknown_rule_is_a_one_line_error():
    with pytest.raises(InterventionError, match="valid rules: scale, set"):
        soft_edge("2", 1, None, 0.1, 0.1, rule="boost")
    with pytest.raises(ConfigError, match="soft_rule"):
        discover(PlantedMLP(), *_mlp_data()[:1], 0, intervention="soft", soft_rule="boost")


@pytest.mark.parametrize("on", ["edges", "nodes"])
def test_discovery_records_the_rule_and_stability_falls_as_the_intervention_fades(on):
    model = PlantedMLP()
    x, y = _mlp_data()
    soft = discover(model, x, 0, labels=y, on=on, intervention="soft", beta=0.0, delta=0.1)
    assert "scaled by" in soft.results["tests"]["h2"][0]["intervention"]
    assert soft.metadata["options"]["soft_rule"] == "scale"
    graph = discover(model, x, 0, labels=y, on=on)
    result = stability(model, x, graph, betas=[0.0, 0.5, 1.0], delta=0.05, repeats=3, bootstrap=False)
    curve = result.jaccard.mean(1)
    assert result.soft_rule == "scale"
    assert curve[0] == 1.0 and curve[-1] == 0.0  # a near cut keeps the causes; u ~ U(1, 1.05) removes nothing
    assert np.all(np.diff(curve) <= 0)


def test_the_research_set_rule_boosts_weights_and_keeps_nothing_at_large_beta():
    model = PlantedMLP()
    x, y = _mlp_data()
    graph = discover(model, x, 0, labels=y)
    research = stability(model, x, graph, betas=[2.0], delta=0.1, repeats=2, bootstrap=False, soft_rule="set")
    assert research.soft_rule == "set"
    assert research.jaccard.max() == 0.0  # weights of 1 set to ~2: the logit rises, nothing is a cause


def test_seed_stability_sweeps_every_trained_model(tmp_path):
    from explainnn.causal import plot_seed_stability, seed_stability
    from explainnn.errors import UserError

    x, y = _mlp_data()
    other = PlantedMLP()
    with torch.no_grad():
        other.out.weight[0, 0] = 0.5  # another "training run": one more path into class 0
    result = seed_stability({0: PlantedMLP(), 1: other}, x, 0, labels=y, betas=[0.0, 1.0], delta=0.05,
                            repeats=2, bootstrap=False)
    assert result.seeds == (0, 1) and result.jaccard.shape == (2, 2)
    assert np.all(result.jaccard[:, 0] == 1.0) and np.all(result.jaccard[:, 1] == 0.0)
    assert result.summary()["jaccard_mean"] == [1.0, 0.0]
    rows = result.to_csv(tmp_path / "seeds.csv").read_text().splitlines()
    assert rows[0] == "seed,layer,beta,jaccard_mean,n_causes,n_units" and len(rows) == 5
    plot_seed_stability(result, tmp_path / "seeds.png")
    with pytest.raises(UserError, match="at least 2"):
        seed_stability({0: PlantedMLP()}, x, 0, labels=y)
