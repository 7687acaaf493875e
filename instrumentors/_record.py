"""What an integration records beside its own spans: events on the current
span (also inside functions recorded by the capture runtime), and the
capture level that decides how much of a value is shown."""
from __future__ import annotations

from typing import Any

from opentelemetry.trace import get_current_span as _get_current_span


def level() -> str:
    """The current capture level (``off``, ``boundaries`` or ``full``)."""
    try:
        from scope_otel import config

        return config.current().level
    except Exception:
        return "boundaries"


def add_event(tracer: Any, name: str, attributes: dict[str, Any], carrier: bool = True, span: Any = None) -> None:
    """Put an event on the current span (or ``span``, when the caller has
    just looked it up), wherever the code is.

    Inside a function recorded by the capture runtime the current span is
    that function's (a ``NonRecordingSpan``: its real span is made later, off
    the hot path) and cannot take events.  Then, with ``carrier``, a
    zero-length INTERNAL span named ``name`` — a child of the function —
    carries the event instead, so state changes stay attached to the call
    that made them.  Without a current span the event is dropped.
    """
    if span is None:
        span = _get_current_span()
    if span.is_recording():
        span.add_event(name, attributes)
    elif carrier and span.get_span_context().is_valid:
        child = tracer.start_span(name, attributes={"scope.kind": "event"})
        child.add_event(name, attributes)
        child.end()


def capture_runtime():
    """``scope_otel.capture.runtime``: the function-level recorder integrations hand events to."""
    from scope_otel.capture import runtime

    return runtime
