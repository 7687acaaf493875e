"""The instrumentation planner: decide what to record, and how deeply, within a budget.

``scope-otel plan [PATHS] --budget 5 --explain`` reads the application's
source with :mod:`ast` (nothing is imported), recognises what each function
is (:mod:`.patterns`), measures it (:mod:`.complexity`, :mod:`.callgraph`),
prices recording it on this machine (:mod:`.costmodel`, with call counts
estimated statically or measured by ``--profile``, :mod:`.profile`) and
chooses a level per function within the budget (:mod:`.orchestrator`).
The result is ``scope-otel.plan.json``, read back with
:func:`scope_otel.planner.plan.load_plan` (see :mod:`.plan` for the
contract the launcher and the import hook use).

This package's ``__init__`` imports nothing, so loading a plan at
application start-up stays cheap.
"""
