"""The ``intervene`` context manager: same results as the runner, autograd, exact restore."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainnn.errors import InterventionError
from explainnn.interventions import EdgeIntervention as Edge
from explainnn.interventions import InterventionRunner, find_layers, intervene
from explainnn.interventions import NodeIntervention as Node
from explainnn.interventions.reference import intervened_copy
from explainnn.models import RecurrentClassifier
from test_interventions_models import NestedNet, SeqFirstLSTM, lenet, seeded


def snapshot(model: nn.Module) -> dict:
    """Everything the engine could touch: tensor bits, hooks, instance attributes, modes."""
    state = {name: t.detach().clone() for name, t in model.state_dict(keep_vars=True).items()}
    modules = {}
    for name, module in model.named_modules():
        modules[name] = (
            module.training,
            sorted(module.__dict__),
            {key: list(getattr(module, key)) for key in module.__dict__ if key.endswith("hooks")},
        )
    return {"state": state, "modules": modules}


def assert_same(before: dict, after: dict) -> None:
    assert before["modules"] == after["modules"]
    assert before["state"].keys() == after["state"].keys()
    for name, tensor in before["state"].items():
        other = after["state"][name]
        assert tensor.dtype == other.dtype and tensor.shape == other.shape
        assert torch.equal(tensor.view(torch.uint8) if tensor.is_floating_point() else tensor,
                           other.view(torch.uint8) if other.is_floating_point() else other), name


def lstm_model() -> nn.Module:
    return seeded(RecurrentClassifier("lstm", 5, 3, hidden_size=6, num_layers=2, pooling="mean"), scale=2.0)


CASES = [
    (lenet, (3, 1, 32, 32), [Node("conv2", 3), Edge("fc1", 2, [0, 4])]),
    (lenet, (3, 1, 32, 32), [Edge("conv2", 1, None, 0.3), Node("fc2", 5, "scale", 0.5)]),
    (lstm_model, (3, 6, 5), [Node("lstm.l0", 1, steps=2), Edge("lstm.l1", 3, recurrent=True)]),
    (lstm_model, (3, 6, 5), [Edge("lstm.l0", 2, [1, 3], steps=[1, 4]), Node("fc", 0, "constant", 2.0)]),
]


@pytest.mark.parametrize("factory, shape, specs", CASES)
def test_context_manager_matches_runner_and_restores_bit_exactly(factory, shape, specs):
    torch.manual_seed(0)
    model = factory()
    x = torch.randn(shape)
    before = snapshot(model)
    expected = InterventionRunner(model).run(x, [specs]).logits[0]
    assert_same(before, snapshot(model))
    with torch.no_grad(), intervene(model, specs, x) as patched:
        got = patched(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert_same(before, snapshot(model))
    with torch.no_grad():
        torch.testing.assert_close(model(x), InterventionRunner(model).run(x, [Node(specs[0].layer, 0)]).clean_logits)


def test_restores_when_the_block_raises():
    model = lstm_model()
    model.fc.register_forward_hook(lambda m, a, o: None)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(model, [Node("lstm.l1", 2), Edge("fc", 1)], torch.randn(2, 6, 5)):
            model(torch.randn(2, 6, 5))
            raise RuntimeError("boom")
    assert_same(before, snapshot(model))


def test_runner_restores_training_flags_and_evaluates_in_eval_mode():
    model = NestedNet()
    model.train()
    model.features[0].bn.eval()
    before = snapshot(model)
    x = torch.randn(3, 2, 8, 8)
    result = InterventionRunner(model).run(x, [Node("head.1", 0)])
    assert_same(before, snapshot(model))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(result.clean_logits, model(x))


@pytest.mark.parametrize("factory, shape, specs", CASES)
def test_gradients_flow_through_interventions(factory, shape, specs):
    torch.manual_seed(1)
    model = factory()
    x = torch.randn(shape, requires_grad=True)
    with intervene(model, specs, x.detach()):
        model(x).square().sum().backward()
    ours = x.grad.clone()
    x.grad = None
    copy = intervened_copy(model, find_layers(model, x.detach()), specs, {})
    copy(x).square().sum().backward()
    scale = float(x.grad.abs().max())
    torch.testing.assert_close(ours, x.grad, atol=1e-5 * scale, rtol=1e-4)


def test_mean_mode_needs_reference_data():
    model = lenet()
    x = torch.randn(2, 1, 32, 32)
    with pytest.raises(InterventionError, match="mode='mean' on layer 'fc1' needs reference data"):
        with intervene(model, Node("fc1", 0, "mean"), x):
            model(x)
    with torch.no_grad(), intervene(model, Node("fc1", 0, "mean"), x, reference=x) as patched:
        got = patched(x)
    torch.testing.assert_close(got, InterventionRunner(model).run(x, [Node("fc1", 0, "mean")]).logits[0])


def test_sequence_first_rnn_in_context_manager():
    model = seeded(SeqFirstLSTM(nn.GRU), scale=2.0)
    x = torch.randn(3, 5, 5)
    specs = [Node("rnn.l0", 1, steps=-1), Edge("rnn.l1", 2, recurrent=True, steps=[1, 2])]
    with torch.no_grad(), intervene(model, specs, x):
        got = model(x)
    torch.testing.assert_close(got, InterventionRunner(model).run(x, [specs]).logits[0], atol=1e-5, rtol=1e-4)
