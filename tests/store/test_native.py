"""The C span encoder (_chnative) and the pure-Python path store the same rows.

Every test here runs the spans through both paths: byte for byte against
clickhouse-connect's Native writer (the C encoder declares LowCardinality
columns as String, so the reference is clickhouse-connect writing the Python
rows with that header), and through ``ClickHouseSpanExporter`` into a real
chDB store, read back.
"""
from __future__ import annotations

import math
import sys

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags,
                                 TraceState, set_span_in_context)

from scope_otel.store import rows as store_rows
from scope_otel.store.rows import EVENT_COLUMNS, TRACE_COLUMNS, Batch, _native, escape_invalid_text
from scope_otel.store.target import parse
from scope_otel.export.clickhouse import ClickHouseSpanExporter
from scope_otel.store import Store

C_BUILT = store_rows.load_encoder(pure=False) is not None
LIMIT = 1000
BAD = b"ok\xff\xfe".decode("utf-8", "surrogateescape")  # undecodable bytes, as surrogateescape keeps them
ODD = "it's \"quoted\"\nnew line\ttab\x00nul \\ back ☃ '); DROP TABLE otel_traces; --"


class Weird:
    def __str__(self) -> str:
        return "weird ☃"


def _ctx(trace_id: int, span_id: int, state: TraceState | None = None) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1), trace_state=state)


def hostile_spans() -> list:
    """Spans with every odd value the exporter must store exactly or cut and count."""
    resource = Resource({"service.name": "svc ☃", "host.name": "h\x00\n'", "huge.res": "r" * 1500,
                         "bad.res": BAD})
    scope = InstrumentationScope("tests.native", "1.0")
    state = TraceState([("vendor", "a-b"), ("other", "x")])
    attrs = {
        "odd": ODD, "huge": "x" * 5000, "unicode.huge": "☃" * 1200, "bad.utf8": BAD,
        "lone.high": "a\ud800b", "mixed": "\udcff and \ud800", "escaped.valid": "\udcc3\udca9",
        "bytes": b"by\xfftes", "flag": True, "off": False, "n": 3, "neg": -7, "big": 2 ** 70, "zero": 0,
        "pi": 3.25, "nan": math.nan, "inf": -math.inf, "list": ["a", 'b"', "☃"], "ints": (1, 2, 3),
        "mixed.list": [True, 1.5, None], "weird": Weird(), "": "empty key", "k\ud800ey": "bad key",
        "quote'key\"": "v",
        "scope.kind": "function", "code.function.name": "f☃", "code.namespace": "pkg.mod",
        "scope.arg.x": "1", "scope.arg.s": ODD, "scope.arg.h": "y" * 3000, "scope.arg.\udcff": "bad arg name",
        "scope.return": "None", "scope.hlc": "0001:0002",
    }
    events = [
        Event("exception", {"exception.type": "ValueError", "exception.message": "bad\nvalue " + BAD,
                            "exception.stacktrace": "Traceback\n  ..." + "s" * 1200},
              timestamp=1_700_000_000_000_000_150),
        Event("scope.state_change", {"scope.target": "self.x", "scope.value": "2", "extra": 5},
              timestamp=1_700_000_000_000_000_160),
        Event("scope.suspend", {}, timestamp=1_700_000_000_000_000_170),
        Event("scope.resume", None, timestamp=1_700_000_000_000_000_180),
        Event("scope.send", {"messaging.destination.name": "q", "messaging.message.id": "m1"},
              timestamp=1_700_000_000_000_000_190),
        Event("custom ☃", {"a": 1}, timestamp=1_700_000_000_000_000_195),
    ]
    links = [
        Link(_ctx(0xABC, 0xDEF, state), {"link.attr": "v", "n": 2}),
        Link(_ctx(2 ** 128 - 1, 2 ** 64 - 1)),
    ]
    root = _ctx(0x0123456789ABCDEF0123456789ABCDEF, 0x1111, state)
    spans = [
        ReadableSpan("root ☃ \"q\"\n", root, parent=None, resource=resource, attributes=attrs, events=events,
                     links=links, kind=SpanKind.SERVER, status=Status(StatusCode.ERROR, "boom \x00 '" + BAD),
                     start_time=1_700_000_000_000_000_100, end_time=1_700_000_000_000_000_900,
                     instrumentation_scope=scope),
        ReadableSpan("child", _ctx(0x0123456789ABCDEF0123456789ABCDEF, 0x2222), parent=root, resource=resource,
                     attributes={}, kind=SpanKind.CLIENT, status=Status(StatusCode.OK),
                     start_time=1_700_000_000_000_000_200, end_time=1_700_000_000_000_000_100,
                     instrumentation_scope=InstrumentationScope("no.version")),
        ReadableSpan("bare", _ctx(5, 6), resource=resource, attributes=None, start_time=1_700_000_000_000_000_300,
                     end_time=None, instrumentation_scope=None),
        ReadableSpan("only events", _ctx(5, 7), resource=Resource({}), attributes={"scope.return": "x"},
                     events=[Event("exception", {"exception.type": "E"}, timestamp=1_700_000_000_000_000_400)],
                     start_time=1_700_000_000_000_000_400, end_time=1_700_000_000_000_000_500),
        ReadableSpan("\udcff name", _ctx(5, 8), resource=resource,
                     attributes={"scope.kind": "function", "code.namespace": "ns\udcff", "code.function.name": "g",
                                 "scope.arg.a": BAD},
                     start_time=1_700_000_000_000_000_600, end_time=1_700_000_000_000_000_700),
    ]
    spans += sdk_spans()
    return spans


def sdk_spans() -> list:
    """Spans made by the SDK itself (BoundedAttributes, bounded event/link lists)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("sdk.tracer", "2.0")
    with tracer.start_as_current_span("outer", kind=SpanKind.SERVER,
                                      attributes={"scope.kind": "function", "scope.arg.q": ODD, "huge": "z" * 2000,
                                                  "seq": ["x", "y"], "b": True, "f": 0.1}) as outer:
        outer.add_event("scope.state_change", {"scope.target": "t", "scope.value": BAD})
        with tracer.start_as_current_span("inner", links=[Link(outer.get_span_context(), {"why": "ctx"})]) as inner:
            inner.set_status(Status(StatusCode.ERROR, "inner failed"))
            inner.record_exception(KeyError("k\nq"))
    return list(memory.get_finished_spans())


def reference_blocks(spans: list, limit: int = LIMIT) -> tuple[list, int, int]:
    """The Python rows written by clickhouse-connect with the C encoder's header; counters."""
    batch = Batch(limit, pure=True)
    batch.add_spans(spans)
    blocks, escaped = [], 0
    for spec, columns in ((TRACE_COLUMNS, batch.traces), (EVENT_COLUMNS, batch.events)):
        columns = [list(c) for c in columns]
        if not columns[0]:
            blocks.append(None)
            continue
        escaped += escape_invalid_text(columns)
        plain = tuple((n, t.replace("LowCardinality(String)", "String")) for n, t in spec)
        blocks.append(_native(plain, columns))
    return blocks, batch.truncated, escaped


needs_c = pytest.mark.skipif(not C_BUILT, reason="C encoder not built (no compiler); pure-Python path only")


@needs_c
def test_c_blocks_equal_clickhouse_connects_for_hostile_spans():
    spans = hostile_spans()
    expected, truncated, escaped = reference_blocks(spans)
    batch = Batch(LIMIT, pure=False)
    batch.add_spans(spans)
    assert len(batch._blocks) == 1, "the C encoder did not take the spans"
    traces, n, events, n_events = batch._blocks[0]
    assert traces == expected[0]
    assert events == expected[1]
    reference = Batch(LIMIT, pure=True)
    reference.add_spans(spans)
    assert (n, n_events) == (len(spans), reference.event_count)
    assert (batch.truncated, batch.escaped) == (truncated, escaped)
    assert truncated >= 6 and escaped >= 8  # the hostile values above really were cut and escaped


@needs_c
def test_c_blocks_equal_clickhouse_connects_for_ordinary_spans_in_one_call():
    spans = sdk_spans() * 50
    expected, truncated, escaped = reference_blocks(spans, limit=65536)
    batch = Batch(65536, pure=False)
    batch.add_spans(spans)
    assert [batch._blocks[0][0], batch._blocks[0][2]] == expected
    # the bad scope.value is stored twice per copy: in Events.Attributes and as a scope_events Value
    assert (batch.truncated, batch.escaped, truncated, escaped) == (0, 2 * 50, 0, 2 * 50)


@needs_c
def test_sdk_spans_are_read_without_running_their_python_properties():
    """Status, BoundedList and TraceState fields are read directly (their properties and __len__
    are Python code that only returns them): same bytes, and no Python call per span."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("sdk.tracer")
    remote = NonRecordingSpan(SpanContext(7, 9, is_remote=True, trace_flags=TraceFlags(1),
                                          trace_state=TraceState([("vendor", "a-b")])))
    with tracer.start_as_current_span("root", context=set_span_in_context(remote)) as root:
        root.add_event("scope.state_change", {"scope.target": "t", "scope.value": "v"})
        root.set_status(Status(StatusCode.ERROR, "failed"))
        with tracer.start_as_current_span("child", links=[Link(root.get_span_context())]):
            pass
    spans = list(memory.get_finished_spans()) * 20
    assert spans[0].context.trace_state.to_header() == "vendor=a-b"
    expected, _truncated, _escaped = reference_blocks(spans)
    calls: list[str] = []

    def count(frame, event, arg):
        if event == "call":
            calls.append(frame.f_code.co_name)  # co_qualname is 3.11+

    batch = Batch(LIMIT, pure=False)
    sys.setprofile(count)
    try:
        batch.add_spans(spans)
    finally:
        sys.setprofile(None)
    assert [batch._blocks[0][0], batch._blocks[0][2]] == expected
    per_span = [c for c in calls if c in ("__len__", "status_code", "description", "__iter__")]
    # the trace state is not empty: its header is made once a span, as before
    assert per_span == [], per_span


@needs_c
def test_rows_views_and_counters_are_the_same_on_both_paths():
    spans = hostile_spans()
    c, py = Batch(LIMIT, pure=False), Batch(LIMIT, pure=True)
    c.add_spans(spans)
    py.add_spans(spans)
    assert c.trace_rows == py.trace_rows and c.event_rows == py.event_rows
    assert c.traces == py.traces and c.events == py.events
    assert (len(c), c.event_count) == (len(py), py.event_count)
    c_parts, py_parts = c.encode(), py.encode()
    assert [(p[0], p[1], p[3]) for p in c_parts] == [(p[0], p[1], p[3]) for p in py_parts]
    assert (c.truncated, c.escaped) == (py.truncated, py.escaped)


def test_a_span_the_c_encoder_cannot_read_falls_back_to_python_and_raises_there():
    class NotASpan:
        pass

    for pure in (False, True):
        with pytest.raises(AttributeError):
            Batch(pure=pure).add_spans([NotASpan()])


def test_pure_python_is_chosen_by_the_environment(monkeypatch):
    monkeypatch.setenv("SCOPE_OTEL_PURE_PYTHON", "1")
    assert store_rows.load_encoder() is None
    monkeypatch.setenv("SCOPE_OTEL_PURE_PYTHON", "0")
    assert (store_rows.load_encoder() is not None) == C_BUILT


# -- through the exporter into chDB ---------------------------------------------

TRACE_READ = ", ".join("toUnixTimestamp64Nano(Timestamp)" if n == "Timestamp" else
                       "arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`)" if n == "Events.Timestamp"
                       else f"`{n}`" for n, _ in TRACE_COLUMNS)
EVENT_READ = ", ".join("toUnixTimestamp64Nano(Timestamp)" if n == "Timestamp" else f"`{n}`" for n, _ in EVENT_COLUMNS)


def export(path: str, database: str, spans: list, pure: bool) -> dict:
    store_rows.select(pure)
    try:
        exporter = ClickHouseSpanExporter(path, database, max_value_chars=LIMIT, embedded="inprocess",
                                          idle_close_s=30.0)
        assert exporter.export(spans).name == "SUCCESS"
        assert exporter.force_flush(30000)
        return exporter.stats()
    finally:
        store_rows.select(None)


def read_back(path: str, database: str) -> tuple[list, list]:
    store = Store(parse(path, database))
    try:
        traces = store.query(f"SELECT {TRACE_READ} FROM otel_traces ORDER BY SpanId, Timestamp").rows
        events = store.query(f"SELECT {EVENT_READ} FROM scope_events ORDER BY SpanId, Seq").rows
    finally:
        store.close()
    return traces, events


def expected_rows(spans: list) -> tuple[list, list, Batch]:
    """What the store must hold: the Python rows with bad text escaped, sorted like :func:`read_back`."""
    batch = Batch(LIMIT, pure=True)
    batch.add_spans(spans)
    traces = [[list(v) if type(v) is tuple else v for v in r] for r in zip(*_escaped(batch.traces))]
    events = [list(r) for r in zip(*_escaped(batch.events))]
    return sorted(traces, key=lambda r: (r[2], r[0])), sorted(events, key=lambda r: (r[2], r[9])), batch


@pytest.mark.parametrize("pure", [False, True], ids=["c", "python"])
def test_hostile_spans_read_back_exactly_as_the_rows_say(store_path, pure):
    if not pure and not C_BUILT:
        pytest.skip("C encoder not built")
    spans = hostile_spans()
    database = "c" if not pure else "py"
    stats = export(store_path, database, spans, pure)
    traces, events = read_back(store_path, database)
    want_traces, want_events, reference = expected_rows(spans)
    assert [list(r) for r in traces] == want_traces
    assert [list(r) for r in events] == want_events
    assert stats["values_truncated"] == reference.truncated >= 6
    assert stats["values_escaped"] >= 8 and stats["spans_dropped"] == 0
    # spot checks that the rows say what the spans said
    root = next(r for r in traces if r[5].startswith("root"))
    assert root[11]["odd"] == ODD and root[11]["huge"] == "x" * LIMIT and root[11]["bad.utf8"] == "ok\\xff\\xfe"
    assert (root[11]["flag"], root[11]["n"], root[11]["big"], root[11]["list"]) == ("true", "3", str(2 ** 70),
                                                                                    '["a", "b\\"", "☃"]')
    assert root[4] == "vendor=a-b,other=x" and root[14] == "boom \x00 'ok\\xff\\xfe" and root[3] == ""


def test_both_paths_store_identical_rows(store_path):
    if not C_BUILT:
        pytest.skip("C encoder not built")
    spans = hostile_spans()
    stats = [export(store_path, db, spans, pure) for db, pure in (("c2", False), ("py2", True))]
    assert read_back(store_path, "c2") == read_back(store_path, "py2")
    for key in ("values_truncated", "values_escaped", "spans_queued", "spans_dropped"):
        assert stats[0][key] == stats[1][key], key


def test_c_blocks_and_python_blocks_mix_in_one_insert(store_path):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    spans = sdk_spans()
    store_rows.select(False)
    try:
        exporter = ClickHouseSpanExporter(store_path, "mixed", embedded="inprocess", idle_close_s=30.0)
        batch = Batch(pure=False)
        batch.add_spans(spans[:1])
        batch.add_otlp(encode_spans(spans[1:]))
        assert len(batch) == len(spans)
        assert exporter._deliver(batch).name == "SUCCESS" and exporter.force_flush(30000)
    finally:
        store_rows.select(None)
    traces, events = read_back(store_path, "mixed")
    _, want_events, _ = expected_rows(spans)
    assert sorted(r[5] for r in traces) == sorted(s.name for s in spans)
    # (the OTLP encoder drops the undecodable scope.value, so compare what both carry)
    assert [(r[2], r[6], r[7], r[9]) for r in events] == [(r[2], r[6], r[7], r[9]) for r in want_events]


def _escaped(columns: list[list]) -> list[list]:
    columns = [list(c) for c in columns]
    escape_invalid_text(columns)
    return columns



# -- merging Native blocks in the store writer --------------------------------------

def _blocks_of(spans: list, size: int, pure: bool = False) -> tuple[list[bytes], list[bytes]]:
    traces, events = [], []
    for i in range(0, len(spans), size):
        batch = Batch(LIMIT, pure=pure)
        batch.add_spans(spans[i:i + size])
        parts = {p[0]: p[2] for p in batch.encode()}
        traces.append(parts["otel_traces"])
        events.append(parts.get("scope_events", b""))
    return traces, events


@needs_c
def test_merged_blocks_equal_the_block_of_one_encoder_call():
    from scope_otel.store._chnative import merge_blocks

    spans = hostile_spans() * 7 + sdk_spans() * 30
    traces, events = _blocks_of(spans, 9)
    whole = Batch(LIMIT, pure=False)
    whole.add_spans(spans)
    whole = {p[0]: p[2] for p in whole.encode()}
    assert len(traces) > 5
    assert merge_blocks(b"".join(traces)) == whole["otel_traces"]
    assert merge_blocks(b"".join(events)) == whole["scope_events"]
    assert merge_blocks(traces[0]) == traces[0] and merge_blocks(b"") == b""


@needs_c
def test_merging_into_a_callers_buffer_writes_the_same_bytes_and_refuses_to_overflow():
    from scope_otel.store._chnative import merge_blocks

    targets = {n.encode(): t.encode() for n, t in TRACE_COLUMNS + EVENT_COLUMNS}
    traces, _ = _blocks_of(hostile_spans() * 3 + sdk_spans() * 10, 7)
    data = b"".join(traces)
    for tgt in (None, targets):
        want = merge_blocks(data, tgt)
        into = bytearray(b"\xee" * (2 * len(data)))
        n = merge_blocks(data, tgt, into)
        assert n == len(want) and bytes(into[:n]) == want and into[n:] == b"\xee" * (len(into) - n)
        with pytest.raises(BufferError, match="too small"):
            merge_blocks(data, tgt, bytearray(len(want) - 1))
    with pytest.raises(BufferError, match="not writable"):
        merge_blocks(data, targets, b"read-only bytes")


@needs_c
def test_blocks_the_merger_does_not_know_pass_through_and_garbage_is_refused():
    from scope_otel.store._chnative import merge_blocks

    spans = sdk_spans()
    c_traces, _ = _blocks_of(spans * 3, len(spans))
    lc_traces, _ = _blocks_of(spans, len(spans), pure=True)  # clickhouse-connect's LowCardinality blocks
    data = c_traces[0] + c_traces[1] + lc_traces[0] + c_traces[2]
    assert merge_blocks(data) == merge_blocks(c_traces[0] + c_traces[1]) + lc_traces[0] + c_traces[2]
    for bad in (c_traces[0][:-1], c_traces[0][:50], b"\x05", c_traces[0] + b"\x01"):
        with pytest.raises(ValueError):
            merge_blocks(bad)


TRACE_ORDER = ((b"ServiceName", 0), (b"SpanName", 0), (b"Timestamp", 10 ** 9))  # otel_traces' sorting key
EVENT_ORDER = ((b"TraceId", 0), (b"SpanId", 0), (b"Seq", 0))


def _in_key_order(columns: list[list], names: list[str], order) -> list[list]:
    """The rows (given as columns, bad text escaped as the store gets it) stably sorted the way
    ClickHouse orders the key: text by its UTF-8 bytes, then length."""
    at = [names.index(name.decode()) for name, _ in order]

    def key(i: int) -> tuple:
        parts = []
        for col, (_, divisor) in zip(at, order):
            value = columns[col][i]
            parts.append(value.encode("utf-8", "surrogateescape") if isinstance(value, str)
                         else value // divisor if divisor else value)
        return tuple(parts)

    rows = sorted(range(len(columns[0])), key=key)
    assert rows != list(range(len(rows)))  # the fixture is not sorted already
    return [[col[i] for i in rows] for col in columns]


@needs_c
@pytest.mark.parametrize("lowcardinality", [False, True])
def test_merging_in_sorting_key_order_writes_the_rows_sorted_as_clickhouse_would(lowcardinality):
    from scope_otel.store._chnative import merge_blocks

    targets = {n.encode(): t.encode() for n, t in TRACE_COLUMNS + EVENT_COLUMNS} if lowcardinality else None
    spans = (hostile_spans() + sdk_spans()) * 6 + sdk_spans() * 5
    traces, events = _blocks_of(spans, 5)
    reference = Batch(LIMIT, pure=True)
    reference.add_spans(spans)
    for blocks, columns, spec, order in ((traces, reference.traces, TRACE_COLUMNS, TRACE_ORDER),
                                         (events, reference.events, EVENT_COLUMNS, EVENT_ORDER)):
        names = [n for n, _ in spec]
        header = spec if lowcardinality else [(n.decode(), t.decode()) for n, t in store_rows._plain_header(spec)]
        want = _native(header, _in_key_order(_escaped(columns), names, order))
        data = b"".join(blocks)
        assert merge_blocks(data, targets, None, order) == want
        into = bytearray(b"\xee" * (2 * len(want) + 1024))
        assert bytes(into[:merge_blocks(data, targets, into, order)]) == want

def _key_bits(columns: list[list], names: list[str], order) -> int | None:
    """The bits the merger's one packed key takes for ``order`` (text as ranks), None if text stays text."""
    bits = 0
    for name, divisor in order:
        values = columns[names.index(name.decode())]
        if isinstance(values[0], str):
            span = len(set(values)) - 1
        else:
            keyed = [v // divisor if divisor else v for v in values]
            span = max(keyed) - min(keyed)
        bits += span.bit_length()
    return bits


@needs_c
def test_keys_packed_small_packed_wide_and_unpacked_sort_the_rows_alike():
    """The merger ranks text key parts and packs all parts into one integer where their ranges fit:
    a radix sort within 32 bits, a merge sort of one integer within 64, of the parts beyond.  Each
    way gives the rows ClickHouse's order, ties in their input order."""
    from scope_otel.store._chnative import merge_blocks

    spans = (hostile_spans() + sdk_spans()) * 6 + sdk_spans() * 5
    traces, _ = _blocks_of(spans, 5)
    reference = Batch(LIMIT, pure=True)
    reference.add_spans(spans)
    names = [n for n, _ in TRACE_COLUMNS]
    header = [(n.decode(), t.decode()) for n, t in store_rows._plain_header(TRACE_COLUMNS)]
    orders = [TRACE_ORDER, ((b"SpanName", 0), (b"Duration", 0)), ((b"Timestamp", 0), (b"Duration", 0)),
              ((b"SpanName", 0), (b"Timestamp", 1000)), ((b"Timestamp", 1), (b"SpanName", 0)),
              ((b"StatusCode", 0), (b"ServiceName", 0), (b"SpanKind", 0), (b"SpanName", 0))]
    bits = []
    for order in orders:
        bits.append(_key_bits(_escaped(reference.traces), names, order))
        want = _native(header, _in_key_order(_escaped(reference.traces), names, order))
        assert merge_blocks(b"".join(traces), None, None, order) == want, order
    assert min(bits) <= 32 and any(32 < b <= 64 for b in bits) and max(bits) > 64, bits


@needs_c
def test_a_key_merging_cannot_use_leaves_the_rows_in_their_order():
    from scope_otel.store._chnative import merge_blocks

    traces, _ = _blocks_of((hostile_spans() + sdk_spans()) * 3, 4)
    data = b"".join(traces)
    plain = merge_blocks(data)
    for order in ((), ((b"NoSuchColumn", 0),), ((b"SpanAttributes", 0),), ((b"SpanName", 10),),
                  ((b"Duration", 7),), ((b"SpanName", 0),) * 5):
        assert merge_blocks(data, None, None, order) == plain
    assert merge_blocks(data, None, None, TRACE_ORDER) != plain
    sorted_once = merge_blocks(data, None, None, TRACE_ORDER)
    assert merge_blocks(sorted_once, None, None, TRACE_ORDER) == sorted_once  # sorted already: unchanged
    for bad in (((b"SpanName",),), (("SpanName", 0),), 5):
        with pytest.raises(TypeError):
            merge_blocks(data, None, None, bad)


def test_the_store_writer_inserts_many_batches_at_once_with_every_row(store_path):
    spans = hostile_spans() * 4
    store_rows.select(None)
    exporter = ClickHouseSpanExporter(store_path, "many", max_value_chars=LIMIT, embedded="inprocess",
                                      idle_close_s=30.0)
    exporter._backend.run(lambda client: None)  # the schema
    for i in range(0, len(spans), 3):  # queue several batches, then write them in one drain
        batch = Batch(LIMIT)
        batch.add_spans(spans[i:i + 3])
        assert exporter._backend.spool.put(batch.encode())
    exporter._backend.run(lambda client: None)
    traces, events = read_back(store_path, "many")
    want_traces, want_events, _ = expected_rows(spans)
    assert [list(r) for r in traces] == want_traces
    assert [list(r) for r in events] == want_events


@needs_c
def test_merging_with_table_types_writes_the_lowcardinality_block_clickhouse_connect_would():
    from scope_otel.store._chnative import merge_blocks

    targets = {n.encode(): t.encode() for n, t in TRACE_COLUMNS + EVENT_COLUMNS}
    spans = hostile_spans() * 5 + sdk_spans() * 20
    traces, events = _blocks_of(spans, 7)
    reference = Batch(LIMIT, pure=True)
    reference.add_spans(spans)
    assert merge_blocks(b"".join(traces), targets) == _native(TRACE_COLUMNS, _escaped(reference.traces))
    assert merge_blocks(b"".join(events), targets) == _native(EVENT_COLUMNS, _escaped(reference.events))
    one = traces[0]
    assert merge_blocks(one, targets) != one and merge_blocks(one, {}) == one  # a single block is converted too
