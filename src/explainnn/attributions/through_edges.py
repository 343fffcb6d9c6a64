"""Attributions through an edge circuit: an input change reaches the output only along the circuit's edges.

An *edge circuit* is a :class:`~explainnn.causal.CausalGraph` whose edges are
unit-to-unit edges of the model (:func:`~explainnn.causal.edges.enumerate_edges`):
node ids ``"layer:index"``, the model's input units ``"input:c"`` (channels of a
convolution, features of a Linear or recurrent layer), recurrent edges as two
units of one recurrent layer (``via="recurrent"``; the edges
:func:`~explainnn.causal.edge_search.edge_circuit` lists in
``results["edge_circuit"]["same_layer_edges"]`` count too).

With the method's baseline ``x'`` (the model's reference, zeros by default)
the *circuit model* is

    ``F_C(x)`` = the target logit when every edge outside the circuit carries
    the value it has on ``x'`` and every circuit edge its value on ``x``

(:class:`~explainnn.causal.edges.EdgeAblation` with ``ablation="patch"`` and
``counterfactuals = x'``). On the baseline every edge carries its baseline
value, so ``F_C(x') = F(x')``; with every edge in the circuit ``F_C = F``.

``edge_circuit_ig``
    Integrated Gradients of ``F_C`` from ``x'`` to ``x`` (captum's estimator,
    :func:`~explainnn.attributions.baselines.run_integrated_gradients`): the
    path-restricted attribution. Completeness: the attributions sum to
    ``F_C(x) - F(x')``, up to the quadrature error of ``n_steps``.
``edge_circuit_occlusion``
    Captum's ``Occlusion`` on ``F_C``: the drop of the circuit model's target
    logit when a patch (time step, feature) takes its baseline value.

An input feature none of whose edges is in the circuit gets 0 (``edge_circuit_ig``:
the two gradient terms of each of its edges cancel exactly on the CPU;
``edge_circuit_occlusion``: to float rounding, as the circuit model's value on
two inputs that differ only there); so does every input for a target whose
output unit has no circuit edge.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from captum.attr import Occlusion
from torch import Tensor, nn

from explainnn.attributions import baselines as _baselines
from explainnn.attributions.masks import occlusion_window
from explainnn.attributions.registry import register_method
from explainnn.causal.edges import EdgeAblation, Edges, enumerate_edges
from explainnn.errors import UserError

FLOAT_INPUTS = ("image", "sequence", "tabular")
INPUT_LAYER = "input"


def _unit(graph: Any, node: str) -> tuple[str, int]:
    """``(layer, index)`` of a graph node: its ``layer``/``index`` attributes, else its ``"layer:index"`` id."""
    data = graph.graph.nodes[node] if node in graph.graph else {}
    if "layer" in data and "index" in data:
        return str(data["layer"]), int(data["index"])
    layer, _, index = str(node).rpartition(":")
    if not layer or not index.lstrip("-").isdigit():
        raise UserError(f"graph node {node!r} is not a unit 'layer:index'")
    return layer, int(index)


def _layer_names(edges: Edges) -> dict[str, str]:
    """Graph layer name -> the model's layer name: exact names, and suffixes after a wrapper's prefix."""
    names = set(edges.parent_layer) | set(edges.child_layer)
    resolved = {name: name for name in names}
    by_suffix: dict[str, list[str]] = {}
    for name in names:
        parts = name.split(".")
        for start in range(1, len(parts)):
            by_suffix.setdefault(".".join(parts[start:]), []).append(name)
    for suffix, found in by_suffix.items():
        if suffix not in resolved and len(found) == 1:
            resolved[suffix] = found[0]
    return resolved


def _links(edges: Edges) -> str:
    """The model's links, e.g. ``input->conv1, conv1->conv2, lstm->lstm (recurrent)``."""
    pairs = dict.fromkeys(
        f"{p}->{c}" + (" (recurrent)" if k == "recurrent" else "")
        for p, c, k in zip(edges.parent_layer, edges.child_layer, edges.kind)
    )
    return ", ".join(pairs)


def graph_edges(graph: Any) -> list[tuple[str, str]]:
    """The circuit's edges as ``(parent node, child node)`` ids: the graph's edges, then the recurrent edges
    listed in ``results["edge_circuit"]["same_layer_edges"]`` (``{"edge": "layer:i->layer:j"}``).

    Parameters
    ----------
    graph : CausalGraph
        The edge circuit.

    Returns
    -------
    list of (str, str)
    """
    pairs = [(str(u), str(v)) for u, v in graph.graph.edges()]
    listed = graph.metadata.get("results", {}).get("edge_circuit", {}).get("same_layer_edges", [])
    for entry in listed:
        label = entry.get("edge", "") if isinstance(entry, dict) else str(entry)
        parent, arrow, child = str(label).partition("->")
        if not arrow:
            raise UserError(f"same-layer edge {label!r} of the graph is not 'layer:i->layer:j'")
        pairs.append((parent, child))
    return list(dict.fromkeys(pairs))


def circuit_keep(model: nn.Module, graph: Any, example_input: Tensor, edges: Edges | None = None) -> np.ndarray:
    """The edge circuit ``graph`` as a keep-mask over the model's edges.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    graph : CausalGraph
        The edge circuit: edges ``"layer:i" -> "layer:j"`` between the model's
        units, ``"input:c"`` for input units; an edge between two units of one
        recurrent layer is the hidden-to-hidden edge (see the module docstring).
        Layer names match exactly or as the suffix after a wrapper's prefix.
    example_input : torch.Tensor
        A batch in the form the model's forward takes (one sample is enough).
    edges : Edges, optional
        The edges the mask runs over (default: :func:`enumerate_edges` of the model).

    Returns
    -------
    numpy.ndarray
        ``(E,)`` bool over ``edges``: ``True`` for the circuit's edges.

    Raises
    ------
    UserError
        In one line, for a graph edge that is not an edge of the model.
    """
    edges = enumerate_edges(model, example_input) if edges is None else edges
    position = {
        (p, int(i), c, int(j)): e
        for e, (p, i, c, j) in enumerate(zip(edges.parent_layer, edges.parent_unit, edges.child_layer, edges.child_unit))
    }
    names = _layer_names(edges)
    keep = np.zeros(edges.n, dtype=bool)
    for parent, child in graph_edges(graph):
        (pl, pu), (cl, cu) = _unit(graph, parent), _unit(graph, child)
        found = position.get((names.get(pl, pl), pu, names.get(cl, cl), cu))
        if found is None:
            raise UserError(f"the graph's edge '{parent}->{child}' is not an edge of {type(model).__name__}; "
                            f"its edges join {_links(edges)}")
        keep[found] = True
    return keep


class CircuitModel:
    """``F_C``: the model's outputs with every edge outside the circuit carrying its value on the baseline.

    Called as ``circuit_model(inputs, baselines)`` with one baseline row per
    input row; returns ``(N, C)`` outputs, differentiable with respect to
    ``inputs`` when gradients are enabled.

    Parameters
    ----------
    model : torch.nn.Module
        The network (left exactly as it was).
    example_input : torch.Tensor
        A batch in the form the model's forward takes (one sample is enough).
    keep : numpy.ndarray
        ``(E,)`` bool over ``edges``: the circuit.
    edges : Edges
        The model's edges ``keep`` runs over.
    """

    def __init__(self, model: nn.Module, example_input: Tensor, keep: np.ndarray, edges: Edges) -> None:
        self.engine = EdgeAblation(model, example_input, edges, ablation="patch")
        # EdgeAblation.logits runs under torch.no_grad unless the mask requires gradients; a mask that does
        # keeps the inputs' gradients (only the inputs' are ever asked for).
        self.mask = torch.as_tensor(np.asarray(keep, dtype=np.float32)).requires_grad_(True)
        self.first = _first_convolutions(self.engine, edges, np.asarray(keep, dtype=bool))
        self._baselines: Tensor | None = None
        self._inputs: Tensor | None = None

    def __call__(self, inputs: Tensor, baselines: Tensor) -> Tensor:
        held = self._baselines
        if held is None or held.shape != baselines.shape or held.device != baselines.device or \
                not torch.equal(held, baselines):
            held = baselines.detach().clone()
        # EdgeAblation caches the counterfactuals' and inputs' forward by tensor identity (id, data pointer,
        # version); holding the tensors last passed keeps a freed tensor's identity from being reused by a
        # different one while the cache still names it.
        self._baselines = held
        handles = []
        if torch.is_grad_enabled() and inputs.requires_grad:
            handles = [module.register_forward_hook(_input_gradient(keep)) for module, keep in self.first]
        try:
            out = self.engine.logits(inputs, self.mask.to(inputs.device), held)[0]
        finally:
            for handle in handles:
                handle.remove()
        self._inputs = inputs
        return out


def _first_convolutions(engine: EdgeAblation, edges: Edges, keep: np.ndarray) -> list[tuple[nn.Module, Tensor]]:
    """Convolutions that read only the model's input, each with its ``(C_out, C_in)`` keep-mask of input edges."""
    found: list[tuple[nn.Module, Tensor]] = []
    for layer in engine.layers:
        module = layer.module
        if not isinstance(module, (nn.Conv1d, nn.Conv2d)) or module.groups != 1 or \
                not layer.parents or any(link.name != INPUT_LAYER for link in layer.parents):
            continue
        table = torch.ones(module.out_channels, module.in_channels)
        into = [e for e in range(edges.n) if edges.child_layer[e] == layer.name and edges.parent_layer[e] == INPUT_LAYER]
        for e in into:
            table[int(edges.child_unit[e]), int(edges.parent_unit[e])] = float(keep[e])
        found.append((module, table))
    return found


def _input_gradient(keep: Tensor):
    """A forward hook giving a first convolution's output the gradient of its masked form with respect to its
    input, ``conv(x, W * keep)``, without changing its value.

    EdgeAblation computes the first convolution of a chain model from per-channel contributions cached under
    ``torch.no_grad`` (``_Forward._from_input``), which cuts the inputs' gradient; the layer's output is linear in
    its input with exactly that derivative, so ``y + (t - t.detach())`` restores it (``t - t.detach()`` is 0).
    """

    def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        x = args[0]
        if not isinstance(x, Tensor) or not x.requires_grad or x.shape[0] != output.shape[0]:
            return output
        weight = module.weight * keep.to(module.weight.device, module.weight.dtype).view(
            *keep.shape, *([1] * (module.weight.dim() - 2)))
        t = module._conv_forward(x, weight, None)
        return output.detach() + (t - t.detach())

    return hook


def circuit_model(model: nn.Module, graph: Any, example_input: Tensor) -> CircuitModel:
    """The circuit model ``F_C`` of the edge circuit ``graph`` (module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    graph : CausalGraph
        The edge circuit (:func:`circuit_keep`).
    example_input : torch.Tensor
        A batch in the form the model's forward takes (one sample is enough).

    Returns
    -------
    CircuitModel
    """
    edges = enumerate_edges(model, example_input)
    return CircuitModel(model, example_input, circuit_keep(model, graph, example_input, edges), edges)


@register_method("edge_circuit_ig", needs_graph=True, modalities=FLOAT_INPUTS)
def edge_circuit_ig(model: nn.Module, inputs: Tensor, target: Tensor, *, graph: Any, n_steps: int = 64,
                    internal_batch_size: int | None = None) -> Tensor:
    """Integrated Gradients through the edge circuit: input changes reach the output only along its edges.

    Parameters
    ----------
    model : torch.nn.Module
        The network (eval mode, parameters frozen by :func:`~explainnn.attributions.attribute`).
    inputs : torch.Tensor
        ``(N, ...)`` inputs.
    target : torch.Tensor
        ``(N,)`` int64 classes.
    graph : CausalGraph
        The edge circuit (:func:`circuit_keep`).
    n_steps : int
        Integration steps (Gauss-Legendre nodes, as ``integrated_gradients``).
    internal_batch_size : int, optional
        Rows (samples x steps) per pass (default: the device's pass size).

    Returns
    -------
    torch.Tensor
        Attributions of the inputs' shape; per sample they sum to ``F_C(x) - F(x')``.
    """
    forward = circuit_model(model, graph, inputs[:1])
    baseline = _baselines.reference(model, inputs)
    return _baselines.run_integrated_gradients(forward, inputs, target, baseline, n_steps=n_steps,
                                               internal_batch_size=internal_batch_size, extra=(baseline,))


@register_method("edge_circuit_occlusion", needs_graph=True, modalities=FLOAT_INPUTS)
def edge_circuit_occlusion(model: nn.Module, inputs: Tensor, target: Tensor, *, graph: Any, window: int | None = None,
                           stride: int | None = None, perturbations_per_eval: int = 64) -> Tensor:
    """Occlusion through the edge circuit: the circuit model's drop when a patch takes its baseline value.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    inputs : torch.Tensor
        ``(N, ...)`` inputs.
    target : torch.Tensor
        ``(N,)`` int64 classes.
    graph : CausalGraph
        The edge circuit (:func:`circuit_keep`).
    window : int, optional
        Patch side (images; default 4 on 32x32) or time steps / features (default 1), as ``occlusion``.
    stride : int, optional
        Patch stride (default half the image window; the window for sequences and rows).
    perturbations_per_eval : int
        Occluded copies per forward pass.

    Returns
    -------
    torch.Tensor
        Attributions of the inputs' shape.
    """
    modality = {4: "image", 2: "tabular"}.get(inputs.dim(), "sequence")
    shape, strides = occlusion_window(inputs, modality, window, stride)
    forward = circuit_model(model, graph, inputs[:1])
    baseline = _baselines.reference(model, inputs)
    return Occlusion(forward).attribute(
        inputs, sliding_window_shapes=shape, strides=strides, baselines=baseline, target=target,
        perturbations_per_eval=_baselines.positive_int("perturbations_per_eval", perturbations_per_eval),
        additional_forward_args=(baseline,),
    )


__all__ = ["CircuitModel", "circuit_keep", "circuit_model", "edge_circuit_ig", "edge_circuit_occlusion",
           "graph_edges"]
