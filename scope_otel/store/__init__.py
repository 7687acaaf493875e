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
    store.traces(TraceFilter(service="shop", errors=True, text="OutOfStock"))  # newest first

Rows are dicts keyed by column name.  An embedded store is opened in this
process; if another process owns it (the store writer of a running
application, another query), the owner is asked to let go and this waits up
to ``wait_s``.  Queued batches are written before every query, so a query
sees everything exported so far.  Trace ids are validated (32 hex digits)
and bound as query parameters, never pasted into SQL.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any

from scope_otel.store.engine import Backend, StoreBusy, StoreUnavailable
from scope_otel.store.ownership import owner_pid
from scope_otel.store.migrations import SchemaError
from scope_otel.store.target import Target, TargetError, parse

__all__ = ["Store", "QueryResult", "StoreError", "TraceFilter", "open_store"]

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_ERROR = "('STATUS_CODE_ERROR', 'Error')"
_ENTRY_KINDS = "('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER', 'Server', 'Consumer')"
#: A span's SQL as the text search matches it: the expression of otel_traces' idx_sql_text
#: (schemas/ch_007_edges_and_search.sql), spelled the same so the index applies.
#: Up to this many traces matching a text are looked up by id; more, and the text stays a subquery.
_TEXT_TRACES = 10_000
#: A text found in more traces is looked for back from the newest time in these windows, in turn.
_TEXT_WINDOWS_NS = tuple(int(h * 3600e9) for h in (1, 6, 24, 24 * 7))
#: The start of "all time" as the views' plain (all-time) forms spell it.
_ALL_TIME = _dt.datetime(1970, 1, 1, 1)
_SQL_TEXT = "lowerUTF8(concat(SpanAttributes['db.query.text'], '\\n', SpanAttributes['db.statement']))"


@dataclass
class TraceFilter:
    """What :meth:`Store.traces` selects; every field is optional.

    ``name`` matches (case-insensitively, as a substring) the name of the
    trace's root or of any entry span (SERVER/CONSUMER: a route such as
    ``POST /orders``); ``min_duration_ms`` applies to that same span, as
    Jaeger's search does; ``span`` selects traces holding a span of exactly
    that name anywhere (what a call-graph edge leads to); ``text`` is a
    substring of a captured value (argument, return value, exception type or
    message, state change) or of a span's SQL.
    """

    service: str | None = None
    name: str | None = None
    errors: bool = False
    min_duration_ms: float | None = None
    since: _dt.datetime | None = None
    until: _dt.datetime | None = None
    text: str | None = None
    span: str | None = None
    limit: int = 50


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

    def query(self, sql: str, parameters: dict[str, Any] | None = None, *, replace_invalid: bool = False) -> QueryResult:
        """Run one SQL statement with the store's database as the default database.

        ``replace_invalid``: strings that are not valid UTF-8 come back with
        U+FFFD in place of the bad bytes (the client's default shows such a
        string as hex, which hides what was recorded).
        """
        def run(client: Any) -> QueryResult:
            client.database = self.database
            if replace_invalid:
                result = client.query(sql, parameters=parameters or None, query_formats={"String": "bytes"})
                return QueryResult(list(result.column_names), [_text(tuple(r)) for r in result.result_rows])
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

    def sql_texts(self, trace_id: str) -> dict[str, str]:
        """Span id -> the statement a database span of the trace ran."""
        _check_trace_id(trace_id)
        rows = self.query(
            f"SELECT SpanId, if(SpanAttributes['db.query.text'] != '', SpanAttributes['db.query.text'], "
            f"SpanAttributes['db.statement']) AS Sql FROM `{self.database}`.otel_traces "
            "WHERE TraceId = {tid:String} AND Sql != ''", {"tid": trace_id}, replace_invalid=True).rows
        return dict(rows)

    def service_edges(self, since: _dt.datetime | None = None) -> list[dict[str, Any]]:
        """Calls between services (all time, or by spans started at or after ``since``, UTC)."""
        return self._edges("scope_service_edges", since)

    def function_edges(self, since: _dt.datetime | None = None) -> list[dict[str, Any]]:
        """Calls between functions (all time, or by spans started at or after ``since``, UTC)."""
        return self._edges("scope_function_edges", since)

    def _edges(self, view: str, since: _dt.datetime | None, order: str = "Calls") -> list[dict[str, Any]]:
        if since is None:
            return self.query(f"SELECT * FROM `{self.database}`.{view} ORDER BY {order} DESC",
                              replace_invalid=True).dicts()
        return self.query(
            f"SELECT * FROM `{self.database}`.{view}_between(since = fromUnixTimestamp64Nano({{since:Int64}}), "
            f"until = '2262-01-01 00:00:00') ORDER BY {order} DESC", {"since": _epoch_ns(since)},
            replace_invalid=True).dicts()

    def message_edges(self, since: _dt.datetime | None = None) -> list[dict[str, Any]]:
        """Messages between producers and consumers (all time, or consumed at or after ``since``, UTC)."""
        # all time through the parameterized view itself: the plain view wraps it in a second one,
        # which took ~1.4 times as long to answer on 5 M spans
        return self._edges("scope_message_edges", since or _ALL_TIME, order="Messages")

    def traces(self, where: TraceFilter | None = None) -> list[dict[str, Any]]:
        """Traces matching ``where``, newest first: one summary row each.

        Columns: TraceId, Start, DurationNs, Spans, Errors, Services (list),
        RootService, RootName, Entry (the first SERVER/CONSUMER span's name).
        Two steps, like Jaeger's search: the newest ``4 × limit`` matching
        root and entry spans (or, with only errors or a span name asked for,
        the matching spans themselves) give up to ``limit`` trace ids, then
        only those traces are summarised from ``scope_spans_by_trace`` (a
        primary-key range each).  SQL text is searched in CLIENT spans.  A
        text is looked for first; when it matches up to ``_TEXT_TRACES``
        traces, their candidate spans are read by trace id from
        ``scope_spans_by_trace``; when it matches more, it is looked for in the
        last hour, 6 hours, day, week, then all time, until ``limit`` traces
        are found (a trace of a longer window whose entry span, not root,
        started in a shorter one can be left out: its match came before).
        """
        where = where or TraceFilter()
        db = self.database
        params: dict[str, Any] = {}
        span_time: list[str] = []
        if where.since is not None:
            span_time.append("Timestamp >= fromUnixTimestamp64Nano({since:Int64})")
            params["since"] = _epoch_ns(where.since)
        if where.until is not None:
            span_time.append("Timestamp <= fromUnixTimestamp64Nano({until:Int64})")
            params["until"] = _epoch_ns(where.until)
        inner_time = (" AND " + " AND ".join(span_time)) if span_time else ""
        entry: list[str] = []  # conditions on the root or entry span
        if where.service:
            entry.append("ServiceName = {service:String}")
            params["service"] = where.service
        if where.name:
            entry.append("positionCaseInsensitiveUTF8(SpanName, {name:String}) > 0")
            params["name"] = where.name
        if where.min_duration_ms:
            entry.append("Duration >= {min_ns:UInt64}")
            params["min_ns"] = int(where.min_duration_ms * 1e6)
        whole: list[str] = []  # conditions on any span of the trace: (as a row filter, as a trace filter)
        if where.errors:
            whole.append(f"StatusCode IN {_ERROR}")
        if where.span:
            params["span"] = where.span
            whole.append("SpanName = {span:String}")
        cond = [*span_time]
        if entry or not whole:  # empty() reads only the lengths of ParentSpanId, not its bytes
            cond += [f"(empty(ParentSpanId) OR SpanKind IN {_ENTRY_KINDS})", *entry]
        else:  # the matching spans themselves are the candidates: no join
            cond.append(whole.pop(0))
        for c in whole:
            cond.append(f"TraceId IN (SELECT TraceId FROM `{db}`.otel_traces WHERE {c}{inner_time})")
        table = "otel_traces"
        windows: tuple[int | None, ...] = (None,)  # lower bounds of the candidates' start (ns), tried in turn
        if where.text:
            # the traces whose values or SQL hold the text, first: a rare text (the usual search)
            # matches a few traces, whose candidate spans are then read by trace id from
            # scope_spans_by_trace instead of scanning otel_traces
            params["like"] = "%" + _like_escape(where.text) + "%"
            params["like_lower"] = params["like"].lower()

            def matching(window: str) -> str:
                return (f"SELECT TraceId FROM `{db}`.scope_events "
                        f"WHERE (Value ILIKE {{like:String}} OR Name ILIKE {{like:String}}){inner_time}{window} "
                        f"UNION ALL SELECT TraceId FROM `{db}`.otel_traces "
                        f"WHERE SpanKind IN ('SPAN_KIND_CLIENT', 'Client') "
                        f"AND {_SQL_TEXT} LIKE {{like_lower:String}}{inner_time}{window}")

            # map lookups rewritten as subcolumns would hide the SQL text from its skip index
            found = [r[0] for r in self.query(
                f"SELECT DISTINCT TraceId FROM ({matching('')}) LIMIT {_TEXT_TRACES + 1} "
                "SETTINGS optimize_functions_to_subcolumns = 0", params).rows]
            if not found:
                return []
            if len(found) <= _TEXT_TRACES:
                params["found"] = found
                cond.append("TraceId IN {found:Array(String)}")
                table = "scope_spans_by_trace"
            else:
                # a common text: only its newest traces are shown, so they are looked for back
                # from now (or until) in windows that widen, instead of among every match
                cond.append(f"TraceId IN ({matching(' AND Timestamp >= fromUnixTimestamp64Nano({window:Int64})')})")
                end = _epoch_ns(where.until) if where.until is not None else _epoch_ns(_dt.datetime.now(_dt.timezone.utc))
                start = params.get("since", 0)
                windows = tuple(end - back for back in _TEXT_WINDOWS_NS if end - back > start) + (start,)
        limit = max(1, min(int(where.limit), 1000))
        # newest candidate spans (a top-N sort, no GROUP BY over the table), then distinct traces
        params["rows"] = limit * 4
        ids: list[str] = []
        for window in windows:
            # a trace whose matching span started before the window started its root before it too,
            # so once the window's candidates hold ``limit`` traces no older match can be newer
            if window is not None:
                params["window"] = window
            ids = []
            for (trace_id,) in self.query(
                    f"SELECT TraceId FROM `{db}`.{table} WHERE {' AND '.join(cond) or '1'}"
                    + (" AND Timestamp >= fromUnixTimestamp64Nano({window:Int64})" if window is not None else "")
                    + " ORDER BY Timestamp DESC LIMIT {rows:UInt32} SETTINGS optimize_functions_to_subcolumns = 1",
                    params).rows:
                if trace_id and trace_id not in ids:
                    ids.append(trace_id)
                    if len(ids) == limit:
                        break
            if len(ids) == limit:
                break
        if not ids:
            return []
        rows = self.query(
            f"""SELECT TraceId,
                   min(Timestamp) AS Start,
                   max(toUnixTimestamp64Nano(Timestamp) + Duration) - min(toUnixTimestamp64Nano(Timestamp)) AS DurationNs,
                   count() AS Spans,
                   countIf(StatusCode IN {_ERROR}) AS Errors,
                   arraySort(groupUniqArray(ServiceName)) AS Services,
                   argMinIf(ServiceName, Timestamp, ParentSpanId = '') AS RootService,
                   argMinIf(SpanName, Timestamp, ParentSpanId = '') AS RootName,
                   argMinIf(SpanName, Timestamp, SpanKind IN {_ENTRY_KINDS}) AS Entry
            FROM (SELECT TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Timestamp, Duration, StatusCode
                  FROM `{db}`.scope_spans_by_trace WHERE TraceId IN {{ids:Array(String)}} LIMIT 1 BY TraceId, SpanId)
            GROUP BY TraceId ORDER BY Start DESC""", {"ids": ids}, replace_invalid=True).dicts()
        return rows

    def services(self) -> list[str]:
        """Service names seen in the store, sorted."""
        return [r[0] for r in self.query(
            f"SELECT DISTINCT ServiceName FROM `{self.database}`.otel_traces ORDER BY ServiceName",
            replace_invalid=True).rows]

    def last_trace_id(self) -> str | None:
        """The trace whose root started last."""
        return self._one_trace("ORDER BY Start DESC")

    def slowest_trace_id(self) -> str | None:
        return self._one_trace("ORDER BY DurationNs DESC")

    def close(self) -> None:
        self._backend.close()

    def keep_open(self, idle_s: float) -> None:
        """Keep an embedded store's engine open until ``idle_s`` seconds pass without a query (default 2).

        Opening the engine costs ~0.5 s, so an interactive reader (the viewer) keeps it
        between requests; another process that asks for the store still gets it within
        ~0.1 s, as from any idle owner.
        """
        self._backend.idle_close_s = float(idle_s)

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


def _epoch_ns(when: _dt.datetime) -> int:
    """Nanoseconds since the epoch; a naive datetime is UTC (whatever the store's time zone)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    delta = when - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _text(value: Any) -> Any:
    """``value`` with every bytes object decoded as UTF-8, bad bytes replaced (tuples, lists, dicts too)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple):
        return tuple(_text(v) for v in value)
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    return value


def _like_escape(text: str) -> str:
    """``text`` as a LIKE pattern matching it literally (``%``, ``_`` and ``\\`` escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _check_trace_id(trace_id: str) -> None:
    if not isinstance(trace_id, str) or not _TRACE_ID.fullmatch(trace_id):
        raise StoreError(f"trace id {trace_id!r} is not 32 lowercase hex digits")
