"""The entry check of the Python API (explainnn.inputs): wrong shapes, labels and targets are one-line errors
naming what was given and what the model expects, raised before any work by every public entry point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.attributions import attribute
from explainnn.causal import CausalGraph, circuit, circuit_faithfulness, find_circuit
from explainnn.data.base import DatasetInfo
from explainnn.errors import ConfigError, DataError, UserError
from explainnn.evaluation import EvaluationInputs, evaluate, select_evaluation_samples
from explainnn.inputs import check_inputs, checked_inputs
from explainnn.models import build_model

N, FEATURES, CLASSES = 10, 6, 3


class Counted(nn.Module):
    """A tabular MLP (with batch norm, so one-sample passes must run in eval mode) that counts the rows it reads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(FEATURES, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, CLASSES))
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(len(x))
        return self.net(x)


@pytest.fixture
def mlp() -> tuple[Counted, torch.Tensor, torch.Tensor]:
    model = Counted().eval()
    x = torch.randn(N, FEATURES, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model(x).argmax(1)
    model.rows.clear()
    return model, x, labels


def _graph(target: int) -> CausalGraph:
    graph = CausalGraph({"target": target, "layers": ["net.0", "net.3"]})
    out = graph.add_unit("net.3", target, kind="output", depth=2)
    graph.add_edge(graph.add_unit("net.0", 0, depth=1), out)
    return graph


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_valid_inputs_come_back_as_a_tensor_after_one_sample_pass(mlp) -> None:
    model, x, labels = mlp
    assert check_inputs(model, x, labels=labels, target=1) is x
    assert model.rows == [1] and model.training is False
    model.train()
    rows = check_inputs(model, x.numpy().astype(np.float64))  # numpy floats become float32
    assert rows.dtype == torch.float32 and rows.shape == x.shape and model.training  # mode restored
    assert checked_inputs(model, x)[1] == CLASSES


@pytest.mark.parametrize("shape", [(4, 7), (4, 2, 6)])
def test_a_wrong_shape_names_the_shape_and_what_the_first_layer_reads(mlp, shape) -> None:
    model, _, _ = mlp
    with pytest.raises(DataError) as error:
        check_inputs(model, torch.randn(*shape), what="discover")
    message = _one_line(error)
    assert message.startswith("discover: the model cannot read inputs of shape " + str(shape))
    assert "first layer 'net.0' (Linear) reads 6 features on the last axis" in message


def test_a_failure_deeper_in_the_model_names_that_layer_too() -> None:
    info = DatasetInfo("mnist", "image", (1, 32, 32), 10, tuple(str(i) for i in range(10)), "test")
    lenet = build_model("lenet", info)
    with pytest.raises(DataError) as error:
        check_inputs(lenet, torch.rand(2, 1, 28, 28), what="attribute")
    message = _one_line(error)
    assert "inputs of shape (2, 1, 28, 28)" in message
    assert "first layer 'conv1' (Conv2d) reads (N, C, H, W) with C = 1" in message
    assert "failed at layer 'fc1' (Linear), which reads 400 features" in message


@pytest.mark.parametrize("inputs, fragment", [
    (torch.randn(FEATURES), r"must be a batch \(N, \.\.\.\) of samples; got shape \(6,\)"),
    (torch.randn(0, FEATURES), "inputs hold no samples"),
    ([[0.0] * FEATURES], "must be a torch.Tensor or numpy array; got list"),
])
def test_inputs_that_are_no_batch_are_refused(mlp, inputs, fragment) -> None:
    model, _, _ = mlp
    with pytest.raises(UserError, match=fragment):
        check_inputs(model, inputs)
    assert model.rows == []


@pytest.mark.parametrize("labels, fragment", [
    (torch.zeros(7, dtype=torch.long), "labels hold 7 entries for 10 inputs"),
    (torch.zeros(N, 2, dtype=torch.long), r"labels hold shape \(10, 2\) for 10 inputs"),
    (torch.full((N,), 3), r"labels must be classes in 0\.\.2 \(the model has 3 outputs\); got 3"),
    (torch.full((N,), -1), "got -1"),
    (torch.zeros(N), "labels must be integer classes; got float32"),
])
def test_labels_must_be_one_class_in_range_per_input(mlp, labels, fragment) -> None:
    model, x, _ = mlp
    with pytest.raises(UserError, match=fragment) as error:
        check_inputs(model, x, labels=labels)
    _one_line(error)


@pytest.mark.parametrize("target, kind, fragment", [
    (3, ConfigError, r"target must be a class index in 0\.\.2"),
    (-1, ConfigError, r"target must be a class index in 0\.\.2"),
    (True, UserError, "target must be a class index"),
    (1.0, UserError, "target must be a class index"),
    (torch.tensor([0, 1]), UserError, r"one class or one per input \(10\)"),
])
def test_target_must_be_a_class_in_range(mlp, target, kind, fragment) -> None:
    model, x, _ = mlp
    with pytest.raises(kind, match=fragment):
        check_inputs(model, x, target=target)
    check_inputs(model, x, target=np.int64(2))
    check_inputs(model, x, target=torch.arange(N) % CLASSES)


# Every public entry point calls the check first: one sample's pass, then the one-line error ------------------


def _entry_points(x, labels, graph):
    return {
        "attribute": lambda model, **kw: attribute(model, kw.get("inputs", x), 0, "saliency"),
        "find_circuit": lambda model, **kw: find_circuit(model, kw.get("inputs", x), 0, labels=kw.get("labels"),
                                                         n_samples=4, steps=2),
        "circuit": lambda model, **kw: circuit(model, kw.get("inputs", x), 0, labels=kw.get("labels"), n_samples=4,
                                               steps=2),
        "circuit_faithfulness": lambda model, **kw: circuit_faithfulness(model, kw.get("inputs", x), graph,
                                                                         labels=kw.get("labels"), n_random=5),
        "evaluate": lambda model, **kw: evaluate(
            model, EvaluationInputs(model, kw.get("inputs", x).numpy(),
                                    (labels if kw.get("labels") is None else kw["labels"]).numpy(),
                                    np.arange(len(kw.get("inputs", x))), "tabular"),
            ["saliency"], ["Sparseness"], progress=False),
        "evaluation": lambda model, **kw: select_evaluation_samples(
            model, kw.get("inputs", x), labels if kw.get("labels") is None else kw["labels"], 0, 5),
    }


ENTRY_POINTS = ["attribute", "find_circuit", "circuit", "circuit_faithfulness", "evaluate", "evaluation"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_refuses_a_wrong_shape_after_one_sample_pass(mlp, entry) -> None:
    model, x, labels = mlp
    call = _entry_points(x, labels, _graph(0))[entry]
    with pytest.raises(DataError) as error:
        call(model, inputs=torch.randn(N, FEATURES + 1))
    message = _one_line(error)
    assert message.startswith(f"{entry}: the model cannot read inputs of shape (10, 7)")
    assert "reads 6 features on the last axis" in message and "mat1 and mat2" in message
    assert model.rows == [1]  # the check's pass of one sample, nothing else


@pytest.mark.parametrize("entry", [e for e in ENTRY_POINTS if e != "attribute"])
def test_every_entry_point_refuses_labels_of_the_wrong_length_before_any_work(mlp, entry) -> None:
    model, x, labels = mlp
    call = _entry_points(x, labels, _graph(0))[entry]
    with pytest.raises(UserError) as error:
        call(model, labels=labels[:7])
    assert f"{entry}: labels hold 7 entries for 10 inputs" in _one_line(error)
    assert model.rows == [1]  # one pass of one sample, nothing else
