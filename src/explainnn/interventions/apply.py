"""Installing compiled edits on a model, and the ``intervene`` context manager.

A layer gets a forward hook that edits its output (edge edits as activation
deltas computed from the layer's actual input), unless its unit kind replaces the
module's forward (``UnitKind.edited_forward``: recurrent modules are re-executed
exactly, unrolled from the first edited step). The same
installer serves the context manager (one block: every row gets the same
interventions) and the batched runner (``K`` blocks of rows).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from explainnn.errors import InterventionError
from explainnn.interventions.clean import clean_pass
from explainnn.interventions.edits import LayerEdits, apply_layer, compile_edits, rest_shape
from explainnn.interventions.hooks import ModelPatch
from explainnn.interventions.layers import LayerInfo, find_layers, resolve_layer
from explainnn.interventions.recurrent import LayerCache, split_args
from explainnn.interventions.spec import EdgeIntervention, Intervention, InterventionSet, as_rows

Means = Callable[[LayerInfo], torch.Tensor]


def is_path_edge(layer: LayerInfo, spec: Intervention) -> bool:
    """Whether ``spec`` is an edge from a parent that reaches ``layer`` along a shared weight-free path."""
    return (isinstance(spec, EdgeIntervention) and not spec.within_layer and not layer.unit_kind.reads_ids
            and layer.link(spec.parent_layer).via == "path")


class EditPlan:
    """Which specs act on which layer, for ``K`` blocks of rows.

    ``path_changes[layer]`` holds, for layers with path edges, the change of the
    layer's input under each block's path edges (set by the runner).
    """

    def __init__(self, model: nn.Module, layers: list[LayerInfo], rows: list[tuple[Intervention, ...]],
                 means: Means | None = None, allow_path: bool = True) -> None:
        self.n_blocks = len(rows)
        self.means = means
        self.layers: dict[str, LayerInfo] = {}
        self.blocks: dict[str, list[list[Intervention]]] = {}
        self.path_changes: dict[str, torch.Tensor] = {}
        for k, specs in enumerate(rows):
            resolved = [(resolve_layer(layers, model, spec.layer), spec) for spec in specs]
            for layer, spec in resolved:
                self.layers[layer.name] = layer
                if layer.name not in self.blocks:
                    self.blocks[layer.name] = [[] for _ in rows]
                self.blocks[layer.name][k].append(spec)
            _check_path_row(resolved, allow_path)
        self._compiled: dict[tuple, LayerEdits] = {}

    def path_rows(self, layer: LayerInfo) -> list[tuple[int, Intervention, None]]:
        """``(block, spec, None)`` for every path edge into ``layer``."""
        return [(k, spec, None) for k, specs in enumerate(self.blocks.get(layer.name, []))
                for spec in specs if is_path_edge(layer, spec)]

    def modules(self) -> dict[str, list[LayerInfo]]:
        grouped: dict[str, list[LayerInfo]] = {}
        for layer in sorted(self.layers.values(), key=lambda info: info.order):
            grouped.setdefault(layer.module_name, []).append(layer)
        return grouped

    def start(self) -> LayerInfo:
        return min(self.layers.values(), key=lambda info: info.order)

    def compiled(self, layer: LayerInfo, rest: tuple[int, ...], like: torch.Tensor) -> LayerEdits:
        key = (layer.name, rest, like.device, like.dtype)
        if key not in self._compiled:
            blocks = self.blocks[layer.name]
            needs_mean = any(getattr(s, "mode", None) == "mean" for specs in blocks for s in specs)
            means = None
            if needs_mean and self.means is not None:
                means = self.means(layer)
                if tuple(means.shape[1:]) != rest:
                    raise InterventionError(
                        f"reference data gives layer '{layer.name}' activations of shape {tuple(means.shape[1:])} "
                        f"per unit but the inputs give {rest}; use reference data of the same shape"
                    )
            self._compiled[key] = compile_edits(layer, blocks, rest, means, like.device, like.dtype)
        return self._compiled[key]

    def install(self, patch: ModelPatch, start_cache: "StartCache | None" = None) -> None:
        """Hook every intervened module; ``start_cache`` serves the first one from clean activations."""
        for module_name, layers in self.modules().items():
            module = layers[0].module
            cached = start_cache if start_cache is not None and start_cache.module is module else None
            forward = layers[0].unit_kind.edited_forward(self, layers, cached)
            if forward is not None:
                patch.replace_forward(module, forward)
            elif cached is not None:
                patch.replace_forward(module, self._cached_forward(layers[0], cached))
            else:
                patch.forward_hook(module, self._hook(layers[0]))

    def _hook(self, layer: LayerInfo):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            y = output.clone()
            apply_layer(y, args[0], self.compiled(layer, rest_shape(layer, tuple(y.shape[1:])), y), shared=False,
                        path_change=self.path_changes.get(layer.name))
            return y

        return hook

    def _cached_forward(self, layer: LayerInfo, cached: "StartCache"):
        def forward(*args: object, **kwargs: object) -> torch.Tensor:
            clean_out, inputs = cached.output, cached.inputs
            assert clean_out is not None and inputs is not None
            y = clean_out.repeat(self.n_blocks, *([1] * (clean_out.dim() - 1)))
            edits = self.compiled(layer, rest_shape(layer, tuple(clean_out.shape[1:])), y)
            apply_layer(y, inputs, edits, shared=True, path_change=self.path_changes.get(layer.name))
            return y

        return forward


def _check_path_row(resolved: list[tuple[LayerInfo, Intervention]], allow_path: bool) -> None:
    """A row's path edges into a layer combine only with specs on that layer or later ones."""
    for layer, spec in resolved:
        if not isinstance(spec, EdgeIntervention) or not is_path_edge(layer, spec):
            continue
        if not allow_path:
            raise InterventionError(
                f"the edge {spec.parent_layer or layer.parent} -> {layer.name} runs along a path shared with other "
                "parents; evaluate it with InterventionRunner, not intervene()"
            )
        earlier = [other.name for other, _ in resolved if other.order < layer.order]
        if earlier:
            raise InterventionError(
                f"a path edge into layer '{layer.name}' cannot be combined in one row with interventions on the "
                f"earlier layer '{earlier[0]}'"
            )


@dataclass
class StartCache:
    """Clean activations of the first intervened module: its call (``args``, ``kwargs``), its input and output, or
    its RNN states."""

    module: nn.Module
    inputs: torch.Tensor | None = None
    output: torch.Tensor | None = None
    rnn: list[LayerCache] | None = None
    args: tuple = ()
    kwargs: dict | None = None
    calls: tuple = ()
    """Every clean call of a module called once per step (``UnitKind.calls_are_steps``)."""

    def tiled_args(self, n_blocks: int) -> tuple:
        """The clean call's ``(x, hx)`` of a recurrent module repeated over ``n_blocks`` (bidirectional re-runs)."""
        x, h0, c0 = split_args(self.module, self.args, self.kwargs or {})
        x = x.repeat(n_blocks, 1, 1)
        if not self.module.batch_first:
            x = x.transpose(0, 1)
        h0 = h0.repeat(1, n_blocks, 1)
        return (x, h0) if c0 is None else (x, (h0, c0.repeat(1, n_blocks, 1)))


@contextmanager
def intervene(
    model: nn.Module,
    interventions: InterventionSet,
    example_input: torch.Tensor,
    reference: torch.Tensor | None = None,
) -> Iterator[nn.Module]:
    """Apply interventions to ``model`` for the duration of a ``with`` block.

    Every forward pass inside the block sees the interventions on every row;
    autograd works through them. Afterwards the model's parameters, buffers,
    hooks and attributes are exactly as before, also when the block raises.
    ``reference`` (a batch of inputs) is needed for ``mode="mean"``.
    """
    layers = find_layers(model, example_input)
    means = None
    if reference is not None:
        with ModelPatch() as patch, torch.no_grad():
            patch.eval_mode(model)
            clean = clean_pass(model, reference.to(example_input.device))
        means = clean.mean
    plan = EditPlan(model, layers, as_rows([interventions]), means, allow_path=False)
    with ModelPatch() as patch:
        plan.install(patch)
        yield model
