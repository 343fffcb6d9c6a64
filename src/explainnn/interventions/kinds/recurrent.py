"""``nn.LSTM``/``nn.GRU``/``nn.RNN``: one unit per hidden feature at every step, recurrent edges between steps.

A stacked module holds one analysable layer per internal layer (``<name>.l0``,
``<name>.l1``; a single-layer module is ``<name>``); a bidirectional layer has
``2 H`` units, ``0..H-1`` forward and ``H..2H-1`` backward (PyTorch's output
layout). The module's output is ``(sequence, state)``: every value this kind reads
or writes keeps the top layer's final states in step with the sequence. Edits are
applied by re-running the module exactly from the first edited step
(:mod:`explainnn.interventions.recurrent`), with the cell arithmetic below.

An LSTM with ``proj_size = P`` (Sak et al. 2014) computes ``m_t = o_t * tanh(c_t)``
(``H`` values, the units the gate weights belong to) and outputs ``h_t = W_hr m_t``
(``P`` values), which is also the state the next step reads. It holds two layers:
the cell, ``<name>.cell`` (``H`` units ``m``, input-to-hidden edges ``W_ih``), and the
projection, ``<name>`` (``P`` units ``h``, edges from the cell through ``W_hr`` at
the same step, the module's output). The cell's hidden-to-hidden edge ``i -> j``
is the path ``m_i(t-1) -> h(t-1) -> gates_j(t)``, weight ``(W_hh W_hr)[j, i]``
(exact: the projection has no bias); a projection edge ``i -> k`` is the path
``m_i(t) -> h_k(t) ->`` the layers after the module. The two edge sets split the
paths out of a cell unit, so an edge edit never acts twice; a node edit sets the
unit itself, which every reader sees (a projection unit also feeds the next step).
At step 0 the recurrent edges carry nothing (the initial state ``h_0`` is no cell
unit). Stacked or bidirectional LSTMs with ``proj_size`` are refused in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from explainnn.errors import InterventionError
from explainnn.interventions.kinds.base import KindLayer, UnitKind, mix_rows

if TYPE_CHECKING:
    from explainnn.interventions.apply import EditPlan, StartCache
    from explainnn.interventions.clean import CleanPass
    from explainnn.interventions.layers import LayerInfo, ModuleCall

RECURRENT_TYPES: dict[type[nn.RNNBase], str] = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
CELLS: dict[type[nn.RNNBase], type[nn.RNNCellBase]] = {nn.LSTM: nn.LSTMCell, nn.GRU: nn.GRUCell, nn.RNN: nn.RNNCell}


CELL_TYPES: dict[type[nn.RNNCellBase], str] = {nn.LSTMCell: "lstm", nn.GRUCell: "gru", nn.RNNCell: "rnn"}


def cell_name(module: nn.Module) -> str:
    """``lstm``, ``gru`` or ``rnn`` (of a recurrent module or of a cell)."""
    for types in (RECURRENT_TYPES, CELL_TYPES):
        for cls, name in types.items():
            if isinstance(module, cls):
                return name
    raise InterventionError(f"{type(module).__name__} is not a recurrent layer")


def rnn(module: nn.Module) -> nn.RNNBase:
    """``module`` as a recurrent module (a one-line error otherwise)."""
    if not isinstance(module, nn.RNNBase):
        raise InterventionError(f"{type(module).__name__} is not a recurrent layer")
    return module


def proj_size(module: nn.Module) -> int:
    """``P`` of an LSTM with ``proj_size``, else 0."""
    return int(getattr(module, "proj_size", 0) or 0)


def out_width(module: nn.Module) -> int:
    """Features per direction of the module's output and of its ``h`` state (``P`` with a projection, else ``H``)."""
    return proj_size(module) or rnn(module).hidden_size


def projection_weight(module: nn.Module) -> torch.Tensor:
    """``W_hr`` ``(P, H)`` of a one-layer LSTM with ``proj_size``."""
    weight = getattr(module, "weight_hr_l0")
    assert isinstance(weight, torch.Tensor)
    return weight


def is_projection(layer: LayerInfo) -> bool:
    """Whether ``layer`` is the projection layer of an LSTM with ``proj_size`` (its units are ``h = W_hr m``)."""
    return bool(proj_size(layer.module)) and layer.sublayer == 1


def internal_index(layer: LayerInfo) -> int:
    """The internal layer (``weight_*_l<index>``) a recurrent layer belongs to."""
    return 0 if proj_size(layer.module) else (layer.sublayer or 0)


def has_cell_state(module: nn.Module) -> bool:
    """Whether the module carries a cell state ``c`` beside ``h`` (an LSTM)."""
    return isinstance(module, nn.LSTM)


def gates(module: nn.Module) -> int:
    """Gate blocks stacked in the module's weights (LSTM 4, GRU 3, RNN 1)."""
    return GATES[cell_name(module)]


def weights(
    module: nn.Module, index: int, direction: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(w_ih, w_hh, b_ih, b_hh)`` of one internal layer and direction (biases ``None`` without ``bias``)."""
    suffix = "_reverse" if direction else ""
    w_ih = getattr(module, f"weight_ih_l{index}{suffix}")
    w_hh = getattr(module, f"weight_hh_l{index}{suffix}")
    b_ih = getattr(module, f"bias_ih_l{index}{suffix}") if module.bias else None
    b_hh = getattr(module, f"bias_hh_l{index}{suffix}") if module.bias else None
    return w_ih, w_hh, b_ih, b_hh


def split_args(module: nn.Module, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(x (B, T, F), h0 (L, B, H), c0 or None)`` from a recurrent module's call arguments."""
    module = rnn(module)
    x = args[0]
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    if isinstance(x, PackedSequence):
        raise InterventionError("packed sequences are not supported; pass padded (N, T, F) tensors")
    if x.dim() != 3:
        raise InterventionError(f"recurrent layers need batched (N, T, F) input; got shape {tuple(x.shape)}")
    if not module.batch_first:
        x = x.transpose(0, 1)
    shape = (module.num_layers * (2 if module.bidirectional else 1), x.shape[0], module.hidden_size)
    lstm = has_cell_state(module)
    if hx is None:
        zeros = torch.zeros(shape, dtype=x.dtype, device=x.device)
        h_zeros = zeros[..., :proj_size(module)] if proj_size(module) else zeros
        return x, h_zeros, (zeros if lstm else None)
    if lstm:
        return x, hx[0], hx[1]
    return x, hx, None


def format_output(module: nn.Module, out: torch.Tensor, h_n: list[torch.Tensor],
                  c_n: list[torch.Tensor] | None) -> Any:
    if not rnn(module).batch_first:
        out = out.transpose(0, 1)
    h_last = torch.stack(h_n)
    if c_n is None:
        return out, h_last
    return out, (h_last, torch.stack(c_n))


def cell(module: nn.Module, xp: torch.Tensor, hp: torch.Tensor, h: torch.Tensor,
         c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step of the module's cell (a recurrent module's or a cell module's) in ``(K, N, ...)`` layout; ``xp`` may
    broadcast over ``K``.

    ``hp`` (the hidden projection) is a fresh tensor owned by the step. Without
    autograd the gate math runs in place in it, as PyTorch's own cells do.
    """
    inplace = not torch.is_grad_enabled()
    name = cell_name(module)
    if name == "lstm":
        assert c is not None
        if inplace:
            i, f, g, o = hp.add_(xp).unsafe_chunk(4, -1)
            c = f.sigmoid_().mul_(c).addcmul_(i.sigmoid_(), g.tanh_())
            return torch.tanh(c).mul_(o.sigmoid_()), c
        i, f, g, o = (hp + xp).unsafe_chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if name == "gru":
        i_r, i_z, i_n = xp.unsafe_chunk(3, -1)
        h_r, h_z, h_n = hp.unsafe_chunk(3, -1)
        if inplace:
            r = h_r.add_(i_r).sigmoid_()
            z = h_z.add_(i_z).sigmoid_()
            n = h_n.mul_(r).add_(i_n).tanh_()
            return (h - n).mul_(z).add_(n), None
        r = torch.sigmoid(h_r + i_r)
        z = torch.sigmoid(h_z + i_z)
        n = torch.tanh(i_n + h_n * r)
        return (h - n) * z + n, None
    tanh = getattr(module, "nonlinearity", "tanh") == "tanh"
    if inplace:
        pre = hp.add_(xp)
        return (pre.tanh_() if tanh else pre.relu_()), None
    pre = hp + xp
    return (torch.tanh(pre) if tanh else torch.relu(pre)), None


def _repeat(t: torch.Tensor, n_blocks: int, axis: int) -> torch.Tensor:
    repeats = [1] * t.dim()
    repeats[axis] = n_blocks
    return t.repeat(repeats)


def _states(state: Any) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _like(state: Any, parts: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> Any:
    return tuple(parts) if isinstance(state, tuple) else parts[0]


def _holds_units(module: nn.Module, index: int) -> bool:
    """Whether final state ``index`` (0: ``h``, 1: ``c``) is laid out by the output layer's units (with a projection
    the cell state ``c`` belongs to the cell's units, which are not in the output)."""
    return index == 0 or not proj_size(module)


def mark_final_state(layer: LayerInfo, state: torch.Tensor, rows: torch.Tensor, units: torch.Tensor,
                     value: float | torch.Tensor, scale: bool = False) -> torch.Tensor:
    """In place on a recurrent final state ``(L * D, N, H)``: unit ``units[r]`` of row ``rows[r]`` of the top layer.

    Units ``>= H`` of a bidirectional layer are the backward direction's. With
    ``scale`` the entries are multiplied by ``value`` instead of set to it.
    """
    module = rnn(layer.module)
    hidden = out_width(module)
    index = (module.num_layers - 1) * layer.directions + torch.div(units, hidden, rounding_mode="floor")
    col = units % hidden
    if scale:
        state[index, rows, col] = state[index, rows, col] * value
    else:
        state[index, rows, col] = value
    return state


class RecurrentKind(UnitKind):
    name = "recurrent"
    module_types = (nn.LSTM, nn.GRU, nn.RNN)
    stateful = True

    def label(self, module: nn.Module) -> str:
        return cell_name(module)

    def unsupported_reason(self, module: nn.Module) -> str | None:
        if proj_size(module) and (rnn(module).num_layers > 1 or rnn(module).bidirectional):
            module = rnn(module)
            return (f"LSTMs with proj_size are supported with one layer in one direction (num_layers="
                    f"{module.num_layers}, bidirectional={module.bidirectional}); stack single-layer nn.LSTM modules")
        return None

    def units(self, module: nn.Module) -> tuple[int, int]:
        module = rnn(module)
        return module.hidden_size * (2 if module.bidirectional else 1), module.input_size

    def layers(self, name: str, module: nn.Module, output: Any) -> list[KindLayer]:
        module = rnn(module)
        out_shape = output[0]
        steps = out_shape[1] if module.batch_first else out_shape[0]
        units, _ = self.units(module)
        projected = proj_size(module)
        if projected:
            return [KindLayer(f"{name}.cell", units, module.input_size, (steps, units), 0),
                    KindLayer(name, projected, units, (steps, projected), 1)]
        found = []
        for index in range(module.num_layers):
            label = name if module.num_layers == 1 else f"{name}.l{index}"
            width = module.input_size if index == 0 else units
            found.append(KindLayer(label, units, width, (steps, units), index))
        return found

    # -- layout -----------------------------------------------------------------------------------------------
    def batch_axis(self, module: nn.Module) -> int:
        return 0 if rnn(module).batch_first else 1

    def time_axis(self, layer: LayerInfo) -> bool:
        return True

    def is_output(self, layer: LayerInfo) -> bool:
        if proj_size(layer.module):
            return is_projection(layer)
        return layer.sublayer is None or layer.sublayer == rnn(layer.module).num_layers - 1

    def recurrent_edges(self, layer: LayerInfo) -> bool:
        """The projection of an LSTM with ``proj_size`` has none: the recurrence is the cell's."""
        return not is_projection(layer)

    def directions(self, layer: LayerInfo) -> int:
        return 2 if rnn(layer.module).bidirectional else 1

    # -- values in the module's output ``(sequence, state)`` --------------------------------------------------
    def tile_output(self, output: Any, module: nn.Module, n_blocks: int) -> Any:
        if isinstance(output, torch.Tensor):
            return _repeat(output, n_blocks, 0)
        axis = self.batch_axis(module)
        seq, state = output
        return _repeat(seq, n_blocks, axis), _like(state, [_repeat(s, n_blocks, 1) for s in _states(state)])

    def select_blocks(self, layer: LayerInfo, value: Any, blocks: torch.Tensor, n_blocks: int) -> Any:
        seq, state = value
        picked = [s.unflatten(1, (n_blocks, -1))[:, blocks].flatten(1, 2) for s in _states(state)]
        seq = seq.unflatten(0, (n_blocks, -1))[blocks].flatten(0, 1)
        return seq, _like(state, picked)

    def mark_units(self, layer: LayerInfo, output: Any, units: torch.Tensor, value: float) -> Any:
        r = torch.arange(len(units), device=units.device)
        out, state = output
        out = out.clone()
        if rnn(layer.module).batch_first:
            out[r, :, units] = value
        else:
            out[:, r, units] = value
        marked = [mark_final_state(layer, s.clone(), r, units, value) if _holds_units(layer.module, i) else s
                  for i, s in enumerate(_states(state))]
        return out, _like(state, marked)

    def scale_units(self, layer: LayerInfo, out: Any, factors: torch.Tensor) -> Any:
        blocks = factors.shape[0]
        seq, state = out
        module = rnn(layer.module)
        if module.batch_first:
            seq = (seq.unflatten(0, (blocks, -1)) * factors[:, None, None, :]).flatten(0, 1)
        else:
            seq = (seq.unflatten(1, (blocks, -1)) * factors[None, :, None, :]).flatten(1, 2)
        scaled = []
        top = (module.num_layers - 1) * layer.directions
        width = out_width(module)
        for i, s in enumerate(_states(state)):
            if not _holds_units(module, i):
                scaled.append(s)
                continue
            s = s.clone()
            for d in range(layer.directions):
                part = factors[:, d * width : (d + 1) * width]
                s[top + d] = (s[top + d].unflatten(0, (blocks, -1)) * part[:, None, :]).flatten(0, 1)
            scaled.append(s)
        return seq, _like(state, scaled)

    def scale_unit(self, layer: LayerInfo, out: Any, unit: int, factor: float) -> Any:
        seq, state = out
        seq = seq.clone()
        seq[..., unit] *= factor
        module = rnn(layer.module)
        hidden, directions = out_width(module), (2 if module.bidirectional else 1)
        top = (module.num_layers - 1) * directions + unit // hidden
        scaled = []
        for i, st in enumerate(_states(state)):
            if not _holds_units(module, i):
                scaled.append(st)
                continue
            st = st.clone()
            st[top, :, unit % hidden] *= factor
            scaled.append(st)
        return seq, _like(state, scaled)

    def mix(self, layer: LayerInfo, current: Any, ablated: Any, factor: torch.Tensor) -> Any:
        rows = factor.shape[0]
        module = rnn(layer.module)
        seq, state = current
        seq_abl, state_abl = ablated if isinstance(ablated, tuple) else (ablated, None)
        shape = (rows, 1, 1, factor.shape[1])
        mixed_seq = mix_rows(seq, seq_abl, factor.view(shape), rows, 0)
        states = _states(state)
        abl_states = _states(state_abl) if state_abl is not None else (None,) * len(states)
        mixed_states = []
        hidden, directions = out_width(module), layer.directions
        top = (module.num_layers - 1) * directions
        for i, (s, s_abl) in enumerate(zip(states, abl_states)):
            if not _holds_units(module, i):
                mixed_states.append(s)
                continue
            parts = []
            for index in range(s.shape[0]):
                direction = index - top
                if direction < 0:
                    parts.append(s[index])
                    continue
                f = factor[:, direction * hidden:(direction + 1) * hidden].view(rows, 1, hidden)
                a = torch.zeros((), dtype=s.dtype) if s_abl is None else s_abl[index]
                parts.append(mix_rows(s[index], a, f, rows, 0))
            mixed_states.append(torch.stack(parts))
        return mixed_seq, _like(state, mixed_states)

    def mean_output(self, layer: LayerInfo, value: Any) -> Any:
        seq, state = value
        means = [s.mean(1, keepdim=True) for s in _states(state)]
        return seq.mean(0, keepdim=True), _like(state, means)

    def output_tensor(self, layer: LayerInfo, output: Any) -> tuple[torch.Tensor, int]:
        return output[0], self.batch_axis(layer.module)

    def replace_output(self, layer: LayerInfo, output: Any, tensor: torch.Tensor) -> Any:
        state = output[1]
        last = tensor[:, -1] if rnn(layer.module).batch_first else tensor[-1]
        if isinstance(state, tuple):
            h, c = state
            return tensor, (torch.cat([h[:-1], last[None]]), c)
        return tensor, torch.cat([state[:-1], last[None]])

    def clean_activation(self, layer: LayerInfo, clean: CleanPass) -> torch.Tensor:
        cache = clean.rnn(layer.module_name)[internal_index(layer)]
        if proj_size(layer.module) and not is_projection(layer):
            assert cache.m is not None
            return cache.m
        return cache.h

    def unit_values(self, layer: LayerInfo, output: Any) -> torch.Tensor:
        if proj_size(layer.module) and not is_projection(layer):
            raise InterventionError(f"the cell units of layer '{layer.name}' (an LSTM with proj_size) are not in the "
                                    "module's output; read the projection layer's units instead")
        hidden = _states(output[1])[0]
        return hidden[internal_index(layer)]

    # -- edits ------------------------------------------------------------------------------------------------
    def edited_forward(self, plan: EditPlan, layers: list[LayerInfo],
                       cached: StartCache | None) -> Callable[..., Any] | None:
        """The module re-run exactly from the first edited step (:func:`~explainnn.interventions.recurrent.run_module`),
        resuming from the clean states in ``cached`` (a bidirectional module re-runs both directions from step 0)."""
        from explainnn.interventions.recurrent import run_module

        module = rnn(layers[0].module)

        def forward(*args: Any, **kwargs: Any) -> Any:
            caches = None if cached is None else cached.rnn
            if cached is not None and module.bidirectional:
                args, kwargs, caches = cached.tiled_args(plan.n_blocks), {}, None
            if caches is not None:
                length, like = caches[0].x.shape[1], caches[0].x
            else:
                x = split_args(module, args, kwargs)[0]
                length, like = x.shape[1], x
            edits = {layer.sublayer or 0: plan.compiled(layer, (length,), like) for layer in layers}
            return run_module(module, args, kwargs, edits, plan.n_blocks, caches)

        return forward

    def start_cache(self, clean: CleanPass, call: ModuleCall) -> StartCache:
        """Every internal layer's clean states at every step: a run resumes at the first edited step."""
        from explainnn.interventions.apply import StartCache

        return StartCache(call.module, rnn=clean.rnn(call.name), args=call.args, kwargs=call.kwargs)

    def cache_bytes_per_row(self, clean: CleanPass, call: ModuleCall) -> int:
        total = 0
        for layer in clean.rnn(call.name):
            projected = 0 if layer.xproj is None else layer.xproj[0].numel()
            cells = 0 if layer.m is None else layer.m[0].numel()
            total += (layer.h[0].numel() + projected + cells) * layer.h.element_size()
        return total

    # -- inputs and edges -------------------------------------------------------------------------------------
    def batch_first_input(self, layer: LayerInfo, inp: torch.Tensor) -> torch.Tensor:
        return inp if rnn(layer.module).batch_first else inp.transpose(0, 1)

    def edge_weight(self, layer: LayerInfo, recurrent: bool = False) -> torch.Tensor:
        """Input-to-hidden ``(D * G * H, F)``, directions stacked; ``recurrent``: hidden-to-hidden.

        A bidirectional layer's recurrent weights are block-diagonal over the
        directions (``(D * G * H, D * H)``), so unit ``i`` of one direction has no
        recurrent edge into the other. With ``proj_size`` the cell's recurrent
        weight is ``W_hh W_hr`` ``(4 H, H)`` and the projection's weight ``W_hr``
        ``(P, H)``.
        """
        module = layer.module
        if proj_size(module):
            w_ih, w_hh, _, _ = weights(module, 0)
            w_hr = projection_weight(module)
            if is_projection(layer):  # (P, H): the cell's units into the projection; no recurrent edges
                return w_hr.new_zeros(proj_size(module), proj_size(module)) if recurrent else w_hr.detach()
            return (w_hh @ w_hr).detach() if recurrent else w_ih.detach()
        part = "hh" if recurrent else "ih"
        index = layer.sublayer or 0
        suffixes = ("", "_reverse") if layer.directions == 2 else ("",)
        parts = [getattr(module, f"weight_{part}_l{index}{suffix}").detach() for suffix in suffixes]
        if recurrent and len(parts) > 1:
            return torch.block_diag(*parts)
        return torch.cat(parts)

    def unit_rows(self, layer: LayerInfo, per_row: torch.Tensor) -> torch.Tensor:
        if is_projection(layer):
            return per_row
        hidden = rnn(layer.module).hidden_size
        return per_row.view(layer.directions, gates(layer.module), hidden, -1).any(1).flatten(0, 1)

    def child_rows(self, layer: LayerInfo, child_mask: torch.Tensor) -> torch.Tensor:
        if is_projection(layer):
            return child_mask
        hidden = rnn(layer.module).hidden_size
        per_direction = child_mask.unflatten(1, (layer.directions, hidden))
        return per_direction.repeat(1, 1, gates(layer.module)).flatten(1)
