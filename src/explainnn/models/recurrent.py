"""LSTM, GRU and Elman-RNN classifiers over sequences, image rows and tokens.

Input conventions (the same for every cell):

* ``(N, T, F)`` float sequences are read as they are.
* ``(N, C, H, W)`` images are read as a sequence of rows: ``T = H`` time steps of
  ``F = C * W`` features (channels of a row side by side). The reshaping happens
  inside ``forward``, so gradients and attributions taken with respect to the
  input come back in image shape.
* ``(N, L)`` int64 token ids (left-padded with ``pad_index``) go through
  ``self.embedding`` first; ``forward_embedded`` runs the rest of the model from
  embedding space, which attribution methods need for text.

The recurrent layers are one ``torch.nn.LSTM``/``GRU``/``RNN`` (``batch_first``)
stored under the cell's name (``self.lstm``, ``self.gru`` or ``self.rnn``); the
layers of a stack are reported as ``lstm.l0``, ``lstm.l1``, ... after PyTorch's
``weight_ih_l0``, ``weight_hh_l1`` naming (see :meth:`RecurrentClassifier.layer_names`).
The forward is a plain chain of modules without packed sequences, so it traces.
"""

from __future__ import annotations

import torch
from torch import nn

from explainnn.errors import ConfigError, DataError

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
POOLINGS = ("last", "mean", "attention")


def images_as_rows(images: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H, C * W)``: each image row becomes one time step."""
    n, c, h, w = images.shape
    return images.permute(0, 2, 1, 3).reshape(n, h, c * w)


def _positive_int(label: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{label} must be a positive integer; got {value!r}")
    return value


class RecurrentClassifier(nn.Module):
    """A recurrent classifier with ``last``, masked ``mean`` or ``attention`` pooling.

    For token models pass ``vocab_size`` (and ``pad_index``); ``input_size`` is then
    the embedding width and may be left ``None``. Padding positions are excluded
    from mean and attention pooling; with left padding ``last`` is the real last
    token. After a forward pass with attention pooling, ``last_attention`` holds
    the detached ``(N, T)`` weights. ``dropout`` acts between stacked layers and
    before the classifier head.
    """

    def __init__(
        self,
        cell: str,
        input_size: int | None,
        n_classes: int,
        hidden_size: int = 128,
        num_layers: int = 1,
        pooling: str = "last",
        vocab_size: int | None = None,
        embedding_dim: int = 64,
        pad_index: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"unknown cell '{cell}'; valid cells: {', '.join(CELLS)}")
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling '{pooling}'; valid poolings: {', '.join(POOLINGS)}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be a number in [0, 1); got {dropout!r}")
        n_classes = _positive_int("n_classes", n_classes)
        hidden_size = _positive_int("hidden_size", hidden_size)
        num_layers = _positive_int("num_layers", num_layers)

        self.embedding: nn.Embedding | None = None
        self.pad_index: int | None = None
        if vocab_size is not None:
            vocab_size = _positive_int("vocab_size", vocab_size)
            embedding_dim = _positive_int("embedding_dim", embedding_dim)
            if input_size is not None and input_size != embedding_dim:
                raise ConfigError(
                    f"a token model reads its embeddings, so input_size ({input_size}) must "
                    f"be None or equal embedding_dim ({embedding_dim})"
                )
            if isinstance(pad_index, bool) or not isinstance(pad_index, int) or not 0 <= pad_index < vocab_size:
                raise ConfigError(f"pad_index must be in [0, {vocab_size}); got {pad_index!r}")
            self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_index)
            self.pad_index = pad_index
            input_size = embedding_dim
        elif input_size is None:
            raise ConfigError("input_size is required unless vocab_size is given (token models)")
        input_size = _positive_int("input_size", input_size)

        self.cell_type = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.pooling = pooling
        self.n_classes = n_classes
        self.add_module(
            cell,
            CELLS[cell](input_size, hidden_size, num_layers=num_layers, batch_first=True,
                        dropout=dropout if num_layers > 1 else 0.0),
        )
        self.attention = nn.Linear(hidden_size, 1) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, n_classes)
        self.last_attention: torch.Tensor | None = None

    @property
    def recurrent(self) -> nn.LSTM | nn.GRU | nn.RNN:
        """The recurrent module (the one stored as ``self.<cell>``)."""
        return getattr(self, self.cell_type)

    def layer_names(self) -> list[str]:
        """Names of the recurrent layers: ``["lstm"]``, or ``["lstm.l0", "lstm.l1"]`` when stacked."""
        if self.num_layers == 1:
            return [self.cell_type]
        return [f"{self.cell_type}.l{index}" for index in range(self.num_layers)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            if x.dim() != 2 or x.is_floating_point():
                raise DataError(
                    f"this {self.cell_type} token model reads (N, L) integer token ids; "
                    f"got a {x.dtype} tensor of shape {tuple(x.shape)}"
                )
            assert self.pad_index is not None  # set with the embedding
            return self.forward_embedded(self.embedding(x), pad_mask=x == self.pad_index)
        if x.dim() == 4:
            x = images_as_rows(x)
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise DataError(
                f"this {self.cell_type} model reads (N, T, {self.input_size}) sequences or "
                f"(N, C, H, W) images with C*W = {self.input_size}; got shape {tuple(x.shape)}"
            )
        return self.forward_embedded(x)

    def forward_embedded(
        self, embeddings: torch.Tensor, pad_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits from recurrent-input space ``(N, T, input_size)``.

        ``pad_mask`` (bool ``(N, T)``, True at padding) keeps padding out of mean
        and attention pooling.
        """
        outputs = self.recurrent(embeddings)[0]
        keep = None if pad_mask is None else ~pad_mask.to(device=outputs.device, dtype=torch.bool)
        if self.pooling == "last":
            pooled = outputs[:, -1]
        elif self.pooling == "mean":
            if keep is None:
                pooled = outputs.mean(dim=1)
            else:
                weights = keep.to(outputs.dtype).unsqueeze(-1)
                pooled = (outputs * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        else:
            assert self.attention is not None  # built for attention pooling
            scores = self.attention(outputs).squeeze(-1)
            if keep is not None:
                scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=1)
            if keep is not None:
                # An all-padding row gets uniform weights from the softmax; zero them.
                weights = weights * keep.to(weights.dtype)
            self.last_attention = weights.detach()
            pooled = (outputs * weights.unsqueeze(-1)).sum(dim=1)
        return self.fc(self.dropout(pooled))
