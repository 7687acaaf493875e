"""OTLP/gRPC trace receiver: opentelemetry-proto's generated ``TraceService``.

Status codes, per the OTLP specification:

* ``OK`` — accepted (queued for the store);
* ``UNAUTHENTICATED`` — ``authorization: Bearer <token>`` metadata missing or wrong;
* ``UNAVAILABLE`` — the collector is shutting down (retryable);
* ``RESOURCE_EXHAUSTED`` — the store is behind, with ``google.rpc.RetryInfo``
  in the trailers (``google.rpc.retryinfo-bin``, read by the OpenTelemetry
  exporters) saying when to retry; also what gRPC itself answers for a
  message over ``max_message_bytes`` (compressed or not) and when more than
  ``max_concurrent_rpcs`` calls are in flight.

gRPC decodes (and gunzips) the message before the servicer runs, so a
malformed message never reaches this code: gRPC answers it with ``INTERNAL``
and keeps serving.
"""
from __future__ import annotations

from concurrent import futures

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from scope_otel.collect._auth import bearer_ok
from scope_otel.collect.intake import Intake


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, intake: Intake, token: str | None, retry_after_s: int) -> None:
        self._intake = intake
        self._token = token
        retry = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after_s))
        status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="the store is behind; retry later")
        status.details.add().Pack(retry)
        self._busy_trailers = (
            ("google.rpc.retryinfo-bin", retry.SerializeToString()),
            ("grpc-status-details-bin", status.SerializeToString()),
        )

    def Export(self, request, context):  # noqa: N802 - generated API
        if self._token and not bearer_ok(dict(context.invocation_metadata()).get("authorization"), self._token):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        if not self._intake.offer(request, request.ByteSize()):
            if self._intake.closed:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the collector is shutting down")
            context.set_trailing_metadata(self._busy_trailers)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the store is behind; retry later")
        return trace_service_pb2.ExportTraceServiceResponse()


class OTLPGrpcServer:
    """The gRPC side of ``scope-otel collect`` (see module docs)."""

    def __init__(
        self,
        address: tuple[str, int],
        intake: Intake,
        *,
        token: str | None = None,
        max_message_bytes: int = 16 << 20,
        max_concurrent_rpcs: int = 64,
        workers: int = 8,
        retry_after_s: int = 1,
    ) -> None:
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scope-otel-collect-grpc"),
            maximum_concurrent_rpcs=max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", 1 << 20),
            ],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _TraceService(intake, token, retry_after_s), self._server
        )
        host, port = address
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self._server.add_insecure_port(bind)
        if not self.port:
            raise OSError(f"cannot listen for OTLP/gRPC on {bind}")

    def start(self) -> "OTLPGrpcServer":
        self._server.start()
        return self

    def stop(self, grace: float = 2.0) -> None:
        self._server.stop(grace).wait(grace + 1)
