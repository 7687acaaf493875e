"""scope-otel: record what a Python program did, the OpenTelemetry way.

Run a program under ``scope-otel run -- CMD`` (or ``scope-otel-instrument
CMD``); see the README for the whole story.  The public Python surface is
small: :mod:`scope_otel.config` for run-time changes,
``scope_otel.capture.RingBufferSpanProcessor`` and
``scope_otel.export.ClickHouseSpanExporter``.
"""
from scope_otel.version import __version__

__all__ = ["__version__"]
