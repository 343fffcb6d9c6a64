"""Modules between layers: weight-free paths, and modules that cannot be entered exactly.

A pass-through module holds weights that act on each unit alone or normalise
across units (BatchNorm, LayerNorm, GroupNorm, RMSNorm, PReLU): it is part of the
weight-free path from one layer's units to the next layer's input features, which
the NaN probe traces. ``nn.MultiheadAttention`` is a layer (its heads are units,
:mod:`~explainnn.interventions.kinds.attention`) and ``nn.TransformerEncoderLayer``
runs its submodules while the engine keeps PyTorch's fast path off
(:func:`~explainnn.interventions.hooks.no_fast_path`). A fused module that remains
(``nn.TransformerDecoderLayer``) is refused in one line before any work, and so are
the layers inside it.
"""

from __future__ import annotations

from torch import nn

PASS_THROUGH_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.PReLU,
)
"""Modules with weights that act on each unit alone or normalise across units, between layers (weight-free paths)."""
FUSED_TYPES: tuple[type[nn.Module], ...] = (nn.TransformerDecoderLayer,)
"""Modules the engine does not enter (their cross-attention over a memory has no traced parent)."""


def register_pass_through(module_type: type[nn.Module]) -> None:
    """Declare ``module_type`` a weight-free path (its weights act per unit or normalise across units)."""
    global PASS_THROUGH_TYPES
    if module_type not in PASS_THROUGH_TYPES:
        PASS_THROUGH_TYPES = PASS_THROUGH_TYPES + (module_type,)


def is_pass_through(module: nn.Module) -> bool:
    return isinstance(module, PASS_THROUGH_TYPES)


def fused_reason(module: nn.Module) -> str | None:
    """Why a fused module cannot be entered exactly, or ``None``."""
    if isinstance(module, FUSED_TYPES):
        return (f"{type(module).__name__} is not supported (cross-attention over a memory input); build the model "
                "from nn.TransformerEncoderLayer or nn.MultiheadAttention")
    return None



def cell_loop_reason(module: nn.Module) -> str | None:
    """Why a recurrent cell is refused when no unit kind matches it (the built-in ``CellLoopKind`` makes the calls
    of a cell the steps of one layer), or ``None``."""
    if isinstance(module, nn.RNNCellBase):
        return (f"{type(module).__name__} called in a Python loop is not a supported recurrent layer without a unit "
                "kind for it; register CellLoopKind or write the recurrence with nn.RNN/nn.GRU/nn.LSTM")
    return None
