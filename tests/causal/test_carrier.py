"""``inject``/``extract`` for other transports carry trace context and the HLC."""
from __future__ import annotations

import json

from opentelemetry import trace

from scope_otel.causal.carrier import extract, inject
from scope_otel.causal.hlc import HLCTimestamp, clock
from scope_otel.causal.propagator import TRACESTATE_KEY


def test_carrier_survives_json_and_rebuilds_the_parent(recorded):
    with recorded.tracer.start_as_current_span("send") as span:
        wire = json.dumps(inject())
    carrier = json.loads(wire)
    assert f"{TRACESTATE_KEY}=" in carrier["tracestate"]  # added even though OTEL_PROPAGATORS lacks scope_hlc
    ctx = extract(carrier)
    remote = trace.get_current_span(ctx).get_span_context()
    assert remote.span_id == span.get_span_context().span_id and remote.is_remote


def test_extract_accepts_bytes_and_mixed_case_header_names_and_merges_the_clock():
    ahead = HLCTimestamp(clock().wall_ms() + 5_000, 3, "ahead")
    carrier = {b"Traceparent": b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01",
               "TraceState": f"{TRACESTATE_KEY}={ahead.encode()}"}
    ctx = extract(carrier)
    assert trace.get_current_span(ctx).get_span_context().trace_id == int("ab" * 16, 16)
    assert clock().now() > ahead


def test_inject_outside_any_span_gives_an_empty_carrier():
    assert inject() == {}
