"""``scope-otel collect``'s receivers: both OTLP protocols, limits, auth, malformed input, backpressure."""
from __future__ import annotations

import gzip
import json
import threading

import grpc
import pytest
import requests
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from scope_otel.collect.collector import Collector
from scope_otel.collect.intake import span_count

PROTOBUF = {"Content-Type": "application/x-protobuf"}


class RecordingSink:
    """A store stand-in that keeps what it was given; *gate* holds writes while unset."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.gate = gate
        self.writing = threading.Event()

    def export_otlp(self, request):
        self.writing.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.requests.append(request)
        return SpanExportResult.SUCCESS

    def span_names(self) -> list[str]:
        return sorted(s.name for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans)


@pytest.fixture
def sink():
    return RecordingSink()


@pytest.fixture
def collector(sink):
    c = Collector(sink, grpc_port=0, http_port=0).start()
    yield c
    c.stop()


def make_request(n: int = 1, name: str = "op", pad: int = 0) -> trace_service_pb2.ExportTraceServiceRequest:
    request = trace_service_pb2.ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for i in range(n):
        span = scope_spans.spans.add(name=name, trace_id=bytes(range(16)), span_id=(i + 1).to_bytes(8, "big"))
        if pad:
            span.attributes.add(key="pad").value.string_value = "x" * pad
    return request


def send_with(exporter, names: list[str]) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for name in names:
        with tracer.start_as_current_span(name):
            pass
    provider.shutdown()


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip], ids=["plain", "gzip"])
def test_grpc_exporter_spans_reach_the_store(collector, sink, compression):
    send_with(GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True, compression=compression), ["a", "b"])
    assert collector.intake.drain(5)
    assert sink.span_names() == ["a", "b"]


def test_http_protobuf_gzip_exporter_spans_reach_the_store(collector, sink):
    send_with(HttpExporter(endpoint=collector.http_endpoint, compression=Compression.Gzip), ["c", "d"])
    assert collector.intake.drain(5)
    assert sink.span_names() == ["c", "d"]
    assert collector.stats()["http_responses"] == {200: 2}


def test_http_json_with_hex_ids_is_decoded(collector, sink):
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
                               "scopeSpans": [{"spans": [{
                                   "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                                   "parentSpanId": "eee19b7ec3c1b173", "name": "json-span", "kind": 2,
                                   "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
                                   "links": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "0000000000000001"}],
                                   "unknownFieldIsIgnored": 1}]}]}]}
    r = requests.post(collector.http_endpoint, data=gzip.compress(json.dumps(body).encode()),
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {}
    assert collector.intake.drain(5)
    span = sink.requests[0].resource_spans[0].scope_spans[0].spans[0]
    assert (span.name, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex()) == (
        "json-span", "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert span.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert span.links[0].span_id.hex() == "0000000000000001"


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"\xff\xff\xff\xff", PROTOBUF, "not an OTLP ExportTraceServiceRequest"),
        (b"{not json", {"Content-Type": "application/json"}, "not OTLP/JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
         {"Content-Type": "application/json"}, "not OTLP/JSON"),
        (b"plain", {**PROTOBUF, "Content-Encoding": "gzip"}, "not valid gzip"),
        (gzip.compress(b"x" * 100)[:20], {**PROTOBUF, "Content-Encoding": "gzip"}, "truncated gzip"),
    ],
    ids=["protobuf", "json-syntax", "json-bad-hex-id", "gzip-garbage", "gzip-truncated"],
)
def test_malformed_body_gets_400_with_reason_and_server_keeps_serving(collector, sink, body, headers, reason):
    r = requests.post(collector.http_endpoint, data=body, headers=headers, timeout=5)
    assert r.status_code == 400
    status = status_pb2.Status()
    if r.headers["Content-Type"] == "application/json":
        json_format.Parse(r.text, status)
    else:
        status.ParseFromString(r.content)
    assert reason in status.message
    ok = requests.post(collector.http_endpoint, data=make_request().SerializeToString(), headers=PROTOBUF, timeout=5)
    assert ok.status_code == 200


def test_unsupported_media_type_and_encoding_get_415(collector):
    r = requests.post(collector.http_endpoint, data=b"x", headers={"Content-Type": "text/plain"}, timeout=5)
    assert r.status_code == 415
    r = requests.post(collector.http_endpoint, data=b"x", headers={**PROTOBUF, "Content-Encoding": "br"}, timeout=5)
    assert r.status_code == 415


def test_wrong_path_and_method_are_refused(collector):
    base = collector.http_endpoint.rsplit("/v1/traces", 1)[0]
    assert requests.post(base + "/v1/metrics", data=b"", headers=PROTOBUF, timeout=5).status_code == 404
    r = requests.get(collector.http_endpoint, timeout=5)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


def test_oversized_http_body_gets_413_and_server_keeps_serving(sink):
    c = Collector(sink, grpc_port=None, http_port=0, max_request_bytes=1024).start()
    try:
        big = make_request(50, pad=100).SerializeToString()
        assert requests.post(c.http_endpoint, data=big, headers=PROTOBUF, timeout=5).status_code == 413
        small = make_request(1).SerializeToString()
        assert requests.post(c.http_endpoint, data=small, headers=PROTOBUF, timeout=5).status_code == 200
    finally:
        c.stop()


def test_large_oversized_body_still_gets_413_not_a_connection_reset(sink):
    c = Collector(sink, grpc_port=None, http_port=0, max_request_bytes=64 << 10).start()
    try:
        r = requests.post(c.http_endpoint, data=b"\0" * (2 << 20), headers=PROTOBUF, timeout=10)
        assert r.status_code == 413
        assert "exceeds 65536" in status_pb2.Status.FromString(r.content).message
    finally:
        c.stop()


def test_gzip_bomb_is_cut_off_at_the_decompressed_limit(sink):
    c = Collector(sink, grpc_port=None, http_port=0, max_decompressed_bytes=64 << 10).start()
    try:
        bomb = gzip.compress(b"\0" * (8 << 20))  # 8 MiB of zeros in ~8 KiB
        assert len(bomb) < 64 << 10
        r = requests.post(c.http_endpoint, data=bomb, headers={**PROTOBUF, "Content-Encoding": "gzip"}, timeout=5)
        assert r.status_code == 413
        status = status_pb2.Status.FromString(r.content)
        assert "decompressed body exceeds 65536 bytes" in status.message
        assert sink.requests == []
    finally:
        c.stop()


def test_oversized_grpc_message_is_refused_with_resource_exhausted(sink):
    c = Collector(sink, grpc_port=0, http_port=None, max_decompressed_bytes=4096).start()
    try:
        with grpc.insecure_channel(c.grpc_endpoint) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(make_request(100, pad=100), timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            stub.Export(make_request(1), timeout=5)  # still serving
    finally:
        c.stop()


def test_bearer_token_is_required_on_both_protocols_when_set(sink):
    c = Collector(sink, grpc_port=0, http_port=0, token="s3cret").start()
    try:
        body = make_request(1, name="authed").SerializeToString()
        assert requests.post(c.http_endpoint, data=body, headers=PROTOBUF, timeout=5).status_code == 401
        wrong = {**PROTOBUF, "Authorization": "Bearer nope"}
        assert requests.post(c.http_endpoint, data=body, headers=wrong, timeout=5).status_code == 401
        right = {**PROTOBUF, "Authorization": "Bearer s3cret"}
        assert requests.post(c.http_endpoint, data=body, headers=right, timeout=5).status_code == 200

        with grpc.insecure_channel(c.grpc_endpoint) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(make_request(1), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        send_with(GrpcExporter(endpoint=c.grpc_endpoint, insecure=True, headers={"authorization": "Bearer s3cret"}),
                  ["authed"])
        assert c.intake.drain(5)
        assert sink.span_names() == ["authed", "authed"]
    finally:
        c.stop()


def test_without_a_token_requests_need_no_authorization(collector, sink):
    body = make_request(1, name="open").SerializeToString()
    assert requests.post(collector.http_endpoint, data=body, headers=PROTOBUF, timeout=5).status_code == 200


def test_slow_store_gets_backpressure_not_unbounded_memory():
    gate = threading.Event()
    slow = RecordingSink(gate)
    request = make_request(10, pad=200)
    size = request.ByteSize()
    c = Collector(slow, grpc_port=0, http_port=0, max_queue_bytes=5 * size).start()
    try:
        body = request.SerializeToString()
        statuses = []
        for _ in range(12):
            r = requests.post(c.http_endpoint, data=body, headers=PROTOBUF, timeout=5)
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert r.headers["Retry-After"] == "1"
                assert "retry later" in status_pb2.Status.FromString(r.content).message
        assert slow.writing.wait(5)
        assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}

        with grpc.insecure_channel(c.grpc_endpoint) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(info.value.trailing_metadata())
        retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert retry.retry_delay.seconds == 1

        stats = c.stats()
        assert stats["peak_bytes"] <= 5 * size
        assert stats["rejected_requests"] == 8
        gate.set()  # the store catches up: everything accepted is written, then new requests flow again
        assert c.intake.drain(5)
        assert requests.post(c.http_endpoint, data=body, headers=PROTOBUF, timeout=5).status_code == 200
        assert c.intake.drain(5)
        stats = c.stats()
        assert stats["written_spans"] == stats["accepted_spans"] == 6 * 10
        assert sum(span_count(r) for r in slow.requests) == 60
    finally:
        gate.set()
        c.stop()


def test_store_failures_are_counted_and_do_not_stop_the_receiver():
    class BrokenSink:
        def export_otlp(self, request):
            raise ConnectionError("clickhouse is down")

    c = Collector(BrokenSink(), grpc_port=None, http_port=0).start()
    try:
        for _ in range(3):
            body = make_request(2).SerializeToString()
            assert requests.post(c.http_endpoint, data=body, headers=PROTOBUF, timeout=5).status_code == 200
        assert c.intake.drain(5)
        assert c.stats()["failed_spans"] == 6
    finally:
        c.stop()


def test_requests_racing_shutdown_get_unavailable_not_busy(collector):
    collector.intake.close()
    body = make_request(1).SerializeToString()
    r = requests.post(collector.http_endpoint, data=body, headers=PROTOBUF, timeout=5)
    assert r.status_code == 503 and "shutting down" in status_pb2.Status.FromString(r.content).message
    with grpc.insecure_channel(collector.grpc_endpoint) as channel:
        with pytest.raises(grpc.RpcError) as info:
            trace_service_pb2_grpc.TraceServiceStub(channel).Export(make_request(1), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_keep_alive_connection_survives_refused_requests_with_unread_bodies(sink):
    c = Collector(sink, grpc_port=None, http_port=0, token="t").start()
    try:
        body = make_request(1, name="after").SerializeToString()
        refused = b'{"resourceSpans": []}'  # left unread, it would be taken for the next request line
        with requests.Session() as session:
            assert session.post(c.http_endpoint, data=refused, headers=PROTOBUF, timeout=5).status_code == 401
            base = c.http_endpoint.rsplit("/v1/traces", 1)[0]
            assert session.post(base + "/v1/logs", data=refused, headers=PROTOBUF, timeout=5).status_code == 404
            ok = session.post(c.http_endpoint, data=body, headers={**PROTOBUF, "Authorization": "Bearer t"}, timeout=5)
            assert ok.status_code == 200
        assert c.intake.drain(5)
        assert sink.span_names() == ["after"]
    finally:
        c.stop()
