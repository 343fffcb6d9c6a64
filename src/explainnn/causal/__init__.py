"""Causal graphs of a network's units and the tests that decide which units are causes.

Discovery intervenes on candidate units layer by layer, tests the change of the
target logit with :mod:`explainnn.causal.stats`, and records the causes in a
:class:`CausalGraph`, which saves to JSON, GraphML and CSV and draws itself.

Circuits come at two levels (:func:`circuit`): the fewest unit-to-unit edges
that keep a class's behaviour (:mod:`explainnn.causal.edge_search`, scored as
MIB scores circuits by :mod:`explainnn.causal.mib`), or the fewest hidden units
(:mod:`explainnn.causal.minimal_circuit`).
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import nn

from explainnn.causal.circuit_check import (
    CircuitCheck,
    CircuitReport,
    Necessity,
    NecessityWhereChosen,
    Sufficiency,
    VersusRandom,
    circuit_faithfulness,
    plot_circuit,
)
from explainnn.causal.curves import FaithfulnessCurves, faithfulness_curves, plot_curves
from explainnn.causal.discovery import (
    DiscoveryResult,
    causal_chain,
    discover,
    discover_all,
    indices_classified_as,
)
from explainnn.causal.draw import draw_edge_circuit, draw_graph
from explainnn.causal.edge_search import (
    EdgeCircuitReport,
    HeldOutFaithfulness,
    edge_circuit,
    edge_scores,
    find_edge_circuit,
)
from explainnn.causal.edges import EdgeAblation, Edges, ablated_logits, enumerate_edges
from explainnn.causal.graph import SCHEMA, SCHEMA_VERSION, CausalGraph, library_versions, node_id
from explainnn.causal.mib import MIBCurve, edges_needed, mib_curve
from explainnn.causal.minimal_circuit import CircuitSearch, find_circuit
from explainnn.causal.minimal_circuit import circuit as node_circuit
from explainnn.causal.stability import (
    SeedStability,
    StabilityResult,
    plot_seed_stability,
    plot_stability,
    seed_stability,
    stability,
)
from explainnn.causal.stats import TestResult, fdr_qvalues, paired_fdr_test, ztest_research
from explainnn.errors import ConfigError

LEVELS = ("edges", "nodes")
"""What a circuit is made of: unit-to-unit edges (the default) or hidden units."""
ABLATIONS = ("patch", "mean", "zero")
_COMMON = ("faithfulness", "labels", "layers", "seed")
"""The keywords both levels take under the same name (``ablation`` and ``counterfactuals`` are checked apart)."""


def circuit(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int,
    *,
    level: str = "edges",
    faithfulness: float = 0.8,
    ablation: str | None = None,
    counterfactuals: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> CausalGraph:
    """The minimal faithful circuit of class ``target``, as a :class:`CausalGraph`.

    Parameters
    ----------
    model, inputs, target:
        The network, the inputs the circuit is found on (``(N, ...)``) and the
        explained class.
    level:
        ``"edges"`` (default): the fewest unit-to-unit edges that keep
        ``faithfulness`` (:func:`~explainnn.causal.edge_search.edge_circuit`;
        the graph's edges are the circuit, each with its exact ``effect``).
        ``"nodes"``: the fewest hidden units
        (:func:`~explainnn.causal.minimal_circuit.circuit`).
    faithfulness:
        The share of the normalised metric the circuit keeps, in ``(0, 1]``.
    ablation:
        What a removed edge or unit carries: ``"patch"`` (its value on a
        counterfactual input, MIB's default), ``"mean"`` (its mean over
        reference inputs) or ``"zero"``. ``None``: ``"patch"`` for edges,
        ``"mean"`` for nodes (the only ablation the node circuit takes).
    counterfactuals:
        One counterfactual input per input, for ``ablation="patch"`` (edges
        only; default: correctly classified inputs of other classes, paired in
        order, see :func:`~explainnn.causal.mib.select_samples`).
    labels:
        One label per input; the circuit samples are then those labelled and
        classified as ``target``.
    layers:
        The layers the circuit is searched in (default all).
    seed:
        Seeds the search, so the same call gives the same circuit.
    options:
        Further keywords of the level's function (``n_samples``, ``steps``,
        ``reference``, ``method``, ``metadata``, ``progress``, ...); a keyword the
        level does not take is a one-line :class:`~explainnn.errors.ConfigError`.

    The model is left exactly as it was.
    """
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if ablation is not None and ablation not in ABLATIONS:
        raise ConfigError(f"ablation must be one of {', '.join(ABLATIONS)}; got {ablation!r}")
    from explainnn.causal import edge_search, minimal_circuit
    from explainnn.inputs import check_inputs

    inputs = check_inputs(model, inputs, labels=labels, target=target, what="circuit")
    common: dict[str, Any] = {"faithfulness": faithfulness, "labels": labels, "layers": layers, "seed": seed}
    if level == "nodes":
        if ablation not in (None, "mean"):
            raise ConfigError(f"level 'nodes' ablates units by their mean (ablation 'mean'); ablation {ablation!r} "
                              "needs level 'edges'")
        if counterfactuals is not None:
            raise ConfigError("level 'nodes' does not take counterfactuals (it ablates units by their mean); "
                              "use level 'edges' with ablation 'patch'")
        _check_options("nodes", options, _keywords(minimal_circuit.circuit))
        return node_circuit(model, inputs, target, **common, **options)
    _check_options("edges", options, _keywords(edge_search.edge_circuit) | _keywords(edge_search.learn_edge_scores))
    return edge_circuit(model, inputs, target, ablation="patch" if ablation is None else ablation,
                        counterfactuals=counterfactuals, **common, **options)


def _keywords(function: Any) -> set[str]:
    """The keyword parameters of ``function`` other than the common ones and its positional inputs."""
    skip = {"model", "inputs", "target", "evaluator", "ablation", "counterfactuals", *_COMMON}
    return {name for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD) and name not in skip}


def _check_options(level: str, options: dict[str, Any], known: set[str]) -> None:
    """One line naming the first option ``level`` does not take, and those it does."""
    for name in options:
        if name not in known:
            raise ConfigError(f"level {level!r} does not take the option {name!r}; its options: "
                              f"{', '.join(sorted(known))}")

__all__ = [
    "ABLATIONS",
    "LEVELS",
    "MIBCurve",
    "SCHEMA",
    "draw_edge_circuit",
    "edge_circuit",
    "edge_scores",
    "edges_needed",
    "find_edge_circuit",
    "mib_curve",
    "node_circuit",
    "CircuitCheck",
    "CircuitReport",
    "EdgeCircuitReport",
    "HeldOutFaithfulness",
    "CircuitSearch",
    "Necessity",
    "NecessityWhereChosen",
    "Sufficiency",
    "VersusRandom",
    "DiscoveryResult",
    "EdgeAblation",
    "Edges",
    "FaithfulnessCurves",
    "ablated_logits",
    "enumerate_edges",
    "SeedStability",
    "StabilityResult",
    "causal_chain",
    "circuit",
    "circuit_faithfulness",
    "faithfulness_curves",
    "find_circuit",
    "plot_curves",
    "plot_seed_stability",
    "seed_stability",
    "discover",
    "discover_all",
    "plot_circuit",
    "plot_stability",
    "indices_classified_as",
    "stability",
    "SCHEMA_VERSION",
    "CausalGraph",
    "TestResult",
    "draw_graph",
    "fdr_qvalues",
    "library_versions",
    "node_id",
    "paired_fdr_test",
    "ztest_research",
]
