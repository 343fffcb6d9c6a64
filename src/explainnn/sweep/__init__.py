"""Sweeps: many runs (classes x training seeds x models x settings) on Ray or one after another, merged.

A sweep file names a base config, overrides for every run and a grid (or a list)
of runs; :func:`run_sweep` validates every run's config first, executes the runs
as Ray tasks (or sequentially without Ray), skips runs finished by an earlier
sweep, records failures, and merges everything into ``runs.csv`` and a sweep
report with the cross-run analyses (causal-graph overlap across classes and seeds,
explanation-cluster agreement across seeds, explanation quality per run).

Modules: ``spec`` (the sweep file and its runs), ``execute`` (one run),
``backends`` (Ray / sequential), ``results`` (run folders and merged tables),
``overlap`` and ``agreement`` (cross-run analyses), ``report``, ``run``.
"""

from explainnn.sweep.run import SweepResult, run_sweep
from explainnn.sweep.spec import Sweep, load_sweep

__all__ = ["Sweep", "SweepResult", "load_sweep", "run_sweep"]
