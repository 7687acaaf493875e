"""The instrumentation planner: decide what to record, and how deeply, within a budget.

Usage::

    scope-otel plan src/shop --budget 5 --explain          # static estimate
    scope-otel plan src/shop --budget 5 --profile -- python -m shop.bench
    scope-otel run --plan scope-otel.plan.json -- python -m shop

``scope-otel plan`` reads the application's source with :mod:`ast` (nothing
is imported) and, for every function:

* recognises what it is (:mod:`.patterns`): Django views, models,
  middleware and signal receivers; Flask routes, blueprints, error handlers
  and hooks; SQLAlchemy engine/session/query use; Celery tasks; coroutines,
  generators, async generators; thread, executor and process targets; queue
  put/get; HTTP client calls; subprocesses and multiprocessing;
* measures it (:mod:`.complexity`, :mod:`.callgraph`): cyclomatic
  complexity, nesting, loops, fan-out, direct and mutual recursion, state
  mutation, exception-handling density;
* prices recording it on this machine (:mod:`.costmodel`, calibrated once
  and cached) with call counts estimated from the source (:mod:`.callgraph`)
  or counted by ``--profile`` (:mod:`.measure`, which holds everything that
  times or runs something);
* chooses ``off``/``boundaries``/``full``, a capture set and a sampling rate
  that give the most value within ``--budget`` percent of run time
  (:mod:`.orchestrator`), with user overrides (``--pin`` > ``--exclude`` >
  ``--include``) and a reason for each function (``--explain``).

The result, ``scope-otel.plan.json`` (schema: ``schemas/plan.schema.json``)::

    {"version": 1, "hash": "sha256:...", "budget_pct": 5.0,
     "defaults": {"level": "off", ...},
     "functions": {"shop.views:checkout": {"level": "full",
         "capture": ["args", "exceptions", "return", "state"], "sampling": 1.0,
         "reason": "full: entry point flask.route; ...", "patterns": [...],
         "complexity": {...}, "estimated_calls": 1.0, "estimated_cost_us": 31.2}},
     "overrides": {"include": [], "exclude": [], "pin": {}},
     "estimate": {"overhead_pct": 4.1, "baseline_us": ..., "cost_model": {...}}}

is read back with :func:`scope_otel.plan.load_plan` — the contract
the launcher and the import hook use (see :mod:`scope_otel.plan`).  The
estimate is made before the program runs; while it runs, the overhead
governor (:mod:`scope_otel.capture.governor`) keeps recording within the
budget.  This package's ``__init__`` imports nothing, so importing the plan
command stays cheap.
"""
