"""The hidden units a circuit is made of, and exact mean ablation of unit sets.

A *circuit* is a set of hidden units of the analysed layers; every other unit of
those layers is mean-ablated (set to its mean activation over reference data,
per position or time step). :class:`HiddenUnits` numbers the units of the
analysed layers ``0 .. total - 1`` (layer by layer, in execution order), turns
boolean masks over them into node interventions, and evaluates many masks at once
with the batched :class:`~explainnn.interventions.InterventionRunner`: every
number a circuit is judged by comes from these exact interventions.

The normalised faithfulness of a circuit ``C`` on a set of samples is
``(F(C) - F(empty)) / (F(full) - F(empty))``, ``F`` the mean target logit with
everything outside ``C`` mean-ablated: 1 keeps the whole model's logit, 0 is no
better than ablating every analysed unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from explainnn.errors import UserError
from explainnn.interventions import InterventionRunner, LayerInfo, NodeIntervention, find_layers


@dataclass(frozen=True)
class HiddenUnits:
    """The units of the analysed hidden layers, numbered ``0 .. total - 1`` layer by layer."""

    layers: tuple[LayerInfo, ...]

    @classmethod
    def of(cls, model: nn.Module, example: torch.Tensor, names: Sequence[str] | None = None,
           layers: Sequence[LayerInfo] | None = None) -> "HiddenUnits":
        """Every layer of ``find_layers`` except the output layer and embeddings, or the ``names`` given."""
        found = list(layers) if layers is not None else find_layers(model, example)
        if len(found) < 2:
            raise UserError("the model has no hidden analysable layers (Linear, Conv1d/2d, LSTM, GRU, RNN) "
                            "below its output layer; there is no circuit to find")
        hidden = [info for info in found[:-1] if not info.unit_kind.reads_ids]
        if names is not None:
            valid = {info.name: info for info in hidden}
            unknown = [name for name in names if name not in valid]
            if unknown or not names:
                raise UserError(f"circuit layers: {unknown[0] if unknown else '[]'!r} is not a hidden layer; "
                                f"valid: {', '.join(valid)}")
            hidden = [info for info in hidden if info.name in set(names)]
        repeated = next((info for info in hidden if info.calls != 1), None)
        if repeated is not None:
            raise UserError(f"layer '{repeated.name}' runs {repeated.calls} times per forward pass and cannot be "
                            "ablated; pass layers= without it")
        if not hidden:
            raise UserError("the model has no hidden layers to build a circuit from (embeddings are inputs)")
        return cls(tuple(hidden))

    @property
    def names(self) -> list[str]:
        return [info.name for info in self.layers]

    @property
    def sizes(self) -> list[int]:
        return [info.n_units for info in self.layers]

    @property
    def total(self) -> int:
        return int(sum(self.sizes))

    @property
    def offsets(self) -> list[int]:
        return [int(v) for v in np.cumsum([0] + self.sizes[:-1])]

    def layer_of(self) -> np.ndarray:
        """``(total,)``: the index (into ``layers``) of each unit's layer."""
        return np.repeat(np.arange(len(self.layers)), self.sizes)

    def split(self, mask: np.ndarray) -> dict[str, list[int]]:
        """``{layer: unit indices}`` of the units set in a boolean ``(total,)`` mask."""
        mask = np.asarray(mask, dtype=bool)
        return {info.name: np.flatnonzero(mask[start : start + info.n_units]).tolist()
                for info, start in zip(self.layers, self.offsets)}

    def mask(self, units: dict[str, Sequence[int]]) -> np.ndarray:
        """The boolean ``(total,)`` mask of ``{layer: unit indices}``."""
        out = np.zeros(self.total, dtype=bool)
        for info, start in zip(self.layers, self.offsets):
            out[[start + int(i) for i in units.get(info.name, [])]] = True
        return out

    def saturated(self, mask: np.ndarray) -> np.ndarray:
        """``(layers,)`` bool: the layers in which ``mask`` holds every unit or all but one (at least one unit).

        Such a layer offers no real choice: every set with the same number of
        units per layer ablates (nearly) all of it. None is saturated when
        ``mask`` has no unit outside the saturated layers (nothing would be left
        to compare). See :func:`~explainnn.causal.circuit_faithfulness`.
        """
        mask = np.asarray(mask, dtype=bool)
        counts = np.bincount(self.layer_of()[mask], minlength=len(self.sizes))
        full = (counts > 0) & (counts >= np.asarray(self.sizes) - 1)
        return full if (mask & ~full[self.layer_of()]).any() else np.zeros_like(full)

    def label(self, index: int) -> str:
        """``"layer:unit"`` of a unit number."""
        layer = int(np.searchsorted(np.asarray(self.offsets), index, side="right") - 1)
        return f"{self.names[layer]}:{index - self.offsets[layer]}"

    def ablate(self, mask: np.ndarray) -> tuple[NodeIntervention, ...]:
        """One runner row that mean-ablates the units set in ``mask`` (an exact no-op when none is)."""
        row = tuple(NodeIntervention(name, units, "mean") for name, units in self.split(mask).items() if units)
        # Nothing to ablate: the runner needs one spec per row, so scale a unit by 1.
        return row or (NodeIntervention(self.names[0], [0], "scale", 1.0),)

    def keep(self, mask: np.ndarray) -> tuple[NodeIntervention, ...]:
        """One runner row that keeps only the units set in ``mask`` (everything else mean-ablated)."""
        return self.ablate(~np.asarray(mask, dtype=bool))


def target_logits(runner: InterventionRunner, samples: torch.Tensor, target: int,
                  rows: Sequence[Sequence[NodeIntervention]]) -> np.ndarray:
    """``(K, N)`` float64 target logits of the ``K`` rows on the ``N`` samples (exact, batched)."""
    if not rows:
        return np.zeros((0, len(samples)))
    result = runner.run(samples, list(rows), target)
    return result.target_logit.double().cpu().numpy()


def normalise(values: np.ndarray, full: float, empty: float) -> np.ndarray:
    """``(values - empty) / (full - empty)``; NaN when the model's logit does not depend on the units."""
    span = full - empty
    return (np.asarray(values, dtype=float) - empty) / span if span else np.full(np.shape(values), np.nan)
