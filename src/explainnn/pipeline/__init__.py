"""The pipeline: ordered steps, each a function ``step(ctx, options)`` in its own module.

Data flows down the list in :data:`STEPS`::

    data ─► model ─► discovery ─► checks ─► circuit ─► attribution ─► evaluation ─► views ─► text ─► clustering ─► report

``ctx`` is the :class:`RunContext` (config, run folder, device, and every
earlier step's result); ``options`` is the step's config section, the same
pydantic model that ``config.yaml`` fills (``DiscoveryConfig`` for discovery,
...), so an option exists in one place for the file, the command line and
Python. From Python::

    from explainnn.pipeline import Run, run
    ctx = run("config.yaml", "discovery.target_class=7")     # everything, as the command line
    graph = Run("config.yaml").graph                          # only the steps up to the graph

The minimal faithful circuit (config section ``circuit``) is the step
``Step("circuit", find_circuits, "circuit")`` after ``checks``; it stores one
:class:`CircuitReport` per class in ``ctx.circuits``.

Adding a step
-------------
1. Put its options in ``config.py`` as a section (a pydantic model with an
   ``enabled`` key; document the keys in ``config.yaml``; ``docs/configuration.md`` is generated from the schema by ``make docs``).
2. Write ``pipeline/<step>.py`` with ``def my_step(ctx: RunContext, options:
   MyConfig) -> Result``: read what it needs from ``ctx``, write into
   ``ctx.run_dir / "<step>"`` through :mod:`explainnn.files`, print one line,
   store its result on ``ctx`` and return it.
3. Add ``Step("<step>", my_step, "<section>")`` to :data:`STEPS` in
   ``runner.py``, at its place in the data flow.
4. Check the options a step cannot take (unknown names, combinations) in the
   config section's validators, so a mistake stops the run before training.
"""

from explainnn.pipeline.circuit import CircuitReport
from explainnn.pipeline.context import RunContext
from explainnn.pipeline.runner import STEP_NAMES, STEPS, Run, Step, run

__all__ = ["STEPS", "STEP_NAMES", "CircuitReport", "Run", "RunContext", "Step", "run"]
