"""Per-function statistics of the calls this process recorded, kept off the application's threads.

``scope-otel plan --from-store`` plans from what the program really did: how
often each of its functions ran, how long a call took, how often it raised,
whether it ran under a request.  Those figures are counted here, by the span
processor's worker, from the records it turns into spans (:func:`add`, one
per record): the application's threads do nothing more than they already did,
and what counting costs the worker is part of the CPU the overhead governor
charges to recording.

A record stands for more than one call when sampling left calls out: the
plan's sampling rate for its function and the governor's share of traces when
it started (:func:`~.governor.ratio_at`) weigh it, so ``calls`` estimates the
calls made.  Functions the plan left ``off`` (or the governor lowered to
``off``) are not counted, being not instrumented; the planner then uses what
an earlier run recorded of them.

:func:`take` hands the counts gathered since the last call to whoever writes
them out (the launcher, into the store's ``scope_function_stats`` table).
"""
from __future__ import annotations

import os
import threading
from typing import Any

from opentelemetry.trace.propagation import _SPAN_KEY

from scope_otel.capture import governor as _governor
from scope_otel.capture.records import END_NS, FID, OTEL_CTX, START_NS, STATUS, RAISED

#: indices of a function's counters
RECORDS, CALLS, ERRORS, DURATION_NS, ON_REQUEST = range(5)

_lock = threading.Lock()
_counts: dict[int, list] = {}  # fid -> [records, calls, errors, duration_ns, on_request]
_records = 0


def add(record: Any, rates: list[float]) -> None:
    """Count one function record (the worker calls this for each; ``rates`` is the runtime's
    effective sampling per function id)."""
    global _records
    fid = record[FID]
    start = record[START_NS]
    ctx = record[OTEL_CTX]
    span = ctx.get(_SPAN_KEY) if ctx else None
    under = span is not None and span.get_span_context().is_valid
    weight = 1.0 / ((rates[fid] if fid < len(rates) else 1.0) or 1.0)
    if len(_governor._history_t) > 1:  # the governor sampled traces at some point of this run
        weight /= _governor.ratio_at(start)
    with _lock:
        c = _counts.get(fid)
        if c is None:
            c = _counts[fid] = [0, 0.0, 0, 0, 0]
        c[RECORDS] += 1
        c[CALLS] += weight
        if record[STATUS] == RAISED:
            c[ERRORS] += 1
        c[DURATION_NS] += max(record[END_NS] - start, 0)
        if under:
            c[ON_REQUEST] += 1
        _records += 1


def take() -> tuple[dict[int, list], int]:
    """The counts since the last call, per function id, and the number of records; starts over."""
    global _counts, _records
    with _lock:
        counts, records = _counts, _records
        _counts, _records = {}, 0
    return counts, records


def _after_fork_in_child() -> None:
    # what the parent counted is the parent's to write
    global _lock, _counts, _records
    _lock = threading.Lock()
    _counts, _records = {}, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
