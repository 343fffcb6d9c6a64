"""Specs, soft interventions, validation errors and result helpers."""

from __future__ import annotations

import pytest
import torch

from explainnn.errors import InterventionError
from explainnn.interventions import EdgeIntervention as Edge
from explainnn.interventions import InterventionRunner, soft_edge, soft_node, soft_value
from explainnn.interventions import NodeIntervention as Node
from explainnn.models import RecurrentClassifier
from test_interventions_models import Conv1dNet, lenet, seeded


def test_specs_normalise_and_hash():
    assert Node("fc1", 3).units == (3,)
    assert Node("fc1", [1, 2], steps=-1).steps == (-1,)
    assert Edge("fc1", torch.tensor([1, 2]), 4).children == (4,)
    assert Node("fc1", 3) == Node("fc1", (3,)) and len({Node("fc1", 3), Node("fc1", [3])}) == 1


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Node("fc1", 0, "bogus"), "unknown node mode 'bogus'; valid modes: zero, mean, constant, scale"),
        (lambda: Node("fc1", 0, "constant"), "node mode 'constant' needs a value"),
        (lambda: Node("fc1", 0, "zero", 1.0), "node mode 'zero' takes no value"),
        (lambda: Node("fc1", []), "units must name at least one index"),
        (lambda: Node("fc1", [1, 1]), "units lists an index twice"),
        (lambda: Node("fc1", -1), "units must be non-negative integers"),
        (lambda: Node("fc1", True), "units must be integers"),
        (lambda: Node("", 0), "layer must be a non-empty layer name"),
        (lambda: Edge("fc1", 0, mode="add"), "unknown edge mode 'add'; valid modes: set, scale"),
        (lambda: Edge("fc1", 0, value="x"), "value must be a number"),
        (lambda: soft_value(0.0, -1.0), "delta must be >= 0"),
    ],
)
def test_spec_errors(build, message):
    with pytest.raises(InterventionError, match=message):
        build()


def test_soft_interventions_are_reproducible_and_in_range():
    a = [soft_node("fc1", 0, 0.2, 0.5, torch.Generator().manual_seed(7)).value for _ in range(3)]
    assert a[0] == a[1] == a[2] and 0.2 <= a[0] <= 0.7
    draws = torch.Generator().manual_seed(3)
    values = [soft_edge("fc1", 0, None, -1.0, 2.0, draws).value for _ in range(200)]
    assert min(values) >= -1.0 and max(values) <= 1.0 and len(set(values)) == 200
    assert soft_edge("fc1", 0, None, 0.0, 0.0).value == 0.0


def test_soft_runs_repeat_exactly_and_zero_width_is_the_hard_intervention():
    model, x = lenet(), torch.randn(3, 1, 32, 32)
    runner = InterventionRunner(model)

    def draw(seed: int) -> list:
        g = torch.Generator().manual_seed(seed)
        return [soft_node("fc1", j, 0.0, 1.0, g) for j in range(4)] + [soft_edge("conv2", 1, None, 0.0, 1.0, g)]

    first, second = runner.run(x, draw(5)), runner.run(x, draw(5))
    assert torch.equal(first.logits, second.logits)
    hard = runner.run(x, [Node("fc1", 2), Edge("conv2", 1)])
    soft = runner.run(x, [soft_node("fc1", 2, 0.0, 0.0), soft_edge("conv2", 1, None, 0.0, 0.0)])
    torch.testing.assert_close(hard.logits, soft.logits, atol=1e-6, rtol=0)


def test_validation_against_the_model():
    runner = InterventionRunner(lenet())
    x = torch.randn(2, 1, 32, 32)
    cases = [
        (Node("fc1", 0, steps=1), "layer 'fc1' has no time axis"),
        (Edge("fc1", 0, steps=1), "layer 'fc1' has no time axis"),
        (Edge("fc1", 0, recurrent=True), "recurrent=True needs a recurrent layer; 'fc1' is a linear"),
        ([Node("fc1", [1, 2]), Node("fc1", 2, "constant", 1.0)], r"intervenes twice on unit\(s\) \[2\]"),
        ([Edge("fc2", [0, 1], [3]), Edge("fc2", 1, [3, 4])], "edits the same edge of layer 'fc2' twice"),
    ]
    for spec, message in cases:
        with pytest.raises(InterventionError, match=message):
            runner.run(x, [spec])


def test_recurrent_and_embedding_validation():
    model = RecurrentClassifier("lstm", None, 3, hidden_size=4, vocab_size=9, embedding_dim=3)
    runner = InterventionRunner(model)
    tokens = torch.randint(1, 9, (2, 5))
    with pytest.raises(InterventionError, match="step 5 is out of range for layer 'lstm' with 5 time steps"):
        runner.run(tokens, [Node("lstm", 0, steps=5)])
    with pytest.raises(InterventionError, match="'embedding' is an embedding and has no incoming edges"):
        runner.run(tokens, [Edge("embedding", 0)])
    with pytest.raises(InterventionError, match=r"recurrent parent 4 is out of range"):
        runner.run(tokens, [Edge("lstm", 4, recurrent=True)])


def test_grouped_conv_has_no_edges_across_groups():
    runner = InterventionRunner(seeded(Conv1dNet()))
    with pytest.raises(InterventionError, match=r"no edge from input channel 0 to unit 4 \(groups=2\)"):
        runner.run(torch.randn(2, 2, 9), [Edge("conv2", 0, [4])])


def test_target_and_input_validation():
    runner = InterventionRunner(lenet())
    x = torch.randn(3, 1, 32, 32)
    with pytest.raises(InterventionError, match=r"target classes must be in 0\.\.9"):
        runner.run(x, [Node("fc1", 0)], target=10)
    with pytest.raises(InterventionError, match="target must be a class index or 3 class indices"):
        runner.run(x, [Node("fc1", 0)], target=torch.tensor([1, 2]))
    with pytest.raises(InterventionError, match="inputs must be a non-empty batch tensor"):
        runner.run(torch.empty(0, 1, 32, 32), [Node("fc1", 0)])
    with pytest.raises(InterventionError, match="intervention 0 holds a str"):
        runner.run(x, [["fc1"]])
    with pytest.raises(InterventionError, match="memory_budget_mb must be a positive number"):
        InterventionRunner(lenet(), memory_budget_mb=0)


def test_result_helpers():
    model, x = lenet(), torch.randn(4, 1, 32, 32)
    result = InterventionRunner(model).run(x, [Node("fc2", 0, "scale", 1.0), Node("conv1", [0, 1, 2])], target=3)
    assert result.logits.shape == (2, 4, 10) and result.target_logit.shape == (2, 4) and result.prob.shape == (2, 4)
    assert torch.equal(result.target, torch.full((4,), 3))
    torch.testing.assert_close(result.logit_effect()[0], torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(result.kl_divergence()[0], torch.zeros(4), atol=1e-6, rtol=0)
    assert (result.kl_divergence()[1] > 0).all()
    torch.testing.assert_close(result.prob_effect(), result.prob - result.clean_prob)
    labels = result.clean_logits.argmax(-1)
    assert result.accuracy(labels)[0] == 1.0 and result.accuracy(labels).shape == (2,)
    default = InterventionRunner(model).run(x, [Node("fc2", 0)])
    assert torch.equal(default.target, default.clean_logits.argmax(-1))
