"""The shared torch helpers and files writers: eval mode restored per module, seeded blocks, atomic figures and tables."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from explainnn.files import save_figure, write_csv
from explainnn.torch_utils import eval_mode, model_device, seeded


def _mixed() -> nn.Module:
    """A model in training mode holding a submodule kept in eval mode (a frozen batch norm)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()
    model[1].eval()
    return model


def _flags(model: nn.Module) -> list[bool]:
    return [module.training for module in model.modules()]


def test_eval_mode_gives_each_submodule_its_own_flag_back_also_on_errors():
    model = _mixed()
    before = _flags(model)
    with eval_mode(model):
        assert not any(_flags(model))
    assert _flags(model) == before
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("inside")
    assert _flags(model) == before


def test_discovery_leaves_a_mixed_mode_model_as_it_was():
    from explainnn.causal.discovery import indices_classified_as

    model = _mixed()
    before = _flags(model)
    inputs = torch.randn(64, 3)
    with torch.no_grad(), eval_mode(model):
        common = int(model(inputs).argmax(-1).mode().values)
    assert len(indices_classified_as(model, inputs, common, 2)) == 2
    assert _flags(model) == before


def test_seeded_repeats_draws_and_gives_the_caller_its_state_back():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    outside = (torch.rand(1), np.random.rand(), random.random())
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    with seeded(7):
        first = (torch.rand(3), np.random.rand(3), random.random())
    with seeded(7):
        again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
    assert (torch.rand(1), np.random.rand(), random.random()) == outside


def test_model_device_of_a_model_without_parameters_is_the_cpu():
    assert model_device(nn.ReLU()) == torch.device("cpu")
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")


def test_save_figure_honours_dpi_and_leaves_no_temporary_file(tmp_path):
    figure = Figure(figsize=(2, 1))
    figure.subplots().plot([0, 1])
    assert save_figure(figure, tmp_path / "a.png", dpi=50) is figure
    assert save_figure(figure, None) is figure
    save_figure(figure, tmp_path / "b.png", dpi=100)
    from matplotlib.image import imread

    assert imread(tmp_path / "a.png").shape[:2] == (50, 100)
    assert imread(tmp_path / "b.png").shape[:2] == (100, 200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_write_csv_takes_the_path_first_and_orders_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"b": 2, "a": 1, "extra": 9}], ["a", "b"])
    assert path.read_text().splitlines() == ["a,b", "1,2"]
    assert write_csv(tmp_path / "u.csv", [{"x": 1}]).read_text().splitlines() == ["x", "1"]
