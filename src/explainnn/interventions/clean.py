"""The clean (un-intervened) forward pass, kept so interventions recompute only what changes.

One traced forward records every module call's inputs and output in execution
order; recurrent modules are additionally unrolled once so each internal layer's
states at every step are available to resume from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from explainnn.interventions.layers import ForwardTrace, LayerInfo, ModuleCall, trace_forward
from explainnn.interventions.recurrent import LayerCache, clean_cache


@dataclass
class CleanPass:
    inputs: torch.Tensor
    output: torch.Tensor
    calls: list[ModuleCall]
    by_name: dict[str, list[ModuleCall]]
    _rnn: dict[str, list[LayerCache]] = field(default_factory=dict)

    def call(self, module_name: str) -> ModuleCall:
        return self.by_name[module_name][0]

    def rnn(self, module_name: str) -> list[LayerCache]:
        if module_name not in self._rnn:
            call = self.call(module_name)
            self._rnn[module_name] = clean_cache(call.module, call.args, call.kwargs)
        return self._rnn[module_name]

    def activation(self, layer: LayerInfo) -> torch.Tensor:
        """The layer's clean unit values, batch-first (recurrent: ``(N, T, H)``), as its unit kind reads them."""
        return layer.unit_kind.clean_activation(layer, self)

    def mean(self, layer: LayerInfo) -> torch.Tensor:
        """Per-unit mean over the samples, unit-first: ``(n_units, *rest)``."""
        with torch.no_grad():
            mean = self.activation(layer).mean(dim=0)
        return mean.movedim(layer.unit_axis - 1, 0)


def clean_pass(model: nn.Module, inputs: torch.Tensor) -> CleanPass:
    trace: ForwardTrace = trace_forward(model, inputs, keep=True)
    return CleanPass(inputs, trace.output, trace.calls, trace.by_name())
