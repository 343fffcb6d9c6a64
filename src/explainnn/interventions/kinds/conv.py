"""``nn.Conv1d``/``nn.Conv2d``, grouped and depthwise included: one unit per output channel over a spatial map.

A grouped convolution's unit sees only its own group's input channels, so only
edges within a group exist; an edge delta is the parent channel convolved with the
kernel difference (one grouped convolution over all edited rows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from explainnn.interventions.kinds.base import UnitKind

if TYPE_CHECKING:
    from explainnn.interventions.edits import EdgeEdits
    from explainnn.interventions.layers import LayerInfo


class ConvKind(UnitKind):
    name = "conv"
    module_types = (nn.Conv1d, nn.Conv2d)
    spatial = True

    def label(self, module: nn.Module) -> str:
        return "conv1d" if isinstance(module, nn.Conv1d) else "conv2d"

    def units(self, module: nn.Module) -> tuple[int, int]:
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        return module.out_channels, module.in_channels

    def unit_axis(self, layer: LayerInfo) -> int:
        return 1

    def groups(self, layer: LayerInfo) -> int:
        assert isinstance(layer.module, (nn.Conv1d, nn.Conv2d))
        return layer.module.groups

    def input_feature_axis(self, layer: LayerInfo) -> int:
        return 1

    def unit_values(self, layer: LayerInfo, output: torch.Tensor) -> torch.Tensor:
        return output.flatten(2).mean(dim=2)

    def input_delta(self, layer: LayerInfo, x: torch.Tensor, edge: EdgeEdits, n_blocks: int,
                    shared: bool) -> torch.Tensor:
        assert isinstance(layer.module, (nn.Conv1d, nn.Conv2d))
        return conv_delta(x, layer.module, edge, n_blocks, shared)


def conv_delta(x: torch.Tensor, module: nn.Conv1d | nn.Conv2d, edge: EdgeEdits, n_blocks: int,
               shared: bool) -> torch.Tensor:
    """``(E, N, C_out, *spatial)`` output deltas of a Conv1d/2d: features convolved with kernel diffs."""
    from explainnn.interventions.edits import gather_features

    entries, width = edge.features.shape
    spatial = x.shape[2:]
    feats = gather_features(x, edge, n_blocks, shared, 1).movedim(-1, 2).movedim(0, 1)
    feats = feats.reshape(feats.shape[0], entries * width, *spatial)
    out_channels = edge.coef.shape[2]
    weight = edge.coef.movedim(2, 1).reshape(entries * out_channels, width, *edge.coef.shape[3:])
    padding: str | tuple[int, ...] | int = module.padding
    if module.padding_mode != "zeros":
        feats = F.pad(feats, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding = 0
    if module.weight.dim() == 3:
        out = F.conv1d(feats, weight, None, module.stride, padding, module.dilation, entries)
    else:
        out = F.conv2d(feats, weight, None, module.stride, padding, module.dilation, entries)
    return out.unflatten(1, (entries, out_channels)).movedim(1, 0)
