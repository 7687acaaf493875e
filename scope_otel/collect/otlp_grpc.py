"""OTLP/gRPC trace receiver: opentelemetry-proto's generated ``TraceService``.

Status codes, per the OTLP specification:

* ``OK`` — accepted (queued for the store);
* ``INVALID_ARGUMENT`` — the message is not an ``ExportTraceServiceRequest``
  (counted in ``client_errors["malformed"]``);
* ``UNAUTHENTICATED`` — ``authorization: Bearer <token>`` metadata missing or wrong;
* ``UNAVAILABLE`` — the collector is shutting down (retryable);
* ``RESOURCE_EXHAUSTED`` — the store is behind, with ``google.rpc.RetryInfo``
  in the trailers (``google.rpc.retryinfo-bin``, read by the OpenTelemetry
  exporters) saying when to retry; also what gRPC itself answers for a
  message over ``max_message_bytes`` (compressed or not) and when more than
  ``max_concurrent_rpcs`` calls are in flight.

The service is registered with a handler that takes the message as bytes
and decodes it here: with the generated servicer, gRPC itself decoded it and
answered a malformed one with ``INTERNAL`` (a server fault, which clients
retry) instead of ``INVALID_ARGUMENT``.
"""
from __future__ import annotations

import threading
from concurrent import futures

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from scope_otel.collect._auth import bearer_ok
from scope_otel.collect.intake import Intake


_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, intake: Intake, token: str | None, retry_after_s: int) -> None:
        self._intake = intake
        self._token = token
        self.client_errors: dict[str, int] = {}
        self._lock = threading.Lock()
        retry = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after_s))
        status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="the store is behind; retry later")
        status.details.add().Pack(retry)
        self._busy_trailers = (
            ("google.rpc.retryinfo-bin", retry.SerializeToString()),
            ("grpc-status-details-bin", status.SerializeToString()),
        )

    def export_bytes(self, raw: bytes, context):
        """``Export`` for a message gRPC left undecoded."""
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            request.ParseFromString(raw)
        except DecodeError as exc:
            with self._lock:
                self.client_errors["malformed"] = self.client_errors.get("malformed", 0) + 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an OTLP ExportTraceServiceRequest: {exc}")
        return self.Export(request, context)

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
        self._service = _TraceService(intake, token, retry_after_s)
        export = grpc.unary_unary_rpc_method_handler(
            self._service.export_bytes,
            request_deserializer=None,  # bytes: decoded, and refused if malformed, by export_bytes
            response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
        )
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {"Export": export}),))
        host, port = address
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self._server.add_insecure_port(bind)
        if not self.port:
            raise OSError(f"cannot listen for OTLP/gRPC on {bind}")

    @property
    def client_errors(self) -> dict[str, int]:
        return dict(self._service.client_errors)

    def start(self) -> "OTLPGrpcServer":
        self._server.start()
        return self

    def stop(self, grace: float = 2.0) -> None:
        self._server.stop(grace).wait(grace + 1)
