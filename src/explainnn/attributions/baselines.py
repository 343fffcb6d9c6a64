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

import hashlib
from typing import Callable, Iterator

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import (
    DeepLift,
    FeaturePermutation,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    KernelShap,
    Lime,
    Occlusion,
    Saliency,
)
from captum.attr._utils.approximation_methods import approximation_parameters
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
                             n_steps: int, internal_batch_size: int | None, extra: tuple = ()) -> Tensor:
    """Integrated Gradients, captum's estimator, ``internal_batch_size`` inputs (samples x steps) per pass.

    As captum's ``IntegratedGradients`` (its default ``gausslegendre`` nodes and
    weights, from captum): the target logit's gradients at ``baseline + alpha_k *
    (input - baseline)``, weighted and summed over the ``n_steps`` nodes, times
    ``input - baseline``. A pass holds every step of a few samples (or, with more
    steps than rows, ``internal_batch_size`` steps of one), so the pass size stays
    fixed whatever the batch size; captum instead spreads a few steps of every
    sample over each pass and, per call, recomputes the nodes and seeds each
    output's gradient separately. A sample's attributions do not depend on the
    other samples. Equal to captum's to float rounding (tested at 1e-6); the
    default ``internal_batch_size`` is :func:`pass_rows` of the device.
    """
    positive_int("n_steps", n_steps)
    rows = pass_rows(inputs.device) if internal_batch_size is None else positive_int(
        "internal_batch_size", internal_batch_size)
    step_sizes, step_alphas = approximation_parameters("gausslegendre")
    alphas = torch.tensor(step_alphas(n_steps), dtype=inputs.dtype, device=inputs.device)
    weights = torch.tensor(step_sizes(n_steps), dtype=inputs.dtype, device=inputs.device)
    difference = inputs.detach() - baselines
    steps_per_pass = min(n_steps, rows)
    samples_per_pass = max(1, rows // steps_per_pass)
    total = torch.zeros_like(difference)
    with torch.enable_grad():
        for first in range(0, len(inputs), samples_per_pass):
            part = slice(first, first + samples_per_pass)
            count = len(difference[part])
            for step in range(0, n_steps, steps_per_pass):
                nodes = slice(step, step + steps_per_pass)
                taken = len(alphas[nodes])
                shape = (1, taken) + (1,) * (inputs.dim() - 1)
                path = baselines[part, None] + alphas[nodes].view(shape) * difference[part, None]
                path = path.reshape(count * taken, *inputs.shape[1:]).requires_grad_()
                logits = forward(path, *(arg[part].repeat_interleave(taken, dim=0) for arg in extra))
                chosen = logits.gather(1, target[part].repeat_interleave(taken)[:, None]).sum()
                (gradients,) = torch.autograd.grad(chosen, path)
                total[part] += (gradients.view(count, taken, *inputs.shape[1:]) * weights[nodes].view(shape)).sum(1)
    return total * difference


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
                         internal_batch_size: int | None = None) -> Tensor:
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

PASS_ROWS = {"cpu": 256, "cuda": 4096}
"""Inputs per forward/backward pass by device type, for the batched surrogates and Integrated Gradients. On 2 quiet
CPU threads a LeNet forward ran 56k rows/s in 256-row passes, 46k in 1024-row and 23k in 4096-row passes (a pass's
activations stay in cache); a GPU wants large passes. Other devices use the CUDA size. On a busy machine (load 5-7
on 2 cores) the order flips: every pass costs thread-pool waits, and 1024-row passes ran 1.35x faster."""


def pass_rows(device: torch.device) -> int:
    """:data:`PASS_ROWS` for ``device``: the default number of inputs per pass."""
    return PASS_ROWS["cpu" if device.type == "cpu" else "cuda"]


def input_seeds(inputs: Tensor, seed: int) -> list[int]:
    """One seed per sample: blake2b of ``seed`` and the samples' dtype and shape, the same for every sample.

    Every sample of a shape meets the same random draws (common random
    numbers), so a sample's attributions depend on its values and ``seed``
    alone, not on the batch it comes in, its position there or the device; and
    a perturbed copy of a sample meets the draws the sample met, so a
    robustness metric measures how the seeded method changes with its input,
    not the Monte Carlo noise between two draws (SmoothGrad and GradientSHAP,
    which draw per call, meet the same numbers under Quantus' batches; measure
    that noise by re-running with other seeds).
    """
    rows = inputs.detach()
    header = f"{seed}:{rows.dtype}:{tuple(rows.shape[1:])}".encode()
    value = int.from_bytes(hashlib.blake2b(header, digest_size=8).digest(), "little") >> 1
    return [value] * len(rows)


def surrogate_switches(surrogate: str, seed: int, n_perturbations: int, groups: int) -> Tensor:
    """One sample's on/off switches ``(n_perturbations, groups)`` (float64, CPU) from its own generator.

    ``surrogate="lime"``: each group on with probability 1/2 (as captum's
    ``default_perturb_func``). ``surrogate="kernel_shap"``: captum's
    ``kernel_shap_perturb_generator`` - all on, all off, then subsets whose size
    ``k`` follows ``(M - 1) / (k (M - k))`` and, given ``k``, uniformly random.
    The generator is a CPU ``torch.Generator`` seeded with ``seed`` (from
    :func:`input_seeds`), so the draws are the same on every device.
    """
    generator = torch.Generator().manual_seed(seed)
    # The draws come from torch; the rest runs in numpy, single-threaded: tiny per-sample work that torch would
    # hand to its thread pool (which costs a scheduler slice per operation on a busy machine).
    uniform = torch.rand(n_perturbations, groups, generator=generator, dtype=torch.float64).numpy()
    if surrogate == "lime":
        return torch.from_numpy((uniform < 0.5).astype(np.float64))
    if groups < 2:
        raise UserError("kernel_shap needs at least 2 feature groups (patches, superpixels or time steps)")
    sizes = torch.arange(groups, dtype=torch.float64)
    probs = (groups - 1) / (sizes * (groups - sizes))
    probs[0] = 0.0
    k = torch.multinomial(probs, n_perturbations, replacement=True, generator=generator).numpy()
    # the k groups with the smallest uniforms: a uniformly random subset of size k (53-bit uniforms never tie)
    threshold = np.sort(uniform, axis=-1)[np.arange(n_perturbations), k - 1]
    switches = (uniform <= threshold[:, None]).astype(np.float64)
    switches[0] = 1.0
    if n_perturbations > 1:
        switches[1] = 0.0
    return torch.from_numpy(switches)


def _replay(switches: Tensor, device: torch.device) -> Callable[..., Iterator[Tensor]]:
    """A captum ``perturb_func`` (a generator function) yielding ``switches``' rows as ``(1, groups)`` int64."""

    def perturb(original: object, **_: object) -> Iterator[Tensor]:
        for row in switches.to(device, torch.long):
            yield row[None]

    return perturb


def run_surrogate(explainer: Lime | KernelShap, inputs: Tensor, target: Tensor, masks: Tensor,
                  baselines: Tensor, *, surrogate: str, seed: int, n_perturbations: int,
                  perturbations_per_eval: int) -> Tensor:
    """LIME or KernelSHAP one sample at a time by captum itself, each with its own feature mask and draws.

    Captum would size every sample's surrogate model by the largest group count of
    the batch; one call per sample keeps per-sample masks (SLIC, tokens) exact.
    Captum's estimator and kernel are kept; only its random switches are replaced,
    through ``perturb_func``, by :func:`surrogate_switches` with the sample's own
    seed (:func:`input_seeds`), the switches :func:`run_batched_surrogate` draws.
    The surrogate fits are tiny least-squares problems, which multi-threaded BLAS
    only slows down (by 100x on a busy 2-core machine), so BLAS gets one thread.
    """
    positive_int("n_perturbations", n_perturbations)
    positive_int("perturbations_per_eval", perturbations_per_eval)
    parts = []
    seeds = input_seeds(inputs, seed)
    with threadpool_limits(limits=1, user_api="blas"):
        for index in range(len(inputs)):
            one = slice(index, index + 1)
            groups = torch.unique(masks[one], return_inverse=True)[1]
            switches = surrogate_switches(surrogate, seeds[index], n_perturbations, int(groups.max()) + 1)
            explainer.perturb_func = _replay(switches, inputs.device)
            parts.append(explainer.attribute(
                inputs[one], target=target[one], baselines=baselines[one], feature_mask=groups,
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


def _surrogate_outputs(forward: Forward, inputs: Tensor, target: Tensor, baselines: Tensor, switches: list[Tensor],
                       groups: list[Tensor], rows: int) -> Tensor:
    """The target logit of every perturbation ``(n, S)``: the input where a group is on, the baseline where it is
    off (captum's ``default_from_interp_rep_transform``), ``rows`` inputs per pass.

    The perturbations of consecutive samples fill one reused buffer of ``rows``
    inputs, so every pass but the last is full and nothing is stacked or copied.
    """
    n, n_perturbations = len(inputs), len(switches[0])
    device, shape = inputs.device, inputs.shape[1:]
    flat, base = inputs.reshape(n, -1), baselines.reshape(n, -1)
    row_targets = target.repeat_interleave(n_perturbations)[:, None]
    buffer = torch.empty(min(rows, n * n_perturbations), flat.shape[1], device=device, dtype=inputs.dtype)
    spread = torch.stack(groups).to(device)  # one copy to the device, not one per sample
    picked: list[Tensor] = []
    filled = done = 0
    with torch.no_grad():
        for i in range(n):
            on = switches[i].to(device, inputs.dtype).index_select(1, spread[i])
            start = 0
            while start < n_perturbations:
                take = min(n_perturbations - start, len(buffer) - filled)
                # lerp is exact at weights 0 and 1: the baseline or the input itself
                torch.lerp(base[i], flat[i], on[start:start + take], out=buffer[filled:filled + take])
                filled, start = filled + take, start + take
                if filled == len(buffer) or (i == n - 1 and start == n_perturbations):
                    logits = forward(buffer[:filled].view(filled, *shape))
                    picked.append(logits.gather(1, row_targets[done:done + filled])[:, 0])
                    done, filled = done + filled, 0
    return torch.cat(picked).double().cpu().reshape(n, n_perturbations)


def run_batched_surrogate(forward: Forward, inputs: Tensor, target: Tensor, masks: Tensor, baselines: Tensor, *,
                          surrogate: str, seed: int, n_perturbations: int, perturbations_per_eval: int | None,
                          alpha: float = 1.0, kernel_width: float = 0.25) -> Tensor:
    """LIME (``surrogate="lime"``) or KernelSHAP (``"kernel_shap"``) for a whole batch at once.

    The same estimator as captum's ``Lime``/``KernelShap`` (see
    :func:`fit_surrogates`, :func:`cosine_kernel_weights`) on the same switches as
    :func:`run_surrogate` (:func:`surrogate_switches`, seeded per sample by
    :func:`input_seeds`), but the perturbations of all samples go through
    ``forward`` together, ``perturbations_per_eval`` inputs per pass (default
    :func:`pass_rows` of the device), and the fits are solved together. Each
    sample keeps its own feature groups (``masks``: patches, SLIC superpixels or
    time steps). A sample's attributions are a function of its values, baseline,
    target and ``seed`` alone: the same in any batch, at any position, on CPU and CUDA.
    """
    positive_int("n_perturbations", n_perturbations)
    rows = pass_rows(inputs.device) if perturbations_per_eval is None else positive_int(
        "perturbations_per_eval", perturbations_per_eval)
    n = len(inputs)
    masks = masks.cpu()  # groups index the CPU coefficients (and cost a device sync each on CUDA)
    groups = [torch.unique(masks[i], return_inverse=True)[1].reshape(-1) for i in range(n)]
    counts = [int(g.max()) + 1 for g in groups]
    keys = list(zip(input_seeds(inputs, seed), counts))
    drawn = {key: surrogate_switches(surrogate, key[0], n_perturbations, key[1]) for key in dict.fromkeys(keys)}
    switches = [drawn[key] for key in keys]  # samples with the same seed and group count share their switches
    outputs = _surrogate_outputs(forward, inputs, target, baselines, switches, groups, rows)
    result = torch.empty(n, inputs[0].numel(), dtype=torch.float64)
    for count in sorted(set(counts)):
        members = [i for i in range(n) if counts[i] == count]
        z = torch.stack([switches[i] for i in members])
        if surrogate == "lime":
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


def _reference_rows(perturbations_per_eval: int | None) -> int:
    """Inputs per pass of captum's own Lime/KernelShap: the option, at most 100 (default 100)."""
    if perturbations_per_eval is None:
        return 100
    return min(positive_int("perturbations_per_eval", perturbations_per_eval), 100)


@register_method("lime", modalities=FLOAT_INPUTS, stochastic=True, seeded_per_input=True)
def lime(model: nn.Module, inputs: Tensor, target: Tensor, *, n_perturbations: int = 500, mask: str = "patches",
         patch: int | None = None, n_segments: int = 64, alpha: float = 1.0, kernel_width: float = 0.25,
         perturbations_per_eval: int | None = None, batched: bool = True, seed: int = 0) -> Tensor:
    """LIME over patches/superpixels or time steps, ridge surrogate (captum Lime's estimator, batched).

    Seeded per input: each sample's switches come from its own generator, seeded
    from ``seed`` and the input shape (:func:`input_seeds`: common random numbers), so its
    attributions do not depend on the batch, its position in it or the device.
    ``batched=False`` runs captum's ``Lime`` itself, one sample at a time, on the
    same switches (``perturbations_per_eval`` capped at 100 inputs per pass); the
    two agree to float rounding. ``perturbations_per_eval`` defaults to
    :func:`pass_rows` of the device.
    """
    masks = _masks(model, inputs, mask, patch, n_segments)
    if not batched:
        return run_surrogate(lime_explainer(model, alpha, kernel_width), inputs, target, masks,
                             reference(model, inputs), surrogate="lime", seed=seed, n_perturbations=n_perturbations,
                             perturbations_per_eval=_reference_rows(perturbations_per_eval))
    non_negative("alpha", alpha)
    if non_negative("kernel_width", kernel_width) == 0:
        raise UserError("kernel_width must be positive; got 0")
    return run_batched_surrogate(model, inputs, target, masks, reference(model, inputs), surrogate="lime", seed=seed,
                                 n_perturbations=n_perturbations, perturbations_per_eval=perturbations_per_eval,
                                 alpha=alpha, kernel_width=kernel_width)


@register_method("kernel_shap", modalities=FLOAT_INPUTS, stochastic=True, seeded_per_input=True)
def kernel_shap(model: nn.Module, inputs: Tensor, target: Tensor, *, n_perturbations: int = 500,
                mask: str = "patches", patch: int | None = None, n_segments: int = 64,
                perturbations_per_eval: int | None = None, batched: bool = True, seed: int = 0) -> Tensor:
    """Kernel SHAP over patches/superpixels or time steps (captum KernelShap's estimator, batched).

    Seeded per input: each sample's switches come from its own generator, seeded
    from ``seed`` and the input shape (:func:`input_seeds`: common random numbers), so its
    attributions do not depend on the batch, its position in it or the device.
    ``batched=False`` runs captum's ``KernelShap`` itself, one sample at a time, on the
    same switches (``perturbations_per_eval`` capped at 100 inputs per pass); the
    two agree to float rounding. ``perturbations_per_eval`` defaults to
    :func:`pass_rows` of the device.
    """
    masks = _masks(model, inputs, mask, patch, n_segments)
    if not batched:
        return run_surrogate(KernelShap(model), inputs, target, masks, reference(model, inputs), surrogate="kernel_shap",
                             seed=seed, n_perturbations=n_perturbations,
                             perturbations_per_eval=_reference_rows(perturbations_per_eval))
    return run_batched_surrogate(model, inputs, target, masks, reference(model, inputs), surrogate="kernel_shap",
                                 seed=seed, n_perturbations=n_perturbations,
                                 perturbations_per_eval=perturbations_per_eval)


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

