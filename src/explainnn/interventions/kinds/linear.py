"""``nn.Linear``: one unit per output feature; a sequence input ``(N, T, F)`` gives a step axis."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from explainnn.interventions.kinds.base import UnitKind

if TYPE_CHECKING:
    from explainnn.interventions.layers import LayerInfo


class LinearKind(UnitKind):
    name = "linear"
    module_types = (nn.Linear,)

    def units(self, module: nn.Module) -> tuple[int, int]:
        assert isinstance(module, nn.Linear)
        return module.out_features, module.in_features

    def time_axis(self, layer: LayerInfo) -> bool:
        return len(layer.output_shape) == 2
