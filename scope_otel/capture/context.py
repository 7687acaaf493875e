"""Make SDK spans started inside a recorded function that function's children.

Function calls are recorded without creating SDK spans, so the OpenTelemetry
context does not know about them.  Rather than attaching a context on every
call, the runtime keeps its own innermost-call token in a ContextVar and this
module wraps OpenTelemetry's runtime context so that ``get_current()`` returns,
*only when asked*, the OTel context plus a ``NonRecordingSpan`` carrying the
function's trace id and span id.  The context is built once per call that is
asked about and cached in the token.

The overlay applies only while the token is the innermost thing: the token
remembers the OTel context object current at ``enter`` and the overlay is
used only if that object is still current.  When an SDK span is attached
inside the function, that span is current instead (and, having been started
from the overlay, it is already the function's child).

:func:`install` swaps ``opentelemetry.context._RUNTIME_CONTEXT`` once;
:func:`raw_getter` returns the cheapest way to read the underlying context.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Callable

import opentelemetry.context as _otel_context
from opentelemetry.context.context import Context, _RuntimeContext
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from scope_otel.capture.records import LEVEL, OTEL_CTX, OVERLAY, SPAN_ID, TRACE_ID

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)


class OverlayRuntimeContext(_RuntimeContext):
    """An OTel runtime context that adds the innermost recorded function."""

    def __init__(self, inner: _RuntimeContext, current: Callable[[], Any], disabled: Any) -> None:
        self.inner = inner
        self._inner_get = inner.get_current
        self.current = current  # the hot path's "innermost call" reader; replaceable
        self._disabled = disabled

    def attach(self, context: Context) -> Any:
        return self.inner.attach(context)

    def detach(self, token: Any) -> None:
        self.inner.detach(token)

    def get_current(self) -> Context:
        base = self._inner_get()
        token = self.current()
        if token is None or token is self._disabled or token[OTEL_CTX] is not base:
            return base
        overlay = token[OVERLAY]
        if overlay is None:
            # a level-0 token marks a trace sampled out as a whole: SDK spans inside, and the
            # processes it calls, see it unsampled and record nothing of it either
            flags = _SAMPLED if token[LEVEL] else _UNSAMPLED
            span = NonRecordingSpan(SpanContext(token[TRACE_ID], token[SPAN_ID], False, flags))
            overlay = token[OVERLAY] = set_span_in_context(span, base)
        return overlay


def install(current: Callable[[], Any], disabled: Any) -> OverlayRuntimeContext:
    """Wrap OpenTelemetry's runtime context (idempotent)."""
    existing = _otel_context._RUNTIME_CONTEXT
    if isinstance(existing, OverlayRuntimeContext):
        existing.current = current
        return existing
    overlay = OverlayRuntimeContext(existing, current, disabled)
    _otel_context._RUNTIME_CONTEXT = overlay
    return overlay


def raw_source(overlay: OverlayRuntimeContext) -> ContextVar | Callable[[], Context]:
    """The ContextVar holding the *underlying* current context (no overlay),
    or, for another runtime context implementation, its ``get_current``."""
    var = getattr(overlay.inner, "_current_context", None)
    if isinstance(var, ContextVar):
        return var
    return overlay.inner.get_current


def raw_getter(overlay: OverlayRuntimeContext) -> Callable[[], Context]:
    """The fastest reader of the underlying current context."""
    source = raw_source(overlay)
    return source.get if isinstance(source, ContextVar) else source


__all__ = ["OverlayRuntimeContext", "install", "raw_getter", "raw_source"]
