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
from scope_otel.capture.records import END_NS, FID, OTEL_CTX, PARENT_ID, START_NS, STATUS, RAISED

#: indices of a function's counters; ENTRIES: calls made right under a span (a request's, a task's), the
#: first of the program's recorded functions it reached: its handler
RECORDS, CALLS, ERRORS, DURATION_NS, ON_REQUEST, ENTRIES = range(6)

_lock = threading.Lock()
_counts: dict[int, list] = {}  # fid -> [records, calls, errors, duration_ns, on_request, entries]
_records = 0


def add_batch(records: list, rates: list[float]) -> None:
    """Count a batch of function records (the worker calls this once per batch it exported; ``rates``
    is the runtime's effective sampling per function id)."""
    global _records
    local: dict[int, list] = {}
    under: dict[int, int] = {}  # id(OpenTelemetry context) -> the id of the valid span in it, or 0
    sampled = len(_governor._history_t) > 1  # the governor sampled traces at some point of this run
    nrates = len(rates)
    for record in records:
        fid = record[FID]
        start = record[START_NS]
        c = local.get(fid)
        if c is None:
            c = local[fid] = [0, 0.0, 0, 0, 0, 0, (rates[fid] if fid < nrates else 1.0) or 1.0]
        c[RECORDS] += 1
        c[CALLS] += 1.0 / _governor.ratio_at(start) if sampled else 1.0
        if record[STATUS] == RAISED:
            c[ERRORS] += 1
        c[DURATION_NS] += record[END_NS] - start
        ctx = record[OTEL_CTX]
        if ctx:
            key = id(ctx)
            span_id = under.get(key)
            if span_id is None:
                span = ctx.get(_SPAN_KEY)
                context = span.get_span_context() if span is not None else None
                span_id = under[key] = context.span_id if context is not None and context.is_valid else 0
            if span_id:
                c[ON_REQUEST] += 1
                if record[PARENT_ID] == span_id:
                    c[ENTRIES] += 1
    with _lock:
        for fid, c in local.items():
            total = _counts.get(fid)
            if total is None:
                total = _counts[fid] = [0, 0.0, 0, 0, 0, 0]
            total[RECORDS] += c[RECORDS]
            total[CALLS] += c[CALLS] / c[-1]  # the plan's sampling rate for the function
            total[ERRORS] += c[ERRORS]
            total[DURATION_NS] += c[DURATION_NS]
            total[ON_REQUEST] += c[ON_REQUEST]
            total[ENTRIES] += c[ENTRIES]
        _records += len(records)


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
