"""The standard attribution methods for images and sequences, all from captum.

Every method attributes the target logit (not a probability, so scores are not
squashed by the softmax) with respect to the input elements. The reference input
("absent" signal) is zeros, which is black for MNIST-style images and silence for
sequences; a model may define ``reference(inputs)`` to say otherwise
(:class:`~explainnn.attributions.text.EmbeddingSpaceModel` answers with the pad
embedding). Recurrent models over image rows are explained as images: the
attributions are the time-step x feature picture.

The ``run_*`` helpers take any forward function plus extra forward arguments, so
the token methods in :mod:`explainnn.attributions.text` reuse them in embedding
space.
"""

from __future__ import annotations

from typing import Callable

import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import (
    DeepLift,
    FeaturePermutation,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    Lime,
    Occlusion,
    Saliency,
)
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from explainnn.attributions.masks import feature_mask, occlusion_window, patch_mask, time_step_mask
from explainnn.attributions.registry import register_method
from explainnn.errors import UserError

Forward = Callable[..., Tensor]
FLOAT_INPUTS = ("image", "sequence", "tabular")
"""Modalities of float inputs: images, sequences and tabular (N, F) rows (one group per feature)."""


def reference(model: nn.Module, inputs: Tensor) -> Tensor:
    """The model's "absent input": ``model.reference(inputs)`` if it defines one, else zeros."""
    custom = getattr(model, "reference", None)
    return custom(inputs) if callable(custom) else torch.zeros_like(inputs)


def value_range(inputs: Tensor) -> Tensor:
    """Per-sample ``max - min`` (shape ``(N,)``), the scale for noise levels."""
    flat = inputs.detach().reshape(len(inputs), -1)
    return flat.max(dim=1).values - flat.min(dim=1).values


def positive_int(label: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{label} must be a positive integer; got {value!r}")
    return value


def non_negative(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise UserError(f"{label} must be a non-negative number; got {value!r}")
    return float(value)


# Gradient methods -------------------------------------------------------------------


def run_integrated_gradients(forward: Forward, inputs: Tensor, target: Tensor, baselines: Tensor, *,
                             n_steps: int, internal_batch_size: int, extra: tuple = ()) -> Tensor:
    positive_int("n_steps", n_steps)
    positive_int("internal_batch_size", internal_batch_size)
    return IntegratedGradients(forward).attribute(
        inputs, baselines=baselines, target=target, additional_forward_args=extra or None,
        n_steps=n_steps, internal_batch_size=max(internal_batch_size, len(inputs)),
    )


SMOOTHGRAD_ROWS = 1024
"""Noisy copies per backward pass of SmoothGrad (all samples' copies share passes; about a thousand rows keep
a small network's activations in cache, which is faster on CPU than larger passes)."""


def run_smoothgrad(forward: Forward, inputs: Tensor, target: Tensor, *, nt_samples: int,
                   noise_level: float, extra: tuple = ()) -> Tensor:
    """Mean |gradient| over noisy copies, noise std = ``noise_level`` x the sample's range.

    The estimator of captum's ``NoiseTunnel(Saliency)`` with ``nt_type="smoothgrad"``
    and ``abs=True``, but every sample gets its own noise scale and the copies of
    all samples go through the model together (in passes of at most
    :data:`SMOOTHGRAD_ROWS` rows) instead of one captum call per sample.
    """
    positive_int("nt_samples", nt_samples)
    non_negative("noise_level", noise_level)
    n = len(inputs)
    scales = value_range(inputs).mul(noise_level).to(inputs.dtype)
    scales = scales.view(n, *([1] * (inputs.dim() - 1))).repeat_interleave(nt_samples, dim=0)
    rows = inputs.detach().repeat_interleave(nt_samples, dim=0)
    noisy = rows + torch.randn_like(rows) * scales
    targets = target.repeat_interleave(nt_samples, dim=0)
    extras = tuple(arg.repeat_interleave(nt_samples, dim=0) for arg in extra)
    saliency = Saliency(forward)
    parts = []
    for first in range(0, len(noisy), SMOOTHGRAD_ROWS):
        part = slice(first, first + SMOOTHGRAD_ROWS)
        parts.append(saliency.attribute(
            noisy[part], target=targets[part], abs=True,
            additional_forward_args=tuple(arg[part] for arg in extras) or None,
        ))
    return torch.cat(parts).view(n, nt_samples, *inputs.shape[1:]).mean(dim=1)


def noisy_baselines(references: Tensor, inputs: Tensor, n_baselines: int, noise_level: float) -> Tensor:
    """The reference of the first sample plus ``n_baselines - 1`` seeded noisy copies of it."""
    positive_int("n_baselines", n_baselines)
    non_negative("baseline_noise", noise_level)
    base = references[:1]
    scale = float(value_range(inputs).max()) * noise_level
    noise = torch.randn((n_baselines - 1, *base.shape[1:]), device=base.device, dtype=base.dtype) * scale
    return torch.cat([base, base + noise])


def run_gradient_shap(forward: Forward, inputs: Tensor, target: Tensor, baselines: Tensor, *,
                      n_samples: int, extra: tuple = ()) -> Tensor:
    positive_int("n_samples", n_samples)
    return GradientShap(forward).attribute(
        inputs, baselines=baselines, target=target, n_samples=n_samples,
        additional_forward_args=extra or None,
    )


@register_method("integrated_gradients", modalities=FLOAT_INPUTS)
def integrated_gradients(model: nn.Module, inputs: Tensor, target: Tensor, *, n_steps: int = 64,
                         internal_batch_size: int = 1024) -> Tensor:
    """Integrated Gradients from the reference (zeros) to the input (captum)."""
    return run_integrated_gradients(model, inputs, target, reference(model, inputs),
                                    n_steps=n_steps, internal_batch_size=internal_batch_size)


@register_method("saliency", modalities=FLOAT_INPUTS)
def saliency(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Absolute gradient of the target logit (captum Saliency)."""
    return Saliency(model).attribute(inputs, target=target, abs=True)


@register_method("smoothgrad", modalities=FLOAT_INPUTS, stochastic=True)
def smoothgrad(model: nn.Module, inputs: Tensor, target: Tensor, *, nt_samples: int = 25,
               noise_level: float = 0.15) -> Tensor:
    """SmoothGrad: Saliency averaged over Gaussian noise of 0.15 x the input range (captum NoiseTunnel)."""
    return run_smoothgrad(model, inputs, target, nt_samples=nt_samples, noise_level=noise_level)


@register_method("gradient_x_input", modalities=FLOAT_INPUTS)
def gradient_x_input(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Gradient times input (captum InputXGradient)."""
    return InputXGradient(model).attribute(inputs, target=target)


@register_method("gradient_shap", modalities=FLOAT_INPUTS, stochastic=True)
def gradient_shap(model: nn.Module, inputs: Tensor, target: Tensor, *, n_samples: int = 20,
                  n_baselines: int = 5, baseline_noise: float = 0.15) -> Tensor:
    """GradientSHAP over the reference and noisy copies of it (captum GradientShap)."""
    baselines = noisy_baselines(reference(model, inputs), inputs, n_baselines, baseline_noise)
    return run_gradient_shap(model, inputs, target, baselines, n_samples=n_samples)


def _supported_by_propagation_rules(method: str, model: nn.Module) -> None:
    recurrent = [type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase)]
    if recurrent:
        raise UserError(
            f"{method} cannot explain {type(model).__name__}: captum cannot look inside "
            f"nn.{recurrent[0]}; it supports feed-forward models such as lenet (conv/linear layers "
            "with nn.ReLU modules)"
        )


@register_method("deeplift", modalities=("image",))
def deeplift(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """DeepLIFT (rescale rule) against the reference (captum DeepLift); feed-forward models only."""
    _supported_by_propagation_rules("deeplift", model)
    return DeepLift(model).attribute(inputs, baselines=reference(model, inputs), target=target)


@register_method("guided_backprop", modalities=("image",))
def guided_backprop(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Guided Backpropagation (captum GuidedBackprop); needs nn.ReLU modules."""
    _supported_by_propagation_rules("guided_backprop", model)
    if not any(isinstance(module, nn.ReLU) for module in model.modules()):
        raise UserError(
            f"guided_backprop needs nn.ReLU modules to guide; {type(model).__name__} has none "
            "(use a model such as lenet)"
        )
    return GuidedBackprop(model).attribute(inputs, target=target)


# Perturbation methods ---------------------------------------------------------------

SURROGATE_ROWS = 1024
"""Default ``perturbations_per_eval`` of the batched LIME/KernelSHAP: inputs per forward pass."""


def run_surrogate(explainer: Lime | KernelShap, inputs: Tensor, target: Tensor, masks: Tensor,
                  baselines: Tensor, *, n_perturbations: int, perturbations_per_eval: int) -> Tensor:
    """LIME or KernelSHAP one sample at a time, each with its own feature mask.

    Captum would size every sample's surrogate model by the largest group count of
    the batch; one call per sample keeps per-sample masks (SLIC, tokens) exact.
    The surrogate fits are tiny least-squares problems, which multi-threaded BLAS
    only slows down (by 100x on a busy 2-core machine), so BLAS gets one thread.
    """
    positive_int("n_perturbations", n_perturbations)
    positive_int("perturbations_per_eval", perturbations_per_eval)
    parts = []
    with threadpool_limits(limits=1, user_api="blas"):
        for index in range(len(inputs)):
            one = slice(index, index + 1)
            parts.append(explainer.attribute(
                inputs[one], target=target[one], baselines=baselines[one],
                feature_mask=torch.unique(masks[one], return_inverse=True)[1],
                n_samples=n_perturbations, perturbations_per_eval=perturbations_per_eval,
            ))
    return torch.cat(parts)


def cosine_kernel_weights(switches: Tensor, kernel_width: float) -> Tensor:
    """LIME's sample weights for on/off vectors ``(..., groups)``: ``sqrt(exp(-d**2 / width**2))``
    with ``d`` the cosine distance to all-on (1 when all are off), the original LIME rule.

    Measuring distance between on/off vectors rather than raw inputs makes the
    weight mean the same for pixels, time steps and token ids.
    """
    share = switches.double().mean(dim=-1)
    distance = torch.where(share > 0, 1.0 - share.sqrt(), torch.ones_like(share))
    return torch.exp(-(distance**2) / kernel_width**2).sqrt()


def binary_cosine_kernel(kernel_width: float) -> Callable[..., float]:
    """:func:`cosine_kernel_weights` as a captum ``similarity_func`` (one perturbation at a time)."""

    def similarity(original: Tensor, perturbed: Tensor, interpretable: Tensor, **_: object) -> float:
        return float(cosine_kernel_weights(interpretable.reshape(-1), kernel_width))

    return similarity


def fit_surrogates(switches: Tensor, outputs: Tensor, weights: Tensor, alpha: float) -> Tensor:
    """Per sample, the weighted linear fit of ``outputs`` ``(n, S)`` on ``switches`` ``(n, S, groups)``.

    The estimator of captum's surrogates, batched: scikit-learn's ``Ridge(alpha)``
    (``alpha > 0``, LIME) or ``LinearRegression`` (``alpha == 0``, KernelSHAP;
    the minimum-norm least-squares solution) with ``sample_weight=weights`` and
    an unpenalised intercept. Returns the coefficients ``(n, groups)`` in float64.
    """
    z, y, w = switches.double().cpu(), outputs.double().cpu(), weights.double().cpu()
    total = w.sum(dim=1, keepdim=True)
    z_mean = (w[..., None] * z).sum(dim=1, keepdim=True) / total[..., None]
    y_mean = (w * y).sum(dim=1, keepdim=True) / total
    root = w.sqrt()
    zc, yc = (z - z_mean) * root[..., None], ((y - y_mean) * root)[..., None]
    gram = zc.transpose(1, 2) @ zc + alpha * torch.eye(z.shape[-1], dtype=z.dtype)
    solution, info = torch.linalg.solve_ex(gram, zc.transpose(1, 2) @ yc)
    if alpha == 0:  # the normal equations where they are well conditioned, least squares elsewhere
        eigenvalues = torch.linalg.eigvalsh(gram)
        poor = (info != 0) | (eigenvalues[:, 0] <= 1e-10 * eigenvalues[:, -1].clamp(min=1e-300))
        if bool(poor.any()):
            solution[poor] = torch.linalg.lstsq(zc[poor], yc[poor], driver="gelsd").solution
    return solution[..., 0]


def _shap_switches(n: int, n_perturbations: int, groups: int) -> Tensor:
    """KernelSHAP's coalitions as captum draws them: all on, all off, then random subsets whose size ``k``
    follows ``(M - 1) / (k (M - k))``; ``(n, n_perturbations, groups)``."""
    if groups < 2:
        raise UserError("kernel_shap needs at least 2 feature groups (patches, superpixels or time steps)")
    sizes = torch.arange(groups, dtype=torch.float64)
    probs = (groups - 1) / (sizes * (groups - sizes))
    probs[0] = 0.0
    k = torch.multinomial(probs.expand(n * n_perturbations, -1).float(), 1).reshape(n, n_perturbations)
    ranks = torch.rand(n, n_perturbations, groups).argsort(dim=-1).argsort(dim=-1)
    switches = (ranks < k[..., None]).double()
    switches[:, 0] = 1.0
    if n_perturbations > 1:
        switches[:, 1] = 0.0
    return switches


def _surrogate_outputs(forward: Forward, inputs: Tensor, target: Tensor, baselines: Tensor, switches: list[Tensor],
                       groups: list[Tensor], rows: int) -> Tensor:
    """The target logit of every perturbation ``(n, S)``: ``baseline + (input - baseline) * on``, with ``on``
    each sample's switches spread over its feature groups, ``rows`` inputs per pass.

    Each pass writes its perturbed inputs straight into one buffer (no per-sample
    copies to stack), sized so the activations of a pass stay in cache.
    """
    n, n_perturbations = len(inputs), len(switches[0])
    flat = inputs.reshape(n, -1)
    base = baselines.reshape(n, -1)
    difference = flat - base
    outputs = torch.empty(n, n_perturbations, dtype=torch.float64)
    per_pass = max(1, rows // n_perturbations)
    with torch.no_grad():
        for start in range(0, n, per_pass):
            part = range(start, min(n, start + per_pass))
            perturbed = torch.empty(len(part), n_perturbations, flat.shape[1], device=inputs.device, dtype=inputs.dtype)
            for position, i in enumerate(part):
                on = switches[i].to(inputs.device, inputs.dtype).index_select(1, groups[i].to(inputs.device))
                torch.addcmul(base[i], difference[i], on, out=perturbed[position])
            batch = perturbed.reshape(-1, *inputs.shape[1:])
            logits = torch.cat([forward(chunk) for chunk in batch.split(rows)])
            picked = logits.gather(1, target[start:part.stop].repeat_interleave(n_perturbations)[:, None])[:, 0]
            outputs[start:part.stop] = picked.reshape(len(part), n_perturbations).double().cpu()
    return outputs


def run_batched_surrogate(forward: Forward, inputs: Tensor, target: Tensor, masks: Tensor, baselines: Tensor, *,
                          kind: str, n_perturbations: int, perturbations_per_eval: int, alpha: float = 1.0,
                          kernel_width: float = 0.25) -> Tensor:
    """LIME (``kind="lime"``) or KernelSHAP (``"kernel_shap"``) for a whole batch at once.

    The same estimator as captum's ``Lime``/``KernelShap`` (see
    :func:`fit_surrogates`, :func:`cosine_kernel_weights`, :func:`_shap_switches`),
    but the perturbations of all samples go through ``forward`` together,
    ``perturbations_per_eval`` inputs per pass, and the fits are solved together.
    Each sample keeps its own feature groups (``masks``: patches, SLIC
    superpixels or time steps). Draws come from torch's global generator on
    the CPU, so a seed gives the same result on CPU and CUDA.
    """
    positive_int("n_perturbations", n_perturbations)
    rows = positive_int("perturbations_per_eval", perturbations_per_eval)
    n = len(inputs)
    masks = masks.cpu()  # groups index the CPU coefficients (and cost a device sync each on CUDA)
    groups = [torch.unique(masks[i], return_inverse=True)[1].reshape(-1) for i in range(n)]
    counts = [int(g.max()) + 1 for g in groups]
    switches = [torch.zeros(0)] * n
    for count in sorted(set(counts)):
        members = [i for i in range(n) if counts[i] == count]
        drawn = (torch.bernoulli(torch.full((len(members), n_perturbations, count), 0.5, dtype=torch.float64))
                 if kind == "lime" else _shap_switches(len(members), n_perturbations, count))
        for position, i in enumerate(members):
            switches[i] = drawn[position]
    outputs = _surrogate_outputs(forward, inputs, target, baselines, switches, groups, rows)
    result = torch.empty(n, inputs[0].numel(), dtype=torch.float64)
    for count in sorted(set(counts)):
        members = [i for i in range(n) if counts[i] == count]
        z = torch.stack([switches[i] for i in members])
        if kind == "lime":
            weights, penalty = cosine_kernel_weights(z, kernel_width), alpha
        else:
            weights = torch.where((z.sum(-1) == 0) | (z.sum(-1) == count), 1e6, 1.0).double()
            penalty = 0.0
        coefficients = fit_surrogates(z, outputs[members], weights, penalty)
        for position, i in enumerate(members):
            result[i] = coefficients[position][groups[i]]
    return result.reshape(inputs.shape).to(inputs.device, inputs.dtype)


def lime_explainer(forward: Forward, alpha: float, kernel_width: float) -> Lime:
    """Captum Lime with a ridge surrogate and LIME's kernel on the on/off vectors.

    Ridge gives every group a coefficient. Captum's default Lasso (alpha 0.01) keeps
    only some: on a trained LeNet it kept 13-38 of the 64 patches of an MNIST digit,
    and Quantus' built-in LIME, which runs it on single pixels without a mask, left
    2-4% of the pixels non-zero.
    """
    non_negative("alpha", alpha)
    if non_negative("kernel_width", kernel_width) == 0:
        raise UserError("kernel_width must be positive; got 0")
    return Lime(forward, interpretable_model=SkLearnRidge(alpha=alpha),
                similarity_func=binary_cosine_kernel(kernel_width))


def _masks(model: nn.Module, inputs: Tensor, mask: str, patch: int | None, n_segments: int) -> Tensor:
    if inputs.dim() == 4:
        options = {"patch": patch} if mask == "patches" else {"n_segments": n_segments}
        return feature_mask(inputs, "image", mask, **options)
    if (mask, patch, n_segments) != ("patches", None, 64):
        raise UserError("options mask, patch and n_segments apply to images only; sequences are grouped by time "
                        "step, tabular rows by feature")
    return feature_mask(inputs, "tabular") if inputs.dim() == 2 else time_step_mask(inputs)


@register_method("lime", modalities=FLOAT_INPUTS, stochastic=True)
def lime(model: nn.Module, inputs: Tensor, target: Tensor, *, n_perturbations: int = 500, mask: str = "patches",
         patch: int | None = None, n_segments: int = 64, alpha: float = 1.0, kernel_width: float = 0.25,
         perturbations_per_eval: int = SURROGATE_ROWS, batched: bool = True) -> Tensor:
    """LIME over patches/superpixels or time steps, ridge surrogate (captum Lime's estimator, batched).

    ``batched=False`` runs captum's ``Lime`` itself, one sample at a time (the
    reference implementation, ``perturbations_per_eval`` capped at 100 inputs per pass).
    """
    masks = _masks(model, inputs, mask, patch, n_segments)
    if not batched:
        return run_surrogate(lime_explainer(model, alpha, kernel_width), inputs, target, masks,
                             reference(model, inputs), n_perturbations=n_perturbations,
                             perturbations_per_eval=min(perturbations_per_eval, 100))
    non_negative("alpha", alpha)
    if non_negative("kernel_width", kernel_width) == 0:
        raise UserError("kernel_width must be positive; got 0")
    return run_batched_surrogate(model, inputs, target, masks, reference(model, inputs), kind="lime",
                                 n_perturbations=n_perturbations, perturbations_per_eval=perturbations_per_eval,
                                 alpha=alpha, kernel_width=kernel_width)


@register_method("kernel_shap", modalities=FLOAT_INPUTS, stochastic=True)
def kernel_shap(model: nn.Module, inputs: Tensor, target: Tensor, *, n_perturbations: int = 500,
                mask: str = "patches", patch: int | None = None, n_segments: int = 64,
                perturbations_per_eval: int = SURROGATE_ROWS, batched: bool = True) -> Tensor:
    """Kernel SHAP over patches/superpixels or time steps (captum KernelShap's estimator, batched).

    ``batched=False`` runs captum's ``KernelShap`` itself, one sample at a time (the
    reference implementation, ``perturbations_per_eval`` capped at 100 inputs per pass).
    """
    masks = _masks(model, inputs, mask, patch, n_segments)
    if not batched:
        return run_surrogate(KernelShap(model), inputs, target, masks, reference(model, inputs),
                             n_perturbations=n_perturbations, perturbations_per_eval=min(perturbations_per_eval, 100))
    return run_batched_surrogate(model, inputs, target, masks, reference(model, inputs), kind="kernel_shap",
                                 n_perturbations=n_perturbations, perturbations_per_eval=perturbations_per_eval)


@register_method("occlusion", modalities=FLOAT_INPUTS)
def occlusion(model: nn.Module, inputs: Tensor, target: Tensor, *, window: int | None = None,
              stride: int | None = None, perturbations_per_eval: int = 64) -> Tensor:
    """Occlusion with the reference: 4x4 patches, stride 2 on 32x32 images; one time step; one feature (captum)."""
    modality = {4: "image", 2: "tabular"}.get(inputs.dim(), "sequence")
    shape, strides = occlusion_window(inputs, modality, window, stride)
    return Occlusion(model).attribute(
        inputs, sliding_window_shapes=shape, strides=strides, baselines=reference(model, inputs),
        target=target, perturbations_per_eval=positive_int("perturbations_per_eval", perturbations_per_eval),
    )


def run_feature_permutation(forward: Forward, inputs: Tensor, target: Tensor, groups: Tensor,
                            perturbations_per_eval: int) -> Tensor:
    """Permutation importance of each group across the batch (so it needs >= 2 samples).

    A sample's score for a group is the drop of its target logit when that group
    is swapped in from other samples of the same batch: the result depends on
    the batch it is computed in.
    """
    if len(inputs) < 2:
        raise UserError(
            "feature_permutation permutes features across the batch; pass at least 2 samples "
            f"(got {len(inputs)})"
        )
    return FeaturePermutation(forward).attribute(
        inputs, target=target, feature_mask=groups,
        perturbations_per_eval=positive_int("perturbations_per_eval", perturbations_per_eval),
    )


@register_method("feature_permutation", modalities=FLOAT_INPUTS, stochastic=True)
def feature_permutation(model: nn.Module, inputs: Tensor, target: Tensor, *, patch: int | None = None,
                        perturbations_per_eval: int = 16) -> Tensor:
    """Permutation importance of patches or time steps across the batch (captum FeaturePermutation)."""
    if inputs.dim() == 4:
        groups = patch_mask(inputs[:1], patch)
    elif patch is not None:
        raise UserError("option patch applies to images only; sequences are grouped by time step, tabular rows by "
                        "feature")
    else:
        groups = feature_mask(inputs[:1], "tabular") if inputs.dim() == 2 else time_step_mask(inputs[:1])
    return run_feature_permutation(model, inputs, target, groups, perturbations_per_eval)

