"""``Collector``: the OTLP receivers of ``scope-otel collect`` around one bounded intake.

::

    from scope_otel.export import ClickHouseSpanExporter
    collector = Collector(ClickHouseSpanExporter(".scope-otel"), grpc_port=4317, http_port=4318).start()
    ...
    collector.stop()     # refuses new requests, writes what was accepted

Anything with ``export_otlp(ExportTraceServiceRequest) -> SpanExportResult``
can be the sink.  A port of 0 picks a free one (see ``grpc_port`` /
``http_port`` after ``start``); ``None`` disables that protocol.  The limits:

``max_request_bytes``       largest HTTP body on the wire (default 4 MiB)
``max_decompressed_bytes``  largest request once decompressed (default 16 MiB;
                            the gRPC message limit too)
``max_queue_bytes``         requests accepted but not yet written (default 64 MiB);
                            beyond it clients are told to retry
``max_http_connections``    HTTP connections served at once (default 64; an idle
                            keep-alive connection holds one for up to 30 s)
"""
from __future__ import annotations

import logging
import threading
import time

from scope_otel.collect.intake import Intake, OTLPSink
from scope_otel.collect.otlp_grpc import OTLPGrpcServer
from scope_otel.collect.otlp_http import OTLPHTTPServer

_log = logging.getLogger(__name__)


class Collector:
    """OTLP gRPC + HTTP receivers feeding *sink* through a bounded queue."""

    def __init__(
        self,
        sink: OTLPSink,
        *,
        host: str = "127.0.0.1",
        grpc_port: int | None = 4317,
        http_port: int | None = 4318,
        token: str | None = None,
        max_request_bytes: int = 4 << 20,
        max_decompressed_bytes: int = 16 << 20,
        max_queue_bytes: int = 64 << 20,
        max_http_connections: int = 64,
        retry_after_s: int = 1,
    ) -> None:
        if grpc_port is None and http_port is None:
            raise ValueError("at least one of the gRPC and HTTP ports is needed")
        for name, value in (("max_request_bytes", max_request_bytes),
                            ("max_decompressed_bytes", max_decompressed_bytes),
                            ("max_queue_bytes", max_queue_bytes),
                            ("max_http_connections", max_http_connections)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if retry_after_s < 0:
            raise ValueError(f"retry_after_s must not be negative, got {retry_after_s}")
        self.host = host
        self.intake = Intake(sink, max_bytes=max_queue_bytes, batch_bytes=min(4 << 20, max_queue_bytes))
        self._grpc: OTLPGrpcServer | None = None
        self._http: OTLPHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._stop_s: float | None = None
        try:
            if grpc_port is not None:
                self._grpc = OTLPGrpcServer((host, grpc_port), self.intake, token=token,
                                            max_message_bytes=max_decompressed_bytes,
                                            retry_after_s=retry_after_s)
            if http_port is not None:
                self._http = OTLPHTTPServer((host, http_port), self.intake, token=token,
                                            max_request_bytes=max_request_bytes,
                                            max_decompressed_bytes=max_decompressed_bytes,
                                            max_connections=max_http_connections,
                                            retry_after_s=retry_after_s)
        except (OSError, RuntimeError) as exc:
            self._close_listeners()
            raise OSError(f"cannot listen on {host} ({exc}); is another collector running?") from exc

    @property
    def grpc_port(self) -> int | None:
        return self._grpc.port if self._grpc else None

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    @property
    def grpc_endpoint(self) -> str | None:
        """``host:port`` for OTLP gRPC exporters."""
        return f"{self._url_host}:{self.grpc_port}" if self._grpc else None

    @property
    def http_endpoint(self) -> str | None:
        """``http://host:port/v1/traces`` for OTLP HTTP exporters."""
        return f"http://{self._url_host}:{self.http_port}/v1/traces" if self._http else None

    @property
    def _url_host(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    def start(self) -> "Collector":
        self.intake.start()
        if self._grpc:
            self._grpc.start()
        if self._http:
            self._http_thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                                                 name="scope-otel-collect-http", daemon=True)
            self._http_thread.start()
        return self

    def stats(self) -> dict:
        """Intake counters plus HTTP responses by status."""
        out: dict = self.intake.stats()
        if self._http:
            out["http_responses"] = dict(self._http.responses)
        if self._stop_s is not None:
            out["stop_s"] = round(self._stop_s, 3)  # closing listeners + writing what was queued
        return out

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop listening, write everything accepted; False if the store did not finish in *timeout*."""
        began = time.monotonic()
        self._close_listeners()
        done = self.intake.close(timeout)
        self._stop_s = time.monotonic() - began
        if not done:
            _log.error("scope-otel collect: the store did not finish within %.0f s; %d bytes of spans dropped",
                       timeout, self.intake.stats()["held_bytes"])
        return done

    def _close_listeners(self) -> None:
        if self._grpc:
            self._grpc.stop()
        if self._http:
            self._http.stopping = True
            if self._http_thread is not None:
                self._http.shutdown()
            self._http.server_close()
