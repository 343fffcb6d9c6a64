"""Naive reference implementations, deliberately simple and independent of the engine.

For every intervention: deep-copy the model, edit the copy's weights (edges) or
hook the unit (nodes), and run one sample at a time. An edge along a weight-free
path shared with other parents (``ParentLink.via == "path"``) is evaluated per
sample by running the model with every layer's output replaced by its clean value
except the parent unit, which is scaled, and feeding the child input that results
to an unedited copy of the child for the edge's children. Recurrent layers that need
per-step edits are replaced by a step-by-step unroll built from PyTorch's own
``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell`` (an LSTM with ``proj_size`` written
out per step); a cell called in a Python loop by :class:`NaiveCellLoop`, which runs
each call with an edited copy of the cell. Attention modules are replaced
by :class:`NaiveAttention`, a loop over the heads with edited weight copies and
per-head edits. This is the research code's method; tests and benchmarks check the
batched engine against it, and users can too. It runs with PyTorch's fused
attention fast path off, as the engine does.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import nn

from explainnn.interventions.hooks import no_fast_path
from explainnn.interventions.kinds.attention import HeadOutputs, feature_widths, parse_call
from explainnn.interventions.kinds.recurrent import CELLS, rnn
from explainnn.interventions.layers import LayerInfo, find_layers, resolve_layer
from explainnn.interventions.runner import InterventionResult, InterventionRunner
from explainnn.interventions.spec import EdgeIntervention, Intervention, InterventionSet, NodeIntervention, as_rows


def _edit_weight(weight: torch.Tensor, rows: Sequence[int], cols: Sequence[int], spec: EdgeIntervention) -> None:
    for r in rows:
        for c in cols:
            if spec.mode == "set":
                weight[r, c] = spec.value
            else:
                weight[r, c] *= spec.value


def _edge_weight_rows(layer: LayerInfo, spec: EdgeIntervention) -> tuple[list[int], list[int]]:
    """Weight rows (children, all gates) and columns (parent features) of an edge spec."""
    children = list(range(layer.n_units)) if spec.children is None else list(spec.children)
    if spec.within_layer:
        cols = list(spec.parents)
    else:
        cols = [f for p in spec.parents for f in layer.link(spec.parent_layer).unit_map[p]]
    mask = torch.zeros(1, layer.n_units, dtype=torch.bool)
    mask[0, children] = True
    rows = torch.nonzero(layer.unit_kind.child_rows(layer, mask)[0]).flatten().tolist()
    return rows, cols


def _edit_plain_layer(module: nn.Module, layer: LayerInfo, spec: EdgeIntervention) -> None:
    rows, cols = _edge_weight_rows(layer, spec)
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    groups = layer.unit_kind.groups(layer)
    per_in, per_out = layer.in_features // groups, weight.shape[0] // groups
    with torch.no_grad():
        for r in rows:
            for c in cols:
                if c // per_in == r // per_out:
                    _edit_weight(weight, [r], [c - (r // per_out) * per_in], spec)


def _unit_view(out: torch.Tensor, layer: LayerInfo, unit: int) -> torch.Tensor:
    return layer.unit_kind.unit_view(layer, out, unit)


def _set_unit(view: torch.Tensor, spec: NodeIntervention, mean: torch.Tensor | None) -> None:
    if spec.mode == "zero":
        view.zero_()
    elif spec.mode == "constant":
        assert spec.value is not None
        view.fill_(spec.value)
    elif spec.mode == "scale":
        assert spec.value is not None
        view.mul_(spec.value)
    else:
        assert mean is not None
        view.copy_(mean.expand_as(view))


def _node_hook(layer: LayerInfo, specs: list[NodeIntervention], means: dict):
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        out = output.clone()
        for spec in specs:
            for unit in spec.units:
                mean = means[layer.name][unit] if spec.mode == "mean" else None
                view = _unit_view(out, layer, unit)
                if spec.steps is None:
                    _set_unit(view, spec, mean)
                else:
                    for step in spec.steps:
                        _set_unit(view[:, step], spec, None if mean is None else mean[step])
        return out

    return hook


def _direction_part(layer: LayerInfo, rows: list[int], cols: list[int], recurrent: bool, direction: int):
    """Rows and columns of one direction's own weight (bidirectional layers stack forward, then backward)."""
    if layer.directions == 1:
        return rows, cols
    per_rows = layer.unit_kind.edge_weight(layer).shape[0] // layer.directions
    hidden = layer.n_units // layer.directions
    own_rows = [r - direction * per_rows for r in rows if direction * per_rows <= r < (direction + 1) * per_rows]
    own_cols = [c - direction * hidden for c in cols if direction * hidden <= c < (direction + 1) * hidden] \
        if recurrent else cols
    return own_rows, own_cols


def _edit_recurrent_weights(module: nn.Module, index: int, layer: LayerInfo, spec: EdgeIntervention) -> None:
    rows, cols = _edge_weight_rows(layer, spec)
    part = "hh" if spec.within_layer else "ih"
    for direction in range(layer.directions):
        own_rows, own_cols = _direction_part(layer, rows, cols, spec.within_layer, direction)
        suffix = "_reverse" if direction else ""
        _edit_weight(getattr(module, f"weight_{part}_l{index}{suffix}"), own_rows, own_cols, spec)


class UnrolledRNN(nn.Module):
    """A recurrent module unrolled step by step with PyTorch cells, with per-step edits.

    ``edges[l]`` and ``nodes[l]`` hold the specs for internal layer ``l``; an edge
    spec edits that step's cell weights, a node spec overwrites ``h_t`` after the
    step. The backward direction of a bidirectional module walks the steps from
    the last to the first. ``record`` keeps every layer's ``h`` (used for
    reference means).
    """

    def __init__(self, module: nn.Module, layers: list[LayerInfo], edges: dict[int, list[EdgeIntervention]],
                 nodes: dict[int, list[NodeIntervention]], means: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.source, self.layers = rnn(module), layers
        self.edges, self.nodes, self.means = edges, nodes, means
        self.recorded: list[torch.Tensor] = []

    def _cell(self, index: int, step: int, length: int, direction: int) -> nn.Module:
        module = self.source
        directions = 2 if module.bidirectional else 1
        width = module.input_size if index == 0 else module.hidden_size * directions
        suffix = "_reverse" if direction else ""
        kwargs = {"nonlinearity": module.nonlinearity} if isinstance(module, nn.RNN) else {}
        cell = CELLS[type(module)](width, module.hidden_size, bias=module.bias, **kwargs)
        with torch.no_grad():
            cell.weight_ih.copy_(getattr(module, f"weight_ih_l{index}{suffix}"))
            cell.weight_hh.copy_(getattr(module, f"weight_hh_l{index}{suffix}"))
            if module.bias:
                cell.bias_ih.copy_(getattr(module, f"bias_ih_l{index}{suffix}"))
                cell.bias_hh.copy_(getattr(module, f"bias_hh_l{index}{suffix}"))
            for spec in self.edges.get(index, []):
                if spec.steps is None or step in [s % length for s in spec.steps]:
                    layer = self.layers[index]
                    rows, cols = _edge_weight_rows(layer, spec)
                    rows, cols = _direction_part(layer, rows, cols, spec.within_layer, direction)
                    _edit_weight(cell.weight_hh if spec.within_layer else cell.weight_ih, rows, cols, spec)
        return cell.to(getattr(module, "weight_ih_l0").device)

    def _edited(self, weight: torch.Tensor, index: int, step: int, length: int, recurrent: bool) -> torch.Tensor:
        """A copy of ``weight`` with the edge specs of layer ``index`` (recurrent or not) active at ``step`` applied."""
        weight = weight.detach().clone()
        for spec in self.edges.get(index, []):
            if spec.within_layer == recurrent and (spec.steps is None or step in [s % length for s in spec.steps]):
                rows, cols = _edge_weight_rows(self.layers[index], spec)
                _edit_weight(weight, rows, cols, spec)
        return weight

    def _projected(self, x: torch.Tensor, hx: Any) -> Any:
        """An LSTM with ``proj_size``, written out per step: ``m = o * tanh(c)`` (the cell layer, edges on copies of
        ``W_ih`` and of ``W_hh W_hr`` read from ``m`` one step earlier) and ``h = W_hr m`` (the projection layer:
        its node edits set the state, its edge edits on a copy of ``W_hr`` reach the output only)."""
        module = self.source
        w_ih, w_hh, w_hr = (getattr(module, f"weight_{part}_l0").detach() for part in ("ih", "hh", "hr"))
        b_ih, b_hh = ((getattr(module, f"bias_{part}_l0").detach() if module.bias else torch.zeros(()))
                      for part in ("ih", "hh"))
        w_eff = w_hh @ w_hr
        rows, length, hidden = x.shape[0], x.shape[1], module.hidden_size
        if hx is None:
            h, c = x.new_zeros(rows, module.proj_size), x.new_zeros(rows, hidden)
        else:
            h, c = hx[0][0], hx[1][0]
        m = x.new_zeros(rows, hidden)
        outs, cells = [], []
        for t in range(length):
            rec = self._edited(w_eff, 0, t, length, True) - w_eff
            pre = x[:, t] @ self._edited(w_ih, 0, t, length, False).T + b_ih + h @ w_hh.T + b_hh + m @ rec.T
            i, f, g, o = pre.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            m = self._edit_nodes(0, t, length, torch.sigmoid(o) * torch.tanh(c), 0)
            h = self._edit_nodes(1, t, length, m @ w_hr.T, 0)
            outs.append(self._edit_nodes(1, t, length, m @ self._edited(w_hr, 1, t, length, False).T, 0))
            cells.append(m)
        out = torch.stack(outs, 1)
        self.recorded = [torch.stack(cells, 1), out]
        out_layout = out if module.batch_first else out.transpose(0, 1)
        return out_layout, (outs[-1][None], c[None])

    def forward(self, x: torch.Tensor, hx: Any = None) -> Any:
        module = self.source
        x = x if module.batch_first else x.transpose(0, 1)
        if module.proj_size:
            return self._projected(x, hx)
        lstm = isinstance(module, nn.LSTM)
        directions = 2 if module.bidirectional else 1
        shape = (module.num_layers * directions, x.shape[0], module.hidden_size)
        if hx is None:
            hx = (x.new_zeros(shape), x.new_zeros(shape)) if lstm else x.new_zeros(shape)
        h0, c0 = hx if lstm else (hx, None)
        finals_h: list[torch.Tensor] = []
        finals_c: list[torch.Tensor] = []
        length = x.shape[1]
        self.recorded = []
        for index in range(module.num_layers):
            per_direction = []
            for direction in range(directions):
                state = index * directions + direction
                h, c = h0[state], None if c0 is None else c0[state]
                outs: dict[int, torch.Tensor] = {}
                steps = range(length - 1, -1, -1) if direction else range(length)
                for step in steps:
                    cell = self._cell(index, step, length, direction)
                    if lstm:
                        h, c = cell(x[:, step], (h, c))
                    else:
                        h = cell(x[:, step], h)
                    h = self._edit_nodes(index, step, length, h, direction)
                    outs[step] = h
                per_direction.append(torch.stack([outs[t] for t in range(length)], 1))
                finals_h.append(h)
                if c is not None:
                    finals_c.append(c)
            x = torch.cat(per_direction, -1)
            self.recorded.append(x)
        out = x if module.batch_first else x.transpose(0, 1)
        if lstm:
            return out, (torch.stack(finals_h), torch.stack(finals_c))
        return out, torch.stack(finals_h)

    def _edit_nodes(self, index: int, step: int, length: int, h: torch.Tensor, direction: int) -> torch.Tensor:
        h = h.clone()
        hidden = int(self.source.hidden_size)
        for spec in self.nodes.get(index, []):
            if spec.steps is not None and step not in [s % length for s in spec.steps]:
                continue
            for unit in spec.units:
                if unit // hidden != direction:
                    continue
                mean = None
                if spec.mode == "mean":
                    mean = self.means[self.layers[index].name][unit][step]
                _set_unit(h[:, unit - direction * hidden], spec, mean)
        return h


class NaiveCellLoop:
    """A forward hook on a cell called once per step in a Python loop (the cell stays in place, so the loop's code
    that reads it still works): call ``t`` (of ``T`` per forward pass) returns the output of a copy of the cell with
    step ``t``'s edges written into its ``W_ih`` / ``W_hh``, with step ``t``'s node edits on ``h``. ``recorded``
    keeps every call's ``h`` (reference means)."""

    def __init__(self, module: nn.Module, layer: LayerInfo, specs: Sequence[Intervention] = (),
                 means: dict | None = None) -> None:
        assert isinstance(module, nn.RNNCellBase)
        self.source, self.layer, self.specs, self.means = module, layer, list(specs), means or {}
        self.length = layer.output_shape[0]
        self.count = 0
        self.recorded: list[torch.Tensor] = []

    def _at(self, spec: Intervention, step: int) -> bool:
        return spec.steps is None or step in [s % self.length for s in spec.steps]

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> Any:
        step = self.count % self.length
        self.count += 1
        edited = copy.deepcopy(self.source)
        for hook in list(edited._forward_hooks):
            del edited._forward_hooks[hook]
        with torch.no_grad():
            for spec in self.specs:
                if isinstance(spec, EdgeIntervention) and self._at(spec, step):
                    rows, cols = _edge_weight_rows(self.layer, spec)
                    _edit_weight(edited.weight_hh if spec.within_layer else edited.weight_ih, rows, cols, spec)
        out = edited(*args)
        h = (out[0] if isinstance(out, tuple) else out).clone()
        for spec in self.specs:
            if isinstance(spec, NodeIntervention) and self._at(spec, step):
                for unit in spec.units:
                    mean = self.means[self.layer.name][unit][step] if spec.mode == "mean" else None
                    _set_unit(h[:, unit], spec, mean)
        self.recorded.append(h)
        return (h, out[1]) if isinstance(out, tuple) else h


class NaiveAttention(nn.Module):
    """An ``nn.MultiheadAttention`` computed head by head, with edge edits on copies of its q/k/v weights and node
    edits on each head's output before the output projection; it returns :class:`HeadOutputs`.

    A path edge's children read their q, k and v from the child input :func:`path_input` gives for the sample the
    copy is called on (``sample_box``). ``recorded`` keeps each call's heads (reference means).
    """

    def __init__(self, module: nn.Module, layer: LayerInfo | None = None, specs: Sequence[Intervention] = (),
                 means: dict | None = None, path: tuple | None = None) -> None:
        super().__init__()
        assert isinstance(module, nn.MultiheadAttention)
        self.source, self.layer, self.means = module, layer, means or {}
        self.batch_first = module.batch_first
        self.nodes = [s for s in specs if isinstance(s, NodeIntervention)]
        self.path = path
        embed, kdim, vdim = feature_widths(module)
        if module._qkv_same_embed_dim:
            w_q, w_k, w_v = module.in_proj_weight.detach().chunk(3)
        else:
            w_q, w_k, w_v = module.q_proj_weight.detach(), module.k_proj_weight.detach(), module.v_proj_weight.detach()
        dense = torch.block_diag(w_q, w_k, w_v).clone()
        for spec in specs:
            if isinstance(spec, EdgeIntervention) and (path is None or spec not in path[0]):
                assert layer is not None
                rows, cols = _edge_weight_rows(layer, spec)
                _edit_weight(dense, rows, cols, spec)
        self.w_q = dense[:embed, :embed]
        self.w_k = dense[embed:2 * embed, embed:embed + kdim]
        self.w_v = dense[2 * embed:, embed + kdim:]
        self.recorded: list[torch.Tensor] = []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        module = self.source
        call = parse_call(module, args, kwargs)
        heads, d, embed = module.num_heads, module.head_dim, module.embed_dim
        bias = module.in_proj_bias.detach() if module.in_proj_bias is not None else torch.zeros(3 * embed)
        path_x = call.query
        path_children: set[int] = set()
        if self.path is not None:
            specs, model, layers, sample_box = self.path
            assert self.layer is not None
            _, path_x = path_input(model, layers, sample_box[0], self.layer, specs)
            if not module.batch_first:
                path_x = path_x.transpose(0, 1)
            kids = specs[0].children
            path_children = set(range(heads) if kids is None else kids)
        outs, probs = [], []
        for h in range(heads):
            rows = slice(h * d, (h + 1) * d)
            q_in, k_in, v_in = call.query, call.key, call.value
            if h in path_children:
                q_in = k_in = v_in = path_x
            q = q_in @ self.w_q[rows].T + bias[rows]
            k = k_in @ self.w_k[rows].T + bias[embed:][rows]
            v = v_in @ self.w_v[rows].T + bias[2 * embed:][rows]
            scores = q @ k.transpose(1, 2) / math.sqrt(d)
            if call.attn_mask is not None:
                mask = call.attn_mask if call.attn_mask.dim() == 2 else call.attn_mask.view(-1, heads, *call.attn_mask.shape[1:])[:, h]
                scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
            if call.key_padding_mask is not None:
                pad = call.key_padding_mask[:, None, :]
                scores = scores.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else scores + pad
            p = torch.softmax(scores, -1)
            z = p @ v
            for spec in self.nodes:
                if h in spec.units:
                    mean = self.means[spec.layer][h] if spec.mode == "mean" else None
                    if spec.steps is None:
                        _set_unit(z, spec, mean)
                    else:
                        for step in spec.steps:
                            _set_unit(z[:, step], spec, None if mean is None else mean[step])
            outs.append(z)
            probs.append(p)
        z_all = torch.stack(outs, 2)  # (N, T, heads, d)
        self.recorded.append(z_all)
        out = z_all.flatten(2) @ module.out_proj.weight.detach().T
        if module.out_proj.bias is not None:
            out = out + module.out_proj.bias.detach()
        if not module.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if call.need_weights:
            stacked = torch.stack(probs, 1)
            weights = stacked.mean(1) if call.average else stacked
        return HeadOutputs((out, weights), z_all)


def _naive_attention(copied: nn.Module) -> None:
    """Every attention module of ``copied`` replaced by an unedited :class:`NaiveAttention` (heads in its output)."""
    for name, module in list(copied.named_modules()):
        if isinstance(module, nn.MultiheadAttention):
            _set_module(copied, name, NaiveAttention(module))


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _module_layers(layers: list[LayerInfo], module_name: str) -> list[LayerInfo]:
    return sorted((info for info in layers if info.module_name == module_name), key=lambda info: info.sublayer or 0)


def intervened_copy(model: nn.Module, layers: list[LayerInfo], specs: Sequence[Intervention], means: dict) -> nn.Module:
    """A deep copy of ``model`` with ``specs`` applied by weight edits, hooks and unrolling.

    Path edges recompute their child's input from the sample the copy is called on.
    """
    sample_box = [None]
    copied = copy.deepcopy(model).eval()
    for module in copied.modules():
        if isinstance(module, nn.RNNBase):
            module.flatten_parameters()
    modules = dict(copied.named_modules())
    by_module: dict[str, list[Intervention]] = {}
    for spec in specs:
        by_module.setdefault(resolve_layer(layers, model, spec.layer).module_name, []).append(spec)
    for module_name, group in by_module.items():
        module = modules[module_name]
        infos = _module_layers(layers, module_name)
        named = {info.name: info for info in infos}
        if isinstance(module, nn.RNNCellBase):
            module.register_forward_hook(NaiveCellLoop(module, infos[0], group, means))
            continue
        if infos[0].unit_kind.stateful:
            edges: dict[int, list] = {}
            nodes: dict[int, list] = {}
            for spec in group:
                target = nodes if isinstance(spec, NodeIntervention) else edges
                target.setdefault(named[spec.layer].sublayer or 0, []).append(spec)
            if nodes or any(s.steps is not None for specs_ in edges.values() for s in specs_) or \
                    bool(getattr(module, "proj_size", 0)):
                _set_module(copied, module_name, UnrolledRNN(module, infos, edges, nodes, means))
            else:
                with torch.no_grad():
                    for index, specs_ in edges.items():
                        for spec in specs_:
                            _edit_recurrent_weights(module, index, infos[index], spec)
            continue
        layer = infos[0]
        node_specs = [s for s in group if isinstance(s, NodeIntervention)]
        path_specs = [s for s in group if isinstance(s, EdgeIntervention) and _is_path(layer, s)]
        if isinstance(module, nn.MultiheadAttention):
            path = (path_specs, model, layers, sample_box) if path_specs else None
            _set_module(copied, module_name, NaiveAttention(module, layer, group, means, path))
            continue
        for spec in group:
            if isinstance(spec, EdgeIntervention) and spec not in path_specs:
                _edit_plain_layer(module, layer, spec)
        if path_specs:
            module.register_forward_hook(_path_hook(layers, layer, path_specs, model, sample_box))
        if node_specs:
            module.register_forward_hook(_node_hook(layer, node_specs, means))
    copied.register_forward_pre_hook(lambda m, a: sample_box.__setitem__(0, a[0]))
    return copied


def _is_path(layer: LayerInfo, spec: Intervention) -> bool:
    return (isinstance(spec, EdgeIntervention) and not spec.within_layer and not layer.unit_kind.reads_ids
            and layer.link(spec.parent_layer).via == "path")


def _scale_unit(layer: LayerInfo, out: Any, unit: int, factor: float) -> Any:
    """A copy of a layer module's output with one unit multiplied by ``factor`` (recurrent: outputs and final states)."""
    return layer.unit_kind.scale_unit(layer, out, unit, factor)


def path_input(model: nn.Module, layers: list[LayerInfo], sample: torch.Tensor, child: LayerInfo,
               specs: Sequence[EdgeIntervention]) -> tuple[torch.Tensor, torch.Tensor]:
    """The child's clean input and its input with the path edges' parent units scaled, for one sample."""
    copied = copy.deepcopy(model).eval()
    _naive_attention(copied)
    names = {layer.module_name for layer in layers}
    recorded: dict[str, list] = {name: [] for name in names}
    seen: list[torch.Tensor] = []
    handles = [copied.get_submodule(name).register_forward_hook(
        lambda m, a, o, name=name: recorded[name].append(o)) for name in names]
    handles.append(copied.get_submodule(child.module_name).register_forward_pre_hook(lambda m, a: seen.append(a[0])))
    copied(sample)
    for handle in handles:
        handle.remove()
    by_name = {layer.name: layer for layer in layers}
    scaled: dict[str, list[tuple[LayerInfo, int, float]]] = {}
    for spec in specs:
        parent = by_name[child.link(spec.parent_layer).name]
        for unit in spec.parents:
            scaled.setdefault(parent.module_name, []).append((parent, unit, spec.value))

    def held(name: str):
        count = [0]

        def hook(module: nn.Module, args: tuple, output):
            out = recorded[name][min(count[0], len(recorded[name]) - 1)]
            count[0] += 1
            for parent, unit, factor in scaled.get(name, []):
                out = _scale_unit(parent, out, unit, factor)
            return out

        return hook

    for name in names:
        copied.get_submodule(name).register_forward_hook(held(name))
    copied.get_submodule(child.module_name).register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    copied(sample)
    return seen[0], seen[1]


def _path_hook(layers: list[LayerInfo], child: LayerInfo, specs: list[EdgeIntervention], model: nn.Module,
               sample_box: list):
    """Adds ``C(x') - C(x)`` of an unedited copy of the child to the path edges' children."""
    plain = copy.deepcopy(child.module).eval()

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        clean_x, path_x = path_input(model, layers, sample_box[0], child, specs)
        change = plain(path_x) - plain(clean_x)
        out = output.clone()
        children = range(child.n_units) if specs[0].children is None else specs[0].children
        for j in children:
            _unit_view(out, child, j).add_(_unit_view(change, child, j))
        return out

    return hook


def reference_means(model: nn.Module, layers: list[LayerInfo], names: set[str], reference: torch.Tensor) -> dict:
    """Per-unit means ``(n_units, *rest)`` over ``reference``, one sample at a time."""
    means = {}
    for name in names:
        layer = resolve_layer(layers, model, name)
        copied = copy.deepcopy(model).eval()
        samples = []
        if isinstance(copied.get_submodule(layer.module_name), nn.RNNCellBase):
            loop = NaiveCellLoop(copied.get_submodule(layer.module_name), layer)
            copied.get_submodule(layer.module_name).register_forward_hook(loop)
            for i in range(len(reference)):
                loop.recorded = []
                copied(reference[i : i + 1])
                samples.append(torch.cat(loop.recorded))
            means[name] = torch.stack(samples).mean(0).T
            continue
        if layer.unit_kind.stateful:
            module = copied.get_submodule(layer.module_name)
            unrolled = UnrolledRNN(module, _module_layers(layers, layer.module_name), {}, {}, {})
            _set_module(copied, layer.module_name, unrolled)
            for i in range(len(reference)):
                copied(reference[i : i + 1])
                samples.append(unrolled.recorded[layer.sublayer or 0][0])
            means[name] = torch.stack(samples).mean(0).T
            continue
        if isinstance(copied.get_submodule(layer.module_name), nn.MultiheadAttention):
            naive = NaiveAttention(copied.get_submodule(layer.module_name))
            _set_module(copied, layer.module_name, naive)
            for i in range(len(reference)):
                copied(reference[i : i + 1])
            means[name] = torch.stack([z[0] for z in naive.recorded]).mean(0).movedim(layer.unit_axis - 1, 0)
            continue
        copied.get_submodule(layer.module_name).register_forward_hook(lambda m, a, o: samples.append(o[0]))
        for i in range(len(reference)):
            copied(reference[i : i + 1])
        means[name] = torch.stack(samples).mean(0).movedim(layer.unit_axis - 1, 0)
    return means


@torch.no_grad()
def reference_run(
    model: nn.Module,
    inputs: torch.Tensor,
    interventions: Sequence[InterventionSet],
    target: int | torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> InterventionResult:
    """What :meth:`InterventionRunner.run` computes, the slow and obvious way.

    ``reference`` defines ``mode="mean"`` (default: ``inputs``), as in the runner.
    """
    with no_fast_path():
        return _reference_run(model, inputs, interventions, target, reference)


def _reference_run(model: nn.Module, inputs: torch.Tensor, interventions: Sequence[InterventionSet],
                   target: int | torch.Tensor | None, reference: torch.Tensor | None) -> InterventionResult:
    layers = find_layers(model, inputs[:1])
    rows = as_rows(interventions)
    clean_model = copy.deepcopy(model).eval()
    clean = torch.cat([clean_model(inputs[i : i + 1]) for i in range(len(inputs))])
    names = {s.layer for specs in rows for s in specs if isinstance(s, NodeIntervention) and s.mode == "mean"}
    means = reference_means(model, layers, names, inputs if reference is None else reference) if names else {}
    logits = []
    for specs in rows:
        copied = intervened_copy(model, layers, specs, means)
        logits.append(torch.cat([copied(inputs[i : i + 1]) for i in range(len(inputs))]))
    targets = InterventionRunner._targets(target, clean)
    return InterventionResult.from_logits(torch.stack(logits), clean, targets)
