"""Attributions that count only what flows through a circuit (path patching per input).

For each explained input ``x``, every unit of the graph's analysed layers that
is *not* in the circuit is held at the value it takes on ``x`` itself (a node
intervention whose "mean" is over the one-sample reference ``x``). The model's
output at ``x`` is unchanged, but any change of the input - along the
Integrated Gradients path, or an occluded patch - reaches the output only
through the circuit's units: the attribution is the input's effect *mediated
by the circuit* (the path-specific effect of circuit analysis; Wang et al. 2023,
Goldowsky-Dill et al. 2023). Two variants:

``circuit_ig``
    Integrated Gradients (zero baseline) through the circuit. Completeness holds
    for the circuit-mediated model: the attributions sum to
    ``F(x) - F(baseline through the circuit, the rest held at x)``.
``circuit_occlusion``
    Occlusion through the circuit: the drop of the target logit when a patch
    (time step, token) is occluded and only the circuit sees the change.

Unlike ``causal`` (the base method with non-causal units held at 0 or at their
mean over reference data), nothing here depends on reference data or moves the
model away from its own activations at ``x``. Pass the graph of
:func:`explainnn.causal.circuit` (any :class:`CausalGraph` works: its analysed
layers are ``metadata["layers"]`` without the output layer).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from explainnn.attributions.registry import METHODS, register_method
from explainnn.errors import UserError
from explainnn.interventions import NodeIntervention, find_layers, intervene

VARIANTS = {"circuit_ig": "integrated_gradients", "circuit_occlusion": "occlusion"}


def held_outside(model: nn.Module, graph: Any, example: Tensor) -> list[NodeIntervention]:
    """Node interventions (mode ``mean``) on every analysed unit outside the graph's hidden units.

    Graph layer names are matched exactly or as a suffix (a wrapper such as
    ``EmbeddingSpaceModel`` prefixes them); embeddings are never held.
    """
    layers = find_layers(model, example)
    analysed = list(graph.metadata.get("layers", graph.layers()))[:-1]
    present = set(graph.layers())
    specs = []
    for name in analysed:
        found = next((info for info in layers if info.name == name or info.name.endswith("." + name)), None)
        if found is None:
            if name == "input":
                continue
            modules = dict(model.named_modules())
            wrapped = modules.get(name) or next((m for k, m in modules.items() if k.endswith("." + name)), None)
            if isinstance(wrapped, nn.Embedding):
                continue
            raise UserError(f"the graph's layer '{name}' is not a layer of this model; "
                            f"valid: {', '.join(info.name for info in layers)}")
        if found.unit_kind.reads_ids:
            continue
        kept = set(graph.causes(name)) if name in present else set()
        held = sorted(set(range(found.n_units)) - kept)
        if held:
            specs.append(NodeIntervention(found.name, held, "mean"))
    return specs


def _through_circuit(base: str, modality: str):
    def method(model: nn.Module, inputs: Tensor, target: Tensor, *, graph: Any, seed: int = 0,
               base_options: dict | None = None) -> Tensor:
        """Base-method attributions of what flows through the circuit (the rest held at each input's own values)."""
        function = METHODS[base].implementation(modality)
        kwargs = dict(base_options or {})
        if "seed" in inspect.signature(function).parameters:
            kwargs["seed"] = seed
        specs = held_outside(model, graph, inputs[:1])
        if not specs:
            return function(model, inputs, target, **kwargs)
        parts = []
        for i in range(len(inputs)):
            one = inputs[i : i + 1]
            with intervene(model, specs, one, reference=one):
                parts.append(torch.as_tensor(function(model, one, target[i : i + 1], **kwargs)))
        return torch.cat(parts)

    method.__doc__ = (f"{METHODS[base].description.rstrip('.')}, counting only what flows through the circuit "
                      "(other analysed units held at each input's own values).")
    return method


for _name, _base in VARIANTS.items():
    for _modality in METHODS[_base].modalities:
        register_method(_name, needs_graph=True, modalities=(_modality,))(_through_circuit(_base, _modality))


__all__ = ["VARIANTS", "held_outside"]
