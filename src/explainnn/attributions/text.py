"""Attribution methods for token models, and the embedding-space view of such a model.

A token model is any model that reads ``(N, L)`` token ids through an
``nn.Embedding`` (found by :func:`~explainnn.attributions.tokens.token_model`, not
by name). Its token methods return one score per token, ``(N, L)``:

* gradient methods work on the output of the embedding layer (a forward hook
  replaces it, the pattern of captum's ``LayerIntegratedGradients``), with the
  real token ids fed to the model: ``integrated_gradients`` integrates from the
  pad embedding at every position (the zero vector when the model has no pad id),
  summed over the embedding dimension, so a sentence's scores add up to its logit
  change from all-``<pad>``;
  ``gradient_x_input`` and ``gradient_shap`` sum the same way; ``saliency`` and
  ``smoothgrad`` take the L2 norm of the (mean absolute) gradient per token;
* perturbation methods change token ids: ``lime``, ``kernel_shap``, ``occlusion``
  and ``leave_one_out`` put ``replacement`` (default the pad id, which also takes
  the token out of mean/attention pooling; ``info.unk_index`` gives ``<unk>``; a
  model without a pad id needs it)
  where a token is switched off; ``feature_permutation`` swaps tokens between
  sentences of the batch;
  ``likelihood_importance`` deletes and moves tokens;
* ``attention`` reads the weights of a model with ``pooling="attention"``.

Padding is not text: every token method scores pad positions 0.

:class:`EmbeddingSpaceModel` is a recurrent token model (``RecurrentClassifier``,
with ``forward_embedded``) as a function of its embeddings alone, for Quantus,
which perturbs float inputs and cannot handle token ids.
"""

from __future__ import annotations

from typing import Callable

import torch
from captum.attr import InputXGradient, KernelShap, Occlusion, Saliency
from torch import Tensor, nn

from explainnn.attributions.baselines import (
    lime_explainer,
    noisy_baselines,
    positive_int,
    run_feature_permutation,
    run_gradient_shap,
    run_integrated_gradients,
    run_smoothgrad,
    run_surrogate,
)
from explainnn.attributions.masks import occlusion_window, token_mask
from explainnn.attributions.registry import register_method
from explainnn.attributions.tokens import token_model
from explainnn.errors import DataError, UserError

TOKENS = ("tokens",)
COMPONENTS = ("total", "removal", "position")


def pad_index_of(model: nn.Module) -> int:
    """The pad id of a recurrent token model with ``forward_embedded`` (UserError if it is not one)."""
    pad = getattr(model, "pad_index", None)
    if not isinstance(getattr(model, "embedding", None), nn.Embedding) or not isinstance(pad, int):
        raise UserError(
            f"{type(model).__name__} is not a token model: it needs an nn.Embedding 'embedding', "
            "an int 'pad_index' and 'forward_embedded' (a recurrent model built for a token dataset)"
        )
    return pad


class EmbeddingSpaceModel(nn.Module):
    """A token model as a function of its embeddings ``(N, 1, L, E)``, for Quantus.

    Quantus perturbs and re-feeds float arrays with a channel axis, so it explains
    this wrapper on ``embed(tokens)`` (the fake channel axis makes the arrays look
    like ``(N, C, H, W)`` to it). A position counts as padding exactly when its
    vector equals the pad embedding, so replacing a token's vector by the pad
    embedding removes it as ``<pad>`` would. ``reference`` (the "absent" input of
    every method) is the pad embedding; attributions come back as ``(N, 1, L, E)``.
    """

    input_modality = "sequence"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._pad = pad_index_of(model)
        self.model = model

    @property
    def embedding(self) -> nn.Embedding:
        """The token model's ``nn.Embedding`` (checked by :func:`pad_index_of`)."""
        embedding = self.model.embedding
        assert isinstance(embedding, nn.Embedding)
        return embedding

    @property
    def pad_embedding(self) -> Tensor:
        return self.embedding.weight[self._pad].detach()

    def embed(self, tokens: Tensor) -> Tensor:
        """``(N, L)`` token ids -> ``(N, 1, L, E)`` float embeddings (detached)."""
        weight = self.embedding.weight
        with torch.no_grad():
            return self.embedding(torch.as_tensor(tokens, device=weight.device))[:, None].clone()

    def reference(self, embeddings: Tensor) -> Tensor:
        """The pad embedding at every position."""
        return self.pad_embedding.to(embeddings.dtype).expand_as(embeddings).clone()

    def forward(self, embeddings: Tensor) -> Tensor:
        if embeddings.dim() == 4 and embeddings.shape[1] == 1:
            embeddings = embeddings[:, 0]
        width = self.embedding.embedding_dim
        if embeddings.dim() != 3 or embeddings.shape[-1] != width:
            raise DataError(
                f"EmbeddingSpaceModel reads (N, 1, L, {width}) or (N, L, {width}) embeddings; "
                f"got shape {tuple(embeddings.shape)}"
            )
        pad_mask = (embeddings == self.pad_embedding.to(embeddings.dtype)).all(dim=-1)
        forward_embedded: Callable[..., Tensor] = getattr(self.model, "forward_embedded")
        return forward_embedded(embeddings, pad_mask=pad_mask)


def _target_logits(model: nn.Module, tokens: Tensor, target: Tensor, batch_size: int) -> Tensor:
    """``model(tokens)[i, target[i]]`` in chunks, without autograd."""
    positive_int("batch_size", batch_size)
    parts = []
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            chunk = slice(start, start + batch_size)
            parts.append(model(tokens[chunk]).gather(1, target[chunk, None])[:, 0])
    return torch.cat(parts)


# Gradient methods in embedding space ------------------------------------------------


@register_method("integrated_gradients", modalities=TOKENS)
def integrated_gradients(model: nn.Module, tokens: Tensor, target: Tensor, *, n_steps: int = 64,
                         internal_batch_size: int = 1024) -> Tensor:
    """Integrated Gradients on the embedding output from all-<pad> (zeros without a pad id), summed per token."""
    reader = token_model(model, tokens)
    embeddings = reader.embed(tokens)
    scores = run_integrated_gradients(reader.forward, embeddings, target, reader.reference(embeddings),
                                      n_steps=n_steps, internal_batch_size=internal_batch_size, extra=(tokens,))
    return reader.without_pads(scores.sum(dim=-1), tokens)


@register_method("saliency", modalities=TOKENS)
def saliency(model: nn.Module, tokens: Tensor, target: Tensor) -> Tensor:
    """L2 norm of the target logit's gradient w.r.t. each token's embedding."""
    reader = token_model(model, tokens)
    gradients = Saliency(reader.forward).attribute(
        reader.embed(tokens), target=target, abs=False, additional_forward_args=(tokens,)
    )
    return reader.without_pads(gradients.norm(dim=-1), tokens)


@register_method("smoothgrad", modalities=TOKENS, stochastic=True)
def smoothgrad(model: nn.Module, tokens: Tensor, target: Tensor, *, nt_samples: int = 25,
               noise_level: float = 0.15) -> Tensor:
    """SmoothGrad on the embeddings (noise 0.15 x their range), L2 norm per token."""
    reader = token_model(model, tokens)
    gradients = run_smoothgrad(reader.forward, reader.embed(tokens), target, nt_samples=nt_samples,
                               noise_level=noise_level, extra=(tokens,))
    return reader.without_pads(gradients.norm(dim=-1), tokens)


@register_method("gradient_x_input", modalities=TOKENS)
def gradient_x_input(model: nn.Module, tokens: Tensor, target: Tensor) -> Tensor:
    """Gradient times embedding, summed over the embedding dimension."""
    reader = token_model(model, tokens)
    scores = InputXGradient(reader.forward).attribute(
        reader.embed(tokens), target=target, additional_forward_args=(tokens,)
    )
    return reader.without_pads(scores.sum(dim=-1), tokens)


@register_method("gradient_shap", modalities=TOKENS, stochastic=True)
def gradient_shap(model: nn.Module, tokens: Tensor, target: Tensor, *, n_samples: int = 20,
                  n_baselines: int = 5, baseline_noise: float = 0.15) -> Tensor:
    """GradientSHAP in embedding space from the pad embedding (or zeros) and noisy copies, summed per token."""
    reader = token_model(model, tokens)
    embeddings = reader.embed(tokens)
    baselines = noisy_baselines(reader.reference(embeddings), embeddings, n_baselines, baseline_noise)
    scores = run_gradient_shap(reader.forward, embeddings, target, baselines,
                               n_samples=n_samples, extra=(tokens,))
    return reader.without_pads(scores.sum(dim=-1), tokens)


# Perturbation methods on token ids --------------------------------------------------


def _token_groups(tokens: Tensor, pad: int | None) -> Tensor:
    """One group per real token; all padding shares one group (switching it does nothing)."""
    groups = token_mask(tokens)
    return groups if pad is None else groups.masked_fill(tokens == pad, -1)


@register_method("lime", modalities=TOKENS, stochastic=True, seeded_per_input=True)
def lime(model: nn.Module, tokens: Tensor, target: Tensor, *, n_perturbations: int = 500, alpha: float = 1.0,
         kernel_width: float = 0.25, replacement: int | None = None, perturbations_per_eval: int = 100,
         seed: int = 0) -> Tensor:
    """LIME over tokens (switched-off tokens become <pad>), ridge surrogate (captum Lime).

    Each sentence's switches come from its own generator, seeded from ``seed``
    and the batch's token shape (:func:`~explainnn.attributions.baselines.input_seeds`: every
    sentence meets the same draws): its scores do not depend on the batch it comes in.
    """
    reader = token_model(model, tokens)
    value = reader.replacement(replacement)
    scores = run_surrogate(lime_explainer(model, alpha, kernel_width), tokens, target,
                           _token_groups(tokens, reader.pad), torch.full_like(tokens, value), surrogate="lime", seed=seed,
                           n_perturbations=n_perturbations, perturbations_per_eval=perturbations_per_eval)
    return reader.without_pads(scores.float(), tokens)


@register_method("kernel_shap", modalities=TOKENS, stochastic=True, seeded_per_input=True)
def kernel_shap(model: nn.Module, tokens: Tensor, target: Tensor, *, n_perturbations: int = 500,
                replacement: int | None = None, perturbations_per_eval: int = 100, seed: int = 0) -> Tensor:
    """Kernel SHAP over tokens (switched-off tokens become <pad>; captum KernelShap).

    Seeded per sentence, as :func:`lime`.
    """
    reader = token_model(model, tokens)
    value = reader.replacement(replacement)
    scores = run_surrogate(KernelShap(model), tokens, target, _token_groups(tokens, reader.pad),
                           torch.full_like(tokens, value), surrogate="kernel_shap", seed=seed,
                           n_perturbations=n_perturbations, perturbations_per_eval=perturbations_per_eval)
    return reader.without_pads(scores.float(), tokens)


@register_method("occlusion", modalities=TOKENS)
def occlusion(model: nn.Module, tokens: Tensor, target: Tensor, *, window: int | None = None,
              stride: int | None = None, replacement: int | None = None,
              perturbations_per_eval: int = 64) -> Tensor:
    """Occlusion of ``window`` tokens at a time (default 1) by <pad> (captum Occlusion)."""
    reader = token_model(model, tokens)
    value = reader.replacement(replacement)
    shape, strides = occlusion_window(tokens, "tokens", window, stride)
    scores = Occlusion(model).attribute(
        tokens, sliding_window_shapes=shape, strides=strides, baselines=value, target=target,
        perturbations_per_eval=positive_int("perturbations_per_eval", perturbations_per_eval),
    )
    return reader.without_pads(scores.float(), tokens)


@register_method("feature_permutation", modalities=TOKENS, stochastic=True)
def feature_permutation(model: nn.Module, tokens: Tensor, target: Tensor, *,
                        perturbations_per_eval: int = 16) -> Tensor:
    """Permutation importance of each token position across the batch (captum FeaturePermutation)."""
    scores = run_feature_permutation(model, tokens, target, token_mask(tokens[:1]), perturbations_per_eval)
    return token_model(model, tokens).without_pads(scores.float(), tokens)


@register_method("leave_one_out", modalities=TOKENS)
def leave_one_out(model: nn.Module, tokens: Tensor, target: Tensor, *, replacement: int | None = None,
                  batch_size: int = 512) -> Tensor:
    """Drop of the target logit when each token alone is replaced by <pad>."""
    reader = token_model(model, tokens)
    value = reader.replacement(replacement)
    n, length = tokens.shape
    variants = tokens[:, None, :].repeat(1, length, 1)
    positions = torch.arange(length, device=tokens.device)
    variants[:, positions, positions] = value
    original = _target_logits(model, tokens, target, batch_size)
    changed = _target_logits(model, variants.reshape(n * length, length),
                             target.repeat_interleave(length), batch_size).reshape(n, length)
    return reader.without_pads(original[:, None] - changed, tokens)


def _rearranged(words: Tensor, length: int, pad: int) -> tuple[Tensor, int]:
    """All removals and moves of the real tokens ``words`` (n of them), left-padded to ``length``.

    Rows ``0..n-1`` remove token ``i``; then for each ``i`` come ``n - 1`` rows that
    move it to each other slot ``j != i`` (in increasing ``j``).
    """
    n = len(words)
    rows = []
    for i in range(n):
        rest = torch.cat([words[:i], words[i + 1 :]])
        rows.append(torch.cat([words.new_full((length - n + 1,), pad), rest]))
    for i in range(n):
        rest = torch.cat([words[:i], words[i + 1 :]])
        for j in range(n):
            if j != i:
                moved = torch.cat([rest[:j], words[i : i + 1], rest[j:]])
                rows.append(torch.cat([words.new_full((length - n,), pad), moved]))
    return torch.stack(rows) if rows else words.new_empty((0, length)), n


@register_method("likelihood_importance", modalities=TOKENS)
def likelihood_importance(model: nn.Module, tokens: Tensor, target: Tensor, *, component: str = "total",
                          batch_size: int = 512) -> Tensor:
    """Target-logit change when a token is removed, plus the mean change when it is moved.

    For the real tokens ``w_1..w_n`` of a sample (pads dropped, order kept) and the
    target logit ``z``:

    * ``removal_i = z(w) - z(w without w_i)``, the sequence left-padded again;
    * ``position_i = mean over j != i of z(w) - z(w with w_i moved to slot j)``,
      where moving takes ``w_i`` out and reinserts it so that it becomes the j-th
      real token, the others keeping their order;
    * ``component="total"`` (default) gives ``removal_i + position_i``: how much the
      logit relies on the token being there *and* being where it is;
      ``"removal"`` or ``"position"`` give one part. Costs ``n**2`` forward passes.
    """
    if component not in COMPONENTS:
        raise UserError(f"unknown component '{component}'; valid components: {', '.join(COMPONENTS)}")
    pad = token_model(model, tokens).require_pad("likelihood_importance")
    length = tokens.shape[1]
    original = _target_logits(model, tokens, target, batch_size)
    scores = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    for index in range(len(tokens)):
        real = (tokens[index] != pad).nonzero()[:, 0]
        variants, n = _rearranged(tokens[index, real], length, pad)
        if n == 0:
            continue
        drops = original[index] - _target_logits(model, variants, target[index].expand(len(variants)), batch_size)
        removal = drops[:n]
        position = drops[n:].reshape(n, n - 1).mean(dim=1) if n > 1 else torch.zeros_like(removal)
        parts = {"total": removal + position, "removal": removal, "position": position}
        scores[index, real] = parts[component].float()
    return scores


# Attention --------------------------------------------------------------------------


@register_method("attention")
def attention(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Attention-pooling weights per time step/token (class-independent; needs pooling='attention')."""
    inner = model.model if isinstance(model, EmbeddingSpaceModel) else model
    if getattr(inner, "attention", None) is None or getattr(inner, "pooling", None) != "attention":
        pooling = getattr(inner, "pooling", None)
        described = f"pools with '{pooling}'" if pooling else "has no attention pooling"
        raise UserError(
            f"attention needs a recurrent model built with pooling='attention'; this "
            f"{type(inner).__name__} {described}"
        )
    with torch.no_grad():
        model(inputs)
    weights = inner.last_attention
    assert isinstance(weights, Tensor), "the forward pass with attention pooling sets last_attention"
    if inputs.dim() == 2:
        return weights
    if inputs.dim() == 3:
        return weights[:, :, None].expand_as(inputs)
    return weights[:, None, :, None].expand_as(inputs)
