"""Specs compiled into vectorised per-row edits of one layer's activations.

Rows are laid out in ``K`` blocks of ``N`` samples (block ``k`` carries the ``k``-th
intervention). Node edits become one affine map ``y * a + b`` per (block, unit);
edge edits become activation deltas instead of weight copies: setting
``W[j, f] = u`` adds ``(u - W[j, f]) * x_f`` to unit ``j``'s pre-activation (for a
conv, input channel ``f`` convolved with the kernel difference). All blocks of a
layer are applied with a handful of tensor ops, whatever ``K`` is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from explainnn.errors import InterventionError
from explainnn.interventions.layers import LayerInfo
from explainnn.interventions.spec import EdgeIntervention, Intervention, NodeIntervention

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


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


@dataclass
class LayerEdits:
    layer: LayerInfo
    n_blocks: int
    node: NodeEdits | None = None
    edge_in: EdgeEdits | None = None
    edge_rec: EdgeEdits | None = None
    first_step: int = 0


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
            raise InterventionError(
                f"{label} {unit} is out of range for layer '{layer.name}' with {limit} {label}s (0..{limit - 1})"
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
    node_rows, edge_in, edge_rec = [], [], []
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
            else:
                target = edge_rec if spec.recurrent else edge_in
                target.append((k, spec, steps))
    if node_rows:
        edits.node = _compile_nodes(layer, node_rows, rest, length, means, device, dtype)
    if edge_in:
        edits.edge_in = _compile_edges(layer, edge_in, length, False, device, dtype)
    if edge_rec:
        edits.edge_rec = _compile_edges(layer, edge_rec, length, True, device, dtype)
    edits.first_step = min((s[0] if s else 0 for _, _, s in node_rows + edge_in + edge_rec), default=0)
    return edits


def _compile_nodes(layer, rows, rest, length, means, device, dtype) -> NodeEdits:
    blocks, units, scales, shifts = [], [], [], []
    active: set[int] = set()
    for k, spec, steps in rows:
        if spec.mode == "mean" and means is None:
            raise InterventionError(
                f"mode='mean' on layer '{layer.name}' needs reference data to take the mean over"
            )
        for unit in spec.units:
            scale = torch.full(rest, spec.value if spec.mode == "scale" else 0.0, dtype=dtype)
            if spec.mode == "constant":
                shift = torch.full(rest, spec.value, dtype=dtype)
            elif spec.mode == "mean":
                shift = means[unit].to(dtype=dtype, device="cpu").clone()
            else:
                shift = torch.zeros(rest, dtype=dtype)
            if steps is not None:
                mask = torch.zeros(length, dtype=torch.bool)
                mask[steps] = True
                mask = mask.view(length, *([1] * (len(rest) - 1)))
                scale = torch.where(mask, scale, torch.ones_like(scale))
                shift = torch.where(mask, shift, torch.zeros_like(shift))
                active.update(steps)
            elif length is not None:
                active.update(range(length))
            blocks.append(k)
            units.append(unit)
            scales.append(scale)
            shifts.append(shift)
    return NodeEdits(
        torch.tensor(blocks, device=device),
        torch.tensor(units, device=device),
        torch.stack(scales).to(device),
        torch.stack(shifts).to(device),
        sorted(active) if length is not None else None,
    )


def _weight(layer: LayerInfo, recurrent: bool) -> torch.Tensor:
    module = layer.module
    if layer.recurrent:
        kind = "hh" if recurrent else "ih"
        return getattr(module, f"weight_{kind}_l{layer.sublayer or 0}").detach()
    return module.weight.detach()


def _compile_edges(layer, rows, length, recurrent, device, dtype) -> EdgeEdits:
    if layer.kind == "embedding":
        raise InterventionError(
            f"layer '{layer.name}' is an embedding and has no incoming edges; intervene on its units instead"
        )
    if recurrent and not layer.recurrent:
        raise InterventionError(f"recurrent=True needs a recurrent layer; '{layer.name}' is a {layer.kind}")
    if not recurrent and layer.parent_map is None:
        raise InterventionError(f"layer '{layer.name}' has no traced parent ({layer.note})")
    weight = _weight(layer, recurrent).to(dtype)
    gates = GATES.get(layer.kind, 1)
    hidden = layer.n_units
    entries = []
    for k, spec, steps in rows:
        if steps is not None and not layer.recurrent:
            raise InterventionError(
                f"edge steps apply to recurrent layers only; '{layer.name}' is a {layer.kind}"
            )
        n_parents = layer.n_units if recurrent else layer.parent_units
        label = "recurrent parent" if recurrent else f"parent unit (of {layer.parent})"
        _check_units(layer, spec.parents, label, n_parents)
        children = tuple(range(layer.n_units)) if spec.children is None else spec.children
        _check_units(layer, children, "child unit", layer.n_units)
        features = [f for p in spec.parents for f in ((p,) if recurrent else layer.parent_map[p])]
        feat = torch.tensor(features, dtype=torch.long)
        if layer.recurrent:
            rows_w = torch.tensor([g * hidden + j for g in range(gates) for j in children])
            coef = torch.zeros(len(features), gates * hidden, dtype=dtype)
            block = weight[rows_w][:, feat].T
            coef[:, rows_w] = _delta(block, spec)
        else:
            coef = _plain_coef(layer, weight, feat, children, spec, explicit=spec.children is not None)
        mask = None
        if steps is not None:
            mask = torch.zeros(length, dtype=dtype)
            mask[steps] = 1.0
        entries.append((k, feat, coef, mask, spec))
    _check_overlap(layer, entries)
    width = max(len(e[1]) for e in entries)
    blocks = torch.tensor([e[0] for e in entries])
    features = torch.zeros(len(entries), width, dtype=torch.long)
    coefs = torch.zeros(len(entries), width, *entries[0][2].shape[1:], dtype=dtype)
    for row, (_, feat, coef, _, _) in enumerate(entries):
        features[row, : len(feat)] = feat
        coefs[row, : len(feat)] = coef
    steps_mask = None
    if any(e[3] is not None for e in entries):
        steps_mask = torch.stack([torch.ones(length, dtype=dtype) if e[3] is None else e[3] for e in entries])
        steps_mask = steps_mask.to(device)
    return EdgeEdits(blocks.to(device), features.to(device), coefs.to(device), steps_mask)


def _delta(weights: torch.Tensor, spec: EdgeIntervention) -> torch.Tensor:
    if spec.mode == "set":
        return spec.value - weights
    return (spec.value - 1.0) * weights


def _plain_coef(layer, weight, feat, children, spec, explicit) -> torch.Tensor:
    """``(F, C_out, *kernel)`` coefficient of each parent feature into each child."""
    out_channels = weight.shape[0]
    groups = getattr(layer.module, "groups", 1)
    per_in, per_out = layer.in_features // groups, out_channels // groups
    coef = torch.zeros(len(feat), out_channels, *weight.shape[2:], dtype=weight.dtype)
    if groups == 1:
        index = torch.tensor(children)
        coef[:, index] = _delta(weight[index][:, feat], spec).movedim(0, 1)
        return coef
    for row, f in enumerate(feat.tolist()):
        group = f // per_in
        allowed = [c for c in children if c // per_out == group]
        if explicit and len(allowed) != len(children):
            bad = next(c for c in children if c // per_out != group)
            raise InterventionError(
                f"layer '{layer.name}' has no edge from input channel {f} to unit {bad} (groups={groups})"
            )
        if allowed:
            index = torch.tensor(allowed)
            coef[row, index] = _delta(weight[index, f - group * per_in], spec)
    return coef


def _check_overlap(layer: LayerInfo, entries: list) -> None:
    by_block: dict[int, list] = {}
    for entry in entries:
        by_block.setdefault(entry[0], []).append(entry)
    for block in by_block.values():
        if len(block) < 2:
            continue
        seen: set[tuple[int, int]] = set()
        for _, feat, _, _, spec in block:
            children = range(layer.n_units) if spec.children is None else spec.children
            pairs = {(f, c) for f in feat.tolist() for c in children}
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


def _gather_features(x: torch.Tensor, edge: EdgeEdits, n_blocks: int, shared: bool, axis: int) -> torch.Tensor:
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
    feats = _gather_features(x, edge, n_blocks, shared, x.dim() - 1)
    flat = feats.flatten(1, -2)
    delta = torch.bmm(flat, edge.coef)
    return delta.view(*feats.shape[:-1], edge.coef.shape[-1])


def conv_delta(x: torch.Tensor, module: torch.nn.Module, edge: EdgeEdits, n_blocks: int, shared: bool) -> torch.Tensor:
    """``(E, N, C_out, *spatial)`` output deltas of a Conv1d/2d: features convolved with kernel diffs."""
    entries, width = edge.features.shape
    spatial = x.shape[2:]
    feats = _gather_features(x, edge, n_blocks, shared, 1).movedim(-1, 2).movedim(0, 1)
    feats = feats.reshape(feats.shape[0], entries * width, *spatial)
    out_channels = edge.coef.shape[2]
    weight = edge.coef.movedim(2, 1).reshape(entries * out_channels, width, *edge.coef.shape[3:])
    conv = F.conv1d if module.weight.dim() == 3 else F.conv2d
    padding = module.padding
    if module.padding_mode != "zeros":
        feats = F.pad(feats, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding = 0
    out = conv(feats, weight, None, module.stride, padding, module.dilation, entries)
    return out.unflatten(1, (entries, out_channels)).movedim(1, 0)


def add_deltas(y: torch.Tensor, blocks: torch.Tensor, delta: torch.Tensor, n_blocks: int) -> None:
    """In place: add per-entry deltas ``(E, N, ...)`` to the blocks of ``y`` ``(K * N, ...)``."""
    y.unflatten(0, (n_blocks, -1)).index_add_(0, blocks, delta.to(y.dtype))


def rest_shape(layer: LayerInfo, per_sample: tuple[int, ...]) -> tuple[int, ...]:
    """A layer's per-sample output shape without the unit axis (recurrent: ``(T,)``)."""
    if layer.recurrent:
        return (per_sample[0],)
    if layer.kind.startswith("conv"):
        return tuple(per_sample[1:])
    return tuple(per_sample[:-1])


def apply_layer(y: torch.Tensor, x: torch.Tensor, edits: LayerEdits, shared: bool) -> None:
    """In place on a Linear/Conv/Embedding output ``y`` ``(K * N, ...)`` with input ``x``.

    Edge deltas come first (they change pre-activations); node edits then override.
    """
    layer, n_blocks = edits.layer, edits.n_blocks
    if edits.edge_in is not None:
        if layer.kind.startswith("conv"):
            delta = conv_delta(x, layer.module, edits.edge_in, n_blocks, shared)
        else:
            delta = linear_delta(x, edits.edge_in, n_blocks, shared)
        add_deltas(y, edits.edge_in.blocks, delta, n_blocks)
    if edits.node is not None:
        apply_nodes(y, layer, edits.node, n_blocks)
