"""Path links of edge ablation: the weight-free code between a child's parents and the child, rerun per child unit.

When several parents feed the same input features of a child (a residual add then
a ReLU, attention pooling), the edge ``i -> j`` replaces parent unit ``i``'s output
by its ablated value *for child unit j only*: every child unit gets its own
mixture of parent values, and the ``torch.fx`` nodes between the parents and the
child (no weight layers among them) are rerun on those mixtures. Only the pairs
(child unit, mask) with an edge that is not fully kept are rerun when no gradient
is needed; the others read the child's current input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from explainnn.errors import InterventionError
from explainnn.interventions.fxsplit import GraphSplit
from explainnn.interventions.layers import LayerInfo


class PathRegion:
    """The fx nodes from a child's parents (the roots) to the child's first argument."""

    def __init__(self, split: GraphSplit, child: LayerInfo, roots: list[str], layer_modules: set[str]) -> None:
        self.split = split
        self.child = child
        self.roots = roots
        root_nodes = {}
        for name in roots:
            node = split.start_node(name)
            if node is None:
                raise InterventionError(
                    f"edge ablation cannot handle module '{child.module_name}': its parent '{name}' is not one call "
                    "in the traced graph"
                )
            root_nodes[name] = node
        target = split.start_node(child.module_name)
        if target is None or not target.args or not isinstance(target.args[0], fx.Node):
            raise InterventionError(
                f"edge ablation cannot handle module '{child.module_name}': its input is not one traced value"
            )
        blockers = layer_modules - set(roots)
        live: set[fx.Node] = set(root_nodes.values())
        for node in split.nodes:
            if node in live or node.op == "output":
                continue
            if node.op == "call_module" and node.target in blockers:
                continue
            if any(arg in live for arg in node.all_input_nodes):
                live.add(node)
        self.arg = target.args[0]
        if self.arg not in live:
            raise InterventionError(
                f"edge ablation cannot handle module '{child.module_name}': no traced path from its parents reaches it"
            )
        ancestors: set[fx.Node] = set()
        stack = [self.arg]
        while stack:
            node = stack.pop()
            if node in ancestors or node not in live:
                continue
            ancestors.add(node)
            stack.extend(node.all_input_nodes)
        self.root_nodes = root_nodes
        self.run_nodes = [node for node in split.nodes if node in ancestors and node not in root_nodes.values()]
        self.needed = {arg for node in self.run_nodes for arg in node.all_input_nodes if arg not in ancestors}

    def frontier(self, inputs: torch.Tensor) -> dict[fx.Node, Any]:
        """Values of the nodes the region reads that its roots do not reach, on ``inputs`` (no graph)."""
        values: dict[fx.Node, Any] = {}
        env: dict[fx.Node, Any] = {}
        if not self.needed:
            return values
        last = max(self.split.nodes.index(node) for node in self.needed)
        with torch.no_grad():
            for node in self.split.nodes[: last + 1]:
                env[node] = self.split._run_node(node, env, inputs)
                if node in self.needed:
                    values[node] = env[node]
        return values

    def run(self, roots: dict[str, Any], frontier: dict[fx.Node, Any], inputs: torch.Tensor,
            n_blocks: int) -> torch.Tensor:
        """The child's input when the roots output ``roots`` (``n_blocks * N`` rows each)."""
        env: dict[fx.Node, Any] = {self.root_nodes[name]: value for name, value in roots.items()}
        n = inputs.shape[0]
        for node in self.run_nodes:
            for arg in node.all_input_nodes:
                if arg not in env:
                    env[arg] = self.split._tiled(arg, frontier[arg], n, n_blocks)
            env[node] = self.split._run_node(node, env, inputs)
        return env[self.arg]


def select_blocks(layer: LayerInfo, value: Any, blocks: torch.Tensor, n_blocks: int) -> Any:
    """The rows of blocks ``blocks`` (``R``) of a layer output over ``n_blocks`` blocks: ``R * N`` rows."""
    if layer.recurrent:
        seq, state = value
        states = state if isinstance(state, tuple) else (state,)
        picked = tuple(s.unflatten(1, (n_blocks, -1))[:, blocks].flatten(1, 2) for s in states)
        seq = seq.unflatten(0, (n_blocks, -1))[blocks].flatten(0, 1)
        return seq, (picked if isinstance(state, tuple) else picked[0])
    return value.unflatten(0, (n_blocks, -1))[blocks].flatten(0, 1)


def mix(layer: LayerInfo, current: Any, ablated: Any, factor: torch.Tensor) -> Any:
    """``current + factor * (current - ablated)`` per unit (``factor`` ``(R, units)`` is ``mask - 1``).

    ``current`` holds ``R * N`` rows; ``ablated`` ``N`` rows, one row (mean) or a
    scalar (zero). Recurrent outputs ``(seq, state)`` mix the sequence and the top
    layer's final states.
    """
    rows = factor.shape[0]
    if layer.recurrent:
        module = layer.module
        seq, state = current
        seq_abl, state_abl = ablated if isinstance(ablated, tuple) else (ablated, None)
        shape = (rows, 1, 1, factor.shape[1])
        mixed_seq = _mix_rows(seq, seq_abl, factor.view(shape), rows, 0)
        states = state if isinstance(state, tuple) else (state,)
        abl_states = (state_abl if isinstance(state_abl, tuple) else (state_abl,)) if state_abl is not None \
            else (None,) * len(states)
        mixed_states = []
        hidden, directions = module.hidden_size, layer.directions
        top = (module.num_layers - 1) * directions
        for s, s_abl in zip(states, abl_states):
            parts = []
            for index in range(s.shape[0]):
                direction = index - top
                if direction < 0:
                    parts.append(s[index])
                    continue
                f = factor[:, direction * hidden:(direction + 1) * hidden].view(rows, 1, hidden)
                a = torch.zeros((), dtype=s.dtype) if s_abl is None else s_abl[index]
                parts.append(_mix_rows(s[index], a, f, rows, 0))
            mixed_states.append(torch.stack(parts))
        out_state = tuple(mixed_states) if isinstance(state, tuple) else mixed_states[0]
        return mixed_seq, out_state
    axis = 1 if layer.kind.startswith("conv") else current.dim() - 1
    view = [rows] + [1] * current.dim()
    view[axis + 1] = factor.shape[1]
    return _mix_rows(current, ablated, factor.view(view), rows, 0)


def _mix_rows(current: torch.Tensor, ablated: torch.Tensor, factor: torch.Tensor, rows: int, axis: int) -> torch.Tensor:
    view = current.unflatten(axis, (rows, -1))
    ablated = ablated.to(current.dtype)
    return (view + factor * (view - ablated)).flatten(axis, axis + 1)
