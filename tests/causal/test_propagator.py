"""The HLC travels in W3C tracestate across a real HTTP hop and orders the server after the client."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from opentelemetry import trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from scope_otel.causal.hlc import HLCTimestamp, HybridLogicalClock
from scope_otel.causal.processor import HLC_ATTRIBUTE, HLCSpanProcessor
from scope_otel.causal.propagator import TRACESTATE_KEY, HLCPropagator


class Node:
    """One simulated process: its own clock, tracer provider and propagators."""

    def __init__(self, name: str, skew_ms: int) -> None:
        self.clock = HybridLogicalClock(name, skew_ms=skew_ms)
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(HLCSpanProcessor(self.clock))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("test")
        self.propagator = CompositePropagator([TraceContextTextMapPropagator(), HLCPropagator(self.clock)])

    def spans(self) -> dict:
        return {s.name: s for s in self.exporter.get_finished_spans()}


@pytest.fixture
def server_node():
    node = Node("server", skew_ms=-2_000)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            ctx = node.propagator.extract(dict(self.headers))
            with node.tracer.start_as_current_span("GET /work", context=ctx, kind=trace.SpanKind.SERVER):
                body = b"done"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    node.url = f"http://127.0.0.1:{httpd.server_address[1]}/work"
    yield node
    httpd.shutdown()
    httpd.server_close()


def test_server_span_is_ordered_after_client_despite_five_second_skew(server_node):
    client = Node("client", skew_ms=3_000)
    with client.tracer.start_as_current_span("call", kind=trace.SpanKind.CLIENT):
        headers: dict[str, str] = {}
        client.propagator.inject(headers)
        assert requests.get(server_node.url, headers=headers, timeout=5).text == "done"
    call, work = client.spans()["call"], server_node.spans()["GET /work"]

    assert work.parent.span_id == call.context.span_id
    sent = HLCTimestamp.decode(dict(m.split("=", 1) for m in headers["tracestate"].split(","))[TRACESTATE_KEY])
    client_hlc = HLCTimestamp.decode(call.attributes[HLC_ATTRIBUTE])
    server_hlc = HLCTimestamp.decode(work.attributes[HLC_ATTRIBUTE])
    assert client_hlc < sent < server_hlc
    # ... while the skewed wall clocks put the server span before the client's
    assert work.start_time < call.start_time


def test_inject_keeps_other_vendors_tracestate_members():
    node = Node("n", 0)
    parent = trace.SpanContext(
        trace_id=0x1234, span_id=0x99, is_remote=True,
        trace_flags=trace.TraceFlags(1), trace_state=trace.TraceState([("vendor", "abc")]),
    )
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    with node.tracer.start_as_current_span("child", context=ctx):
        carrier: dict[str, str] = {}
        node.propagator.inject(carrier)
    members = dict(m.split("=", 1) for m in carrier["tracestate"].split(","))
    assert members["vendor"] == "abc"
    assert HLCTimestamp.decode(members[TRACESTATE_KEY]).node == "n"


def test_extract_merges_remote_clock_even_when_only_tracecontext_extracted():
    # The processor reads the stamp from the remote parent's trace state.
    node = Node("late", skew_ms=-60_000)
    remote = HLCTimestamp(node.clock.wall_ms() + 120_000, 5, "early")
    ctx = TraceContextTextMapPropagator().extract(
        {"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01", "tracestate": f"{TRACESTATE_KEY}={remote.encode()}"}
    )
    with node.tracer.start_as_current_span("handle", context=ctx):
        pass
    assert HLCTimestamp.decode(node.spans()["handle"].attributes[HLC_ATTRIBUTE]) > remote


def test_inject_without_a_span_writes_nothing_and_malformed_extract_is_harmless():
    node = Node("n", 0)
    carrier: dict[str, str] = {}
    HLCPropagator(node.clock).inject(carrier)
    assert carrier == {}
    HLCPropagator(node.clock).extract({"tracestate": f"{TRACESTATE_KEY}=not-a-clock,x=1"})
    assert node.clock.stats()["merged"] == 0


def test_scope_hlc_is_an_installed_opentelemetry_propagator():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="opentelemetry_propagator") if e.name == "scope_hlc"]
    assert ep.load() is HLCPropagator


def test_events_carry_their_own_clock_reading_ordered_with_child_spans():
    node = Node("n", 0)
    with node.tracer.start_as_current_span("outer") as outer:
        outer.add_event("before")
        with node.tracer.start_as_current_span("child"):
            pass
        try:
            raise KeyError("boom")
        except KeyError as exc:
            outer.record_exception(exc)
    spans = node.spans()
    before, raised = (HLCTimestamp.decode(e.attributes[HLC_ATTRIBUTE]) for e in spans["outer"].events)
    child = HLCTimestamp.decode(spans["child"].attributes[HLC_ATTRIBUTE])
    assert HLCTimestamp.decode(spans["outer"].attributes[HLC_ATTRIBUTE]) < before < child < raised
    assert spans["outer"].events[1].attributes["exception.type"] == "KeyError"


def test_skewed_node_shifts_span_and_event_times_by_its_skew():
    import time

    skewed = Node("skewed", -2_000)
    shift = 2_000 * 1_000_000
    before = time.time_ns()
    with skewed.tracer.start_as_current_span("s") as span:
        span.add_event("e")
    after = time.time_ns()
    s = skewed.spans()["s"]
    for stamp in (s.start_time, s.events[0].timestamp, s.end_time):
        assert before - shift <= stamp <= after - shift
    assert s.start_time <= s.events[0].timestamp <= s.end_time
