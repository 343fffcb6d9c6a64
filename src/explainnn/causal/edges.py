"""Unit-to-unit edges of a network and the exact, batched, differentiable edge-ablation forward.

An *edge* runs from one unit of a parent to one unit of a child on every link of
the layer DAG (:attr:`~explainnn.interventions.layers.LayerInfo.parents`): the
input's units (input channels of a conv, features of a Linear or recurrent layer)
into the first layers, consecutive layers, concatenations, skip and path links,
grouped and depthwise convolutions (only edges within a group exist), both
directions of bidirectional recurrent layers, and for recurrent layers also
hidden-to-hidden across steps (unit ``i`` at step ``t - 1`` to unit ``j`` at step
``t``, within one direction). Convolution edges are channel-level.

Ablating the edge ``i -> j`` replaces only what flows along it: the input features
of child unit ``j`` that parent unit ``i`` feeds take their *ablated* value, while
``j``'s other inputs and ``i``'s other edges keep their current values. Parents'
own values already reflect the ablation of their incoming edges, so a mask over
all edges defines one forward pass (mixing happens at each child's input, as in
Edge Pruning). For a Linear child with mask ``M[j, i]`` in ``[0, 1]`` (1 keeps):
``y = W x_abl + b + (W * M)(x - x_abl)``; convolutions and the input-to-hidden
and hidden-to-hidden weights of recurrent layers are masked the same way (every
gate of a unit shares its mask).

Ablated values:

* ``"patch"``: the child's input features in the model's forward on a
  counterfactual input (one counterfactual row per input row); for recurrent
  edges the counterfactual run's ``h_{t-1}``.
* ``"mean"``: their mean over reference inputs (the model's forward); recurrent
  edges: the mean of ``h_{t-1}`` over the reference inputs.
* ``"zero"``: the child's input features fed by the parent unit are set to 0
  (whatever parameter-free operations lie between); recurrent edges carry
  ``h_{t-1} = 0``.

On a *path* link (features shared by several parents, e.g. a residual add then a
ReLU, or attention pooling) an edge replaces the parent unit's output by its
ablated value (``"patch"``: its output on the counterfactual; ``"mean"``: its mean
output over the reference inputs; ``"zero"``: 0) and the weight-free path from the
parents into the child is recomputed for every child unit with its own mixture of
parent values.

How the ``K`` masks of one call are run: without gradients, masks that agree on
every masked layer up to a layer (in execution order) give that layer the same
input, so each layer is computed once per *class* of such masks; a layer that
reads only the input computes each input channel's contribution to each unit
once per input chunk (kept across calls) and mixes them per mask. For models
whose traced graph is one chain (every operation reads one value and is read
once: LeNet, VGG-style stacks, MLPs) the forward runs on one block of rows per
class, so a batch of single-edge removals from one circuit costs about one
forward of the layers after each removed edge; other models run ``K`` blocks of
rows and copy each class's values to its blocks. Each masked Linear or conv
layer is one (batched or grouped) product: ``W x_abl + b`` once, plus ``(W * M)
(x - x_abl)`` per class.

An LSTM with ``proj_size`` has the edges its unit kind defines: the cell's input and recurrent
edges (``W_hh W_hr``, from ``m_{t-1}``) and the projection's edges from the cell
(``W_hr``); an ablated recurrent edge carries the source's ``m_{t-1}``, an ablated
projection edge its ``m_t``.

Refused, in one line naming the module, before any work: a layer that runs more
than once per forward pass, a path link into a recurrent layer or from the input,
and path links in a model ``torch.fx`` cannot trace (the shared path is rerun from
the traced graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explainnn.causal.edges_path import PathRegion, mix, select_blocks
from explainnn.errors import InterventionError
from explainnn.interventions.fxsplit import GraphSplit
from explainnn.interventions.hooks import ModelPatch
from explainnn.interventions.kinds.attention import (
    HeadOutputs,
    attention_output,
    mha,
    parse_call,
    project,
    projection_weights,
    segments,
)
from explainnn.interventions.kinds.cell_loop import call_state, cell_weights
from explainnn.interventions.kinds.recurrent import (
    cell,
    format_output,
    gates,
    has_cell_state,
    proj_size,
    projection_weight,
    rnn,
    split_args,
    weights,
)
from explainnn.interventions.layers import INPUT, LayerInfo, find_layers, trace_forward, unsupported_layers
from explainnn.interventions.recurrent import clean_cache

ABLATIONS = ("patch", "mean", "zero")
EDGE_KINDS = ("weights", "path", "recurrent", "input")
WITHIN = "\0recurrent"
"""The key of a recurrent layer's own hidden-to-hidden edges among its parents' edge positions."""
DEFAULT_BUDGET_MB = 512
"""Activation budget of one chunk of rows when the forward does not build a graph."""


@dataclass(frozen=True)
class Edges:
    """Every edge of a model's layer DAG, in a fixed order.

    Edge ``e`` runs from unit ``parent_unit[e]`` of ``parent_layer[e]`` (``"input"``
    for the model's input units) to unit ``child_unit[e]`` of ``child_layer[e]``.
    ``kind[e]`` is ``"input"`` (from the input), ``"weights"`` (through the child's
    weights on features fed by this parent alone), ``"path"`` (features shared with
    other parents, e.g. a residual add) or ``"recurrent"`` (hidden-to-hidden across
    steps; parent and child layer are the same recurrent layer).
    """

    parent_layer: tuple[str, ...]
    parent_unit: np.ndarray
    child_layer: tuple[str, ...]
    child_unit: np.ndarray
    kind: tuple[str, ...]

    @property
    def n(self) -> int:
        """The number of edges."""
        return len(self.kind)

    def ids(self) -> list[str]:
        """Edge labels ``"parent:unit->child:unit"``, e.g. ``"conv1:0->conv2:3"`` or ``"input:0->conv1:2"``."""
        return [
            f"{p}:{int(i)}->{c}:{int(j)}"
            for p, i, c, j in zip(self.parent_layer, self.parent_unit, self.child_layer, self.child_unit)
        ]

    def into_target(self, output_layer: str, target: int | Sequence[int]) -> np.ndarray:
        """Boolean mask over the edges: ``False`` for edges into units of ``output_layer`` other than ``target``.

        Parameters
        ----------
        output_layer : str
            The layer whose units are the model's outputs (usually the last one).
        target : int or sequence of int
            The output unit(s) to keep edges into (several for a logit difference).

        Returns
        -------
        numpy.ndarray
            ``(n,)`` bool; edges into other layers are always ``True``.
        """
        if output_layer not in set(self.child_layer):
            valid = ", ".join(dict.fromkeys(self.child_layer))
            raise InterventionError(f"no edges run into layer '{output_layer}'; layers with edges: {valid}")
        wanted = np.atleast_1d(np.asarray(target, dtype=np.int64))
        into = np.asarray([c == output_layer for c in self.child_layer], dtype=bool)
        return ~into | np.isin(self.child_unit, wanted)

    def subset(self, keep: np.ndarray) -> "Edges":
        """The edges where ``keep`` (bool ``(n,)`` or integer positions) selects them, in the same order.

        Parameters
        ----------
        keep : numpy.ndarray
            A boolean mask over the edges or integer positions.

        Returns
        -------
        Edges
        """
        index = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)
        return Edges(
            tuple(self.parent_layer[i] for i in index), self.parent_unit[index],
            tuple(self.child_layer[i] for i in index), self.child_unit[index],
            tuple(self.kind[i] for i in index),
        )


def _check_model(model: nn.Module, example_input: torch.Tensor, layers: list[LayerInfo]) -> None:
    skipped = unsupported_layers(model, example_input)
    if skipped:
        name, reason = skipped[0]
        raise InterventionError(f"edge ablation cannot handle module '{name}': {reason}")
    by_name = {layer.name: layer for layer in layers}
    for layer in layers:
        if layer.calls != 1:
            raise InterventionError(
                f"edge ablation cannot handle module '{layer.module_name}': it runs {layer.calls} times per forward pass"
            )
        for link in layer.parents:
            if link.via != "path":
                continue
            if layer.unit_kind.stateful:
                raise InterventionError(
                    f"edge ablation cannot handle module '{layer.module_name}': its inputs are shared by several "
                    "parents (a path link into a recurrent layer)"
                )
            if link.name == INPUT:
                raise InterventionError(
                    f"edge ablation cannot handle module '{layer.module_name}': the input reaches it together with "
                    "other parents along a shared path"
                )
            parent = by_name.get(link.name)
            if parent is not None and parent.unit_kind.batch_axis(parent.module) != 0:
                raise InterventionError(
                    f"edge ablation cannot handle module '{layer.module_name}': its parent "
                    f"'{parent.module_name}' reaches it along a shared path and is not batch_first (pass "
                    "batch_first=True)"
                )


def _child_layers(all_layers: list[LayerInfo], names: Sequence[str] | None) -> list[LayerInfo]:
    candidates = [layer for layer in all_layers if not layer.unit_kind.reads_ids]
    if names is None:
        return candidates
    by_name = {layer.name: layer for layer in candidates}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        valid = ", ".join(by_name) or "none"
        raise InterventionError(f"unknown layer '{unknown[0]}' for edges; layers with incoming edges: {valid}")
    wanted = set(names)
    return [layer for layer in candidates if layer.name in wanted]


def _link_pairs(layer: LayerInfo, unit_map: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(parent units, child units)`` of the edges of one link, parent-major (groups respected)."""
    groups = layer.unit_kind.groups(layer)
    parents, children = [], []
    all_children = np.arange(layer.n_units)
    per_in = layer.in_features // groups
    per_out = layer.n_units // groups
    for unit, features in enumerate(unit_map):
        if not features:
            continue
        if groups > 1:
            reached = np.unique(np.asarray(features) // per_in)
            kids = all_children[np.isin(all_children // per_out, reached)]
        else:
            kids = all_children
        parents.append(np.full(len(kids), unit))
        children.append(kids)
    if not parents:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(parents).astype(np.int64), np.concatenate(children).astype(np.int64)


def _recurrent_pairs(layer: LayerInfo) -> tuple[np.ndarray, np.ndarray]:
    """Hidden-to-hidden edges ``(i, j)`` within each direction, parent-major."""
    hidden = layer.n_units // layer.directions
    parents: list[np.ndarray] = []
    children: list[np.ndarray] = []
    for direction in range(layer.directions):
        units: np.ndarray = np.arange(direction * hidden, (direction + 1) * hidden)
        parents.append(np.repeat(units, hidden))
        children.append(np.tile(units, hidden))
    return np.concatenate(parents).astype(np.int64), np.concatenate(children).astype(np.int64)


def enumerate_edges(model: nn.Module, example_input: torch.Tensor, *,
                    layers: Sequence[str] | None = None) -> Edges:
    """Every edge of the model's layer DAG, in a fixed order.

    Child layers come in execution order; within a child, its parent links in
    :attr:`LayerInfo.parents` order, then (recurrent layers) the hidden-to-hidden
    edges; within a link, parent-major.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    example_input : torch.Tensor
        A batch in the form the model's forward takes (one sample is enough).
    layers : sequence of str, optional
        Child layers whose incoming edges are listed (default: every layer but
        embeddings, which read token ids).

    Returns
    -------
    Edges

    Raises
    ------
    InterventionError
        For models with a pattern edge ablation cannot compute exactly (a layer
        run several times, a path link into a recurrent layer or from the
        input), naming the module.
    """
    all_layers = find_layers(model, example_input)
    _check_model(model, example_input, all_layers)
    p_layer: list[str] = []
    c_layer: list[str] = []
    kinds: list[str] = []
    p_units: list[np.ndarray] = []
    c_units: list[np.ndarray] = []
    for layer in _child_layers(all_layers, layers):
        for link in layer.parents:
            parents, children = _link_pairs(layer, link.unit_map)
            kind = "input" if link.name == INPUT else link.via
            p_layer.extend([link.name] * len(parents))
            c_layer.extend([layer.name] * len(parents))
            kinds.extend([kind] * len(parents))
            p_units.append(parents)
            c_units.append(children)
        if layer.unit_kind.recurrent_edges(layer):
            parents, children = _recurrent_pairs(layer)
            p_layer.extend([layer.name] * len(parents))
            c_layer.extend([layer.name] * len(parents))
            kinds.extend(["recurrent"] * len(parents))
            p_units.append(parents)
            c_units.append(children)
    empty = np.zeros(0, dtype=np.int64)
    return Edges(
        tuple(p_layer), np.concatenate(p_units) if p_units else empty,
        tuple(c_layer), np.concatenate(c_units) if c_units else empty, tuple(kinds),
    )


# ---------------------------------------------------------------------------------------------------------------
# Mask tables: which edge masks each weight entry of a child


@dataclass
class _ChildTable:
    """Per child layer: edge positions (``n`` = keep) for the entries of its weights."""

    layer: LayerInfo
    weight_index: torch.Tensor | None = None
    """Linear ``(C_out, C_in)``; conv ``(C_out, C_in / groups)``; recurrent: per direction ``(G H, F)``."""
    ih: list[torch.Tensor] = field(default_factory=list)
    hh: list[torch.Tensor] = field(default_factory=list)
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Positions of all edges into this child (for the all-kept shortcut)."""
    path: list[tuple[LayerInfo, torch.Tensor]] = field(default_factory=list)
    """Per parent on a path link: ``(parent units, units)`` edge positions."""
    path_features: torch.Tensor | None = None
    """``(in_features,)`` bool: the input features shared by several parents."""
    roots: list[LayerInfo] = field(default_factory=list)
    """Every parent layer of a child with path links (the roots of its weight-free path)."""


def _pair_table(n_parent: int, n_child: int, parents: np.ndarray, children: np.ndarray,
                positions: np.ndarray, keep: int) -> np.ndarray:
    table = np.full((n_parent, n_child), keep, dtype=np.int64)
    table[parents, children] = positions
    return table


def _feature_index(layer: LayerInfo, edges: Edges, positions_by_link: dict[str, np.ndarray], keep: int) -> np.ndarray:
    """``(units, in_features)``: the edge masking each (child unit, input feature) pair; ``keep`` where none."""
    index = np.full((layer.n_units, layer.in_features), keep, dtype=np.int64)
    for link in layer.parents:
        positions = positions_by_link.get(link.name)
        if link.via == "path" or positions is None or not len(positions):
            continue
        table = _pair_table(link.n_units, layer.n_units, edges.parent_unit[positions],
                            edges.child_unit[positions], positions, keep)
        for unit, features in enumerate(link.unit_map):
            if features:
                index[:, list(features)] = table[unit][:, None]
    return index


def _tables(model_layers: list[LayerInfo], edges: Edges) -> dict[str, _ChildTable]:
    keep = edges.n
    by_child: dict[str, dict[str, list[int]]] = {}
    for e, (parent, child, via) in enumerate(zip(edges.parent_layer, edges.child_layer, edges.kind)):
        key = WITHIN if via == "recurrent" else parent
        by_child.setdefault(child, {}).setdefault(key, []).append(e)
    known = {layer.name: layer for layer in model_layers}
    tables: dict[str, _ChildTable] = {}
    for child, by_parent in by_child.items():
        if child not in known:
            raise InterventionError(f"the edges name layer '{child}', which the model does not have")
        layer = known[child]
        positions = {name: np.asarray(pos, dtype=np.int64) for name, pos in by_parent.items()}
        valid = {link.name for link in layer.parents} | ({WITHIN} if layer.unit_kind.recurrent_edges(layer) else set())
        for name in positions:
            if name not in valid:
                raise InterventionError(f"'{name}' is not a parent of layer '{child}' in this model")
        table = _ChildTable(layer, positions=np.concatenate(list(positions.values())))
        index = _feature_index(layer, edges, positions, keep)
        if any(link.via == "path" for link in layer.parents):
            _path_table(table, layer, known, edges, positions, keep)
        if layer.unit_kind.recurrent_edges(layer):
            hidden, n_gates = layer.n_units // layer.directions, gates(layer.module)
            rec = positions.get(WITHIN, np.zeros(0, dtype=np.int64))
            rec_table = _pair_table(layer.n_units, layer.n_units, edges.parent_unit[rec], edges.child_unit[rec], rec, keep)
            for direction in range(layer.directions):
                block = slice(direction * hidden, (direction + 1) * hidden)
                table.ih.append(torch.from_numpy(np.tile(index[block], (n_gates, 1))))
                table.hh.append(torch.from_numpy(np.tile(rec_table[block, block].T, (n_gates, 1))))
        elif layer.unit_kind.spatial:
            groups = layer.unit_kind.groups(layer)
            per_in, per_out = layer.in_features // groups, layer.n_units // groups
            rows = np.arange(layer.n_units)
            cols = (rows // per_out)[:, None] * per_in + np.arange(per_in)[None, :]
            table.weight_index = torch.from_numpy(index[rows[:, None], cols])
        else:
            table.weight_index = torch.from_numpy(index)
        tables[child] = table
    return tables


def _path_table(table: _ChildTable, layer: LayerInfo, known: dict[str, LayerInfo], edges: Edges,
                positions: dict[str, np.ndarray], keep: int) -> None:
    shared = np.zeros(layer.in_features, dtype=bool)
    for link in layer.parents:
        if link.name != INPUT:
            table.roots.append(known[link.name])
        if link.via != "path":
            continue
        for features in link.unit_map:
            shared[list(features)] = True
        pos = positions.get(link.name, np.zeros(0, dtype=np.int64))
        pair = _pair_table(link.n_units, layer.n_units, edges.parent_unit[pos], edges.child_unit[pos], pos, keep)
        table.path.append((known[link.name], torch.from_numpy(pair)))
    table.path_features = torch.from_numpy(shared)


# ---------------------------------------------------------------------------------------------------------------
# Ablation sources: the values ablated edges carry, computed once per batch


@dataclass
class _RecurrentSource:
    """Per internal layer: the ablated input ``x`` and, per direction, ``h_{t-1}`` in that direction's step order
    (with ``proj_size``: the cell's ``m_{t-1}``, zero before step 0, and ``cells`` its ``m_t``, what the projection's
    edges carry)."""

    x: list[torch.Tensor]
    prev: list[list[torch.Tensor]]
    cells: list[torch.Tensor] = field(default_factory=list)


@dataclass
class _Source:
    inputs: dict[str, torch.Tensor]
    states: dict[str, _RecurrentSource]
    outputs: dict[str, Any] = field(default_factory=dict)
    """Outputs of the parents on path links (module name -> output), for their ablated values."""


def _recurrent_source(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                      mean: bool) -> _RecurrentSource:
    module = rnn(module)
    _, h0, _ = split_args(module, args, kwargs)
    caches = clean_cache(module, args, kwargs)
    if proj_size(module):
        cache = caches[0]
        assert cache.m is not None
        prev = torch.cat([torch.zeros_like(cache.m[:, :1]), cache.m[:, :-1]], 1)
        if mean:
            return _RecurrentSource([cache.x.mean(0, keepdim=True)], [[prev.mean(0, keepdim=True)]],
                                    [cache.m.mean(0, keepdim=True)])
        return _RecurrentSource([cache.x], [[prev]], [cache.m])
    hidden = module.hidden_size
    directions = 2 if module.bidirectional else 1
    xs, prevs = [], []
    for index, cache in enumerate(caches):
        per_direction = []
        for direction in range(directions):
            seq = cache.h[..., direction * hidden:(direction + 1) * hidden]
            if direction:
                seq = seq.flip(1)
            start = h0[index * directions + direction].unsqueeze(1)
            prev = torch.cat([start, seq[:, :-1]], 1)
            per_direction.append(prev.mean(0, keepdim=True) if mean else prev)
        xs.append(cache.x.mean(0, keepdim=True) if mean else cache.x)
        prevs.append(per_direction)
    return _RecurrentSource(xs, prevs)


def _steps_source(calls: list[Any], mean: bool) -> _RecurrentSource:
    """A cell called once per step: every call's input ``x_t`` and the state ``h_{t-1}`` it received, ``(N, T, .)``."""
    parts = [call_state(call.module, call.args, call.kwargs) for call in calls]
    x = torch.stack([part[0] for part in parts], 1)
    prev = torch.stack([part[1] for part in parts], 1)
    if mean:
        return _RecurrentSource([x.mean(0, keepdim=True)], [[prev.mean(0, keepdim=True)]])
    return _RecurrentSource([x], [[prev]])


def _mean_output(layer: LayerInfo, value: Any) -> Any:
    return layer.unit_kind.mean_output(layer, value)


def _path_parents(layers: list[LayerInfo]) -> list[LayerInfo]:
    by_name = {layer.name: layer for layer in layers}
    found: dict[str, LayerInfo] = {}
    for layer in layers:
        for link in layer.parents:
            if link.via == "path" and link.name in by_name:
                found[link.name] = by_name[link.name]
    return list(found.values())


def _source(model: nn.Module, layers: list[LayerInfo], inputs: torch.Tensor, mean: bool) -> _Source:
    """Child inputs (and recurrent states) of every layer in the model's forward on ``inputs``."""
    with ModelPatch() as patch, torch.no_grad():
        patch.eval_mode(model)
        trace = trace_forward(model, inputs, keep=True).by_name()
        values: dict[str, torch.Tensor] = {}
        states: dict[str, _RecurrentSource] = {}
        for layer in layers:
            call = trace[layer.module_name][0]
            if layer.unit_kind.calls_are_steps:
                states[layer.module_name] = _steps_source(trace[layer.module_name], mean)
                continue
            if layer.unit_kind.stateful:
                if layer.module_name not in states:
                    states[layer.module_name] = _recurrent_source(layer.module, call.args, call.kwargs, mean)
                continue
            if layer.unit_kind.reads_ids:
                continue
            x = layer.unit_kind.ablation_input(layer, call.args, call.kwargs)
            values[layer.name] = _mean_rows(x) if mean else x
        outputs = {}
        for parent in _path_parents(layers):
            output = trace[parent.module_name][0].output
            outputs[parent.module_name] = _mean_output(parent, output) if mean else output
    return _Source(values, states, outputs)


def _mean_rows(value: Any) -> Any:
    """The mean over the batch of a child input (a tuple of inputs: each), batch axis kept."""
    if isinstance(value, tuple):
        return tuple(_mean_rows(item) for item in value)
    return value.mean(0, keepdim=True)


def _zero_source(layers: list[LayerInfo]) -> _Source:
    zero = torch.zeros(())
    states: dict[str, _RecurrentSource] = {}
    for layer in layers:
        if layer.unit_kind.calls_are_steps:
            states[layer.module_name] = _RecurrentSource([zero], [[zero]])
        elif layer.unit_kind.stateful and layer.module_name not in states:
            stack = rnn(layer.module).num_layers
            states[layer.module_name] = _RecurrentSource(
                [zero] * stack, [[zero] * layer.directions for _ in range(stack)], [zero] * stack)
    outputs = {parent.module_name: zero for parent in _path_parents(layers)}
    return _Source({layer.name: zero for layer in layers if not layer.unit_kind.stateful}, states, outputs)


def _rows(value: Any, rows: slice | torch.Tensor) -> Any:
    """Rows of a per-sample source value (a tuple of inputs: each); broadcast ones (mean, zero) are left as they are."""
    if isinstance(value, tuple):
        return tuple(_rows(item, rows) for item in value)
    return value if value.dim() == 0 or value.shape[0] == 1 else value[rows]


def _rows_output(value: Any, rows: slice | torch.Tensor) -> Any:
    """Rows of a source output (recurrent ``(seq, state)`` tuples: states on axis 1; attention: its heads, the only
    part an ablated attention output is read for)."""
    if isinstance(value, HeadOutputs):
        return HeadOutputs((None, None), None if value.heads is None else _rows(value.heads, rows))
    if isinstance(value, tuple):
        seq, state = value
        states = state if isinstance(state, tuple) else (state,)
        picked = tuple(s if s.shape[1] == 1 else s[:, rows] for s in states)
        return _rows(seq, rows), (picked if isinstance(state, tuple) else picked[0])
    return _rows(value, rows)


def _select_rows(source: _Source, rows: torch.Tensor) -> _Source:
    """The per-sample source of the samples ``rows`` (an index into the source's batch)."""
    states = {name: _RecurrentSource([_rows(x, rows) for x in value.x],
                                     [[_rows(p, rows) for p in prev] for prev in value.prev],
                                     [_rows(m, rows) for m in value.cells])
              for name, value in source.states.items()}
    return _Source({name: _rows(value, rows) for name, value in source.inputs.items()}, states,
                   {name: _rows_output(value, rows) for name, value in source.outputs.items()})


# ---------------------------------------------------------------------------------------------------------------
# The masked forward


def _base(module: nn.Module, x_abl: torch.Tensor, like: torch.Tensor, dense: bool = True) -> torch.Tensor:
    """The layer's output on its ablated input (``W x_abl + b``): one row per sample, one row (mean) or the bias.

    ``dense``: the units are on the last axis (not channels over a spatial map)."""
    if x_abl.dim() == 0:  # zero ablation: W 0 + b
        bias = module.bias
        if not isinstance(bias, torch.Tensor):
            return like.new_zeros(())
        if dense:
            return bias
        return bias.view(-1, *([1] * (like.dim() - 2)))
    return type(module).forward(module, x_abl)


def _linear_masked(module: nn.Module, weight: torch.Tensor, x: torch.Tensor, x_abl: torch.Tensor,
                   keep: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """``W x_abl + b + (W * keep)(x - x_abl)`` per block; ``keep`` ``(K, C_out, C_in)`` is the mask, ``weight``
    the layer's edge weight ``W`` (its kind's)."""
    xs = x.unflatten(0, (n_blocks, -1))
    base = _base(module, x_abl, x)
    diff = (xs - x_abl).flatten(1, -2)  # (K, R, F)
    delta = torch.bmm(diff, (weight * keep).transpose(1, 2)).view(*xs.shape[:-1], -1)
    return (delta + base).flatten(0, 1)


def _conv_masked(module: nn.Conv1d | nn.Conv2d, x: torch.Tensor, x_abl: torch.Tensor, keep: torch.Tensor,
                 n_blocks: int) -> torch.Tensor:
    """``conv(x_abl, W) + b + conv(x - x_abl, W * keep)`` per block; ``keep`` ``(K, C_out, C_in / groups)``."""
    weight = module.weight
    xs = x.unflatten(0, (n_blocks, -1))
    base = _base(module, x_abl, x, dense=False)
    diff = (xs - x_abl).movedim(0, 1)  # (N, K, C, ...)
    diff = diff.reshape(diff.shape[0], -1, *diff.shape[3:])
    kernel = (1,) * (weight.dim() - 2)
    masked = (weight * keep.view(*keep.shape, *kernel)).flatten(0, 1)
    delta = _conv(module, diff, masked, module.groups * n_blocks)
    delta = delta.unflatten(1, (n_blocks, -1)).movedim(1, 0)  # (K, N, C_out, ...)
    return (delta + base).flatten(0, 1)


def _conv(module: nn.Conv1d | nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The module's convolution (stride, padding, dilation) of ``x`` with ``weight``, no bias."""
    padding: Any = module.padding
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding = 0
    conv = F.conv1d if weight.dim() == 3 else F.conv2d
    return conv(x, weight, None, module.stride, padding, module.dilation, groups)


def _unit_contributions(module: nn.Conv1d | nn.Conv2d, diff: torch.Tensor) -> torch.Tensor:
    """``(N, C_out, C_in, ...)``: what each input channel adds to each output unit, the single-channel convolution
    ``W[j, i] * diff_i``, for a conv whose input is the same in every block."""
    weight = module.weight
    c_out, c_in = weight.shape[:2]
    per_channel = weight.transpose(0, 1).reshape(c_in * c_out, 1, *weight.shape[2:])
    out = _conv(module, diff, per_channel, c_in)  # (N, C_in * C_out, ...)
    return out.unflatten(1, (c_in, c_out)).transpose(1, 2)


def _input_masked(contributions: torch.Tensor, base: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A first conv's output per block from its per-unit contributions: ``base + sum_i keep[j, i] c[j, i]``."""
    delta = torch.einsum("nji...,kji->knj...", contributions, keep)
    return (delta + base).flatten(0, 1)


def _linear_from_input(module: nn.Module, weight: torch.Tensor, x: torch.Tensor, x_abl: torch.Tensor,
                       keep: torch.Tensor) -> torch.Tensor:
    """A dense layer reading only the input (``x``, one block's rows): ``W x_abl + b + (W * keep)(x - x_abl)``
    per block, the input difference shared by the blocks (``weight``: its kind's edge weight ``W``)."""
    diff = (x - x_abl).flatten(0, -2)  # (R, F)
    delta = torch.matmul(diff, (weight * keep).transpose(1, 2))  # (K, R, C_out)
    out = delta.view(len(keep), *x.shape[:-1], -1) + _base(module, x_abl, x)
    return out.flatten(0, 1)


CONTRIBUTION_ELEMENTS = 2**24
"""Largest per-channel contribution tensor (elements) a first convolution keeps across calls."""


def _small(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether a first convolution's per-channel contributions on ``x`` fit :data:`CONTRIBUTION_ELEMENTS`."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return int(x.numel() // max(1, x.shape[1]) * weight.shape[0] * weight.shape[1]) <= CONTRIBUTION_ELEMENTS


def _tensor_key(value: torch.Tensor) -> tuple:
    """Identity of a tensor's values while a reference to it is held (storage, view, version)."""
    return (value.data_ptr(), tuple(value.shape), tuple(value.stride()) if value.dim() else (), value.dtype,
            value._version)


class _Cache:
    """A few values keyed by tensors' identities; an entry holds references to its tensors so that their memory
    (and with it the key) cannot be reused by other tensors while it lives."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.entries: dict[tuple, tuple[Any, tuple]] = {}

    def get(self, key: tuple) -> Any:
        entry = self.entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: tuple, value: Any, refs: tuple) -> None:
        if len(self.entries) >= self.size:
            self.entries.pop(next(iter(self.entries)))
        self.entries[key] = (value, refs)


class _Forward:
    """One masked forward: the state its patched modules read.

    Without gradients, blocks (masks) that agree on every layer run so far carry the
    same values, so each layer is computed once per *class* of blocks (the masks'
    distinct restrictions to the layers up to it, in execution order) and copied to
    the other blocks of its class.
    """

    def __init__(self, masks: torch.Tensor, source: _Source, rows: slice, tables: dict[str, _ChildTable],
                 differentiable: bool, inputs: torch.Tensor, regions: dict[str, PathRegion],
                 frontiers: dict[str, Any], cache: "_Cache | None" = None, compact: bool = False) -> None:
        self.n_blocks = masks.shape[0]
        self.compact = compact and not differentiable
        self.inputs = inputs
        self.regions = regions
        self.frontiers = frontiers
        self.outputs: dict[str, Any] = {}
        self.keep_outputs = {parent.module_name for table in tables.values() for parent in table.roots}
        self.masks = torch.cat([masks, torch.ones_like(masks[:, :1])], 1)
        self.factor = self.masks - 1.0
        self.source = source
        self.rows = rows
        self.tables = tables
        self.differentiable = differentiable
        self.cache = cache
        self.classes = torch.zeros(self.n_blocks, dtype=torch.long, device=masks.device)

    def _kept(self, positions: np.ndarray, blocks: torch.Tensor | None = None) -> bool:
        """Whether every edge on ``positions`` is kept in every block (of ``blocks``); never when differentiating."""
        if self.differentiable:
            return False
        if not len(positions):
            return True
        factor = self.factor[:, torch.from_numpy(positions).to(self.factor.device)]
        return bool((factor if blocks is None else factor[blocks]).eq(0).all())

    def _split(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Refine the block classes by the masks on ``positions``.

        Returns the representative block of each new class, ``inverse`` (block ->
        new class; ``None`` when every block is its own class, in block order) and
        the class each representative had before (the rows its input sits in, in
        compact runs).
        """
        blocks = self.n_blocks
        if self.differentiable or blocks == 1:
            every = torch.arange(blocks, device=self.masks.device)
            return every, None, self.classes
        values = self.masks[:, torch.from_numpy(positions).to(self.masks.device)] if len(positions) else \
            self.masks[:, :0]
        key = torch.cat([self.classes[:, None].to(values.dtype), values], 1)
        _, inverse = torch.unique(key, dim=0, return_inverse=True)
        count = int(inverse.max()) + 1
        first = torch.full((count,), blocks, dtype=torch.long, device=inverse.device)
        first = first.scatter_reduce(0, inverse, torch.arange(blocks, device=inverse.device), "amin")
        before = self.classes[first]
        self.classes = inverse
        if not self.compact and count == blocks and bool((first == torch.arange(blocks, device=first.device)).all()):
            return first, None, before
        return first, inverse, before

    def layer(self, layer: LayerInfo):
        if layer.unit_kind.attention:
            return self._attention(layer)
        module = layer.module
        table = self.tables.get(layer.name)
        x_abl = _rows(self.source.inputs[layer.name], self.rows) if table is not None else None
        dense = not layer.unit_kind.spatial
        weight = layer.unit_kind.edge_weight(layer) if dense else None
        from_input = table is not None and all(link.name == INPUT for link in layer.parents) and \
            layer.unit_kind.groups(layer) == 1

        def forward(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
            if table is None:
                y = type(module).forward(module, x, *args, **kwargs)
            else:
                rep, inverse, before = self._split(table.positions)
                count = len(rep)
                # the rows of x: one block per block (tiled runs) or one per class so far (compact runs)
                xs = x.unflatten(0, (-1, len(self.inputs)))
                every = inverse is None  # every block is its own class, in order
                x_rep = x if every else xs[before if self.compact else rep].flatten(0, 1)
                if self._kept(table.positions, None if every else rep):
                    y = type(module).forward(module, x_rep, *args, **kwargs)
                else:
                    masks = self.masks if every else self.masks[rep]
                    assert table.weight_index is not None and x_abl is not None
                    keep = masks[:, table.weight_index.to(self.masks.device)]
                    abl = x_abl.to(x.dtype)
                    if weight is not None:
                        y = _linear_from_input(module, weight, xs[0], abl, keep) if from_input else \
                            _linear_masked(module, weight, x_rep, abl, keep, count)
                    elif from_input and _small(xs[0], module):
                        y = self._from_input(layer, xs[0], abl, keep, count)
                    else:
                        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
                        y = _conv_masked(module, x_rep, abl, keep, count)
                if inverse is not None and not self.compact:
                    y = y.unflatten(0, (count, -1))[inverse].flatten(0, 1)
                if table.path:
                    y = self._path_correction(table, x, y)
            if layer.module_name in self.keep_outputs:
                self.outputs[layer.module_name] = y
            return y

        return forward

    def record(self, layer: LayerInfo):
        """A hook keeping the output of a layer without incoming edges (an embedding) that roots a path link."""
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self.outputs[layer.module_name] = output

        return hook

    def _attention(self, layer: LayerInfo):
        """An attention layer's forward: each head's q/k/v pre-activations mixed per edge (weights edges on its
        projection rows, path edges by rerunning the shared path per head), then attention and the output
        projection; every block is computed (the block classes are refined for the layers after it)."""
        module = layer.module
        table = self.tables.get(layer.name)

        def forward(*args: Any, **kwargs: Any) -> Any:
            call = parse_call(module, args, kwargs)
            projected = project(module, call)
            if table is not None:
                if not self._kept(table.positions):
                    projected = self._attention_weights(layer, table, call, projected)
                if table.path:
                    projected = self._attention_paths(layer, table, call, projected)
                self._split(table.positions)
            y = attention_output(module, call, projected)
            if layer.module_name in self.keep_outputs:
                self.outputs[layer.module_name] = y
            return y

        return forward

    def _attention_weights(self, layer: LayerInfo, table: _ChildTable, call: Any,
                           projected: list[torch.Tensor]) -> list[torch.Tensor]:
        """``W x + b + (W * (M - 1))(x - x_abl)`` per q/k/v, ``M`` a head's edge masks over its rows."""
        assert table.weight_index is not None
        blocks, device = self.n_blocks, self.factor.device
        factor = self.factor[:, table.weight_index.to(device)]  # (K, heads, in_features)
        head_dim = mha(layer.module).head_dim
        ablated = _rows(self.source.inputs[layer.name], self.rows)
        out = []
        for part, x, abl, weight, (features, rows) in zip(
                projected, (call.query, call.key, call.value), _parts(ablated), projection_weights(layer.module),
                segments(layer.module)):
            per_row = factor[:, :, features].repeat_interleave(head_dim, 1).to(x.dtype)  # (K, E, width)
            diff = x.unflatten(0, (blocks, -1)) - abl.to(x.dtype)
            delta = torch.einsum("knlf,kef->knle", diff, weight * per_row)
            out.append(part + delta.flatten(0, 1))
        return out

    def _attention_paths(self, layer: LayerInfo, table: _ChildTable, call: Any,
                         projected: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each (mask, head) with a path edge not fully kept: its q/k/v rows read the child input rerun along the
        shared path with the parents mixed for that head (a self-attention's one input)."""
        if not call.self_attention:
            raise InterventionError(
                f"edge ablation cannot handle module '{layer.module_name}': path edges into attention need a "
                "self-attention (query, key and value one tensor)")
        found = self._path_rerun(table, call.query)
        if found is None:
            return projected
        k_r, j_r, diff = found
        module = mha(layer.module)
        heads, head_dim = module.num_heads, module.head_dim
        out = []
        for part, weight, (features, _) in zip(projected, projection_weights(module), segments(module)):
            shared = diff * table.path_features[features].to(diff.device, diff.dtype)  # type: ignore[index]
            rows = weight.view(heads, head_dim, -1)[j_r]  # (R, d, width)
            delta = torch.einsum("rnlf,rdf->rnld", shared, rows)
            view = part.unflatten(0, (self.n_blocks, -1)).unflatten(-1, (heads, head_dim))
            corr = torch.zeros_like(view)
            corr[k_r, :, :, j_r] = delta
            out.append((view + corr).flatten(-2).flatten(0, 1))
        return out

    def _path_rerun(self, table: _ChildTable, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(blocks, child units, rerun input - current input)`` of every (mask, child unit) pair with a path edge
        not fully kept (every pair when differentiating), or ``None`` when there is none."""
        layer, blocks, device = table.layer, self.n_blocks, self.factor.device
        factors = [self.factor[:, pairs.to(device)] for _, pairs in table.path]  # (K, parent units, units)
        if self.differentiable:
            active = torch.ones(blocks, layer.n_units, dtype=torch.bool, device=device)
        else:
            active = torch.stack([(f != 0).any(1) for f in factors]).any(0)
        k_r, j_r = torch.nonzero(active, as_tuple=True)
        count = len(k_r)
        if not count:
            return None
        path_factor = {parent.module_name: f[k_r, :, j_r] for (parent, _), f in zip(table.path, factors)}
        roots = {}
        for parent in table.roots:
            current = select_blocks(parent, self.outputs[parent.module_name], k_r, blocks)
            if parent.module_name in path_factor:
                ablated = _rows_output(self.source.outputs[parent.module_name], self.rows)
                current = mix(parent, current, ablated, path_factor[parent.module_name])
            roots[parent.module_name] = current
        region = self.regions[layer.name]
        rerun = region.run(roots, self.frontiers[layer.name], self.inputs, count).unflatten(0, (count, -1))
        return k_r, j_r, rerun - x.unflatten(0, (blocks, -1))[k_r]

    def _from_input(self, layer: LayerInfo, x: torch.Tensor, x_abl: torch.Tensor, keep: torch.Tensor,
                    count: int) -> torch.Tensor:
        """A conv that reads only the input (``x``, the same in every block): per-channel contributions, computed
        once per input chunk (cached on the untiled inputs)."""
        module = layer.module
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        if x.requires_grad or x_abl.requires_grad:  # gradients to the inputs (e.g. path-restricted IG): no cache
            return _input_masked(_unit_contributions(module, x - x_abl), _base(module, x_abl, x, dense=False), keep)
        key = ("input", layer.name, _tensor_key(self.inputs), _tensor_key(x_abl))
        found = self.cache.get(key) if self.cache is not None else None
        if found is None:
            with torch.no_grad():
                found = (_unit_contributions(module, x - x_abl), _base(module, x_abl, x, dense=False))
            if self.cache is not None:
                self.cache.put(key, found, (self.inputs, x_abl))
        contributions, base = found
        return _input_masked(contributions, base, keep)

    def _path_correction(self, table: _ChildTable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y`` plus, per (mask, child unit), the child's weights on the change of its shared input features
        when its parents on path links are mixed for that unit and the weight-free path is rerun."""
        found = self._path_rerun(table, x)
        if found is None:
            return y
        k_r, j_r, change = found
        layer, blocks, device, count = table.layer, self.n_blocks, self.factor.device, len(k_r)
        assert table.path_features is not None
        shared = table.path_features.to(device)
        module = layer.module
        if not layer.unit_kind.spatial:
            weight = layer.unit_kind.edge_weight(layer)
            diff = change * shared.to(x.dtype)
            delta = (diff * weight[j_r].view(count, *([1] * (diff.dim() - 2)), -1)).sum(-1)  # (R, N, ...)
            corr = delta.new_zeros(blocks, layer.n_units, *delta.shape[1:])
            corr = corr.index_put((k_r, j_r), delta, accumulate=True)
            return y + corr.movedim(1, -1).flatten(0, 1)
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        weight = module.weight
        diff = change * shared.to(x.dtype).view(1, 1, -1, *([1] * (x.dim() - 2)))
        groups = module.groups
        per_in, per_out = layer.in_features // groups, layer.n_units // groups
        if groups > 1:
            channels = (j_r // per_out)[:, None] * per_in + torch.arange(per_in, device=device)[None, :]
            index = channels.view(count, 1, per_in, *([1] * (x.dim() - 2))).expand(-1, diff.shape[1], -1,
                                                                                    *diff.shape[3:])
            diff = torch.gather(diff, 2, index)
        stacked = diff.movedim(0, 1).flatten(1, 2)  # (N, R * per_in, ...)
        padding: Any = module.padding
        if module.padding_mode != "zeros":
            stacked = F.pad(stacked, module._reversed_padding_repeated_twice, mode=module.padding_mode)
            padding = 0
        conv = F.conv1d if weight.dim() == 3 else F.conv2d
        delta = conv(stacked, weight[j_r], None, module.stride, padding, module.dilation, count).movedim(1, 0)
        corr = delta.new_zeros(blocks, layer.n_units, *delta.shape[1:])
        corr = corr.index_put((k_r, j_r), delta, accumulate=True)
        return y + corr.transpose(1, 2).flatten(0, 1)

    def unrolled(self, module: nn.Module, layers: list[LayerInfo]) -> Callable[..., Any]:
        source = self.source.states[layers[0].module_name]
        tables = [self.tables.get(layer.name) for layer in layers]
        if layers[0].unit_kind.calls_are_steps:
            return self._steps(layers[0], source, tables[0])

        def forward(*args: object, **kwargs: object) -> Any:
            out = self._run_recurrent(module, source, tables, args, kwargs)
            for table in tables:  # every block was computed; later layers still share values within classes
                if table is not None:
                    self._split(table.positions)
            if layers[0].module_name in self.keep_outputs:
                self.outputs[layers[0].module_name] = out
            return out

        return forward

    def _run_recurrent(self, module: nn.Module, source: _RecurrentSource, tables: list[_ChildTable | None],
                       args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        module = rnn(module)
        if module.training and module.dropout and module.num_layers > 1:  # pragma: no cover - eval mode is set
            raise InterventionError("recurrent dropout is random in training mode; call model.eval() first")
        if proj_size(module):
            return self._run_projected(module, source, tables, args, kwargs)
        x, h0, c0 = split_args(module, args, kwargs)
        blocks, hidden = self.n_blocks, module.hidden_size
        directions = 2 if module.bidirectional else 1
        length = x.shape[1]
        inputs = x
        finals_h: list[torch.Tensor] = []
        finals_c: list[torch.Tensor] = []
        device = self.factor.device
        for index in range(module.num_layers):
            table = tables[index]
            masked = table is not None and not self._kept(table.positions)
            ih = hh = None
            if masked:
                assert table is not None
                ih, hh = table.ih, table.hh
            x_abl = _rows(source.x[index], self.rows).to(inputs.dtype)
            diff = (inputs.unflatten(0, (blocks, -1)) - x_abl) if masked else None
            outs = []
            for direction in range(directions):
                w_ih, w_hh, b_ih, b_hh = weights(module, index, direction)
                xp = F.linear(inputs, w_ih, b_ih).unflatten(0, (blocks, -1))  # (K, N, T, G H)
                hh_factor = None
                if ih is not None and hh is not None:
                    ih_factor = self.factor[:, ih[direction].to(device)]
                    delta = torch.einsum("kntf,kgf->kntg", diff, w_ih * ih_factor)
                    xp = xp + delta
                    hh_factor = (w_hh * self.factor[:, hh[direction].to(device)]).transpose(1, 2)
                if direction:
                    xp = xp.flip(2)
                prev_abl = _rows(source.prev[index][direction], self.rows).to(inputs.dtype)
                state = index * directions + direction
                h = h0[state].reshape(blocks, -1, hidden)
                c = None if c0 is None else c0[state].reshape(blocks, -1, hidden)
                steps = []
                for t in range(length):
                    hp = F.linear(h, w_hh, b_hh)
                    if hh_factor is not None:
                        before = prev_abl if prev_abl.dim() == 0 else prev_abl[:, t]
                        hp = hp + torch.bmm(h - before, hh_factor)
                    h, c = cell(module, xp[:, :, t], hp, h, c)
                    steps.append(h)
                out = torch.stack(steps, 2)
                outs.append(out.flip(2) if direction else out)
                finals_h.append(h.reshape(-1, hidden))
                if c is not None:
                    finals_c.append(c.reshape(-1, hidden))
            inputs = torch.cat(outs, -1).flatten(0, 1)
        return format_output(module, inputs, finals_h, finals_c if has_cell_state(module) else None)


    def _steps(self, layer: LayerInfo, source: _RecurrentSource, table: _ChildTable | None) -> Callable[..., Any]:
        """A cell called once per step: call ``t`` masked as a recurrent layer's step ``t``, its input edges on
        ``x_t - x_abl_t`` and its recurrent edges on ``h_{t-1} - h_abl_{t-1}`` (the state the call receives)."""
        module, length, device = layer.module, layer.output_shape[0], self.factor.device
        w_ih, w_hh, b_ih, b_hh = cell_weights(module)
        count = [0]

        def forward(*args: Any, **kwargs: Any) -> Any:
            step = count[0] % length
            count[0] += 1
            blocks = self.n_blocks
            x, h, c = call_state(module, args, kwargs)
            xp = F.linear(x, w_ih, b_ih).unflatten(0, (blocks, -1))
            hp = F.linear(h, w_hh, b_hh).unflatten(0, (blocks, -1))
            if table is not None and not self._kept(table.positions):
                x_abl = _rows(source.x[0], self.rows).to(x.dtype)
                h_abl = _rows(source.prev[0][0], self.rows).to(x.dtype)
                x_abl = x_abl if x_abl.dim() == 0 else x_abl[:, step]
                h_abl = h_abl if h_abl.dim() == 0 else h_abl[:, step]
                ih = (w_ih * self.factor[:, table.ih[0].to(device)]).transpose(1, 2)
                hh = (w_hh * self.factor[:, table.hh[0].to(device)]).transpose(1, 2)
                xp = xp + torch.bmm(x.unflatten(0, (blocks, -1)) - x_abl, ih)
                hp = hp + torch.bmm(h.unflatten(0, (blocks, -1)) - h_abl, hh)
            state = h.unflatten(0, (blocks, -1))
            h_new, c_new = cell(module, xp, hp.clone(), state, None if c is None else c.unflatten(0, (blocks, -1)))
            out = h_new.flatten(0, 1) if c_new is None else (h_new.flatten(0, 1), c_new.flatten(0, 1))
            if step == length - 1 and table is not None:  # every block was computed; later layers share classes
                self._split(table.positions)
            if layer.module_name in self.keep_outputs:
                self.outputs[layer.module_name] = out
            return out

        return forward

    def _run_projected(self, module: nn.RNNBase, source: _RecurrentSource, tables: list[_ChildTable | None],
                       args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """An LSTM with ``proj_size``: the cell's input and recurrent edges masked as any LSTM's (the recurrent ones on
        ``W_hh W_hr``, read from ``m_{t-1}``: ``W_hh h_{t-1} + (W_hh W_hr * (M - 1))(m_{t-1} - m_abl_{t-1})``), then
        the projection ``W_hr m_abl + (W_hr * M)(m - m_abl)`` per step; the state the next step reads is ``W_hr m``,
        the paths through it being the cell's recurrent edges."""
        x, h0, c0 = split_args(module, args, kwargs)
        assert c0 is not None
        blocks, hidden, device = self.n_blocks, module.hidden_size, self.factor.device
        cell_table, proj_table = tables[0], tables[1]
        w_ih, w_hh, b_ih, b_hh = weights(module, 0)
        w_hr = projection_weight(module)
        xp = F.linear(x, w_ih, b_ih).unflatten(0, (blocks, -1))  # (K, N, T, 4 H)
        hh_factor = None
        if cell_table is not None and not self._kept(cell_table.positions):
            x_abl = _rows(source.x[0], self.rows).to(x.dtype)
            ih_factor = self.factor[:, cell_table.ih[0].to(device)]
            xp = xp + torch.einsum("kntf,kgf->kntg", x.unflatten(0, (blocks, -1)) - x_abl, w_ih * ih_factor)
            hh_factor = ((w_hh @ w_hr) * self.factor[:, cell_table.hh[0].to(device)]).transpose(1, 2)
        hr_factor = None
        if proj_table is not None and not self._kept(proj_table.positions):
            assert proj_table.weight_index is not None
            hr_factor = (w_hr * self.factor[:, proj_table.weight_index.to(device)]).transpose(1, 2)
        prev_abl = _rows(source.prev[0][0], self.rows).to(x.dtype)
        m_abl = _rows(source.cells[0], self.rows).to(x.dtype)
        h = h0[0].reshape(blocks, -1, h0.shape[-1])
        c = c0[0].reshape(blocks, -1, hidden)
        m = torch.zeros_like(c)
        steps = []
        for t in range(x.shape[1]):
            hp = F.linear(h, w_hh, b_hh)
            if hh_factor is not None:
                before = prev_abl if prev_abl.dim() == 0 else prev_abl[:, t]
                hp = hp + torch.bmm(m - before, hh_factor)
            m, c_next = cell(module, xp[:, :, t], hp, h, c)
            assert c_next is not None
            c = c_next
            h = F.linear(m, w_hr)
            out = h
            if hr_factor is not None:
                now = m_abl if m_abl.dim() == 0 else m_abl[:, t]
                out = h + torch.bmm(m - now, hr_factor)
            steps.append(out)
        seq = torch.stack(steps, 2).flatten(0, 1)
        return format_output(module, seq, [steps[-1].reshape(-1, steps[-1].shape[-1])], [c.reshape(-1, hidden)])


def _parts(ablated: Any) -> tuple[Any, Any, Any]:
    """An attention layer's ablated query, key and value (one scalar zero for all three under zero ablation)."""
    if isinstance(ablated, tuple):
        return ablated[0], ablated[1], ablated[2]
    return ablated, ablated, ablated


def _is_chain(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether the model's traced graph is one chain (every operation reads one value and is read once), so that
    its forward can run on one block of rows per class of masks, the blocks' row counts changing at each layer."""
    split = GraphSplit.trace(model)
    if split is None:
        return False
    for node in split.nodes:
        if node.op == "output":
            continue
        if node.op == "get_attr" or len(node.users) != 1:
            return False
        if node.op != "placeholder" and len(node.all_input_nodes) != 1:
            return False
    if sum(node.op == "placeholder" for node in split.nodes) != 1:
        return False
    with ModelPatch() as patch:
        patch.eval_mode(model)
        return split.reproduces(example[:1])


def _regions(model: nn.Module, example: torch.Tensor, layers: list[LayerInfo],
             tables: dict[str, _ChildTable]) -> dict[str, PathRegion]:
    """The weight-free region into every child with path links (refused when the model does not trace)."""
    path_children = [table.layer for table in tables.values() if table.path]
    if not path_children:
        return {}
    split = GraphSplit.trace(model)
    with ModelPatch() as patch:
        patch.eval_mode(model)
        ok = split is not None and split.reproduces(example[:1])
    if not ok:
        name = path_children[0].module_name
        raise InterventionError(
            f"edge ablation cannot handle module '{name}': parents share its inputs and torch.fx cannot trace "
            "the model to rerun that shared path"
        )
    assert split is not None
    modules = {layer.module_name for layer in layers}
    return {
        child.name: PathRegion(split, child, [root.module_name for root in tables[child.name].roots], modules)
        for child in path_children
    }


class EdgeAblation:
    """The model's forward with every edge mixed between its current and its ablated value.

    Parameters
    ----------
    model : torch.nn.Module
        The network; its parameters, buffers, hooks and training flags are left
        exactly as they were (the forward runs in eval mode).
    example_input : torch.Tensor
        A batch in the form the model's forward takes (one sample is enough).
    edges : Edges, optional
        The edges the masks run over (default: :func:`enumerate_edges`). Edges of
        the model left out are always kept.
    ablation : {"patch", "mean", "zero"}
        What an ablated edge carries (see the module docstring).
    reference : torch.Tensor, optional
        Reference inputs for ``ablation="mean"``.
    memory_budget_mb : float, optional
        Activation budget of one chunk of rows when the masks do not require
        gradients (default 512).
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, edges: Edges | None = None, *,
                 ablation: str = "patch", reference: torch.Tensor | None = None,
                 memory_budget_mb: float | None = None) -> None:
        if ablation not in ABLATIONS:
            raise InterventionError(f"unknown ablation '{ablation}'; valid ablations: {', '.join(ABLATIONS)}")
        if ablation == "mean" and reference is None:
            raise InterventionError("ablation='mean' needs reference inputs to take the mean over")
        self.model = model
        self.layers = find_layers(model, example_input)
        _check_model(model, example_input, self.layers)
        self.edges = enumerate_edges(model, example_input) if edges is None else edges
        self.ablation = ablation
        self.tables = _tables(self.layers, self.edges)
        self.regions = _regions(model, example_input, self.layers, self.tables)
        self._frontier_key: tuple | None = None
        self._frontier_inputs: torch.Tensor | None = None
        self._frontiers: dict[str, Any] = {}
        self.memory_budget_mb = DEFAULT_BUDGET_MB if memory_budget_mb is None else float(memory_budget_mb)
        self._mean: _Source | None = None
        if ablation == "mean":
            assert reference is not None
            self._mean = _source(model, self.layers, reference, mean=True)
        self._zero = _zero_source(self.layers) if ablation == "zero" else None
        self._patch_key: tuple | None = None
        self._patch_tensor: torch.Tensor | None = None
        self._patch: _Source | None = None
        self._row_bytes: dict[tuple, int] = {}
        self._cache = _Cache()
        self.chain = not self.regions and \
            not any(layer.unit_kind.stateful or layer.unit_kind.attention for layer in self.layers) and \
            _is_chain(model, example_input)
        self._compact_tables = [self.tables[layer.name] for layer in self.layers if layer.name in self.tables]
        self._row_bytes_segments: dict[tuple, np.ndarray] = {}

    # -- sources ---------------------------------------------------------------------------------------------
    def _source_for(self, inputs: torch.Tensor, counterfactuals: torch.Tensor | None) -> _Source:
        if self.ablation == "mean":
            assert self._mean is not None
            return self._mean
        if self.ablation == "zero":
            assert self._zero is not None
            return self._zero
        if counterfactuals is None:
            raise InterventionError("ablation='patch' needs counterfactuals: one counterfactual input per input row")
        if counterfactuals.shape != inputs.shape:
            raise InterventionError(
                f"counterfactuals must have the inputs' shape {tuple(inputs.shape)}; got {tuple(counterfactuals.shape)}"
            )
        # The key holds only while the tensor lives: keep a reference, so its memory cannot go to another tensor.
        key = _tensor_key(counterfactuals)
        if self._patch is None or self._patch_key != key or self._patch_tensor is not counterfactuals:
            self._patch = _source(self.model, self.layers, counterfactuals.detach(), mean=False)
            self._patch_key, self._patch_tensor = key, counterfactuals
        return self._patch

    # -- the forward -----------------------------------------------------------------------------------------
    def logits(self, inputs: torch.Tensor, masks: torch.Tensor | np.ndarray, counterfactuals: torch.Tensor | None = None,
               *, chunk_rows: int | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The model's outputs with every edge mixed by its mask, for ``K`` masks at once.

        Parameters
        ----------
        inputs : torch.Tensor
            ``(N, ...)`` inputs.
        masks : torch.Tensor or numpy.ndarray
            ``(K, E)`` or ``(E,)`` values in ``[0, 1]`` over :attr:`edges` (1 keeps
            the edge, 0 ablates it). Gradients flow to ``masks`` and to ``inputs``
            when they require them (the ablation source is a constant).
        counterfactuals : torch.Tensor, optional
            ``(N, ...)`` counterfactual inputs, one per input row (``"patch"`` only).
        chunk_rows : int, optional
            Rows (masks x inputs) per pass when not differentiating (default: the
            memory budget).
        rows : torch.Tensor, optional
            Run on ``inputs[rows]`` only, with the ablated values of those rows
            taken from the source of the whole ``counterfactuals`` batch (computed
            once and reused while the same tensor is passed).

        Returns
        -------
        torch.Tensor
            ``(K, N, C)`` outputs.
        """
        masks_t = torch.as_tensor(masks)
        if not masks_t.is_floating_point():
            masks_t = masks_t.to(torch.float32)
        if masks_t.dim() == 1:
            masks_t = masks_t.unsqueeze(0)
        if masks_t.dim() != 2 or masks_t.shape[1] != self.edges.n:
            raise InterventionError(f"masks must be (K, {self.edges.n}) or ({self.edges.n},); got {tuple(masks_t.shape)}")
        device = inputs.device
        masks_t = masks_t.to(device)
        source = self._source_for(inputs, counterfactuals)
        if rows is not None:
            rows = torch.as_tensor(rows, dtype=torch.long, device=device)
            inputs = inputs[rows]
            if self.ablation == "patch":
                source = _select_rows(source, rows)
        differentiable = (masks_t.requires_grad or inputs.requires_grad) and torch.is_grad_enabled()
        masks_t = masks_t.to(inputs.dtype if inputs.is_floating_point() else masks_t.dtype)
        n = inputs.shape[0]
        if differentiable:
            return self._run(inputs, masks_t, source, slice(0, n), True)
        per_chunk = chunk_rows if chunk_rows is not None else self._budget_rows(inputs)
        if per_chunk < 1:
            raise InterventionError(f"chunk_rows must be positive; got {per_chunk}")
        per_input = max(1, min(n, per_chunk))
        out = []
        with torch.no_grad():
            masks_t = masks_t.detach()
            for first in range(0, n, per_input):
                part = slice(first, min(n, first + per_input))
                blocks = max(1, per_chunk // (part.stop - part.start))
                if self.chain and chunk_rows is None:
                    groups = self._compact_groups(inputs, masks_t, part.stop - part.start)
                else:
                    groups = [slice(k, k + blocks) for k in range(0, masks_t.shape[0], blocks)]
                pieces = [self._run(inputs[part], masks_t[group], source, part, False) for group in groups]
                out.append(torch.cat(pieces, 0))
        return torch.cat(out, 1)

    def _compact_groups(self, inputs: torch.Tensor, masks: torch.Tensor, n: int) -> list[slice]:
        """Consecutive runs of masks whose compact forward fits the memory budget: each layer's activations are
        counted once per class of masks (masks that agree on every masked layer up to it)."""
        segments = self._segment_bytes(inputs)
        classes = torch.zeros(len(masks), dtype=torch.long, device=masks.device)
        ids = []
        for table in self._compact_tables:
            values = masks[:, torch.from_numpy(table.positions).to(masks.device)]
            key = torch.cat([classes[:, None].to(values.dtype), values], 1)
            classes = torch.unique(key, dim=0, return_inverse=True)[1]
            ids.append(classes.cpu().numpy())
        budget = self.memory_budget_mb * 2**20
        groups, start = [], 0
        seen: list[set[int]] = [set() for _ in ids]
        used = float(segments[0] * n)
        for k in range(len(masks)):
            extra = sum(float(segments[s + 1] * n) for s, column in enumerate(ids) if int(column[k]) not in seen[s])
            if k > start and used + extra > budget:
                groups.append(slice(start, k))
                start, seen, used = k, [set() for _ in ids], float(segments[0] * n)
                extra = sum(float(segments[s + 1] * n) for s in range(len(ids)))
            for s, column in enumerate(ids):
                seen[s].add(int(column[k]))
            used += extra
        groups.append(slice(start, len(masks)))
        return groups

    def _segment_bytes(self, inputs: torch.Tensor) -> np.ndarray:
        """Bytes per row (three times the activations) of the calls before the first masked layer and from each
        masked layer to the next, in execution order."""
        key = ("segments", tuple(inputs.shape[1:]), inputs.dtype)
        if key not in self._row_bytes_segments:
            with ModelPatch() as patch, torch.no_grad():
                patch.eval_mode(self.model)
                trace = trace_forward(self.model, inputs[:1])
            index = {table.layer.module_name: i + 1 for i, table in enumerate(self._compact_tables)}
            segments = np.zeros(len(self._compact_tables) + 1)
            current = 0
            for call in sorted(trace.calls, key=lambda c: c.start):
                current = index.get(call.name, current)
                for shape in (call.output, *call.args):
                    if isinstance(shape, torch.Size):
                        segments[current] += 4 * 3 * int(np.prod(shape))
            self._row_bytes_segments[key] = segments
        return self._row_bytes_segments[key]

    def _budget_rows(self, inputs: torch.Tensor) -> int:
        key = (tuple(inputs.shape[1:]), inputs.dtype)
        if key not in self._row_bytes:
            with ModelPatch() as patch, torch.no_grad():
                patch.eval_mode(self.model)
                trace = trace_forward(self.model, inputs[:1])
            count = 0
            for call in trace.calls:
                for shape in (call.output, *call.args):
                    if isinstance(shape, torch.Size):
                        count += int(np.prod(shape))
            self._row_bytes[key] = max(1, 4 * count * 3)
        return max(1, int(self.memory_budget_mb * 2**20 // self._row_bytes[key]))

    def _run(self, inputs: torch.Tensor, masks: torch.Tensor, source: _Source, rows: slice,
             differentiable: bool) -> torch.Tensor:
        blocks = masks.shape[0]
        key = _tensor_key(inputs)
        if self.regions and (key != self._frontier_key or self._frontier_inputs is not inputs):
            with ModelPatch() as patch:
                patch.eval_mode(self.model)
                self._frontiers = {name: region.frontier(inputs) for name, region in self.regions.items()}
            self._frontier_key, self._frontier_inputs = key, inputs  # held, so the key stays this tensor's
        compact = self.chain and not differentiable
        state = _Forward(masks, source, rows, self.tables, differentiable, inputs, self.regions, self._frontiers,
                         self._cache, compact)
        tiled = inputs if compact else inputs.repeat(blocks, *([1] * (inputs.dim() - 1)))
        grads = [(param, param.requires_grad) for param in self.model.parameters()]
        try:
            for param, _ in grads:
                param.requires_grad_(False)
            with ModelPatch() as patch:
                patch.eval_mode(self.model)
                unrolled: dict[str, list[LayerInfo]] = {}
                for layer in self.layers:
                    if layer.unit_kind.stateful:
                        unrolled.setdefault(layer.module_name, []).append(layer)
                    elif not layer.unit_kind.reads_ids:
                        patch.replace_forward(layer.module, state.layer(layer))
                    elif layer.module_name in state.keep_outputs:
                        patch.forward_hook(layer.module, state.record(layer))
                for group in unrolled.values():
                    patch.replace_forward(group[0].module, state.unrolled(group[0].module, group))
                out = self.model(tiled)
        finally:
            for param, flag in grads:
                param.requires_grad_(flag)
        if compact:  # one block of rows per class of masks: copy each class to its blocks
            return out.unflatten(0, (-1, inputs.shape[0]))[state.classes]
        return out.unflatten(0, (blocks, -1))


def ablated_logits(model: nn.Module, inputs: torch.Tensor, edges: Edges, keep: np.ndarray, ablation: str = "patch",
                   counterfactuals: torch.Tensor | None = None, reference: torch.Tensor | None = None) -> torch.Tensor:
    """The model's outputs with the edges where ``keep`` is ``False`` ablated.

    Parameters
    ----------
    model : torch.nn.Module
        The network (left exactly as it was).
    inputs : torch.Tensor
        ``(N, ...)`` inputs.
    edges : Edges
        The edges ``keep`` runs over (edges of the model not listed are kept).
    keep : numpy.ndarray
        ``(E,)`` bool: the circuit's edges.
    ablation : {"patch", "mean", "zero"}
        What an ablated edge carries.
    counterfactuals : torch.Tensor, optional
        ``(N, ...)`` counterfactual inputs (``"patch"``).
    reference : torch.Tensor, optional
        Reference inputs (``"mean"``).

    Returns
    -------
    torch.Tensor
        ``(N, C)`` outputs.
    """
    keep = np.asarray(keep, dtype=bool)
    engine = EdgeAblation(model, inputs[:1], edges, ablation=ablation, reference=reference)
    return engine.logits(inputs, torch.from_numpy(keep.astype(np.float32)), counterfactuals)[0]
