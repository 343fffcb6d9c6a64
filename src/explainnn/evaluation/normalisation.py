"""The one normalisation of attributions every metric and both engines use."""

from __future__ import annotations

from typing import Any

import numpy as np


def normalise_per_sample(a: np.ndarray, normalise_axes: Any = None) -> np.ndarray:
    """Divide each sample of a batch ``(N, ...)`` by its largest absolute value (all-zero samples stay zero).

    ``normalise_axes`` is accepted for Quantus' calling convention and ignored:
    the axes are always every axis but the first.
    """
    a = np.asarray(a)
    scale = np.abs(a).reshape(len(a), -1).max(axis=1) if a.size else np.zeros(len(a))
    scale = np.where(scale > 0, scale, 1.0).reshape((len(a),) + (1,) * (a.ndim - 1))
    return a / scale
