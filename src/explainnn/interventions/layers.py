"""Which layers a model has, in which order they run, and how they are wired.

Layers come from the module tree (by type, never by name) plus traced forward
passes. The wiring is a DAG: a layer's *parents* are the nearest weight layers
(or the input) on every path into it, found with a NaN probe. One parent unit per
row is set to NaN while the outputs of all other weight layers are held at their
clean values, so the NaN reaches exactly the input features of the layers that
read the unit through parameter-free operations only (activations, BatchNorm,
pooling, add, cat, flatten, slicing, ...). That gives each parent's
unit -> feature map across skip connections, concatenations, flattens and
reshapes without assuming anything about the forward code (e.g. conv channel i
-> fc features [25 i, 25 i + 25)).

A link is intervened on through the child's weights (``via="weights"``) when the
features it feeds are fed by that parent unit alone; when they are shared with
other units (a residual add, an identity shortcut, attention pooling) the link is
``via="path"``: an edge is then intervened on along the weight-free path itself.
Bidirectional recurrent layers have ``2 H`` units: ``0..H-1`` forward, ``H..2H-1``
backward (PyTorch's output layout).
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


@dataclass(frozen=True)
class ParentLink:
    """One parent of a layer: ``unit_map[i]`` lists the child's input features that parent unit ``i`` reaches.

    ``via`` is ``"weights"`` when every one of those features is reached by this
    unit alone (an edge is the child's weights on them), ``"path"`` when features
    are shared with other parent units, e.g. through a residual add (an edge is
    then an intervention on the weight-free path from the unit into the child).
    """

    name: str
    unit_map: tuple[tuple[int, ...], ...] = field(repr=False)
    via: str = "weights"

    @property
    def n_units(self) -> int:
        return len(self.unit_map)


@dataclass(frozen=True, eq=False)
class LayerInfo:
    """One analysable layer: a module (or one internal layer of a stacked RNN).

    ``output_shape`` is per sample and batch-first; recurrent layers report
    ``(T, hidden)`` (bidirectional: ``(T, 2 hidden)``). ``parents`` lists every
    parent link, nearest first; ``parent`` and ``parent_map`` are those of the first
    (the primary parent): a layer name, ``"input"``, or ``None`` with the reason in
    ``note``. ``parent_map[i]`` lists the input features of this layer (the columns
    of its weight, channels for convs) that parent unit ``i`` feeds.
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
    parents: tuple[ParentLink, ...] = ()

    @property
    def recurrent(self) -> bool:
        return self.kind in RECURRENT_TYPES.values()

    @property
    def directions(self) -> int:
        """2 for a bidirectional recurrent layer, else 1."""
        return 2 if self.recurrent and self.module.bidirectional else 1

    def link(self, parent: str | None = None) -> ParentLink:
        """The link to ``parent`` (``None``: the primary parent), or a one-line error naming the valid ones."""
        if not self.parents:
            raise InterventionError(f"layer '{self.name}' has no traced parent ({self.note})")
        if parent is None:
            return self.parents[0]
        for link in self.parents:
            if link.name == parent:
                return link
        valid = ", ".join(link.name for link in self.parents)
        raise InterventionError(f"'{parent}' is not a parent of layer '{self.name}'; its parents: {valid}")

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


FUSED_TYPES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
"""Modules whose forward may run a fused kernel on their submodules' weights (so hooks on them never fire)."""
PASS_THROUGH_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.PReLU)
"""Modules with weights that act on each unit alone or normalise across units, between layers (weight-free paths)."""
LAYER_NAMES = "Linear, Conv1d/2d, Embedding, LSTM, GRU, RNN"


def placement_reason(name: str, module: nn.Module) -> str | None:
    """Why a module that holds weights and runs in the forward cannot be placed as units or a weight-free path.

    Layers (:func:`layer_kind`) and normalisations are placed. Any other module
    whose own parameters could mix units (a matrix, not a per-unit vector) is
    refused, and so is a fused module (attention, transformer layers) that may
    bypass its submodules' forwards; a layer inside one is refused too. ``name``
    is the module's name in the model (``""`` for the model itself).
    """
    if isinstance(module, FUSED_TYPES):
        return (f"{type(module).__name__} runs attention and fused kernels that interventions cannot enter exactly; "
                "attention heads are not units")
    if layer_kind(module) or isinstance(module, PASS_THROUGH_TYPES):
        return None
    if isinstance(module, (nn.RNNCellBase,)):
        return (f"{type(module).__name__} called in a Python loop is not a supported recurrent layer; write the "
                "recurrence with nn.RNN/nn.GRU/nn.LSTM")
    mixing = [key for key, parameter in module.named_parameters(recurse=False)
              if sum(size > 1 for size in parameter.shape) > 1]
    if mixing:
        kind = "the model's forward" if not name else f"a {type(module).__name__}"
        return (f"{kind} uses the weight(s) {', '.join(mixing)} directly, which discovery cannot place as units or "
                f"edges; supported layers: {LAYER_NAMES} (and normalisations between them)")
    return None


def unsupported_reason(module: nn.Module) -> str | None:
    """Why a layer-typed module cannot be intervened on, or ``None`` when it can."""
    if isinstance(module, tuple(RECURRENT_TYPES)):
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
    return list(_traced(model, example_input)[0])


def unsupported_layers(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, str]]:
    """``(module name, reason)`` for layer-typed modules that run in the forward but cannot be intervened on."""
    return list(_traced(model, example_input)[1])


def _traced(model: nn.Module, example_input: torch.Tensor) -> tuple[list[LayerInfo], list[tuple[str, str]]]:
    if not isinstance(example_input, torch.Tensor) or example_input.dim() == 0 or not len(example_input):
        raise InterventionError("example_input must be a non-empty batch tensor (N, ...)")
    key = (tuple(example_input.shape[1:]), example_input.dtype, str(example_input.device))
    cached = _CACHE.setdefault(model, {})
    if key not in cached:
        with ModelPatch() as patch, torch.no_grad():
            patch.eval_mode(model)
            cached[key] = _find_layers(model, example_input[:1])
    return cached[key]


def _find_layers(model: nn.Module, example: torch.Tensor) -> tuple[list[LayerInfo], list[tuple[str, str]]]:
    traces = [trace_forward(model, _rows(example, n)).by_name() for n in (2, 3)]
    first_calls = sorted(
        (calls[0].start, name, calls) for name, calls in traces[0].items() if layer_kind(calls[0].module)
    )
    layers: list[LayerInfo] = []
    skipped = _unplaced(model, traces[0])
    refused = {name for name, _ in skipped}
    for _, name, calls in first_calls:
        module = calls[0].module
        kind = layer_kind(module)
        reason = unsupported_reason(module) or _inside_fused(name, refused)
        if reason is None and not _batch_on_axis(module, traces, name):
            reason = "its output does not keep the batch on the axis the engine edits"
        if reason:
            skipped.append((name, reason))
            continue
        if kind in RECURRENT_TYPES.values():
            out_shape = calls[0].output[0]
            steps = out_shape[1] if module.batch_first else out_shape[0]
            units = module.hidden_size * (2 if module.bidirectional else 1)
            for index in range(module.num_layers):
                label = name if module.num_layers == 1 else f"{name}.l{index}"
                width = module.input_size if index == 0 else units
                layers.append(
                    LayerInfo(label, name, module, kind, units, width, (steps, units),
                              len(layers), None, None, sublayer=index, calls=len(calls))
                )
        else:
            n_units, width = _units(module)
            layers.append(
                LayerInfo(name, name, module, kind, n_units, width, tuple(calls[0].output[1:]), len(layers),
                          None, None, calls=len(calls))
            )
    return _link_parents(model, example, layers), skipped


def _unplaced(model: nn.Module, calls: dict[str, list[ModuleCall]]) -> list[tuple[str, str]]:
    """``(module name, reason)`` for every module that ran with weights discovery cannot place (the model too)."""
    ran = set(calls)
    found = []
    for name, module in model.named_modules():
        if name and name not in ran:
            continue
        reason = placement_reason(name, module)
        if reason:
            found.append((name or type(model).__name__, reason))
    return found


def _inside_fused(name: str, refused: set[str]) -> str | None:
    """The reason a layer inside a refused fused module (e.g. a TransformerEncoderLayer's linear1) is refused."""
    for outer in refused:
        if name.startswith(outer + "."):
            return f"it runs inside '{outer}', whose forward may bypass it with a fused kernel"
    return None


def _units(module: nn.Module) -> tuple[int, int]:
    """``(units, input features)`` of a Linear, Embedding or Conv1d/2d layer (``layer_kind`` admits no other)."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, nn.Embedding):
        return module.embedding_dim, 0
    assert isinstance(module, (nn.Conv1d, nn.Conv2d)), type(module).__name__
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


def tile_output(output: Any, module: nn.Module, n_blocks: int) -> Any:
    """A fresh copy of a module output repeated ``n_blocks`` times along its batch axis.

    Recurrent outputs ``(seq, state)`` keep their batch axes (``seq``: 0 when
    batch-first, else 1; states: 1).
    """
    if isinstance(output, torch.Tensor):
        return _repeat(output, n_blocks, 0)
    axis = 0 if module.batch_first else 1
    seq, state = output
    if isinstance(state, tuple):
        return _repeat(seq, n_blocks, axis), tuple(_repeat(s, n_blocks, 1) for s in state)
    return _repeat(seq, n_blocks, axis), _repeat(state, n_blocks, 1)


def _repeat(t: torch.Tensor, n_blocks: int, axis: int) -> torch.Tensor:
    repeats = [1] * t.dim()
    repeats[axis] = n_blocks
    return t.repeat(repeats)


class HeldClean:
    """Replaces every layer module's forward with its clean output, tiled to ``n`` blocks.

    ``edit[module_name]`` (optional) changes that output before it is returned.
    Modules called several times return the clean output of the matching call.
    """

    def __init__(self, by_name: dict[str, list[ModuleCall]], layers: list[LayerInfo]) -> None:
        self.by_name = by_name
        self.modules = {layer.module_name: layer.module for layer in layers}

    def install(self, patch: ModelPatch, n_blocks: int, edit: dict[str, Any] | None = None) -> None:
        for name, module in self.modules.items():
            patch.replace_forward(module, self._forward(name, module, n_blocks, (edit or {}).get(name)))

    def _forward(self, name: str, module: nn.Module, n_blocks: int, edit: Any):
        counter = [0]
        calls = self.by_name[name]

        def forward(*args: object, **kwargs: object) -> Any:
            call = calls[min(counter[0], len(calls) - 1)]
            counter[0] += 1
            out = tile_output(call.output, module, n_blocks)
            return out if edit is None else edit(out)

        return forward


def _link_parents(model: nn.Module, example: torch.Tensor, layers: list[LayerInfo]) -> list[LayerInfo]:
    children = [layer for layer in layers if layer.kind != "embedding" and not layer.sublayer]
    try:
        reach = _probe_all(model, example, layers, children)
    except Exception:  # noqa: BLE001 - a model that cannot take NaN falls back to the chain by dims
        reach = None
    linked: list[LayerInfo] = []
    for index, layer in enumerate(layers):
        note = ""
        links: tuple[ParentLink, ...] = ()
        if layer.kind == "embedding":
            note = "reads token ids; it has no incoming edges"
        elif layer.sublayer:
            links = (ParentLink(layers[index - 1].name, tuple((i,) for i in range(layer.in_features))),)
        elif reach is None:
            links, note = _dims_link(layers[:index], layer)
        else:
            links = _links(reach, layer)
            if not links:
                note = "no earlier layer's units and no input feature reach its inputs; edges are unavailable"
        primary = links[0] if links else None
        linked.append(dataclasses.replace(
            layer, parent=primary.name if primary else None, parent_map=primary.unit_map if primary else None,
            note=note, parents=links,
        ))
    return linked


def _dims_link(earlier: list[LayerInfo], child: LayerInfo) -> tuple[tuple[ParentLink, ...], str]:
    """The fallback when the probe cannot run: the previous layer (or the input), one-to-one by dims."""
    source = earlier[-1] if earlier else None
    units = source.n_units if source is not None else child.in_features
    if units != child.in_features:
        return (), "the NaN probe could not run and the previous layer's units do not match its inputs"
    name = source.name if source is not None else INPUT
    return (ParentLink(name, tuple((i,) for i in range(units))),), "one-to-one by dims (the NaN probe could not run)"


INPUT = "input"


def _sources(layers: list[LayerInfo]) -> list[LayerInfo]:
    """Layers whose units can feed later layers: all but the lower layers of a recurrent stack."""
    return [
        layer for layer in layers
        if not (layer.recurrent and layer.sublayer is not None and layer.sublayer != layer.module.num_layers - 1)
    ]


def _probe_all(model: nn.Module, example: torch.Tensor, layers: list[LayerInfo],
               children: list[LayerInfo]) -> dict[str, dict[str, list[set[int]]]]:
    """``reach[child][source]``: per source unit, the child's input features its NaN reaches."""
    clean = trace_forward(model, example, keep=True).by_name()
    held = HeldClean(clean, layers)
    reach: dict[str, dict[str, list[set[int]]]] = {child.name: {} for child in children}
    if example.is_floating_point():
        seen = _probe_pass(model, torch.full_like(example, float("nan")), held, children, None)
        for child in children:
            if seen[child.name] is not None and bool(seen[child.name].any()):
                reach[child.name][INPUT] = [{f} for f in range(child.in_features)]
    graph = _graph(model, example, layers)
    for source in _sources(layers):
        for first in range(0, source.n_units, PROBE_ROWS):
            units = torch.arange(first, min(first + PROBE_ROWS, source.n_units), device=example.device)
            if graph is not None:
                seen = _probe_region(graph, example, clean, layers, source, units, children)
            else:
                mark = {source.module_name: lambda out, units=units: _mark_nan(source, out, units)}
                seen = _probe_pass(model, _rows(example, len(units)), held, children, mark)
            for child in children:
                if child.order <= source.order or seen[child.name] is None:
                    continue
                rows = reach[child.name].setdefault(source.name, [])
                rows.extend(set(torch.nonzero(row).flatten().tolist()) for row in seen[child.name])
    return reach


def _graph(model: nn.Module, example: torch.Tensor, layers: list[LayerInfo]):
    """The model's fx graph when it traces, reproduces the model and calls every layer once; else ``None``."""
    from explainnn.interventions.fxsplit import GraphSplit

    graph = GraphSplit.trace(model)
    if graph is None or any(graph.start_node(layer.module_name) is None for layer in layers):
        return None
    return graph if graph.reproduces(example) else None


def _probe_region(graph, example: torch.Tensor, clean: dict[str, list[ModuleCall]], layers: list[LayerInfo],
                  source: LayerInfo, units: torch.Tensor, children: list[LayerInfo]) -> dict[str, torch.Tensor | None]:
    """The probe through the fx graph: only the weight-free region after ``source`` runs."""
    call = clean[source.module_name][0]
    marked = _mark_nan(source, tile_output(call.output, source.module, len(units)), units)
    blockers = {layer.module_name for layer in layers} - {source.module_name}
    captured = graph.region({source.module_name: marked}, blockers, example, len(units),
                            {child.module_name for child in children})
    seen: dict[str, torch.Tensor | None] = {}
    for child in children:
        if child.module_name in captured:
            seen[child.name] = _feature_nan(child, captured[child.module_name])
        else:
            seen[child.name] = torch.zeros(len(units), child.in_features, dtype=torch.bool)
    return seen


def _probe_pass(model, inputs, held: HeldClean, children: list[LayerInfo], mark) -> dict[str, torch.Tensor | None]:
    """One forward with every layer held clean (and ``mark`` applied): which child features got NaN."""
    seen: dict[str, torch.Tensor | None] = {child.name: None for child in children}

    def capture(child: LayerInfo):
        def hook(module: nn.Module, args: tuple) -> None:
            if seen[child.name] is None and args and isinstance(args[0], torch.Tensor):
                seen[child.name] = _feature_nan(child, args[0])

        return hook

    with ModelPatch() as patch:
        held.install(patch, len(inputs), mark)
        for child in children:
            patch.forward_pre_hook(child.module, capture(child))
        model(inputs)
    return seen


def _links(reach: dict[str, dict[str, list[set[int]]]], child: LayerInfo) -> tuple[ParentLink, ...]:
    found = {name: rows for name, rows in reach[child.name].items() if any(rows)}
    count = [0] * child.in_features
    for rows in found.values():
        for features in rows:
            for f in features:
                count[f] += 1
    links = []
    for name, rows in found.items():
        exclusive = all(count[f] == 1 for features in rows for f in features)
        links.append(ParentLink(name, tuple(tuple(sorted(a)) for a in rows), "weights" if exclusive else "path"))
    # primary parent first: through the weights before along a path, then the widest, then the nearest
    order = {name: i for i, name in enumerate(reach[child.name])}
    return tuple(sorted(links, key=lambda link: (link.name == INPUT, link.via != "weights", -link.n_units,
                                                 -order[link.name])))


def _mark_nan(parent: LayerInfo, output: Any, rows: torch.Tensor) -> Any:
    """Set unit ``rows[r]`` of row ``r`` of a layer's output to NaN."""
    r = torch.arange(len(rows), device=rows.device)
    if parent.recurrent:
        out, state = output
        out = out.clone()
        if parent.module.batch_first:
            out[r, :, rows] = float("nan")
        else:
            out[:, r, rows] = float("nan")
        states = state if isinstance(state, tuple) else (state,)
        marked = [mark_final_state(parent, s.clone(), r, rows, float("nan")) for s in states]
        return out, (tuple(marked) if isinstance(state, tuple) else marked[0])
    out = output.clone()
    if parent.kind.startswith("conv"):
        out[r, rows] = float("nan")
    else:
        out[r, ..., rows] = float("nan")
    return out


def mark_final_state(layer: LayerInfo, state: torch.Tensor, rows: torch.Tensor, units: torch.Tensor,
                     value: float | torch.Tensor, scale: bool = False) -> torch.Tensor:
    """In place on a recurrent final state ``(L * D, N, H)``: unit ``units[r]`` of row ``rows[r]`` of the top layer.

    Units ``>= H`` of a bidirectional layer are the backward direction's. With
    ``scale`` the entries are multiplied by ``value`` instead of set to it.
    """
    hidden = layer.module.hidden_size
    directions = layer.directions
    index = (layer.module.num_layers - 1) * directions + torch.div(units, hidden, rounding_mode="floor")
    col = units % hidden
    if scale:
        state[index, rows, col] = state[index, rows, col] * value
    else:
        state[index, rows, col] = value
    return state


def _feature_nan(child: LayerInfo, inp: torch.Tensor) -> torch.Tensor:
    """``(rows, in_features)`` bool: which input features of each probe row are NaN."""
    nan = torch.isnan(inp)
    if child.recurrent:
        nan = nan if child.module.batch_first else nan.transpose(0, 1)
        return nan.any(dim=1)
    if child.kind.startswith("conv"):
        return nan.flatten(2).any(dim=2)
    return nan.flatten(1, -2).any(dim=1) if nan.dim() > 2 else nan


def _skipped_reason(model: nn.Module, name: str) -> str | None:
    """Why tracing left module ``name`` out (from any traced input shape of ``model``), if it did."""
    for _, skipped in _CACHE.get(model, {}).values():
        for skipped_name, reason in skipped:
            if skipped_name == name:
                return reason
    return None


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
        reason = unsupported_reason(module) or _skipped_reason(model, name)
        if reason is None and layer_kind(module) is None:
            reason = f"a {type(module).__name__} is not a layer we can intervene on (Linear, Conv1d/2d, LSTM, GRU, RNN, Embedding)"
        elif reason is None:
            reason = "it does not run in the traced forward pass or does not keep the batch on dim 0"
        raise InterventionError(f"cannot intervene on module '{name}': {reason}; valid layers: {valid}")
    raise InterventionError(f"unknown layer '{name}'; valid layers: {valid}")
