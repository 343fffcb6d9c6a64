"""Specs compiled into vectorised per-row edits of one layer's activations.

Rows are laid out in ``K`` blocks of ``N`` samples (block ``k`` carries the ``k``-th
intervention). Node edits become one affine map ``y * a + b`` per (block, unit);
edge edits become activation deltas instead of weight copies: setting
``W[j, f] = u`` adds ``(u - W[j, f]) * x_f`` to unit ``j``'s pre-activation (for a
conv, input channel ``f`` convolved with the kernel difference). Edges of a
parent linked ``via="path"`` (features shared with other parents, e.g. through a
residual add) are path deltas: the child's weights applied to the change of its
input features when the parent unit's signal on the weight-free path is scaled
by the edge value (the runner computes that change). All blocks of a layer are
applied with a handful of tensor ops, whatever ``K`` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from explainnn.errors import InterventionError
from explainnn.interventions.layers import LayerInfo, ParentLink
from explainnn.interventions.spec import Intervention, NodeIntervention


@dataclass
class NodeEdits:
    """Entries ``(block, unit)`` with ``y <- y * scale + shift`` over the unit's non-batch dims."""

    blocks: torch.Tensor
    units: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    steps: list[int] | None = None


@dataclass
class EdgeEdits:
    """Entries ``(block, features, coef)``: delta = sum_f x_f * coef[f, ...] (masked by ``steps``)."""

    blocks: torch.Tensor
    features: torch.Tensor
    coef: torch.Tensor
    steps: torch.Tensor | None = None
    full: bool = False
    """Whether the entries are exactly blocks ``0..K-1`` in order (plain adds suffice)."""


@dataclass
class LayerEdits:
    layer: LayerInfo
    n_blocks: int
    node: NodeEdits | None = None
    edge_in: EdgeEdits | None = None
    edge_rec: EdgeEdits | None = None
    edge_path: EdgeEdits | None = None
    first_step: int = 0


@dataclass
class PathEntry:
    """One block's path edges into a layer: per parent layer, the unit -> factor its signal is scaled by."""

    block: int
    factors: dict[str, dict[int, float]]
    features: list[int]
    children: tuple[int, ...] | None


def _steps(spec: Intervention, layer: LayerInfo, length: int | None) -> list[int] | None:
    if spec.steps is None:
        return None
    if length is None:
        raise InterventionError(
            f"layer '{layer.name}' has no time axis; steps apply to recurrent, embedding and sequence layers"
        )
    out = []
    for step in spec.steps:
        if not -length <= step < length:
            raise InterventionError(
                f"step {step} is out of range for layer '{layer.name}' with {length} time steps"
            )
        out.append(step % length)
    return sorted(set(out))


def _check_units(layer: LayerInfo, units: tuple[int, ...], label: str, limit: int) -> None:
    for unit in units:
        if unit >= limit:
            noun, _, of = label.partition(" (")
            counted = f"{noun}s" + (f" ({of}" if of else "")
            raise InterventionError(
                f"{label} {unit} is out of range for layer '{layer.name}' with {limit} {counted} (0..{limit - 1})"
            )


def compile_edits(
    layer: LayerInfo,
    blocks: list[list[Intervention]],
    rest: tuple[int, ...],
    means: torch.Tensor | None,
    device: torch.device,
    dtype: torch.dtype,
) -> LayerEdits:
    """Compile the specs of each block that act on ``layer``.

    ``rest`` is the per-sample output shape without the unit axis (unit-first
    layout, e.g. ``(H, W)`` for a conv, ``(T,)`` for a recurrent layer); ``means``
    is ``(n_units, *rest)`` when a spec uses ``mode="mean"``.
    """
    length = rest[0] if layer.time_axis else None
    edits = LayerEdits(layer, len(blocks))
    node_rows, edge_in, edge_rec, edge_path = [], [], [], []
    for k, specs in enumerate(blocks):
        seen_units: set[int] = set()
        for spec in specs:
            steps = _steps(spec, layer, length)
            if isinstance(spec, NodeIntervention):
                _check_units(layer, spec.units, "unit", layer.n_units)
                if seen_units & set(spec.units):
                    raise InterventionError(
                        f"one row intervenes twice on unit(s) {sorted(seen_units & set(spec.units))} "
                        f"of layer '{layer.name}'"
                    )
                seen_units.update(spec.units)
                node_rows.append((k, spec, steps))
            elif spec.within_layer:
                edge_rec.append((k, spec, steps))
            elif _link(layer, spec).via == "path":
                edge_path.append((k, spec, steps))
            else:
                edge_in.append((k, spec, steps))
    if node_rows:
        edits.node = _compile_nodes(layer, node_rows, rest, length, means, device, dtype)
    if edge_in:
        edits.edge_in = _compile_edges(layer, edge_in, length, False, len(blocks), device, dtype)
    if edge_rec:
        edits.edge_rec = _compile_edges(layer, edge_rec, length, True, len(blocks), device, dtype)
    if edge_path:
        entries = path_entries(layer, edge_path)
        rows: list[EdgeRow] = [(entry.block, entry, None) for entry in entries]
        edits.edge_path = _compile_edges(layer, rows, length, False, len(blocks), device, dtype, path=True)
    edits.first_step = min((s[0] if s else 0 for _, _, s in node_rows + edge_in + edge_rec), default=0)
    return edits


def _link(layer: LayerInfo, spec: Any) -> ParentLink:
    if layer.unit_kind.reads_ids:
        raise InterventionError(
            f"layer '{layer.name}' is an embedding and has no incoming edges; intervene on its units instead"
        )
    return layer.link(spec.parent_layer)


def path_entries(layer: LayerInfo, rows: list) -> list[PathEntry]:
    """Group a layer's path edges by block: a block's path edges act jointly and must share their children."""
    if layer.unit_kind.stateful:
        raise InterventionError(
            f"layer '{layer.name}' is recurrent and its inputs are shared by several parents; "
            "path edges into recurrent layers are not supported"
        )
    entries: dict[int, PathEntry] = {}
    for k, spec, steps in rows:
        if steps is not None:
            raise InterventionError(f"edge steps apply to recurrent layers only; '{layer.name}' is a {layer.kind}")
        link = _link(layer, spec)
        if link.name == "input":
            raise InterventionError(
                f"the input reaches layer '{layer.name}' together with other parents; edges from the input "
                "along a shared path are not supported"
            )
        _check_units(layer, spec.parents, f"parent unit (of {link.name})", link.n_units)
        if spec.children is not None:
            _check_units(layer, spec.children, "child unit", layer.n_units)
        entry = entries.setdefault(k, PathEntry(k, {}, [], spec.children))
        if entry.children != spec.children:
            raise InterventionError(
                f"one row holds path edges into layer '{layer.name}' with different children; "
                "put them in separate rows"
            )
        units = entry.factors.setdefault(link.name, {})
        for p in spec.parents:
            if p in units:
                raise InterventionError(f"one row edits the same edge of layer '{layer.name}' twice")
            units[p] = spec.value
            entry.features.extend(f for f in link.unit_map[p] if f not in entry.features)
    return sorted(entries.values(), key=lambda entry: entry.block)


def _compile_nodes(layer, rows, rest, length, means, device, dtype) -> NodeEdits:
    blocks, units, scale_values, shift_values, from_mean, masks = [], [], [], [], [], []
    active: set[int] = set()
    for k, spec, steps in rows:
        if spec.mode == "mean" and means is None:
            raise InterventionError(
                f"mode='mean' on layer '{layer.name}' needs reference data to take the mean over"
            )
        for unit in spec.units:
            blocks.append(k)
            units.append(unit)
            scale_values.append(spec.value if spec.mode == "scale" else 0.0)
            shift_values.append(spec.value if spec.mode == "constant" else 0.0)
            from_mean.append(spec.mode == "mean")
            masks.append(steps)
        if length is not None:
            active.update(range(length) if steps is None else steps)
    count, shape = len(blocks), (len(blocks),) + (1,) * len(rest)
    unit_index = torch.tensor(units, device=device)
    scale = torch.tensor(scale_values, dtype=dtype, device=device).view(shape).expand(count, *rest)
    shift = torch.tensor(shift_values, dtype=dtype, device=device).view(shape).expand(count, *rest)
    if any(from_mean):
        picked = means.to(device=device, dtype=dtype)[unit_index]
        shift = torch.where(torch.tensor(from_mean, device=device).view(shape), picked, shift)
    if any(m is not None for m in masks):
        mask = torch.ones(count, length, dtype=torch.bool)
        for row, steps in enumerate(masks):
            if steps is not None:
                mask[row] = False
                mask[row, steps] = True
        mask = mask.to(device).view(count, length, *([1] * (len(rest) - 1)))
        scale = torch.where(mask, scale, torch.ones((), dtype=dtype, device=device))
        shift = torch.where(mask, shift, torch.zeros((), dtype=dtype, device=device))
    return NodeEdits(
        torch.tensor(blocks, device=device),
        unit_index,
        scale.contiguous(),
        shift.contiguous(),
        sorted(active) if length is not None else None,
    )


def _weight(layer: LayerInfo, recurrent: bool) -> torch.Tensor:
    """The weight the edges edit, as the layer's kind gives it (recurrent: directions stacked)."""
    return layer.unit_kind.edge_weight(layer, recurrent)


def connections(layer: LayerInfo, link: ParentLink) -> torch.Tensor:
    """``(parent units, units)`` bool: which parent units have a non-zero weight into which units (groups respected)."""
    out = torch.zeros(link.n_units, layer.n_units, dtype=torch.bool)
    if layer.unit_kind.reads_ids:
        return out
    weight = _weight(layer, False)
    groups = layer.unit_kind.groups(layer)
    if groups > 1:
        weight = _ungrouped(weight, groups, layer.in_features)
    nonzero = weight.ne(0).reshape(weight.shape[0], weight.shape[1], -1).any(2).cpu()  # (rows, in_features)
    nonzero = layer.unit_kind.unit_rows(layer, nonzero)
    for unit, features in enumerate(link.unit_map):
        if features:
            out[unit] = nonzero[:, list(features)].any(1)
    return out


def recurrent_connections(layer: LayerInfo) -> torch.Tensor:
    """``(units, units)`` bool of a recurrent layer: which unit at step ``t - 1`` has a non-zero hidden-to-hidden
    weight (any gate) into which unit at step ``t``; a bidirectional layer's two directions never connect."""
    weight = _weight(layer, True)  # (D * G * H, D * H)
    return layer.unit_kind.unit_rows(layer, weight.ne(0).cpu()).T.contiguous()


def _check_recurrent_direction(layer: LayerInfo, spec: Any) -> None:
    if layer.directions == 1:
        return
    hidden = layer.n_units // layer.directions
    sides = {p // hidden for p in spec.parents}
    kids = range(layer.n_units) if spec.children is None else spec.children
    if spec.children is not None and len(sides | {c // hidden for c in kids}) > 1:
        raise InterventionError(
            f"layer '{layer.name}' is bidirectional: recurrent edges run within one direction "
            f"(units 0..{hidden - 1} forward, {hidden}..{2 * hidden - 1} backward)"
        )


EdgeRow = tuple[int, Any, list[int] | None]
"""``(block, spec, steps)``: an :class:`EdgeIntervention` (or a :class:`PathEntry`) of one block."""


def _compile_edges(
    layer: LayerInfo,
    rows: list[EdgeRow],
    length: int | None,
    recurrent: bool,
    n_blocks: int,
    device: torch.device,
    dtype: torch.dtype,
    path: bool = False,
) -> EdgeEdits:
    """Coefficients ``(E, F, C_out, *kernel)``: the weight change of each parent feature into each child.

    With ``path`` the rows are :class:`PathEntry` blocks and the coefficients are
    the weights themselves (applied to the change of the input features).
    """
    if recurrent and not layer.unit_kind.recurrent_edges(layer):
        what = f"a {layer.kind}" if not layer.unit_kind.stateful else "a layer without hidden-to-hidden edges"
        raise InterventionError(f"recurrent=True needs a recurrent layer; '{layer.name}' is {what}")
    if path:
        features: list[list[int]] = [entry.features for _, entry, _ in rows]
        children: list[tuple[int, ...] | None] = [entry.children for _, entry, _ in rows]
    else:
        features, children = _edge_features(layer, rows, recurrent)
        _check_overlap(layer, rows, features, children)
    feats, feat_mask = _padded_features(features)
    coef = _edge_coefficients(layer, rows, feats, feat_mask, children, recurrent, dtype, path)
    steps_mask = _edge_steps_mask(rows, length, dtype, device)
    block_list = [k for k, _, _ in rows]
    full = block_list == list(range(n_blocks))
    return EdgeEdits(torch.tensor(block_list, device=device), feats.to(device), coef.to(device), steps_mask, full)


def _edge_features(
    layer: LayerInfo, rows: list[EdgeRow], recurrent: bool
) -> tuple[list[list[int]], list[tuple[int, ...] | None]]:
    """Per row, the parent features its edges leave from and the child units they reach (``None``: all).

    Each spec is checked against the layer: steps only on recurrent layers, units
    in range, one direction of a bidirectional layer, parents that reach the layer.
    """
    features: list[list[int]] = []
    children: list[tuple[int, ...] | None] = []
    for _, spec, steps in rows:
        if steps is not None and not layer.unit_kind.stateful:
            raise InterventionError(f"edge steps apply to recurrent layers only; '{layer.name}' is a {layer.kind}")
        if recurrent:
            _check_units(layer, spec.parents, "recurrent parent", layer.n_units)
            _check_recurrent_direction(layer, spec)
            feats = list(spec.parents)
        else:
            link = _link(layer, spec)
            _check_units(layer, spec.parents, f"parent unit (of {link.name})", link.n_units)
            feats = [f for p in spec.parents for f in link.unit_map[p]]
            empty = [p for p in spec.parents if not link.unit_map[p]]
            if empty:
                raise InterventionError(
                    f"unit {empty[0]} of {link.name} does not reach layer '{layer.name}'; it has no edge to it"
                )
        kids = spec.children
        if kids is not None:
            _check_units(layer, kids, "child unit", layer.n_units)
        features.append(feats)
        children.append(kids)
    return features, children


def _padded_features(features: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' feature lists as one ``(E, F)`` index tensor (zero-padded) and its ``(E, F)`` validity mask."""
    width = max(len(f) for f in features)
    feats = torch.tensor([f + [0] * (width - len(f)) for f in features], dtype=torch.long)
    feat_mask = torch.arange(width)[None, :] < torch.tensor([len(f) for f in features])[:, None]
    return feats, feat_mask


def _child_mask(layer: LayerInfo, children: list[tuple[int, ...] | None]) -> torch.Tensor:
    """``(E, units)`` bool: the child units each row's edges reach (``None``: every unit)."""
    child_mask = torch.zeros(len(children), layer.n_units, dtype=torch.bool)
    child_mask[[row for row, kids in enumerate(children) if kids is None]] = True
    child_rows = [row for row, kids in enumerate(children) if kids is not None for _ in kids]
    child_mask[child_rows, [c for kids in children if kids is not None for c in kids]] = True
    return child_mask


def _edge_coefficients(
    layer: LayerInfo,
    rows: list[EdgeRow],
    feats: torch.Tensor,
    feat_mask: torch.Tensor,
    children: list[tuple[int, ...] | None],
    recurrent: bool,
    dtype: torch.dtype,
    path: bool,
) -> torch.Tensor:
    """``(E, F, C_out, *kernel)`` on the weight's device, zero outside each row's edges.

    Per edge: ``(value - 1) * w`` for ``mode="scale"``, ``value - w`` for ``mode="set"``,
    and the weight ``w`` itself for path rows.
    """
    child_mask = _child_mask(layer, children)
    weight = _weight(layer, recurrent).to(dtype)
    child_mask = layer.unit_kind.child_rows(layer, child_mask)
    mask = feat_mask[:, :, None] & child_mask[:, None, :]
    groups = layer.unit_kind.groups(layer)
    if groups > 1:
        mask = mask & _same_group(layer, feats, feat_mask, children, groups, weight.shape[0])
        weight = _ungrouped(weight, groups, layer.in_features)
    on = weight.device
    per_feature = weight.movedim(1, 0)[feats.to(on)]
    kernel = (1,) * (weight.dim() - 2)
    if path:
        delta = per_feature
    else:
        count = len(rows)
        values = torch.tensor([spec.value for _, spec, _ in rows], dtype=dtype, device=on).view(count, 1, 1, *kernel)
        scaled = torch.tensor([spec.mode == "scale" for _, spec, _ in rows], device=on).view(count, 1, 1, *kernel)
        delta = torch.where(scaled, (values - 1.0) * per_feature, values - per_feature)
    keep = mask.to(on).view(*mask.shape, *kernel)
    return torch.where(keep, delta, torch.zeros((), dtype=dtype, device=on))


def _edge_steps_mask(
    rows: list[EdgeRow], length: int | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """``(E, T)``: 1 at the steps each row's edges act on, 0 elsewhere; ``None`` when all rows act on every step."""
    if all(steps is None for _, _, steps in rows):
        return None
    assert length is not None
    steps_mask = torch.ones(len(rows), length, dtype=dtype)
    for row, (_, _, steps) in enumerate(rows):
        if steps is not None:
            steps_mask[row] = 0.0
            steps_mask[row, steps] = 1.0
    return steps_mask.to(device)


def _ungrouped(weight: torch.Tensor, groups: int, in_channels: int) -> torch.Tensor:
    """A grouped conv weight as a dense ``(C_out, C_in, *kernel)`` one, zero across groups."""
    out_channels = weight.shape[0]
    per_in, per_out = in_channels // groups, out_channels // groups
    dense = weight.new_zeros(out_channels, in_channels, *weight.shape[2:])
    for g in range(groups):
        dense[g * per_out : (g + 1) * per_out, g * per_in : (g + 1) * per_in] = weight[g * per_out : (g + 1) * per_out]
    return dense


def _same_group(layer, feats, feat_mask, children, groups, out_channels) -> torch.Tensor:
    """``(E, F, C_out)``: whether a grouped conv has an edge from each feature to each child.

    A row's named children must each be reached by at least one of its features: a path edge from one parent
    unit may reach several input channels (a channels-last LayerNorm before a depthwise conv mixes every
    channel), and only the channels inside a child's group carry the edge to it."""
    per_in, per_out = layer.in_features // groups, out_channels // groups
    same = (feats // per_in)[:, :, None] == (torch.arange(out_channels) // per_out)[None, None, :]
    for row, kids in enumerate(children):
        if kids is not None:
            index = torch.tensor(kids)
            reached = same[row][feat_mask[row]][:, index].any(0)
            if not reached.all():
                c = int(torch.nonzero(~reached)[0])
                channels = sorted({int(f) for f in feats[row][feat_mask[row]]})
                raise InterventionError(
                    f"layer '{layer.name}' has no edge from input channel "
                    f"{channels[0] if len(channels) == 1 else channels} to unit {kids[c]} (groups={groups})"
                )
    return same


def _check_overlap(layer: LayerInfo, rows: list, features: list, children: list) -> None:
    by_block: dict[int, list[int]] = {}
    for row, (k, _, _) in enumerate(rows):
        by_block.setdefault(k, []).append(row)
    for members in by_block.values():
        if len(members) < 2:
            continue
        seen: set[tuple[int, int]] = set()
        for row in members:
            kids = range(layer.n_units) if children[row] is None else children[row]
            pairs = {(f, c) for f in features[row] for c in kids}
            if seen & pairs:
                raise InterventionError(f"one row edits the same edge of layer '{layer.name}' twice")
            seen |= pairs


def apply_nodes(y: torch.Tensor, layer: LayerInfo, node: NodeEdits, n_blocks: int) -> None:
    """In place: ``y`` is a batch-first output ``(K * N, ...)``."""
    view = y.unflatten(0, (n_blocks, -1)).movedim(layer.unit_axis + 1, 2)
    picked = view[node.blocks, :, node.units]
    view[node.blocks, :, node.units] = picked * node.scale.unsqueeze(1) + node.shift.unsqueeze(1)


def apply_nodes_step(h: torch.Tensor, node: NodeEdits, step: int, n_blocks: int) -> None:
    """In place on one recurrent step ``h`` ``(K * N, H)``."""
    view = h.view(n_blocks, -1, h.shape[-1])
    picked = view[node.blocks, :, node.units]
    view[node.blocks, :, node.units] = picked * node.scale[:, step, None] + node.shift[:, step, None]


def gather_features(x: torch.Tensor, edge: EdgeEdits, n_blocks: int, shared: bool, axis: int) -> torch.Tensor:
    """Parent features per entry: ``(E, N, ..., F)`` with the features on the last axis.

    ``x`` holds N shared rows (the clean input, the same for every block) or
    ``K * N`` rows, and its features sit on ``axis`` (of the per-row tensor).
    """
    if shared:
        moved = x.movedim(axis, -1)
        picked = moved[..., edge.features]
        return picked.movedim(-2, 0)
    rows = x.unflatten(0, (n_blocks, -1))[edge.blocks].movedim(axis + 1, -1)
    index = edge.features.view(len(edge.blocks), *([1] * (rows.dim() - 2)), -1)
    return torch.gather(rows, -1, index.expand(*rows.shape[:-1], index.shape[-1]))


def linear_delta(x: torch.Tensor, edge: EdgeEdits, n_blocks: int, shared: bool) -> torch.Tensor:
    """``(E, N, ..., C_out)`` pre-activation deltas of a Linear (or recurrent input) layer."""
    feats = gather_features(x, edge, n_blocks, shared, x.dim() - 1)
    flat = feats.flatten(1, -2)
    delta = torch.bmm(flat, edge.coef)
    return delta.view(*feats.shape[:-1], edge.coef.shape[-1])


def add_deltas(y: torch.Tensor, edge: EdgeEdits, delta: torch.Tensor, n_blocks: int) -> None:
    """In place: add per-entry deltas ``(E, N, ...)`` to the blocks of ``y`` ``(K * N, ...)``."""
    view = y.unflatten(0, (n_blocks, -1))
    if edge.full:
        view.add_(delta.to(y.dtype))
    else:
        view.index_add_(0, edge.blocks, delta.to(y.dtype))


def rest_shape(layer: LayerInfo, per_sample: tuple[int, ...]) -> tuple[int, ...]:
    """A layer's per-sample output shape without the unit axis (recurrent: ``(T,)``)."""
    return layer.unit_kind.rest_shape(layer, per_sample)


def _input_delta(layer: LayerInfo, x: torch.Tensor, edge: EdgeEdits, n_blocks: int, shared: bool) -> torch.Tensor:
    return layer.unit_kind.input_delta(layer, x, edge, n_blocks, shared)


def apply_layer(y: torch.Tensor, x: torch.Tensor, edits: LayerEdits, shared: bool,
                path_change: torch.Tensor | None = None) -> None:
    """In place on a Linear/Conv/Embedding output ``y`` ``(K * N, ...)`` with input ``x``.

    ``path_change`` ``(E * N, ...)`` is the change of the input under each path
    entry (one per block with path edges, in block order). Edge deltas come first
    (they change pre-activations); node edits then override.
    """
    layer, n_blocks = edits.layer, edits.n_blocks
    if edits.edge_in is not None:
        add_deltas(y, edits.edge_in, _input_delta(layer, x, edits.edge_in, n_blocks, shared), n_blocks)
    if edits.edge_path is not None:
        if path_change is None:
            raise InterventionError(f"path edges into layer '{layer.name}' need the batched InterventionRunner")
        edge = edits.edge_path
        entries = len(edge.blocks)
        local = EdgeEdits(torch.arange(entries, device=edge.blocks.device), edge.features, edge.coef, None, True)
        add_deltas(y, edge, _input_delta(layer, path_change, local, entries, False), n_blocks)
    if edits.node is not None:
        apply_nodes(y, layer, edits.node, n_blocks)
