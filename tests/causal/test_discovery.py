"""Discovery on networks whose causal units are planted by hand, so the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.causal import (
    CausalGraph,
    causal_chain,
    circuit_faithfulness,
    discover,
    discover_all,
    indices_classified_as,
    stability,
)
from explainnn.causal.stats import ztest_research
from explainnn.errors import ConfigError, TooFewSamples, UserError
from explainnn.interventions import EdgeIntervention, InterventionRunner, find_layers


class PlantedMLP(nn.Module):
    """Class 0 = h2[1] + h2[3]; h2[1] = relu(h1[0] + h1[2]); h2[3] = relu(h1[4]); h1[k] = relu(x[k//2]).

    Every other unit exists and is active but only feeds classes 1 and 2.
    """

    def __init__(self) -> None:
        super().__init__()
        self.h1 = nn.Linear(4, 6)
        self.h2 = nn.Linear(6, 5)
        self.out = nn.Linear(5, 3)
        with torch.no_grad():
            for layer in (self.h1, self.h2, self.out):
                layer.weight.zero_()
                layer.bias.zero_()
            self.h1.weight[0, 0] = 1.0
            self.h1.weight[2, 1] = 1.0
            self.h1.weight[4, 2] = 1.0
            self.h1.weight[1, 3] = 1.0  # distractors: h1[1], h1[3], h1[5] read x3
            self.h1.weight[3, 3] = 1.0
            self.h1.weight[5, 3] = 1.0
            self.h2.weight[1, 0] = 1.0
            self.h2.weight[1, 2] = 1.0
            self.h2.weight[3, 4] = 1.0
            self.h2.weight[0, 1] = 1.0  # h2[0], h2[2], h2[4] read the distractors
            self.h2.weight[2, 3] = 1.0
            self.h2.weight[4, 5] = 1.0
            self.out.weight[0, 1] = 1.0
            self.out.weight[0, 3] = 1.0
            self.out.weight[1, 0] = 0.1
            self.out.weight[1, 2] = 0.1
            self.out.weight[2, 4] = 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.h2(torch.relu(self.h1(x)))))


class PlantedCNN(nn.Module):
    """Class 0 = sum of conv channel 1; channels 0 and 2 only feed class 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 2)
        with torch.no_grad():
            self.conv.weight.fill_(0.2)
            self.conv.bias.zero_()
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            self.fc.weight[0, 16:32] = 1.0
            self.fc.weight[1, 0:16] = 0.01
            self.fc.weight[1, 32:48] = 0.01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


class PlantedRNN(nn.Module):
    """Hidden unit 0 carries input feature 0, seen only at step 0, to the last step (ReLU RNN)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(2, 3, batch_first=True, nonlinearity="relu")
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.rnn.weight_ih_l0[0, 0] = 1.0
            self.rnn.weight_hh_l0[0, 0] = 1.0
            self.rnn.weight_ih_l0[1, 1] = 1.0
            self.rnn.weight_ih_l0[2, 1] = 1.0
            self.fc.weight[0, 0] = 1.0
            self.fc.weight[1, 1] = 0.01
            self.fc.weight[1, 2] = 0.01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def _mlp_inputs(n: int = 40, seed: int = 0) -> torch.Tensor:
    return 0.5 + torch.rand(n, 4, generator=torch.Generator().manual_seed(seed))


def _cnn_inputs(n: int = 30) -> torch.Tensor:
    return 0.5 + torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(1))


def _rnn_inputs(n: int = 30) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(n, 6, 2)
    x[:, 0, 0] = 0.5 + torch.rand(n, generator=g)  # the early input the class depends on
    x[:, :, 1] = 0.2 * torch.rand(n, 6, generator=g)
    return x


@pytest.mark.parametrize("on", ["edges", "nodes"])
def test_mlp_recovers_planted_units(on):
    graph = discover(PlantedMLP(), _mlp_inputs(), 0, on=on)
    assert graph.causes("h2") == [1, 3]
    assert graph.causes("h1") == [0, 2, 4]
    assert graph.causes("input") == [0, 1, 2]
    assert graph.layers() == ["input", "h1", "h2", "out"]


def test_mlp_edges_connect_causes_to_their_children():
    graph = discover(PlantedMLP(), _mlp_inputs(), 0)
    edges = {(a, b) for a, b, _ in graph.edges()}
    assert ("h2:1", "out:0") in edges and ("h2:3", "out:0") in edges
    assert ("h1:0", "h2:1") in edges and ("h1:4", "h2:3") in edges
    stats = graph.graph.edges["h2:1", "out:0"]
    assert stats["effect"] < 0 and stats["q_value"] <= 0.05 and stats["n"] == 40
    assert stats["ci_low"] <= stats["effect"] <= stats["ci_high"]
    assert stats["intervention"] == "edges cut (weights set to 0)"


@pytest.mark.parametrize("on", ["edges", "nodes"])
def test_cnn_recovers_planted_channel(on):
    graph = discover(PlantedCNN(), _cnn_inputs(), 0, on=on)
    assert graph.causes("conv") == [1]
    assert graph.causes("input") == [0]


@pytest.mark.parametrize("on", ["edges", "nodes"])
def test_rnn_recovers_the_unit_that_carries_an_early_input(on):
    graph = discover(PlantedRNN(), _rnn_inputs(), 0, on=on)
    assert graph.causes("rnn") == [0]
    assert graph.causes("input") == [0]


def test_soft_interventions_recover_planted_units_and_are_seeded():
    model = PlantedMLP()
    first = discover(model, _mlp_inputs(), 0, intervention="soft", beta=0.0, delta=0.2, seed=3)
    assert first.causes("h2") == [1, 3]
    again = discover(model, _mlp_inputs(), 0, intervention="soft", beta=0.0, delta=0.2, seed=3)
    assert first == again
    other = discover(model, _mlp_inputs(), 0, intervention="soft", beta=0.0, delta=0.2, seed=4)
    assert other.results["tests"]["h2"][1]["intervention"] != first.results["tests"]["h2"][1]["intervention"]


def test_same_inputs_and_seed_give_an_identical_graph(tmp_path):
    model = PlantedCNN()
    a = discover(model, _cnn_inputs(), 0, seed=7)
    b = discover(model, _cnn_inputs(), 0, seed=7)
    assert a == b
    a.to_json(tmp_path / "g.json")
    assert CausalGraph.from_json(tmp_path / "g.json") == a


def test_model_is_left_unchanged():
    model = PlantedMLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    discover(model, _mlp_inputs(), 0, on="nodes")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_hooks and not model.h1._forward_hooks and not model.h1._forward_pre_hooks


def test_samples_are_the_first_classified_as_target_in_order():
    model = PlantedMLP()
    x = _mlp_inputs(10)
    x[3] = 0.0  # all-zero input: logits tie at 0, argmax 0 -> still class 0
    labels = torch.tensor([0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert indices_classified_as(model, x, 0, 4).tolist() == [0, 1, 2, 3]
    assert indices_classified_as(model, x, 0, 4, labels=labels).tolist() == [0, 2, 3, 4]
    graph = discover(model, x, 0, n_samples=4, labels=labels)
    assert graph.metadata["samples"] == [0, 2, 3, 4]
    with pytest.raises(TooFewSamples, match="classified as class 2"):
        indices_classified_as(model, x, 2, 4)
    assert issubclass(TooFewSamples, UserError)  # one line and exit 2 from the command line


def test_discover_all_skips_classes_with_too_few_samples_by_error_type():
    from explainnn.causal import discover_all

    model, x = PlantedMLP(), _mlp_inputs(10)
    predicted = set(model(x).argmax(1).tolist())
    assert set(discover_all(model, x, n_samples=4)) == {c for c in predicted
                                                        if (model(x).argmax(1) == c).sum() >= 2}


def test_ztest_reproduces_the_research_rule_with_n_plus_one_clean_samples():
    graph = discover(PlantedMLP(), _mlp_inputs(), 0, test="ztest", n_samples=20)
    assert graph.causes("h2") == [1, 3]
    assert graph.metadata["n_samples"] == 20
    assert graph.results["tests"]["h2"][0]["method"] == "ztest_research"
    # By hand: intervened logits on the first n samples, clean statistics on the first n + 1.
    model, x = PlantedMLP(), _mlp_inputs()
    runner = InterventionRunner(model)
    result = runner.run(x[:21], [EdgeIntervention("out", i, [0]) for i in range(5)], 0)
    intervened = result.target_logit[:, :20].double().numpy()
    expected = ztest_research(intervened, result.clean_target_logit.double().numpy())
    assert [r["statistic"] for r in graph.results["tests"]["h2"]] == pytest.approx(expected.statistic.tolist())
    with pytest.raises(ConfigError, match="ztest"):
        discover(PlantedMLP(), _mlp_inputs(), 0, test="ztest", on="nodes")


def test_layers_option_restricts_the_walk_to_the_top():
    graph = discover(PlantedMLP(), _mlp_inputs(), 0, layers=["h2"])
    assert graph.layers() == ["h2", "out"]
    chain = causal_chain(find_layers(PlantedMLP(), _mlp_inputs(2)))
    assert [layer.name for layer in chain] == ["out", "h2", "h1"]
    with pytest.raises(ConfigError, match="not on the path"):
        discover(PlantedMLP(), _mlp_inputs(), 0, layers=["h9"])
    with pytest.raises(ConfigError, match="contiguous"):
        discover(PlantedMLP(), _mlp_inputs(), 0, layers=["h1"])


@pytest.mark.parametrize(
    "options, fragment",
    [({"on": "edge"}, "valid: edges, nodes"), ({"alpha": 0}, "alpha"), ({"n_samples": 1}, "n_samples"),
     ({"beta": 2.0}, "beta")],
)
def test_bad_options_are_one_line_errors(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        discover(PlantedMLP(), _mlp_inputs(), 0, **options)
    with pytest.raises(ConfigError, match="target must be a class index in 0..2"):
        discover(PlantedMLP(), _mlp_inputs(), 5)


def test_discover_all_skips_classes_without_samples():
    graphs = discover_all(PlantedMLP(), _mlp_inputs())
    assert list(graphs) == [0]


def test_circuit_of_a_planted_network_is_sufficient_and_necessary():
    model = PlantedMLP()
    graph = discover(model, _mlp_inputs(), 0)
    report = circuit_faithfulness(model, _mlp_inputs(60, seed=5), graph, n_random=10)
    assert report.sufficiency.normalized == pytest.approx(1.0, abs=1e-5)
    assert report.sufficiency.accuracy == 1.0
    assert report.necessity.logit == pytest.approx(report.empty_logit, abs=1e-5)
    assert report.sufficiency.random_normalized_mean < 1.0
    assert graph.results["circuit"] == report.to_dict()


def test_stability_of_planted_units_under_soft_edges():
    model = PlantedMLP()
    graph = discover(model, _mlp_inputs(), 0)
    result = stability(model, _mlp_inputs(), graph, betas=[0.0, 0.2, 1.0], repeats=4)
    assert result.layer == "h2"
    assert result.jaccard.shape == (3, 4)
    assert np.all(result.jaccard[:2] == 1.0)  # weights of 1 set to <= 0.3: still a clear drop
    assert np.all(result.appearance[:2, [1, 3]] == 1.0)
    assert np.all(result.appearance[:, [0, 2, 4]] == 0.0)
    assert result.jaccard[2].max() < 1.0  # u ~ U(1, 1.1): the weight is barely changed


def test_discovery_result_carries_the_tests_and_reads_the_same_from_the_saved_graph(tmp_path):
    from explainnn.causal import CausalGraph, DiscoveryResult

    graph = discover(PlantedMLP(), _mlp_inputs(), 0, n_samples=20)
    result = DiscoveryResult.of(graph, "test")
    assert result.target == 0 and result.split == "test" and set(result.tests) == {"h2", "h1", "input"}
    rows = result.tests_table()
    assert len(rows) == sum(len(records) for records in result.tests.values())
    assert {row["candidate"] for row in rows if row["layer"] == "h2" and row["kept"]} == set(graph.causes("h2"))
    graph.to_json(tmp_path / "graph.json")
    assert DiscoveryResult.of(CausalGraph.from_json(tmp_path / "graph.json"), "test").tests_table() == rows
    assert graph.hidden_layers() == ["h1", "h2"] and graph.layer_kind("h2") == "hidden"
    assert graph.layer_kind("input") == "input" and graph.layer_depth("input") == 0
    assert graph.digraph is graph.graph
