"""scope-otel's OTLP exporters against a real receiver, over real gRPC and HTTP.

Each test runs with the C encoder and with the stock (pure-Python) one: the
spans a collector decodes must be the same, and so must everything around the
encoding (compression, headers, environment variables, timeouts, shutdown).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import types

import pytest
from grpc import Compression as GrpcCompression
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from scope_otel.capture import RingBufferSpanProcessor
from scope_otel.export import otlp
from scope_otel.export.otlp import OTLPGrpcSpanExporter, OTLPHttpSpanExporter

_C_BUILT = otlp._load_c() is not None


@pytest.fixture(params=["c", "python"])
def impl(request):
    """Run the test with the C encoder and with the stock one."""
    if request.param == "c" and not _C_BUILT:
        pytest.skip("_otlpenc not built (no compiler); stock encoder only")
    assert otlp.use_implementation(pure=request.param == "python") == request.param
    try:
        yield request.param
    finally:
        otlp.use_implementation(pure=None)


def make_spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop", "deployment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.otlp", "0.1")
    remote = SpanContext(0x5B8EFFF798038103D269B633813FC60C, 0xEEE19B7EC3C1B174, is_remote=True)
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER,
                                      attributes={"http.method": "GET", "retries": 3, "ratio": 0.5,
                                                  "ok": True, "tags": ["a", "b"], "quote": 'say "hi"\n'}) as root:
        root.add_event("cache miss", {"key": "order:1"})
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT,
                                          links=[Link(remote, {"why": "queue"})]) as child:
            child.set_status(Status(StatusCode.ERROR, "timeout"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def check_received(received: list[dict], sent: list[ReadableSpan], transport: str) -> None:
    by_name = {s["name"]: s for s in received}
    assert sorted(by_name) == sorted(s.name for s in sent)
    for span in sent:
        got = by_name[span.name]
        assert got["transport"] == transport
        assert got["trace_id"] == f"{span.context.trace_id:032x}"
        assert got["span_id"] == f"{span.context.span_id:016x}"
        assert got["parent_span_id"] == (f"{span.parent.span_id:016x}" if span.parent else None)
        assert got["attributes"] == {k: list(v) if isinstance(v, tuple) else v for k, v in span.attributes.items()}
        assert got["resource"]["service.name"] == "shop" and got["resource"]["deployment"] == "test"
        assert got["scope"] == "tests.otlp"
        assert got["start_ns"] == span.start_time and got["end_ns"] == span.end_time
    root, child = by_name["GET /orders"], by_name["SELECT orders"]
    assert root["kind"] == "SERVER" and child["kind"] == "CLIENT"
    assert root["events"] == [{"name": "cache miss", "attributes": {"key": "order:1"}}]
    assert child["links"] == [{"trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174"}]
    assert child["status"] == 2  # STATUS_CODE_ERROR
    assert child["parent_span_id"] == root["span_id"]


def exporter_to(receiver, protocol: str, **kwargs):
    """scope-otel's OTLP exporter for ``protocol`` ("grpc" or "http"), sending to the test receiver."""
    if protocol == "grpc":
        return OTLPGrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, **kwargs)
    return OTLPHttpSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces", **kwargs)


def test_grpc_export_reaches_the_receiver(impl, otlp_receiver):
    spans = make_spans()
    exporter = exporter_to(otlp_receiver, "grpc")
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    check_received(otlp_receiver.wait_for(len(spans)), spans, "grpc")


def test_http_export_reaches_the_receiver(impl, otlp_receiver):
    spans = make_spans()
    exporter = exporter_to(otlp_receiver, "http")
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    check_received(otlp_receiver.wait_for(len(spans)), spans, "http")


def test_gzip_and_headers_over_grpc(impl, otlp_receiver):
    spans = make_spans()
    exporter = exporter_to(otlp_receiver, "grpc", compression=GrpcCompression.Gzip, headers={"x-tenant": "acme"})
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    check_received(otlp_receiver.wait_for(len(spans)), spans, "grpc")
    assert otlp_receiver.headers[-1]["x-tenant"] == "acme"


def test_gzip_and_headers_over_http(impl, otlp_receiver):
    spans = make_spans()
    exporter = exporter_to(otlp_receiver, "http", compression=HttpCompression.Gzip, headers={"x-tenant": "acme"})
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    check_received(otlp_receiver.wait_for(len(spans)), spans, "http")
    headers = otlp_receiver.headers[-1]
    assert headers["content-encoding"] == "gzip" and headers["x-tenant"] == "acme"
    assert headers["content-type"] == "application/x-protobuf"


def test_environment_variables_configure_both_exporters(impl, otlp_receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp_receiver.grpc_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-from-env=yes")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    spans = make_spans()
    exporter = OTLPGrpcSpanExporter()
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    otlp_receiver.wait_for(len(spans))
    assert otlp_receiver.headers[-1]["x-from-env"] == "yes"

    otlp_receiver.clear()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp_receiver.http_endpoint + "/v1/traces")
    exporter = OTLPHttpSpanExporter()
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    check_received(otlp_receiver.wait_for(len(spans)), spans, "http")
    assert otlp_receiver.headers[-1]["x-from-env"] == "yes"
    assert otlp_receiver.headers[-1]["content-encoding"] == "gzip"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export_in_thread(exporter, spans, bound: float):
    """``exporter.export(spans)`` on a thread; (returned?, result, exception)."""
    out: dict = {}

    def run():
        try:
            out["result"] = exporter.export(spans)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    return not thread.is_alive(), out.get("result"), out.get("error")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_down_endpoint_fails_the_batch_without_raising_or_hanging(impl, protocol, caplog):
    port = _closed_port()
    if protocol == "grpc":
        exporter = OTLPGrpcSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, timeout=1)
    else:
        exporter = OTLPHttpSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=1)
    try:
        with caplog.at_level(logging.CRITICAL):
            returned, result, error = _export_in_thread(exporter, make_spans(), bound=30)
    finally:
        exporter.shutdown()
    assert returned, "export did not return"
    assert error is None
    assert result is SpanExportResult.FAILURE


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_span_that_cannot_be_encoded_does_not_lose_its_batch(impl, protocol, otlp_receiver, caplog):
    """A lone surrogate in a span name: sent escaped; an id too large for OTLP: that span alone is dropped."""
    good = make_spans()
    surrogate = ReadableSpan("bad \udcff name", context=SpanContext(1, 2, False),
                             status=Status(StatusCode.ERROR, "broken \udcfe text"))
    too_big = ReadableSpan("id too large", context=SpanContext(1 << 130, 3, False))
    spans = good + [surrogate, too_big]
    exporter = exporter_to(otlp_receiver, protocol)
    try:
        with caplog.at_level(logging.WARNING, logger="scope_otel.export.otlp"):
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert any("1 span(s) had text that cannot be encoded escaped, 1 dropped" in r.getMessage()
                   for r in caplog.records)
    finally:
        exporter.shutdown()
    received = otlp_receiver.wait_for(len(good) + 1)
    assert sorted(s["name"] for s in received) == sorted([s.name for s in good] + ["bad \\udcff name"])
    check_received([s for s in received if s["name"] != "bad \\udcff name"], good, protocol)
    assert otlp_receiver.requests == 1  # still one request


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_batch_with_no_encodable_span_fails_without_raising(impl, protocol, otlp_receiver, caplog):
    spans = [ReadableSpan("id too large", context=SpanContext(1 << 130, 3, False))]
    exporter = exporter_to(otlp_receiver, protocol)
    try:
        with caplog.at_level(logging.ERROR, logger="scope_otel.export.otlp"):
            assert exporter.export(spans) is SpanExportResult.FAILURE
        assert any("Failed to encode span batch" in r.getMessage() for r in caplog.records)
        good = make_spans()
        assert exporter.export(good) is SpanExportResult.SUCCESS  # the exporter still works
    finally:
        exporter.shutdown()
    check_received(otlp_receiver.wait_for(len(good)), good, protocol)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_export_after_shutdown_fails_quietly(impl, protocol, otlp_receiver):
    exporter = exporter_to(otlp_receiver, protocol)
    exporter.shutdown()
    assert exporter.export(make_spans()) is SpanExportResult.FAILURE
    exporter.shutdown()  # twice is fine
    assert otlp_receiver.requests == 0


def test_grpc_reconnects_after_the_receiver_comes_back(impl, otlp_receiver):
    """UNAVAILABLE makes the stock exporter rebuild its channel; the rebuilt one
    must send pre-encoded requests too."""
    exporter = OTLPGrpcSpanExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True, timeout=5)
    try:
        spans = make_spans()
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter._initialize_channel_and_stub()  # what the retry loop does on UNAVAILABLE
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert len(otlp_receiver.wait_for(2 * len(spans))) == 2 * len(spans)


def test_ring_buffer_processor_with_the_grpc_exporter(impl, otlp_receiver):
    """The product's default pipeline, end to end."""
    exporter = OTLPGrpcSpanExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True)
    processor = RingBufferSpanProcessor(exporter, schedule_delay_millis=20, capture_functions=False)
    provider = TracerProvider(resource=Resource.create({"service.name": "ring"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("ring")
    for i in range(300):
        with tracer.start_as_current_span("outer", attributes={"i": i}):
            with tracer.start_as_current_span("inner"):
                pass
    assert processor.force_flush(10_000)
    provider.shutdown()
    received = otlp_receiver.wait_for(600)
    assert len(received) == 600
    assert sorted(s["attributes"]["i"] for s in received if s["name"] == "outer") == list(range(300))
    by_id = {s["span_id"]: s for s in received}
    assert all(by_id[s["parent_span_id"]]["name"] == "outer" for s in received if s["name"] == "inner")
    assert {s["service_name"] for s in received} == {"ring"}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_factory_builds_these_exporters_from_a_config_file(impl, protocol, otlp_receiver, tmp_path):
    from scope_otel.config import load
    from scope_otel.export.factory import build_exporters

    endpoint = otlp_receiver.grpc_endpoint if protocol == "grpc" else otlp_receiver.http_endpoint
    (tmp_path / "scope-otel.toml").write_text(
        f'traces_exporter = ["otlp"]\nexporter_otlp_protocol = "{protocol}"\n'
        f'exporter_otlp_endpoint = "{endpoint}"\nexporter_otlp_compression = "gzip"\n'
        f'exporter_otlp_headers = {{ "x-file" = "1" }}\nexporter_otlp_timeout = 5000\n'
    )
    config = load(env={}, cwd=str(tmp_path), config_file=str(tmp_path / "scope-otel.toml"))
    [destination] = build_exporters(config)
    exporter = destination.exporter
    timeout = exporter._timeout if protocol == "grpc" else exporter._client._timeout
    assert timeout == 5.0  # milliseconds in the file, seconds for the SDK
    assert type(exporter) is (OTLPGrpcSpanExporter if protocol == "grpc" else OTLPHttpSpanExporter)
    spans = make_spans()
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    check_received(otlp_receiver.wait_for(len(spans)), spans, "grpc" if protocol == "grpc" else "http")
    assert otlp_receiver.headers[-1]["x-file"] == "1"


@pytest.mark.parametrize("module", [None, types.ModuleType("_otlpenc")], ids=["missing", "placeholder"])
def test_without_the_accelerator_the_stock_encoder_is_used(module, monkeypatch, otlp_receiver):
    import scope_otel.export

    monkeypatch.delattr(scope_otel.export, "_otlpenc", raising=False)
    monkeypatch.setitem(sys.modules, "scope_otel.export._otlpenc", module)
    try:
        assert otlp._load_c() is None
        assert otlp.use_implementation(pure=False) == "python"
        spans = make_spans()
        exporter = OTLPGrpcSpanExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True)
        try:
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        check_received(otlp_receiver.wait_for(len(spans)), spans, "grpc")
    finally:
        monkeypatch.undo()
        otlp.use_implementation(pure=None)
    pure_env = os.environ.get("SCOPE_OTEL_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes", "on")
    assert otlp.IMPLEMENTATION == ("c" if _C_BUILT and not pure_env else "python")
