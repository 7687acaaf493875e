"""What the program's own functions did, written into the store in every run: the feed of
``scope-otel plan --from-store``.

The span processor's worker counts each function record it exports
(:mod:`scope_otel.capture.tally`: calls, errors, time, whether under a
request).  Here a thread of each process turns those counts into rows of the
store's ``scope_function_stats`` table every :data:`INTERVAL_S` seconds, and
:func:`flush` writes the last window as the process ends (exit, SIGTERM, a
``multiprocessing`` child's end: :mod:`.ending` calls it once the span
processor has drained), so a server stopped by SIGTERM and each of its
gunicorn workers leave their counts.  A window also says how much CPU time
the program used in it and what recording cost (the records at the cost the
overhead governor measured per record, plus this process' spans' share of the
store writer's CPU), so the planner prices a function by its
calls per second of the program's CPU.

Only with the ClickHouse exporter (the default): over OTLP alone there is no
store to write to.  Rows that could not be queued are counted and said once.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from scope_otel import notice

#: seconds between two windows written by a running process
INTERVAL_S = 30.0
#: a window in which nothing was recorded and the program used less CPU than this is not written
IDLE_CPU_S = 0.001


class Observer:
    """Writes one process' windows of per-function statistics through ``exporter.export_rows``."""

    def __init__(self, exporter: Any, processor: Any, service: str) -> None:
        self.exporter = exporter
        self.processor = processor
        self.service = service
        self.host = socket.gethostname()
        self.rows_written = 0
        self.rows_lost = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._begin()

    def _begin(self) -> None:
        self._pid = os.getpid()
        self._start_ns = time.time_ns()
        self._cpu0 = time.process_time()
        self._read0 = self._read()
        self._helpers0 = self._helpers()

    @staticmethod
    def _helpers() -> float:
        from scope_otel.capture import runtime

        try:
            return runtime.governor.helpers_cpu_s()
        except Exception:
            return 0.0

    def _read(self) -> int:
        """Records the span processor has taken from its ring so far (function calls and spans)."""
        try:
            return int(self.processor.stats().get("read", 0))
        except Exception:
            return 0

    def start(self) -> None:
        threading.Thread(target=self._run, name="scope-otel-observe", daemon=True).start()

    def after_fork(self) -> None:
        """A forked child (a gunicorn worker) starts its own windows and thread."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.rows_written = self.rows_lost = 0
        self._begin()
        self.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from scope_otel.capture import runtime

        runtime.disable_current_thread()
        while not self._stop.wait(INTERVAL_S):
            try:
                self.flush()
            except Exception as exc:  # never into the program; said once
                notice.tell("observe-failed", f"per-function statistics not written: {exc}")

    def flush(self) -> int:
        """Write the window since the last one; returns the rows written."""
        from scope_otel.capture import runtime, tally
        from scope_otel.plan import LEVELS
        from scope_otel.store import function_stats

        with self._lock:
            if self._pid != os.getpid():  # at-fork hooks did not run
                self._begin()
            counts, records = tally.take()
            now, cpu, read, helpers = time.time_ns(), time.process_time(), self._read(), self._helpers()
            start, cpu0, read0, helpers0 = self._start_ns, self._cpu0, self._read0, self._helpers0
            self._start_ns, self._cpu0, self._read0, self._helpers0 = now, cpu, read, helpers
            others = max(read - (read0 if read >= read0 else 0) - records, 0)
            recording_s = (records + others) * runtime.governor.per_record_us() / 1e6
            program_s = max((cpu - cpu0) - recording_s, 0.0)
            # the store writer works for it in a process of its own: this process' spans' share of it
            recording_s += max(helpers - helpers0, 0.0)
            if not records and program_s < IDLE_CPU_S:
                return 0
            rows = []
            levels = runtime.LEVELS
            for fid in range(len(levels)):
                c = counts.get(fid)
                if c is None and levels[fid] <= 0:
                    continue  # neither recorded in this window nor able to be
                module, qualname = runtime.function_info(fid)[:2]
                c = c or [0, 0.0, 0, 0, 0, 0]
                rows.append((now, start, self.service, self.host, self._pid, module, qualname,
                             LEVELS[max(levels[fid], 0)], c[tally.RECORDS], float(c[tally.CALLS]),
                             c[tally.ERRORS], int(c[tally.DURATION_NS]), c[tally.ON_REQUEST], c[tally.ENTRIES],
                             int(program_s * 1e9), int(recording_s * 1e9), records, others))
            if not rows:
                return 0
            try:
                ok = self.exporter.export_rows(function_stats.encode(rows))
            except Exception:
                ok = False
            if ok:
                self.rows_written += len(rows)
                return len(rows)
            self.rows_lost += len(rows)
            notice.tell("observe-lost", f"{len(rows)} rows of per-function statistics could not be "
                        "queued for the store (`plan --from-store` will not see them)", len(rows))
            return 0


def _clickhouse(destinations: list) -> Any:
    for destination in destinations or ():
        exporter = getattr(destination, "exporter", destination)  # export.factory.Destination wraps it
        if callable(getattr(exporter, "export_rows", None)):
            return exporter
    return None


def install(state: dict[str, Any]) -> None:
    """Start writing per-function statistics, when the pipeline has a ClickHouse store."""
    exporter = _clickhouse(state.get("destinations"))
    processor = state.get("processor")
    if exporter is None or processor is None:
        return
    provider = state.get("provider")
    service = "unknown_service"
    if provider is not None:
        service = str(provider.resource.attributes.get("service.name", service))
    # Imported now, not at exit: its dataclass runs exec(), and an exec() in an exit handler makes
    # CPython forget an unhandled KeyboardInterrupt (the process would end with status 1, not by SIGINT).
    from scope_otel.store import function_stats  # noqa: F401

    observer = Observer(exporter, processor, service)
    state["observer"] = observer
    observer.start()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=observer.after_fork)


def flush(state: dict[str, Any]) -> None:
    """The last window of this process (called as it ends, after the span processor drained)."""
    observer = state.get("observer")
    if observer is None:
        return
    observer.stop()
    try:
        observer.flush()
    except Exception as exc:  # the program is ending: say it, do not raise
        notice.write(f"scope-otel: per-function statistics not written at exit: {type(exc).__name__}: {exc}")
