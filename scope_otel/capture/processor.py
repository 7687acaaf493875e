"""``RingBufferSpanProcessor``: the SDK span processor that never waits.

Usage::

    from scope_otel.capture import RingBufferSpanProcessor
    provider.add_span_processor(RingBufferSpanProcessor(exporter))

``on_end`` puts the span into a bounded ring and returns; it *is* the ring's
``put``, so the application thread pays one C call.  Worker thread(s) drain
batches of ``max_export_batch_size`` every ``schedule_delay_millis`` (or as
soon as a batch is waiting) and call the exporter.

Function-call records of :mod:`scope_otel.capture.runtime` travel in the same
ring when the processor is given ``correlator``: a callable taking
``resource=`` that builds the object turning records into spans
(:class:`scope_otel.correlate.spans.Correlator`, one layer up, which is why it is
handed in: the launcher's pipeline does so).  It is built on the worker, once per
process.  The runtime writes into the ring of the newest live processor that
captures functions; without ``correlator`` the processor carries SDK spans only.

Arguments left ``None`` come from ``OTEL_BSP_MAX_QUEUE_SIZE``,
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, ``OTEL_BSP_SCHEDULE_DELAY`` and
``OTEL_BSP_EXPORT_TIMEOUT``; the queue size otherwise defaults to scope-otel's
``ring_size`` (65536), the rest to the SDK's defaults.  ``overflow`` is
``drop_oldest`` (default), ``drop_newest`` or ``block`` (waits up to
``block_timeout_millis`` (scope-otel's ``block_timeout_ms``, 1000) for room,
then drops and counts; while the exporter takes nothing, later records drop
without waiting).

``force_flush(timeout_millis)`` and ``shutdown(timeout_millis)`` return within
their timeout even when the exporter hangs: they wait for the worker, never
for an exporter call.  When ``shutdown``'s time is up, the exporter is told to
give up (its ``abort()``, if it has one: scope-otel's OTLP exporters cancel the
request in flight and stop retrying) and what is still queued is counted as
``queued_at_shutdown``, never as exported.  After ``fork`` the child gets a fresh ring and worker
(through ``os.register_at_fork`` and, where at-fork hooks do not run, as under
uWSGI, through a pid check when the ring asks for a drain or on
``force_flush``); locks held by the parent's worker at fork time are never
touched in the child.  Without at-fork hooks the child's spans ended before
that check are dropped and counted (``dropped_at_fork``), because they cannot
be told apart from the parent's pending ones.

``stats()`` returns the counters; pass ``meter_provider`` to also publish
them as OpenTelemetry metrics.  Function spans carry ``resource`` if given,
else the resource of the SDK spans passing through (the TracerProvider's).
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
import weakref
from typing import Any, Callable

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from scope_otel import notice, redact
from scope_otel.capture import _accel, runtime, tally
from scope_otel.redact import scrub_spans
from scope_otel.capture.ring import Ring

_log = logging.getLogger("scope_otel.capture")

_DEFAULT_BATCH = 512
_DEFAULT_DELAY_MS = 5000
_DEFAULT_TIMEOUT_MS = 30000
_DEFAULT_BLOCK_MS = 1000
#: After shutdown's time is up and the exporter was told to abort, how long the
#: worker gets to return before it is abandoned (it is a daemon thread).
_ABORT_GRACE_S = 0.5


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    _log.warning("scope-otel: %s=%r is not a positive integer; using %d", name, raw, default)
    return default


def _default_block_timeout_ms() -> int:
    try:
        from scope_otel import config

        return int(config.current().block_timeout_ms)
    except Exception:
        return _DEFAULT_BLOCK_MS


def _default_queue_size() -> int:
    try:
        from scope_otel import config

        fallback = config.current().ring_size
    except Exception:
        fallback = 1 << 16
    return _env_int("OTEL_BSP_MAX_QUEUE_SIZE", fallback)


class RingBufferSpanProcessor(SpanProcessor):
    """Ring-buffered, batching span processor (see the module docstring)."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
        schedule_delay_millis: float | None = None,
        export_timeout_millis: float | None = None,
        overflow: str = "drop_oldest",
        block_timeout_millis: float | None = None,
        workers: int = 1,
        capture_functions: bool | None = None,
        correlator: Callable[..., Any] | None = None,
        meter_provider: Any = None,
        resource: Any = None,
    ) -> None:
        self.exporter = exporter
        self.max_queue_size = int(max_queue_size or _default_queue_size())
        self.max_export_batch_size = int(
            max_export_batch_size or _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _DEFAULT_BATCH)
        )
        self.schedule_delay_millis = float(
            schedule_delay_millis or _env_int("OTEL_BSP_SCHEDULE_DELAY", _DEFAULT_DELAY_MS)
        )
        self.export_timeout_millis = float(
            export_timeout_millis or _env_int("OTEL_BSP_EXPORT_TIMEOUT", _DEFAULT_TIMEOUT_MS)
        )
        if self.max_export_batch_size > self.max_queue_size:
            self.max_export_batch_size = self.max_queue_size
        self.overflow = overflow
        self.block_timeout_millis = float(
            _default_block_timeout_ms() if block_timeout_millis is None else block_timeout_millis
        )
        self.workers = max(1, int(workers))
        if capture_functions is None:
            capture_functions = correlator is not None
        elif capture_functions and correlator is None:
            raise ValueError("RingBufferSpanProcessor: capture_functions=True needs correlator= (what turns "
                             "function-call records into spans, e.g. scope_otel.correlate.spans.Correlator)")
        self.capture_functions = capture_functions
        self._new_correlator = correlator
        # validates overflow before anything starts
        Ring(1, overflow)
        self._exported = 0
        self._export_failures = 0
        self._unconverted = 0  # could not be read, converted or redacted: never reached the exporter
        self._failed_by_reason: collections.Counter = collections.Counter()
        self._queued_at_shutdown = 0
        self._drops_seen = 0
        self._unsampled = 0
        self._forks = 0
        self._dropped_at_fork = 0
        self._shutdown = False
        self._correlator = None
        self._resource = resource
        self._start()
        if hasattr(os, "register_at_fork"):
            weak = weakref.WeakMethod(self._after_fork)

            def _child() -> None:
                method = weak()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=_child)
        if meter_provider is not None:
            self._register_metrics(meter_provider)

    # ------------------------------------------------------------ lifecycle

    def _start(self, forked: bool = False) -> None:
        """Fresh ring, events and workers (at construction and in a fork child)."""
        self._pid = os.getpid()
        self._ring = Ring(self.max_queue_size, self.overflow, self.block_timeout_millis / 1000)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._abandon = threading.Event()  # shutdown's time is up: take nothing more
        self._flush_lock = threading.Lock()
        self._flush_waiters: list[threading.Event] = []
        self._reserved: list = []  # spans that must not meet a full ring (see submit)
        self._submitted = 0  # and how many there were: recorded, though not through the ring
        self._in_flight = 0  # batches being exported right now (several workers)
        self._in_flight_spans = 0  # their spans: not exported if shutdown abandons them
        self._ring.set_wake(self._nudge, self.max_export_batch_size)
        # on_end is the ring's put: nothing else runs on the application thread
        self.on_end = self._ring.put  # type: ignore[method-assign]
        if self.capture_functions:
            runtime.bind_ring(self._ring, move=not forked)
        self._threads = []
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"scope-otel-export-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        if self.capture_functions:
            runtime.governor.attach(self)  # watches this ring and these workers' CPU time

    def _nudge(self) -> None:
        """Called by the ring when a batch is waiting (or drops keep happening)."""
        if self._pid != os.getpid():
            self._after_fork()  # at-fork hooks did not run (uWSGI and friends)
            return
        self._wake.set()

    def _after_fork(self) -> None:
        if self._pid == os.getpid():
            return  # already done by the other path
        # What the inherited ring holds cannot be told apart (the parent's
        # pending spans, or, without at-fork hooks, the child's first ones):
        # exporting it could duplicate the parent's spans, so it is counted
        # and dropped.  The old ring and its lock are never touched otherwise.
        self._dropped_at_fork += len(self._ring)
        self._forks += 1
        self._exported = self._export_failures = self._unconverted = self._queued_at_shutdown = self._drops_seen = 0
        self._failed_by_reason = collections.Counter()
        self._correlator = None
        if self._shutdown:
            self.on_end = _noop  # type: ignore[method-assign]
            return
        runtime.reseed_after_fork()
        self._start(forked=True)

    def set_resource(self, resource: Any) -> None:
        """The resource of function spans (default: the SDK spans' one)."""
        self._resource = resource
        if self._correlator is not None:
            self._correlator.resource = resource

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:  # replaced per instance by ring.put
        self._ring.put(span)

    def submit(self, span: ReadableSpan) -> None:
        """Export ``span`` past the ring: the record of a governor change is made when the ring is
        full, and must not be the record dropped."""
        with self._flush_lock:
            self._reserved.append(span)
            self._submitted += 1
        self._wake.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued now; False if not done within the timeout."""
        if self._shutdown:
            return False
        if self._pid != os.getpid():
            self._after_fork()
        done = threading.Event()
        with self._flush_lock:
            self._flush_waiters.append(done)
        self._wake.set()
        return done.wait(max(0.0, timeout_millis / 1000))

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Drain what is queued and stop, within ``timeout_millis`` plus about half a second.

        When the time is up the exporter is aborted and what was not exported
        is counted (``queued_at_shutdown``, ``failed_by_reason``).
        """
        if self._shutdown:
            return
        if self._pid != os.getpid():
            self._after_fork()
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        self._shutdown = True
        self.on_end = _noop  # type: ignore[method-assign]
        if self.capture_functions:
            runtime.unbind_ring(self._ring)
        self._stop.set()
        self._wake.set()
        self._join_workers(deadline)
        if any(t.is_alive() for t in self._threads):
            # a dead, silent or slow backend: stop waiting for it
            self._abandon.set()
            abort = getattr(self.exporter, "abort", None)
            if callable(abort):
                try:
                    abort()
                except Exception:
                    _log.debug("scope-otel: exporter abort failed", exc_info=True)
            self._join_workers(time.monotonic() + _ABORT_GRACE_S)
        # counted once the workers are done (or abandoned): nothing takes from the ring now,
        # and a batch an abandoned worker still sends is not exported as far as anyone can know
        with self._flush_lock:
            self._queued_at_shutdown += len(self._ring) + self._in_flight_spans + len(self._reserved)
        self._observe_drops()
        # The exporter's own shutdown may hang too: give it what is left, at least a moment.
        closer = threading.Thread(target=self._close_exporter, name="scope-otel-exporter-shutdown", daemon=True)
        try:
            closer.start()
        except RuntimeError:  # Python 3.12 starts no thread once the interpreter is finalizing (at exit)
            self._close_exporter()
            return
        closer.join(max(0.2, deadline - time.monotonic()))

    def _join_workers(self, deadline: float) -> None:
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    def _close_exporter(self) -> None:
        try:
            self.exporter.shutdown()
        except Exception:
            _log.exception("scope-otel: exporter shutdown failed")

    # ------------------------------------------------------------ the worker

    def _work(self) -> None:
        _leave_signals_to_the_program()
        runtime.disable_current_thread()  # scope-otel never records itself
        attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        ring, wake, stop, abandon = self._ring, self._wake, self._stop, self._abandon
        delay = self.schedule_delay_millis / 1000
        limit = self.max_export_batch_size
        while True:
            wake.wait(delay)
            wake.clear()
            with self._flush_lock:
                waiters, self._flush_waiters = self._flush_waiters, []
            while not abandon.is_set():
                if self._reserved:  # between batches too: a backlog must not hold them until it ends
                    with self._flush_lock:
                        reserved, self._reserved = self._reserved, []
                    self._export(reserved)
                    reserved = None
                batch = ring.take(limit)
                if batch:
                    with self._flush_lock:
                        self._in_flight += 1
                    try:
                        self._export(batch)
                    finally:
                        with self._flush_lock:
                            self._in_flight -= 1
                            if self._flush_waiters:
                                wake.set()  # a flush waits for this batch
                if len(batch) < limit:
                    break
            # dropped before any waiter is told: an exported record (its exception, the frames'
            # locals) must not stay alive here until the next wake-up, up to schedule_delay later
            batch = None
            if waiters:
                with self._flush_lock:
                    if self._in_flight:
                        # another worker still exports a batch taken before
                        # the flush: leave the waiters to it
                        self._flush_waiters.extend(waiters)
                        waiters = []
                for w in waiters:
                    w.set()
            _accel.IMPL.recalibrate()
            if stop.is_set() or ring is not self._ring:
                return

    def _export(self, batch: list) -> None:
        try:
            # A batch of SDK spans only, the common case, in one comprehension: this is the worker's
            # per-span cost, so the field the ``context`` property returns is read directly (a
            # SpanContext: a tuple whose item 3 is the trace flags).  RECORD_ONLY spans are counted,
            # not exported, as in BatchSpanProcessor.
            spans = sdk_spans = [s for s in batch if s._context[3] & 1]
            self._unsampled += len(batch) - len(spans)
        except (AttributeError, TypeError, IndexError):  # function-call records, or not the SDK's spans
            spans, sdk_spans = self._convert(batch)
        if sdk_spans:
            try:
                scrub_spans(sdk_spans, redact.current())
            except Exception:  # never export what could not be redacted
                self._unconverted += len(spans)
                _log.exception("scope-otel: redaction failed; %d spans not exported", len(spans))
                return
        if not spans:
            return
        with self._flush_lock:
            self._in_flight_spans += len(spans)
        try:
            result = self.exporter.export(spans)
        except Exception as exc:
            self._failed(len(spans), f"exporter raised {type(exc).__name__}: {exc}")
            _log.debug("scope-otel: exporter raised", exc_info=True)
            return
        finally:
            with self._flush_lock:
                self._in_flight_spans -= len(spans)
        if result is SpanExportResult.SUCCESS:
            self._exported += len(spans)
        else:
            self._failed(len(spans), getattr(self.exporter, "last_failure", None) or "the exporter reported a failure")

    def _convert(self, batch: list) -> tuple[list, list]:
        """(everything to export, the SDK spans among it), one item at a time: function-call records
        become spans (with a correlator; without one they are counted as not converted)."""
        spans: list = []
        correlator = self._correlator
        if correlator is None and self._new_correlator is not None:
            correlator = self._correlator = self._new_correlator(resource=self._resource)
        if correlator is not None and correlator.resource is None:  # function spans share the SDK spans' one
            for item in batch:
                if isinstance(item, ReadableSpan):
                    correlator.learn_resource(item.resource)
                    break
        append = spans.append
        sdk_spans: list = []
        counts = runtime.governor.function_counts  # records per function: the governor lowers the busiest
        records: list = []  # counted for `plan --from-store` (capture.tally), once per batch
        for item in batch:
            try:
                if type(item) in _RECORD_TYPES:  # a function-call record
                    if correlator is None:
                        raise TypeError("a function-call record reached a processor without a correlator")
                    append(correlator.to_span(item))
                    fid = item[3]
                    counts[fid] = counts.get(fid, 0) + 1
                    records.append(item)
                    continue
                try:  # see _export
                    context = item._context
                except AttributeError:
                    context = item.context
                if context and context[3] & 1:
                    append(item)
                    sdk_spans.append(item)
                else:
                    self._unsampled += 1
            except Exception:
                self._unconverted += 1
                _log.exception("scope-otel: could not convert a record or read a span; skipped")
        if correlator is not None:
            correlator.batch_done()
        if records:
            try:
                tally.add_batch(records, runtime._RATES)
            except Exception:  # statistics are never worth an export
                _log.debug("scope-otel: per-function statistics failed", exc_info=True)
            records = None  # the records (their exceptions, captured values) are not kept past the batch
        return spans, sdk_spans

    def _failed(self, count: int, reason: str) -> None:
        self._export_failures += count
        self._failed_by_reason[reason] += count
        notice.tell("export-failed", f"{count} spans not exported: {reason} (further failures are counted, "
                    "not shown; the exit summary has the totals)", count)

    def _observe_drops(self) -> None:
        c = self._ring.counters()
        new = c["dropped"] - self._drops_seen
        if new > 0:
            self._drops_seen = c["dropped"]
            how = {"drop_oldest": "the oldest records are overwritten", "drop_newest": "new records are refused",
                   "block": f"records that waited {self.block_timeout_millis:.0f} ms for room are dropped"}
            notice.tell("ring-dropped", f"the capture queue ({self.max_queue_size} records) is full: "
                        f"{how[self.overflow]}; drops are counted and shown at exit (raise ring_size, or "
                        "check that the exporter keeps up)", new)

    # ------------------------------------------------------------ reporting

    def stats(self) -> dict[str, Any]:
        """Counters: ring (written, read, dropped by reason, high water, size),
        exported, export failures (``unconverted``: those that never reached the exporter),
        function spans, truncations, redactions,
        governor and runtime state."""
        out: dict[str, Any] = dict(self._ring.counters())
        out.update(
            exported=self._exported,
            export_failures=self._export_failures + self._unconverted,
            unconverted=self._unconverted,
            failed_by_reason=dict(self._failed_by_reason),
            queued_at_shutdown=self._queued_at_shutdown,
            submitted=self._submitted,
            unsampled=self._unsampled,
            forks=self._forks,
            dropped_at_fork=self._dropped_at_fork,
            workers_alive=sum(t.is_alive() for t in self._threads),
        )
        correlator = self._correlator
        out.update(correlator.stats() if correlator else {"function_spans": 0, "values_truncated": 0})
        out["values_redacted"] = redact.count()
        out.update(runtime.stats())
        return out

    def _register_metrics(self, meter_provider: Any) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        meter = meter_provider.get_meter("scope_otel.capture")
        me = weakref.ref(self)

        def _gauge(key: str):
            def cb(_options: CallbackOptions):
                proc = me()
                return [Observation(proc.stats()[key])] if proc is not None else []

            return cb

        meter.create_observable_counter("scope_otel.spans.exported", [_gauge("exported")], unit="{span}")
        meter.create_observable_counter("scope_otel.spans.dropped", [_gauge("dropped")], unit="{span}")
        meter.create_observable_gauge("scope_otel.queue.size", [_gauge("size")], unit="{span}")


def _record_types() -> frozenset:
    types: set = {tuple}  # the pure-Python twin's record
    try:
        from scope_otel.capture._speedups import Call

        types.add(Call)
    except ImportError:
        pass
    return frozenset(types)


_RECORD_TYPES = _record_types()


def _leave_signals_to_the_program() -> None:
    """Block SIGTERM and SIGINT in this (scope-otel's) thread and the threads it starts.

    Python runs signal handlers in the main thread only; a signal the kernel
    delivers to another thread just sets a flag, and a main thread blocked in
    C (a ``multiprocessing`` lock, ``sem_wait``) never looks at it.  With the
    default action that did not matter (the process dies whichever thread
    gets it); with a Python handler (the program's, or scope-otel's own for
    SIGTERM) it would hang.  Blocked here, the kernel picks another thread.
    """
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    except (AttributeError, ValueError, OSError):  # not POSIX
        pass


def _noop(_span: Any) -> None:
    return None

