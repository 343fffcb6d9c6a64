"""``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell`` called once per step in a Python loop: one recurrent layer.

The calls of one cell module are the steps of one layer: call ``t`` (in execution
order) is step ``t``, its units are the cell's ``H`` hidden features (``h``; an
LSTM cell's ``c`` is left as computed, as for ``nn.LSTM``), and the layer's
activation is ``(N, T, H)``, ``T`` the number of calls in the traced forward. The
state is carried by the user's code between the calls: an edit at step ``t``
changes the call's output, and the loop carries it into the later calls and the
layers after the loop exactly as the model computes it. Whatever the loop does
between the calls follows the rules of any path (weight-free operations carry the
state; a layer that mixes it is an ordinary layer).

Edges: input-to-hidden (``W_ih``, from the call's input) and hidden-to-hidden
(``W_hh``, from the state the call receives, i.e. step ``t - 1``) within the
layer, every gate of a unit together. While edits apply, the cell's forward is
replaced by one that computes each call with its step's edits (deltas on the
pre-activations, then node edits on ``h``); a run that starts at the cell serves
the calls before its first edited step from the clean pass (prefix reuse: their
inputs are clean). Module outputs the engine reads or writes (the NaN probe, path
edges) are those of one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from explainnn.errors import InterventionError
from explainnn.interventions.kinds.base import KindLayer, UnitKind, mix_rows
from explainnn.interventions.kinds.recurrent import cell, cell_name, gates

if TYPE_CHECKING:
    from explainnn.interventions.apply import EditPlan, StartCache
    from explainnn.interventions.clean import CleanPass
    from explainnn.interventions.layers import LayerInfo, ModuleCall


def _cell(module: nn.Module) -> nn.RNNCellBase:
    if not isinstance(module, nn.RNNCellBase):
        raise InterventionError(f"{type(module).__name__} is not a recurrent cell")
    return module


def _map(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` on a call output: ``h``, or each of an LSTM cell's ``(h, c)``."""
    if isinstance(value, tuple):
        return tuple(fn(item) for item in value)
    return fn(value)


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def call_state(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(x (N, F), h (N, H), c or None)`` of one call of a cell (zeros where the call passes no state)."""
    cell_module = _cell(module)
    x = args[0]
    if x.dim() != 2:
        raise InterventionError(f"a {type(module).__name__} called in a loop needs batched (N, F) input per call; "
                                f"got shape {tuple(x.shape)}")
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    lstm = isinstance(cell_module, nn.LSTMCell)
    if hx is None:
        zeros = x.new_zeros(x.shape[0], cell_module.hidden_size)
        return x, zeros, (zeros if lstm else None)
    if lstm:
        return x, hx[0], hx[1]
    return x, hx, None


def cell_weights(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(w_ih, w_hh, b_ih, b_hh)`` of a cell (biases ``None`` without ``bias``)."""
    cell_module = _cell(module)
    return (cell_module.weight_ih, cell_module.weight_hh, cell_module.bias_ih if cell_module.bias else None,
            cell_module.bias_hh if cell_module.bias else None)


class CellLoopKind(UnitKind):
    name = "cell_loop"
    module_types = (nn.RNNCellBase,)
    stateful = True
    calls_are_steps = True

    def label(self, module: nn.Module) -> str:
        return f"{cell_name(module)}cell"

    def units(self, module: nn.Module) -> tuple[int, int]:
        cell_module = _cell(module)
        return cell_module.hidden_size, cell_module.input_size

    def layers(self, name: str, module: nn.Module, output: Any) -> list[KindLayer]:
        """``output``: the traced shapes of every call (one per step)."""
        units, width = self.units(module)
        return [KindLayer(name, units, width, (len(output), units))]

    # -- layout: a layer ``(N, T, H)``; a module output is one call's ``h`` (or ``(h, c)``) -------------------------
    def time_axis(self, layer: LayerInfo) -> bool:
        return True

    def tile_output(self, output: Any, module: nn.Module, n_blocks: int) -> Any:
        return _map(output, lambda t: t.repeat(n_blocks, *([1] * (t.dim() - 1))))

    def select_blocks(self, layer: LayerInfo, value: Any, blocks: torch.Tensor, n_blocks: int) -> Any:
        return _map(value, lambda t: t.unflatten(0, (n_blocks, -1))[blocks].flatten(0, 1))

    def mark_units(self, layer: LayerInfo, output: Any, units: torch.Tensor, value: float) -> Any:
        r = torch.arange(len(units), device=units.device)

        def mark(t: torch.Tensor) -> torch.Tensor:
            out = t.clone()
            out[r, units] = value
            return out

        return _map(output, mark)

    def scale_units(self, layer: LayerInfo, out: Any, factors: torch.Tensor) -> Any:
        blocks = factors.shape[0]
        return _map(out, lambda t: (t.unflatten(0, (blocks, -1)) * factors[:, None, :]).flatten(0, 1))

    def scale_unit(self, layer: LayerInfo, out: Any, unit: int, factor: float) -> Any:
        def scale(t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            t[:, unit] *= factor
            return t

        return _map(out, scale)

    def mix(self, layer: LayerInfo, current: Any, ablated: Any, factor: torch.Tensor) -> Any:
        rows = factor.shape[0]
        view = factor.view(rows, 1, factor.shape[1])
        if isinstance(current, tuple):
            parts = ablated if isinstance(ablated, tuple) else (ablated,) * len(current)
            return tuple(mix_rows(c, a, view, rows, 0) for c, a in zip(current, parts))
        return mix_rows(current, ablated, view, rows, 0)

    def mean_output(self, layer: LayerInfo, value: Any) -> Any:
        return _map(value, lambda t: t.mean(0, keepdim=True))

    def output_tensor(self, layer: LayerInfo, output: Any) -> tuple[torch.Tensor, int]:
        return _hidden(output), 0

    def replace_output(self, layer: LayerInfo, output: Any, tensor: torch.Tensor) -> Any:
        return (tensor, output[1]) if isinstance(output, tuple) else tensor

    def clean_activation(self, layer: LayerInfo, clean: CleanPass) -> torch.Tensor:
        return torch.stack([_hidden(call.output) for call in clean.by_name[layer.module_name]], 1)

    def unit_values(self, layer: LayerInfo, output: Any) -> torch.Tensor:
        return _hidden(output)

    def unit_view(self, layer: LayerInfo, out: torch.Tensor, unit: int) -> torch.Tensor:
        return out.select(-1, unit)

    # -- edits ------------------------------------------------------------------------------------------------
    def edited_forward(self, plan: EditPlan, layers: list[LayerInfo],
                       cached: StartCache | None) -> Callable[..., Any] | None:
        """Each call computed with its step's edits; calls before the first edited step of a run that starts at the
        cell return their clean outputs. Call ``t`` of a forward pass is step ``t mod T``."""
        from explainnn.interventions.edits import apply_nodes_step
        from explainnn.interventions.recurrent import add_step_delta

        layer = layers[0]
        module = _cell(layer.module)
        length = layer.output_shape[0]
        count = [0]
        clean_calls = () if cached is None else cached.calls

        def forward(*args: Any, **kwargs: Any) -> Any:
            step = count[0] % length
            count[0] += 1
            x, h, c = call_state(module, args, kwargs)
            edits = plan.compiled(layer, (length,), x)
            if clean_calls and step < edits.first_step:
                return self.tile_output(clean_calls[step].output, module, plan.n_blocks)
            n_blocks = plan.n_blocks
            if x.shape[0] % n_blocks:
                raise InterventionError(f"{x.shape[0]} rows do not split into {n_blocks} intervention blocks")
            w_ih, w_hh, b_ih, b_hh = cell_weights(module)
            xp = F.linear(x, w_ih, b_ih).unflatten(0, (n_blocks, -1))
            hp = F.linear(h, w_hh, b_hh).unflatten(0, (n_blocks, -1))
            if edits.edge_in is not None:
                xp = add_step_delta(xp, x, edits.edge_in, step, n_blocks)
            if edits.edge_rec is not None:
                hp = add_step_delta(hp, h, edits.edge_rec, step, n_blocks)
            state = h.unflatten(0, (n_blocks, -1))
            cell_state = None if c is None else c.unflatten(0, (n_blocks, -1))
            h_new, c_new = cell(module, xp, hp.clone(), state, cell_state)
            h_new = h_new.flatten(0, 1)
            if edits.node is not None and step in (edits.node.steps or ()):
                h_new = h_new.clone()
                apply_nodes_step(h_new, edits.node, step, n_blocks)
            return h_new if c_new is None else (h_new, c_new.flatten(0, 1))

        return forward

    def start_cache(self, clean: CleanPass, call: ModuleCall) -> StartCache:
        """Every call's clean output: a run that starts at the cell serves the calls before its first edited step."""
        from explainnn.interventions.apply import StartCache

        return StartCache(call.module, args=call.args, kwargs=call.kwargs, calls=tuple(clean.by_name[call.name]))

    # -- inputs and edges -------------------------------------------------------------------------------------
    def edge_weight(self, layer: LayerInfo, recurrent: bool = False) -> torch.Tensor:
        """Input-to-hidden ``(G * H, F)``; ``recurrent``: hidden-to-hidden ``(G * H, H)``."""
        w_ih, w_hh, _, _ = cell_weights(layer.module)
        return (w_hh if recurrent else w_ih).detach()

    def unit_rows(self, layer: LayerInfo, per_row: torch.Tensor) -> torch.Tensor:
        return per_row.view(gates(layer.module), layer.n_units, *per_row.shape[1:]).any(0)

    def child_rows(self, layer: LayerInfo, child_mask: torch.Tensor) -> torch.Tensor:
        return child_mask.repeat(1, gates(layer.module))
