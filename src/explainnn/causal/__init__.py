"""Causal graphs of a network's units and the tests that decide which units are causes.

Discovery intervenes on candidate units layer by layer, tests the change of the
target logit with :mod:`explainnn.causal.stats`, and records the causes in a
:class:`CausalGraph`, which saves to JSON, GraphML and CSV and draws itself.
"""

from explainnn.causal.draw import draw_graph
from explainnn.causal.graph import SCHEMA, SCHEMA_VERSION, CausalGraph, library_versions, node_id
from explainnn.causal.stats import TestResult, fdr_qvalues, paired_test, ztest_research

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "CausalGraph",
    "TestResult",
    "draw_graph",
    "fdr_qvalues",
    "library_versions",
    "node_id",
    "paired_test",
    "ztest_research",
]
