"""Collector watcher injected by ``scope-otel plan --trial`` (PYTHONPATH bootstrap).

Part of what recording costs a program is not paid per call.  Recording
allocates, and allocations bring the cyclic garbage collector's next *full*
collection earlier; a program with a large heap pays for that collection in
one piece (the example shop: 40-60 ms, 3-4 % of its run, once recording
passes about 30 young collections' worth of allocations).  The trial's runs,
with and without recording, therefore report the collector at exit into
``$SCOPE_OTEL_GC_DIR/gc-<pid>.json``: collections per generation, the time
each full collection took, and the generation counters and thresholds, which
say how far the next full collection was (see
:mod:`scope_otel.planner.gcstep`).

It sits on ``PYTHONPATH`` after the launcher's bootstrap, which imports it as
the ``sitecustomize`` it shadows; it then imports the next one after its own
folder, so the program's own ``sitecustomize`` still runs.  At exit it
flushes the tracer provider before reporting, so the recording's last export
is inside the report rather than after it.  It never collects itself: a
collection at exit would hide one that recording brought on.
"""
import atexit
import gc
import json
import os
import sys
import time

from scope_otel._sitechain import import_next_sitecustomize

_OUT = os.environ.get("SCOPE_OTEL_GC_DIR")
_OLDEST = len(gc.get_threshold()) - 1
_full_ns = []
_started = [0]


def _on_collection(phase, info):
    if info.get("generation") != _OLDEST:
        return
    if phase == "start":
        _started[0] = time.thread_time_ns()
    elif _started[0]:
        spent = time.thread_time_ns() - _started[0]
        _started[0] = 0
        # after a full collection every tracked object is in the oldest generation: the heap it walked
        _full_ns.append((spent, len(gc.get_objects())))


def _report():
    try:
        from opentelemetry import trace

        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush(10_000)
    except Exception:  # noqa: BLE001 - a report without the last export beats none
        pass
    try:
        doc = {
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "collections": [generation["collections"] for generation in gc.get_stats()],
            "full_ms": [ns / 1e6 for ns, _objects in _full_ns],
            "full_objects": [objects for _ns, objects in _full_ns],
            "objects_at_exit": len(gc.get_objects()),
            "count": list(gc.get_count()),
            "threshold": list(gc.get_threshold()),
            "enabled": gc.isenabled(),
        }
        path = os.path.join(_OUT, f"gc-{os.getpid()}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(path + ".tmp", path)
    except Exception as exc:  # noqa: BLE001
        print(f"scope-otel plan --trial: cannot write the collector report: {exc!r}", file=sys.stderr)


if _OUT:
    gc.callbacks.append(_on_collection)
    atexit.register(_report)
    if hasattr(os, "register_at_fork"):  # a forked child reports only its own collections
        os.register_at_fork(after_in_child=_full_ns.clear)

import_next_sitecustomize(os.path.dirname(os.path.abspath(__file__)))
