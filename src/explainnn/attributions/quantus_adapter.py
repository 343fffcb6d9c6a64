"""Attribution methods as Quantus ``explain_func`` callables.

Quantus metrics call ``explain_func(model=..., inputs=x_batch, targets=y_batch,
**explain_func_kwargs)`` with numpy arrays, after adding ``device`` to the kwargs
(and ``quantus.evaluate`` adds ``method``). Its inputs always carry a channel axis:

* images: ``(N, C, H, W)``, explained as they are;
* sequences, two ways. As one-channel pictures ``(N, 1, T, F)``: pass
  ``modality="sequence"`` so they are explained as ``(N, T, F)`` sequences (one
  feature group per time step) and returned as ``(N, 1, T, F)``; recurrent models
  read this layout directly. Quantus' shape check rejects it when ``F == 1``
  (it drops size-1 axes before comparing), so one-feature signals such as
  MNIST-1D go as channel-first signals ``(N, F, T)``: wrap the model in
  :class:`ChannelFirstSequenceModel` and give Quantus ``x.transpose(1, 2)``;
  attributions come back ``(N, F, T)``. Call metrics with ``channel_first=True``;
* tokens: Quantus cannot perturb token ids, so wrap the model in
  :class:`EmbeddingSpaceModel` and give Quantus ``wrapper.embed(tokens)``, float
  ``(N, 1, L, E)``; attributions are then per embedding element, ``(N, 1, L, E)``.

Example::

    wrapper = EmbeddingSpaceModel(model)
    x = wrapper.embed(tokens).cpu().numpy()
    metric(model=wrapper, x_batch=x, y_batch=labels, a_batch=None, channel_first=True,
           explain_func=explain_func("saliency"), device="cpu")
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from explainnn.attributions.registry import METHODS, attribute, method_info
from explainnn.attributions.text import EmbeddingSpaceModel
from explainnn.errors import DataError, UserError


class ChannelFirstSequenceModel(nn.Module):
    """A sequence model fed channel-first signals ``(N, F, T)``, Quantus' time-series layout."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        if signals.dim() != 3:
            raise DataError(f"ChannelFirstSequenceModel reads (N, F, T) signals; got shape {tuple(signals.shape)}")
        return self.model(signals.transpose(1, 2))


def explain_func(method: str, **fixed_options: Any) -> Callable[..., np.ndarray]:
    """A Quantus-style ``f(model, inputs, targets, **kwargs) -> np.ndarray`` for ``method``.

    ``fixed_options`` are options of :func:`explainnn.attributions.attribute`
    (``seed``, ``modality``, ``n_perturbations``, ``graph``, ...), checked on the first
    call. Call-time kwargs that are options of the method override them; anything
    else Quantus passes (``device``, ``channel_first``, ``method``, ``softmax``,
    ...) is ignored: the model keeps its device and outputs are logits.

    The function's ``deterministic`` attribute says whether its attributions of
    a sample are the same in any batch (no random draws or draws seeded per
    input, as LIME's and KernelSHAP's: :attr:`MethodInfo.deterministic`; no batch
    statistics), so callers may batch its inputs as they like.
    """
    info = method_info(method)
    known = set(info.options()) | {"graph"}
    unknown = sorted(set(fixed_options) - known)
    if unknown:
        raise UserError(
            f"unknown option '{unknown[0]}' for attribution method '{method}'; valid options: "
            f"{', '.join(sorted(known))}"
        )

    def explain(model: nn.Module, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        options = {**fixed_options, **{k: v for k, v in kwargs.items() if k in known}}
        graph = options.pop("graph", None)
        batch = inputs if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
        labels = targets if isinstance(targets, torch.Tensor) else np.asarray(targets)
        if isinstance(model, ChannelFirstSequenceModel):
            if batch.ndim != 3:
                raise UserError(f"ChannelFirstSequenceModel explains (N, F, T) signals; got shape {tuple(batch.shape)}")
            steps = batch.transpose(1, 2) if isinstance(batch, torch.Tensor) else batch.transpose(0, 2, 1)
            scores = attribute(model.model, steps, labels, method, graph=graph, **options)
            return np.ascontiguousarray(scores.transpose(0, 2, 1))
        return attribute(model, batch, labels, method, graph=graph, **options)

    base = fixed_options.get("base")
    explain.deterministic = info.deterministic and (  # type: ignore[attr-defined]
        not isinstance(base, str) or base not in METHODS or METHODS[base].deterministic)
    explain.__name__ = f"explain_{method}"
    explain.__doc__ = f"Quantus explain_func for attribution method '{method}' (explainnn)."
    return explain


__all__ = ["ChannelFirstSequenceModel", "EmbeddingSpaceModel", "explain_func"]
