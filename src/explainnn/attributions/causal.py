"""Attributions that flow only through the causal graph.

``causal``
    The attribution of the target logit computed on the model *restricted to its
    causal subgraph*: in every analysed hidden layer of the graph, each unit that
    is not a cause is held fixed - at 0 (``hold="zero"``, the same ``do(unit=0)``
    that discovery uses to decide what a cause is) or at its mean activation over
    ``reference`` inputs (``hold="mean"``). A held unit is a constant, so no
    attribution can flow through it; whatever the base method (Integrated
    Gradients by default) assigns to the input flows through causal units only.
    Defining properties (tested): changing anything that only reaches the output
    through non-causal units leaves the attributions unchanged, and with a graph
    in which every unit is causal the result equals the base method on the
    unrestricted model. Recurrent layers are held through the recurrence (the
    intervention engine re-runs the steps), so for an LSTM over image rows the
    result is a time-step x feature map through the recurrent causal units.
    Embedding layers are never held: they are the input representation.

``causal_paths``
    The research code's per-node maps for one layer: each causal unit ``j`` of
    ``layer`` (e.g. LeNet's ``conv2``) gets the map of what its causal parents
    contribute to its pre-activation - the parents' activations convolved with
    (or multiplied by) the weights ``W[j, i]`` of the causal edges - normalised to
    [-1, 1] per sample and resized to the input. The method returns their sum
    (normalised again); :func:`causal_path_maps` returns the per-unit maps too.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainnn.attributions.registry import METHODS, register_method
from explainnn.errors import UserError
from explainnn.interventions import LayerInfo, NodeIntervention, find_layers, intervene

HOLDS = ("zero", "mean")


def restriction(model: nn.Module, graph: Any, example: Tensor) -> list[NodeIntervention]:
    """The interventions that hold every non-causal unit of the graph's hidden layers fixed."""
    layers = {layer.name: layer for layer in find_layers(model, example)}
    specs = []
    for name in graph.layers():
        units = graph.units(name)
        if not units or graph.graph.nodes[units[0]]["kind"] != "hidden":
            continue
        # A wrapper (e.g. EmbeddingSpaceModel) prefixes the graph's names: match on the suffix.
        found = layers.get(name) or next((v for k, v in layers.items() if k.endswith("." + name)), None)
        if found is None:
            modules = dict(model.named_modules())
            wrapped = modules.get(name) or next((m for k, m in modules.items() if k.endswith("." + name)), None)
            if isinstance(wrapped, nn.Embedding):
                continue  # embeddings are the input representation here; never held
            raise UserError(f"the graph's layer '{name}' is not a layer of this model; valid: {', '.join(layers)}")
        if found.unit_kind.reads_ids:
            continue
        held = sorted(set(range(found.n_units)) - set(graph.causes(name)))
        if held:
            specs.append(NodeIntervention(found.name, held, "zero"))
    return specs


def _causal(modality: str):
    def causal(model: nn.Module, inputs: Tensor, target: Tensor, *, graph: Any,
               base: str = "integrated_gradients", hold: str = "zero", reference: Any = None,
               seed: int = 0, base_options: dict | None = None) -> Tensor:
        """Base-method attributions through the causal units only (non-causal units held at 0 or their mean)."""
        if hold not in HOLDS:
            raise UserError(f"hold must be one of {', '.join(HOLDS)}; got {hold!r}")
        if base == "causal" or base not in METHODS or METHODS[base].needs_graph:
            valid = ", ".join(n for n, info in sorted(METHODS.items()) if not info.needs_graph)
            raise UserError(f"base method {base!r} is not a graph-free attribution method; valid: {valid}")
        specs = restriction(model, graph, inputs[:1])
        if hold == "mean":
            if reference is None:
                raise UserError("hold='mean' needs reference inputs (reference=<batch of inputs>) for the unit means")
            specs = [NodeIntervention(s.layer, s.units, "mean") for s in specs]
            reference = torch.as_tensor(reference).to(inputs.device)
        function = METHODS[base].implementation(modality)
        kwargs = dict(base_options or {})
        if "seed" in inspect.signature(function).parameters:
            kwargs["seed"] = seed
        if not specs:
            return function(model, inputs, target, **kwargs)
        with intervene(model, specs, inputs[:1], reference=reference if hold == "mean" else None):
            return function(model, inputs, target, **kwargs)

    return causal


for _modality in ("image", "sequence", "tokens", "tabular"):
    register_method("causal", needs_graph=True, modalities=(_modality,))(_causal(_modality))


@register_method("causal_paths", needs_graph=True, modalities=("image",))
def causal_paths(model: nn.Module, inputs: Tensor, target: Tensor, *, graph: Any, layer: str = "conv2") -> Tensor:
    """The research code's per-node causal maps of ``layer``, summed and resized to the input."""
    _, total = causal_path_maps(model, inputs, graph, layer)
    return total.expand_as(inputs).clone()


def causal_path_maps(model: nn.Module, inputs: Tensor, graph: Any, layer: str = "conv2") -> tuple[dict[int, Tensor], Tensor]:
    """Per-unit maps ``{unit: (N, H, W)}`` for the causal units of ``layer``, and their sum ``(N, 1, H, W)``.

    Each map is what the causal parents contribute to the unit's pre-activation
    (bias excluded), normalised to [-1, 1] per sample and resized (bilinear) to
    the input's height and width.
    """
    inputs = torch.as_tensor(inputs)
    if inputs.dim() != 4 or not inputs.is_floating_point():
        raise UserError(f"causal_paths draws maps over images (N, C, H, W); got shape {tuple(inputs.shape)}")
    info = _layer(model, inputs, layer)
    units = graph.causes(layer) if layer in graph.layers() else []
    if not units:
        raise UserError(f"the graph has no causal units in layer '{layer}'; choose one of: {', '.join(_hidden(graph))}")
    parents = _causal_parents(graph, info)
    parent_map = info.parent_map
    assert parent_map is not None  # _causal_parents refuses a layer without one
    features = sorted({f for i in parents for f in parent_map[i]})
    seen: list[Tensor] = []
    handle = info.module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
    x = seen[0]
    module_weight = info.module.weight
    assert isinstance(module_weight, Tensor)
    weight = module_weight.detach()
    size = inputs.shape[-2:]
    maps: dict[int, Tensor] = {}
    for unit in units:
        if isinstance(info.module, nn.Conv2d):
            kept = torch.zeros_like(weight[unit : unit + 1])
            kept[:, features] = weight[unit : unit + 1, features]
            module = info.module
            raw = F.conv2d(x, kept, None, module.stride, module.padding, module.dilation)
        elif isinstance(info.module, nn.Linear) and info.parent_map is not None and len(info.parent_map[0]) > 1:
            raw = _linear_map(x, weight[unit], info, parents)
        else:
            raise UserError(
                f"causal_paths needs a Conv2d layer, or a Linear layer fed by a Conv2d layer; '{layer}' is a {info.kind}"
            )
        maps[unit] = _normalise(F.interpolate(raw, size=size, mode="bilinear", align_corners=False))[:, 0]
    total = _normalise(torch.stack(list(maps.values())).sum(0)[:, None])
    return maps, total


def _layer(model: nn.Module, inputs: Tensor, name: str) -> LayerInfo:
    layers = find_layers(model, inputs[:1])
    for info in layers:
        if info.name == name:
            return info
    raise UserError(f"unknown layer '{name}'; valid layers: {', '.join(layer.name for layer in layers)}")


def _hidden(graph: Any) -> list[str]:
    return [n for n in graph.layers() if graph.units(n) and graph.graph.nodes[graph.units(n)[0]]["kind"] == "hidden"]


def _causal_parents(graph: Any, info: LayerInfo) -> list[int]:
    """Causal units of the layer feeding ``info`` (all of its units when the graph stops at ``info``)."""
    if info.parent_map is None:
        raise UserError(f"layer '{info.name}' has no parent layer whose units map onto its inputs")
    if info.parent in graph.layers():
        return graph.causes(info.parent)
    return list(range(len(info.parent_map)))


def _linear_map(x: Tensor, weight_row: Tensor, info: LayerInfo, parents: list[int]) -> Tensor:
    """Contributions ``W[j, f] * x_f`` of the causal parents' features, laid out as the parent's spatial map."""
    contributions = x.flatten(1) * weight_row
    parent_map = info.parent_map
    assert parent_map is not None
    blocks = [contributions[:, list(parent_map[i])] for i in parents]
    width = len(parent_map[parents[0]])
    side = int(round(width**0.5))
    if side * side != width:
        raise UserError(f"causal_paths cannot lay out {width} features per parent unit of '{info.name}' as a square map")
    return torch.stack(blocks).sum(0).reshape(-1, 1, side, side)


def _normalise(maps: Tensor) -> Tensor:
    scale = maps.flatten(1).abs().amax(1).clamp_min(1e-12)
    return maps / scale.view(-1, *([1] * (maps.dim() - 1)))


__all__ = ["causal_path_maps", "causal_paths", "restriction"]
