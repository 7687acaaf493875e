"""OTLP/HTTP trace receiver: ``POST /v1/traces``, protobuf or JSON, optionally gzip.

Answers, per the OTLP specification:

=====  ==========================================================================
200    accepted (queued for the store); body ``ExportTraceServiceResponse``
400    malformed body; body is a ``google.rpc.Status`` whose message says why
401    ``Authorization: Bearer <token>`` missing or wrong (when a token is set)
411    no ``Content-Length`` (chunked bodies are refused to keep memory bounded)
413    body over ``max_request_bytes`` or, decompressed, over ``max_decompressed_bytes``
415    unsupported ``Content-Type`` or ``Content-Encoding``
429    the store is behind; ``Retry-After`` says when to try again
503    the collector is shutting down
=====  ==========================================================================

Error bodies are encoded like the request (protobuf or JSON).  Connections are
served by at most ``max_connections`` threads; beyond that the listener stops
accepting and the kernel backlog applies TCP backpressure.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import socket
import socketserver
import threading
import zlib
from http.server import BaseHTTPRequestHandler, HTTPServer

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from scope_otel.collect._auth import bearer_ok
from scope_otel.collect.intake import Intake

PATH = "/v1/traces"
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_GRPC_INVALID_ARGUMENT, _GRPC_UNAVAILABLE, _GRPC_RESOURCE_EXHAUSTED = 3, 14, 8
_log = logging.getLogger(__name__)


class Rejected(Exception):
    """A request the receiver answers with an HTTP error and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` without ever holding more than *limit* bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("identity", "none", ""):
        return body
    if encoding not in ("gzip", "deflate"):
        raise Rejected(415, f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or none)")
    inflater = zlib.decompressobj(wbits=(16 + zlib.MAX_WBITS) if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise Rejected(400, f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise Rejected(413, f"decompressed body exceeds {limit} bytes")
    if not inflater.eof:
        raise Rejected(400, f"body is truncated {encoding}")
    return out


def parse(body: bytes, content_type: str) -> tuple[ExportTraceServiceRequest, bool]:
    """Decode an OTLP trace request; returns it and whether it was JSON."""
    media = (content_type or "").split(";")[0].strip().lower()
    request = ExportTraceServiceRequest()
    if media == _PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise Rejected(400, f"body is not an OTLP ExportTraceServiceRequest: {exc}") from None
        return request, False
    if media == _JSON:
        try:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise ValueError("top level is not an object")
            _hex_ids_to_base64(document)
            json_format.ParseDict(document, request, ignore_unknown_fields=True)
        except (ValueError, json_format.ParseError, binascii.Error, TypeError, AttributeError) as exc:
            raise Rejected(400, f"body is not OTLP/JSON: {exc}") from None
        return request, True
    raise Rejected(415, f"unsupported Content-Type {content_type!r} (use {_PROTOBUF} or {_JSON})")


def _hex_ids_to_base64(document: dict) -> None:
    # OTLP/JSON writes trace and span ids as hex, while protobuf's JSON
    # mapping expects bytes as base64: convert in place before ParseDict.
    def fix(obj: dict, keys: tuple[str, ...]) -> None:
        for key in keys:
            value = obj.get(key)
            if isinstance(value, str) and value:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()

    for rs in document.get("resourceSpans") or document.get("resource_spans") or ():
        for ss in rs.get("scopeSpans") or rs.get("scope_spans") or ():
            for span in ss.get("spans") or ():
                fix(span, ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"))
                for link in span.get("links") or ():
                    fix(link, ("traceId", "trace_id", "spanId", "span_id"))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse connections
    server: "OTLPHTTPServer"
    timeout = 30  # a stalled client cannot hold a thread forever

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        self._body_read = False
        as_json = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() == _JSON
        try:
            request, as_json, nbytes = self._read_request()
        except Rejected as exc:
            self._fail(exc.status, exc.reason, as_json)
            return
        if not self.server.intake.offer(request, nbytes):
            if self.server.intake.closed:
                self._fail(503, "the collector is shutting down", as_json,
                           {"Retry-After": str(self.server.retry_after_s)}, code=_GRPC_UNAVAILABLE)
                return
            self._fail(429, "the store is behind; retry later", as_json,
                       {"Retry-After": str(self.server.retry_after_s)}, code=_GRPC_RESOURCE_EXHAUSTED)
            return
        self.server.count(200)
        response = ExportTraceServiceResponse()
        if as_json:
            self._send(200, json_format.MessageToJson(response).encode(), _JSON)
        else:
            self._send(200, response.SerializeToString(), _PROTOBUF)

    def do_GET(self) -> None:  # noqa: N802
        self._fail(405 if self.path.split("?")[0] == PATH else 404, f"only POST {PATH} is served", False,
                   {"Allow": "POST"} if self.path.split("?")[0] == PATH else None)

    do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815

    def _read_request(self) -> tuple[ExportTraceServiceRequest, bool, int]:
        if self.path.split("?")[0] != PATH:
            raise Rejected(404, f"unknown path {self.path!r}; OTLP traces go to {PATH}")
        if not bearer_ok(self.headers.get("Authorization"), self.server.token):
            raise Rejected(401, "missing or wrong bearer token")
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise Rejected(411, "chunked bodies are not accepted; send Content-Length")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise Rejected(411, "Content-Length is required")
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            raise Rejected(400, f"bad Content-Length {length_header!r}") from None
        if length > self.server.max_request_bytes:
            self._discard(length)
            raise Rejected(413, f"body of {length} bytes exceeds {self.server.max_request_bytes}")
        body = self.rfile.read(length)
        self._body_read = True
        if len(body) != length:
            raise Rejected(400, f"body ended after {len(body)} of {length} bytes")
        raw = decompress(body, self.headers.get("Content-Encoding", ""), self.server.max_decompressed_bytes)
        request, as_json = parse(raw, self.headers.get("Content-Type", ""))
        return request, as_json, len(raw)

    def _discard(self, length: int, cap: int = 8 << 20) -> None:
        # Reading (and dropping) a moderately oversized body lets the client
        # see the 413 instead of a connection reset; beyond *cap* we hang up.
        left = min(length, cap)
        while left > 0:
            chunk = self.rfile.read(min(left, 64 << 10))
            if not chunk:
                break
            left -= len(chunk)

    def _fail(self, status: int, reason: str, as_json: bool, headers: dict | None = None,
              code: int = _GRPC_INVALID_ARGUMENT) -> None:
        self.server.count(status)
        status_msg = status_pb2.Status(code=code, message=reason)
        if as_json:
            body, media = json_format.MessageToJson(status_msg).encode(), _JSON
        else:
            body, media = status_msg.SerializeToString(), _PROTOBUF
        if not getattr(self, "_body_read", True) or status >= 500:
            # An unread body would be parsed as the next request on this connection.
            self.close_connection = True
            headers = {**(headers or {}), "Connection": "close"}
        self._send(status, body, media, headers)

    def _send(self, status: int, body: bytes, media: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server API
        _log.debug("collect http: " + format, *args)


class OTLPHTTPServer(socketserver.ThreadingMixIn, HTTPServer):
    """The HTTP side of ``scope-otel collect`` (see module docs)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        intake: Intake,
        *,
        token: str | None = None,
        max_request_bytes: int = 4 << 20,
        max_decompressed_bytes: int = 16 << 20,
        max_connections: int = 32,
        retry_after_s: int = 1,
    ) -> None:
        self.intake = intake
        self.token = token
        self.max_request_bytes = max_request_bytes
        self.max_decompressed_bytes = max_decompressed_bytes
        self.retry_after_s = retry_after_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._counts_lock = threading.Lock()
        self.responses: dict[int, int] = {}
        self.stopping = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def count(self, status: int) -> None:
        with self._counts_lock:
            self.responses[status] = self.responses.get(status, 0) + 1

    def process_request(self, request, client_address) -> None:
        # Waiting here stops accept(): the bound on threads (and so on
        # bodies held in memory at once) is the number of slots.
        while not self._slots.acquire(timeout=0.2):
            if self.stopping:
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
