"""Small transformer classifiers: a text encoder on token ids and a Vision Transformer.

Both are built from PyTorch's own parts: ``nn.TransformerEncoder`` over
``nn.TransformerEncoderLayer`` (``batch_first``, pre-norm, GELU), so every block
is one multi-head self-attention (``self_attn``, an ``nn.MultiheadAttention``)
and one two-layer MLP (``linear1`` -> GELU -> ``linear2``), each with a residual
connection; the encoder's blocks are ``encoder.layers.0``, ``encoder.layers.1``, ...

* :class:`TextTransformer` reads ``(N, L)`` int64 token ids, left-padded with
  ``pad_index`` (the package's token convention), through ``self.embedding``
  (an ``nn.Embedding`` with ``padding_idx``), adds a learned position embedding
  (``self.position``, an ``nn.Embedding`` of positions) and classifies the masked
  mean of the encoder's outputs over the real tokens (``pooling="mean"``) or the
  output at a learned class token prepended to the sequence (``pooling="cls"``).
  Positions count from the first real token and padding is masked out of
  attention and pooling, so the logits of a sentence do not depend on how much
  padding precedes it. ``forward_embedded`` runs the model from embedding space
  (with a ``pad_mask``), which attribution methods need for text.
* :class:`VisionTransformer` reads ``(N, C, H, W)`` images: a ``nn.Conv2d`` with
  kernel and stride ``patch_size`` cuts them into patches (``patch_embedding``),
  a class token and a learned position embedding are added, and the class
  token's output, after a final ``LayerNorm``, goes to the linear ``head``
  (Dosovitskiy et al., 2021). A 28x28 MNIST digit with ``patch_size=7`` is 16
  patches; a 32x32 CIFAR-10 image with ``patch_size=4`` is 64.

The forwards are plain chains of modules and tensor operations (no control flow
on values), so they trace with ``torch.fx``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from explainnn.errors import ConfigError, DataError

TEXT_POOLINGS = ("mean", "cls")


def _positive_int(label: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{label} must be a positive integer; got {value!r}")
    return value


def _check_dropout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"dropout must be a number in [0, 1); got {value!r}")
    return float(value)


def _encoder(d_model: int, num_heads: int, num_layers: int, dim_feedforward: int, dropout: float) -> nn.TransformerEncoder:
    """``num_layers`` pre-norm GELU encoder blocks of width ``d_model`` (checked), ending in a LayerNorm."""
    d_model = _positive_int("d_model", d_model)
    num_heads = _positive_int("num_heads", num_heads)
    num_layers = _positive_int("num_layers", num_layers)
    dim_feedforward = _positive_int("dim_feedforward", dim_feedforward)
    if d_model % num_heads:
        raise ConfigError(f"num_heads ({num_heads}) must divide d_model ({d_model})")
    layer = nn.TransformerEncoderLayer(
        d_model, num_heads, dim_feedforward=dim_feedforward, dropout=dropout, activation="gelu",
        batch_first=True, norm_first=True,
    )
    # enable_nested_tensor only applies to post-norm layers; off, so PyTorch does not warn about it.
    return nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)


# The input checks are leaves of a torch.fx trace (``torch.fx.wrap``): they run on real tensors when the traced
# graph runs, so the forwards trace and the engine's prefix reuse (interventions/fxsplit.py) applies to them.
@torch.fx.wrap
def _token_ids(x: Tensor, max_len: int) -> Tensor:
    if x.dim() != 2 or x.is_floating_point() or x.shape[1] > max_len:
        raise DataError(
            f"this transformer reads (N, L) integer token ids with L <= {max_len}; "
            f"got a {x.dtype} tensor of shape {tuple(x.shape)}"
        )
    return x


@torch.fx.wrap
def _images(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    if x.dim() != 4 or tuple(x.shape[1:]) != shape:
        raise DataError(f"this vision transformer reads (N, {shape[0]}, {shape[1]}, {shape[2]}) images; "
                        f"got shape {tuple(x.shape)}")
    return x


class TextTransformer(nn.Module):
    """A transformer encoder over token ids with masked ``mean`` or ``cls`` pooling.

    ``max_len`` bounds the sentence length (the number of learned positions);
    longer inputs are refused in one line. ``dropout`` acts on the embeddings,
    inside every block and before the head.
    """

    def __init__(
        self,
        vocab_size: int,
        n_classes: int,
        max_len: int,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
        pooling: str = "mean",
        pad_index: int = 0,
    ) -> None:
        super().__init__()
        if pooling not in TEXT_POOLINGS:
            raise ConfigError(f"unknown pooling '{pooling}'; valid poolings: {', '.join(TEXT_POOLINGS)}")
        dropout = _check_dropout(dropout)
        vocab_size = _positive_int("vocab_size", vocab_size)
        n_classes = _positive_int("n_classes", n_classes)
        max_len = _positive_int("max_len", max_len)
        if isinstance(pad_index, bool) or not isinstance(pad_index, int) or not 0 <= pad_index < vocab_size:
            raise ConfigError(f"pad_index must be in [0, {vocab_size}); got {pad_index!r}")
        self.encoder = _encoder(d_model, num_heads, num_layers, dim_feedforward, dropout)
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_index)
        self.position = nn.Embedding(max_len, d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        self.embedding_dropout = nn.Dropout(dropout)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(d_model, n_classes)
        self.pad_index = pad_index
        self.max_len = max_len
        self.pooling = pooling
        self.d_model = d_model
        self.n_classes = n_classes
        nn.init.normal_(self.embedding.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        with torch.no_grad():
            self.embedding.weight[pad_index].zero_()
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        x = _token_ids(x, self.max_len)
        return self.forward_embedded(self.embedding(x), pad_mask=x == self.pad_index)

    def forward_embedded(self, embeddings: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Logits from token-embedding space ``(N, L, d_model)``.

        ``pad_mask`` (bool ``(N, L)``, True at padding) keeps padding out of
        attention and pooling and makes positions count from the first real
        token; without it every position is a token.
        """
        n, length = embeddings.shape[0], embeddings.shape[1]
        if pad_mask is None:
            pad_mask = torch.zeros(n, length, dtype=torch.bool, device=embeddings.device)
        pad_mask = pad_mask.to(device=embeddings.device, dtype=torch.bool)
        keep = ~pad_mask
        # Position of each real token counted from the first one (0, 1, ...); padding reads position 0.
        positions = (torch.cumsum(keep.long(), dim=1) - 1).clamp(min=0)
        hidden = embeddings + self.position(positions)
        if self.cls_token is not None:
            # The class token is one learned vector (its position is part of it), before the first position.
            cls = self.cls_token.expand(n, -1, -1)
            hidden = torch.cat([cls, hidden], dim=1)
            keep = torch.cat([keep.new_ones(n, 1), keep], dim=1)
        # A row of padding only would leave attention nothing to read: it attends to every position instead
        # (its mean pooling below is still zero).
        attend = keep | ~keep.any(dim=1, keepdim=True)
        outputs = self.encoder(self.embedding_dropout(hidden), src_key_padding_mask=~attend)
        if self.cls_token is not None:
            pooled = outputs[:, 0]
        else:
            weights = keep.to(outputs.dtype).unsqueeze(-1)
            pooled = (outputs * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.fc(self.dropout(pooled))


class VisionTransformer(nn.Module):
    """ViT: patches by a strided ``nn.Conv2d``, class token, learned positions, encoder, LayerNorm, head."""

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        n_classes: int,
        patch_size: int = 4,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 4,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        dropout = _check_dropout(dropout)
        in_channels = _positive_int("in_channels", in_channels)
        n_classes = _positive_int("n_classes", n_classes)
        patch_size = _positive_int("patch_size", patch_size)
        height, width = image_size
        if height % patch_size or width % patch_size:
            raise ConfigError(
                f"patch_size {patch_size} must divide the image size {height}x{width} "
                "(e.g. 7 or 4 for 28x28, 4 or 8 for 32x32; data.image_size pads images)"
            )
        self.encoder = _encoder(d_model, num_heads, num_layers, dim_feedforward, dropout)
        self.patch_embedding = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)
        self.n_patches = (height // patch_size) * (width // patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.position = nn.Parameter(torch.zeros(1, self.n_patches + 1, d_model))
        self.embedding_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, n_classes)
        self.in_channels = in_channels
        self.image_size = (height, width)
        self.patch_size = patch_size
        self.d_model = d_model
        self.n_classes = n_classes
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        x = _images(x, (self.in_channels, *self.image_size))
        patches = self.patch_embedding(x).flatten(2).transpose(1, 2)  # (N, patches, d_model)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        hidden = torch.cat([cls, patches], dim=1) + self.position
        outputs = self.encoder(self.embedding_dropout(hidden))
        return self.head(outputs[:, 0])


__all__ = ["TEXT_POOLINGS", "TextTransformer", "VisionTransformer"]
