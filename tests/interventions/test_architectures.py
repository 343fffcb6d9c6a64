"""Real architectures (tests/architectures.py): the traced DAG, exact interventions, discovery over every branch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from architectures import ARCHITECTURES, REFUSED, build
from explainnn.causal import discover
from explainnn.errors import InterventionError
from explainnn.interventions import (
    EdgeIntervention as Edge,
)
from explainnn.interventions import (
    InterventionRunner,
    find_layers,
    intervene,
    reference_run,
)
from explainnn.interventions import (
    NodeIntervention as Node,
)
from explainnn.interventions.kinds import kind_of

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

NAMES = list(ARCHITECTURES)

KNOWN_GAPS: dict[tuple[str, str], str] = {}
"""(test, architecture) -> why that architecture fails it today (strict xfail: the fix makes it pass)."""


def _names(test: str) -> list:
    """The architectures for ``test``: known gaps as strict xfails, refused patterns skipped (test_patterns.py
    asserts their refusal)."""
    names = []
    for name in NAMES:
        if name in REFUSED:
            names.append(pytest.param(name, marks=pytest.mark.skip(reason=f"refused: {REFUSED[name][1]}")))
        elif (test, name) in KNOWN_GAPS:
            names.append(pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[(test, name)])))
        else:
            names.append(name)
    return names


def _state(model: nn.Module) -> dict:
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), "forward" in m.__dict__) for m in model.modules()],
    }


def _assert_same(model: nn.Module, before: dict) -> None:
    after = _state(model)
    assert after["training"] == before["training"] and after["hooks"] == before["hooks"]
    for key, value in before["tensors"].items():
        assert torch.equal(value, after["tensors"][key]), key


def _reaching_output(layers) -> set[str]:
    by_name = {layer.name: layer for layer in layers}
    todo, seen = [layers[-1].name], set()
    while todo:
        name = todo.pop()
        if name in seen or name == "input":
            continue
        seen.add(name)
        todo.extend(link.name for link in by_name[name].parents)
    return seen


def _specs(layers) -> list:
    """A node and, per parent link, a hard and a soft edge into two children, on every layer."""
    specs = []
    for layer in layers:
        specs.append(Node(layer.name, [layer.n_units - 1]))
        for link in layer.parents:
            unit = next(i for i, features in enumerate(link.unit_map) if features)
            children = [c for c in range(layer.n_units) if _edge_exists(layer, link, unit, c)][:2]
            specs.append(Edge(layer.name, unit, children, parent_layer=link.name))
            specs.append(Edge(layer.name, unit, children[:1], 0.4, "scale", parent_layer=link.name))
    return specs


def _edge_exists(layer, link, unit: int, child: int) -> bool:
    groups = getattr(layer.module, "groups", 1)
    if groups == 1:
        return True
    per_in, per_out = layer.in_features // groups, layer.n_units // groups
    return any(f // per_in == child // per_out for f in link.unit_map[unit])


@pytest.mark.parametrize("name", _names("layers"))
def test_every_weight_layer_on_a_path_to_the_output_is_linked(name):
    model, inputs = build(name)
    layers = find_layers(model, inputs(1))
    weights = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.LSTM, nn.GRU, nn.RNN, nn.RNNCellBase, nn.Embedding,
               nn.MultiheadAttention)
    modules = {n for n, m in model.named_modules() if isinstance(m, weights)}
    assert {layer.module_name for layer in layers} == modules - _inside_a_layer(model)
    assert _reaching_output(layers) == {layer.name for layer in layers}


def _inside_a_layer(model: nn.Module) -> set[str]:
    """The modules owned by a module that a registered kind matches (an attention's ``out_proj`` is part of its
    heads' layer): they are no layers of their own."""
    inside = set()
    for owner, module in model.named_modules():
        if kind_of(module) is not None:
            inside.update(f"{owner}.{name}" if owner else name for name, _ in module.named_modules() if name)
    return inside


@pytest.mark.parametrize("name", _names("interventions"))
def test_interventions_on_every_layer_equal_the_naive_oracle_and_leave_the_model_as_it_was(name):
    model, inputs = build(name)
    x = inputs(3)
    layers = find_layers(model, x[:1])
    specs = _specs(layers)
    before = _state(model)
    ours = InterventionRunner(model).run(x, specs)
    naive = reference_run(model, x, specs)
    _assert_same(model, before)
    torch.testing.assert_close(ours.clean_logits, naive.clean_logits, atol=1e-5, rtol=1e-4)
    for k, spec in enumerate(specs):
        torch.testing.assert_close(ours.logits[k], naive.logits[k], atol=1e-5, rtol=1e-4, msg=lambda m: f"{spec}: {m}")
    changed = (ours.logits - ours.clean_logits).abs().amax((1, 2)) > 1e-6
    assert changed.float().mean() > 0.5, [s for s, c in zip(specs, changed) if not c]


def test_skip_path_edges_are_marked_and_use_no_weights():
    model, inputs = build("resnet")
    layers = {layer.name: layer for layer in find_layers(model, inputs(1))}
    block = layers["layers.1.0.conv1"]
    assert [(link.name, link.via) for link in block.parents] == [("layers.0.0.conv2", "path"), ("conv1", "path")]
    assert layers["layers.0.0.conv2"].parents[0].via == "weights"
    with pytest.raises(InterventionError, match="evaluate it with InterventionRunner"):
        with intervene(model, [Edge("layers.1.0.conv1", 0, parent_layer="conv1")], inputs(1)):
            pass
    with pytest.raises(InterventionError, match="'stem' is not a parent of layer 'layers.1.0.conv1'"):
        InterventionRunner(model).run(inputs(2), [Edge("layers.1.0.conv1", 0, parent_layer="stem")])


def test_depthwise_conv_offers_only_the_edges_that_exist():
    model, inputs = build("mobilenetv2")
    runner = InterventionRunner(model)
    with pytest.raises(InterventionError, match="has no edge from input channel 0 to unit 2"):
        runner.run(inputs(2), [Edge("layers.0.conv2", 0, [2])])
    graph = discover(model, inputs(40), int(runner.run(inputs(40), []).clean_logits.argmax(-1)[0]), n_samples=8)
    for cause, effect in graph.graph.edges:
        if effect.startswith("layers.0.conv2:"):
            assert cause.split(":")[1] == effect.split(":")[1]


def test_bidirectional_lstm_in_the_context_manager_matches_the_runner():
    model, inputs = build("bilstm")
    x = inputs(4)
    specs = [Node("lstm", [2, 7], steps=[1]), Edge("lstm", 1, [6], 0.3, "scale")]
    before = _state(model)
    with torch.no_grad(), intervene(model, specs, x[:1]):
        inside = model(x)
    _assert_same(model, before)
    torch.testing.assert_close(inside, InterventionRunner(model).run(x, [specs]).logits[0], atol=1e-5, rtol=1e-4)


def test_unsupported_layers_stop_discovery_before_any_work():
    class Projected(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(3, 4, num_layers=2, batch_first=True, proj_size=2)
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    model = Projected().eval()
    x = torch.rand(20, 4, 3)
    target = int(model(x).argmax(-1).mode().values)
    with pytest.raises(InterventionError, match=r"^cannot discover through module 'rnn': LSTMs with proj_size"):
        discover(model, x, target, n_samples=5)


def test_model_is_bit_identical_after_a_run_that_fails_midway():
    model, inputs = build("resnet")
    before = _state(model)
    specs = [Edge("layers.1.0.conv1", 0, [1], parent_layer="conv1"), Edge("linear", 3, [99], parent_layer="layers.1.0.conv2")]
    with pytest.raises(InterventionError, match="child unit 99 is out of range"):
        InterventionRunner(model).run(inputs(2), specs)
    _assert_same(model, before)


@pytest.mark.parametrize("name", _names("discovery"))
def test_discovery_reaches_every_branch_and_causal_attributions_have_the_input_shape(name):
    from explainnn.attributions import attribute

    model, inputs = build(name)
    x = inputs(60)
    target = int(model(x).argmax(-1).mode().values)
    graph = discover(model, x, target, n_samples=10)
    layers = find_layers(model, x[:1])
    assert graph.metadata["layers"] == [layer.name for layer in layers]
    tested = set(graph.results["tests"])
    for layer in layers[:-1]:  # every layer with causal children was tested as a parent, on every branch
        children = [c for c in layers if any(link.name == layer.name for link in c.parents)]
        if any(graph.causes(c.name) for c in children if c.name in graph.layers()):
            assert layer.name in tested, layer.name
    maps = attribute(model, x[:3], target, "causal", graph=graph)
    assert tuple(maps.shape) == tuple(x[:3].shape)


@pytest.mark.parametrize("name", ["resnet", "densenet"])
def test_stability_re_tests_the_edges_into_a_real_child(name: str) -> None:
    """The stability sweep follows the DAG: the re-tested edges go into a layer the probed one feeds."""
    from explainnn.causal import stability

    model, inputs = build(name)
    x = inputs(40)
    target = int(InterventionRunner(model).run(x, []).clean_logits.argmax(-1)[0])
    graph = discover(model, x, target, n_samples=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hidden = [layer for layer in graph.metadata["layers"][:-1] if graph.causes(layer)]
    result = stability(model, x, graph, layer=hidden[-1], betas=[0.0, 1.0], repeats=2, bootstrap=False)
    assert result.jaccard.shape == (2, 2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
