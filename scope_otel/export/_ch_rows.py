"""Turn spans into columnar batches for ``otel_traces`` and ``scope_events``.

Two inputs, one output: SDK ``ReadableSpan`` objects (:meth:`Batch.add_spans`)
and OTLP protobuf requests (:meth:`Batch.add_otlp`) both land in the same
column lists, in the clickhouseexporter's conventions (hex ids, span kind
``SPAN_KIND_SERVER``, status ``STATUS_CODE_ERROR``, attribute values as
strings, arrays and maps as JSON, ``Duration`` in ns).

Function spans of the capture contract are also exploded into ``scope_events``
rows: ``scope.arg.<name>`` and ``scope.return`` attributes, and the
``exception``, ``scope.state_change``, ``scope.send``, ``scope.recv``,
``scope.suspend`` and ``scope.resume`` events.  Exceptions are exploded for
every span, since any instrumentation may record one.

Values are stored exactly, except strings longer than ``max_value_chars``,
which are cut and counted in ``Batch.truncated``.  Odd text (quotes, NUL,
newlines) needs nothing: ClickHouse ``String`` holds any bytes.  Strings that
cannot be UTF-8 encoded (lone surrogates from undecodable input) are escaped
by :func:`escape_invalid_text` when encoding trips over them.  :meth:`Batch.encode`
turns the columns into ClickHouse Native blocks without any connection.
"""
from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
from typing import Any, Iterable, Iterator, Sequence

TRACE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", "Map(LowCardinality(String), String)"),
    ("Duration", "UInt64"),
    ("StatusCode", "LowCardinality(String)"),
    ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"),
    ("Events.Name", "Array(LowCardinality(String))"),
    ("Events.Attributes", "Array(Map(LowCardinality(String), String))"),
    ("Links.TraceId", "Array(String)"),
    ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", "Array(Map(LowCardinality(String), String))"),
)
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("ServiceName", "LowCardinality(String)"),
    ("Function", "String"),
    ("Kind", "LowCardinality(String)"),
    ("Name", "String"),
    ("Value", "String"),
    ("Seq", "UInt32"),
    ("Hlc", "String"),
    ("Attributes", "Map(LowCardinality(String), String)"),
)

_KINDS = ("SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER")
_SDK_KIND = {"INTERNAL": _KINDS[0], "SERVER": _KINDS[1], "CLIENT": _KINDS[2], "PRODUCER": _KINDS[3], "CONSUMER": _KINDS[4]}
_OTLP_KIND = ("SPAN_KIND_UNSPECIFIED",) + _KINDS
_STATUS = {"UNSET": "STATUS_CODE_UNSET", "OK": "STATUS_CODE_OK", "ERROR": "STATUS_CODE_ERROR"}
_OTLP_STATUS = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")

# span event name -> (scope_events Kind, attribute giving Name, attribute giving Value)
_EVENT_KINDS = {
    "exception": ("exception", "exception.type", "exception.message"),
    "scope.state_change": ("state_change", "scope.target", "scope.value"),
    "scope.send": ("send", "messaging.destination.name", "messaging.message.id"),
    "scope.recv": ("recv", "messaging.destination.name", "messaging.message.id"),
    "scope.suspend": ("suspend", "", ""),
    "scope.resume": ("resume", "", ""),
}
_ARG_PREFIX = "scope.arg."


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def _text(value: Any) -> str:
    """An attribute value as the clickhouseexporter stores it: a string."""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), default=_json_default, ensure_ascii=False)
    return str(value)


class Batch:
    """Column lists for one insert into each table, plus what was cut."""

    def __init__(self, max_value_chars: int = 65536) -> None:
        self.max_value_chars = max_value_chars
        self.traces: list[list] = [[] for _ in TRACE_COLUMNS]
        self.events: list[list] = [[] for _ in EVENT_COLUMNS]
        self.truncated = 0
        self.escaped = 0
        self._resources: dict[int, tuple[Any, dict[str, str], str]] = {}

    def __len__(self) -> int:
        return len(self.traces[0])

    @property
    def event_count(self) -> int:
        return len(self.events[0])

    # -- values -----------------------------------------------------------

    def _cut(self, text: str) -> str:
        self.truncated += 1
        return text[: self.max_value_chars]

    def _map(self, attributes: Any) -> dict[str, str]:
        """Attributes as ``{str: str}``, long values cut (and counted)."""
        if not attributes:
            return {}
        limit = self.max_value_chars
        out = {}
        for key, value in attributes.items():
            if type(value) is not str:
                value = _text(value)
            if len(value) > limit:
                value = self._cut(value)
            out[key] = value
        return out

    def _resource(self, resource: Any) -> tuple[dict[str, str], str]:
        # Spans of one provider share a Resource object: convert it once.
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1], cached[2]
        attrs = self._map(resource.attributes if resource is not None else None)
        service = attrs.get("service.name", "")
        self._resources[id(resource)] = (resource, attrs, service)
        return attrs, service

    # -- SDK spans --------------------------------------------------------

    def add_spans(self, spans: Iterable[Any]) -> None:
        """Append SDK ``ReadableSpan`` objects."""
        (ts, tid, sid, psid, tstate, name, kind, service, rattrs, scope_name, scope_version, sattrs,
         duration, status, status_msg, ev_ts, ev_name, ev_attrs, ln_tid, ln_sid, ln_state, ln_attrs) = self.traces
        for span in spans:
            ctx = span.context
            trace_id = f"{ctx.trace_id:032x}"
            span_id = f"{ctx.span_id:016x}"
            parent = span.parent
            parent_id = f"{parent.span_id:016x}" if parent is not None else ""
            start = span.start_time or 0
            end = span.end_time or start
            res_attrs, svc = self._resource(span.resource)
            attrs = self._map(span.attributes)
            scope = span.instrumentation_scope
            st = span.status
            ts.append(start)
            tid.append(trace_id)
            sid.append(span_id)
            psid.append(parent_id)
            tstate.append(ctx.trace_state.to_header() if ctx.trace_state else "")
            name.append(span.name)
            kind.append(_SDK_KIND.get(span.kind.name, "SPAN_KIND_UNSPECIFIED"))
            service.append(svc)
            rattrs.append(res_attrs)
            scope_name.append(scope.name if scope is not None else "")
            scope_version.append((scope.version or "") if scope is not None else "")
            sattrs.append(attrs)
            duration.append(max(0, end - start))
            status.append(_STATUS.get(st.status_code.name, "STATUS_CODE_UNSET"))
            status_msg.append(st.description or "")
            events = span.events
            if events:
                event_rows = [(e.timestamp, e.name, self._map(e.attributes)) for e in events]
                ev_ts.append([e[0] for e in event_rows])
                ev_name.append([e[1] for e in event_rows])
                ev_attrs.append([e[2] for e in event_rows])
            else:
                event_rows = ()
                ev_ts.append([])
                ev_name.append([])
                ev_attrs.append([])
            links = span.links
            if links:
                ln_tid.append([f"{l.context.trace_id:032x}" for l in links])
                ln_sid.append([f"{l.context.span_id:016x}" for l in links])
                ln_state.append([l.context.trace_state.to_header() if l.context.trace_state else "" for l in links])
                ln_attrs.append([self._map(l.attributes) for l in links])
            else:
                ln_tid.append([])
                ln_sid.append([])
                ln_state.append([])
                ln_attrs.append([])
            if event_rows or "scope.kind" in attrs:
                self._explode(start, end, trace_id, span_id, parent_id, svc, attrs, event_rows)

    # -- OTLP protobuf ----------------------------------------------------

    def add_otlp(self, request: Any) -> None:
        """Append every span of an ``ExportTraceServiceRequest``."""
        (ts, tid, sid, psid, tstate, name, kind, service, rattrs, scope_name, scope_version, sattrs,
         duration, status, status_msg, ev_ts, ev_name, ev_attrs, ln_tid, ln_sid, ln_state, ln_attrs) = self.traces
        for resource_spans in request.resource_spans:
            res_attrs = self._kv(resource_spans.resource.attributes)
            svc = res_attrs.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                sc_name = scope_spans.scope.name
                sc_version = scope_spans.scope.version
                for span in scope_spans.spans:
                    trace_id = span.trace_id.hex()
                    span_id = span.span_id.hex()
                    parent_id = span.parent_span_id.hex()
                    start = span.start_time_unix_nano
                    end = span.end_time_unix_nano or start
                    attrs = self._kv(span.attributes)
                    ts.append(start)
                    tid.append(trace_id)
                    sid.append(span_id)
                    psid.append(parent_id)
                    tstate.append(span.trace_state)
                    name.append(span.name)
                    kind.append(_OTLP_KIND[span.kind] if 0 <= span.kind < len(_OTLP_KIND) else "")
                    service.append(svc)
                    rattrs.append(res_attrs)
                    scope_name.append(sc_name)
                    scope_version.append(sc_version)
                    sattrs.append(attrs)
                    duration.append(max(0, end - start))
                    code = span.status.code
                    status.append(_OTLP_STATUS[code] if 0 <= code < 3 else "")
                    status_msg.append(span.status.message)
                    event_rows = [(e.time_unix_nano, e.name, self._kv(e.attributes)) for e in span.events]
                    ev_ts.append([e[0] for e in event_rows])
                    ev_name.append([e[1] for e in event_rows])
                    ev_attrs.append([e[2] for e in event_rows])
                    ln_tid.append([l.trace_id.hex() for l in span.links])
                    ln_sid.append([l.span_id.hex() for l in span.links])
                    ln_state.append([l.trace_state for l in span.links])
                    ln_attrs.append([self._kv(l.attributes) for l in span.links])
                    if event_rows or "scope.kind" in attrs:
                        self._explode(start, end, trace_id, span_id, parent_id, svc, attrs, event_rows)

    def _kv(self, key_values: Sequence[Any]) -> dict[str, str]:
        return self._map({kv.key: _any_value(kv.value) for kv in key_values})

    # -- scope_events ------------------------------------------------------

    def _explode(self, start: int, end: int, trace_id: str, span_id: str, parent_id: str, service: str,
                 attrs: dict[str, str], events: Sequence[tuple[int, str, dict[str, str]]]) -> None:
        rows = []
        if "scope.kind" in attrs:
            for key, value in attrs.items():
                if key.startswith(_ARG_PREFIX):
                    rows.append((start, "arg", key[len(_ARG_PREFIX):], value, {}))
        for when, event_name, event_attrs in events:
            spec = _EVENT_KINDS.get(event_name)
            if spec is None:
                continue
            kind, name_key, value_key = spec
            rest = {k: v for k, v in event_attrs.items() if k != name_key and k != value_key}
            rows.append((when, kind, event_attrs.get(name_key, ""), event_attrs.get(value_key, ""), rest))
        if "scope.return" in attrs:
            rows.append((end, "return", "", attrs["scope.return"], {}))
        if not rows:
            return
        function = attrs.get("code.function.name", "")
        namespace = attrs.get("code.namespace", "")
        if namespace and function:
            function = f"{namespace}:{function}"
        hlc = attrs.get("scope.hlc", "")
        (c_ts, c_tid, c_sid, c_psid, c_service, c_function, c_kind, c_name, c_value, c_seq, c_hlc,
         c_attrs) = self.events
        for seq, (when, kind, name, value, rest) in enumerate(rows):
            c_ts.append(when)
            c_tid.append(trace_id)
            c_sid.append(span_id)
            c_psid.append(parent_id)
            c_service.append(service)
            c_function.append(function)
            c_kind.append(kind)
            c_name.append(name)
            c_value.append(value)
            c_seq.append(seq)
            c_hlc.append(hlc)
            c_attrs.append(rest)

    # -- wire format -------------------------------------------------------

    def encode(self) -> list[tuple[str, list[str], bytes, int]]:
        """The batch as ClickHouse Native blocks: ``(table, columns, bytes, rows)`` per table.

        Native is what ClickHouse ingests fastest, and it is the spool format,
        so a batch is encoded once in the exporting process and written as is
        by whichever process owns the store.  Strings that are not valid UTF-8
        (lone surrogates) are escaped on a second pass and counted in
        ``self.escaped``.
        """
        parts = []
        for table, spec, columns in (("otel_traces", TRACE_COLUMNS, self.traces),
                                     ("scope_events", EVENT_COLUMNS, self.events)):
            if not columns[0]:
                continue
            try:
                data = _native(spec, columns)
            except (UnicodeEncodeError, UnicodeDecodeError):
                self.escaped += escape_invalid_text(columns)
                data = _native(spec, columns)
            parts.append((table, [c[0] for c in spec], data, len(columns[0])))
        return parts


_TYPES: dict[str, Any] = {}


def _native(spec: Sequence[tuple[str, str]], columns: list[list]) -> bytes:
    """Serialize columns with clickhouse-connect's Native writer (no connection, no chDB)."""
    from clickhouse_connect.datatypes.registry import get_from_name
    from clickhouse_connect.driver.insert import InsertContext
    from clickhouse_connect.driver.transform import NativeTransform

    types = [_TYPES.get(t) or _TYPES.setdefault(t, get_from_name(t)) for _, t in spec]
    context = InsertContext("t", [n for n, _ in spec], types, columns, column_oriented=True,
                            block_size=1 << 30)
    with quiet_clickhouse_connect():
        data = b"".join(NativeTransform.build_insert(context))
    if context.insert_exception is not None:
        raise context.insert_exception
    # build_insert starts with an "INSERT INTO ... FORMAT Native\n" line meant
    # for an HTTP body; the Native bytes follow it.
    return data[data.index(b"\n") + 1:]


_quiet = threading.local()


class _QuietFilter(logging.Filter):
    """Drop clickhouse-connect's own error logs for calls scope-otel makes and handles.

    Only records emitted on a thread inside :func:`quiet_clickhouse_connect`
    are dropped, so an application using clickhouse-connect itself keeps its logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_quiet, "on", 0)


_filter_installed = False


@contextlib.contextmanager
def quiet_clickhouse_connect() -> Iterator[None]:
    global _filter_installed
    if not _filter_installed:
        _filter_installed = True
        for name in ("clickhouse_connect.driver.transform", "clickhouse_connect.driver._backend.http_sync",
                     "clickhouse_connect.driver._backend.chdb_backend", "clickhouse_connect.driver.client",
                     "urllib3.connectionpool"):
            logging.getLogger(name).addFilter(_QuietFilter())
    _quiet.on = getattr(_quiet, "on", 0) + 1
    try:
        yield
    finally:
        _quiet.on -= 1


def _any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value (arrays/maps become JSON text)."""
    which = value.WhichOneof("value")
    if which is None:
        return ""
    if which == "string_value":
        return value.string_value
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which == "array_value":
        return json.dumps([_plain(v) for v in value.array_value.values], ensure_ascii=False)
    if which == "kvlist_value":
        return json.dumps({kv.key: _plain(kv.value) for kv in value.kvlist_value.values}, ensure_ascii=False)
    return getattr(value, which)


def _plain(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, which) if which else None


def escape_invalid_text(columns: list[list]) -> int:
    """Make every string in ``columns`` encodable as UTF-8, in place; return how many changed.

    Lone surrogates come from bytes decoded with ``surrogateescape`` (or from
    broken producers).  Each becomes a visible escape (``\\xff`` for an
    undecodable byte, ``\\udc80`` for a stray surrogate), so the stored text
    still says exactly which bytes arrived.
    """
    fixed = 0

    def fix(value: Any) -> Any:
        nonlocal fixed
        if type(value) is str:
            if value.isascii():
                return value
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                fixed += 1
                raw = value.encode("utf-8", "surrogateescape") if _escaped_only(value) else None
                if raw is not None:
                    return raw.decode("utf-8", "backslashreplace")
                return value.encode("utf-8", "backslashreplace").decode("utf-8")
            return value
        if type(value) is list:
            return [fix(v) for v in value]
        if type(value) is dict:
            return {fix(k): fix(v) for k, v in value.items()}
        return value

    for i, column in enumerate(columns):
        columns[i] = [fix(v) for v in column]
    return fixed


def _escaped_only(text: str) -> bool:
    """True when every surrogate in ``text`` is a surrogateescape'd byte (U+DC80..U+DCFF)."""
    return all(not 0xD800 <= ord(ch) <= 0xDFFF or 0xDC80 <= ord(ch) <= 0xDCFF for ch in text)
