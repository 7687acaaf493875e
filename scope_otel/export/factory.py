"""Build the span exporters named by ``traces_exporter`` from the configuration.

``otlp`` picks the gRPC or HTTP/protobuf exporter by ``exporter_otlp_protocol``
(the stock exporters with scope-otel's C request encoder, ``export.otlp``);
``console`` and ``none`` are the SDK's; ``clickhouse`` is scope-otel's own
exporter writing to the ``store`` (embedded chDB by default).  OTLP settings
that came from the environment are left for the SDK exporters to read
themselves (so per-signal variables keep their meaning); settings from a
config file are passed explicitly.
"""
from __future__ import annotations

from typing import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from scope_otel.config import Config, ConfigError


def build_exporters(config: Config) -> list[SpanExporter]:
    """One exporter per name in ``config.traces_exporter`` (``none`` gives none)."""
    exporters: list[SpanExporter] = []
    for name in config.traces_exporter:
        if name == "none":
            continue
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp(config))
        elif name == "clickhouse":
            exporters.append(_clickhouse(config))
        else:  # config validation makes this unreachable; keep the message anyway
            raise ConfigError(f"traces_exporter: unknown exporter {name!r}")
    return exporters


def _clickhouse(config: Config) -> SpanExporter:
    from scope_otel.export.clickhouse import ClickHouseSpanExporter

    # a bare path is embedded chDB; the exporter resolves it (scope_otel.store.target)
    return ClickHouseSpanExporter(url=config.store, database=config.database)


def _otlp(config: Config) -> SpanExporter:
    from_file = {
        key: getattr(config, key)
        for key in (
            "exporter_otlp_endpoint",
            "exporter_otlp_headers",
            "exporter_otlp_compression",
            "exporter_otlp_timeout",
        )
        if config.source(key).startswith("file")
    }
    kwargs: dict = {}
    if "exporter_otlp_headers" in from_file:
        kwargs["headers"] = dict(from_file["exporter_otlp_headers"])
    if "exporter_otlp_timeout" in from_file:
        kwargs["timeout"] = from_file["exporter_otlp_timeout"] / 1000.0
    if config.exporter_otlp_protocol == "grpc":
        from grpc import Compression

        from scope_otel.export.otlp import OTLPGrpcSpanExporter

        if "exporter_otlp_compression" in from_file:
            kwargs["compression"] = {
                "gzip": Compression.Gzip, "deflate": Compression.Deflate, "none": Compression.NoCompression,
            }[from_file["exporter_otlp_compression"]]
        if "exporter_otlp_endpoint" in from_file:
            endpoint = from_file["exporter_otlp_endpoint"]
            kwargs["endpoint"] = endpoint
            kwargs["insecure"] = endpoint.startswith("http://")
        return OTLPGrpcSpanExporter(**kwargs)

    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression

    from scope_otel.export.otlp import OTLPHttpSpanExporter

    if "exporter_otlp_compression" in from_file:
        kwargs["compression"] = {
            "gzip": HttpCompression.Gzip, "deflate": HttpCompression.Deflate,
            "none": HttpCompression.NoCompression,
        }[from_file["exporter_otlp_compression"]]
    if "exporter_otlp_endpoint" in from_file:
        kwargs["endpoint"] = from_file["exporter_otlp_endpoint"].rstrip("/") + "/v1/traces"
    return OTLPHttpSpanExporter(**kwargs)


class FanOutExporter(SpanExporter):
    """Send every batch to several exporters; one failing does not stop the others."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.exporters = list(exporters)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = SpanExportResult.SUCCESS
        for exporter in self.exporters:
            try:
                if exporter.export(spans) is not SpanExportResult.SUCCESS:
                    result = SpanExportResult.FAILURE
            except Exception:  # an exporter bug must not take the others down
                result = SpanExportResult.FAILURE
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(e.force_flush(timeout_millis) for e in self.exporters)

    def shutdown(self) -> None:
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception:
                pass
