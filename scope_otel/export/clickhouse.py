"""ClickHouseSpanExporter: spans into ClickHouse, embedded chDB by default.

Usage::

    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from scope_otel.export import ClickHouseSpanExporter

    exporter = ClickHouseSpanExporter(".scope-otel")              # embedded chDB
    exporter = ClickHouseSpanExporter("http://ch:8123", database="otel")
    provider.add_span_processor(BatchSpanProcessor(exporter))

``scope-otel run`` does this for you (``traces_exporter = clickhouse``, the
default, with ``store`` and ``database`` from the configuration).

What it writes: ``otel_traces`` (the OpenTelemetry Collector's clickhouseexporter
layout, so the Collector and scope-otel can share tables and Grafana's
ClickHouse data source reads them), ``otel_traces_trace_id_ts`` through its
materialized view, and ``scope_events`` (arguments, return values,
exceptions, state changes and messages of function spans).  The schema is
created or migrated on first use (``schemas/ch_*.sql``).

How it writes: each batch is encoded once into ClickHouse Native blocks (by
the C accelerator ``store._chnative`` where it is built, see ``store.rows``).  A
server gets them over HTTP directly (retried with backoff, spooled on disk
while unreachable, replayed when it answers).  An embedded store is never
opened by the application: batches go to the store's spool and a separate
store-writer process owns chDB and writes them (``embedded="process"``, the
default; see ``store.engine`` for why: chDB and ``fork()`` do not mix, and
one process at a time may open a store).  ``embedded="inprocess"`` opens
chDB in this process instead, for programs that never fork (``scope-otel
collect``, benchmarks, tests).

Options (keyword arguments):

``ttl_days`` (0: keep forever), ``cluster`` (``ON CLUSTER`` name, servers),
``replicated`` (ReplicatedMergeTree, servers), ``max_value_chars`` (65536;
longer attribute values are cut and counted), ``retries`` (3) and
``backoff_s`` (0.2, doubled per retry) for a server that does not answer,
``spool`` (True; for servers: park batches on disk while unreachable — the
embedded path always queues on disk), ``spool_dir``, ``spool_max_bytes`` (1 GiB), ``embedded``
(``"process"`` or ``"inprocess"``), ``idle_close_s`` (2.0: how long an
in-process store stays open when idle), ``connect_timeout_s`` (5),
``timeout_s`` (30).

Nothing here raises into the application: a server that is down, a store
owned by another process, or a batch the store rejects is retried, spooled
or dropped, counted in :meth:`stats` and logged once per kind.  Credentials
never appear in logs (``target.display`` masks the password).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from scope_otel.store.engine import SERVER_INSERT_SETTINGS, Backend, StoreBusy, StoreUnavailable
from scope_otel.store.rows import Batch
from scope_otel.store.migrations import SchemaOptions
from scope_otel.store.target import Target, parse

_log = logging.getLogger("scope_otel.export.clickhouse")

#: What :meth:`ClickHouseSpanExporter.stats` counts.
COUNTERS = (
    "spans_written",       # otel_traces rows this process wrote (its own batches or queued ones)
    "events_written",      # scope_events rows, likewise
    "spans_queued",        # spans handed to the spool for the store owner (the embedded path)
    "spans_spooled",       # spans parked because the server was unreachable or the store busy
    "batches_replayed",    # spooled batches this process wrote later
    "spans_dropped",       # lost: spool full or disabled, rejected, unreadable, after shutdown
    "spool_dropped",       # of those: queued spans dropped, oldest first, to keep within spool_max_mb or a full disk
    "batches_rejected",    # the store refused the data itself
    "retries",
    "values_truncated",    # attribute values cut to max_value_chars
    "values_escaped",      # strings that were not valid UTF-8, stored with \xNN escapes
    "store_busy",          # embedded store owned by another process when this process wanted it
    "store_unavailable",   # server unreachable at export time
)


class ClickHouseSpanExporter(SpanExporter):
    """A ``SpanExporter`` writing to ClickHouse; see the module docstring."""

    def __init__(self, url: str = ".scope-otel", database: str | None = None, **options: Any) -> None:
        self.target: Target = parse(url, database)
        schema = SchemaOptions(
            ttl_days=int(options.pop("ttl_days", 0)),
            cluster=options.pop("cluster", None),
            replicated=bool(options.pop("replicated", False)),
        )
        self.max_value_chars = int(options.pop("max_value_chars", 65536))
        self.retries = int(options.pop("retries", 3))
        self.backoff_s = float(options.pop("backoff_s", 0.2))
        self.spool_enabled = bool(options.pop("spool", True))
        self.embedded = options.pop("embedded", "process")
        if self.embedded not in ("process", "inprocess"):
            raise ValueError(f"embedded must be 'process' or 'inprocess', not {self.embedded!r}")
        self._backend = Backend(
            self.target,
            schema=schema,
            spool_dir=options.pop("spool_dir", None),
            spool_max_bytes=int(options.pop("spool_max_bytes", 1 << 30)),
            idle_close_s=float(options.pop("idle_close_s", 2.0)),
            connect_timeout_s=float(options.pop("connect_timeout_s", 5.0)),
            timeout_s=float(options.pop("timeout_s", 30.0)),
        )
        if options:
            raise TypeError(f"ClickHouseSpanExporter: unknown option(s) {', '.join(sorted(options))}")
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._counts_lock = threading.Lock()
        self._logged: set[str] = set()
        self._down_until = 0.0
        self._down_for = 0.0
        self._shutdown = False
        self.last_failure: str | None = None

    # -- SpanExporter ---------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            batch = Batch(self.max_value_chars)
            batch.add_spans(spans)
        except Exception as exc:  # a span we cannot read: our bug, never the app's problem
            self._count(spans_dropped=len(spans))
            self._log_once("convert", "scope-otel: could not convert spans for ClickHouse: %s", exc)
            return SpanExportResult.FAILURE
        return self._deliver(batch)

    def export_otlp(self, request: Any) -> SpanExportResult:
        """Write an OTLP ``ExportTraceServiceRequest`` (the ``scope-otel collect`` path)."""
        try:
            batch = Batch(self.max_value_chars)
            batch.add_otlp(request)
        except Exception as exc:
            self._log_once("convert-otlp", "scope-otel: malformed OTLP request: %s", exc)
            return SpanExportResult.FAILURE
        if not len(batch):
            return SpanExportResult.SUCCESS
        return self._deliver(batch)

    def export_rows(self, parts: list) -> bool:
        """Write rows of scope-otel's own tables (``(table, columns, native, rows)`` parts, e.g. the
        per-function statistics of ``store.function_stats``) the way span batches travel: over HTTP
        to a server, else through the spool to the store's owner.  Also after :meth:`shutdown`: a
        process writes its last statistics as it ends.  False when they could not be queued."""
        if not parts:
            return True
        if self.target.kind == "http":
            try:
                self._backend.run(lambda client: self._insert_parts(client, parts))
                return True
            except Exception:  # unreachable or refused: parked on disk like spans
                pass
        try:
            if not self._backend.spool.put(parts):
                return False
            if self.target.kind == "chdb" and self.embedded == "process":
                self._backend.ensure_owner(force=True)
        except Exception as exc:
            self._log_once("rows", "scope-otel: cannot queue rows for %s: %s", self.target.display, exc)
            return False
        return True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until this store's spool is written (embedded: by its owner); True when empty."""
        if self._shutdown:
            return True
        deadline = time.monotonic() + timeout_millis / 1000.0
        while self._backend.spool.pending():
            if time.monotonic() >= deadline:
                return False
            try:
                if self.target.kind == "http" or self.embedded == "inprocess":
                    self._write_spool()
                else:
                    self._backend.ensure_owner(force=True)
            except (StoreBusy, StoreUnavailable):
                pass
            except Exception:
                return False
            time.sleep(0.02)
        return True

    def shutdown(self) -> None:
        """Stop exporting.  Queued batches stay on disk for the store's owner (started if needed)."""
        self._shutdown = True
        try:
            if self.target.kind == "chdb" and self._backend.spool.pending():
                self._backend.ensure_owner(force=True)
            self._backend.close()
        except Exception:
            pass

    def stats(self) -> dict[str, int]:
        """:data:`COUNTERS` plus ``spool_pending`` (batches waiting on disk)."""
        with self._counts_lock:
            out = dict(self._counts)
        out["batches_replayed"] = self._backend.batches_replayed
        out["spans_written"] += self._backend.rows_written.get("otel_traces", 0)
        out["events_written"] += self._backend.rows_written.get("scope_events", 0)
        out["spool_pending"] = len(self._backend.spool.pending())
        return out

    # -- delivery ---------------------------------------------------------------

    def _deliver(self, batch: Batch) -> SpanExportResult:
        if self._shutdown:
            self._count(spans_dropped=len(batch))
            self.last_failure = "the exporter was already shut down"
            return SpanExportResult.FAILURE
        try:
            parts = batch.encode()
        except Exception as exc:
            self._count(spans_dropped=len(batch), batches_rejected=1)
            self._log_once("encode", "scope-otel: could not encode a batch for ClickHouse: %s", exc)
            return SpanExportResult.FAILURE
        self._count(values_truncated=batch.truncated, values_escaped=batch.escaped)
        if self.target.kind == "http":
            return self._deliver_http(batch, parts)
        if not self._queue(parts, len(batch), "spans_queued"):
            return SpanExportResult.FAILURE
        if self.embedded == "inprocess":
            try:
                if not self._backend.engine_open():
                    self._write_spool()
                # else: this process' store keeper writes the queue within ~50 ms, many
                # batches per INSERT (one INSERT per batch would cap chDB at a few
                # thousand spans/s: each INSERT has a fixed cost of several ms).
            except StoreBusy:
                self._count(store_busy=1)
                self._backend.ensure_owner()
            except Exception as exc:
                self._log_once("inprocess", "scope-otel: writing to %s failed: %s", self.target.display, exc)
        else:
            self._backend.ensure_owner()
        return SpanExportResult.SUCCESS

    def _deliver_http(self, batch: Batch, parts: list) -> SpanExportResult:
        if time.monotonic() < self._down_until:  # known down: do not stall the exporter thread
            self._count(store_unavailable=1)
            return self._park(parts, len(batch))
        attempt = 0
        while True:
            try:
                self._backend.run(lambda client: self._insert_parts(client, parts))
            except StoreUnavailable as exc:
                if attempt < self.retries:
                    attempt += 1
                    self._count(retries=1)
                    time.sleep(self.backoff_s * (2 ** (attempt - 1)))
                    continue
                self._down_for = min(max(self._down_for * 2, 1.0), 30.0)
                self._down_until = time.monotonic() + self._down_for
                self._count(store_unavailable=1)
                self._log_once("down", "scope-otel: ClickHouse unreachable, spooling batches: %s", exc)
                return self._park(parts, len(batch))
            except Exception as exc:
                self._count(batches_rejected=1, spans_dropped=len(batch))
                self._log_once("rejected", "scope-otel: %s rejected a batch of %d spans: %s",
                               self.target.display, len(batch), self.target.scrub(str(exc)[:300]))
                return SpanExportResult.FAILURE
            self._down_for = 0.0
            self._count(spans_written=len(batch), events_written=batch.event_count)
            return SpanExportResult.SUCCESS

    def _insert_parts(self, client: Any, parts: list) -> None:
        for table, columns, data, _rows in parts:
            client.raw_insert(f"{self.target.database}.{table}", columns, insert_block=data, fmt="Native",
                              settings=SERVER_INSERT_SETTINGS)

    def _write_spool(self) -> None:
        self._backend.run(lambda client: None)  # opening the store writes the spool

    def _park(self, parts: list, spans: int) -> SpanExportResult:
        return SpanExportResult.SUCCESS if self._queue(parts, spans, "spans_spooled") else SpanExportResult.FAILURE

    def _queue(self, parts: list, spans: int, counter: str) -> bool:
        if self.spool_enabled or self.target.kind == "chdb":
            spool = self._backend.spool
            before = spool.dropped_spans
            try:
                if spool.put(parts):
                    self._count(**{counter: spans})
                    return True
                self._log_once("spool-full", "scope-otel: a batch larger than the whole spool %s (%.1f MB) was dropped",
                               spool.folder, spool.max_bytes / (1 << 20))
            except Exception as exc:
                self._log_once("spool-error", "scope-otel: cannot write spool %s: %s", spool.folder, exc)
            finally:
                older = spool.dropped_spans - before
                if older:
                    self._count(spans_dropped=older, spool_dropped=older)
                    self._log_once("spool-oldest", "scope-otel: spool %s is full (%.1f MB, or the disk): dropping the "
                                   "oldest batches, counted in spool_dropped", spool.folder, spool.max_bytes / (1 << 20))
        self._count(spans_dropped=spans)
        return False

    # -- bookkeeping ---------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._counts_lock:
            for key, delta in deltas.items():
                self._counts[key] += delta

    def _log_once(self, kind: str, message: str, *args: Any) -> None:
        # why the last batch failed, for the span processor's count by reason
        self.last_failure = (message % args).replace("scope-otel: ", "", 1)[:200]
        if kind not in self._logged:
            self._logged.add(kind)
            _log.warning(message, *args)
