"""``scope-otel collect`` under hostile or broken clients: idle and slow
connections delay nobody, every connection has deadlines, client mistakes get
a status code and a counter (never a traceback), and gRPC answers malformed
protobuf with ``INVALID_ARGUMENT``."""
from __future__ import annotations

import gc
import logging
import socket
import warnings

import grpc
import pytest
import requests

from scope_otel.collect.collector import Collector
from tests.collect.test_collector import PROTOBUF, RecordingSink, make_request


@pytest.fixture
def sink():
    return RecordingSink()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock


def _response_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def test_a_hundred_idle_and_slow_connections_do_not_keep_a_real_client_waiting(sink):
    # the old server had 64 threads, one per connection, each held up to 30 s by a silent client
    c = Collector(sink, grpc_port=None, http_port=0).start()
    idle = []
    try:
        for i in range(100):
            sock = _connect(c.http_port)
            if i % 2:  # half say nothing, half stop in the middle of their headers
                sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n")
            idle.append(sock)
        # a real exporter is served while all hundred are still open (the timeout only
        # detects a hang: the silent clients would hold the old server's threads for 30 s)
        answer = requests.post(c.http_endpoint, data=make_request(3, "real").SerializeToString(),
                               headers=PROTOBUF, timeout=10)
        assert answer.status_code == 200
    finally:
        for sock in idle:
            sock.close()
        c.stop()
    assert sink.span_names() == ["real"] * 3


def test_a_client_that_stops_in_its_headers_gets_408_and_is_counted(sink):
    c = Collector(sink, grpc_port=None, http_port=0, http_header_timeout_s=0.5).start()
    try:
        sock = _connect(c.http_port)
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
        assert _response_status(sock) == 408
        sock.close()
        assert c.stats()["http_client_errors"] == {"header_timeout": 1}
    finally:
        c.stop()


def test_a_body_shorter_than_its_content_length_gets_a_status_and_a_counter_not_a_traceback(sink, caplog):
    c = Collector(sink, grpc_port=None, http_port=0, http_body_timeout_s=0.5).start()
    body = make_request(2).SerializeToString()
    head = (f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {len(body) + 100}\r\n\r\n").encode()
    try:
        with caplog.at_level(logging.DEBUG):
            # the client keeps its connection open and never sends the rest: 408 at the body deadline
            slow = _connect(c.http_port)
            slow.sendall(head + body)
            assert _response_status(slow) == 408
            slow.close()
            # the client closes its side early: 400, body ended short
            short = _connect(c.http_port)
            short.sendall(head + body)
            short.shutdown(socket.SHUT_WR)
            assert _response_status(short) == 400
            short.close()
            # and the server still serves
            ok = requests.post(c.http_endpoint, data=body, headers=PROTOBUF, timeout=10)
            assert ok.status_code == 200
        errors = c.stats()["http_client_errors"]
        assert errors == {"body_timeout": 1, "short_body": 1}, errors
        assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    finally:
        c.stop()


def test_malformed_protobuf_over_grpc_is_invalid_argument_and_counted(sink):
    c = Collector(sink, grpc_port=0, http_port=None).start()
    try:
        with grpc.insecure_channel(c.grpc_endpoint) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            with pytest.raises(grpc.RpcError) as info:
                export(b"\x0a\xff\xff\xff\xff\x0fnot a protobuf", timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "ExportTraceServiceRequest" in info.value.details()
            # a well-formed one still goes through
            assert export(make_request(1, "fine").SerializeToString(), timeout=10) == b""
        assert c.stats()["grpc_client_errors"] == {"malformed": 1}
    finally:
        c.stop()
    assert sink.span_names() == ["fine"]


def test_stopping_with_connections_open_leaves_no_task_to_be_destroyed_later(sink, caplog):
    """A connection's task still pending when the receiver's event loop ends is destroyed later,
    wherever the garbage collector happens to run: 'Task was destroyed but it is pending!' and, for
    one stopped in its answer's ``drain``, "coroutine 'StreamWriter.drain' was never awaited" (two
    RuntimeWarnings in CI).  Stopping must end every connection's task itself."""
    c = Collector(sink, grpc_port=None, http_port=0).start()
    body = make_request(1, "kept").SerializeToString()
    request = (f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    socks = []
    try:
        for i in range(10):
            sock = _connect(c.http_port)
            sock.sendall(request)
            assert _response_status(sock) == 200  # answered; the connection stays open, idle
            socks.append(sock)
        for i in range(10):  # and some in the middle of their next request
            sock = _connect(c.http_port)
            sock.sendall(request[:30])
            socks.append(sock)
    finally:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR, logger="asyncio"):
            warnings.simplefilter("always")
            c.stop()
            del c
            gc.collect()
        for sock in socks:
            sock.close()
    assert "Task was destroyed" not in caplog.text, caplog.text
    assert not [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert sink.span_names() == ["kept"] * 10
