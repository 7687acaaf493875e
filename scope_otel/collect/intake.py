"""The bounded queue between ``scope-otel collect``'s receivers and the store.

Receivers :meth:`Intake.offer` each decoded ``ExportTraceServiceRequest``;
one writer thread merges queued requests into larger batches and hands them
to the sink's ``export_otlp(request)`` (``ClickHouseSpanExporter`` in
production).  Memory is bounded by bytes, counting requests both waiting and
being written: when the store falls behind, ``offer`` refuses and the
receiver answers "retry later" (gRPC ``RESOURCE_EXHAUSTED``, HTTP 429)
instead of buffering without limit.  A request is acknowledged once queued;
a later store failure is counted (``stats()["failed_spans"]``) and logged once.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult

_log = logging.getLogger(__name__)


class OTLPSink(Protocol):
    """Where spans go: the ClickHouse exporter's OTLP entry point."""

    def export_otlp(self, request: ExportTraceServiceRequest) -> SpanExportResult: ...


def span_count(request: ExportTraceServiceRequest) -> int:
    """Number of spans in an OTLP request."""
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


class Intake:
    """Byte-bounded queue plus the writer thread that drains it into *sink*.

    *max_bytes* bounds queued plus in-flight request sizes; *batch_bytes*
    is how much the writer merges into one store write.
    """

    def __init__(self, sink: OTLPSink, *, max_bytes: int = 64 << 20, batch_bytes: int = 4 << 20) -> None:
        self._sink = sink
        self.max_bytes = max_bytes
        self._batch_bytes = batch_bytes
        self._queue: collections.deque[tuple[ExportTraceServiceRequest, int, int]] = collections.deque()
        self._cond = threading.Condition()
        self._held_bytes = 0  # queued + being written
        self._writing = False
        self._closed = False
        self._stats = dict.fromkeys(
            ("accepted_requests", "accepted_spans", "rejected_requests", "rejected_spans",
             "written_spans", "failed_spans", "store_writes", "peak_bytes"), 0)
        self._thread: threading.Thread | None = None
        self._warned = False

    def start(self) -> "Intake":
        self._thread = threading.Thread(target=self._run, name="scope-otel-collect-writer", daemon=True)
        self._thread.start()
        return self

    def offer(self, request: ExportTraceServiceRequest, nbytes: int) -> bool:
        """Queue *request* (``nbytes`` on the wire, decompressed); False when full or closed."""
        spans = span_count(request)
        with self._cond:
            # An empty queue always takes one request, however large (the
            # receivers' size limits bound it), so progress is guaranteed.
            if self._closed or (self._held_bytes and self._held_bytes + nbytes > self.max_bytes):
                self._stats["rejected_requests"] += 1
                self._stats["rejected_spans"] += spans
                return False
            self._queue.append((request, nbytes, spans))
            self._held_bytes += nbytes
            self._stats["accepted_requests"] += 1
            self._stats["accepted_spans"] += spans
            self._stats["peak_bytes"] = max(self._stats["peak_bytes"], self._held_bytes)
            self._cond.notify()
            return True

    @property
    def closed(self) -> bool:
        """True once :meth:`close` began: receivers answer "unavailable", not "busy"."""
        return self._closed

    def stats(self) -> dict[str, int]:
        """Counters, plus ``held_bytes`` and ``queued_requests`` now."""
        with self._cond:
            return {**self._stats, "held_bytes": self._held_bytes, "queued_requests": len(self._queue)}

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything accepted has been written (or failed)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout: float = 10.0) -> bool:
        """Refuse new requests, write what is queued, stop the writer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        done = self.drain(timeout)
        if self._thread is not None:
            self._thread.join(max(0.0, timeout))
        return done

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, nbytes, spans = self._take()
                self._writing = True
            ok = self._write(batch)
            with self._cond:
                self._writing = False
                self._held_bytes -= nbytes
                self._stats["store_writes"] += 1
                self._stats["written_spans" if ok else "failed_spans"] += spans
                self._cond.notify_all()

    def _take(self) -> tuple[ExportTraceServiceRequest, int, int]:
        request, nbytes, spans = self._queue.popleft()
        if not self._queue:
            return request, nbytes, spans
        merged = ExportTraceServiceRequest()
        merged.resource_spans.extend(request.resource_spans)
        while self._queue and nbytes + self._queue[0][1] <= self._batch_bytes:
            more, more_bytes, more_spans = self._queue.popleft()
            merged.resource_spans.extend(more.resource_spans)
            nbytes += more_bytes
            spans += more_spans
        return merged, nbytes, spans

    def _write(self, batch: ExportTraceServiceRequest) -> bool:
        try:
            if self._sink.export_otlp(batch) == SpanExportResult.SUCCESS:
                return True
            problem = "the store refused a batch"
        except Exception as exc:
            problem = f"the store raised {type(exc).__name__}: {exc}"
        if not self._warned:
            self._warned = True
            _log.error("scope-otel collect: %s; its spans are dropped and counted (stats failed_spans); "
                       "further failures are only counted", problem)
        return False
