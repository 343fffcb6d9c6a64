"""Exact re-execution of ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` with edits inside the recurrence.

An edit at step ``t`` must reach every later step exactly as if the model had
computed it, so the intervened layers are unrolled with the same arithmetic as
PyTorch's cells (gate order, bias placement, ``h' = (h - n) z + n`` for GRUs).
With a clean cache (per layer: inputs, input projections and ``h``/``c`` at every
step) a run resumes at the first edited step from the cached state instead of
recomputing the prefix, and reuses the cached input projections of the first
edited layer, whose inputs are unchanged. Bidirectional modules run each
direction exactly (the backward one over reversed time) from the first step, on
the clean inputs; their units are ``0..H-1`` forward and ``H..2H-1`` backward.
An LSTM with ``proj_size`` runs :func:`run_projected`: the cell's units ``m``, then
the projection ``h = W_hr m`` (the state the next step reads), each with its own
edits (the unit kind of recurrent modules defines its edges).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from explainnn.errors import InterventionError
from explainnn.interventions.edits import EdgeEdits, LayerEdits, NodeEdits, apply_nodes_step, linear_delta
from explainnn.interventions.kinds.recurrent import (
    cell,
    format_output,
    has_cell_state,
    proj_size,
    projection_weight,
    rnn,
    split_args,
    weights,
)

__all__ = ["LayerCache", "add_step_delta", "clean_cache", "direction_edits", "format_output", "run_layer", "run_module",
           "run_projected", "split_args", "weights"]


@dataclass
class LayerCache:
    """Clean activations of one internal layer, batch-first ``(N, T, ...)``."""

    x: torch.Tensor
    xproj: torch.Tensor | None
    """The input projections (``None`` for a bidirectional module, which re-runs from the first step)."""
    h: torch.Tensor
    c: torch.Tensor | None
    h0: torch.Tensor
    c0: torch.Tensor | None
    m: torch.Tensor | None = None
    """With ``proj_size``: the cell's units ``m`` at every step (``h`` holds the projection, the state)."""


def _active(edge: EdgeEdits | None, length: int) -> list[bool]:
    if edge is None:
        return [False] * length
    if edge.steps is None:
        return [True] * length
    return edge.steps.ne(0).any(0).tolist()


def _with_delta(base: torch.Tensor, edge, delta: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """``base`` ``(K or 1, N, G)`` plus per-entry deltas ``(E, N, G)`` on their blocks (a new tensor)."""
    if edge.full:
        return base + delta
    return base.expand(n_blocks, -1, -1).index_add(0, edge.blocks, delta)


def _add_edge_delta(
    base: torch.Tensor, parents: torch.Tensor, edge: EdgeEdits, step: int, n_blocks: int, shared: bool
) -> torch.Tensor:
    """A step's projection ``base`` ``(K or 1, N, G)`` plus the deltas of ``edge`` at ``step`` (a new tensor).

    ``parents`` are the values the edges read at that step (shared ``(N, F)`` or
    per-row ``(K * N, F)``); entries limited to other steps add nothing.
    """
    delta = linear_delta(parents, edge, n_blocks, shared)
    if edge.steps is not None:
        delta = delta * edge.steps[:, step, None, None]
    return _with_delta(base, edge, delta, n_blocks)


def add_step_delta(base: torch.Tensor, parents: torch.Tensor, edge: EdgeEdits, step: int,
                   n_blocks: int) -> torch.Tensor:
    """``base`` ``(K, N, G)`` plus the deltas of ``edge`` at ``step`` read from per-row ``parents`` ``(K * N, F)``
    (a new tensor; ``base`` itself when no entry acts at ``step``)."""
    if edge.steps is not None and not bool(edge.steps[:, step].ne(0).any()):
        return base
    return _add_edge_delta(base, parents, edge, step, n_blocks, False)


def run_layer(
    module: nn.Module,
    index: int,
    xproj: torch.Tensor,
    x: torch.Tensor,
    shared: bool,
    h: torch.Tensor,
    c: torch.Tensor | None,
    start: int,
    n_blocks: int,
    edits: LayerEdits | None,
    prefix: torch.Tensor | None = None,
    keep_c: bool = False,
    direction: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Steps ``start..T-1`` of internal layer ``index``.

    ``x`` holds the layer's inputs for all steps: shared clean ``(N, T, F)`` or
    per-row ``(K * N, T, F)``. ``xproj`` is their input projection: shared for
    all steps, or per-row for steps ``start..``. ``h``/``c`` are the states before
    ``start``, ``(K, N, H)``; ``prefix`` ``(N, T, H)`` gives the clean outputs
    before ``start``. Returns all outputs ``(K * N, T, H)``, the final ``h``, ``c``
    and (with ``keep_c``) every ``c``.
    """
    module = rnn(module)
    _, w_hh, _, b_hh = weights(module, index, direction)
    length = x.shape[1]
    rows = x.shape[0] if not shared else x.shape[0] * n_blocks
    k_rows = 1 if shared else n_blocks
    edge_in = edits.edge_in if edits else None
    edge_rec = edits.edge_rec if edits else None
    node = edits.node if edits else None
    in_active, rec_active = _active(edge_in, length), _active(edge_rec, length)
    node_steps = set(node.steps or ()) if node else set()
    out = xproj.new_empty(n_blocks, rows // n_blocks, length, module.hidden_size)
    if start:
        assert prefix is not None
        out[:, :, :start] = prefix[:, :start]
    cells: list[torch.Tensor] = []
    for t in range(start, length):
        xp = xproj[:, t if shared else t - start].view(k_rows, -1, xproj.shape[-1])
        if edge_in is not None and in_active[t]:
            xp = _add_edge_delta(xp, x[:, t], edge_in, t, n_blocks, shared)
        hp = F.linear(h, w_hh, b_hh)
        if edge_rec is not None and rec_active[t]:
            hp = _add_edge_delta(hp, h.reshape(-1, h.shape[-1]), edge_rec, t, n_blocks, False)
        h, c = cell(module, xp, hp, h, c)
        if node is not None and t in node_steps:
            h = h.clone()
            apply_nodes_step(h.view(-1, h.shape[-1]), node, t, n_blocks)
        out[:, :, t] = h
        if keep_c:
            assert c is not None
            cells.append(c)
    cells_out = torch.stack(cells, 2).flatten(0, 1) if keep_c else None
    return out.flatten(0, 1), h, c, cells_out


def run_projected(
    module: nn.Module,
    xproj: torch.Tensor,
    x: torch.Tensor,
    shared: bool,
    h: torch.Tensor,
    c: torch.Tensor,
    m: torch.Tensor,
    start: int,
    n_blocks: int,
    cell_edits: LayerEdits | None,
    proj_edits: LayerEdits | None,
    prefix: torch.Tensor | None = None,
    keep: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Steps ``start..T-1`` of a one-layer LSTM with ``proj_size``.

    As :func:`run_layer`; ``h`` ``(K, N, P)`` is the state before ``start`` (the
    projection the recurrence reads), ``c`` ``(K, N, H)`` the cell state and ``m``
    ``(K, N, H)`` the cell's units before ``start`` (zeros before step 0), which the
    cell's recurrent edges read. Per step: the gates from ``W_ih x`` and ``W_hh h``
    plus the cell's edge deltas, the cell's node edits on ``m``, then ``h = W_hr m``
    with the projection's node edits (the state) and, for the output only, its edge
    deltas. Returns the outputs ``(K * N, T, P)``, the last output ``h``, ``c`` and
    (with ``keep``) every ``m`` and ``c`` ``(K * N, T, H)``.
    """
    module = rnn(module)
    _, w_hh, _, b_hh = weights(module, 0)
    w_hr = projection_weight(module)
    length, hidden, width = x.shape[1], module.hidden_size, proj_size(module)
    rows = x.shape[0] if not shared else x.shape[0] * n_blocks
    k_rows = 1 if shared else n_blocks
    edge_in = cell_edits.edge_in if cell_edits else None
    edge_rec = cell_edits.edge_rec if cell_edits else None
    node = cell_edits.node if cell_edits else None
    proj_edge = proj_edits.edge_in if proj_edits else None
    proj_node = proj_edits.node if proj_edits else None
    in_active, rec_active = _active(edge_in, length), _active(edge_rec, length)
    proj_active = _active(proj_edge, length)
    node_steps = set(node.steps or ()) if node else set()
    proj_steps = set(proj_node.steps or ()) if proj_node else set()
    out = xproj.new_empty(n_blocks, rows // n_blocks, length, width)
    if start:
        assert prefix is not None
        out[:, :, :start] = prefix[:, :start]
    cells: list[torch.Tensor] = []
    ms: list[torch.Tensor] = []
    h_out = h
    for t in range(start, length):
        xp = xproj[:, t if shared else t - start].view(k_rows, -1, xproj.shape[-1])
        if edge_in is not None and in_active[t]:
            xp = _add_edge_delta(xp, x[:, t], edge_in, t, n_blocks, shared)
        hp = F.linear(h, w_hh, b_hh)
        if edge_rec is not None and rec_active[t]:
            hp = _add_edge_delta(hp, m.reshape(-1, hidden), edge_rec, t, n_blocks, False)
        m, c_next = cell(module, xp, hp, h, c)
        assert c_next is not None
        c = c_next
        if node is not None and t in node_steps:
            m = m.clone()
            apply_nodes_step(m.view(-1, hidden), node, t, n_blocks)
        h = F.linear(m, w_hr)
        h_out = h
        if proj_edge is not None and proj_active[t]:
            h_out = _add_edge_delta(h, m.reshape(-1, hidden), proj_edge, t, n_blocks, False)
        if proj_node is not None and t in proj_steps:
            apply_nodes_step(h.view(-1, width), proj_node, t, n_blocks)
            if h_out is not h:
                apply_nodes_step(h_out.view(-1, width), proj_node, t, n_blocks)
        out[:, :, t] = h_out
        if keep:
            cells.append(c)
            ms.append(m)
    if start == length:
        h_out = h
    m_out = torch.stack(ms, 2).flatten(0, 1) if keep else None
    c_out = torch.stack(cells, 2).flatten(0, 1) if keep else None
    return out.flatten(0, 1), h_out, c, m_out, c_out


def _projected_cache(module: nn.RNNBase, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[LayerCache]:
    x, h0, c0 = split_args(module, args, kwargs)
    assert c0 is not None
    w_ih, _, b_ih, _ = weights(module, 0)
    xproj = F.linear(x, w_ih, b_ih)
    m0 = x.new_zeros(1, x.shape[0], module.hidden_size)
    h, _, _, m, c = run_projected(module, xproj, x, False, h0[0].unsqueeze(0), c0[0].unsqueeze(0), m0, 0, 1, None,
                                  None, keep=True)
    return [LayerCache(x, xproj, h, c, h0[0], c0[0], m)]


def _run_projected_module(module: nn.RNNBase, args: tuple[Any, ...], kwargs: dict[str, Any],
                          edits: dict[int, LayerEdits], n_blocks: int, cache: list[LayerCache] | None) -> Any:
    """:func:`run_module` for an LSTM with ``proj_size``: edits ``0`` on the cell, ``1`` on the projection."""
    cell_edits, proj_edits = edits.get(0), edits.get(1)
    if cache is None:
        x, h0, c0 = split_args(module, args, kwargs)
        assert c0 is not None
        if x.shape[0] % n_blocks:
            raise InterventionError(f"{x.shape[0]} rows do not split into {n_blocks} intervention blocks")
        w_ih, _, b_ih, _ = weights(module, 0)
        rows = x.shape[0] // n_blocks
        h = h0[0].view(n_blocks, rows, -1)
        c = c0[0].view(n_blocks, rows, -1)
        m = x.new_zeros(n_blocks, rows, module.hidden_size)
        out, h, c, _, _ = run_projected(module, F.linear(x, w_ih, b_ih), x, False, h, c, m, 0, n_blocks, cell_edits,
                                        proj_edits)
        return format_output(module, out, [h.reshape(-1, h.shape[-1])], [c.reshape(-1, c.shape[-1])])
    layer = cache[0]
    assert layer.m is not None and layer.c is not None and layer.c0 is not None and layer.xproj is not None
    length = layer.x.shape[1]
    start = min(e.first_step for e in (cell_edits, proj_edits) if e is not None) if edits else length
    if start == length:
        return format_output(module, _tile(layer.h, n_blocks), [_tile(layer.h[:, -1], n_blocks)],
                             [_tile(layer.c[:, -1], n_blocks)])
    h = (layer.h[:, start - 1] if start else layer.h0).expand(n_blocks, -1, -1)
    c = (layer.c[:, start - 1] if start else layer.c0).expand(n_blocks, -1, -1)
    m = (layer.m[:, start - 1] if start else torch.zeros_like(layer.m[:, 0])).expand(n_blocks, -1, -1)
    out, h, c, _, _ = run_projected(module, layer.xproj, layer.x, True, h, c, m, start, n_blocks, cell_edits,
                                    proj_edits, layer.h)
    return format_output(module, out, [h.reshape(-1, h.shape[-1])], [c.reshape(-1, c.shape[-1])])


def _tile(t: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """A fresh copy of ``t`` repeated ``n_blocks`` times along the batch axis."""
    return t.repeat(n_blocks, *([1] * (t.dim() - 1)))


def clean_cache(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[LayerCache]:
    """Unroll the module once on clean inputs and keep every layer's states.

    Bidirectional modules keep each layer's inputs and outputs ``(N, T, 2 H)`` only
    (they are re-run from the first step).
    """
    module = rnn(module)
    if proj_size(module):
        return _projected_cache(module, args, kwargs)
    if module.bidirectional:
        return _bidirectional_cache(module, args, kwargs)
    x, h0, c0 = split_args(module, args, kwargs)
    caches = []
    for index in range(module.num_layers):
        w_ih, _, b_ih, _ = weights(module, index)
        xproj = F.linear(x, w_ih, b_ih)
        c_init = None if c0 is None else c0[index]
        h, _, _, cells = run_layer(module, index, xproj, x, False, h0[index].unsqueeze(0),
                                   None if c_init is None else c_init.unsqueeze(0), 0, 1, None,
                                   keep_c=c_init is not None)
        caches.append(LayerCache(x, xproj, h, cells, h0[index], c_init))
        x = h
    return caches


def _flip_steps(t: torch.Tensor | None, axis: int) -> torch.Tensor | None:
    return None if t is None else t.flip(axis)


def direction_edits(edits: LayerEdits | None, direction: int, hidden: int, length: int) -> LayerEdits | None:
    """The edits of one direction of a bidirectional layer, in that direction's own unit and time order."""
    if edits is None:
        return None
    out = LayerEdits(edits.layer, edits.n_blocks)
    node = edits.node
    if node is not None:
        keep = (node.units // hidden) == direction
        if bool(keep.any()):
            scale, shift = node.scale[keep], node.shift[keep]
            steps = node.steps
            if direction:
                scale, shift = scale.flip(1), shift.flip(1)
                steps = sorted(length - 1 - t for t in steps or ())
            out.node = NodeEdits(node.blocks[keep], node.units[keep] - direction * hidden, scale.contiguous(),
                                 shift.contiguous(), steps)
    for name in ("edge_in", "edge_rec"):
        edge = getattr(edits, name)
        if edge is None:
            continue
        rows = edge.coef.shape[-1] // 2
        coef = edge.coef[..., direction * rows : (direction + 1) * rows]
        features = edge.features
        if name == "edge_rec":
            inside = (features // hidden) == direction
            coef = coef * inside[:, :, None].to(coef.device, coef.dtype)
            features = torch.where(inside, features - direction * hidden, torch.zeros_like(features))
        edge_steps = _flip_steps(edge.steps, 1) if direction else edge.steps
        setattr(out, name, EdgeEdits(edge.blocks, features, coef.contiguous(), edge_steps, edge.full))
    return out


def run_module(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], edits: dict[int, LayerEdits],
               n_blocks: int, cache: list[LayerCache] | None = None) -> Any:
    """The module's output on ``K * N`` rows with each block's edits.

    Without ``cache`` every layer is unrolled from step 0 on the given inputs.
    With it (clean activations of the N samples) the call arguments are ignored:
    layers below the first edited one are reused, and the rest resume at the first
    step where anything changes.
    """
    module = rnn(module)
    if module.training and module.dropout and module.num_layers > 1:
        raise InterventionError("recurrent dropout is random in training mode; call model.eval() first")
    if proj_size(module):
        return _run_projected_module(module, args, kwargs, edits, n_blocks, cache)
    if module.bidirectional:
        return _run_bidirectional(module, args, kwargs, edits, n_blocks)
    lstm = has_cell_state(module)
    if cache is None:
        x, h0, c0 = split_args(module, args, kwargs)
        if x.shape[0] % n_blocks:
            raise InterventionError(f"{x.shape[0]} rows do not split into {n_blocks} intervention blocks")
        length = x.shape[1]
    else:
        length = cache[0].x.shape[1]
    finals_h: list[torch.Tensor] = []
    finals_c: list[torch.Tensor] = []
    prev_out: torch.Tensor | None = None
    prev_start = length
    for index in range(module.num_layers):
        edit = edits.get(index)
        w_ih, _, b_ih, _ = weights(module, index)
        prefix = None
        c: torch.Tensor | None
        if cache is None:
            start = 0
            inputs = x if prev_out is None else prev_out
            xproj, shared = F.linear(inputs, w_ih, b_ih), False
            h = h0[index].view(n_blocks, -1, h0.shape[-1])
            c = None if c0 is None else c0[index].view(n_blocks, -1, c0.shape[-1])
        else:
            layer = cache[index]
            start = min(prev_start, edit.first_step if edit else length)
            if start == length:
                finals_h.append(_tile(layer.h[:, -1], n_blocks))
                if lstm:
                    assert layer.c is not None
                    finals_c.append(_tile(layer.c[:, -1], n_blocks))
                continue
            prefix = layer.h
            h = (layer.h[:, start - 1] if start else layer.h0).expand(n_blocks, -1, -1)
            c = None
            if lstm:
                assert layer.c is not None and layer.c0 is not None
                c = (layer.c[:, start - 1] if start else layer.c0).expand(n_blocks, -1, -1)
            if prev_out is None:
                assert layer.xproj is not None
                xproj, inputs, shared = layer.xproj, layer.x, True
            else:
                inputs, shared = prev_out, False
                xproj = F.linear(inputs[:, start:], w_ih, b_ih)
        prev_out, h, c, _ = run_layer(module, index, xproj, inputs, shared, h, c, start, n_blocks, edit, prefix)
        prev_start = start
        finals_h.append(h.reshape(-1, h.shape[-1]))
        if lstm:
            assert c is not None
            finals_c.append(c.reshape(-1, c.shape[-1]))
    if prev_out is None:
        assert cache is not None
        prev_out = _tile(cache[-1].h, n_blocks)
    return format_output(module, prev_out, finals_h, finals_c if lstm else None)


def _run_bidirectional(module: nn.RNNBase, args: tuple[Any, ...], kwargs: dict[str, Any],
                       edits: dict[int, LayerEdits], n_blocks: int) -> Any:
    """Both directions of every layer from step 0 on ``K * N`` rows (the backward one over reversed time)."""
    lstm = has_cell_state(module)
    x, h0, c0 = split_args(module, args, kwargs)
    if x.shape[0] % n_blocks:
        raise InterventionError(f"{x.shape[0]} rows do not split into {n_blocks} intervention blocks")
    length, hidden = x.shape[1], module.hidden_size
    finals_h: list[torch.Tensor] = []
    finals_c: list[torch.Tensor] = []
    inputs = x
    for index in range(module.num_layers):
        outs = []
        for direction in (0, 1):
            w_ih, _, b_ih, _ = weights(module, index, direction)
            seq = inputs.flip(1) if direction else inputs
            state = index * 2 + direction
            h = h0[state].view(n_blocks, -1, hidden)
            c = None if c0 is None else c0[state].view(n_blocks, -1, hidden)
            edit = direction_edits(edits.get(index), direction, hidden, length)
            out, h, c, _ = run_layer(module, index, F.linear(seq, w_ih, b_ih), seq, False, h, c, 0, n_blocks, edit,
                                     direction=direction)
            outs.append(out.flip(1) if direction else out)
            finals_h.append(h.reshape(-1, hidden))
            if lstm:
                assert c is not None
                finals_c.append(c.reshape(-1, hidden))
        inputs = torch.cat(outs, -1)
    return format_output(module, inputs, finals_h, finals_c if lstm else None)


def _bidirectional_cache(module: nn.RNNBase, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[LayerCache]:
    x, h0, c0 = split_args(module, args, kwargs)
    caches = []
    for index in range(module.num_layers):
        outs = []
        for direction in (0, 1):
            w_ih, _, b_ih, _ = weights(module, index, direction)
            seq = x.flip(1) if direction else x
            state = index * 2 + direction
            c = None if c0 is None else c0[state].unsqueeze(0)
            out, _, _, _ = run_layer(module, index, F.linear(seq, w_ih, b_ih), seq, False, h0[state].unsqueeze(0), c,
                                     0, 1, None, direction=direction)
            outs.append(out.flip(1) if direction else out)
        h = torch.cat(outs, -1)
        caches.append(LayerCache(x, None, h, None, h0[2 * index], None))
        x = h
    return caches
