"""``nn.MultiheadAttention``: one unit per head, its value the head's attention output before the output projection.

A head ``h`` is to its tokens what a conv channel is to its pixels: its value at
query position ``t`` is ``z_h[t] = softmax(q_h k_h^T / sqrt(d) + mask)[t] v_h``
(``d`` values), so a layer's per-sample values are ``(T, heads, d)`` with the
positions as its step axis (interventions at some positions only). The module's
output is ``out_proj(z)``, and ``out_proj`` is linear: an edit of head ``h`` adds
``W_o[:, h] (z_h' - z_h)`` to it. Every value this kind reads or writes is an
:class:`HeadOutputs`, the module's ``(output, weights)`` with the heads beside
them (:meth:`AttentionKind.exposing_forward` returns one while the engine hooks
the module; its output and weights are PyTorch's own).

The input features of the layer are the query's, the key's and the value's side
by side (``E + kdim + vdim``): a parent unit of a self-attention reaches feature
``f`` of all three. Head ``h`` owns rows ``h d .. (h + 1) d`` of each of the q, k
and v projections (:meth:`AttentionKind.child_rows`); an edge into it changes
only those rows' pre-activations, then attention runs again (nonlinear). Edges
out of heads reach later layers through the output projection and the residual
stream, as path links. Path edges into a head need a self-attention (query, key
and value one tensor).

Refused in one line: ``add_bias_kv``, ``add_zero_attn`` and unbatched input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from explainnn.errors import InterventionError
from explainnn.interventions.kinds.base import KindLayer, UnitKind, mix_rows

if TYPE_CHECKING:
    from explainnn.interventions.apply import EditPlan, StartCache
    from explainnn.interventions.clean import CleanPass
    from explainnn.interventions.edits import EdgeEdits
    from explainnn.interventions.layers import LayerInfo

_ARG_NAMES = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
              "is_causal")


class HeadOutputs(tuple):
    """An attention module's ``(output, weights)`` with ``heads``: ``(N, T, heads, d)``, batch-first, before the
    output projection (``heads`` is ``None`` where unknown)."""

    heads: torch.Tensor | None

    def __new__(cls, items: Iterable[Any], heads: torch.Tensor | None = None) -> "HeadOutputs":
        obj = super().__new__(cls, tuple(items))
        obj.heads = heads
        return obj

    def map_tensors(self, fn: Callable[[Any], Any]) -> "HeadOutputs":
        """The same output with ``fn`` applied to the output, the weights and the heads."""
        return HeadOutputs((fn(item) for item in self), None if self.heads is None else fn(self.heads))


@dataclass
class AttentionCall:
    """One call of an attention module, batch-first: query ``(N, T, E)``, key ``(N, S, kdim)``, value, masks."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    key_padding_mask: torch.Tensor | None
    attn_mask: torch.Tensor | None
    need_weights: bool
    average: bool

    @property
    def self_attention(self) -> bool:
        """Whether query, key and value are one tensor (path edges into heads need it)."""
        return self.key is self.query and self.value is self.query

    def tiled(self, n_blocks: int) -> "AttentionCall":
        """The call repeated over ``n_blocks`` blocks of rows (query, key and value stay one tensor if they were)."""
        if n_blocks == 1:
            return self
        q = _repeat(self.query, n_blocks)
        k = q if self.key is self.query else _repeat(self.key, n_blocks)
        v = q if self.value is self.query else (k if self.value is self.key else _repeat(self.value, n_blocks))
        return AttentionCall(q, k, v, self.key_padding_mask, self.attn_mask, self.need_weights, self.average)


def mha(module: nn.Module) -> nn.MultiheadAttention:
    """``module`` as an attention module (a one-line error otherwise)."""
    if not isinstance(module, nn.MultiheadAttention):
        raise InterventionError(f"{type(module).__name__} is not an nn.MultiheadAttention")
    return module


def parse_call(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AttentionCall:
    """The call's tensors, batch-first, with PyTorch's defaults for what was not passed."""
    module = mha(module)
    bound = dict(zip(_ARG_NAMES, args))
    bound.update(kwargs)
    q, k, v = bound["query"], bound["key"], bound["value"]
    if not all(isinstance(t, torch.Tensor) and t.dim() == 3 for t in (q, k, v)):
        raise InterventionError("nn.MultiheadAttention needs batched (N, T, E) query, key and value tensors")
    if not module.batch_first:
        same_k, same_v = k is q, v is q
        q = q.transpose(0, 1)
        k = q if same_k else k.transpose(0, 1)
        v = q if same_v else v.transpose(0, 1)
    return AttentionCall(q, k, v, bound.get("key_padding_mask"), bound.get("attn_mask"),
                         bool(bound.get("need_weights", True)), bool(bound.get("average_attn_weights", True)))


def _repeat(t: torch.Tensor, n_blocks: int) -> torch.Tensor:
    return t.repeat(n_blocks, *([1] * (t.dim() - 1)))


def _rows_like(t: torch.Tensor, rows: int) -> torch.Tensor:
    """A per-sample tensor (batch on axis 0) repeated to ``rows`` rows (block tiling of masks)."""
    return t if t.shape[0] == rows else _repeat(t, rows // t.shape[0])


def projection_weights(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_q, W_k, W_v)``: ``(E, E)``, ``(E, kdim)``, ``(E, vdim)``."""
    module = mha(module)
    if module._qkv_same_embed_dim:
        assert module.in_proj_weight is not None
        w_q, w_k, w_v = module.in_proj_weight.chunk(3)
        return w_q, w_k, w_v
    assert module.q_proj_weight is not None and module.k_proj_weight is not None and module.v_proj_weight is not None
    return module.q_proj_weight, module.k_proj_weight, module.v_proj_weight


def projection_biases(module: nn.Module) -> tuple[torch.Tensor | None, ...]:
    module = mha(module)
    if module.in_proj_bias is None:
        return None, None, None
    b_q, b_k, b_v = module.in_proj_bias.chunk(3)
    return b_q, b_k, b_v


def feature_widths(module: nn.Module) -> tuple[int, int, int]:
    """Input features of the query, the key and the value (side by side in the layer's input)."""
    module = mha(module)
    return module.embed_dim, module.kdim, module.vdim


def project(module: nn.Module, call: AttentionCall) -> list[torch.Tensor]:
    """``[q, k, v]`` pre-activations ``(N, L, E)`` of a call."""
    return [F.linear(x, w, b) for x, w, b in
            zip((call.query, call.key, call.value), projection_weights(module), projection_biases(module))]


def _float_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(mask, float("-inf"))
    return mask.to(like.dtype)


def attend(module: nn.Module, call: AttentionCall, q: torch.Tensor, k: torch.Tensor,
           v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heads ``(R, T, heads, d)`` and attention probabilities ``(R, heads, T, S)`` from projected q, k, v.

    ``R`` may be a multiple of the call's rows (blocks): the masks are tiled to it.
    """
    module = mha(module)
    heads, d = module.num_heads, module.head_dim
    rows = q.shape[0]
    qh = q.unflatten(-1, (heads, d)).transpose(1, 2)
    kh = k.unflatten(-1, (heads, d)).transpose(1, 2)
    vh = v.unflatten(-1, (heads, d)).transpose(1, 2)
    scores = torch.matmul(qh * (1.0 / math.sqrt(d)), kh.transpose(-2, -1))
    attn_mask = _float_mask(call.attn_mask, q)
    if attn_mask is not None:
        if attn_mask.dim() == 3:
            attn_mask = _rows_like(attn_mask.unflatten(0, (-1, heads)), rows)
        scores = scores + attn_mask
    padding = _float_mask(call.key_padding_mask, q)
    if padding is not None:
        scores = scores + _rows_like(padding, rows)[:, None, None, :]
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, vh).transpose(1, 2), probs


def out_delta(module: nn.Module, change: torch.Tensor) -> torch.Tensor:
    """The output change ``(R, T, E)`` (batch-first) of a change of the heads ``(R, T, heads, d)``."""
    return F.linear(change.flatten(-2), mha(module).out_proj.weight)


def heads_of(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """The heads ``(N, T, heads, d)`` of one call."""
    call = parse_call(module, args, kwargs)
    return attend(module, call, *project(module, call))[0]


class AttentionKind(UnitKind):
    name = "attention"
    module_types = (nn.MultiheadAttention,)
    attention = True

    def unsupported_reason(self, module: nn.Module) -> str | None:
        module = mha(module)
        if module.bias_k is not None:
            return "nn.MultiheadAttention with add_bias_kv is not supported (its extra key has no input)"
        if module.add_zero_attn:
            return "nn.MultiheadAttention with add_zero_attn is not supported"
        return None

    def units(self, module: nn.Module) -> tuple[int, int]:
        module = mha(module)
        return module.num_heads, sum(feature_widths(module))

    def layers(self, name: str, module: nn.Module, output: Any) -> list[KindLayer]:
        module = mha(module)
        shape = output[0]
        steps = shape[1] if module.batch_first else shape[0]
        heads, width = self.units(module)
        return [KindLayer(name, heads, width, (steps, heads, module.head_dim))]

    # -- layout -----------------------------------------------------------------------------------------------
    def batch_axis(self, module: nn.Module) -> int:
        return 0 if mha(module).batch_first else 1

    def unit_axis(self, layer: LayerInfo) -> int:
        return 2

    def time_axis(self, layer: LayerInfo) -> bool:
        return True

    # -- values in the module's output ------------------------------------------------------------------------
    def exposing_forward(self, module: nn.Module) -> Callable[..., Any] | None:
        """PyTorch's forward, with the heads (computed beside it) in a :class:`HeadOutputs`."""
        original = type(module).forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            out = original(module, *args, **kwargs)
            return HeadOutputs(out, heads_of(module, args, kwargs))

        return forward

    def _out(self, module: nn.Module, output: Any) -> torch.Tensor:
        """The output batch-first."""
        out = output[0]
        return out if mha(module).batch_first else out.transpose(0, 1)

    def _with_heads(self, module: nn.Module, output: Any, heads: torch.Tensor,
                    weights: Any = None) -> HeadOutputs:
        """``output`` with its heads replaced by ``heads`` (the output projection follows them)."""
        old = _heads(output)
        out = self._out(module, output)
        if old.shape[0] != heads.shape[0]:
            out = _rows_like(out, heads.shape[0])
            old = _rows_like(old, heads.shape[0])
        out = out + out_delta(module, heads - old)
        if not mha(module).batch_first:
            out = out.transpose(0, 1)
        return HeadOutputs((out, output[1] if weights is None else weights), heads)

    def tile_output(self, output: Any, module: nn.Module, n_blocks: int) -> Any:
        axis = self.batch_axis(module)
        out, weights = output[0], output[1]
        repeats = [1] * out.dim()
        repeats[axis] = n_blocks
        tiled = (out.repeat(repeats), None if weights is None else _repeat(weights, n_blocks))
        heads = getattr(output, "heads", None)
        return HeadOutputs(tiled, None if heads is None else _repeat(heads, n_blocks))

    def select_blocks(self, layer: LayerInfo, value: Any, blocks: torch.Tensor, n_blocks: int) -> Any:
        def pick(t: torch.Tensor | None, axis: int) -> torch.Tensor | None:
            if t is None:
                return None
            return t.unflatten(axis, (n_blocks, -1)).index_select(axis, blocks).flatten(axis, axis + 1)

        axis = self.batch_axis(layer.module)
        return HeadOutputs((pick(value[0], axis), pick(value[1], 0)), pick(_heads(value), 0))

    def mark_units(self, layer: LayerInfo, output: Any, units: torch.Tensor, value: float) -> Any:
        heads = _heads(output).clone()
        r = torch.arange(len(units), device=units.device)
        heads[r, :, units] = value
        return self._with_heads(layer.module, output, heads)

    def scale_units(self, layer: LayerInfo, out: Any, factors: torch.Tensor) -> Any:
        heads = _heads(out)
        blocks = factors.shape[0]
        scaled = (heads.unflatten(0, (blocks, -1)) * factors[:, None, None, :, None]).flatten(0, 1)
        return self._with_heads(layer.module, out, scaled)

    def scale_unit(self, layer: LayerInfo, out: Any, unit: int, factor: float) -> Any:
        heads = _heads(out).clone()
        heads[:, :, unit] *= factor
        return self._with_heads(layer.module, out, heads)

    def mix(self, layer: LayerInfo, current: Any, ablated: Any, factor: torch.Tensor) -> Any:
        rows = factor.shape[0]
        abl = ablated.heads if isinstance(ablated, HeadOutputs) else ablated
        assert abl is not None
        mixed = mix_rows(_heads(current), abl, factor.view(rows, 1, 1, factor.shape[1], 1), rows, 0)
        return self._with_heads(layer.module, current, mixed)

    def mean_output(self, layer: LayerInfo, value: Any) -> Any:
        axis = self.batch_axis(layer.module)
        weights = value[1]
        return HeadOutputs((value[0].mean(axis, keepdim=True), None if weights is None else weights.mean(0, True)),
                           _heads(value).mean(0, keepdim=True))

    def output_tensor(self, layer: LayerInfo, output: Any) -> tuple[torch.Tensor, int]:
        return _heads(output), 0

    def replace_output(self, layer: LayerInfo, output: Any, tensor: torch.Tensor) -> Any:
        return self._with_heads(layer.module, output, tensor)

    def clean_activation(self, layer: LayerInfo, clean: CleanPass) -> torch.Tensor:
        return _heads(clean.call(layer.module_name).output)

    def unit_values(self, layer: LayerInfo, output: Any) -> torch.Tensor:
        """``(N, heads)``: each head's mean norm over the positions."""
        return _heads(output).norm(dim=-1).mean(1)

    def unit_view(self, layer: LayerInfo, out: torch.Tensor, unit: int) -> torch.Tensor:
        return out.select(2, unit)

    # -- inputs and edges -------------------------------------------------------------------------------------
    def call_features(self, layer: LayerInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        call = parse_call(layer.module, args, kwargs)
        parts = [torch.isnan(x).any(1) for x in (call.query, call.key, call.value)]
        return torch.cat(parts, -1)

    def ablation_input(self, layer: LayerInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = parse_call(layer.module, args, kwargs)
        return call.query, call.key, call.value

    def input_features(self, layer: LayerInfo, inp: torch.Tensor) -> torch.Tensor:
        """A self-attention's input (query, key and value one tensor) laid out as the three side by side."""
        nan = super().input_features(layer, inp)
        return torch.cat([nan] * 3, -1)

    def edge_weight(self, layer: LayerInfo, recurrent: bool = False) -> torch.Tensor:
        """``(3 E, E + kdim + vdim)``: the q, k and v projections, block-diagonal over the three inputs."""
        return torch.block_diag(*(w.detach() for w in projection_weights(layer.module)))

    def unit_rows(self, layer: LayerInfo, per_row: torch.Tensor) -> torch.Tensor:
        module = mha(layer.module)
        return per_row.view(3, module.num_heads, module.head_dim, *per_row.shape[1:]).any(2).any(0)

    def child_rows(self, layer: LayerInfo, child_mask: torch.Tensor) -> torch.Tensor:
        module = mha(layer.module)
        return child_mask.repeat_interleave(module.head_dim, 1).repeat(1, 3)

    def input_delta(self, layer: LayerInfo, x: torch.Tensor, edge: EdgeEdits, n_blocks: int,
                    shared: bool) -> torch.Tensor:
        raise InterventionError(
            f"attention layer '{layer.name}' applies its edge edits in its own forward (edited_forward)")

    def edited_forward(self, plan: EditPlan, layers: list[LayerInfo],
                       cached: StartCache | None) -> Callable[..., Any] | None:
        """The heads recomputed with edge edits on their q/k/v pre-activations, node edits on the heads, and the
        output moved by the output projection of the heads' change."""
        layer = layers[0]
        module = mha(layer.module)
        original = type(module).forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            n_blocks = plan.n_blocks
            if cached is not None:
                call = parse_call(module, cached.args, cached.kwargs or {})
                base = self.tile_output(cached.output, module, n_blocks)
                shared = True
            else:
                call = parse_call(module, args, kwargs)
                base = HeadOutputs(original(module, *args, **kwargs), None)
                shared = False
            rest = (call.query.shape[1], module.head_dim)
            edits = plan.compiled(layer, rest, call.query)
            edge_edits = [e for e in (edits.edge_in, edits.edge_path) if e is not None]
            weights = None
            if edge_edits or _heads_or_none(base) is None:
                full = call if not shared else call.tiled(n_blocks)
                projected = project(module, full)
                clean_heads = _heads_or_none(base)
                if clean_heads is None:
                    clean_heads = attend(module, full, *projected)[0]
                    base = HeadOutputs(base, clean_heads)
                if edge_edits:
                    if edits.edge_in is not None:
                        x = call if shared else full
                        _add_projection_deltas(module, projected, x, edits.edge_in, n_blocks, shared)
                    if edits.edge_path is not None:
                        change = plan.path_changes.get(layer.name)
                        if change is None:
                            raise InterventionError(
                                f"path edges into layer '{layer.name}' need the batched InterventionRunner")
                        if not call.self_attention:
                            raise InterventionError(
                                f"path edges into attention layer '{layer.name}' need a self-attention (query, key "
                                "and value one tensor)")
                        _add_path_deltas(module, projected, change, edits.edge_path, n_blocks)
                    heads, probs = attend(module, full, *projected)
                    if call.need_weights:
                        weights = probs.mean(1) if call.average else probs
                else:
                    heads = clean_heads.clone()
            else:
                heads = _heads(base).clone()
            if edits.node is not None:
                from explainnn.interventions.edits import apply_nodes

                apply_nodes(heads, layer, edits.node, n_blocks)
            return self._with_heads(module, base, heads, weights)

        return forward


def segments(module: nn.Module) -> list[tuple[slice, slice]]:
    """Per q, k, v: its input features (in the layer's input) and its projection rows."""
    return _segments(module)


def attention_output(module: nn.Module, call: AttentionCall, projected: list[torch.Tensor]) -> HeadOutputs:
    """The module's output (its layout, weights as PyTorch returns them) from projected q, k, v, with the heads."""
    module = mha(module)
    heads, probs = attend(module, call, *projected)
    out = F.linear(heads.flatten(-2), module.out_proj.weight, module.out_proj.bias)
    if not module.batch_first:
        out = out.transpose(0, 1)
    weights = (probs.mean(1) if call.average else probs) if call.need_weights else None
    return HeadOutputs((out, weights), heads)


def _heads(output: Any) -> torch.Tensor:
    heads = getattr(output, "heads", None)
    if heads is None:
        raise InterventionError("an nn.MultiheadAttention output without its heads reached the engine")
    return heads


def _heads_or_none(output: Any) -> torch.Tensor | None:
    return getattr(output, "heads", None)


def _dense_coefficients(edge: EdgeEdits, in_features: int) -> torch.Tensor:
    """``(E, in_features, 3 E)``: each entry's coefficients on every input feature (zero where it has none)."""
    entries, _, rows = edge.coef.shape
    dense = edge.coef.new_zeros(entries, in_features, rows)
    index = edge.features.to(edge.coef.device)[:, :, None].expand(-1, -1, rows)
    return dense.scatter_add(1, index, edge.coef)


def _segments(module: nn.Module) -> list[tuple[slice, slice]]:
    """Per q, k, v: its input features and its projection rows."""
    widths = feature_widths(module)
    embed = mha(module).embed_dim
    starts = [0, widths[0], widths[0] + widths[1]]
    return [(slice(s, s + w), slice(i * embed, (i + 1) * embed)) for i, (s, w) in enumerate(zip(starts, widths))]


def _add_projection_deltas(module: nn.Module, projected: list[torch.Tensor], call: AttentionCall, edge: EdgeEdits,
                           n_blocks: int, shared: bool) -> None:
    """In place on ``projected`` (``K * N`` rows): the weight-edge deltas of each entry's block."""
    dense = _dense_coefficients(edge, sum(feature_widths(module)))
    for part, x, (features, rows) in zip(projected, (call.query, call.key, call.value), _segments(module)):
        coef = dense[:, features, rows]
        if shared:
            delta = torch.einsum("nlf,efr->enlr", x, coef.to(x.dtype))
        else:
            picked = x.unflatten(0, (n_blocks, -1))[edge.blocks]
            delta = torch.einsum("enlf,efr->enlr", picked, coef.to(x.dtype))
        part.unflatten(0, (n_blocks, -1)).index_add_(0, edge.blocks, delta)


def _add_path_deltas(module: nn.Module, projected: list[torch.Tensor], change: torch.Tensor, edge: EdgeEdits,
                     n_blocks: int) -> None:
    """In place: each path entry's input change (``(E * N, T, E)``, one self-attention input) through the rows of
    the heads its edges reach."""
    dense = _dense_coefficients(edge, sum(feature_widths(module)))
    per_entry = change.unflatten(0, (len(edge.blocks), -1))
    for part, (features, rows) in zip(projected, _segments(module)):
        delta = torch.einsum("enlf,efr->enlr", per_entry, dense[:, features, rows].to(change.dtype))
        part.unflatten(0, (n_blocks, -1)).index_add_(0, edge.blocks, delta)
