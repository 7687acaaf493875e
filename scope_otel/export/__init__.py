"""Exporters: the standard OTLP ones (see ``factory``) and ClickHouse.

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
