"""The one entry check of the Python API: inputs the model can read, labels and a target that fit them.

Every public entry point that takes a model and a batch of inputs
(:func:`explainnn.attributions.attribute`, :func:`explainnn.evaluation.evaluate`,
:func:`explainnn.causal.discover`, :func:`explainnn.causal.circuit`,
:func:`explainnn.causal.find_circuit`, :func:`explainnn.causal.circuit_faithfulness`)
calls :func:`check_inputs` first, so a mistake is one line naming what was
given and what the model expects, before any work, instead of a PyTorch error
from deep inside a forward pass (``mat1 and mat2 shapes cannot be multiplied``)
or a misleading later error (labels of the wrong length reported as too few
samples). The check costs one forward pass of one sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from explainnn.errors import ConfigError, DataError, UserError
from explainnn.torch_utils import eval_mode, model_device

FORWARD_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)
"""What a forward pass raises on inputs of the wrong shape, dtype or token range (PyTorch's shape errors are
``RuntimeError``; an embedding given ids beyond its table raises ``IndexError``)."""


def check_inputs(
    model: nn.Module,
    inputs: Any,
    *,
    labels: Any = None,
    target: Any = None,
    what: str = "discover",
    name: str = "inputs",
) -> torch.Tensor:
    """``inputs`` as a tensor, after checking that ``model`` can read them and that ``labels`` and ``target`` fit.

    * ``inputs``: a non-empty torch tensor or numpy array ``(N, ...)`` (numpy
      floats become float32, numpy integers int64; a tensor is returned as
      given, on its own device) whose samples ``model`` reads: the model is run
      on the first sample, in eval mode without gradients, and must return
      ``(1, classes)`` logits;
    * ``labels`` (when given): one integer class per input, each in ``0..classes - 1``;
    * ``target`` (when given): a class index in ``0..classes - 1``, or one per input
      (out of range: a :class:`~explainnn.errors.ConfigError`, as a wrong ``target_class`` is).

    ``what`` names the entry point in the messages and ``name`` the argument
    (``"reference"`` for reference inputs, for instance). Every problem is a
    one-line :class:`~explainnn.errors.DataError` (inputs the model cannot read)
    or :class:`~explainnn.errors.UserError`.
    """
    batch, _ = checked_inputs(model, inputs, labels=labels, target=target, what=what, name=name)
    return batch


def checked_inputs(
    model: nn.Module,
    inputs: Any,
    *,
    labels: Any = None,
    target: Any = None,
    what: str = "discover",
    name: str = "inputs",
) -> tuple[torch.Tensor, int]:
    """:func:`check_inputs`, also returning the number of classes the model outputs."""
    if not isinstance(model, nn.Module):
        raise UserError(f"{what}: model must be a torch.nn.Module; got {type(model).__name__}")
    batch = as_batch(inputs, what=what, name=name)
    n_classes = _classes(model, batch, what, name)
    if labels is not None:
        _check_classes(labels, len(batch), n_classes, what, "labels", name)
    if target is not None:
        _check_target(target, len(batch), n_classes, what, name)
    return batch, n_classes


def as_batch(inputs: Any, *, what: str = "discover", name: str = "inputs") -> torch.Tensor:
    """``inputs`` as a non-empty tensor batch ``(N, ...)``; one-line errors for anything else."""
    if isinstance(inputs, np.ndarray):
        if not (np.issubdtype(inputs.dtype, np.number) or inputs.dtype == np.bool_):
            raise UserError(f"{what}: {name} must hold numbers; got a numpy array of {inputs.dtype}")
        floating = np.issubdtype(inputs.dtype, np.floating)
        inputs = torch.from_numpy(np.ascontiguousarray(inputs.astype(np.float32 if floating else np.int64)))
    if not isinstance(inputs, torch.Tensor):
        raise UserError(f"{what}: {name} must be a torch.Tensor or numpy array; got {type(inputs).__name__}")
    if inputs.dim() < 2:
        raise UserError(f"{what}: {name} must be a batch (N, ...) of samples; got shape {tuple(inputs.shape)} "
                        f"(one sample? add a batch axis: {name}[None])")
    if len(inputs) == 0:
        raise UserError(f"{what}: {name} hold no samples; pass a batch (N, ...) with N >= 1")
    return inputs


def _classes(model: nn.Module, batch: torch.Tensor, what: str, name: str) -> int:
    """Run ``model`` on the first sample; the number of classes, or a one-line error naming shape and expectation."""
    entered: list[tuple[str, nn.Module]] = []
    names = {module: module_name for module_name, module in model.named_modules()}

    def note(module: nn.Module, _args: Any) -> None:
        entered.append((names.get(module, type(module).__name__), module))

    layers = [module for module in model.modules() if _describe_layer(module) is not None]
    hooks = [module.register_forward_pre_hook(note) for module in layers]
    try:
        with eval_mode(model), torch.no_grad():
            logits = model(batch[:1].to(model_device(model)))
    except FORWARD_ERRORS as error:
        raise DataError(_unreadable(batch, what, name, error, entered, layers, names)) from error
    finally:
        for hook in hooks:
            hook.remove()
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserError(f"{what}: the model must return (N, classes) logits; for one sample of {name} of shape "
                        f"{tuple(batch.shape)} it returned {shape}")
    return int(logits.shape[1])


def _unreadable(batch: torch.Tensor, what: str, name: str, error: Exception, entered: list[tuple[str, nn.Module]],
                layers: list[nn.Module], names: dict[nn.Module, str]) -> str:
    """The one-line message for inputs the model cannot read: what was given, where it failed, what it expects."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    given = f"{name} of shape {tuple(batch.shape)} ({str(batch.dtype).replace('torch.', '')})"
    first = entered[0] if entered else ((names.get(layers[0], ""), layers[0]) if layers else None)
    expects = ""
    if first is not None:
        expects = f"; its first layer '{first[0]}' ({type(first[1]).__name__}) reads {_describe_layer(first[1])}"
        last_name, last = entered[-1] if entered else first
        if last is not first[1]:
            expects += (f"; it failed at layer '{last_name}' ({type(last).__name__}), which reads "
                        f"{_describe_layer(last)}")
    return f"{what}: the model cannot read {given}: {reason}{expects}"


def _describe_layer(module: nn.Module) -> str | None:
    """What a layer reads, in words (None for modules without a known input convention)."""
    if isinstance(module, nn.Linear):
        return f"{module.in_features} features on the last axis"
    if isinstance(module, nn.modules.conv._ConvNd):
        spatial = len(module.kernel_size)
        layout = {1: "(N, C, T)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}.get(spatial, "(N, C, ...)")
        return f"{layout} with C = {module.in_channels}"
    if isinstance(module, nn.Embedding):
        return f"int64 token ids (N, L) in 0..{module.num_embeddings - 1}"
    if isinstance(module, nn.RNNBase):
        layout = "(N, T, F)" if module.batch_first else "(T, N, F)"
        return f"{layout} sequences with F = {module.input_size} features"
    if isinstance(module, (nn.RNNCellBase,)):
        return f"(N, F) steps with F = {module.input_size} features"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return f"{module.num_features} channels on axis 1"
    if isinstance(module, nn.LayerNorm):
        return f"a last axis of shape {tuple(module.normalized_shape)}"
    return None


def _integers(values: Any, what: str, label: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values.detach().cpu()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError, RuntimeError) as error:
            raise UserError(f"{what}: {label} must be integer classes; got {type(values).__name__}") from error
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise UserError(f"{what}: {label} must be integer classes; got {str(tensor.dtype).replace('torch.', '')}")
    return tensor


def _check_classes(values: Any, n: int, n_classes: int, what: str, label: str, name: str) -> None:
    """``values``: one integer class in ``0..n_classes - 1`` per input."""
    tensor = _integers(values, what, label)
    if tensor.dim() != 1 or len(tensor) != n:
        held = f"{len(tensor)} entries" if tensor.dim() == 1 else f"shape {tuple(tensor.shape)}"
        raise UserError(f"{what}: {label} hold {held} for {n} {name}; pass one {label[:-1]} per input")
    _in_range(tensor, n_classes, what, label)


def _check_target(target: Any, n: int, n_classes: int, what: str, name: str) -> None:
    """``target``: one class index, or one per input, in ``0..n_classes - 1``."""
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        _in_range(torch.tensor([int(target)]), n_classes, what, "target")
        return
    if isinstance(target, (bool, float, str)) or target is None:
        raise UserError(f"{what}: target must be a class index (an int); got {target!r}")
    tensor = _integers(target, what, "target")
    if tensor.dim() == 0:
        _in_range(tensor.reshape(1), n_classes, what, "target")
        return
    if tensor.dim() != 1 or len(tensor) != n:
        raise UserError(f"{what}: target must be one class or one per input ({n}); got shape {tuple(tensor.shape)}")
    _in_range(tensor, n_classes, what, "targets")


def _in_range(tensor: torch.Tensor, n_classes: int, what: str, label: str) -> None:
    if len(tensor) == 0:
        return
    low, high = int(tensor.min()), int(tensor.max())
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        kind = {"target": "a class index", "targets": "class indices"}.get(label, "classes")
        error = ConfigError if label.startswith("target") else UserError
        raise error(f"{what}: {label if label != 'targets' else 'target'} must be {kind} in 0..{n_classes - 1} "
                    f"(the model has {n_classes} outputs); got {bad}")


__all__ = ["as_batch", "check_inputs", "checked_inputs"]
