"""Token ids into any model: the ``nn.Embedding`` that reads them, and the model seen from its output.

Token ids are not differentiable, so gradient methods attribute the output of the
embedding layer instead and sum (or take the norm) over the embedding dimension to
get one score per token - the pattern of captum's ``LayerIntegratedGradients``.
:class:`TokenModel` does this for any ``nn.Module`` that reads ``(N, L)`` ids
through an ``nn.Embedding``; nothing else is asked of the model:

* the embedding is found, not named: the model's only ``nn.Embedding``, or the one a
  forward pass feeds the token ids to;
* :meth:`TokenModel.forward` runs the model on the real token ids with a forward
  hook that replaces the embedding's output by the given embeddings, so whatever
  else the model does with the ids (pad masks, lengths) sees the real ones;
* the pad id is the model's ``pad_index`` attribute or the embedding's
  ``padding_idx``; with neither, the reference ("absent" token) is the zero vector
  and no position is treated as padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from explainnn.errors import UserError


@dataclass(frozen=True)
class TokenModel:
    """``model`` as a function of the output of ``embedding``, the layer that reads its token ids."""

    model: nn.Module
    embedding: nn.Embedding
    pad: int | None

    def embed(self, tokens: Tensor) -> Tensor:
        """The embedding's output ``(N, L, E)`` in a forward pass of the model on ``tokens`` (detached)."""
        seen: list[Tensor] = []
        handle = self.embedding.register_forward_hook(lambda module, args, output: seen.append(output.detach()))
        try:
            with torch.no_grad():
                self.model(tokens)
        finally:
            handle.remove()
        self._check_calls(len(seen))
        output = seen[0]
        if output.dim() != 3 or tuple(output.shape[:2]) != tuple(tokens.shape):
            raise UserError(
                f"the embedding {self._label()} returns shape {tuple(output.shape)} for token ids of shape "
                f"{tuple(tokens.shape)}; per-token attributions need one vector per token, (N, L, E)"
            )
        return output.clone()

    def forward(self, embeddings: Tensor, tokens: Tensor) -> Tensor:
        """The model's output for ``tokens`` with the embedding's output replaced by ``embeddings``."""
        calls: list[int] = []

        def replace(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
            calls.append(1)
            self._check_calls(len(calls))
            if output.shape != embeddings.shape:
                raise UserError(
                    f"embeddings of shape {tuple(embeddings.shape)} cannot replace the output "
                    f"{tuple(output.shape)} of the embedding {self._label()}"
                )
            return embeddings.to(output.dtype)

        handle = self.embedding.register_forward_hook(replace)
        try:
            output = self.model(tokens)
        finally:
            handle.remove()
        self._check_calls(len(calls))
        return output

    def reference(self, embeddings: Tensor) -> Tensor:
        """The "absent" input in embedding space: the pad embedding at every position, or zeros without a pad id."""
        if self.pad is None:
            return torch.zeros_like(embeddings)
        vector = self.embedding.weight[self.pad].detach().to(embeddings.dtype)
        return vector.expand_as(embeddings).clone()

    def without_pads(self, scores: Tensor, tokens: Tensor) -> Tensor:
        """``scores`` with pad positions set to 0 (padding is not text); unchanged without a pad id."""
        return scores if self.pad is None else scores.masked_fill(tokens == self.pad, 0.0)

    def require_pad(self, method: str) -> int:
        """The pad id, for methods that cannot work without one."""
        if self.pad is None:
            raise UserError(
                f"{method} needs the pad id of {type(self.model).__name__}: give the model an int "
                "'pad_index' or set padding_idx on its nn.Embedding"
            )
        return self.pad

    def replacement(self, replacement: int | None) -> int:
        """The token id that switches a token off: ``replacement``, by default the pad id."""
        if replacement is None:
            if self.pad is None:
                raise UserError(
                    f"{type(self.model).__name__} has no pad id (no int 'pad_index', no padding_idx on its "
                    "nn.Embedding), so switched-off tokens need an id: pass replacement=<token id>"
                )
            return self.pad
        size = self.embedding.num_embeddings
        if isinstance(replacement, bool) or not isinstance(replacement, int) or not 0 <= replacement < size:
            raise UserError(f"replacement must be a token id in 0..{size - 1}; got {replacement!r}")
        return replacement

    def _check_calls(self, calls: int) -> None:
        if calls != 1:
            happened = "is not called" if calls == 0 else "is called more than once"
            raise UserError(
                f"the embedding {self._label()} {happened} in a forward pass of {type(self.model).__name__}; "
                "per-token attributions need one embedding lookup of the token ids"
            )

    def _label(self) -> str:
        return next((f"'{n}'" for n, m in self.model.named_modules() if m is self.embedding), "layer")


def token_model(model: nn.Module, tokens: Tensor) -> TokenModel:
    """The :class:`TokenModel` of ``model`` for ``(N, L)`` token ids (UserError without an nn.Embedding)."""
    embeddings = [module for module in model.modules() if isinstance(module, nn.Embedding)]
    if not embeddings:
        raise UserError(f"{type(model).__name__} has no nn.Embedding layer to read token ids")
    embedding = embeddings[0] if len(embeddings) == 1 else _reader(model, embeddings, tokens)
    pad = getattr(model, "pad_index", None)
    if isinstance(pad, bool) or not isinstance(pad, int):
        pad = embedding.padding_idx
    return TokenModel(model, embedding, pad)


def _reader(model: nn.Module, embeddings: list[nn.Embedding], tokens: Tensor) -> nn.Embedding:
    """The first of several embeddings that a forward pass feeds ``tokens`` to."""
    sample = tokens[:1]
    fed: list[nn.Embedding] = []

    def record(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor) and args[0].shape == sample.shape and torch.equal(args[0], sample):
            assert isinstance(module, nn.Embedding)
            fed.append(module)

    handles = [embedding.register_forward_pre_hook(record) for embedding in embeddings]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    if not fed:
        raise UserError(
            f"none of the {len(embeddings)} nn.Embedding layers of {type(model).__name__} reads the token ids "
            "themselves; per-token attributions need the embedding that does"
        )
    return fed[0]


__all__ = ["TokenModel", "token_model"]
