"""The architecture patterns of tests/architectures.py beyond what the parametrized tests check.

Refused patterns (``REFUSED``) are refused in one line naming the module and the op, before any work, at
every entry point, and leave no link through the refused module. ConvNeXt's interventions equal the oracle on every spec but the group-crossing path edges
(a strict xfail in test_architectures.py).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from architectures import REFUSED, CellLoop, build, seeded
from explainnn.causal import EdgeAblation, discover, enumerate_edges
from explainnn.errors import InterventionError
from explainnn.interventions import EdgeIntervention as Edge
from explainnn.interventions import InterventionRunner, find_layers, intervene, reference_run
from explainnn.interventions import NodeIntervention as Node
from explainnn.interventions.layers import unsupported_layers

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


def _refused(name: str) -> tuple[nn.Module, torch.Tensor, str, str]:
    model, inputs = build(name)
    pattern, _ = REFUSED[name]
    return model, inputs(8), pattern, pattern.split("'")[1]


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_patterns_stop_every_entry_point_in_one_line(name: str) -> None:
    """A pattern in REFUSED cannot be intervened on exactly (REFUSED says why): discovery, edge enumeration and edge
    ablation refuse the model, the runner the module, in one line."""
    model, x, pattern, module = _refused(name)
    skipped = [skipped for skipped, _ in unsupported_layers(model, x[:1])]
    assert skipped[0] == module and all(other.startswith(module + ".") for other in skipped[1:])
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


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_layer_after_a_refused_module_has_no_input_edges(name: str) -> None:
    """The NaN probe holds refused modules at their clean outputs, as it holds layers: the input reaches the head
    only through the refused module, so the head has no input link and an edge from the input is refused."""
    model, x, _, _ = _refused(name)
    layers = {layer.name: layer for layer in find_layers(model, x[:1])}
    assert all(link.name != "input" for link in layers["fc"].parents)
    with pytest.raises(InterventionError, match="layer 'fc' has no traced parent"):
        InterventionRunner(model).run(x, [Edge("fc", 0, [1], parent_layer="input")])


# -- a cell called once per step in a Python loop ------------------------------------------------------------------


@pytest.mark.parametrize("cell", [nn.GRUCell, nn.LSTMCell, nn.RNNCell])
def test_a_cell_loop_is_one_recurrent_layer_whose_steps_are_the_calls(cell: type[nn.RNNCellBase]) -> None:
    model = seeded(CellLoop(cell), 0, 2.0)
    x = torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(1))
    layer = {layer.name: layer for layer in find_layers(model, x[:1])}["cell"]
    assert (layer.n_units, layer.output_shape, layer.calls) == (5, (5, 5), 1)  # the calls are its steps
    assert [(link.name, link.via) for link in layer.parents] == [("input", "weights")]
    edges = enumerate_edges(model, x[:1])
    assert sum(kind == "recurrent" for kind in edges.kind) == 25
    specs = [
        Node("cell", [1], steps=[3]),
        Node("cell", [0, 4], "mean", steps=[1, -1]),
        Edge("cell", 2, [0, 3], steps=[2]),
        Edge("cell", [1, 2], [4], 0.5, "scale", steps=[4], recurrent=True),
        [Node("cell", [2], "constant", 1.0, steps=[0]), Edge("cell", 0, [1], recurrent=True, steps=[2, 3]),
         Node("fc", [0])],
    ]
    before = {key: value.clone() for key, value in model.state_dict().items()}
    ours = InterventionRunner(model).run(x, specs)
    naive = reference_run(model, x, specs)
    torch.testing.assert_close(ours.logits, naive.logits, atol=1e-5, rtol=1e-4)
    assert bool(((ours.logits - ours.clean_logits).abs().amax((1, 2)) > 1e-5).all())
    with torch.no_grad(), intervene(model, specs[4], x[:1]):
        inside = model(x)
        again = model(x)
    torch.testing.assert_close(inside, ours.logits[4], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(again, inside)
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())


# -- nn.LSTM(proj_size=P) ----------------------------------------------------------------------------------------


def _projected() -> tuple[nn.Module, torch.Tensor]:
    model, inputs = build("lstm_proj")
    return model, inputs(4)


def test_an_lstm_with_proj_size_is_a_cell_layer_and_a_projection_layer() -> None:
    """The cell's H units read the input (W_ih) and, one step earlier, themselves through W_hh W_hr; the
    projection's P units read the cell through W_hr and have no recurrent edges of their own."""
    model, x = _projected()
    lstm = model.lstm
    layers = {layer.name: layer for layer in find_layers(model, x[:1])}
    cell, proj = layers["lstm.cell"], layers["lstm"]
    assert (cell.n_units, proj.n_units) == (5, 3)
    assert [link.name for link in cell.parents] == ["input"] and [link.name for link in proj.parents] == ["lstm.cell"]
    assert [link.name for link in layers["fc"].parents] == ["lstm"]
    w_hh, w_hr = lstm.weight_hh_l0.detach(), lstm.weight_hr_l0.detach()
    torch.testing.assert_close(cell.unit_kind.edge_weight(cell, recurrent=True), w_hh @ w_hr)
    torch.testing.assert_close(proj.unit_kind.edge_weight(proj), w_hr)
    edges = enumerate_edges(model, x[:1])
    recurrent = [(p, c) for p, c, kind in zip(edges.parent_layer, edges.child_layer, edges.kind) if kind == "recurrent"]
    assert len(recurrent) == 25 and set(recurrent) == {("lstm.cell", "lstm.cell")}
    assert sum(c == "lstm" for c in edges.child_layer) == 15
    with pytest.raises(InterventionError, match=r"^recurrent=True needs a recurrent layer; 'lstm' is a layer without"):
        InterventionRunner(model).run(x, [Edge("lstm", 0, [1], recurrent=True)])


def test_proj_size_interventions_at_some_steps_equal_the_oracle() -> None:
    """Recurrent edges of the cell, projection edges and nodes on both layers, at some steps, alone and together,
    equal the per-step oracle; the context manager gives the runner's outputs."""
    model, x = _projected()
    specs = [
        Edge("lstm.cell", 1, [2], recurrent=True),
        Edge("lstm.cell", [0, 3], [1, 4], 0.3, "scale", steps=[1, 3], recurrent=True),
        Edge("lstm", 2, [0, 1], steps=[-1]),
        Node("lstm.cell", [1], "mean", steps=[2]),
        Node("lstm", [0, 2], "constant", 0.5, steps=[0, 3]),
        [Node("lstm", [1], "scale", 0.5, steps=[2]), Edge("lstm", 1, [1], 2.0, "scale"),
         Edge("lstm.cell", 0, [1], 0.2, "scale", recurrent=True, steps=[3])],
        [Node("lstm.cell", [4], steps=[3]), Edge("lstm.cell", 2, [0, 4], steps=[4])],
    ]
    ours = InterventionRunner(model).run(x, specs)
    naive = reference_run(model, x, specs)
    torch.testing.assert_close(ours.logits, naive.logits, atol=1e-5, rtol=1e-4)
    assert bool(((ours.logits - ours.clean_logits).abs().amax((1, 2)) > 1e-5).all())
    with torch.no_grad(), intervene(model, specs[5], x[:1]):
        inside = model(x)
    torch.testing.assert_close(inside, ours.logits[5], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("options", [{"num_layers": 2}, {"bidirectional": True}])
def test_stacked_or_bidirectional_lstms_with_proj_size_are_refused_in_one_line(options: dict) -> None:
    model = seeded(nn.Sequential(), 0)
    model.lstm = nn.LSTM(4, 5, batch_first=True, proj_size=3, **options)
    x = torch.randn(2, 5, 4)
    with pytest.raises(InterventionError, match=r"module 'lstm': LSTMs with proj_size are supported with one layer "
                                                r"in one direction") as caught:
        enumerate_edges(model, x)
    assert "\n" not in str(caught.value)
