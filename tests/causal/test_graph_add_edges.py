"""CausalGraph.add_edges: the same graph as one add_edge per effect, with the same checks."""

import json

import pytest

from explainnn.causal import CausalGraph, CircuitCheck
from explainnn.causal.graph import library_versions
from explainnn.errors import UserError


def _units() -> CausalGraph:
    graph = CausalGraph({"target": 0})
    graph.add_unit("a", 0, kind="hidden", depth=1)
    for j in range(3):
        graph.add_unit("b", j, kind="hidden", depth=2)
    return graph


def test_add_edges_equals_one_add_edge_per_effect() -> None:
    bulk, single = _units(), _units()
    stats = {"effect": 0.5, "p_value": 0.01, "intervention": "hard"}
    bulk.add_edges("a:0", ["b:0", "b:2"], **stats)
    for effect in ("b:0", "b:2"):
        single.add_edge("a:0", effect, **stats)
    assert sorted(bulk.graph.edges(data=True)) == sorted(single.graph.edges(data=True))
    bulk.graph.edges["a:0", "b:0"]["effect"] = 9.0  # every edge holds its own attributes
    assert bulk.graph.edges["a:0", "b:2"]["effect"] == 0.5


@pytest.mark.parametrize("effects, message", [(["b:0", "b:7"], "unknown unit"), (["a:0"], "lower to a higher")])
def test_add_edges_checks_every_effect(effects: list, message: str) -> None:
    graph = _units()
    with pytest.raises(UserError, match=message):
        graph.add_edges("a:0", effects, effect=1.0)
    assert graph.graph.number_of_edges() == 0


def test_library_versions_is_read_once_and_copied() -> None:
    first = library_versions()
    first["python"] = "changed"
    assert library_versions()["python"] != "changed"


def test_circuit_faithfulness_takes_model_inputs_graph_in_that_order() -> None:
    import torch
    from torch import nn

    from explainnn.causal import circuit_faithfulness, discover

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(80, 4)
    target = int(model(x).argmax(-1).mode().values)
    graph = discover(model, x, target, n_samples=10)
    check = circuit_faithfulness(model, x, graph, n_random=5)
    assert graph.results["circuit"] == check.to_dict()
    assert CircuitCheck.from_dict(json.loads(json.dumps(check.to_dict()))) == check
    with pytest.raises(UserError, match="graph must be a CausalGraph; got Tensor"):
        circuit_faithfulness(model, graph, x, n_random=5)  # type: ignore[arg-type]
