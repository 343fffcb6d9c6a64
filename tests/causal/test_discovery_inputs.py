"""Discovery's entry: what it is given is checked, and what it uses is said."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainnn.causal import discover
from explainnn.causal.discovery import FewerSamples


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def test_fewer_qualifying_inputs_than_asked_is_said_and_recorded():
    model = _model()
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    target = int(model(x).argmax(-1).mode().values)
    qualifying = int((model(x).argmax(-1) == target).sum())
    assert 2 <= qualifying < 50
    with pytest.warns(FewerSamples, match=f"using {qualifying} samples, not the 100 asked for"):
        graph = discover(model, x, target, n_samples=100)
    assert graph.metadata["n_samples"] == qualifying and graph.metadata["options"]["n_samples"] == 100


def test_labels_of_the_wrong_length_are_named_not_reported_as_too_few_samples():
    model = _model()
    x = torch.randn(30, 4)
    with pytest.raises(Exception) as error:
        discover(model, x, 0, labels=torch.zeros(7, dtype=torch.long), n_samples=5)
    message = str(error.value)
    assert "\n" not in message and "7" in message and "30" in message and "TooFewSamples" not in type(error.value).__name__


def test_inputs_of_the_wrong_shape_are_one_line_naming_the_shape():
    from explainnn.errors import DataError

    with pytest.raises(DataError) as error:
        discover(_model(), torch.randn(30, 7), 0, n_samples=5)
    message = str(error.value)
    assert "\n" not in message and "(30, 7)" in message and "4 features" in message
