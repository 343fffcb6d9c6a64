"""A hand-written oracle for edge ablation: one sample at a time, explicit loops over edges, float64.

Every layer's output is rebuilt from its incoming edges: for child unit ``j`` and
parent unit ``i`` with mask ``m``, the features ``i`` feeds contribute
``m * W[j, f] x_f + (1 - m) * W[j, f] x_abl_f``. Recurrent layers are unrolled step
by step with the gates written out. Path links (features shared by several
parents) are recomputed per child unit by running the model's weight-free code
between the parents and the child with each parent's output mixed for that unit.
"""

from __future__ import annotations

import copy
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
        with ModelPatch() as patch, torch.no_grad():
            recurrent: dict[str, list[LayerInfo]] = {}
            for layer in self.layers:
                if layer.unit_kind.stateful:
                    recurrent.setdefault(layer.module_name, []).append(layer)
                elif not layer.unit_kind.reads_ids:
                    patch.replace_forward(layer.module, self._layer(layer, values, source, record))
                else:
                    patch.replace_forward(layer.module, self._plain(layer, record))
            for group in recurrent.values():
                patch.replace_forward(group[0].module, self._kept(group[0], self._recurrent(group, values, source,
                                                                                            record), record))
            return self.model(x)

    def _kept(self, layer: LayerInfo, forward, record: dict | None):
        def wrapped(*args: Any) -> Any:
            out = forward(*args)
            self._current[layer.module_name] = out
            if record is not None:
                record[layer.module_name + "/out"] = out
            return out

        return wrapped

    def _plain(self, layer: LayerInfo, record: dict | None):
        return self._kept(layer, lambda *args: type(layer.module).forward(layer.module, *args), record)

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
                    current = _mix_units(parent, current, ablated, units)
                outputs[parent.module_name] = current
            out[j] = self._rerun(layer, outputs)
        return out

    def _rerun(self, child: LayerInfo, outputs: dict[str, Any]) -> torch.Tensor:
        """The model's forward from the input with the parents' outputs given, stopped at the child's input."""
        captured = []

        def capture(module: nn.Module, args: tuple) -> None:
            captured.append(args[0].clone())
            raise _Stop

        with ModelPatch() as patch:
            for info in self.layers:
                if info.module_name in outputs:
                    patch.replace_forward(info.module, lambda *a, value=outputs[info.module_name]: value)
                else:
                    patch.replace_forward(info.module, lambda *a, m=info.module: type(m).forward(m, *a))
            patch.forward_pre_hook(child.module, capture)
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


def _double(x: torch.Tensor) -> torch.Tensor:
    return x.double() if x.is_floating_point() else x


def _mean(values: list[Any]) -> Any:
    if isinstance(values[0], tuple):
        return tuple(_mean([v[k] for v in values]) for k in range(len(values[0])))
    return torch.stack(values).mean(0)


def _average(records: list[dict]) -> dict:
    return {key: _mean([r[key] for r in records]) for key in records[0]}


__all__ = ["Oracle", "INPUT"]
