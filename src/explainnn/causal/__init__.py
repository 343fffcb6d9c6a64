"""Causal graphs of a network's units and the tests that decide which units are causes.

Discovery intervenes on candidate units layer by layer, tests the change of the
target logit with :mod:`explainnn.causal.stats`, and records the causes in a
:class:`CausalGraph`, which saves to JSON, GraphML and CSV and draws itself.

``select_samples`` and ``paired_test`` are the deprecated names of
``indices_classified_as`` and ``paired_fdr_test`` (kept for one release).
"""

from explainnn.causal.circuit import circuit_faithfulness, plot_circuit
from explainnn.causal.curves import FaithfulnessCurves, faithfulness_curves, plot_curves
from explainnn.causal.discovery import (
    DiscoveryResult,
    causal_chain,
    discover,
    discover_all,
    indices_classified_as,
    select_samples,
)
from explainnn.causal.draw import draw_graph
from explainnn.causal.edges import EdgeAblation, Edges, ablated_logits, enumerate_edges
from explainnn.causal.graph import SCHEMA, SCHEMA_VERSION, CausalGraph, library_versions, node_id
from explainnn.causal.minimal_circuit import CircuitSearch, circuit, find_circuit
from explainnn.causal.stability import (
    SeedStability,
    StabilityResult,
    plot_seed_stability,
    plot_stability,
    seed_stability,
    stability,
)
from explainnn.causal.stats import TestResult, fdr_qvalues, paired_fdr_test, paired_test, ztest_research

__all__ = [
    "SCHEMA",
    "CircuitSearch",
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
    "select_samples",
    "stability",
    "SCHEMA_VERSION",
    "CausalGraph",
    "TestResult",
    "draw_graph",
    "fdr_qvalues",
    "library_versions",
    "node_id",
    "paired_fdr_test",
    "paired_test",
    "ztest_research",
]
