"""A real OTLP trace receiver for tests: gRPC and HTTP/protobuf on loopback.

Built on opentelemetry-proto's generated ``TraceService`` code (gRPC) and
``ExportTraceServiceRequest`` decoding (HTTP), so tests see exactly what a
collector would receive.  Spans are decoded into plain dicts::

    {"name", "kind", "trace_id", "span_id", "parent_span_id", "attributes",
     "resource", "service_name", "events", "links", "status", "transport"}
"""
from __future__ import annotations

import gzip
import threading
import time
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

KINDS = {v: k.replace("SPAN_KIND_", "") for k, v in PbSpan.SpanKind.items()}


def any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def attributes(kvs) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def decode(request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> list[dict]:
    spans = []
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                spans.append(
                    {
                        "name": span.name,
                        "kind": KINDS.get(span.kind, str(span.kind)),
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "attributes": attributes(span.attributes),
                        "events": [
                            {"name": e.name, "attributes": attributes(e.attributes)} for e in span.events
                        ],
                        "links": [
                            {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                            for link in span.links
                        ],
                        "status": span.status.code,
                        "scope": ss.scope.name,
                        "resource": resource,
                        "service_name": resource.get("service.name"),
                        "transport": transport,
                    }
                )
    return spans


class OTLPReceiver:
    """gRPC + HTTP OTLP trace receiver on free loopback ports."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []  # per request, lower-case names
        self._cond = threading.Condition()
        self._grpc_server: grpc.Server | None = None
        self._http_server: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    # -- endpoints ---------------------------------------------------------
    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base endpoint; the HTTP exporter appends ``/v1/traces``."""
        return f"http://127.0.0.1:{self.http_port}"

    def env(self, protocol: str = "grpc") -> dict[str, str]:
        """Environment that points OTLP exporters at this receiver."""
        endpoint = self.grpc_endpoint if protocol == "grpc" else self.http_endpoint
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> "OTLPReceiver":
        receiver = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 - generated API
                receiver._add(decode(request, "grpc"), dict(context.invocation_metadata()))
                return trace_service_pb2.ExportTraceServiceResponse()

        self._grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self._grpc_server)
        self.grpc_port = self._grpc_server.add_insecure_port("127.0.0.1:0")
        self._grpc_server.start()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - stdlib API
                if self.path.rstrip("/") != "/v1/traces":
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest()
                try:
                    request.ParseFromString(body)
                except Exception as exc:  # malformed body: tell the client
                    self.send_error(400, f"bad protobuf: {exc}")
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._add(decode(request, "http"), headers)
                payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # keep test output quiet
                pass

        self._http_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self._http_server.server_address[1]
        threading.Thread(target=self._http_server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()

    # -- data ----------------------------------------------------------------
    def _add(self, spans: list[dict], headers: dict[str, str]) -> None:
        with self._cond:
            self.requests += 1
            self.headers.append(headers)
            self.spans.extend(spans)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self.spans.clear()

    def wait_for(
        self, count: int = 1, timeout: float = 10.0, where: Callable[[dict], bool] | None = None
    ) -> list[dict]:
        """Wait until ``count`` spans (matching ``where``) arrived; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matching = [s for s in self.spans if where is None or where(s)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return matching
                self._cond.wait(remaining)
