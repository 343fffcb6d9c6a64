"""Unit kinds: what a unit is, one module per family of layers, and the registry that maps modules to kinds.

Built in: :class:`LinearKind` (``nn.Linear``), :class:`ConvKind` (``nn.Conv1d``/
``nn.Conv2d``, grouped and depthwise), :class:`EmbeddingKind` (``nn.Embedding``),
:class:`RecurrentKind` (``nn.LSTM``/``nn.GRU``/``nn.RNN``, with ``proj_size`` a cell and a
projection layer), :class:`CellLoopKind` (``nn.LSTMCell``/``nn.GRUCell``/``nn.RNNCell``
called once per step in a Python loop: the calls are the steps), :class:`AttentionKind`
(``nn.MultiheadAttention``: one unit per head, its attention output before the output
projection, positions as steps); the modules between
layers are declared in :mod:`~explainnn.interventions.kinds.passthrough`.

Adding a kind is one file (a :class:`UnitKind` subclass) and one call to
:func:`register_kind`. A module takes the most recently registered kind that
matches it, so a kind for a subclass (a masked ``Linear``) overrides the built-in
one. Everything else in the package asks ``layer.unit_kind``; nothing compares
kind names.
"""

from __future__ import annotations

from torch import nn

from explainnn.interventions.kinds.attention import AttentionKind
from explainnn.interventions.kinds.base import KindLayer, UnitKind
from explainnn.interventions.kinds.cell_loop import CellLoopKind
from explainnn.interventions.kinds.conv import ConvKind
from explainnn.interventions.kinds.embedding import EmbeddingKind
from explainnn.interventions.kinds.linear import LinearKind
from explainnn.interventions.kinds.passthrough import register_pass_through
from explainnn.interventions.kinds.recurrent import RecurrentKind

_KINDS: list[UnitKind] = []


def register_kind(kind: UnitKind) -> UnitKind:
    """Register ``kind`` (an instance); it takes precedence over every kind registered before it.

    Registering an instance of an already registered class replaces that one.
    """
    if not isinstance(kind, UnitKind):
        raise TypeError(f"register_kind needs a UnitKind instance; got {kind!r}")
    _KINDS[:] = [known for known in _KINDS if type(known) is not type(kind)]
    _KINDS.append(kind)
    from explainnn.interventions.layers import forget_traces

    forget_traces()
    return kind


def unregister_kind(kind: UnitKind) -> None:
    """Remove a registered kind (tests, or a kind meant for one model only)."""
    _KINDS[:] = [known for known in _KINDS if known is not kind]
    from explainnn.interventions.layers import forget_traces

    forget_traces()


def kind_of(module: nn.Module) -> UnitKind | None:
    """The kind of ``module`` (the latest registered that matches), or ``None`` when it holds no units."""
    for kind in reversed(_KINDS):
        if kind.matches(module):
            return kind
    return None


def registered_kinds() -> tuple[UnitKind, ...]:
    """The registered kinds, in registration order."""
    return tuple(_KINDS)


def kind_names() -> str:
    """The module types of the registered kinds, for messages."""
    return ", ".join(cls.__name__ for kind in _KINDS for cls in kind.module_types)


_KINDS.extend([LinearKind(), ConvKind(), EmbeddingKind(), RecurrentKind(), CellLoopKind(), AttentionKind()])

__all__ = [
    "AttentionKind",
    "CellLoopKind",
    "ConvKind",
    "EmbeddingKind",
    "KindLayer",
    "LinearKind",
    "RecurrentKind",
    "UnitKind",
    "kind_names",
    "kind_of",
    "register_kind",
    "register_pass_through",
    "registered_kinds",
    "unregister_kind",
]
