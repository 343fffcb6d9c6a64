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

What a unit is comes from the module's unit kind (:mod:`explainnn.interventions.kinds`):
which modules are layers, their units and output layout, how a unit is marked in
an output and read at an input. This module only asks the kinds.
"""

from __future__ import annotations

import dataclasses
import operator
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from explainnn.errors import InterventionError
from explainnn.interventions.hooks import ModelPatch
from explainnn.interventions.kinds import kind_names, kind_of
from explainnn.interventions.kinds.base import UnitKind
from explainnn.interventions.kinds.passthrough import cell_loop_reason, fused_reason, is_pass_through

if TYPE_CHECKING:
    from explainnn.interventions.fxsplit import GraphSplit

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

    ``unit_kind`` says what its units are (layout, parent maps, how edits apply);
    ``kind`` is its name for people (``linear``, ``conv2d``, ``lstm``, ...).
    ``output_shape`` is per sample and batch-first; recurrent layers report
    ``(T, hidden)`` (bidirectional: ``(T, 2 hidden)``). ``calls`` counts how often the
    layer runs per forward pass (a cell called once per step runs once: its calls are
    its steps). ``parents`` lists every
    parent link, nearest first; ``parent`` and ``parent_map`` are those of the first
    (the primary parent): a layer name, ``"input"``, or ``None`` with the reason in
    ``note``. ``parent_map[i]`` lists the input features of this layer (the columns
    of its weight, channels for convs) that parent unit ``i`` feeds.
    """

    name: str
    module_name: str
    module: nn.Module = field(repr=False)
    unit_kind: UnitKind = field(repr=False)
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
    def kind(self) -> str:
        """The layer's kind as shown to people (``linear``, ``conv2d``, ``lstm``, ...); ask ``unit_kind`` instead."""
        return self.unit_kind.label(self.module)

    @property
    def recurrent(self) -> bool:
        """Whether its units read their own values at the previous step (``unit_kind.stateful``)."""
        return self.unit_kind.stateful

    @property
    def directions(self) -> int:
        """2 for a bidirectional recurrent layer, else 1."""
        return self.unit_kind.directions(self)

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
        return self.unit_kind.time_axis(self)

    @property
    def unit_axis(self) -> int:
        """Axis of the units in the batch-first output (recurrent: of ``(N, T, H)``)."""
        return self.unit_kind.unit_axis(self)

    @property
    def is_output(self) -> bool:
        """Whether its units are its module's output (all but the lower layers of a stacked RNN)."""
        return self.unit_kind.is_output(self)


def placement_reason(name: str, module: nn.Module) -> str | None:
    """Why a module that holds weights and runs in the forward cannot be placed as units or a weight-free path.

    Layers (modules with a registered unit kind) and normalisations are placed. Any other module
    whose own parameters could mix units (a matrix, not a per-unit vector) is
    refused, and so is a fused module the engine does not enter (a transformer decoder layer); a layer inside one
    is refused too. ``name``
    is the module's name in the model (``""`` for the model itself).
    """
    fused = fused_reason(module)
    if fused:
        return fused
    if kind_of(module) is not None or is_pass_through(module):
        return None
    loop = cell_loop_reason(module)
    if loop:
        return loop
    mixing = [key for key, parameter in module.named_parameters(recurse=False)
              if sum(size > 1 for size in parameter.shape) > 1]
    if mixing:
        mixing = [key for key in mixing if key not in added_constants(module)]
    if mixing:
        kind = "the model's forward" if not name else f"a {type(module).__name__}"
        return (f"{kind} uses the weight(s) {', '.join(mixing)} directly, which discovery cannot place as units or "
                f"edges; supported layers: {kind_names()} (and normalisations between them)")
    return None


_RESHAPES = frozenset({"expand", "expand_as", "repeat", "view", "reshape", "unsqueeze", "squeeze", "flatten",
                       "contiguous", "to", "type_as", "float", "double", "half", "permute", "transpose", "clone",
                       "detach"})
"""Tensor methods that move or copy a parameter's values without mixing them (followed to the parameter's use)."""
_ADDS = frozenset({operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub, torch.cat,
                   torch.concat, torch.stack})
"""Functions by which a parameter enters the activations as a constant (added, or joined as extra tokens)."""


def added_constants(module: nn.Module) -> frozenset[str]:
    """Own parameters of ``module`` that its forward only adds to (or concatenates with) activations, or never reads.

    A learned position embedding (``x + self.pos_embedding[:, :T]``) or a class token
    (``torch.cat([self.cls_token.expand(N, -1, -1), x], 1)``) is a constant of the
    computation, like a bias: it carries no units and no edge passes through it, so
    interventions stay exact. Read from ``module``'s own forward traced by ``torch.fx``
    one level deep (submodules are leaves); a parameter is a constant when every use,
    after slicing, reshaping or expanding, is an addition, subtraction or
    concatenation with an activation (a value computed from the forward's inputs).
    A forward that does not trace gives none.
    """
    import torch.fx

    class _OneLevel(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
            return True

    try:
        graph = _OneLevel().trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure: no parameter is known to be a constant
        return frozenset()

    from_inputs: set[torch.fx.Node] = set()  # nodes computed from the forward's inputs (activations)
    for node in graph.nodes:
        if node.op == "placeholder" or any(arg in from_inputs for arg in node.all_input_nodes):
            from_inputs.add(node)

    def additive(node: torch.fx.Node) -> bool:
        for user in node.users:
            joins = (user.op == "call_function" and user.target in _ADDS) or (
                user.op == "call_method" and user.target in ("add", "add_", "sub", "sub_"))
            if joins and user in from_inputs:  # added to an activation (not to another weight)
                continue
            if user.op == "call_function" and user.target is operator.getitem and user.args[0] is node:
                if additive(user):
                    continue
                return False
            if user.op == "call_method" and user.target in _RESHAPES and user.args[0] is node:
                if additive(user):
                    continue
                return False
            return False
        return True

    mixing = {str(node.target) for node in graph.nodes if node.op == "get_attr" and not additive(node)}
    return frozenset(key for key, _ in module.named_parameters(recurse=False) if key not in mixing)


def unsupported_reason(module: nn.Module) -> str | None:
    """Why a layer-typed module cannot be intervened on, or ``None`` when it can."""
    kind = kind_of(module)
    return None if kind is None else kind.unsupported_reason(module)


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


def _detach_clone(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """A detached copy of a call's values; a tensor passed several times (a self-attention's query, key and value)
    stays one tensor."""
    memo = {} if memo is None else memo
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = value.detach().clone()
        return memo[id(value)]
    if hasattr(value, "map_tensors"):
        return value.map_tensors(lambda item: _detach_clone(item, memo))
    if isinstance(value, (tuple, list)):
        return type(value)(_detach_clone(item, memo) for item in value)
    if isinstance(value, dict):
        return {key: _detach_clone(item, memo) for key, item in value.items()}
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
                memo: dict[int, Any] = {}
                call.args, call.kwargs = _detach_clone(args, memo), _detach_clone(kwargs, memo)
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


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[Any, tuple[list[LayerInfo], list[tuple[str, str]]]]]" = \
    weakref.WeakKeyDictionary()


def forget_traces() -> None:
    """Drop every cached layer list (the registered kinds changed)."""
    _CACHE.clear()


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
        (calls[0].start, name, calls) for name, calls in traces[0].items() if kind_of(calls[0].module) is not None
    )
    layers: list[LayerInfo] = []
    skipped = _unplaced(model, traces[0])
    refused = {name for name, _ in skipped}
    for _, name, calls in first_calls:
        module = calls[0].module
        kind = kind_of(module)
        assert kind is not None
        reason = kind.unsupported_reason(module) or _inside_fused(name, refused)
        if reason is None and not _batch_on_axis(kind, module, traces, name):
            reason = "its output does not keep the batch on the axis the engine edits"
        if reason:
            skipped.append((name, reason))
            continue
        traced = [call.output for call in calls] if kind.calls_are_steps else calls[0].output
        for found in kind.layers(name, module, traced):
            layers.append(
                LayerInfo(found.name, name, module, kind, found.n_units, found.in_features, found.output_shape,
                          len(layers), None, None, sublayer=found.sublayer,
                          calls=1 if kind.calls_are_steps else len(calls))
            )
    return _link_parents(model, example, layers, {name for name, _ in skipped}), skipped


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


def _outermost(names: set[str]) -> set[str]:
    """The names in ``names`` not inside another one (a refused module's refused layers are held with it)."""
    return {name for name in names if not any(name.startswith(other + ".") for other in names)}


def _inside_fused(name: str, refused: set[str]) -> str | None:
    """The reason a layer inside a refused module (e.g. a TransformerDecoderLayer's linear1) is refused."""
    for outer in refused:
        if name.startswith(outer + "."):
            return f"it runs inside '{outer}', which the engine does not enter"
    return None


def _batch_on_axis(kind: UnitKind, module: nn.Module, traces: list[dict[str, list[ModuleCall]]], name: str) -> bool:
    """Whether the layer keeps the batch on the axis the engine edits (checked at N = 2, 3)."""
    axis = kind.batch_axis(module)
    for n, trace in zip((2, 3), traces):
        call = trace[name][0]
        out = call.output
        if not isinstance(out, torch.Size) and isinstance(out, tuple):
            out = out[0]
        if not isinstance(out, torch.Size) or len(out) <= axis or out[axis] != n:
            return False
    return True


def tile_output(output: Any, module: nn.Module, n_blocks: int) -> Any:
    """A fresh copy of a module output repeated ``n_blocks`` times along its batch axis (the module's kind says
    where that is: recurrent outputs ``(seq, state)`` keep their batch axes)."""
    kind = kind_of(module)
    if kind is None:
        return _repeat(output, n_blocks, 0)
    return kind.tile_output(output, module, n_blocks)


def is_stateful(module: nn.Module) -> bool:
    """Whether the module's kind re-runs it step by step (its output carries states beside the sequence)."""
    kind = kind_of(module)
    return kind is not None and kind.stateful


def _repeat(t: torch.Tensor, n_blocks: int, axis: int) -> torch.Tensor:
    repeats = [1] * t.dim()
    repeats[axis] = n_blocks
    return t.repeat(repeats)


class HeldClean:
    """Replaces every layer module's forward with its clean output, tiled to ``n`` blocks.

    ``edit[module_name]`` (optional) changes that output before it is returned.
    Modules called several times return the clean output of the matching call.
    """

    def __init__(self, by_name: dict[str, list[ModuleCall]], layers: list[LayerInfo],
                 others: dict[str, nn.Module] | None = None) -> None:
        self.by_name = by_name
        self.modules = {layer.module_name: layer.module for layer in layers}
        self.modules.update(others or {})

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


def _link_parents(model: nn.Module, example: torch.Tensor, layers: list[LayerInfo],
                  refused: set[str] | None = None) -> list[LayerInfo]:
    """``layers`` with their parent links from the NaN probe; the ``refused`` modules (ones that run but cannot be
    intervened on) are held at their clean outputs like the layers, so no unit or input is linked through them."""
    children = [layer for layer in layers if not layer.unit_kind.reads_ids and not layer.sublayer]
    try:
        reach = _probe_all(model, example, layers, children, refused or set())
    except Exception as error:  # noqa: BLE001 - a model that cannot take NaN falls back to the chain by dims
        attention = next((layer for layer in layers if layer.unit_kind.attention), None)
        if attention is not None:  # heads never sit in a plain chain: guessing their parents would be wrong
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InterventionError(
                f"cannot trace the layers around attention module '{attention.module_name}': the NaN probe failed "
                f"({reason}); sequence-first attention with a key or value other than its query is not supported"
            ) from error
        reach = None
    linked: list[LayerInfo] = []
    for index, layer in enumerate(layers):
        note = ""
        links: tuple[ParentLink, ...] = ()
        if layer.unit_kind.reads_ids:
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
    return [layer for layer in layers if layer.is_output]


def _probe_all(model: nn.Module, example: torch.Tensor, layers: list[LayerInfo], children: list[LayerInfo],
               refused: set[str] | None = None) -> dict[str, dict[str, list[set[int]]]]:
    """``reach[child][source]``: per source unit, the child's input features its NaN reaches (``refused`` modules
    held clean)."""
    clean = trace_forward(model, example, keep=True).by_name()
    modules = dict(model.named_modules())
    held_refused = {name: modules[name] for name in _outermost(refused or set()) if name in modules and name in clean}
    held = HeldClean(clean, layers, held_refused)
    reach: dict[str, dict[str, list[set[int]]]] = {child.name: {} for child in children}
    if example.is_floating_point():
        seen = _probe_pass(model, torch.full_like(example, float("nan")), held, children, None)
        for child in children:
            nan = seen[child.name]
            if nan is not None and bool(nan.any()):
                reach[child.name][INPUT] = [{f} for f in range(child.in_features)]
    graph = _graph(model, example, layers)
    for source in _sources(layers):
        for first in range(0, source.n_units, PROBE_ROWS):
            units = torch.arange(first, min(first + PROBE_ROWS, source.n_units), device=example.device)
            if graph is not None:
                seen = _probe_region(graph, example, clean, layers, source, units, children, set(held_refused))
            else:
                mark = {source.module_name: _marker(source, units)}
                seen = _probe_pass(model, _rows(example, len(units)), held, children, mark)
            for child in children:
                reached = seen[child.name]
                if child.order <= source.order or reached is None:
                    continue
                rows = reach[child.name].setdefault(source.name, [])
                rows.extend(set(torch.nonzero(row).flatten().tolist()) for row in reached)
    return reach


def _marker(source: LayerInfo, units: torch.Tensor) -> Callable[[Any], Any]:
    return lambda out: source.unit_kind.mark_units(source, out, units, float("nan"))


def _graph(model: nn.Module, example: torch.Tensor, layers: list[LayerInfo]) -> GraphSplit | None:
    """The model's fx graph when it traces, reproduces the model and calls every layer once; else ``None``."""
    from explainnn.interventions.fxsplit import GraphSplit

    graph = GraphSplit.trace(model)
    if graph is None or any(graph.start_node(layer.module_name) is None for layer in layers):
        return None
    return graph if graph.reproduces(example) else None


def _probe_region(graph: GraphSplit, example: torch.Tensor, clean: dict[str, list[ModuleCall]], layers: list[LayerInfo],
                  source: LayerInfo, units: torch.Tensor, children: list[LayerInfo],
                  refused: set[str] | None = None) -> dict[str, torch.Tensor | None]:
    """The probe through the fx graph: only the weight-free region after ``source`` runs."""
    call = clean[source.module_name][0]
    marked = source.unit_kind.mark_units(source, tile_output(call.output, source.module, len(units)), units,
                                         float("nan"))
    blockers = ({layer.module_name for layer in layers} | (refused or set())) - {source.module_name}
    captured = graph.region({source.module_name: marked}, blockers, example, len(units),
                            {child.module_name for child in children}, whole=True)
    seen: dict[str, torch.Tensor | None] = {}
    for child in children:
        if child.module_name in captured:
            args, kwargs = captured[child.module_name]
            seen[child.name] = child.unit_kind.call_features(child, args, kwargs)
        else:
            seen[child.name] = torch.zeros(len(units), child.in_features, dtype=torch.bool)
    return seen


def _probe_pass(model, inputs, held: HeldClean, children: list[LayerInfo], mark) -> dict[str, torch.Tensor | None]:
    """One forward with every layer held clean (and ``mark`` applied): which child features got NaN."""
    seen: dict[str, torch.Tensor | None] = {child.name: None for child in children}

    def capture(child: LayerInfo):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if seen[child.name] is None and args and isinstance(args[0], torch.Tensor):
                seen[child.name] = child.unit_kind.call_features(child, args, kwargs)

        return hook

    with ModelPatch() as patch:
        held.install(patch, len(inputs), mark)
        for child in children:
            patch.forward_pre_hook(child.module, capture(child), with_kwargs=True)
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
        if reason is None and kind_of(module) is None:
            reason = f"a {type(module).__name__} is not a layer we can intervene on ({kind_names()})"
        elif reason is None:
            reason = "it does not run in the traced forward pass or does not keep the batch on dim 0"
        raise InterventionError(f"cannot intervene on module '{name}': {reason}; valid layers: {valid}")
    raise InterventionError(f"unknown layer '{name}'; valid layers: {valid}")
