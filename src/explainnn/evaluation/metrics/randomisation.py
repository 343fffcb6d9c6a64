"""Randomisation: RandomLogit (batched, with the structural similarity it scores with), MPRT and EfficientMPRT
(Quantus in both engines), declared here."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import quantus
import torch
import torch.nn.functional as F

from explainnn.errors import ConfigError
from explainnn.evaluation.fast.common import Batch, Explain, chunks, explain_rows
from explainnn.evaluation.metrics.spec import MetricContext, MetricSpec, register_metric


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
    window is 7 wide, or the largest odd width that fits. ``data_range`` is the
    range of the pair, as in Quantus. ``sample_shape=(1, features)`` gives
    Quantus 0.6's SSIM: one 1-D window slid over each flattened map.
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


def random_logit(batch: Batch, a: np.ndarray, *, explain: Explain, definitions: str = "quantus", normalise: bool,
                 abs: bool, num_classes: int = 1000, seed: int = 42, similarity_func: Callable[..., Any] | None = None,
                 softmax: bool = False, batch_size: int = 64) -> np.ndarray:
    """SSIM between the explanation of the target class and of a random other class (Sixt et al. 2020).

    The other classes are drawn as Quantus draws them: ``np.random.seed(seed)``
    at the start of every batch of ``batch_size`` samples, then one
    ``randint(0, num_classes - 1)`` index into the classes other than the target.
    The maps are compared by :func:`map_ssim`: as pictures under
    ``definitions="paper"``, flattened to one long vector under ``"quantus"``.
    A ``similarity_func`` replaces it, called as Quantus calls it:
    ``similarity_func(a, a_off, batched=True)`` on the flattened maps (tabular
    rows: one window over all features, :class:`WholeMapSSIM`).
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
    shape = batch.x.shape[1:] if definitions == "paper" else (1, batch.n_features)
    return map_ssim(a, a_off, shape)


class WholeMapSSIM:
    """SSIM of two attribution maps with one window over all their features: Quantus' ``similarity_func``.

    The product of the luminance, contrast and structure terms of SSIM (K1 =
    0.01, K2 = 0.03, sample covariance, ``data_range`` the range of the pair, as
    Quantus' ``ssim``) computed over the whole map at once; equal to scikit-image's
    ``structural_similarity`` with ``win_size`` the number of features. It does
    not depend on the order of the features, so it suits tabular rows, whose
    columns have no neighbours (a sliding window would compare arbitrary groups
    of columns). Called as Quantus calls a similarity function: ``(a, b)`` two
    maps, or ``(a, b, batched=True)`` two ``(M, ...)`` batches of them.
    """

    def __call__(self, a: np.ndarray, b: np.ndarray, batched: bool = False, **kwargs: Any) -> Any:
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if not batched:
            return float(self(a64[None], b64[None], batched=True)[0])
        a64, b64 = a64.reshape(len(a64), -1), b64.reshape(len(b64), -1)
        if a64.shape[1] < 2:
            raise ConfigError(f"RandomLogit's whole-map SSIM needs at least 2 features; got {a64.shape[1]}")
        both = np.concatenate([a64, b64], axis=1)
        data_range = np.abs(both.max(axis=1) - both.min(axis=1))
        ua, ub = a64.mean(axis=1), b64.mean(axis=1)
        va, vb = a64.var(axis=1, ddof=1), b64.var(axis=1, ddof=1)
        cov = ((a64 - ua[:, None]) * (b64 - ub[:, None])).sum(axis=1) / (a64.shape[1] - 1)
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((2 * ua * ub + c1) * (2 * cov + c2)) / ((ua**2 + ub**2 + c1) * (va + vb + c2))

    def __repr__(self) -> str:
        return "whole-map SSIM (one window over all features)"


# Declarations ------------------------------------------------------------------------------


def _random_logit(context: MetricContext) -> dict[str, Any]:
    defaults: dict[str, Any] = {"num_classes": context.n_classes, "seed": context.seed}
    if context.modality == "tabular":
        defaults["similarity_func"] = WholeMapSSIM()
    return defaults


def _seeded(context: MetricContext) -> dict[str, Any]:
    return {"seed": context.seed}


def _mprt(context: MetricContext) -> dict[str, Any]:
    return {"seed": context.seed, "return_last_correlation": True}


register_metric(MetricSpec(
    "RandomLogit", "randomisation", quantus.RandomLogit, random_logit, defaults=_random_logit, min_classes=2,
    note="SSIM between the explanations of the target and of a random other class (tabular rows: one SSIM window "
         "over all features)",
    paper="the two maps are compared as pictures, as in the paper (Sixt et al. 2020): a 7x7 SSIM window over each "
          "channel of an image (a 2-D window over the steps x features of a sequence, a 1-D one over a one-feature "
          "signal). Quantus 0.6 flattens each map to one long vector and slides a 1-D window of 7 over it, so its "
          "windows run across the ends of image rows and compare pixels that are not neighbours. Tabular rows are "
          "compared with one window over all features under both definitions.",
))
register_metric(MetricSpec(
    "EfficientMPRT", "randomisation", quantus.EfficientMPRT, defaults=_seeded,
    note="relative rise of explanation entropy when every layer of a copy of the model is re-initialised",
))
register_metric(MetricSpec(
    "MPRT", "randomisation", quantus.MPRT, defaults=_mprt,
    fixed=("return_last_correlation", "return_average_correlation", "return_sample_correlation"),
    note="Spearman correlation with the explanation of the fully re-initialised copy",
))
