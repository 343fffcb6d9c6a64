"""explainnn: interventional, causal explanations of neural networks.

The main entry points::

    from explainnn import discover, attribute
    graph = discover(model, inputs, target=3)            # which hidden units cause class 3
    edges = circuit(model, inputs, 3)                     # the fewest unit-to-unit edges that keep class 3
    maps = attribute(model, x, 3, "causal", graph=graph)  # input attributions through them

    run = explainnn.Run("config.yaml")                    # the whole pipeline of a config, step by step
    run.graph, run.attributions, run.evaluations          # each runs the steps it needs, once

Submodules: :mod:`explainnn.data`, :mod:`explainnn.models`,
:mod:`explainnn.interventions`, :mod:`explainnn.causal`,
:mod:`explainnn.attributions`, :mod:`explainnn.pipeline`. The names above load
lazily, so ``import explainnn`` stays quick.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from tqdm import TqdmWarning

# captum and Quantus import tqdm.auto, which warns in a notebook without ipywidgets (tqdm then draws plain text
# bars); explainnn's own bars are plain tqdm, so this one warning tells a user of explainnn nothing.
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)

__version__ = "0.1.0"

_LAZY = {
    "attribute": "explainnn.attributions",
    "CausalGraph": "explainnn.causal",
    "circuit": "explainnn.causal",
    "discover": "explainnn.causal",
    "discover_all": "explainnn.causal",
    "run_sweep": "explainnn.sweep",
    "Run": "explainnn.pipeline",
}

__all__ = ["CausalGraph", "Run", "__version__", "attribute", "circuit", "discover", "discover_all", "run_sweep"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'explainnn' has no attribute {name!r}")
