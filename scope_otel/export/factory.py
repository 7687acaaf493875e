"""Build the span exporters named by ``traces_exporter`` from the configuration.

``otlp`` picks the gRPC or HTTP/protobuf exporter by ``exporter_otlp_protocol``
(the stock exporters with scope-otel's C request encoder, ``export.otlp``);
``console`` and ``none`` are the SDK's; ``clickhouse`` is scope-otel's own
exporter writing to the ``store`` (embedded chDB by default).  OTLP settings
that came from the environment are left for the SDK exporters to read
themselves (so per-signal variables keep their meaning); settings from a
config file are passed explicitly.  The export timeout is always passed: it is
in milliseconds (``OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT``, as the OpenTelemetry
specification says), where the Python SDK alone would read it as seconds.

Each exporter is wrapped in a :class:`Destination`, which keeps its account
(exported, failed by reason) for the exit summary.
"""
from __future__ import annotations

import collections
from typing import Any, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from scope_otel.config import Config, ConfigError


def build_exporters(config: Config) -> list["Destination"]:
    """One :class:`Destination` per name in ``config.traces_exporter`` (``none`` gives none)."""
    exporters: list[Destination] = []
    for name in config.traces_exporter:
        if name == "none":
            continue
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(Destination(ConsoleSpanExporter(), "console"))
        elif name == "otlp":
            exporter = _otlp(config)
            exporters.append(Destination(exporter, f"otlp {_otlp_where(exporter, config)}"))
        elif name == "clickhouse":
            exporter = _clickhouse(config)
            target = exporter.target
            where = target.display if target.kind != "chdb" else f"{config.store} (embedded)"
            word = "spooled for the store writer" if target.kind == "chdb" else "written"
            exporters.append(Destination(exporter, f"clickhouse {where}", word=word))
        else:  # config validation makes this unreachable; keep the message anyway
            raise ConfigError(f"traces_exporter: unknown exporter {name!r}")
    return exporters


def _otlp_where(exporter: Any, config: Config) -> str:
    endpoint = getattr(exporter, "_endpoint", None) or config.exporter_otlp_endpoint or "?"
    return f"{config.exporter_otlp_protocol} {endpoint}"


def _clickhouse(config: Config) -> SpanExporter:
    from scope_otel.export.clickhouse import ClickHouseSpanExporter

    # a bare path is embedded chDB; the exporter resolves it (scope_otel.store.target)
    return ClickHouseSpanExporter(url=config.store, database=config.database,
                                  spool_max_bytes=config.spool_max_mb << 20)


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
    kwargs: dict = {"timeout": config.exporter_otlp_timeout / 1000.0}
    if "exporter_otlp_headers" in from_file:
        kwargs["headers"] = dict(from_file["exporter_otlp_headers"])
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


class Destination(SpanExporter):
    """One exporter and its account: spans exported, failed by reason.

    ``word`` is what success means for this destination ("exported" for
    OTLP; "spooled for the store writer" for the embedded store, which a
    separate process writes later), so a report never calls it more.
    """

    def __init__(self, exporter: SpanExporter, name: str, word: str = "exported") -> None:
        self.exporter = exporter
        self.name = name
        self.word = word
        self.exported = 0
        self.failed: collections.Counter = collections.Counter()
        self.last_failure: str | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
            reason = None if result is SpanExportResult.SUCCESS else (
                getattr(self.exporter, "last_failure", None) or "the exporter reported a failure")
        except Exception as exc:  # an exporter bug must not take the pipeline down
            result, reason = SpanExportResult.FAILURE, f"exporter raised {type(exc).__name__}: {exc}"
        if reason is None:
            self.exported += len(spans)
            return SpanExportResult.SUCCESS
        self.failed[reason] += len(spans)
        self.last_failure = f"{self.name}: {reason}"
        return SpanExportResult.FAILURE

    def abort(self) -> None:
        abort = getattr(self.exporter, "abort", None)
        if callable(abort):
            abort()

    def account(self) -> dict[str, Any]:
        """``{"name", "word", "exported", "failed": {reason: spans}}`` plus the exporter's own stats."""
        out: dict[str, Any] = {"name": self.name, "word": self.word, "exported": self.exported,
                               "failed": dict(self.failed)}
        stats = getattr(self.exporter, "stats", None)
        if callable(stats):
            try:
                out["stats"] = stats()
            except Exception:
                pass
        return out

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.exporter.shutdown()


class FanOutExporter(SpanExporter):
    """Send every batch to several exporters; one failing does not stop the others."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.exporters = list(exporters)
        self.last_failure: str | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = SpanExportResult.SUCCESS
        reasons = []
        for exporter in self.exporters:
            try:
                if exporter.export(spans) is not SpanExportResult.SUCCESS:
                    result = SpanExportResult.FAILURE
                    reasons.append(getattr(exporter, "last_failure", None) or "the exporter reported a failure")
            except Exception as exc:  # an exporter bug must not take the others down
                result = SpanExportResult.FAILURE
                reasons.append(f"exporter raised {type(exc).__name__}: {exc}")
        if reasons:
            self.last_failure = "; ".join(reasons)
        return result

    def abort(self) -> None:
        for exporter in self.exporters:
            abort = getattr(exporter, "abort", None)
            if callable(abort):
                try:
                    abort()
                except Exception:
                    pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(e.force_flush(timeout_millis) for e in self.exporters)

    def shutdown(self) -> None:
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception:
                pass
