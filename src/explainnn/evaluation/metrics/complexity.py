"""Complexity: Sparseness (Gini index) and Complexity (entropy), declared and batched (float64, on the model's
device)."""

from __future__ import annotations

import numpy as np
import quantus
import torch

from explainnn.evaluation.fast.common import Batch
from explainnn.evaluation.metrics.spec import MetricSpec, register_metric


def _flat(batch: Batch, a: np.ndarray) -> torch.Tensor:
    a = np.broadcast_to(a, batch.x.shape).reshape(len(batch), -1)
    return torch.from_numpy(np.array(a, dtype=np.float64)).to(batch.device)  # a copy: the input may be read-only


def sparseness(batch: Batch, a: np.ndarray) -> np.ndarray:
    """Gini index of the attributions (+1e-7, as Quantus) of each sample (Chalasani et al. 2020): 1 = one feature."""
    values = torch.sort(_flat(batch, a) + 1e-7, dim=1).values
    n = values.shape[1]
    rank = torch.arange(1, n + 1, device=values.device, dtype=values.dtype)
    return (((2 * rank - n - 1) * values).sum(dim=1) / (n * values.sum(dim=1))).cpu().numpy()


def complexity(batch: Batch, a: np.ndarray) -> np.ndarray:
    """Entropy of each sample's shares ``|a_i| / sum |a|`` (Bhatt et al. 2020): low = few features carry it."""
    values = _flat(batch, a)
    shares = values / values.abs().sum(dim=1, keepdim=True)
    return (-(shares * torch.log(shares + 1e-12)).sum(dim=1)).cpu().numpy()


register_metric(MetricSpec("Sparseness", "complexity", quantus.Sparseness, sparseness, note="Gini index of |attribution|"))
register_metric(MetricSpec("Complexity", "complexity", quantus.Complexity, complexity,
                           note="entropy of the |attribution| shares"))
