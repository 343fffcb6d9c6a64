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
    return layer.unit_kind.select_blocks(layer, value, blocks, n_blocks)


def mix(layer: LayerInfo, current: Any, ablated: Any, factor: torch.Tensor) -> Any:
    """``current + factor * (current - ablated)`` per unit (``factor`` ``(R, units)`` is ``mask - 1``).

    ``current`` holds ``R * N`` rows; ``ablated`` ``N`` rows, one row (mean) or a
    scalar (zero). Recurrent outputs ``(seq, state)`` mix the sequence and the top
    layer's final states (the layer's kind says how).
    """
    return layer.unit_kind.mix(layer, current, ablated, factor)
