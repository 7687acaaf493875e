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
created or migrated on first use (see ``schemas/ch_*.sql``).

Options (keyword arguments):

``ttl_days`` (0: keep forever), ``cluster`` (``ON CLUSTER`` name, servers),
``replicated`` (ReplicatedMergeTree, servers), ``max_value_chars`` (65536;
longer attribute values are cut and counted), ``retries`` (3) and
``backoff_s`` (0.2, doubled per retry) for a server that does not answer,
``spool`` (True) and ``spool_dir`` / ``spool_max_bytes`` (256 MiB),
``idle_close_s`` (2.0: how long an idle embedded store stays open),
``timeout_s`` (30).

Nothing here raises into the application: a server that is down, an
embedded store held by another process, or a batch the server rejects is
retried, spooled or dropped, counted in :meth:`stats` and logged once per
kind.  Spooled batches are replayed by whichever process next reaches the
store (``scope-otel query`` included).  chDB is imported on the first export,
never at import time, and never used in a process forked from one that used
it (see ``_ch_backend``).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from scope_otel.export._ch_backend import Backend, StoreBusy, StoreUnavailable
from scope_otel.export._ch_rows import EVENT_COLUMNS, TRACE_COLUMNS, Batch, escape_invalid_text
from scope_otel.export._ch_schema import SchemaOptions
from scope_otel.export._ch_target import Target, parse

_log = logging.getLogger("scope_otel.export.clickhouse")

_TRACE_NAMES = [c[0] for c in TRACE_COLUMNS]
_TRACE_TYPES = [c[1] for c in TRACE_COLUMNS]
_EVENT_NAMES = [c[0] for c in EVENT_COLUMNS]
_EVENT_TYPES = [c[1] for c in EVENT_COLUMNS]

_COUNTERS = (
    "spans_exported",      # rows written to otel_traces (directly or by replay)
    "events_exported",     # rows written to scope_events
    "batches_exported",
    "batches_spooled",     # batches parked on disk (server down or store busy)
    "spans_spooled",
    "batches_replayed",    # spooled batches written later (by this process)
    "spans_dropped",       # lost: spool full/disabled, rejected, after shutdown
    "batches_rejected",    # the store refused the data itself
    "retries",
    "values_truncated",    # attribute values cut to max_value_chars
    "values_escaped",      # strings that were not valid UTF-8, stored with \\xNN escapes
    "store_busy",          # embedded store held by another process at export time
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
        self._backend = Backend(
            self.target,
            schema=schema,
            spool_dir=options.pop("spool_dir", None),
            spool_max_bytes=int(options.pop("spool_max_bytes", 256 << 20)),
            idle_close_s=float(options.pop("idle_close_s", 2.0)),
            drain_interval_s=float(options.pop("drain_interval_s", 5.0)),
            connect_timeout_s=float(options.pop("connect_timeout_s", 5.0)),
            timeout_s=float(options.pop("timeout_s", 30.0)),
            on_replay=self._replay,
        )
        if options:
            raise TypeError(f"ClickHouseSpanExporter: unknown option(s) {', '.join(sorted(options))}")
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._counts_lock = threading.Lock()
        self._logged: set[str] = set()
        self._down_until = 0.0
        self._down_for = 0.0
        self._shutdown = False

    # -- SpanExporter ---------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            batch = Batch(self.max_value_chars)
            batch.add_spans(spans)
        except Exception as exc:  # a span we cannot read: a bug, never the app's problem
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

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Replay the spool now if the store can be reached; True when nothing is left."""
        if self._shutdown:
            return True
        try:
            self._backend.run(lambda client: None, wait_s=min(timeout_millis / 1000.0, 5.0))
        except Exception:
            return False
        return not self._backend.spool.pending()

    def shutdown(self) -> None:
        self._shutdown = True
        try:
            self._backend.close()
        except Exception:
            pass

    def stats(self) -> dict[str, int]:
        """Counters (see ``_COUNTERS``) plus ``spool_pending`` batches on disk."""
        with self._counts_lock:
            out = dict(self._counts)
        out["spool_pending"] = len(self._backend.spool.pending())
        return out

    # -- delivery ---------------------------------------------------------------

    def _deliver(self, batch: Batch) -> SpanExportResult:
        self._count(values_truncated=batch.truncated)
        if self._shutdown:
            self._count(spans_dropped=len(batch))
            return SpanExportResult.FAILURE
        if time.monotonic() < self._down_until:  # known down: do not stall the exporter thread
            return self._park(batch, "store_unavailable")
        attempt = 0
        while True:
            try:
                self._backend.run(lambda client: self._insert(client, batch))
            except StoreBusy:
                return self._park(batch, "store_busy")
            except StoreUnavailable as exc:
                if attempt < self.retries and self.target.kind == "http":
                    attempt += 1
                    self._count(retries=1)
                    time.sleep(self.backoff_s * (2 ** (attempt - 1)))
                    continue
                self._down_for = min(max(self._down_for * 2, 1.0), 30.0)
                self._down_until = time.monotonic() + self._down_for
                self._log_once("down", "scope-otel: ClickHouse unreachable, spooling batches: %s", exc)
                return self._park(batch, "store_unavailable")
            except Exception as exc:
                self._count(batches_rejected=1, spans_dropped=len(batch))
                self._log_once("rejected", "scope-otel: %s rejected a batch of %d spans: %s",
                               self.target.display, len(batch), self.target.scrub(str(exc)[:300]))
                return SpanExportResult.FAILURE
            self._down_for = 0.0
            self._count(batches_exported=1, spans_exported=len(batch), events_exported=batch.event_count)
            return SpanExportResult.SUCCESS

    def _insert(self, client: Any, batch: Batch) -> None:
        self._count(values_escaped=write_batch(client, self.target.database, batch))

    def _replay(self, client: Any, payload: str) -> int:
        batch = Batch.from_json(payload)
        self._insert(client, batch)
        self._count(batches_replayed=1, spans_exported=len(batch), events_exported=batch.event_count)
        return len(batch)

    def _park(self, batch: Batch, reason: str) -> SpanExportResult:
        self._count(**{reason: 1})
        if self.spool_enabled:
            try:
                if self._backend.spool.put(batch.to_json()):
                    self._count(batches_spooled=1, spans_spooled=len(batch))
                    return SpanExportResult.SUCCESS
                self._log_once("spool-full", "scope-otel: spool %s is full; dropping batches",
                               self._backend.spool.folder)
            except Exception as exc:
                self._log_once("spool-error", "scope-otel: cannot write spool %s: %s",
                               self._backend.spool.folder, exc)
        self._count(spans_dropped=len(batch))
        return SpanExportResult.FAILURE

    # -- bookkeeping ---------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._counts_lock:
            for key, delta in deltas.items():
                self._counts[key] += delta

    def _log_once(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            _log.warning(message, *args)


def write_batch(client: Any, database: str, batch: Batch) -> int:
    """Insert ``batch`` into both tables; return how many strings had to be escaped.

    The happy path inserts the columns as built.  Only when clickhouse-connect
    cannot encode a string (lone surrogates) is that table's part of the
    batch scanned, fixed and inserted again (a failed insert writes nothing).
    """
    fixed = 0
    for table, columns, names, types in (
        ("otel_traces", batch.traces, _TRACE_NAMES, _TRACE_TYPES),
        ("scope_events", batch.events, _EVENT_NAMES, _EVENT_TYPES),
    ):
        if not columns or not columns[0]:
            continue
        try:
            client.insert(table, columns, database=database, column_names=names,
                          column_type_names=types, column_oriented=True)
        except (UnicodeEncodeError, UnicodeDecodeError):
            fixed += escape_invalid_text(columns)
            client.insert(table, columns, database=database, column_names=names,
                          column_type_names=types, column_oriented=True)
    return fixed
