"""Turn spans into columnar batches for ``otel_traces`` and ``scope_events``.

Two inputs, one output: SDK ``ReadableSpan`` objects (:meth:`Batch.add_spans`)
and OTLP protobuf requests (:meth:`Batch.add_otlp`) both become the same
rows, in the clickhouseexporter's conventions (hex ids, span kind
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

SDK spans normally skip the Python rows: the C accelerator
``_chnative.encode_spans`` turns them straight into Native blocks (~2-3 us
per span instead of ~16-20), with the same rows and counters; this module
keeps the rules (it passes ``_text``, ``_escape_text`` and the resource
conversion to the C code for the rare cases) and is the fallback when the
extension is missing or ``SCOPE_OTEL_PURE_PYTHON=1``.  OTLP input always
takes the Python path.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Callable, Iterable, Sequence

from scope_otel.accelerators import pure_python_requested
from scope_otel.store.quiet import quiet_clickhouse_connect

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
# Keyed by the enums' values (SpanKind.SERVER._value_ == 1 ...): reading
# ``_value_`` is a plain attribute load, ``.name`` a Python-level descriptor.
_SDK_KIND = dict(enumerate(_KINDS))
_OTLP_KIND = ("SPAN_KIND_UNSPECIFIED",) + _KINDS
_STATUS = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}
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
_ARG_CUT = len(_ARG_PREFIX)
_NO_ATTRS: dict[str, str] = {}  # shared, never mutated
_EMPTY3: tuple = ((), (), ())
_EMPTY4: tuple = ((), (), (), ())


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


def load_encoder(pure: bool | None = None) -> Callable[..., tuple] | None:
    """The C span encoder (``_chnative.encode_spans``), or None for the pure-Python path.

    None when the extension is not built or ``SCOPE_OTEL_PURE_PYTHON=1``;
    both paths store the same rows (tests run each).
    """
    if pure is None:
        pure = pure_python_requested()
    if pure:
        return None
    try:
        from scope_otel.store._chnative import encode_spans
    except ImportError:
        return None
    return encode_spans


ENCODER = load_encoder()


def select(pure: bool | None) -> str:
    """Switch the span encoder new batches use (tests, benchmarks); returns ``"c"`` or ``"python"``."""
    global ENCODER
    ENCODER = load_encoder(pure)
    return "c" if ENCODER is not None else "python"


def _plain_header(spec: Sequence[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    # The C encoder declares LowCardinality(String) as String: ClickHouse
    # converts on insert, no slower than decoding a dictionary (measured with
    # chDB, bench/results/clickhouse.md), and the encoder needs no hash table.
    return tuple((n.encode(), t.replace("LowCardinality(String)", "String").encode()) for n, t in spec)


_C_TRACE_HEADER = _plain_header(TRACE_COLUMNS)
_C_EVENT_HEADER = _plain_header(EVENT_COLUMNS)


class Batch:
    """Rows for one insert into each table, plus what was cut.

    SDK spans go through the C encoder when it is built (``pure=None``
    follows :data:`ENCODER`, ``True``/``False`` choose): it turns them
    straight into Native blocks.  Otherwise, and for OTLP input, rows are
    tuples in column order (one tuple build per span is far cheaper in
    Python than 22 list appends) that :meth:`encode` serializes.
    :attr:`trace_rows`, :attr:`event_rows`, :attr:`traces` and :attr:`events`
    show every row either way (for spans the C encoder took, they are
    rebuilt in Python on first use).
    """

    def __init__(self, max_value_chars: int = 65536, pure: bool | None = None) -> None:
        self.max_value_chars = max_value_chars
        self.truncated = 0
        self.escaped = 0
        self._encoder = ENCODER if pure is None else load_encoder(pure)
        self._rows_t: list[tuple] = []
        self._rows_e: list[tuple] = []
        self._blocks: list[tuple[bytes | None, int, bytes | None, int]] = []  # from the C encoder
        self._c_spans: list[Sequence[Any]] = []  # what the C encoder took, for trace_rows on demand
        self._rebuilt: tuple[int, list[tuple], list[tuple]] | None = None
        self._resources: dict[int, tuple[Any, dict[str, str], str]] = {}
        self._columns: dict[str, list[list]] = {}

    def __len__(self) -> int:
        return len(self._rows_t) + sum(b[1] for b in self._blocks)

    @property
    def event_count(self) -> int:
        return len(self._rows_e) + sum(b[3] for b in self._blocks)

    @property
    def trace_rows(self) -> list[tuple]:
        """``otel_traces`` rows (tuples in :data:`TRACE_COLUMNS` order)."""
        return self._rebuild()[1] + self._rows_t if self._c_spans else self._rows_t

    @property
    def event_rows(self) -> list[tuple]:
        """``scope_events`` rows (tuples in :data:`EVENT_COLUMNS` order)."""
        return self._rebuild()[2] + self._rows_e if self._c_spans else self._rows_e

    @property
    def traces(self) -> list[list]:
        """``otel_traces`` as column lists (see :data:`TRACE_COLUMNS`)."""
        return self._transposed("traces", self.trace_rows, len(TRACE_COLUMNS))

    @property
    def events(self) -> list[list]:
        """``scope_events`` as column lists (see :data:`EVENT_COLUMNS`)."""
        return self._transposed("events", self.event_rows, len(EVENT_COLUMNS))

    def _transposed(self, key: str, rows: list[tuple], width: int) -> list[list]:
        cached = self._columns.get(key)
        if cached is None or (cached and len(cached[0]) != len(rows)):
            cached = self._columns[key] = [list(c) for c in zip(*rows)] if rows else [[] for _ in range(width)]
        return cached

    def _rebuild(self) -> tuple[int, list[tuple], list[tuple]]:
        """Python rows for the spans the C encoder took (counters already counted there)."""
        if self._rebuilt is None or self._rebuilt[0] != len(self._c_spans):
            twin = Batch(self.max_value_chars, pure=True)
            twin._resources = self._resources  # converted (and counted) already
            for spans in self._c_spans:
                twin._add_spans_python(spans)
            self._rebuilt = (len(self._c_spans), twin._rows_t, twin._rows_e)
        return self._rebuilt

    # -- values -----------------------------------------------------------

    def _cut(self, text: str) -> str:
        self.truncated += 1
        return text[: self.max_value_chars]

    def _map(self, attributes: Any) -> dict[str, str]:
        """Attributes as ``{str: str}``, long values cut (and counted)."""
        # The SDK's BoundedAttributes takes a lock on every key access through
        # the Mapping protocol (~25 us for 10 attributes); read its plain dict
        # when it has one (SDK 1.x), the public mapping otherwise.
        attributes = getattr(attributes, "_dict", attributes)
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
        if self._encoder is not None:
            if not isinstance(spans, (list, tuple)):
                spans = list(spans)
            try:
                out = self._encoder(spans, self.max_value_chars, _C_TRACE_HEADER, _C_EVENT_HEADER, _text,
                                    _escape_text, self._resource)
            except Exception:
                pass  # something the C encoder does not take: the Python path decides (and raises)
            else:
                self._blocks.append(out[:4])
                self.truncated += out[4]
                self.escaped += out[5]
                self._c_spans.append(spans)
                return
        self._add_spans_python(spans)

    def _add_spans_python(self, spans: Iterable[Any]) -> None:
        rows = self._rows_t
        kinds = _SDK_KIND
        statuses = _STATUS
        for span in spans:
            ctx = span.context
            trace_id = f"{ctx.trace_id:032x}"
            span_id = f"{ctx.span_id:016x}"
            parent = span.parent
            parent_id = f"{parent.span_id:016x}" if parent is not None else ""
            start = span.start_time or 0
            end = span.end_time or start
            res_attrs, svc = self._resource(span.resource)
            raw = getattr(span, "_attributes", None)
            attrs = self._map(span.attributes if raw is None else raw)
            scope = span.instrumentation_scope
            st = span.status
            state = ctx.trace_state
            events = span._events if hasattr(span, "_events") else span.events
            if events:
                event_rows = [(e.timestamp, e.name, self._map(e.attributes)) for e in events]
                ev = ([e[0] for e in event_rows], [e[1] for e in event_rows], [e[2] for e in event_rows])
            else:
                event_rows = ()
                ev = _EMPTY3
            links = span._links if hasattr(span, "_links") else span.links
            if links:
                ln = ([f"{l.context.trace_id:032x}" for l in links], [f"{l.context.span_id:016x}" for l in links],
                      [l.context.trace_state.to_header() if l.context.trace_state else "" for l in links],
                      [self._map(l.attributes) for l in links])
            else:
                ln = _EMPTY4
            rows.append((
                start, trace_id, span_id, parent_id, state.to_header() if state else "", span.name,
                kinds.get(span.kind._value_, "SPAN_KIND_UNSPECIFIED"), svc, res_attrs,
                scope.name if scope is not None else "", (scope.version or "") if scope is not None else "",
                attrs, end - start if end > start else 0,
                statuses.get(st.status_code._value_, "STATUS_CODE_UNSET"), st.description or "",
                *ev, *ln,
            ))
            if event_rows or "scope.kind" in attrs:
                self._explode(start, end, trace_id, span_id, parent_id, svc, attrs, event_rows)

    # -- OTLP protobuf ----------------------------------------------------

    def add_otlp(self, request: Any) -> None:
        """Append every span of an ``ExportTraceServiceRequest``."""
        rows = self._rows_t
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
                    code = span.status.code
                    event_rows = [(e.time_unix_nano, e.name, self._kv(e.attributes)) for e in span.events]
                    links = span.links
                    rows.append((
                        start, trace_id, span_id, parent_id, span.trace_state, span.name,
                        _OTLP_KIND[span.kind] if 0 <= span.kind < len(_OTLP_KIND) else "", svc, res_attrs,
                        sc_name, sc_version, attrs, end - start if end > start else 0,
                        _OTLP_STATUS[code] if 0 <= code < 3 else "", span.status.message,
                        [e[0] for e in event_rows], [e[1] for e in event_rows], [e[2] for e in event_rows],
                        [l.trace_id.hex() for l in links], [l.span_id.hex() for l in links],
                        [l.trace_state for l in links], [self._kv(l.attributes) for l in links],
                    ))
                    if event_rows or "scope.kind" in attrs:
                        self._explode(start, end, trace_id, span_id, parent_id, svc, attrs, event_rows)

    def _kv(self, key_values: Sequence[Any]) -> dict[str, str]:
        return self._map({kv.key: _any_value(kv.value) for kv in key_values})

    # -- scope_events ------------------------------------------------------

    def _explode(self, start: int, end: int, trace_id: str, span_id: str, parent_id: str, service: str,
                 attrs: dict[str, str], events: Sequence[tuple[int, str, dict[str, str]]]) -> None:
        facts = []
        if "scope.kind" in attrs:
            for key, value in attrs.items():
                if key.startswith(_ARG_PREFIX):
                    facts.append((start, "arg", key[_ARG_CUT:], value, _NO_ATTRS))
        for when, event_name, event_attrs in events:
            spec = _EVENT_KINDS.get(event_name)
            if spec is None:
                continue
            kind, name_key, value_key = spec
            rest = {k: v for k, v in event_attrs.items() if k != name_key and k != value_key}
            facts.append((when, kind, event_attrs.get(name_key, ""), event_attrs.get(value_key, ""), rest))
        if "scope.return" in attrs:
            facts.append((end, "return", "", attrs["scope.return"], _NO_ATTRS))
        if not facts:
            return
        function = attrs.get("code.function.name", "")
        namespace = attrs.get("code.namespace", "")
        if namespace and function:
            function = f"{namespace}:{function}"
        hlc = attrs.get("scope.hlc", "")
        append = self._rows_e.append
        seq = 0
        for when, kind, name, value, rest in facts:
            append((when, trace_id, span_id, parent_id, service, function, kind, name, value, seq, hlc, rest))
            seq += 1

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
        for i, (table, spec, rows) in enumerate((("otel_traces", TRACE_COLUMNS, self._rows_t),
                                                 ("scope_events", EVENT_COLUMNS, self._rows_e))):
            blocks = [b[2 * i] for b in self._blocks if b[2 * i] is not None]  # encoded in C already
            count = sum(b[2 * i + 1] for b in self._blocks)
            if rows:
                columns = [list(c) for c in zip(*rows)]
                try:
                    data = _native(spec, columns)
                except (UnicodeEncodeError, UnicodeDecodeError):
                    self.escaped += escape_invalid_text(columns)
                    data = _native(spec, columns)
                blocks.append(data)
                count += len(rows)
            if count:
                # Native is a sequence of self-describing blocks: they concatenate.
                parts.append((table, [c[0] for c in spec], b"".join(blocks), count))
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
                return _escape_text(value)
            return value
        if type(value) is list:
            return [fix(v) for v in value]
        if type(value) is dict:
            return {fix(k): fix(v) for k, v in value.items()}
        return value

    for i, column in enumerate(columns):
        columns[i] = [fix(v) for v in column]
    return fixed


def _escape_text(value: str) -> str:
    """``value`` (which UTF-8 cannot encode) with each bad code point escaped, see :func:`escape_invalid_text`."""
    if _escaped_only(value):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _escaped_only(text: str) -> bool:
    """True when every surrogate in ``text`` is a surrogateescape'd byte (U+DC80..U+DCFF)."""
    return all(not 0xD800 <= ord(ch) <= 0xDFFF or 0xDC80 <= ord(ch) <= 0xDCFF for ch in text)
