"""Which layers a model has, in which order they run, and how they are wired.

Layers come from the module tree (by type, never by name) plus traced forward
passes. A layer's *parent* is found by walking back through the layers that ran
before it and probing with NaN: setting one parent unit to NaN marks exactly the
input features of the child that the unit reaches, which gives the unit -> feature
map across flattens, pooling and reshapes (e.g. conv channel i -> fc features
[25 i, 25 i + 25)) without assuming anything about the forward code.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from explainnn.errors import InterventionError
from explainnn.interventions.hooks import ModelPatch

RECURRENT_TYPES = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}
PROBE_ROWS = 256


@dataclass(frozen=True, eq=False)
class LayerInfo:
    """One analysable layer: a module (or one internal layer of a stacked RNN).

    ``output_shape`` is per sample and batch-first; recurrent layers report
    ``(T, hidden)``. ``parent_map[i]`` lists the input features of this layer (the
    columns of its weight, channels for convs) that parent unit ``i`` feeds;
    ``parent`` is a layer name, ``"input"`` for the first layer, or ``None`` with
    the reason in ``note``.
    """

    name: str
    module_name: str
    module: nn.Module = field(repr=False)
    kind: str
    n_units: int
    in_features: int
    output_shape: tuple[int, ...]
    order: int
    parent: str | None
    parent_map: tuple[tuple[int, ...], ...] | None = field(repr=False)
    sublayer: int | None = None
    calls: int = 1
    note: str = ""

    @property
    def recurrent(self) -> bool:
        return self.kind in RECURRENT_TYPES.values()

    @property
    def parent_units(self) -> int:
        return 0 if self.parent_map is None else len(self.parent_map)

    @property
    def time_axis(self) -> bool:
        """Whether the per-sample output has a leading time/position axis."""
        return self.recurrent or (self.kind in ("linear", "embedding") and len(self.output_shape) == 2)

    @property
    def unit_axis(self) -> int:
        """Axis of the units in the batch-first output (recurrent: of ``(N, T, H)``)."""
        return 1 if self.kind.startswith("conv") else len(self.output_shape)


def layer_kind(module: nn.Module) -> str | None:
    """The layer kind of an analysable module, ``None`` for modules that are not layers."""
    for cls, kind in RECURRENT_TYPES.items():
        if isinstance(module, cls):
            return kind
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv1d):
        return "conv1d"
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return None


def unsupported_reason(module: nn.Module) -> str | None:
    """Why a layer-typed module cannot be intervened on, or ``None`` when it can."""
    if isinstance(module, tuple(RECURRENT_TYPES)):
        if module.bidirectional:
            return "bidirectional recurrent layers are not supported"
        if getattr(module, "proj_size", 0):
            return "LSTMs with proj_size are not supported"
    return None


@dataclass
class ModuleCall:
    """One call of one module during a traced forward pass."""

    name: str
    module: nn.Module
    start: int
    end: int = -1
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    output: Any = None


@dataclass
class ForwardTrace:
    calls: list[ModuleCall]
    output: Any

    def by_name(self) -> dict[str, list[ModuleCall]]:
        found: dict[str, list[ModuleCall]] = {}
        for call in self.calls:
            found.setdefault(call.name, []).append(call)
        return found


def _detach_clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach_clone(item) for item in value)
    return value


def trace_forward(model: nn.Module, inputs: torch.Tensor, keep: bool = False) -> ForwardTrace:
    """Run ``model(inputs)`` recording every submodule call in execution order.

    With ``keep`` the calls hold cloned inputs and outputs (clones, because later
    in-place ops such as ``ReLU(inplace=True)`` would otherwise change them).
    """
    calls: list[ModuleCall] = []
    open_calls: dict[int, list[ModuleCall]] = {}
    counter = [0]

    def pre(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            call = ModuleCall(name, module, counter[0])
            if keep:
                call.args, call.kwargs = _detach_clone(args), _detach_clone(kwargs)
            else:
                call.args = tuple(a.shape if isinstance(a, torch.Tensor) else None for a in args)
            counter[0] += 1
            calls.append(call)
            open_calls.setdefault(id(module), []).append(call)

        return hook

    def post(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        call = open_calls[id(module)].pop()
        call.end = counter[0]
        counter[0] += 1
        call.output = _detach_clone(output) if keep else _shapes(output)

    with ModelPatch() as patch:
        for name, module in model.named_modules():
            if module is model:
                continue
            patch.forward_pre_hook(module, pre(name), with_kwargs=True)
            patch.forward_hook(module, post, with_kwargs=True)
        output = model(inputs)
    return ForwardTrace(calls, output)


def _shapes(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, (tuple, list)):
        return tuple(_shapes(item) for item in value)
    return None


def _rows(example: torch.Tensor, n: int) -> torch.Tensor:
    index = torch.arange(n, device=example.device) % example.shape[0]
    return example[index]


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def find_layers(model: nn.Module, example_input: torch.Tensor) -> list[LayerInfo]:
    """The model's analysable layers in execution order, with parents and unit maps.

    ``example_input`` is a batch (one sample is enough) in the form the model's
    forward takes. The result is cached per model and input shape.
    """
    if not isinstance(example_input, torch.Tensor) or example_input.dim() == 0 or not len(example_input):
        raise InterventionError("example_input must be a non-empty batch tensor (N, ...)")
    key = (tuple(example_input.shape[1:]), example_input.dtype, str(example_input.device))
    cached = _CACHE.setdefault(model, {})
    if key not in cached:
        with ModelPatch() as patch, torch.no_grad():
            patch.eval_mode(model)
            cached[key] = _find_layers(model, example_input[:1])
    return list(cached[key])


def _find_layers(model: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    traces = [trace_forward(model, _rows(example, n)).by_name() for n in (2, 3)]
    first_calls = sorted(
        (calls[0].start, name, calls) for name, calls in traces[0].items() if layer_kind(calls[0].module)
    )
    layers: list[LayerInfo] = []
    for _, name, calls in first_calls:
        module = calls[0].module
        kind = layer_kind(module)
        if unsupported_reason(module) or not _batch_on_axis(module, traces, name):
            continue
        if kind in RECURRENT_TYPES.values():
            out_shape = calls[0].output[0]
            steps = out_shape[1] if module.batch_first else out_shape[0]
            for index in range(module.num_layers):
                label = name if module.num_layers == 1 else f"{name}.l{index}"
                width = module.input_size if index == 0 else module.hidden_size
                layers.append(
                    LayerInfo(label, name, module, kind, module.hidden_size, width, (steps, module.hidden_size),
                              len(layers), None, None, sublayer=index, calls=len(calls))
                )
        else:
            n_units, width = _units(module)
            layers.append(
                LayerInfo(name, name, module, kind, n_units, width, tuple(calls[0].output[1:]), len(layers),
                          None, None, calls=len(calls))
            )
    return _link_parents(model, example, layers)


def _units(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, nn.Embedding):
        return module.embedding_dim, 0
    return module.out_channels, module.in_channels


def _batch_on_axis(module: nn.Module, traces: list[dict], name: str) -> bool:
    """Whether the layer keeps the batch on the axis the engine edits (checked at N = 2, 3)."""
    axis = 1 if isinstance(module, tuple(RECURRENT_TYPES)) and not module.batch_first else 0
    for n, trace in zip((2, 3), traces):
        call = trace[name][0]
        out = call.output
        if not isinstance(out, torch.Size) and isinstance(out, tuple):
            out = out[0]
        if not isinstance(out, torch.Size) or len(out) <= axis or out[axis] != n:
            return False
    return True


def _link_parents(model: nn.Module, example: torch.Tensor, layers: list[LayerInfo]) -> list[LayerInfo]:
    linked: list[LayerInfo] = []
    for index, layer in enumerate(layers):
        if layer.kind == "embedding":
            parent, mapping, note = None, None, "reads token ids; it has no incoming edges"
        elif layer.sublayer:
            below = layers[index - 1]
            parent, mapping, note = below.name, tuple((i,) for i in range(layer.in_features)), ""
        elif index == 0:
            parent, mapping, note = "input", tuple((i,) for i in range(layer.in_features)), ""
        else:
            parent, mapping, note = _search_parent(model, example, layers[:index], layer)
        linked.append(dataclasses.replace(layer, parent=parent, parent_map=mapping, note=note))
    return linked


def _search_parent(model, example, earlier: list[LayerInfo], child: LayerInfo):
    for candidate in reversed(earlier):
        if candidate.recurrent and candidate.sublayer is not None:
            if candidate.sublayer != candidate.module.num_layers - 1:
                continue
        affected = _probe(model, example, candidate, child)
        mapping, note = _mapping(candidate, child, affected)
        if mapping is not None:
            return candidate.name, mapping, note
    return None, None, "no earlier layer's units map onto its inputs; edges are unavailable"


def _mapping(parent: LayerInfo, child: LayerInfo, affected: list[set[int]] | None):
    units, width = parent.n_units, child.in_features
    if affected is None:
        if units == width:
            return tuple((i,) for i in range(units)), "one-to-one by dims (the NaN probe could not run)"
        return None, ""
    disjoint = sum(len(a) for a in affected) == len(set().union(*affected))
    if all(affected) and disjoint and (units > 1 or width == 1):
        return tuple(tuple(sorted(a)) for a in affected), ""
    if units == width and all(i in a for i, a in enumerate(affected)):
        return tuple((i,) for i in range(units)), f"units of {parent.name} also mix before reaching {child.name}"
    return None, ""


def _mark_nan(parent: LayerInfo, output: Any, rows: torch.Tensor) -> Any:
    """Set unit ``rows[r]`` of row ``r`` of a layer's output to NaN."""
    r = torch.arange(len(rows), device=rows.device)
    if parent.recurrent:
        module = parent.module
        out, state = output
        out = out.clone()
        if module.batch_first:
            out[r, :, rows] = float("nan")
        else:
            out[:, r, rows] = float("nan")
        states = state if isinstance(state, tuple) else (state,)
        marked = []
        for s in states:
            s = s.clone()
            s[-1, r, rows] = float("nan")
            marked.append(s)
        return out, (tuple(marked) if isinstance(state, tuple) else marked[0])
    out = output.clone()
    if parent.kind.startswith("conv"):
        out[r, rows] = float("nan")
    else:
        out[r, ..., rows] = float("nan")
    return out


def _probe(model: nn.Module, example: torch.Tensor, parent: LayerInfo, child: LayerInfo) -> list[set[int]] | None:
    """For each parent unit, the child's input features it reaches (``None`` if the probe fails)."""
    affected: list[set[int]] = []
    try:
        for first in range(0, parent.n_units, PROBE_ROWS):
            units = torch.arange(first, min(first + PROBE_ROWS, parent.n_units), device=example.device)
            seen: list[torch.Tensor] = []
            with ModelPatch() as patch:
                patch.forward_hook(parent.module, lambda m, a, o: _mark_nan(parent, o, units))
                patch.forward_pre_hook(child.module, lambda m, a: seen.append(a[0]) if not seen else None)
                model(_rows(example, len(units)))
            if not seen:
                return None
            features = _feature_nan(child, seen[0])
            affected.extend(set(torch.nonzero(row).flatten().tolist()) for row in features)
    except Exception:  # noqa: BLE001 - any model that cannot take NaN falls back to dims
        return None
    return affected


def _feature_nan(child: LayerInfo, inp: torch.Tensor) -> torch.Tensor:
    """``(rows, in_features)`` bool: which input features of each probe row are NaN."""
    nan = torch.isnan(inp)
    if child.recurrent:
        nan = nan if child.module.batch_first else nan.transpose(0, 1)
        return nan.any(dim=1)
    if child.kind.startswith("conv"):
        return nan.flatten(2).any(dim=2)
    return nan.flatten(1, -2).any(dim=1) if nan.dim() > 2 else nan


def resolve_layer(layers: list[LayerInfo], model: nn.Module, name: str) -> LayerInfo:
    """The layer called ``name``, or a one-line error saying what is valid."""
    for layer in layers:
        if layer.name == name:
            if layer.calls != 1:
                raise InterventionError(
                    f"layer '{name}' runs {layer.calls} times per forward pass; interventions need "
                    "a layer that runs once"
                )
            return layer
    valid = ", ".join(layer.name for layer in layers) or "none"
    modules = dict(model.named_modules())
    if name in modules and name:
        module = modules[name]
        reason = unsupported_reason(module)
        if reason is None and layer_kind(module) is None:
            reason = f"a {type(module).__name__} is not a layer we can intervene on (Linear, Conv1d/2d, LSTM, GRU, RNN, Embedding)"
        elif reason is None:
            reason = "it does not run in the traced forward pass or does not keep the batch on dim 0"
        raise InterventionError(f"cannot intervene on module '{name}': {reason}; valid layers: {valid}")
    raise InterventionError(f"unknown layer '{name}'; valid layers: {valid}")
