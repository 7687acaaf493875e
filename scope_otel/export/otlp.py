"""The OTLP span exporters (gRPC and HTTP/protobuf) with a C request encoder.

``OTLPGrpcSpanExporter`` and ``OTLPHttpSpanExporter`` are the stock
``OTLPSpanExporter`` classes of opentelemetry-exporter-otlp-proto-grpc and
-http: same constructor, same ``OTEL_EXPORTER_OTLP_*`` variables, retries and
backoff, compression, headers, timeouts and shutdown.  Only the encoding step
differs: the stock exporters build a tree of protobuf message objects in
Python (~44 us per span of 10 attributes); here ``_otlpenc.c`` writes the
serialized ``ExportTraceServiceRequest`` directly, byte-identical to the stock
output.  Where the accelerator is not built, or ``SCOPE_OTEL_PURE_PYTHON=1``,
the stock encoder is used.

Where the stock encoder drops an attribute it cannot encode (a lone surrogate,
an int beyond int64, a type that is not str/bool/int/float/bytes/Sequence/
Mapping/None), the C one drops the same attribute and logs it on the same
logger.  The differences, all about failures:

- a batch the encoder refuses (a span name with a lone surrogate, an id that
  does not fit) is not lost: it is encoded span by span, a failing span is
  sent with its text escaped, and only a span that still cannot be encoded
  is dropped, with one log line (the stock exporters fail the whole batch,
  and the gRPC one raises);
- a batch is encoded once per export, not once per retry;
- an attribute value nested past the 100 sub-message levels protobuf decoders
  accept (lists of lists ~47 deep) is dropped; the stock encoder drops most of
  these too, but at some depths fails the whole batch or sends a request that
  collectors reject.

And about a backend that is down, silent or slow:

- ``last_failure`` says in a few words why the last batch failed
  (``UNAVAILABLE: connection refused``, ``no answer within 10 s``, ``HTTP 503``);
  the span processor counts failed spans by it;
- ``abort()`` gives up now: the request in flight is cancelled (gRPC), no
  retry is waited for, and later batches fail at once; the span processor
  calls it when its shutdown time is up, so a dead backend cannot hold the
  program's exit;
- the stock exporters' per-retry log lines ("Transient error ... retrying")
  are not emitted from scope-otel's export threads: the processor tells the
  user once per process instead (``scope_otel.notice``) and counts the rest.

    from scope_otel.export.otlp import OTLPGrpcSpanExporter
    exporter = OTLPGrpcSpanExporter(endpoint="localhost:4317", insecure=True)
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import grpc

from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _SPAN_KIND_MAP
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as _stock_encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as _StockGrpcExporter
from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError, _is_request_too_large
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as _StockHttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import Status, StatusCode

from scope_otel.accelerators import pure_python_requested

__all__ = ["OTLPGrpcSpanExporter", "OTLPHttpSpanExporter", "encode_request", "IMPLEMENTATION", "use_implementation"]

_logger = logging.getLogger(__name__)
# the stock encoder logs a dropped attribute on its own logger; so do we
_stock_encoder_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal")

_TRACE_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

#: Loggers of the stock exporters whose retry and failure lines scope-otel
#: replaces (on its own export threads only) by counted, once-per-process notices.
_STOCK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
)


class _QuietOnOurThreads(logging.Filter):
    """Drop the stock exporters' records emitted by scope-otel's own threads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith("scope-otel")


_quiet = _QuietOnOurThreads()
for _name in _STOCK_LOGGERS:
    logging.getLogger(_name).addFilter(_quiet)


def _short(text: object, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _grpc_reason(error: grpc.RpcError, timeout_s: float) -> str:
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else str(error)
    name = getattr(code, "name", "ERROR")
    if name == "DEADLINE_EXCEEDED":
        return f"no answer within the {timeout_s:g} s export timeout (DEADLINE_EXCEEDED)"
    lowered = (details or "").lower()
    for phrase in ("connection refused", "connection reset", "no route to host", "name resolution",
                   "dns resolution failed", "handshake"):
        if phrase in lowered:
            return f"{name}: {phrase}"
    return _short(f"{name}: {details}")


def _http_reason(sent: Any, timeout_s: float) -> str:
    if sent.status_code is not None:
        return _short(f"HTTP {sent.status_code} {sent.reason or ''}".strip())
    error = sent.error
    if error is None:
        return "no answer before the export timeout, retries exhausted or shutdown"
    name = type(error).__name__
    lowered = str(error).lower()
    if "timeout" in name.lower() or "timed out" in lowered:
        return f"no answer within the {timeout_s:g} s export timeout ({name})"
    for phrase in ("connection refused", "connection reset", "remote end closed", "name or service not known"):
        if phrase in lowered:
            return f"{name}: {phrase}"
    return _short(f"{name}: {error}")


class _Aborted(grpc.RpcError):
    """Raised instead of sending once the exporter was aborted (not retryable)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    def details(self) -> str:
        return "aborted: the exit deadline passed"

    def trailing_metadata(self) -> tuple:
        return ()


def _encode_python(spans: Sequence[ReadableSpan]) -> bytes:
    """The stock encoder: protobuf message objects, then serialized."""
    return _stock_encode_spans(spans).SerializeToString()


def _on_drop(key: object, error: BaseException) -> None:
    _stock_encoder_logger.error("Failed to encode key %s: %s", key, error, exc_info=error)


def _load_c() -> Callable[[Sequence[ReadableSpan]], bytes] | None:
    """The C encoder, set up once; None where it is not built."""
    try:
        from scope_otel.export import _otlpenc
    except ImportError:
        return None
    if not hasattr(_otlpenc, "encode_spans"):  # placeholder build
        return None
    if getattr(_otlpenc, "_scope_otel_ready", False):
        return _otlpenc.encode_spans
    _otlpenc.setup(
        {
            "Sequence": Sequence,
            "Mapping": Mapping,
            "kind_map": {kind: int(value) for kind, value in _SPAN_KIND_MAP.items()},
            "status_codes": {code: code.value for code in StatusCode},
            "on_drop": _on_drop,
        }
    )
    _otlpenc._scope_otel_ready = True
    return _otlpenc.encode_spans


def use_implementation(pure: bool | None = None) -> str:
    """Pick the encoder: the C one unless ``pure`` (or, when ``pure`` is None,
    ``SCOPE_OTEL_PURE_PYTHON=1``) asks for the stock one.  Returns "c" or "python"."""
    global encode_request, IMPLEMENTATION
    if pure is None:
        pure = pure_python_requested()
    native = None if pure else _load_c()
    encode_request = native or _encode_python
    IMPLEMENTATION = "c" if native else "python"
    return IMPLEMENTATION


encode_request: Callable[[Sequence[ReadableSpan]], bytes]
"""``encode_request(spans) -> bytes``: the serialized ExportTraceServiceRequest."""
IMPLEMENTATION: str
use_implementation()


def _encode(spans: Sequence[ReadableSpan]) -> bytes:
    """The request for ``spans``, losing as little as possible.

    A batch the encoder refuses (a lone surrogate in a span or event name or
    status description, an id that does not fit) is encoded span by span: a
    span that fails is retried with its text escaped (``\\udcff``), and only
    a span that still fails is dropped.  Serialized requests concatenated are
    one valid request (protobuf merges repeated fields), so the rest of the
    batch goes out as usual.  Raises only when no span at all can be encoded.
    """
    try:
        return encode_request(spans)
    except Exception as error:  # noqa: BLE001 - salvaged below
        first = error
    parts, escaped, lost = [], 0, 0
    for span in spans:
        try:
            parts.append(encode_request([span]))
            continue
        except Exception:  # noqa: BLE001
            pass
        try:
            parts.append(encode_request([_escaped(span)]))
            escaped += 1
        except Exception:  # noqa: BLE001
            lost += 1
    if not parts:
        raise first
    _logger.warning("span batch: %d span(s) had text that cannot be encoded escaped, %d dropped (%s)",
                    escaped, lost, first)
    return b"".join(parts)


def _text(value: object) -> object:
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else value


def _texts(attributes: Any) -> dict:
    return {_text(k): _text(v) for k, v in (attributes or {}).items()}


def _escaped(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` whose names, description and string values are valid UTF-8."""
    status = span.status
    return ReadableSpan(
        name=_text(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_texts(span.attributes),
        events=[Event(_text(e.name), _texts(e.attributes), e.timestamp) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=Status(status.status_code, _text(status.description)) if status.description else status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class _Encoded:
    """A batch already encoded, handed through the stock gRPC export loop."""

    __slots__ = ("body", "count")

    def __init__(self, body: bytes, count: int) -> None:
        self.body = body
        self.count = count


class _PreEncodedTraceStub:
    """``TraceServiceStub`` whose Export takes the request as bytes and notes why it failed."""

    def __init__(self, channel, exporter: "OTLPGrpcSpanExporter") -> None:
        kwargs = dict(request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString)
        try:
            self._call = channel.unary_unary(_TRACE_EXPORT_METHOD, _registered_method=True, **kwargs)
        except TypeError:  # a grpcio without registered methods
            self._call = channel.unary_unary(_TRACE_EXPORT_METHOD, **kwargs)
        self._exporter = exporter

    def Export(self, request, metadata=None, timeout=None):  # noqa: N802 - the stub's API
        exporter = self._exporter
        if exporter._aborted:
            exporter.last_failure = "not sent: the exit deadline passed"
            raise _Aborted()
        try:
            return self._call(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as error:
            exporter.last_failure = _grpc_reason(error, exporter._timeout)
            if exporter._aborted:
                exporter.last_failure = "cancelled: the exit deadline passed"
            raise


class OTLPGrpcSpanExporter(_StockGrpcExporter):
    """The stock OTLP/gRPC span exporter, sending requests encoded by :func:`encode_request`."""

    last_failure: str | None = None
    _aborted = False

    def _initialize_channel_and_stub(self) -> None:
        # called at construction and again on reconnection
        self._stub = lambda channel: _PreEncodedTraceStub(channel, self)
        super()._initialize_channel_and_stub()

    def abort(self) -> None:
        """Give up now: cancel the request in flight, wait for no retry, fail later batches."""
        self._aborted = True
        self._shutdown_in_progress.set()
        channel = self._channel
        if channel is not None:
            channel.close()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            self.last_failure = "the exporter was already shut down"
            return self._export(_Encoded(b"", len(spans)))  # logs and fails, as stock
        try:
            body = _encode(spans)
        except Exception as error:  # noqa: BLE001 - one bad batch must not raise into the processor
            _logger.error("Failed to encode span batch: %s", error)
            self.last_failure = _short(f"could not encode the batch: {error}")
            with self._metrics.export_operation(len(spans)) as result:
                result.error = error
            return SpanExportResult.FAILURE
        result = self._export(_Encoded(body, len(spans)))
        if result is not SpanExportResult.SUCCESS and self._aborted:
            self.last_failure = "cancelled: the exit deadline passed"
        return result

    def _translate_data(self, data) -> bytes:
        return data.body if isinstance(data, _Encoded) else encode_request(data)

    def _count_data(self, data) -> int:
        return data.count if isinstance(data, _Encoded) else len(data)


class OTLPHttpSpanExporter(_StockHttpExporter):
    """The stock OTLP/HTTP (protobuf) span exporter, with :func:`encode_request` as its encoder."""

    last_failure: str | None = None
    _aborted = False

    def abort(self) -> None:
        """Give up now: wait for no retry and fail later batches (a request in flight ends at its timeout)."""
        self._aborted = True
        event = getattr(self._client, "_shutdown_event", None)
        if event is not None:
            event.set()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._aborted:
            self.last_failure = "not sent: the exit deadline passed"
            return SpanExportResult.FAILURE
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            self.last_failure = "the exporter was already shut down"
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                body = _encode(spans)
            except Exception as error:  # noqa: BLE001 - as the stock exporter
                _logger.error("Failed to encode span batch: %s", error)
                self.last_failure = _short(f"could not encode the batch: {error}")
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(body, self._max_request_size):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                    len(body), self._max_request_size,
                )
                self.last_failure = f"batch of {len(body)} bytes exceeds max_request_size"
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(body)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(body)  # compression, retries, timeout: the stock client
            if not sent.success:
                self.last_failure = _http_reason(sent, getattr(self._client, "_timeout", 10.0))
                if self._aborted:
                    self.last_failure = "cancelled: the exit deadline passed"
                result.error = sent.error
                if sent.status_code is not None:
                    result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
