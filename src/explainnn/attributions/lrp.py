"""Layer-wise relevance propagation through recurrent classifiers, and sensitivity analysis.

``lrp`` decomposes the target logit of a :class:`~explainnn.models.RecurrentClassifier`
(LSTM, GRU or Elman RNN cells, any number of stacked layers, ``last``, ``mean`` or
``attention`` pooling) into relevance scores of the input elements, following
Arras et al. (2017), "Explaining Recurrent Neural Network Predictions in Sentiment
Analysis". It runs the network forward itself from the torch module's weights (in
float64, checked against the module's own logits) and then backward with two rules:

* **epsilon rule** for every linear map ``z_k = sum_j a_j w_jk + b_k`` (the head, the
  pooling sums, the cell's input pre-activation, the elementwise sums of the cell
  state): ``R_j = sum_k (a_j w_jk + delta (b_k + eps s_k) / M) / (z_k + eps s_k) R_k``
  with ``s_k = sign(z_k)`` (+1 at 0) and ``M`` the number of inputs of ``z_k``.
  ``bias_relevance=False`` (the default) is ``delta = 1``: the bias's and the
  stabiliser's share is handed on to the inputs in equal parts, so relevance is
  conserved exactly, whatever ``epsilon``. ``bias_relevance=True`` is ``delta = 0``,
  the setting Arras et al. recommend: biases and the stabiliser absorb their share
  and the inputs receive only what they contributed. Under ``delta = 1`` an input
  element equal to 0 still receives its equal part of the biases' share.
* **signal-take-all** for products of a gate and a signal: the gate is treated as a
  fixed weight and gets no relevance; the signal gets all of it.

  - LSTM (PyTorch gate order i, f, g, o): ``h_t = o * tanh(c_t)`` hands ``R(h_t)`` to
    ``c_t`` whole; ``c_t = f * c_{t-1} + i * g`` is an elementwise sum split by the
    epsilon rule between ``c_{t-1}`` and the candidate ``g``; ``g = tanh(W_ig x_t +
    W_hg h_{t-1} + b)`` passes its relevance to its pre-activation and on to
    ``x_t`` and ``h_{t-1}`` by the epsilon rule. Gates ``i, f, o`` get none.
  - GRU (gate order r, z, n): ``h_t = (1 - z) * n + z * h_{t-1}`` is an elementwise
    sum split between the candidate ``n`` and ``h_{t-1}``; ``n = tanh(W_in x_t + b_in
    + r * (W_hn h_{t-1} + b_hn))`` is a linear map of ``x_t`` and ``h_{t-1}`` with the
    reset gate folded into the weights (``r * W_hn``) and the bias (``b_in + r * b_hn``).
    Gates ``r, z`` get none.
  - Elman RNN: ``h_t = tanh(W_ih x_t + W_hh h_{t-1} + b)`` (or ReLU), one linear map.
  - Pooling: ``mean`` is a linear sum over time; ``attention`` weights are gates
    (no relevance to the attention scores). Elementwise activations pass relevance
    through unchanged.

The relevance starts as the target logit. The zero initial states of the recurrence
are inputs of the first step too, so under ``delta = 1`` they receive equal parts of
its bias share: ``input + initial_state + bias + stabiliser == logit`` holds exactly
(see :class:`Relevance`), and the last two vanish for ``delta = 1``. Images are read
as rows, as the model does, and relevance comes back in image shape; for token
models a token's relevance is the sum over its embedding and padding scores 0.

``sensitivity`` is the sensitivity analysis of the same work: the squared gradient
of the target logit per input element (per token: the squared L2 norm of the
gradient on its embedding). It ranks elements exactly as ``saliency`` (``|grad|``)
does but weighs them differently, which matters for relevance shares.

Guided backpropagation is not offered for recurrent models: it only changes the
backward pass of ReLUs, and LSTM/GRU cells have none (their tanh and sigmoid
gates leave nothing to guide), so ``guided_backprop`` stays feed-forward only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from captum.attr import Saliency
from torch import Tensor, nn

from explainnn.attributions.registry import register_method
from explainnn.attributions.text import EmbeddingSpaceModel, pad_index_of
from explainnn.attributions.tokens import token_model
from explainnn.errors import UserError
from explainnn.models.recurrent import RecurrentClassifier, images_as_rows

CHECK_TOLERANCE = 1e-3
"""Largest difference (absolute, plus the same relative) allowed between LRP's own
forward pass (float64) and the module's logits before LRP refuses the model."""


@dataclass(frozen=True)
class Relevance:
    """LRP's decomposition of the target logits of a batch (float64, on the model's device).

    ``inputs`` is the relevance of the recurrent input ``(N, T, F)`` (embeddings for
    token models); ``logits`` the target logits of LRP's own forward pass (equal to
    the module's); ``initial_state``, ``bias`` and ``stabiliser`` ``(N,)`` the
    relevance that went to the zero initial states, the biases and epsilon, so
    ``inputs.sum((1, 2)) + initial_state + bias + stabiliser == logits``.
    """

    inputs: Tensor
    logits: Tensor
    initial_state: Tensor
    bias: Tensor
    stabiliser: Tensor

    def residual(self) -> Tensor:
        """``logits`` minus every share of relevance, per sample: 0 up to rounding."""
        return self.logits - self.inputs.sum(dim=(1, 2)) - self.initial_state - self.bias - self.stabiliser


class _Ledger:
    """Per-sample relevance absorbed outside the inputs while propagating backward."""

    def __init__(self, n: int, like: Tensor) -> None:
        self.bias = like.new_zeros(n)
        self.stabiliser = like.new_zeros(n)
        self.initial_state = like.new_zeros(n)


class _Rule:
    """The epsilon rule; the bias and stabiliser share is handed on to the inputs or absorbed."""

    def __init__(self, epsilon: float, bias_relevance: bool, ledger: _Ledger) -> None:
        self.epsilon = epsilon
        self.hand_on = not bias_relevance
        self.ledger = ledger

    def stabilised(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``z + eps sign(z)`` and ``eps sign(z)`` (sign +1 at 0)."""
        shift = torch.where(z >= 0, self.epsilon, -self.epsilon).to(z.dtype)
        return z + shift, shift

    def linear(self, relevance: Tensor, z: Tensor, bias: Tensor, n_inputs: int) -> tuple[Tensor, Tensor]:
        """Scale ``s = R / (z + eps sign(z))`` per output unit, and the equal share every input gets.

        An input ``a_j`` of the map then receives ``a_j * (s @ W)_j + share``; the
        caller does the product since the weights differ (gated, split x/h parts).
        """
        denominator, shift = self.stabilised(z)
        scale = relevance / denominator
        if self.hand_on:
            return scale, ((bias + shift) * scale).sum(dim=-1, keepdim=True) / n_inputs
        self.ledger.bias += (bias * scale).sum(dim=-1)
        self.ledger.stabiliser += (shift * scale).sum(dim=-1)
        return scale, scale.new_zeros(*scale.shape[:-1], 1)

    def _sum(self, relevance: Tensor, total: Tensor, n_terms: int) -> tuple[Tensor, Tensor]:
        """Scale and per-term share for a sum of ``n_terms`` terms without bias."""
        denominator, shift = self.stabilised(total)
        scale = relevance / denominator
        if self.hand_on:
            return scale, shift / n_terms
        self.ledger.stabiliser += (shift * scale).sum(dim=-1)
        return scale, torch.zeros_like(shift)

    def split(self, relevance: Tensor, terms: tuple[Tensor, ...], total: Tensor) -> list[Tensor]:
        """Epsilon rule for an elementwise sum ``total = sum(terms)``."""
        scale, share = self._sum(relevance, total, len(terms))
        return [(term + share) * scale for term in terms]

    def pooled(self, relevance: Tensor, weights: Tensor, outputs: Tensor) -> Tensor:
        """Epsilon rule for ``pooled = sum_t weights_t * outputs_t`` -> relevance ``(N, T, H)``."""
        terms = weights[..., None] * outputs
        scale, share = self._sum(relevance, terms.sum(dim=1), outputs.shape[1])
        return (terms + share[:, None]) * scale[:, None]


def _parameters(module: nn.RNNBase, layer: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w_ih = getattr(module, f"weight_ih_l{layer}").detach().to(dtype)
    w_hh = getattr(module, f"weight_hh_l{layer}").detach().to(dtype)
    if module.bias:
        b_ih = getattr(module, f"bias_ih_l{layer}").detach().to(dtype)
        b_hh = getattr(module, f"bias_hh_l{layer}").detach().to(dtype)
    else:
        b_ih, b_hh = w_ih.new_zeros(len(w_ih)), w_hh.new_zeros(len(w_hh))
    return w_ih, w_hh, b_ih, b_hh


class _Layer:
    """One recurrent layer: its forward pass (keeping what LRP needs) and relevance backward."""

    def __init__(self, cell: str, module: nn.RNNBase, layer: int, dtype: torch.dtype) -> None:
        self.cell = cell
        self.w_ih, self.w_hh, self.b_ih, self.b_hh = _parameters(module, layer, dtype)
        self.hidden = module.hidden_size
        self.activation = torch.relu if getattr(module, "nonlinearity", "tanh") == "relu" else torch.tanh

    def _block(self, tensor: Tensor, index: int) -> Tensor:
        """Gate ``index`` of stacked gate values (last axis) or of a 1-D bias."""
        return tensor[..., index * self.hidden : (index + 1) * self.hidden]

    def _rows(self, weight: Tensor, index: int) -> Tensor:
        """Gate ``index`` of a stacked ``(gates * H, D)`` weight matrix."""
        return weight[index * self.hidden : (index + 1) * self.hidden]

    def forward(self, x: Tensor) -> Tensor:
        """Outputs ``(N, T, H)`` from inputs ``(N, T, D)``, zero initial state."""
        n, steps, _ = x.shape
        self.x = x
        h = x.new_zeros(n, self.hidden)
        c = x.new_zeros(n, self.hidden)
        projected = x @ self.w_ih.T + self.b_ih
        self.trace: list[dict[str, Tensor]] = []
        outputs = []
        for t in range(steps):
            recurrent = h @ self.w_hh.T + self.b_hh
            if self.cell == "lstm":
                pre = projected[:, t] + recurrent
                i, f, o = (torch.sigmoid(self._block(pre, k)) for k in (0, 1, 3))
                a = self._block(pre, 2)
                g = torch.tanh(a)
                kept, written = f * c, i * g
                c_new = kept + written
                self.trace.append({"h": h, "a": a, "kept": kept, "written": written, "c": c_new})
                c, h = c_new, o * torch.tanh(c_new)
            elif self.cell == "gru":
                r = torch.sigmoid(self._block(projected[:, t], 0) + self._block(recurrent, 0))
                z = torch.sigmoid(self._block(projected[:, t], 1) + self._block(recurrent, 1))
                a = self._block(projected[:, t], 2) + r * self._block(recurrent, 2)
                n_gate = torch.tanh(a)
                candidate, carried = (1 - z) * n_gate, z * h
                h_new = candidate + carried
                self.trace.append({"h": h, "a": a, "r": r, "candidate": candidate, "carried": carried,
                                   "h_new": h_new})
                h = h_new
            else:
                a = projected[:, t] + recurrent
                self.trace.append({"h": h, "a": a})
                h = self.activation(a)
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    def backward(self, relevance: Tensor, rule: _Rule) -> Tensor:
        """Relevance of the layer's inputs ``(N, T, D)`` from that of its outputs ``(N, T, H)``."""
        n, steps, width = self.x.shape
        n_inputs = width + self.hidden
        scales, shares = [], []
        r_h = relevance.new_zeros(n, self.hidden)
        r_c = relevance.new_zeros(n, self.hidden)
        candidate = {"lstm": 2, "gru": 2, "rnn": 0}[self.cell]
        w_x, w_h = self._rows(self.w_ih, candidate), self._rows(self.w_hh, candidate)
        b_x, b_h = self._block(self.b_ih, candidate), self._block(self.b_hh, candidate)
        bias = b_x + b_h
        for t in reversed(range(steps)):
            step = self.trace[t]
            r_out = relevance[:, t] + r_h
            if self.cell == "lstm":
                r_cell = r_c + r_out
                r_c, r_candidate = rule.split(r_cell, (step["kept"], step["written"]), step["c"])
                scale, share = rule.linear(r_candidate, step["a"], bias, n_inputs)
                r_h = step["h"] * (scale @ w_h) + share
            elif self.cell == "gru":
                r_candidate, r_carried = rule.split(r_out, (step["candidate"], step["carried"]), step["h_new"])
                scale, share = rule.linear(r_candidate, step["a"], b_x + step["r"] * b_h, n_inputs)
                r_h = r_carried + step["h"] * ((scale * step["r"]) @ w_h) + share
            else:
                scale, share = rule.linear(r_out, step["a"], bias, n_inputs)
                r_h = step["h"] * (scale @ w_h) + share
            scales.append(scale)
            shares.append(share)
        rule.ledger.initial_state += r_h.sum(dim=-1) + r_c.sum(dim=-1)
        scales.reverse()
        shares.reverse()
        return self.x * (torch.stack(scales, dim=1) @ w_x) + torch.stack(shares, dim=1)


def _recurrent_parts(model: nn.Module) -> tuple[RecurrentClassifier, nn.RNNBase]:
    """The model and its recurrent module, if LRP can propagate through them (UserError if not)."""
    if not isinstance(model, RecurrentClassifier):
        raise UserError(
            f"lrp explains RecurrentClassifier models (lstm, gru, rnn); got {type(model).__name__} "
            "(for feed-forward models such as lenet use deeplift or guided_backprop)"
        )
    module = model.recurrent
    if module.bidirectional or module.proj_size or not module.batch_first:
        raise UserError(
            f"lrp supports unidirectional batch-first {model.cell_type} layers without projection; "
            f"this one has bidirectional={module.bidirectional}, proj_size={module.proj_size}, "
            f"batch_first={module.batch_first}"
        )
    return model, module


def _pooling_weights(model: RecurrentClassifier, outputs: Tensor, pad_mask: Tensor | None) -> Tensor:
    """The weights ``(N, T)`` of ``pooled = sum_t w_t h_t`` for mean and attention pooling."""
    keep = (torch.ones(outputs.shape[:2], dtype=torch.bool, device=outputs.device) if pad_mask is None
            else ~pad_mask.to(device=outputs.device, dtype=torch.bool))
    weights = keep.to(outputs.dtype)
    if model.pooling == "mean":
        return weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
    attention = model.attention
    assert attention is not None  # pooling == "attention"
    scores = outputs @ attention.weight.detach().to(outputs.dtype)[0] + attention.bias.detach().to(outputs.dtype)
    scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=1) * weights


def lrp_relevance(model: nn.Module, sequence: Tensor, target: Tensor, *, pad_mask: Tensor | None = None,
                  epsilon: float = 1e-3, bias_relevance: bool = False) -> Relevance:
    """LRP of the ``target`` logits of ``model`` for recurrent inputs ``sequence`` ``(N, T, F)``.

    ``sequence`` is what the recurrent layers read (image rows, or embeddings with
    ``pad_mask`` True at padding for token models). Raises UserError when LRP's
    own forward pass does not reproduce the model's logits (e.g. dropout active in
    training mode, or a subclass with a different forward).
    """
    model, module = _recurrent_parts(model)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise UserError(f"epsilon must be a positive number; got {epsilon!r}")
    if not isinstance(bias_relevance, bool):
        raise UserError(f"bias_relevance must be true or false; got {bias_relevance!r}")
    dtype = torch.float64
    x = sequence.detach().to(dtype)
    layers = [_Layer(model.cell_type, module, k, dtype) for k in range(model.num_layers)]
    with torch.no_grad():
        outputs = x
        for layer in layers:
            outputs = layer.forward(outputs)
        weights = None
        if model.pooling == "last":
            pooled = outputs[:, -1]
        else:
            weights = _pooling_weights(model, outputs, pad_mask)
            pooled = (weights[..., None] * outputs).sum(dim=1)
        head_w, head_b = model.fc.weight.detach().to(dtype), model.fc.bias.detach().to(dtype)
        logits = pooled @ head_w.T + head_b
        _check_forward(model, logits, sequence, pad_mask)

        rows = torch.arange(len(x), device=x.device)
        target_logits = logits[rows, target]
        ledger = _Ledger(len(x), x)
        rule = _Rule(float(epsilon), bias_relevance, ledger)
        weight, bias = head_w[target], head_b[target]
        scale, share = rule.linear(target_logits[:, None], target_logits[:, None], bias[:, None], model.hidden_size)
        r_pooled = pooled * weight * scale + share
        if weights is None:
            relevance = torch.zeros_like(outputs)
            relevance[:, -1] = r_pooled
        else:
            relevance = rule.pooled(r_pooled, weights, outputs)
        for layer in reversed(layers):
            relevance = layer.backward(relevance, rule)
    return Relevance(relevance, target_logits, ledger.initial_state, ledger.bias, ledger.stabiliser)


def _check_forward(model: RecurrentClassifier, logits: Tensor, sequence: Tensor, pad_mask: Tensor | None) -> None:
    expected = model.forward_embedded(sequence, pad_mask=pad_mask).detach().to(logits.dtype)
    gap = float((logits - expected).abs().max())
    if gap > CHECK_TOLERANCE * (1.0 + float(expected.abs().max())):
        hint = " (the model is in training mode: call model.eval())" if model.training else ""
        raise UserError(
            f"lrp's forward pass differs from {type(model).__name__}'s by {gap:.3g}{hint}; lrp "
            "reproduces RecurrentClassifier's stack of nn.LSTM/GRU/RNN layers, pooling and linear head only"
        )


# Registered implementations ---------------------------------------------------------


def _in_model_space(model: nn.Module, embeddings: Tensor) -> tuple[nn.Module, Tensor | None]:
    """Unwrap :class:`EmbeddingSpaceModel` (Quantus' view of token models) with its pad mask."""
    if isinstance(model, EmbeddingSpaceModel):
        pad = model.pad_embedding.to(device=embeddings.device, dtype=embeddings.dtype)
        return model.model, (embeddings == pad).all(dim=-1)
    return model, None


@register_method("lrp", modalities=("image",))
def lrp_image(model: nn.Module, inputs: Tensor, target: Tensor, *, epsilon: float = 1e-3,
              bias_relevance: bool = False) -> Tensor:
    """LRP for LSTM/GRU/RNN classifiers (Arras et al. 2017: epsilon rule, signal-take-all gates)."""
    n, c, h, w = inputs.shape
    relevance = lrp_relevance(model, images_as_rows(inputs), target, epsilon=epsilon,
                              bias_relevance=bias_relevance).inputs
    return relevance.reshape(n, h, c, w).permute(0, 2, 1, 3).to(inputs.dtype)


@register_method("lrp", modalities=("sequence",))
def lrp_sequence(model: nn.Module, inputs: Tensor, target: Tensor, *, epsilon: float = 1e-3,
                 bias_relevance: bool = False) -> Tensor:
    """LRP for LSTM/GRU/RNN classifiers (Arras et al. 2017: epsilon rule, signal-take-all gates)."""
    model, pad_mask = _in_model_space(model, inputs)
    relevance = lrp_relevance(model, inputs, target, pad_mask=pad_mask, epsilon=epsilon,
                              bias_relevance=bias_relevance).inputs
    return relevance.to(inputs.dtype)


@register_method("lrp", modalities=("tokens",))
def lrp_tokens(model: nn.Module, tokens: Tensor, target: Tensor, *, epsilon: float = 1e-3,
               bias_relevance: bool = False) -> Tensor:
    """LRP relevance of each token's embedding, summed over the embedding dimension."""
    pad = pad_index_of(model)
    pad_mask = tokens == pad
    embedding = getattr(model, "embedding")  # checked by pad_index_of
    assert isinstance(embedding, nn.Embedding)
    with torch.no_grad():
        embeddings = embedding(tokens)
    relevance = lrp_relevance(model, embeddings, target, pad_mask=pad_mask, epsilon=epsilon,
                              bias_relevance=bias_relevance).inputs
    return relevance.sum(dim=-1).masked_fill(pad_mask, 0.0).float()


@register_method("sensitivity", modalities=("image", "sequence"))
def sensitivity(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Sensitivity analysis: squared gradient of the target logit (saliency is its square root)."""
    return Saliency(model).attribute(inputs, target=target, abs=False).square()


@register_method("sensitivity", modalities=("tokens",))
def sensitivity_tokens(model: nn.Module, tokens: Tensor, target: Tensor) -> Tensor:
    """Squared L2 norm of the target logit's gradient w.r.t. each token's embedding."""
    reader = token_model(model, tokens)
    gradients = Saliency(reader.forward).attribute(
        reader.embed(tokens), target=target, abs=False, additional_forward_args=(tokens,)
    )
    return reader.without_pads(gradients.square().sum(dim=-1), tokens)
