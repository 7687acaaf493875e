"""The C OTLP encoder (``_otlpenc``) produces what the stock ``encode_spans`` produces.

Every test parses the C output with the generated ``ExportTraceServiceRequest``
and compares it with the stock encoder's message for the same spans: hostile
strings, every attribute value type, nested and recursive sequences, empty
everything, several resources and scopes, links, remote parents, trace state,
dropped counts, and objects that are not the SDK's own classes.
"""
from __future__ import annotations

import enum
import logging
import math
import types

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from scope_otel.export import otlp

c_encode = otlp._load_c()
pytestmark = pytest.mark.skipif(c_encode is None, reason="_otlpenc not built (no compiler)")

TID = 0x0AF7651916CD43DD8448EB211C80319C
HUGE = "x" * 1_000_000 + "\u00e9\U0001f600"


def ctx(span_id: int, trace_id: int = TID, remote: bool = False, state: TraceState | None = None) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(1), trace_state=state)


def span(name="op", attributes=None, **kw) -> ReadableSpan:
    kw.setdefault("context", ctx(0x1122334455667788))
    kw.setdefault("start_time", 1_700_000_000_000_000_000)
    kw.setdefault("end_time", 1_700_000_000_000_001_000)
    return ReadableSpan(name=name, attributes=attributes, **kw)


def assert_same(spans) -> bytes:
    """C output parses to the stock message (and, today, is the same bytes)."""
    stock = encode_spans(spans)
    ours = c_encode(spans)
    assert ExportTraceServiceRequest.FromString(ours) == stock
    assert ours == stock.SerializeToString()
    return ours


def sdk_spans(limits: SpanLimits | None = None):
    """Real spans from a TracerProvider (BoundedAttributes, BoundedList, SDK events and links)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc", "n": 3}), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("lib", "1.2", schema_url="https://schema/1", attributes={"scope.attr": [1, 2]})
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes={"http.method": "GET"}) as root:
        root.add_event("started", {"q": "a\nb", "n": 1})
        root.add_event("bare")
        root.add_event("late", {"x": 1, "y": 2})
        for kind in SpanKind:
            with tracer.start_as_current_span(f"child-{kind.name}", kind=kind, links=[
                Link(root.get_span_context(), {"link.attr": "x", "seq": [True, False]}),
                Link(ctx(0xABCDEF, remote=True)),
            ]) as child:
                child.set_attributes({f"a{i}": (i if i % 3 == 0 else f"v{i}" if i % 3 == 1 else i / 7) for i in range(12)})
                child.set_status(Status(StatusCode.OK))
        root.set_status(Status(StatusCode.ERROR, "it broke: \"quoted\"\x00"))
    return list(exporter.get_finished_spans())


def test_sdk_spans_encode_as_the_stock_encoder_does():
    assert_same(sdk_spans())


def test_dropped_attribute_event_and_link_counts_are_carried():
    limits = SpanLimits(max_span_attributes=3, max_events=2, max_links=1, max_event_attributes=1,
                        max_link_attributes=1)
    spans = sdk_spans(limits)
    request = ExportTraceServiceRequest.FromString(assert_same(spans))
    encoded = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert any(s.dropped_attributes_count for s in encoded)
    assert any(s.dropped_events_count for s in encoded)
    assert any(s.dropped_links_count for s in encoded)
    assert any(e.dropped_attributes_count for s in encoded for e in s.events)


def test_empty_batch_and_empty_spans():
    assert c_encode([]) == b"" == encode_spans([]).SerializeToString()
    assert_same([span(name="", attributes=None, start_time=None, end_time=None)])
    assert_same([span(attributes={}, events=(), links=(), status=Status(StatusCode.UNSET))])
    assert_same([span(resource=Resource({}), instrumentation_scope=None)])
    assert_same([span(instrumentation_scope=InstrumentationScope("", None, None, None))])


@pytest.mark.parametrize(
    "value",
    [
        "", "plain", "nul\x00byte", "quotes \" ' `", "new\nline\r\ttab", "\U0001f600 non-BMP \u4e2d", HUGE,
        True, False, 0, -1, 2**63 - 1, -(2**63), 1.5, -0.0, math.inf, -math.inf, 1e-300,
        b"", b"\x00\xff\xfe", None,
        [], [1, 2, 3], ("a", "b"), [True, 1, 1.0, "s", b"b", None], [[1, [2, [3, []]]]],
        range(4), bytearray(b"ab"), memoryview(b"cd"),
        {}, {"k": "v", "n": {"deep": [1, {"x": None}]}}, {1: "int key", None: "none key"},
        types.MappingProxyType({"m": 1}),
    ],
    ids=repr,
)
def test_attribute_value_types(value):
    assert_same([span(attributes={"k": value}, events=[Event("e", {"k": value}, timestamp=5)],
                      links=[Link(ctx(3), {"k": value})])])


class Color(enum.IntEnum):
    RED = 7


class Text(str):
    pass


class Number(float):
    pass


@pytest.mark.parametrize("value", [Color.RED, Text("sub"), Number(2.5)], ids=repr)
def test_subclasses_of_the_plain_types(value):
    assert_same([span(attributes={"k": value, "list": [value]})])


@pytest.mark.parametrize(
    "bad",
    [
        "lone \ud800 surrogate", 2**63, -(2**63) - 1, object(), {1, 2}, 3 + 4j, [1, object()],
        {"k": "\udcff"}, {"\udcff": 1},
    ],
    ids=repr,
)
def test_unencodable_attribute_is_dropped_like_stock(bad, caplog):
    """The stock encoder drops (and logs) the one key; the neighbours stay."""
    attrs = {"before": 1, "bad": bad, "after": 2}
    with caplog.at_level(logging.ERROR, logger="opentelemetry.exporter.otlp.proto.common._internal"):
        out = assert_same([span(attributes=attrs, events=[Event("e", attrs, timestamp=1)])])
    request = ExportTraceServiceRequest.FromString(out)
    keys = [kv.key for kv in request.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert keys == ["before", "after"]
    assert sum("Failed to encode key bad" in r.getMessage() for r in caplog.records) == 4  # 2 stock + 2 ours


def test_unencodable_keys_are_dropped_like_stock():
    assert_same([span(attributes={"\ud800": 1, 5: "int key", b"bytes key": 1, b"\xff": 2, "ok": 3})])


def test_self_referencing_and_very_deep_values_are_dropped():
    loop: list = [1]
    loop.append(loop)
    deep: list = []
    node = deep
    for _ in range(500):
        node.append([])
        node = node[0]
    out = assert_same([span(attributes={"loop": loop, "deep": deep, "ok": 1})])
    request = ExportTraceServiceRequest.FromString(out)
    assert [kv.key for kv in request.resource_spans[0].scope_spans[0].spans[0].attributes] == ["ok"]


def _nest(depth: int, shape: str, leaf):
    value = leaf
    for i in range(depth):
        value = [value] if shape == "list" or (shape == "mixed" and i % 2) else {"k": value}
    return value


def _placed(where: str, value) -> list:
    attrs = {"k": value}
    kw = {
        "span": {"attributes": attrs},
        "event": {"events": [Event("e", attrs, timestamp=1)]},
        "link": {"links": [Link(ctx(3), attrs)]},
        "resource": {"resource": Resource(attrs)},
        "scope": {"instrumentation_scope": InstrumentationScope("s", attributes=attrs)},
    }[where]
    return [span(**kw)]


@pytest.mark.parametrize("where", ["span", "event", "link", "resource", "scope"])
@pytest.mark.parametrize("shape", ["list", "map", "mixed"])
def test_nesting_never_exceeds_what_decoders_accept(where, shape):
    """Around protobuf's 100-level nesting limit: our request always parses,
    and equals the stock one wherever the stock one is a valid request (the
    stock encoder fails the batch, or sends an unparseable request, at some
    depths in between)."""
    compared = 0
    for leaf in (1, None, [], {}):
        for depth in range(25, 56):
            spans = _placed(where, _nest(depth, shape, leaf))
            ours = c_encode(spans)
            ExportTraceServiceRequest.FromString(ours)  # raises if too deep
            try:
                stock = encode_spans(spans).SerializeToString()
                ExportTraceServiceRequest.FromString(stock)
            except Exception:
                continue
            assert ours == stock, (leaf, depth)
            compared += 1
    assert compared > 100


def test_nan_encodes_to_the_same_bytes():
    spans = [span(attributes={"nan": math.nan, "list": [math.nan]})]
    assert c_encode(spans) == encode_spans(spans).SerializeToString()


def test_resources_and_scopes_group_in_first_seen_order():
    r1, r2 = Resource({"service.name": "a"}), Resource({"service.name": "b"}, "https://schema/r2")
    r1_again = Resource({"service.name": "a"})  # equal, not identical: same group
    s1 = InstrumentationScope("lib", "1", "https://schema/s1", {"k": "v"})
    s2 = InstrumentationScope("lib", "2")
    s1_again = InstrumentationScope("lib", "1", "https://schema/s1", {"k": "v"})
    spans = [
        span(name="1", resource=r1, instrumentation_scope=s1),
        span(name="2", resource=r2, instrumentation_scope=s1),
        span(name="3", resource=r1_again, instrumentation_scope=s2),
        span(name="4", resource=r1, instrumentation_scope=None),
        span(name="5", resource=r2, instrumentation_scope=s1_again),
        span(name="6", resource=r1, instrumentation_scope=s1),
    ]
    request = ExportTraceServiceRequest.FromString(assert_same(spans))
    assert [[[s.name for s in ss.spans] for ss in rs.scope_spans] for rs in request.resource_spans] == [
        [["1", "6"], ["3"], ["4"]],
        [["2", "5"]],
    ]


def test_parents_remote_parents_trace_state_and_flags():
    state = TraceState([("vendor", "v1"), ("other", "x=y")])
    spans = [
        span(name="root"),
        span(name="local child", parent=ctx(0x99)),
        span(name="remote child", parent=ctx(0x98, remote=True), context=ctx(0x77, state=state)),
        span(name="zero parent", parent=SpanContext(0, 0, False)),
        span(name="links", links=[Link(ctx(1, remote=True), {"a": 1}), Link(ctx(2, state=state))]),
    ]
    request = ExportTraceServiceRequest.FromString(assert_same(spans))
    flags = {s.name: s.flags for s in request.resource_spans[0].scope_spans[0].spans}
    assert flags["root"] == 0x100 and flags["remote child"] == 0x300


def test_status_and_kinds():
    spans = [span(name=k.name, kind=k, status=Status(code, desc))
             for k in SpanKind for code, desc in [(StatusCode.UNSET, None), (StatusCode.OK, None),
                                                 (StatusCode.ERROR, ""), (StatusCode.ERROR, "boom \U0001f4a5")]]
    assert_same(spans)


@pytest.mark.parametrize(
    "bad_span",
    [
        lambda: span(name="lone \udcff in the name"),
        lambda: span(context=ctx(1, trace_id=2**128)),
        lambda: span(context=ctx(-1)),
        lambda: span(kind="not a kind"),
        lambda: span(status=Status(StatusCode.ERROR, "\ud800")),
        lambda: span(start_time=-1),
        lambda: span(context=None),
    ],
    ids=["surrogate-name", "trace-id-too-big", "negative-span-id", "unknown-kind", "surrogate-status",
         "negative-time", "no-context"],
)
def test_what_fails_the_stock_batch_fails_ours(bad_span):
    spans = [span(name="fine"), bad_span()]
    with pytest.raises(Exception) as stock:
        encode_spans(spans).SerializeToString()
    with pytest.raises(type(stock.value)):
        c_encode(spans)


class CustomSpan(ReadableSpan):
    """Not exactly ReadableSpan: the encoder must use the public properties."""

    @property
    def name(self):
        return "custom:" + self._name

    @property
    def attributes(self):
        return {"from": "property"}


class CustomEvent(Event):
    @property
    def name(self):
        return "custom-event"


class CustomLink(Link):
    @property
    def attributes(self):
        return {"link": "custom"}


def test_subclassed_spans_events_and_links_go_through_public_properties():
    spans = [
        CustomSpan(name="x", context=ctx(5), attributes={"hidden": 1},
                   events=[CustomEvent("e", {"a": 1}, timestamp=3)], links=[CustomLink(ctx(6), {"b": 2})],
                   start_time=1, end_time=2),
        span(),
    ]
    request = ExportTraceServiceRequest.FromString(assert_same(spans))
    first = request.resource_spans[0].scope_spans[0].spans[0]
    assert first.name == "custom:x" and first.attributes[0].key == "from"
    assert first.events[0].name == "custom-event" and first.links[0].attributes[0].key == "link"


def test_sequences_of_spans_other_than_lists():
    spans = sdk_spans()
    assert c_encode(tuple(spans)) == c_encode(spans)
    assert c_encode(iter(spans)) == c_encode(spans)


def test_python_path_is_the_stock_encoder():
    spans = sdk_spans()
    assert otlp._encode_python(spans) == encode_spans(spans).SerializeToString()
    previous = otlp.IMPLEMENTATION
    try:
        assert otlp.use_implementation(pure=True) == "python"
        assert otlp.encode_request is otlp._encode_python
        assert otlp.use_implementation(pure=False) == "c"
        assert otlp.encode_request(spans) == otlp._encode_python(spans)
    finally:
        otlp.use_implementation(pure=previous == "python")


def test_pure_python_is_chosen_by_environment_variable():
    import os
    import subprocess
    import sys

    code = "from scope_otel.export import otlp; print(otlp.IMPLEMENTATION)"
    env = dict(os.environ, SCOPE_OTEL_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "python"
