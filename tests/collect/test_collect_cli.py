"""``scope-otel collect`` as users run it: a subprocess writing into an embedded chDB store."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from scope_otel.store import open_store

SCOPE_OTEL = os.path.join(os.path.dirname(sys.executable), "scope-otel")


def test_spans_over_grpc_and_http_json_land_in_the_store(collect_process):
    collect = collect_process()
    provider = TracerProvider(resource=Resource.create({"service.name": "cli-grpc"}))
    provider.add_span_processor(SimpleSpanProcessor(GrpcExporter(endpoint=collect.grpc_endpoint, insecure=True)))
    with provider.get_tracer("t").start_as_current_span("over-grpc"):
        pass
    provider.shutdown()
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cli-json"}}]},
                               "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c",
                                                          "spanId": "eee19b7ec3c1b174", "name": "over-json",
                                                          "startTimeUnixNano": "1700000000000000000",
                                                          "endTimeUnixNano": "1700000000500000000"}]}]}]}
    r = requests.post(collect.http_endpoint, json=body, timeout=5)
    assert r.status_code == 200
    assert collect.stop() == 0
    stopped = json.loads(collect.output.split("stopped ", 1)[1].splitlines()[0])
    assert stopped["written_spans"] == 2 and stopped["failed_spans"] == 0

    store = open_store(collect.store, "otel")
    try:
        rows = store.query("SELECT ServiceName, SpanName, TraceId FROM otel_traces ORDER BY SpanName").rows
    finally:
        store.close()
    assert rows[0][:2] == ("cli-grpc", "over-grpc")
    assert rows[1] == ("cli-json", "over-json", "5b8efff798038103d269b633813fc60c")


def test_token_from_environment_is_enforced(collect_process):
    collect = collect_process(env={**os.environ, "SCOPE_OTEL_COLLECT_TOKEN": "s3cret"})
    headers = {"Content-Type": "application/x-protobuf"}
    assert requests.post(collect.http_endpoint, data=b"", headers=headers, timeout=5).status_code == 401
    headers["Authorization"] = "Bearer s3cret"
    assert requests.post(collect.http_endpoint, data=b"", headers=headers, timeout=5).status_code == 200


def test_port_in_use_and_bad_arguments_exit_2_with_a_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([SCOPE_OTEL, "collect", "--store", str(tmp_path / "s"), "--grpc-port", "off",
                                 "--http-port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in result.stderr
    result = subprocess.run([SCOPE_OTEL, "collect", "--grpc-port", "70000"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "out of range" in result.stderr
    result = subprocess.run([SCOPE_OTEL, "collect", "--max-queue-size", "lots"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "is not a size" in result.stderr


def test_listening_line_never_shows_a_store_password():
    from scope_otel.collect.cli import _without_password

    assert _without_password("http://default:s3cret@ch:8123") == "http://default:***@ch:8123"
    assert _without_password("https://user@ch:8443") == "https://user@ch:8443"
    assert _without_password("/srv/scope-otel") == "/srv/scope-otel"
