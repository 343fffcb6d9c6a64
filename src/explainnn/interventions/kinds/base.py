"""The unit-kind protocol: what a unit is, for one family of modules.

A :class:`UnitKind` declares everything the engine and the packages above it need
to know about a module type: which modules it matches, the analysable layers one
module holds and their units, the output layout (unit axis, step/token axis, batch
axis), how a unit's value is marked, scaled, mixed or read from the module's
output, which weights carry its incoming edges and how edge deltas are computed
from them, and the capabilities callers branch on (:attr:`UnitKind.stateful`,
:attr:`UnitKind.reads_ids`, :attr:`UnitKind.spatial`). The defaults describe a
layer whose output is one tensor ``(N, ..., units)`` with its units on the last
axis and a weight ``(units, in_features)``: a ``Linear`` needs nothing more.
Callers never compare kind names; they ask ``layer.unit_kind``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from explainnn.interventions.apply import EditPlan, StartCache
    from explainnn.interventions.clean import CleanPass
    from explainnn.interventions.edits import EdgeEdits
    from explainnn.interventions.layers import LayerInfo, ModuleCall


@dataclass(frozen=True)
class KindLayer:
    """One analysable layer a module holds, as its kind describes it (the DAG wiring is added later)."""

    name: str
    n_units: int
    in_features: int
    output_shape: tuple[int, ...]
    sublayer: int | None = None


class UnitKind:
    """The base of every unit kind; subclass it, set :attr:`name` and :attr:`module_types`, register an instance.

    Methods take the :class:`~explainnn.interventions.layers.LayerInfo` of one
    analysable layer (``layer.module`` is the module). Outputs are batch-first
    unless :meth:`batch_axis` says otherwise.
    """

    name: ClassVar[str] = ""
    """The kind's name (registry key, shown in messages)."""
    module_types: ClassVar[tuple[type[nn.Module], ...]] = ()
    """The module types the kind matches (subclasses included)."""
    stateful: ClassVar[bool] = False
    """Whether a unit at step ``t`` reads the layer's own units at step ``t - 1`` (recurrent edges; an edit
    re-runs the module from the first edited step, by :meth:`run`)."""
    reads_ids: ClassVar[bool] = False
    """Whether the layer reads token ids (no incoming edges, no continuous input to optimise)."""
    spatial: ClassVar[bool] = False
    """Whether a unit is a channel over a spatial map (activation maps, per-location paths)."""
    calls_are_steps: ClassVar[bool] = False
    """Whether the module is called once per step (a cell in a Python loop): its calls in a forward pass are the
    steps of one layer that runs once (``LayerInfo.calls == 1``), and :meth:`layers` gets every call's output
    shapes."""
    attention: ClassVar[bool] = False
    """Whether the units are attention heads: their inputs are projected to queries, keys and values, attention runs
    per head and an output projection follows (edge ablation reruns attention with the heads' masked projections)."""

    # -- matching and units -----------------------------------------------------------------------------------
    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, self.module_types)

    def label(self, module: nn.Module) -> str:
        """The layer's kind as shown to people (e.g. ``conv2d``, ``lstm``); never compared by callers."""
        return self.name

    def unsupported_reason(self, module: nn.Module) -> str | None:
        """Why a matched module cannot be intervened on, or ``None`` when it can."""
        return None

    def units(self, module: nn.Module) -> tuple[int, int]:
        """``(units, input features)`` of the module."""
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        return int(weight.shape[0]), int(weight.shape[1])

    def layers(self, name: str, module: nn.Module, output: Any) -> list[KindLayer]:
        """The analysable layers of ``module`` called ``name``; ``output`` is its traced output's shapes."""
        n_units, width = self.units(module)
        assert isinstance(output, torch.Size)
        return [KindLayer(name, n_units, width, tuple(output[1:]))]

    # -- output layout ----------------------------------------------------------------------------------------
    def batch_axis(self, module: nn.Module) -> int:
        """The batch axis of the module's (first) output tensor."""
        return 0

    def unit_axis(self, layer: LayerInfo) -> int:
        """Axis of the units in the batch-first output."""
        return len(layer.output_shape)

    def time_axis(self, layer: LayerInfo) -> bool:
        """Whether the per-sample output has a leading step/token axis (interventions at some steps only)."""
        return False

    def rest_shape(self, layer: LayerInfo, per_sample: tuple[int, ...]) -> tuple[int, ...]:
        """A layer's per-sample output shape without the unit axis."""
        axis = self.unit_axis(layer) - 1
        return tuple(per_sample[:axis]) + tuple(per_sample[axis + 1:])

    def is_output(self, layer: LayerInfo) -> bool:
        """Whether the layer's units are its module's output (all but the lower layers of a stacked module)."""
        return True

    def recurrent_edges(self, layer: LayerInfo) -> bool:
        """Whether the layer has hidden-to-hidden edges (its own units one step earlier into its units): every layer
        of a :attr:`stateful` kind unless it says otherwise (an LSTM's projection layer reads no recurrence)."""
        return self.stateful

    def directions(self, layer: LayerInfo) -> int:
        """2 for a layer with units of two directions (bidirectional recurrence), else 1."""
        return 1

    def groups(self, layer: LayerInfo) -> int:
        """Groups of units that see only their own group's input features (grouped convolutions)."""
        return 1

    # -- values in a module's output --------------------------------------------------------------------------
    def tile_output(self, output: Any, module: nn.Module, n_blocks: int) -> Any:
        """A fresh copy of a module output repeated ``n_blocks`` times along its batch axis."""
        return _repeat(output, n_blocks, 0)

    def select_blocks(self, layer: LayerInfo, value: Any, blocks: torch.Tensor, n_blocks: int) -> Any:
        """The rows of blocks ``blocks`` (``R``) of a module output over ``n_blocks`` blocks: ``R * N`` rows."""
        return value.unflatten(0, (n_blocks, -1))[blocks].flatten(0, 1)

    def mark_units(self, layer: LayerInfo, output: Any, units: torch.Tensor, value: float) -> Any:
        """A copy of a module output with unit ``units[r]`` of row ``r`` set to ``value`` (the NaN probe)."""
        r = torch.arange(len(units), device=units.device)
        out = output.clone()
        out.movedim(self.unit_axis(layer), 1)[r, units] = value
        return out

    def scale_units(self, layer: LayerInfo, out: Any, factors: torch.Tensor) -> Any:
        """A module output ``(E * N, ...)`` with unit ``u`` of block ``e`` scaled by ``factors[e, u]``."""
        blocks = factors.shape[0]
        view = out.unflatten(0, (blocks, -1))
        shape = [blocks] + [1] * out.dim()
        shape[self.unit_axis(layer) + 1] = factors.shape[1]
        return (view * factors.view(shape)).flatten(0, 1)

    def scale_unit(self, layer: LayerInfo, out: Any, unit: int, factor: float) -> Any:
        """A copy of a module output with one unit multiplied by ``factor`` (the per-sample oracle)."""
        out = out.clone()
        out.select(self.unit_axis(layer), unit).mul_(factor)
        return out

    def mix(self, layer: LayerInfo, current: Any, ablated: Any, factor: torch.Tensor) -> Any:
        """``current + factor * (current - ablated)`` per unit (``factor`` ``(R, units)``; ``current`` ``R * N`` rows)."""
        rows = factor.shape[0]
        view = [rows] + [1] * current.dim()
        view[self.unit_axis(layer) + 1] = factor.shape[1]
        return mix_rows(current, ablated, factor.view(view), rows, 0)

    def mean_output(self, layer: LayerInfo, value: Any) -> Any:
        """The mean over the batch of a module output (batch axis kept, size 1)."""
        return value.mean(0, keepdim=True)

    def output_tensor(self, layer: LayerInfo, output: Any) -> tuple[torch.Tensor, int]:
        """The tensor of a module output that holds the layer's units, and its batch axis."""
        return output, 0

    def replace_output(self, layer: LayerInfo, output: Any, tensor: torch.Tensor) -> Any:
        """``output`` with the tensor of :meth:`output_tensor` replaced by ``tensor`` (states follow it)."""
        return tensor

    def clean_activation(self, layer: LayerInfo, clean: CleanPass) -> torch.Tensor:
        """The layer's unit values in the clean pass, batch-first (the tensor node edits and means act on)."""
        output = clean.call(layer.module_name).output
        assert isinstance(output, torch.Tensor)
        return output

    def unit_values(self, layer: LayerInfo, output: Any) -> torch.Tensor:
        """``(N, units)``: one value per unit from the module's output (last step of a sequence)."""
        if self.time_axis(layer):
            return output[:, -1]
        return output.flatten(1)

    def unit_view(self, layer: LayerInfo, out: torch.Tensor, unit: int) -> torch.Tensor:
        """A view of one unit of a batch-first output (the per-sample oracle edits it in place)."""
        return out.select(self.unit_axis(layer), unit)

    # -- inputs and edges -------------------------------------------------------------------------------------
    def input_feature_axis(self, layer: LayerInfo) -> int:
        """Axis of the input features in the module's (batch-first) input."""
        return -1

    def batch_first_input(self, layer: LayerInfo, inp: torch.Tensor) -> torch.Tensor:
        """The module's input tensor with the batch on axis 0."""
        return inp

    def call_features(self, layer: LayerInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        """``(rows, in_features)`` bool: which input features of a call are NaN (the NaN probe); by default those of
        its first argument. A module that reads several inputs (attention: query, key, value) lays them side by side."""
        return self.input_features(layer, args[0])

    def ablation_input(self, layer: LayerInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """What an ablated edge into the layer carries, taken from one call: by default its first argument
        (attention: the batch-first query, key and value)."""
        return args[0]

    def input_features(self, layer: LayerInfo, inp: torch.Tensor) -> torch.Tensor:
        """``(rows, in_features)`` bool: which input features of each row are NaN (the NaN probe)."""
        nan = torch.isnan(self.batch_first_input(layer, inp)).movedim(self.input_feature_axis(layer), -1)
        return nan.flatten(1, -2).any(dim=1) if nan.dim() > 2 else nan

    def edge_weight(self, layer: LayerInfo, recurrent: bool = False) -> torch.Tensor:
        """The weight the edges edit: ``(rows, in_features, *kernel)`` (``recurrent``: hidden-to-hidden)."""
        weight = layer.module.weight
        assert isinstance(weight, torch.Tensor)
        return weight.detach()

    def unit_rows(self, layer: LayerInfo, per_row: torch.Tensor) -> torch.Tensor:
        """Per-weight-row values ``(rows, ...)`` reduced (any) to per-unit ones ``(units, ...)``."""
        return per_row

    def child_rows(self, layer: LayerInfo, child_mask: torch.Tensor) -> torch.Tensor:
        """Units ``(E, units)`` -> the weight rows they own ``(E, rows)``."""
        return child_mask

    def exposing_forward(self, module: nn.Module) -> Callable[..., Any] | None:
        """A forward equal to the module's that also returns the units when they are not in its output (attention
        heads before the output projection), used while the engine hooks the module; ``None`` (the default) when
        the output holds the units."""
        return None

    def edited_forward(self, plan: EditPlan, layers: list[LayerInfo],
                       cached: StartCache | None) -> Callable[..., Any] | None:
        """A forward replacing the module's that applies ``plan``'s edits to ``layers`` (the module's analysable
        layers), or ``None`` (the default): the engine then edits the module's output in a forward hook, node
        edits as an affine map per unit and edge edits as deltas from :meth:`input_delta` on the module's input.
        ``cached`` holds the module's clean activations when the run starts at this module."""
        return None

    def start_cache(self, clean: CleanPass, call: ModuleCall) -> StartCache:
        """What a run that starts at this module reuses of the clean pass (prefix reuse): by default its clean
        input and output, from which the edited output is computed without running anything before it."""
        from explainnn.interventions.apply import StartCache

        return StartCache(call.module, call.args[0], call.output, args=call.args, kwargs=call.kwargs)

    def cache_bytes_per_row(self, clean: CleanPass, call: ModuleCall) -> int:
        """Bytes per sample that :meth:`start_cache` holds beyond the module calls' outputs (memory budgets)."""
        return 0

    def input_delta(self, layer: LayerInfo, x: torch.Tensor, edge: EdgeEdits, n_blocks: int,
                    shared: bool) -> torch.Tensor:
        """``(E, N, ..., units)`` output deltas of the edge edits ``edge`` on input ``x``."""
        from explainnn.interventions.edits import linear_delta

        return linear_delta(x, edge, n_blocks, shared)


def _repeat(t: torch.Tensor, n_blocks: int, axis: int) -> torch.Tensor:
    repeats = [1] * t.dim()
    repeats[axis] = n_blocks
    return t.repeat(repeats)


def mix_rows(current: torch.Tensor, ablated: torch.Tensor, factor: torch.Tensor, rows: int, axis: int) -> torch.Tensor:
    view = current.unflatten(axis, (rows, -1))
    ablated = ablated.to(current.dtype)
    return (view + factor * (view - ablated)).flatten(axis, axis + 1)
