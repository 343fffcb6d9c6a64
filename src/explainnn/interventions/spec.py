"""What an intervention is: frozen, hashable specs that the engine compiles.

Specs only name things (layer, unit indices, steps, value); checking them against a
model happens when they are compiled for a traced layer, so one spec list can be
reused across models and runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import torch

from explainnn.errors import InterventionError

NODE_MODES = ("zero", "mean", "constant", "scale")
EDGE_MODES = ("set", "scale")

Indices = Union[int, Iterable[int]]


def _indices(label: str, value: Indices, allow_negative: bool = False) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()
    items = [value] if isinstance(value, int) else list(value)
    if items and all(type(item) is int for item in items) and (allow_negative or min(items) >= 0) \
            and len(set(items)) == len(items):
        return tuple(items)
    if not items:
        raise InterventionError(f"{label} must name at least one index; got an empty list")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise InterventionError(f"{label} must be integers; got {item!r}")
        if item < 0 and not allow_negative:
            raise InterventionError(f"{label} must be non-negative integers; got {item}")
        out.append(int(item))
    if len(set(out)) != len(out):
        raise InterventionError(f"{label} lists an index twice: {out}")
    return tuple(out)


def _number(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InterventionError(f"{label} must be a number; got {value!r}")
    return float(value)


def _layer_name(layer: object) -> str:
    if not isinstance(layer, str) or not layer:
        raise InterventionError(f"layer must be a non-empty layer name; got {layer!r}")
    return layer


@dataclass(frozen=True)
class NodeIntervention:
    """``do(unit := value)`` on units of one layer.

    ``mode``: ``zero``; ``mean`` (the unit's mean activation over reference data,
    per position/step); ``constant`` (``value``); ``scale`` (multiply by ``value``,
    the soft intervention). ``steps`` restricts recurrent, embedding and sequence
    layers to some time steps (negative steps count from the end); ``None`` = all.
    For LSTMs the unit is the hidden output ``h``; the cell state is left as computed.
    """

    layer: str
    units: tuple[int, ...]
    mode: str = "zero"
    value: float | None = None
    steps: tuple[int, ...] | None = None

    def __init__(
        self,
        layer: str,
        units: Indices,
        mode: str = "zero",
        value: float | None = None,
        steps: Indices | None = None,
    ) -> None:
        if mode not in NODE_MODES:
            raise InterventionError(f"unknown node mode '{mode}'; valid modes: {', '.join(NODE_MODES)}")
        if mode in ("constant", "scale"):
            if value is None:
                raise InterventionError(f"node mode '{mode}' needs a value")
            value = _number("value", value)
        elif value is not None:
            raise InterventionError(f"node mode '{mode}' takes no value; got {value!r}")
        object.__setattr__(self, "layer", _layer_name(layer))
        object.__setattr__(self, "units", _indices("units", units))
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "steps", None if steps is None else _indices("steps", steps, True))


@dataclass(frozen=True)
class EdgeIntervention:
    """Path-specific intervention on the weights from ``parents`` into ``children``.

    Every edge ``parent i -> child j`` of ``layer`` is edited together: its weights
    are set to ``value`` (``mode="set"``, 0 cuts the edge) or multiplied by it
    (``mode="scale"``). Parents are units of the layer feeding ``layer`` (see
    ``LayerInfo.parent``); with ``recurrent=True`` they are the layer's own units
    one step earlier (hidden-to-hidden weights). ``children=None`` means all units.
    For recurrent layers all gates of a child are edited, optionally only at
    ``steps``. Other paths from the parent stay intact.

    ``parent_layer`` names which parent of ``layer`` the ``parents`` belong to
    (``LayerInfo.parents``; ``None``: the primary parent ``LayerInfo.parent``).
    A parent whose features are shared with other parents (a residual add, an
    identity shortcut: ``ParentLink.via == "path"``) has no weight of its own
    into the child; its edge scales the parent unit's signal on the weight-free
    path into ``children`` by ``value`` (``set``: the implicit weight 1 becomes
    ``value``; ``scale``: it is multiplied by ``value``), which cuts it at 0.
    """

    layer: str
    parents: tuple[int, ...]
    children: tuple[int, ...] | None = None
    value: float = 0.0
    mode: str = "set"
    steps: tuple[int, ...] | None = None
    recurrent: bool = False
    parent_layer: str | None = None

    def __init__(
        self,
        layer: str,
        parents: Indices,
        children: Indices | None = None,
        value: float = 0.0,
        mode: str = "set",
        steps: Indices | None = None,
        recurrent: bool = False,
        parent_layer: str | None = None,
    ) -> None:
        if mode not in EDGE_MODES:
            raise InterventionError(f"unknown edge mode '{mode}'; valid modes: {', '.join(EDGE_MODES)}")
        if not isinstance(recurrent, bool):
            raise InterventionError(f"recurrent must be True or False; got {recurrent!r}")
        object.__setattr__(self, "layer", _layer_name(layer))
        object.__setattr__(self, "parents", _indices("parents", parents))
        object.__setattr__(self, "children", None if children is None else _indices("children", children))
        object.__setattr__(self, "value", _number("value", value))
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "steps", None if steps is None else _indices("steps", steps, True))
        object.__setattr__(self, "recurrent", recurrent)
        if parent_layer is not None and recurrent:
            raise InterventionError("a recurrent edge's parents are the layer's own units; drop parent_layer")
        object.__setattr__(self, "parent_layer", None if parent_layer is None else _layer_name(parent_layer))

    @property
    def within_layer(self) -> bool:
        """Whether the edge runs within its layer, from its units at one step to the next (``recurrent=True``)."""
        return bool(getattr(self, "recurrent"))


Intervention = Union[NodeIntervention, EdgeIntervention]
InterventionSet = Union[Intervention, Sequence[Intervention]]
"""One row of a run: a single spec, or several applied jointly."""


SOFT_RULES = ("scale", "set")
"""How a soft intervention uses its draw ``u ~ U(beta, beta + delta)``: ``scale``
multiplies the weight or unit by ``u`` (beta walks from a cut at 0 towards no
change at 1; the default); ``set`` replaces it by ``u`` (the research code's
``alpha[neuron_idx] = u``, which for beta >= 0.1 exceeds most trained weights)."""


def soft_value(beta: float, delta: float, generator: torch.Generator | None = None) -> float:
    """Draw ``u ~ U(beta, beta + delta)``; an explicit generator makes runs reproducible."""
    beta, delta = _number("beta", beta), _number("delta", delta)
    if delta < 0:
        raise InterventionError(f"delta must be >= 0; got {delta}")
    return beta + delta * float(torch.rand((), generator=generator, dtype=torch.float64))


def _soft_rule(rule: str) -> str:
    if rule not in SOFT_RULES:
        raise InterventionError(f"unknown soft rule '{rule}'; valid rules: {', '.join(SOFT_RULES)}")
    return rule


def soft_node(
    layer: str,
    units: Indices,
    beta: float,
    delta: float,
    generator: torch.Generator | None = None,
    steps: Indices | None = None,
    rule: str = "scale",
) -> NodeIntervention:
    """Scale units by ``u ~ U(beta, beta + delta)`` (``rule="set"``: set them to ``u``).

    With ``rule="scale"``, ``beta = delta = 0`` is the hard zero and beta -> 1 leaves the units unchanged.
    """
    mode = "scale" if _soft_rule(rule) == "scale" else "constant"
    return NodeIntervention(layer, units, mode, soft_value(beta, delta, generator), steps)


def soft_edge(
    layer: str,
    parents: Indices,
    children: Indices | None,
    beta: float,
    delta: float,
    generator: torch.Generator | None = None,
    steps: Indices | None = None,
    recurrent: bool = False,
    rule: str = "scale",
) -> EdgeIntervention:
    """Scale edge weights by ``u ~ U(beta, beta + delta)``, ``w -> w u`` (``rule="set"``: ``w -> u``)."""
    value = soft_value(beta, delta, generator)
    return EdgeIntervention(layer, parents, children, value, _soft_rule(rule), steps, recurrent)


def as_rows(interventions: Iterable[InterventionSet]) -> list[tuple[Intervention, ...]]:
    """Normalise a list of specs or spec groups into one tuple of specs per row."""
    rows = []
    for index, item in enumerate(interventions):
        group = (item,) if isinstance(item, (NodeIntervention, EdgeIntervention)) else tuple(item)
        if not group:
            raise InterventionError(f"intervention {index} is an empty group")
        for spec in group:
            if not isinstance(spec, (NodeIntervention, EdgeIntervention)):
                raise InterventionError(
                    f"intervention {index} holds a {type(spec).__name__}; expected "
                    "NodeIntervention or EdgeIntervention"
                )
        rows.append(group)
    return rows
