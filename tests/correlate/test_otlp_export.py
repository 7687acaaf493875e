"""Function spans and SDK spans reach a real OTLP receiver, correctly linked."""
from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from scope_otel.capture import RingBufferSpanProcessor, runtime
from scope_otel.correlate.spans import Correlator


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_function_and_sdk_spans_arrive_over_otlp_with_their_links(otlp_receiver, impl, fn, protocol):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_receiver.http_endpoint + "/v1/traces")
    processor = RingBufferSpanProcessor(exporter, schedule_delay_millis=20, correlator=Correlator)
    provider = TracerProvider(resource=Resource.create({"service.name": "capture-tests"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    fid = fn("checkout", level="full")
    try:
        with tracer.start_as_current_span("POST /checkout"):
            token = runtime.enter(fid, {"cart": [1, 2], "card_token": "tok_123"})
            with tracer.start_as_current_span("INSERT orders"):
                pass
            runtime.exit(token, {"id": 7})
        assert processor.force_flush(10_000)
        spans = {s["name"]: s for s in otlp_receiver.wait_for(3, timeout=10)}
    finally:
        processor.shutdown(5000)
    request, func, sql = spans["POST /checkout"], spans["checkout"], spans["INSERT orders"]
    assert func["parent_span_id"] == request["span_id"]
    assert sql["parent_span_id"] == func["span_id"]
    assert func["trace_id"] == request["trace_id"] == sql["trace_id"]
    assert func["kind"] == "INTERNAL"
    assert func["resource"]["service.name"] == "capture-tests"  # learnt from the SDK spans
    attrs = func["attributes"]
    assert attrs["code.function.name"] == "checkout" and attrs["scope.kind"] == "function"
    assert attrs["scope.arg.cart"] == "[1, 2]" and attrs["scope.arg.card_token"] == "[REDACTED]"
    assert attrs["scope.return"] == "{'id': 7}"


def test_function_spans_ended_before_any_sdk_span_get_the_providers_resource(impl, fn):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    resource = Resource.create({"service.name": "given"})
    processor = RingBufferSpanProcessor(exporter, schedule_delay_millis=20, resource=resource,
                                        correlator=Correlator)
    try:
        runtime.exit(runtime.enter(fn("early")))
        assert processor.force_flush(5000)
        (span,) = exporter.get_finished_spans()
        assert span.resource.attributes["service.name"] == "given"
    finally:
        processor.shutdown(2000)
