"""The architecture patterns of tests/architectures.py beyond what the parametrized tests check.

Refused patterns (``REFUSED``) are refused in one line naming the module and the op, before any work, at
every entry point. ConvNeXt's interventions equal the oracle on every spec but the group-crossing path edges
(a strict xfail in test_architectures.py).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from architectures import REFUSED, CellLoop, build, seeded
from explainnn.causal import EdgeAblation, discover, enumerate_edges
from explainnn.errors import InterventionError
from explainnn.interventions import InterventionRunner, find_layers
from explainnn.interventions import NodeIntervention as Node
from explainnn.interventions.layers import unsupported_layers

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


def _refused(name: str) -> tuple[nn.Module, torch.Tensor, str, str]:
    model, inputs = build(name)
    pattern, _ = REFUSED[name]
    return model, inputs(8), pattern, pattern.split("'")[1]


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_patterns_stop_every_entry_point_in_one_line(name: str) -> None:
    """An LSTM with proj_size and a cell called in a Python loop cannot be intervened on exactly (REFUSED says
    why): discovery, edge enumeration and edge ablation refuse the model, the runner the module, in one line."""
    model, x, pattern, module = _refused(name)
    assert [skipped for skipped, _ in unsupported_layers(model, x[:1])] == [module]
    assert module not in {layer.module_name for layer in find_layers(model, x[:1])}
    target = int(model(x).argmax(-1).mode().values)
    calls = {
        "discover": lambda: discover(model, x, target, n_samples=2),
        "enumerate_edges": lambda: enumerate_edges(model, x[:1]),
        "EdgeAblation": lambda: EdgeAblation(model, x[:1]),
        "runner": lambda: InterventionRunner(model).run(x, [Node(module, [0])]),
    }
    for label, call in calls.items():
        with pytest.raises(InterventionError, match=pattern) as caught:
            call()
        assert "\n" not in str(caught.value), label


def test_rnn_cell_loop_is_refused_like_the_gru_and_lstm_cells() -> None:
    model = seeded(CellLoop(nn.RNNCell), 0, 2.0)
    with pytest.raises(InterventionError, match=r"module 'cell': RNNCell called in a Python loop"):
        enumerate_edges(model, torch.randn(1, 5, 4))


@pytest.mark.xfail(strict=True, reason=(
    "the NaN probe's input pass sees the input reach the head through the refused module and links it to the "
    "input one-to-one (via weights), so the runner edits the head's weights on the refused module's outputs as "
    "if they were input features; layers.py should leave the input link out (or the runner refuse the model) "
    "when a refused module lies between the input and a layer"))
@pytest.mark.parametrize("name", list(REFUSED))
def test_a_layer_after_a_refused_module_has_no_input_edges(name: str) -> None:
    model, x, _, _ = _refused(name)
    layers = {layer.name: layer for layer in find_layers(model, x[:1])}
    assert all(link.name != "input" for link in layers["fc"].parents)
