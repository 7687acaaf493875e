"""OTLP/HTTP trace receiver: ``POST /v1/traces``, protobuf or JSON, optionally gzip.

Answers, per the OTLP specification:

=====  ==========================================================================
200    accepted (queued for the store); body ``ExportTraceServiceResponse``
400    malformed request or body, or a body shorter than its ``Content-Length``
       (the client closed its side); body is a ``google.rpc.Status`` whose
       message says why
401    ``Authorization: Bearer <token>`` missing or wrong (when a token is set)
408    the request head did not arrive within ``header_timeout_s`` of its first
       byte, or its body within ``body_timeout_s``
411    no ``Content-Length`` (chunked bodies are refused to keep memory bounded)
413    body over ``max_request_bytes`` or, decompressed, over ``max_decompressed_bytes``
415    unsupported ``Content-Type`` or ``Content-Encoding``
429    the store is behind; ``Retry-After`` says when to try again
503    the collector is shutting down
=====  ==========================================================================

Error bodies are encoded like the request (protobuf or JSON).  One asyncio
event loop serves every connection (HTTP/1.1 parsed by ``h11``), so idle or
slow clients hold no thread and delay nobody; each client mistake is answered
with its status where the connection still allows and counted by kind in
``client_errors``, never logged as a traceback.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import socket
import threading
import zlib
from concurrent import futures

import h11

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


class _Failure(Exception):
    """A request answered with an HTTP error (or, when the client is gone, only counted)."""

    def __init__(self, status: int, reason: str, kind: str, code: int = _GRPC_INVALID_ARGUMENT,
                 headers: dict | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.kind, self.code, self.headers = status, reason, kind, code, headers


class OTLPHTTPServer:
    """The HTTP side of ``scope-otel collect`` (see module docs): one asyncio
    event loop serves every connection, HTTP/1.1 parsed by ``h11``.

    An idle or slow connection costs a few kilobytes and no thread, so it
    cannot keep other clients waiting; each one has deadlines (request head
    within ``header_timeout_s``, body within ``body_timeout_s``, an idle
    keep-alive connection is closed after ``idle_timeout_s``).  At most
    ``max_connections`` are open; more are closed at once and counted.
    Decoding and queueing run in a small thread pool, off the loop.
    """

    def __init__(
        self,
        address: tuple[str, int],
        intake: Intake,
        *,
        token: str | None = None,
        max_request_bytes: int = 4 << 20,
        max_decompressed_bytes: int = 16 << 20,
        max_connections: int = 1024,
        retry_after_s: int = 1,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0,
        idle_timeout_s: float = 60.0,
        decode_threads: int = 4,
    ) -> None:
        self.intake = intake
        self.token = token
        self.max_request_bytes = max_request_bytes
        self.max_decompressed_bytes = max_decompressed_bytes
        self.max_connections = max_connections
        self.retry_after_s = retry_after_s
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.responses: dict[int, int] = {}
        #: client mistakes and hang-ups by kind (``header_timeout``, ``body_timeout``, ``short_body``,
        #: ``bad_request``, ``too_many_connections``, ``bad_body``...)
        self.client_errors: dict[str, int] = {}
        self.stopping = False
        self._counts_lock = threading.Lock()
        self._open = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._decoder = futures.ThreadPoolExecutor(max_workers=decode_threads,
                                                   thread_name_prefix="scope-otel-collect-http")
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._stopped = threading.Event()
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(1024)
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def count(self, status: int) -> None:
        with self._counts_lock:
            self.responses[status] = self.responses.get(status, 0) + 1

    def _client_error(self, kind: str) -> None:
        with self._counts_lock:
            self.client_errors[kind] = self.client_errors.get(kind, 0) + 1

    # -- running ------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.2) -> None:  # noqa: ARG002 - socketserver's signature
        """Serve until :meth:`shutdown` (in the calling thread)."""
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving and close every connection; returns once done."""
        self.stopping = True
        if self._loop.is_running() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._stopped.wait(10)

    def server_close(self) -> None:
        self._sock.close()
        self._decoder.shutdown(wait=False)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        if self.stopping:
            return
        server = await asyncio.start_server(self._serve, sock=self._sock, limit=64 << 10)
        try:
            await self._stop.wait()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            # Every task ends before the loop does (as asyncio.run ensures): one left pending is
            # destroyed later, wherever the garbage collector runs ("Task was destroyed but it is
            # pending!", "coroutine 'StreamWriter.drain' was never awaited").  Connections waiting
            # for a client are cancelled; one accepted but not started yet sees ``stopping`` and ends.
            for task in list(self._tasks):
                task.cancel()
            current = asyncio.current_task()
            while pending := [t for t in asyncio.all_tasks() if t is not current]:
                await asyncio.gather(*pending, return_exceptions=True)
            await server.wait_closed()

    # -- one connection -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self.max_connections:
            self._client_error("too_many_connections")
            writer.close()
            return
        self._open += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        self._tasks.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 << 10)
        try:
            while not self.stopping:
                if not await self._serve_one(conn, reader, writer):
                    break
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, OSError):
            self._client_error("connection_reset")
        except Exception as exc:  # a fault of ours: one line, the connection closed, serving goes on
            self._client_error("internal_error")
            _log.warning("scope-otel collect: an HTTP connection failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._open -= 1
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _serve_one(self, conn: h11.Connection, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; False when the connection is to be closed."""
        loop = self._loop
        # an idle keep-alive connection may wait for its next request; once a request
        # begins, its head has header_timeout_s and its body body_timeout_s
        try:
            event = await self._next(conn, reader, loop.time() + self.idle_timeout_s, "idle_timeout",
                                     first=True)
        except _Failure as failure:
            if failure.kind == "idle_timeout":
                return False  # a quiet keep-alive connection: closed without a word
            self._client_error(failure.kind)
            await self._answer(conn, writer, failure, as_json=False)
            return False
        if event is None or isinstance(event, h11.ConnectionClosed):
            return False
        as_json = False
        try:
            if not isinstance(event, h11.Request):
                raise _Failure(400, "expected an HTTP request", "bad_request")
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            as_json = headers.get("content-type", "").split(";")[0].strip().lower() == _JSON
            body = await self._read_body(conn, reader, writer, event, headers)
            request, as_json, nbytes = await loop.run_in_executor(
                self._decoder, self._decode, body, headers)
            accepted = await loop.run_in_executor(self._decoder, self.intake.offer, request, nbytes)
            if not accepted:
                if self.intake.closed:
                    raise _Failure(503, "the collector is shutting down", "", _GRPC_UNAVAILABLE,
                                   {"Retry-After": str(self.retry_after_s)})
                raise _Failure(429, "the store is behind; retry later", "", _GRPC_RESOURCE_EXHAUSTED,
                               {"Retry-After": str(self.retry_after_s)})
        except _Failure as failure:
            if failure.kind:
                self._client_error(failure.kind)
            if failure.status:
                await self._answer(conn, writer, failure, as_json)
            return False if failure.status == 0 or conn.their_state is not h11.DONE else True
        response = ExportTraceServiceResponse()
        self.count(200)  # before the answer, as for failures: a client that has its answer sees it counted
        if as_json:
            await self._send(conn, writer, 200, json_format.MessageToJson(response).encode(), _JSON)
        else:
            await self._send(conn, writer, 200, response.SerializeToString(), _PROTOBUF)
        return True

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader, deadline: float, kind: str,
                    first: bool = False):
        """The next h11 event, reading as needed until ``deadline`` (then ``_Failure(kind)``)."""
        loop = self._loop
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Failure(exc.error_status_hint or 400, f"malformed HTTP: {exc}", "bad_request") from None
            if event is not h11.NEED_DATA:
                return event
            left = deadline - loop.time()
            if left <= 0:
                raise _Failure(408, "the request was not sent in time", kind)
            try:
                data = await asyncio.wait_for(reader.read(64 << 10), left)
            except asyncio.TimeoutError:
                raise _Failure(408, "the request was not sent in time", kind) from None
            if first and data:  # the request began: its head has header_timeout_s from now
                deadline = min(deadline, loop.time() + self.header_timeout_s)
                kind = "header_timeout"
                first = False
            conn.receive_data(data)  # b"" means the peer closed its side

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         event: h11.Request, headers: dict) -> bytes:
        method, path = event.method.decode("latin-1"), event.target.decode("latin-1").split("?")[0]
        if method != "POST":
            raise _Failure(405 if path == PATH else 404, f"only POST {PATH} is served", "bad_request",
                           headers={"Allow": "POST"} if path == PATH else None)
        if path != PATH:
            raise _Failure(404, f"unknown path {event.target.decode('latin-1')!r}; OTLP traces go to {PATH}",
                           "bad_request")
        if not bearer_ok(headers.get("authorization"), self.token):
            raise _Failure(401, "missing or wrong bearer token", "unauthorized")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _Failure(411, "chunked bodies are not accepted; send Content-Length", "bad_request")
        length_header = headers.get("content-length")
        if length_header is None:
            raise _Failure(411, "Content-Length is required", "bad_request")
        length = int(length_header)  # h11 checked it is a number
        if length > self.max_request_bytes:
            raise _Failure(413, f"body of {length} bytes exceeds {self.max_request_bytes}", "too_large")
        if conn.they_are_waiting_for_100_continue:  # curl asks before a body over 1 KiB
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        deadline = self._loop.time() + self.body_timeout_s
        body = bytearray()
        while True:
            try:
                part = await self._next(conn, reader, deadline, "body_timeout")
            except _Failure as failure:
                if failure.kind == "bad_request" and "incomplete" in failure.reason.lower() or \
                        "closed" in failure.reason.lower():
                    raise _Failure(400, f"body ended after {len(body)} of {length} bytes", "short_body") from None
                if failure.kind == "body_timeout":
                    raise _Failure(408, f"body not complete after {self.body_timeout_s:g} s "
                                        f"({len(body)} of {length} bytes)", "body_timeout") from None
                raise
            if isinstance(part, h11.Data):
                body += part.data
            elif isinstance(part, h11.EndOfMessage):
                return bytes(body)
            else:  # ConnectionClosed
                raise _Failure(400, f"body ended after {len(body)} of {length} bytes", "short_body")

    def _decode(self, body: bytes, headers: dict) -> tuple[ExportTraceServiceRequest, bool, int]:
        try:
            raw = decompress(body, headers.get("content-encoding", ""), self.max_decompressed_bytes)
            request, as_json = parse(raw, headers.get("content-type", ""))
        except Rejected as exc:
            raise _Failure(exc.status, exc.reason, "bad_body") from None
        return request, as_json, len(raw)

    async def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter, failure: _Failure,
                      as_json: bool) -> None:
        status_msg = status_pb2.Status(code=failure.code, message=failure.reason)
        if as_json:
            body, media = json_format.MessageToJson(status_msg).encode(), _JSON
        else:
            body, media = status_msg.SerializeToString(), _PROTOBUF
        headers = dict(failure.headers or {})
        if conn.their_state is not h11.DONE or failure.status >= 500:
            headers["Connection"] = "close"  # an unread body would be read as the next request
        self.count(failure.status)
        try:
            await self._send(conn, writer, failure.status, body, media, headers)
        except (h11.LocalProtocolError, ConnectionError, OSError):
            pass  # the client is gone: counted above

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes,
                    media: str, headers: dict | None = None) -> None:
        fields = [("Content-Type", media), ("Content-Length", str(len(body)))]
        fields += list((headers or {}).items())
        data = conn.send(h11.Response(status_code=status, headers=fields))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.body_timeout_s)
