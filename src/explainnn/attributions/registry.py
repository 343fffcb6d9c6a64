"""The registry of attribution methods and :func:`attribute`, which dispatches to them.

A method is one name with one implementation per input modality (``image``,
``sequence``, ``tokens``): ``integrated_gradients`` on images is captum's
``IntegratedGradients``, on token ids ``LayerIntegratedGradients`` over the
embedding. An implementation is a function::

    fn(model, inputs, target, *, option=default, ...) -> Tensor | np.ndarray

called with ``model`` in eval mode (parameters frozen), ``inputs`` a detached copy of
the batch on the model's device (sequences as ``(N, T, F)``), and ``target`` an
int64 ``(N,)`` tensor on that device. Its keyword-only parameters with defaults are
its options; a method registered with ``needs_graph=True`` also receives ``graph=``
(an :class:`explainnn.causal.CausalGraph`), and one that declares ``seed`` receives
the seed. It returns attributions of the inputs' shape, or ``(N, L)`` for tokens.
"""

from __future__ import annotations

import inspect
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from explainnn.errors import UserError
from explainnn.inputs import as_batch, checked_inputs
from explainnn.torch_utils import eval_mode, model_device, seeded

MODALITIES = ("image", "sequence", "tokens", "tabular")
UNIVERSAL_OPTIONS = ("seed", "modality")
"""Options every method accepts: ``seed`` (default 0) fixes all random draws;
``modality="sequence"`` reads 4-D ``(N, 1, T, F)`` inputs as ``(N, T, F)`` sequences
(how Quantus hands over sequences) and returns attributions in the 4-D shape;
``modality="tabular"`` reads 3-D ``(N, 1, F)`` inputs as ``(N, F)`` rows in the same way."""

Implementation = Callable[..., Any]

CAPTUM_NOTICES = (
    r"Input Tensor \d+ did not already require gradients",
    r"Setting forward, backward hooks and attributes on non-linear",
    r"Setting backward hooks on ReLU activations",
)
"""Captum's notices about what it does on purpose; silenced inside :func:`attribute`."""


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows about one attribution method.

    ``stochastic``: it draws random numbers (``seed`` fixes them).
    ``seeded_per_input``: each sample's draws come from its own generator, seeded
    from ``seed`` and the input shape (every sample meets the same draws), so a
    stochastic method is still a function of (sample, seed): see :attr:`deterministic`.
    """

    name: str
    needs_graph: bool
    stochastic: bool
    implementations: dict[str, Implementation] = field(default_factory=dict)
    seeded_per_input: bool = False

    @property
    def deterministic(self) -> bool:
        """A sample's attributions depend on its values (and ``seed``) alone, not on its batch or position:
        no random draws, or draws seeded per input."""
        return not self.stochastic or self.seeded_per_input

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.implementations)

    @property
    def description(self) -> str:
        """First docstring line of the first implementation."""
        for modality in self.modalities:
            doc = inspect.getdoc(self.implementations[modality])
            if doc:
                return doc.splitlines()[0]
        return ""

    def implementation(self, modality: str) -> Implementation:
        if modality not in self.implementations:
            raise UserError(
                f"attribution method '{self.name}' does not support {modality} inputs; "
                f"it supports: {', '.join(self.modalities)}"
            )
        return self.implementations[modality]

    def options(self, modality: str | None = None) -> dict[str, Any]:
        """Options and defaults for ``modality`` (all modalities merged when None)."""
        chosen = self.modalities if modality is None else (modality,)
        merged: dict[str, Any] = {}
        for name in chosen:
            merged.update(_declared_options(self.implementation(name)))
        merged.setdefault("seed", 0)
        merged.setdefault("modality", None)
        return dict(sorted(merged.items()))


METHODS: dict[str, MethodInfo] = {}
"""Registry: method name -> :class:`MethodInfo`. Fill it with :func:`register_method`."""


def register_method(
    name: str,
    *,
    needs_graph: bool = False,
    modalities: tuple[str, ...] = MODALITIES,
    stochastic: bool = False,
    seeded_per_input: bool = False,
) -> Callable[[Implementation], Implementation]:
    """Decorator adding an implementation of method ``name`` for ``modalities``.

    Registering the same name again for other modalities adds implementations to
    the one method (``needs_graph``, ``stochastic`` and ``seeded_per_input`` must
    then agree; see :class:`MethodInfo`).
    """
    if not isinstance(name, str) or not name:
        raise UserError(f"an attribution method name must be a non-empty string; got {name!r}")
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise UserError(
            f"method '{name}': unknown modality '{unknown[0] if unknown else ''}'; "
            f"valid modalities: {', '.join(MODALITIES)}"
        )

    def decorate(function: Implementation) -> Implementation:
        _declared_options(function)  # fail at registration, not at the first call
        existing = METHODS.get(name)
        if existing is None:
            METHODS[name] = MethodInfo(name, needs_graph, stochastic, {m: function for m in modalities},
                                       seeded_per_input)
            return function
        flags = (existing.needs_graph, existing.stochastic, existing.seeded_per_input)
        if flags != (needs_graph, stochastic, seeded_per_input):
            raise UserError(
                f"method '{name}' is already registered with needs_graph={existing.needs_graph}, "
                f"stochastic={existing.stochastic}, seeded_per_input={existing.seeded_per_input}; a new "
                "implementation must agree"
            )
        taken = [m for m in modalities if m in existing.implementations]
        if taken:
            raise UserError(
                f"attribution method '{name}' is already registered for {', '.join(taken)} inputs; "
                "choose another name"
            )
        existing.implementations.update({m: function for m in modalities})
        return function

    return decorate


def available_methods(modality: str | None = None) -> list[str]:
    """Registered method names (sorted), optionally only those supporting ``modality``."""
    if modality is not None and modality not in MODALITIES:
        raise UserError(f"unknown modality '{modality}'; valid modalities: {', '.join(MODALITIES)}")
    return sorted(n for n, info in METHODS.items() if modality is None or modality in info.implementations)


def method_info(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of a registered method."""
    if name not in METHODS:
        raise UserError(f"unknown attribution method '{name}'; valid: {', '.join(available_methods())}")
    return METHODS[name]


def modality_of(model: nn.Module, inputs: torch.Tensor | np.ndarray, modality: str | None = None) -> str:
    """``tokens`` for 2-D integer ids, ``sequence`` for 3-D floats, ``image`` for 4-D floats,

    ``tabular`` for 2-D float rows ``(N, F)``. A 4-D ``(N, 1, T, F)`` input is a sequence
    when ``modality="sequence"`` is asked for or the model declares
    ``input_modality = "sequence"`` (as :class:`~explainnn.attributions.text.EmbeddingSpaceModel`
    does); a 3-D ``(N, 1, F)`` input is tabular rows when ``modality="tabular"`` is asked for
    or the model declares ``input_modality = "tabular"`` (as
    :class:`~explainnn.evaluation.TabularRowsModel` does).
    """
    if modality is not None and modality not in MODALITIES:
        raise UserError(f"unknown modality '{modality}'; valid modalities: {', '.join(MODALITIES)}")
    shape, dtype = tuple(inputs.shape), inputs.dtype
    integer = not (torch.is_floating_point(inputs) if isinstance(inputs, torch.Tensor)
                   else np.issubdtype(np.asarray(inputs).dtype, np.floating))
    declared = modality or getattr(model, "input_modality", None)
    if integer and len(shape) == 2:
        found = "tokens"
        if not any(isinstance(module, nn.Embedding) for module in model.modules()):
            raise UserError(
                f"inputs of shape {shape} ({dtype}) are token ids, but {type(model).__name__} has no "
                "nn.Embedding layer to read them"
            )
    elif not integer and len(shape) == 2:
        found = "tabular"
    elif not integer and len(shape) == 3:
        found = "tabular" if declared == "tabular" and shape[1] == 1 else "sequence"
    elif not integer and len(shape) == 4:
        found = "sequence" if declared == "sequence" and shape[1] == 1 else "image"
    else:
        raise UserError(
            f"cannot tell the modality of inputs of shape {shape} ({dtype}); expected float "
            "(N, C, H, W) images, float (N, T, F) sequences, float (N, F) tabular rows or int64 (N, L) token ids"
        )
    if modality is not None and modality != found:
        raise UserError(f"modality '{modality}' does not fit inputs of shape {shape} ({dtype}); they hold {found}")
    return found


def attribute(
    model: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    target: int | torch.Tensor | np.ndarray | list[int],
    method: str,
    graph: Any = None,
    **options: Any,
) -> np.ndarray:
    """Attributions of ``method`` for ``inputs`` and class ``target`` as float32 numpy.

    Same shape as ``inputs`` for images, sequences and tabular rows; ``(N, L)`` for token ids (one
    score per token). ``target`` is one class for all samples or one per sample.
    Inputs the model cannot read are a one-line error before any work
    (:func:`explainnn.inputs.check_inputs`).
    ``graph`` is passed to methods that need a causal graph and ignored by the
    others. ``seed`` (default 0) makes stochastic methods reproducible without
    touching the caller's random state. The model's train/eval mode,
    ``requires_grad`` flags and ``.grad`` are left as they were; ``inputs`` is not
    modified.
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    info = method_info(method)
    batch = as_batch(inputs, what="attribute")
    seed = _seed(options.pop("seed", 0))
    modality = modality_of(model, batch, options.pop("modality", None))
    channel = (modality == "sequence" and batch.dim() == 4) or (modality == "tabular" and batch.dim() == 3)
    if channel:
        batch = batch[:, 0]
    batch, n_classes = checked_inputs(model, batch, what="attribute")
    function = info.implementation(modality)
    _check_call(info, function, modality, options, graph, batch)

    device = model_device(model)
    batch = batch.detach().to(device).clone()
    kwargs = dict(options)
    if "seed" in inspect.signature(function).parameters:
        kwargs["seed"] = seed
    if info.needs_graph:
        kwargs["graph"] = graph
    with frozen(model, device), seeded(seed, device), warnings.catch_warnings():
        for message in CAPTUM_NOTICES:
            warnings.filterwarnings("ignore", message=message)
        targets = _targets(target, n_classes, len(batch), device)
        result = function(model, batch, targets, **kwargs)
    array = _checked_shape(_as_array(result), method, modality, batch)
    return array[:, None] if channel else array


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def _check_call(info: MethodInfo, function: Implementation, modality: str, options: dict[str, Any], graph: Any,
                batch: torch.Tensor) -> None:
    """One-line errors for unknown options, a missing graph and an empty batch, before any work."""
    declared = _declared_options(function)
    unknown = sorted(set(options) - set(declared))
    if unknown:
        valid = ", ".join([*declared, *UNIVERSAL_OPTIONS])
        raise UserError(
            f"unknown option '{unknown[0]}' for attribution method '{info.name}' on {modality} inputs; "
            f"valid options: {valid}"
        )
    if info.needs_graph and graph is None:
        raise UserError(f"attribution method '{info.name}' needs a causal graph; pass graph=<CausalGraph>")
    if len(batch) == 0:
        raise UserError("inputs hold no samples; pass a batch (N, ...) with N >= 1")


def _checked_shape(array: np.ndarray, method: str, modality: str, batch: torch.Tensor) -> np.ndarray:
    expected = tuple(batch.shape[:2]) if modality == "tokens" else tuple(batch.shape)
    if array.shape != expected:
        raise UserError(
            f"attribution method '{method}' returned shape {array.shape} for {modality} inputs of "
            f"shape {tuple(batch.shape)}; it must return {expected}"
        )
    return array


@contextmanager
def frozen(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; restores both exactly.

    Freezing keeps parameter ``.grad`` untouched and skips their gradients. On
    CUDA, cuDNN runs deterministic full-precision kernels (no TF32), so a seed
    gives identical arrays and small logit differences are not rounded away; its
    RNN kernels refuse backward passes in eval mode, so it is off for models with
    recurrent layers.
    """
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    recurrent = any(isinstance(module, nn.RNNBase) for module in model.modules())
    try:
        with ExitStack() as stack:
            if device.type == "cuda":
                stack.enter_context(_exact_cudnn(enabled=not recurrent))
            stack.enter_context(eval_mode(model))
            for parameter, _ in flags:
                parameter.requires_grad_(False)
            yield
    finally:
        for parameter, requires_grad in flags:
            parameter.requires_grad_(requires_grad)


@contextmanager
def _exact_cudnn(enabled: bool) -> Iterator[None]:
    cudnn = torch.backends.cudnn
    saved = (cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32)
    try:
        cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32 = enabled, False, True, False
        yield
    finally:
        cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32 = saved


def _declared_options(function: Implementation) -> dict[str, Any]:
    options = {}
    parameters = list(inspect.signature(function).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(parameters) < 3 or any(p.kind not in positional for p in parameters[:3]):
        raise UserError(
            f"attribution implementation {function.__qualname__} must take (model, inputs, target, *, "
            "option=default, ...)"
        )
    for parameter in parameters[3:]:
        if parameter.name in ("graph", "seed"):
            continue
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY or parameter.default is inspect.Parameter.empty:
            raise UserError(
                f"attribution implementation {function.__qualname__} must take (model, inputs, target, *, "
                f"option=default, ...); parameter '{parameter.name}' is not a keyword-only option with a default"
            )
        options[parameter.name] = parameter.default
    return options


def _targets(target: Any, classes: int, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        targets = torch.full((n,), int(target), dtype=torch.int64)
    elif isinstance(target, (torch.Tensor, np.ndarray, list, tuple)):
        targets = torch.as_tensor(np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target))
        if targets.dim() == 0:
            targets = targets.expand(n)
        if targets.is_floating_point() or targets.dtype == torch.bool or targets.shape != (n,):
            raise UserError(
                f"target must be an int or {n} integer classes (one per sample); got "
                f"{targets.dtype} of shape {tuple(targets.shape)}"
            )
        targets = targets.to(torch.int64)
    else:
        raise UserError(f"target must be an int or a (N,) tensor of classes; got {type(target).__name__}")
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise UserError(f"target classes must be in 0..{classes - 1}; got {targets.tolist()}")
    return targets.to(device)


def _as_array(result: Any) -> np.ndarray:
    if isinstance(result, tuple) and len(result) == 1:
        result = result[0]
    if isinstance(result, torch.Tensor):
        return result.detach().to("cpu", torch.float32).numpy()
    return np.asarray(result, dtype=np.float32)
