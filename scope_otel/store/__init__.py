"""Read what scope-otel stored: SQL and the correlation views, from Python.

::

    from scope_otel.store import open_store

    store = open_store()                      # config's store/database (.scope-otel, otel)
    store = open_store("http://ch:8123", "otel")
    trace_id = store.last_trace_id()
    for span in store.call_tree(trace_id):    # depth-first, siblings by start time
        print("  " * span["Depth"], span["SpanName"], span["Duration"])
    store.service_edges(); store.function_edges(); store.message_edges()
    store.error_path(trace_id); store.causal_order(trace_id); store.events(trace_id)
    store.query("SELECT count() FROM otel_traces")   # unqualified names: the store's database

Rows are dicts keyed by column name.  An embedded store is opened in this
process; if another process owns it (the store writer of a running
application, another query), the owner is asked to let go and this waits up
to ``wait_s``.  Queued batches are written before every query, so a query
sees everything exported so far.  Trace ids are validated (32 hex digits)
and bound as query parameters, never pasted into SQL.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from scope_otel.store.engine import Backend, StoreBusy, StoreUnavailable
from scope_otel.store.ownership import owner_pid
from scope_otel.store.migrations import SchemaError
from scope_otel.store.target import Target, TargetError, parse

__all__ = ["Store", "QueryResult", "StoreError", "open_store"]

_TRACE_ID = re.compile(r"[0-9a-f]{32}")


class StoreError(RuntimeError):
    """The store cannot answer; the message says what to do."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


class Store:
    """Queries against one ClickHouse store (embedded chDB or a server)."""

    def __init__(self, target: Target, wait_s: float = 15.0) -> None:
        self.target = target
        self.wait_s = wait_s
        self._backend = Backend(target)

    @property
    def database(self) -> str:
        return self.target.database

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        """Run one SQL statement with the store's database as the default database."""
        def run(client: Any) -> QueryResult:
            client.database = self.database
            result = client.query(sql, parameters=parameters or None)
            return QueryResult(list(result.column_names), [tuple(r) for r in result.result_rows])

        return self._run(run)

    def call_tree(self, trace_id: str) -> list[dict[str, Any]]:
        """Spans of a trace, depth-first with ``Depth`` and ``Path``."""
        return self._view("scope_call_tree", trace_id, "ORDER BY Path")

    def error_path(self, trace_id: str) -> list[dict[str, Any]]:
        """For each failing span: the hops up to the root (``Hops`` 0 = the failing span)."""
        return self._view("scope_error_path", trace_id, "ORDER BY ErrorSpanId, Hops")

    def causal_order(self, trace_id: str) -> list[dict[str, Any]]:
        """Spans and scope events of a trace in causal (HLC, else time) order."""
        return self._view("scope_causal_order", trace_id, "ORDER BY OrderKey, Timestamp, Seq")

    def events(self, trace_id: str) -> list[dict[str, Any]]:
        """``scope_events`` rows of a trace (args, returns, exceptions, state, messages)."""
        _check_trace_id(trace_id)
        return self.query(
            f"SELECT SpanId, Kind, Name, Value, Seq, Timestamp, Attributes FROM `{self.database}`.scope_events "
            "WHERE TraceId = {tid:String} ORDER BY SpanId, Seq, Timestamp",
            {"tid": trace_id},
        ).dicts()

    def service_edges(self) -> list[dict[str, Any]]:
        return self.query(f"SELECT * FROM `{self.database}`.scope_service_edges ORDER BY Calls DESC").dicts()

    def function_edges(self) -> list[dict[str, Any]]:
        return self.query(f"SELECT * FROM `{self.database}`.scope_function_edges ORDER BY Calls DESC").dicts()

    def message_edges(self) -> list[dict[str, Any]]:
        return self.query(f"SELECT * FROM `{self.database}`.scope_message_edges ORDER BY Messages DESC").dicts()

    def last_trace_id(self) -> str | None:
        """The trace whose root started last."""
        return self._one_trace("ORDER BY Start DESC")

    def slowest_trace_id(self) -> str | None:
        return self._one_trace("ORDER BY DurationNs DESC")

    def close(self) -> None:
        self._backend.close()

    # -- helpers -------------------------------------------------------------

    def _one_trace(self, order: str) -> str | None:
        rows = self.query(f"SELECT TraceId FROM `{self.database}`.scope_traces {order} LIMIT 1").rows
        return rows[0][0] if rows else None

    def _view(self, view: str, trace_id: str, order: str) -> list[dict[str, Any]]:
        _check_trace_id(trace_id)
        return self.query(
            f"SELECT * FROM `{self.database}`.{view}(trace_id = {{tid:String}}) {order}", {"tid": trace_id}
        ).dicts()

    def _run(self, fn: Any) -> Any:
        try:
            return self._backend.run(fn, wait_s=self.wait_s)
        except StoreBusy:
            pid = owner_pid(self.target.path) if self.target.kind == "chdb" else None
            raise StoreError(
                f"{self.target.display} is in use by process {pid or '?'} and was not released within "
                f"{self.wait_s:.0f} s (an owner normally lets go within a second when asked); "
                "retry, or stop the application"
            ) from None
        except (StoreUnavailable, SchemaError) as exc:
            raise StoreError(str(exc)) from None


def open_store(url: str | None = None, database: str | None = None, wait_s: float = 15.0) -> Store:
    """A :class:`Store` for ``url`` (default: the configuration's ``store`` and ``database``)."""
    if url is None or database is None:
        from scope_otel.config import current

        config = current()
        url = url if url is not None else config.store
        database = database if database is not None else config.database
    try:
        return Store(parse(url, database), wait_s=wait_s)
    except TargetError as exc:
        raise StoreError(str(exc)) from None


def _check_trace_id(trace_id: str) -> None:
    if not isinstance(trace_id, str) or not _TRACE_ID.fullmatch(trace_id):
        raise StoreError(f"trace id {trace_id!r} is not 32 lowercase hex digits")
