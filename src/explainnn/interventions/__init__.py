"""Hard and soft interventions on units and edges of CNNs and RNNs, batched and exact.

* :func:`find_layers` - analysable layers, their execution order, parents and unit maps.
* :class:`NodeIntervention`, :class:`EdgeIntervention` (+ :func:`soft_node`,
  :func:`soft_edge`) - what to change.
* :func:`intervene` - a context manager applying interventions to a model.
* :class:`InterventionRunner` - many interventions x many samples in batched passes.
* :func:`reference_run` - the naive per-sample weight-edit loop, for checking.
"""

from explainnn.interventions.apply import intervene
from explainnn.interventions.layers import LayerInfo, find_layers
from explainnn.interventions.reference import reference_run
from explainnn.interventions.runner import InterventionResult, InterventionRunner
from explainnn.interventions.spec import (
    EdgeIntervention,
    NodeIntervention,
    soft_edge,
    soft_node,
    soft_value,
)

__all__ = [
    "EdgeIntervention",
    "InterventionResult",
    "InterventionRunner",
    "LayerInfo",
    "NodeIntervention",
    "find_layers",
    "intervene",
    "reference_run",
    "soft_edge",
    "soft_node",
    "soft_value",
]
