"""``nn.Embedding``: one unit per embedding dimension; it reads token ids, so it has no incoming edges."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from explainnn.interventions.kinds.base import UnitKind

if TYPE_CHECKING:
    from explainnn.interventions.layers import LayerInfo


class EmbeddingKind(UnitKind):
    name = "embedding"
    module_types = (nn.Embedding,)
    reads_ids = True

    def units(self, module: nn.Module) -> tuple[int, int]:
        assert isinstance(module, nn.Embedding)
        return module.embedding_dim, 0

    def time_axis(self, layer: LayerInfo) -> bool:
        return len(layer.output_shape) == 2
