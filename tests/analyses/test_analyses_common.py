"""What the analyses share: the seeded choice of samples, explanation targets, batched attribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainnn.analyses.common import (
    BATCH,
    as_numpy,
    attribute_in_batches,
    batch_logits,
    check_positive,
    method_list,
    per_step,
    resolve_targets,
    sample_indices,
)
from explainnn.errors import UserError


def test_sample_indices_are_seeded_sorted_and_capped():
    first, again = sample_indices(100, 10, seed=3), sample_indices(100, 10, seed=3)
    assert np.array_equal(first, again) and np.all(np.diff(first) > 0) and len(first) == 10
    assert not np.array_equal(first, sample_indices(100, 10, seed=4))
    assert np.array_equal(sample_indices(5, 10, seed=0), np.arange(5))
    with pytest.raises(UserError, match="no samples"):
        sample_indices(0, 3, seed=0)
    with pytest.raises(UserError, match="n_samples must be a positive integer"):
        sample_indices(10, 0, seed=0)


def test_checks_and_conversions():
    assert check_positive("k", np.int64(3)) == 3
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(UserError, match="k must be a positive integer"):
            check_positive("k", bad)
    assert method_list(["saliency", "lime", "saliency"]) == ["saliency", "lime"]
    with pytest.raises(UserError, match="list of method names"):
        method_list("saliency")
    assert np.array_equal(as_numpy(torch.arange(3)), np.arange(3))


def test_targets_and_logits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    inputs = torch.randn(10, 4)
    logits = batch_logits(model, inputs, batch_size=3)
    assert logits.dtype == np.float64 and np.allclose(logits, model(inputs).detach().double().numpy(), atol=1e-6)
    assert torch.equal(resolve_targets(model, inputs, "predicted"), torch.from_numpy(logits.argmax(1)))
    assert torch.equal(resolve_targets(model, inputs, 2), torch.full((10,), 2))
    assert torch.equal(resolve_targets(model, inputs, np.arange(10) % 3), torch.arange(10) % 3)
    with pytest.raises(UserError, match="one class per sample"):
        resolve_targets(model, inputs, [0, 1])
    with pytest.raises(UserError, match="'predicted'"):
        resolve_targets(model, inputs, "label")


def test_attribution_in_batches_equals_one_call():
    from explainnn.attributions import attribute

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    inputs = torch.randn(BATCH + 5, 2, 4)
    targets = torch.arange(len(inputs)) % 3
    batched = attribute_in_batches("saliency", model, inputs, targets, 0, {}, False)
    whole = np.asarray(attribute(model, inputs, targets, "saliency"))
    assert batched.shape == (BATCH + 5, 2, 4) and np.allclose(batched, whole)


def test_per_step_reduces_each_modality_to_one_value_per_step():
    tokens = np.array([[1.0, -2.0]])
    assert np.array_equal(per_step(tokens, "tokens", magnitude=True), [[1.0, 2.0]])
    sequence = np.array([[[1.0, -1.0], [2.0, 0.5]]])  # (N, T, F)
    assert np.array_equal(per_step(sequence, "sequence", magnitude=True), [[2.0, 2.5]])
    assert np.array_equal(per_step(sequence, "sequence", magnitude=False), [[1.0, 2.0]])
    rows = np.ones((1, 1, 3, 4))  # (N, C, T, W)
    assert np.array_equal(per_step(rows, "image", magnitude=True), [[4.0, 4.0, 4.0]])
