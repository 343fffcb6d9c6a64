"""A hand-written oracle for edge ablation: one sample at a time, explicit loops over edges, float64.

Every layer's output is rebuilt from its incoming edges: for child unit ``j`` and
parent unit ``i`` with mask ``m``, the features ``i`` feeds contribute
``m * W[j, f] x_f + (1 - m) * W[j, f] x_abl_f``. Recurrent layers are unrolled step
by step with the gates written out. Path links (features shared by several
parents) are recomputed per child unit by running the model's weight-free code
between the parents and the child with each parent's output mixed for that unit.

``nn.MultiheadAttention`` layers are written out head by head: a head's value is
its attention output before the output projection, ``(T, d)``. Head ``h`` reads
its own input: its q, k and v rows (``h d .. (h + 1) d`` of each projection) sum
the edges into ``h`` as above over the query's, the key's and the value's
features side by side, and a path link's features come from the model's
weight-free code rerun with each parent mixed for ``h``; then ``h`` attends.
The module's output is the output projection of all heads, and a path link out
of the heads mixes them head by head (current or ablated) per child unit.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explainnn.causal.edges import Edges
from explainnn.interventions.hooks import ModelPatch
from explainnn.interventions.layers import INPUT, LayerInfo, find_layers


class Oracle:
    """Edge-ablated outputs of ``model`` computed in float64 from per-edge loops."""

    def __init__(self, model: nn.Module, example: torch.Tensor, edges: Edges, ablation: str,
                 reference: torch.Tensor | None = None) -> None:
        self.model = copy.deepcopy(model).double().eval()
        self.example = _double(example[:1])
        self.layers = find_layers(self.model, self.example)
        self.edges = edges
        self.ablation = ablation
        self.reference = None if reference is None else _double(reference)
        self._mean: dict[str, Any] | None = None

    # -- sources ---------------------------------------------------------------------------------------------
    def _record(self, x: torch.Tensor) -> dict[str, Any]:
        record: dict[str, Any] = {}
        self._forward(x, {}, None, record)
        return record

    def _source(self, cf: torch.Tensor | None) -> dict[str, Any] | None:
        if self.ablation == "zero":
            return None
        if self.ablation == "patch":
            return self._record(_double(cf))
        if self._mean is None:
            self._mean = _average([self._record(self.reference[r:r + 1]) for r in range(len(self.reference))])
        return self._mean

    # -- outputs ---------------------------------------------------------------------------------------------
    def logits(self, x: torch.Tensor, mask: np.ndarray, cf: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C)`` outputs of the inputs ``x`` (counterfactuals ``cf`` row by row) under ``mask``."""
        values = {}
        for p, i, c, j, kind, m in zip(self.edges.parent_layer, self.edges.parent_unit, self.edges.child_layer,
                                       self.edges.child_unit, self.edges.kind, mask):
            values[(p, int(i), c, int(j), kind == "recurrent")] = float(m)
        rows = []
        for n in range(len(x)):
            source = self._source(None if cf is None else cf[n:n + 1])
            rows.append(self._forward(_double(x[n:n + 1]), values, source, None)[0])
        return torch.stack(rows)

    def _forward(self, x: torch.Tensor, values: dict, source: dict | None, record: dict | None) -> torch.Tensor:
        self._x = x
        self._current: dict[str, Any] = {}
        self._weights: dict[str, Any] = {}
        with ModelPatch() as patch, torch.no_grad():
            recurrent: dict[str, list[LayerInfo]] = {}
            for layer in self.layers:
                if layer.unit_kind.stateful:
                    recurrent.setdefault(layer.module_name, []).append(layer)
                elif isinstance(layer.module, nn.MultiheadAttention):
                    patch.replace_forward(layer.module, self._attention(layer, values, source, record))
                elif not layer.unit_kind.reads_ids:
                    patch.replace_forward(layer.module, self._layer(layer, values, source, record))
                else:
                    patch.replace_forward(layer.module, self._plain(layer, record))
            for group in recurrent.values():
                patch.replace_forward(group[0].module, self._kept(group[0], self._recurrent(group, values, source,
                                                                                            record), record))
            return self.model(x)

    def _kept(self, layer: LayerInfo, forward, record: dict | None):
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out = forward(*args, **kwargs)
            self._current[layer.module_name] = out
            if record is not None:
                record[layer.module_name + "/out"] = out
            return out

        return wrapped

    def _plain(self, layer: LayerInfo, record: dict | None):
        return self._kept(layer, lambda *args, **kwargs: type(layer.module).forward(layer.module, *args, **kwargs),
                          record)

    def _mask(self, values: dict, parent: str, i: int, child: str, j: int, recurrent: bool = False) -> float:
        return values.get((parent, i, child, j, recurrent), 1.0)

    def _ablated(self, source: dict | None, name: str, like: Any) -> Any:
        if source is None:
            return _zeros(like)
        return source[name]

    def _layer(self, layer: LayerInfo, values: dict, source: dict | None, record: dict | None):
        module = layer.module

        def forward(x: torch.Tensor) -> torch.Tensor:
            if record is not None:
                record[layer.name] = x.clone()
            xa = self._ablated(source, layer.name, x)
            shared = self._path_inputs(layer, values, source)
            if isinstance(module, nn.Linear):
                return self._linear(layer, x, xa, values, shared)
            return self._conv(layer, x, xa, values, shared)

        return self._kept(layer, forward, record)

    # -- path links ------------------------------------------------------------------------------------------
    def _path_inputs(self, layer: LayerInfo, values: dict, source: dict | None) -> dict[int, torch.Tensor] | None:
        """Per child unit: the child's input when each parent on a path link is mixed for that unit."""
        if not any(link.via == "path" for link in layer.parents):
            return None
        by_name = {info.name: info for info in self.layers}
        out = {}
        for j in range(layer.n_units):
            outputs = {}
            for link in layer.parents:
                parent = by_name[link.name]
                current = self._current[parent.module_name]
                if link.via == "path":
                    ablated = self._ablated(source, parent.module_name + "/out", current)
                    units = [self._mask(values, link.name, i, layer.name, j) for i in range(link.n_units)]
                    if isinstance(parent.module, nn.MultiheadAttention):
                        current = _mix_heads(current, ablated, units)
                    else:
                        current = _mix_units(parent, current, ablated, units)
                outputs[parent.module_name] = current
            out[j] = self._rerun(layer, outputs)
        return out

    def _rerun(self, child: LayerInfo, outputs: dict[str, Any]) -> torch.Tensor:
        """The model's forward from the input with the parents' outputs given, stopped at the child's input."""
        captured = []

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if isinstance(module, nn.MultiheadAttention):
                call = _bind(module, args, kwargs)
                assert call["query"] is call["key"] and call["query"] is call["value"], "path edges need self-attention"
                captured.append(_batch_first(module, call["query"]).clone())
            else:
                captured.append(args[0].clone())
            raise _Stop

        with ModelPatch() as patch:
            for info in self.layers:
                if info.module_name in outputs:
                    value = outputs[info.module_name]
                    if isinstance(info.module, nn.MultiheadAttention):
                        value = _project_heads(info.module, value), self._weights.get(info.module_name)
                    patch.replace_forward(info.module, lambda *a, value=value, **k: value)
                else:
                    patch.replace_forward(info.module, lambda *a, m=info.module, **k: type(m).forward(m, *a, **k))
            patch.forward_pre_hook(child.module, capture, with_kwargs=True)
            try:
                self.model(self._x)
            except _Stop:
                pass
        return captured[0]

    @staticmethod
    def _shared(layer: LayerInfo) -> list[int]:
        return sorted({f for link in layer.parents if link.via == "path" for f in sum(link.unit_map, ())})

    def _linear(self, layer: LayerInfo, x: torch.Tensor, xa: torch.Tensor, values: dict,
                shared: dict[int, torch.Tensor] | None) -> torch.Tensor:
        weight = layer.module.weight.numpy()
        bias = layer.module.bias
        x_np, xa_np = x[0].numpy(), np.broadcast_to(xa[0].numpy(), x[0].shape)
        out = np.zeros((*x_np.shape[:-1], layer.n_units))
        if bias is not None:
            out += bias.numpy()
        covered: set[int] = set()
        for link in layer.parents:
            for f in link.unit_map:
                covered.update(f)
        rest = [f for f in range(layer.in_features) if f not in covered]
        if rest:
            out += x_np[..., rest] @ weight[:, rest].T
        for link in layer.parents:
            if link.via == "path":
                continue
            # per (child unit, parent unit): the parent's features through the weights, current and ablated
            now = np.zeros((*x_np.shape[:-1], layer.n_units, link.n_units))
            ablated = np.zeros_like(now)
            for i, features in enumerate(link.unit_map):
                f = list(features)
                if f:
                    now[..., i] = x_np[..., f] @ weight[:, f].T
                    ablated[..., i] = xa_np[..., f] @ weight[:, f].T
            for j in range(layer.n_units):
                for i, features in enumerate(link.unit_map):
                    if features:
                        m = self._mask(values, link.name, i, layer.name, j)
                        out[..., j] += m * now[..., j, i] + (1 - m) * ablated[..., j, i]
        if shared is not None:
            f = self._shared(layer)
            for j in range(layer.n_units):
                out[..., j] += shared[j][0].numpy()[..., f] @ weight[j, f]
        return torch.from_numpy(out)[None]

    def _conv(self, layer: LayerInfo, x: torch.Tensor, xa: torch.Tensor, values: dict,
              shared: dict[int, torch.Tensor] | None) -> torch.Tensor:
        module = layer.module
        assert module.padding_mode == "zeros"
        conv = F.conv1d if module.weight.dim() == 3 else F.conv2d
        groups = module.groups
        per_in, per_out = layer.in_features // groups, layer.n_units // groups
        xa = xa.expand_as(x)
        covered = {f for link in layer.parents for f in sum(link.unit_map, ())}
        outs = []
        for j in range(layer.n_units):
            group = j // per_out
            parts = []
            for link in layer.parents:
                if link.via == "path":
                    continue
                for i, features in enumerate(link.unit_map):
                    inside = [f for f in features if f // per_in == group]
                    if not inside:
                        continue
                    m = self._mask(values, link.name, i, layer.name, j)
                    parts.append((inside, m * x[:, inside] + (1 - m) * xa[:, inside]))
            rest = [f for f in range(group * per_in, (group + 1) * per_in) if f not in covered]
            if rest:
                parts.append((rest, x[:, rest]))
            if shared is not None:
                inside = [f for f in self._shared(layer) if f // per_in == group]
                parts.append((inside, shared[j][:, inside]))
            total = None
            for features, value in parts:
                local = [f - group * per_in for f in features]
                part = conv(value, module.weight[j:j + 1, local], None, module.stride, module.padding,
                            module.dilation)
                total = part if total is None else total + part
            if module.bias is not None:
                total = total + module.bias[j]
            outs.append(total)
        return torch.cat(outs, 1)

    # -- attention heads -------------------------------------------------------------------------------------
    def _attention(self, layer: LayerInfo, values: dict, source: dict | None, record: dict | None):
        """The module's forward written out head by head; its value for path links is the heads ``(1, T, H, d)``."""
        module = layer.module

        def forward(*args: Any, **kwargs: Any) -> Any:
            call = _bind(module, args, kwargs)
            inputs = tuple(_batch_first(module, call[name]) for name in ("query", "key", "value"))
            if record is not None:
                record[layer.name] = tuple(t.clone() for t in inputs)
            ablated = self._ablated(source, layer.name, inputs)
            shared = self._path_inputs(layer, values, source)
            heads, probs = [], []
            for h in range(module.num_heads):
                q, k, v = self._head_projections(layer, h, inputs, ablated, values, shared)
                z, p = _attend(module, h, q, k, v, call)
                heads.append(z)
                probs.append(p)
            heads_t = torch.stack(heads, 2)
            weights = None
            if call["need_weights"]:
                weights = torch.stack(probs, 1)
                weights = weights.mean(1) if call["average_attn_weights"] else weights
            self._current[layer.module_name] = heads_t
            self._weights[layer.module_name] = weights
            if record is not None:
                record[layer.module_name + "/out"] = heads_t
            return _project_heads(module, heads_t), weights

        return forward

    def _head_projections(self, layer: LayerInfo, h: int, inputs: tuple, ablated: tuple, values: dict,
                          shared: dict[int, torch.Tensor] | None) -> list[torch.Tensor]:
        """Head ``h``'s q, k and v ``(1, L, d)``: its rows of each projection, summed edge by edge over the layer's
        input features (the query's, the key's and the value's side by side)."""
        module = layer.module
        d, embed = module.head_dim, module.embed_dim
        if module._qkv_same_embed_dim:
            weights = list(module.in_proj_weight.chunk(3))
        else:
            weights = [module.q_proj_weight, module.k_proj_weight, module.v_proj_weight]
        biases = [None] * 3 if module.in_proj_bias is None else list(module.in_proj_bias.chunk(3))
        widths = (embed, module.kdim, module.vdim)
        starts = (0, widths[0], widths[0] + widths[1])
        path = set(self._shared(layer))
        covered = {f for link in layer.parents for f in sum(link.unit_map, ())}
        out = []
        for part in range(3):
            rows = slice(h * d, (h + 1) * d)
            w = weights[part][rows]
            x, xa = inputs[part][0], ablated[part][0].expand_as(inputs[part][0])
            local = range(starts[part], starts[part] + widths[part])
            pre = torch.zeros(x.shape[0], d, dtype=x.dtype)
            if biases[part] is not None:
                pre += biases[part][rows]
            rest = [f - starts[part] for f in local if f not in covered]
            if rest:
                pre += x[:, rest] @ w[:, rest].T
            for link in layer.parents:
                if link.via == "path":
                    continue
                for i, features in enumerate(link.unit_map):
                    f = [g - starts[part] for g in features if g in local]
                    if f:
                        m = self._mask(values, link.name, i, layer.name, h)
                        pre += m * (x[:, f] @ w[:, f].T) + (1 - m) * (xa[:, f] @ w[:, f].T)
            f = [g - starts[part] for g in local if g in path]
            if f:
                assert shared is not None
                pre += shared[h][0][:, f] @ w[:, f].T
            out.append(pre[None])
        return out

    def _recurrent(self, group: list[LayerInfo], values: dict, source: dict | None, record: dict | None):
        module = group[0].module

        def forward(x: torch.Tensor, hx: Any = None) -> Any:
            assert module.batch_first and hx is None
            seq = x[0].numpy()
            kind = type(module).__name__.lower()
            hidden = module.hidden_size
            directions = 2 if module.bidirectional else 1
            finals_h, finals_c = [], []
            for index, layer in enumerate(group):
                name = layer.name
                if record is not None:
                    record[name + "/x"] = torch.from_numpy(seq.copy())
                xa = np.zeros_like(seq) if source is None else source[name + "/x"].numpy()
                outs = []
                length = seq.shape[0]
                for d in range(directions):
                    suffix = "_reverse" if d else ""
                    w_ih, w_hh, b_ih, b_hh = (getattr(module, f"{kind_}_l{index}{suffix}").detach().numpy()
                                              for kind_ in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                    order = list(range(length))[::-1] if d else list(range(length))
                    h, c = np.zeros(hidden), np.zeros(hidden)
                    h_abl = np.zeros((length, hidden)) if source is None else source[f"{name}/prev{d}"].numpy()
                    prevs, out = [], np.zeros((length, hidden))
                    for step, t in enumerate(order):
                        prevs.append(h.copy())
                        gi = self._gates_in(layer, w_ih, b_ih, seq[t], xa[t], values, d)
                        gh = self._gates_hidden(layer, w_hh, b_hh, h, h_abl[step], values, d)
                        h, c = _cell(kind, getattr(module, "nonlinearity", "tanh"), gi, gh, h, c, hidden)
                        out[t] = h
                    if record is not None:
                        record[f"{name}/prev{d}"] = torch.from_numpy(np.stack(prevs))
                    outs.append(out)
                    finals_h.append(h)
                    finals_c.append(c)
                seq = np.concatenate(outs, 1)
            h_n = torch.from_numpy(np.stack(finals_h))[:, None]
            if isinstance(module, nn.LSTM):
                return torch.from_numpy(seq)[None], (h_n, torch.from_numpy(np.stack(finals_c))[:, None])
            return torch.from_numpy(seq)[None], h_n

        return forward

    def _gates_in(self, layer: LayerInfo, w_ih, b_ih, x, xa, values, d) -> np.ndarray:
        hidden = layer.module.hidden_size
        gates = w_ih.shape[0] // hidden
        out = b_ih.copy()
        for g in range(gates):
            for u in range(hidden):
                row = g * hidden + u
                j = d * hidden + u
                for link in layer.parents:
                    for i, features in enumerate(link.unit_map):
                        if not features:
                            continue
                        m = self._mask(values, link.name, i, layer.name, j)
                        f = list(features)
                        out[row] += m * (w_ih[row, f] @ x[f]) + (1 - m) * (w_ih[row, f] @ xa[f])
        return out

    def _gates_hidden(self, layer: LayerInfo, w_hh, b_hh, h, h_abl, values, d) -> np.ndarray:
        hidden = layer.module.hidden_size
        gates = w_hh.shape[0] // hidden
        out = b_hh.copy()
        for g in range(gates):
            for u in range(hidden):
                row = g * hidden + u
                for i in range(hidden):
                    m = self._mask(values, layer.name, d * hidden + i, layer.name, d * hidden + u, True)
                    out[row] += m * w_hh[row, i] * h[i] + (1 - m) * w_hh[row, i] * h_abl[i]
        return out


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _cell(kind: str, nonlinearity: str, gi, gh, h, c, hidden):
    if kind == "lstm":
        pre = gi + gh
        i, f, g, o = (pre[k * hidden:(k + 1) * hidden] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return _sigmoid(o) * np.tanh(c), c
    if kind == "gru":
        r = _sigmoid(gi[:hidden] + gh[:hidden])
        z = _sigmoid(gi[hidden:2 * hidden] + gh[hidden:2 * hidden])
        n = np.tanh(gi[2 * hidden:] + r * gh[2 * hidden:])
        return (1 - z) * n + z * h, c
    pre = gi + gh
    return (np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0.0)), c


class _Stop(Exception):
    pass


def _zeros(like: Any) -> Any:
    if isinstance(like, tuple):
        return tuple(_zeros(item) for item in like)
    return torch.zeros_like(like)


def _mix_units(layer: LayerInfo, current: Any, ablated: Any, masks: list[float]) -> Any:
    """``m * current + (1 - m) * ablated`` unit by unit (recurrent: the sequence and the top layer's final states)."""
    if layer.unit_kind.stateful:
        module = layer.module
        seq, state = current
        seq_abl, state_abl = ablated
        seq = seq.clone()
        states = [s.clone() for s in (state if isinstance(state, tuple) else (state,))]
        abl_states = state_abl if isinstance(state_abl, tuple) else (state_abl,)
        hidden, top = module.hidden_size, (module.num_layers - 1) * layer.directions
        for u, m in enumerate(masks):
            seq[..., u] = m * seq[..., u] + (1 - m) * seq_abl[..., u]
            for s, a in zip(states, abl_states):
                row = top + u // hidden
                s[row, :, u % hidden] = m * s[row, :, u % hidden] + (1 - m) * a[row, :, u % hidden]
        return seq, (tuple(states) if isinstance(state, tuple) else states[0])
    out = current.clone()
    axis = layer.unit_axis
    for u, m in enumerate(masks):
        index = [slice(None)] * current.dim()
        index[axis] = u
        out[tuple(index)] = m * current[tuple(index)] + (1 - m) * ablated.expand_as(current)[tuple(index)]
    return out


_MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def _bind(module: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The attention call's arguments by name, PyTorch's defaults filled in."""
    bound = _MHA_SIGNATURE.bind(module, *args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _batch_first(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    assert t.dim() == 3, "batched attention input"
    return t if module.batch_first else t.transpose(0, 1)


def _attend(module: nn.Module, h: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            call: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Head ``h`` of one sample: ``softmax(q k^T / sqrt(d) + masks) v`` ``(1, T, d)`` and its probabilities."""
    assert not call["is_causal"] or call["attn_mask"] is not None
    scores = q @ k.transpose(1, 2) / math.sqrt(module.head_dim)
    mask = call["attn_mask"]
    if mask is not None:
        mask = mask[h] if mask.dim() == 3 else mask
        scores = scores + _additive(mask, scores)
    padding = call["key_padding_mask"]
    if padding is not None:
        scores = scores + _additive(padding, scores)[:, None, :]
    probs = torch.softmax(scores, -1)
    return probs @ v, probs


def _additive(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=like.dtype).masked_fill(mask, float("-inf"))
    return mask.to(like.dtype)


def _project_heads(module: nn.Module, heads: torch.Tensor) -> torch.Tensor:
    """The module's output (its layout) from the heads ``(1, T, H, d)``: the output projection."""
    out = F.linear(heads.flatten(2), module.out_proj.weight, module.out_proj.bias)
    return out if module.batch_first else out.transpose(0, 1)


def _mix_heads(current: torch.Tensor, ablated: torch.Tensor, masks: list[float]) -> torch.Tensor:
    """``m * current + (1 - m) * ablated`` head by head (heads ``(1, T, H, d)``)."""
    ablated = ablated.expand_as(current)
    return torch.stack([m * current[:, :, h] + (1 - m) * ablated[:, :, h] for h, m in enumerate(masks)], 2)


def _double(x: torch.Tensor) -> torch.Tensor:
    return x.double() if x.is_floating_point() else x


def _mean(values: list[Any]) -> Any:
    if isinstance(values[0], tuple):
        return tuple(_mean([v[k] for v in values]) for k in range(len(values[0])))
    return torch.stack(values).mean(0)


def _average(records: list[dict]) -> dict:
    return {key: _mean([r[key] for r in records]) for key in records[0]}


__all__ = ["Oracle", "INPUT"]
