"""Randomisation, batched: RandomLogit, and the structural similarity (SSIM) it scores with."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from explainnn.errors import ConfigError
from explainnn.evaluation.fast.common import Batch, Explain, chunks, explain_rows


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: torch.Tensor, *, spatial_dims: int,
         win_size: int = 7) -> torch.Tensor:
    """Mean structural similarity of each pair ``a[i]``, ``b[i]`` ``(M, C, *spatial)``, per channel, then averaged.

    The computation of ``skimage.metrics.structural_similarity`` with its
    defaults (uniform ``win_size`` window, sample covariance, K1 = 0.01,
    K2 = 0.03, the map averaged where the window fits), for ``spatial_dims`` 1
    or 2, in float64; ``data_range`` is one value per pair.
    """
    if spatial_dims not in (1, 2):
        raise ConfigError(f"ssim compares 1-D or 2-D maps; got {spatial_dims} spatial dimensions")
    a, b = a.double(), b.double()
    m, channels = a.shape[:2]
    spatial = a.shape[2:]
    pool = F.avg_pool1d if spatial_dims == 1 else F.avg_pool2d
    a, b = a.reshape(m * channels, 1, *spatial), b.reshape(m * channels, 1, *spatial)

    def mean(t: torch.Tensor) -> torch.Tensor:
        return pool(t, win_size, stride=1)

    count = win_size**spatial_dims
    cov_norm = count / (count - 1)
    ux, uy = mean(a), mean(b)
    vx = cov_norm * (mean(a * a) - ux * ux)
    vy = cov_norm * (mean(b * b) - uy * uy)
    vxy = cov_norm * (mean(a * b) - ux * uy)
    scale = data_range.double().to(a.device).repeat_interleave(channels).reshape(-1, *([1] * (spatial_dims + 1)))
    c1, c2 = (0.01 * scale) ** 2, (0.03 * scale) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.reshape(m, channels, -1).mean(dim=(1, 2))


def map_ssim(a: np.ndarray, b: np.ndarray, sample_shape: tuple[int, ...]) -> np.ndarray:
    """SSIM of attribution maps ``(M, features)`` laid out as ``sample_shape`` (channel first).

    The maps are compared as pictures, as the paper does (Sixt et al. 2020): 2-D
    windows over ``(H, W)`` images and ``(T, F)`` sequences, 1-D windows over
    one-feature signals ``(1, T)``; each channel separately, then averaged. The
    window is 7 wide, or the largest odd width that fits. Quantus 0.6 instead
    flattens each map to one long vector and slides a 1-D window over it, so
    its windows run across the ends of image rows. ``data_range`` is the range
    of the pair, as in Quantus.
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.concatenate([a64, b64], axis=1)
    data_range = torch.as_tensor(np.abs(both.max(axis=1) - both.min(axis=1)))
    spatial = tuple(sample_shape[1:])
    win = min(7, min(spatial))
    win -= 1 - win % 2
    shape = (len(a64), sample_shape[0], *spatial)
    if win < 3:
        shape, win = (len(a64), 1, int(np.prod(sample_shape))), min(7, int(np.prod(sample_shape)))
        win -= 1 - win % 2
    ta, tb = torch.as_tensor(a64).reshape(shape), torch.as_tensor(b64).reshape(shape)
    return ssim(ta, tb, data_range, spatial_dims=len(shape) - 2, win_size=win).numpy()


def random_logit(batch: Batch, a: np.ndarray, *, explain: Explain, normalise: bool, abs: bool,
                 num_classes: int = 1000, seed: int = 42, similarity_func: Callable[..., Any] | None = None,
                 softmax: bool = False, batch_size: int = 64) -> np.ndarray:
    """SSIM between the explanation of the target class and of a random other class (Sixt et al. 2020).

    The other classes are drawn as Quantus draws them: ``np.random.seed(seed)``
    at the start of every batch of ``batch_size`` samples, then one
    ``randint(0, num_classes - 1)`` index into the classes other than the target.
    The maps are compared by :func:`map_ssim`, or by ``similarity_func`` when
    given, called as Quantus calls it: ``similarity_func(a, a_off, batched=True)``
    on the flattened maps (tabular rows: one window over all features,
    :class:`~explainnn.evaluation.metrics.WholeMapSSIM`).
    """
    n = len(batch)
    if num_classes < 2:
        raise ConfigError(f"RandomLogit num_classes must be at least 2; got {num_classes}")
    off = np.empty(n, dtype=np.int64)
    for part in chunks(n, batch_size):
        picks = np.random.RandomState(seed).randint(0, num_classes - 1, part.stop - part.start)
        for i, pick in zip(range(part.start, part.stop), picks):
            others = [c for c in range(num_classes) if c != batch.y[i]]
            off[i] = others[pick]
    sizes = [part.stop - part.start for part in chunks(n, batch_size)]
    a_off = explain_rows(batch, explain, batch.x, off, sizes, normalise=normalise, abs=abs)
    a = np.broadcast_to(a, batch.x.shape).reshape(n, -1)
    if similarity_func is not None:
        return np.asarray(similarity_func(a, a_off, batched=True), dtype=np.float64)
    return map_ssim(a, a_off, batch.x.shape[1:])
