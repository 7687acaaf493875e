"""Exporters: OTLP (gRPC and HTTP, the stock classes with a C request encoder,
:mod:`scope_otel.export.otlp`) and ClickHouse; ``factory`` builds them from
the configuration.

``ClickHouseSpanExporter`` is loaded on first access, so importing this
package stays cheap and never imports chDB or clickhouse-connect.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ClickHouseSpanExporter"]


def __getattr__(name: str) -> Any:
    if name == "ClickHouseSpanExporter":
        from scope_otel.export.clickhouse import ClickHouseSpanExporter

        return ClickHouseSpanExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
