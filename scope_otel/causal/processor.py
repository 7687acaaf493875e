"""``HLCSpanProcessor``: every span starts with a hybrid-logical-clock stamp.

Add it first to the tracer provider::

    provider.add_span_processor(HLCSpanProcessor())
    provider.add_span_processor(BatchSpanProcessor(exporter))

On start each span gets ``scope.hlc`` (the encoded :class:`HLCTimestamp`),
and so does each event added to it later (``add_event``, ``record_exception``),
read from the clock when the event happens.
When the parent is remote and its ``tracestate`` carries a scope-otel stamp,
the stamp is merged first, so a server span is ordered after the client's
send even where only ``tracecontext`` extraction ran.

With an artificial skew (``SCOPE_OTEL_CLOCK_SKEW_MS``) the processor also
shifts the span's start, end and event times by the skew, so a test node
looks exactly like a host whose wall clock is wrong.
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Callable

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from scope_otel.causal.hlc import HybridLogicalClock, clock
from scope_otel.causal.propagator import stamp_in

#: Span attribute holding the encoded clock reading at span start.
HLC_ATTRIBUTE = "scope.hlc"
_log = logging.getLogger(__name__)


class HLCSpanProcessor(SpanProcessor):
    """Stamps ``scope.hlc`` on span start (see module docs)."""

    def __init__(self, hlc: HybridLogicalClock | None = None) -> None:
        self._hlc = hlc
        self._errors = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            hlc = self._hlc or clock()
            # an SDK span keeps its parent's SpanContext: no context lookup
            if type(span) is Span or isinstance(span, Span):
                parent = span.parent
            else:
                parent = trace.get_current_span(parent_context).get_span_context()
            remote = stamp_in(parent.trace_state) if parent is not None and parent.is_remote else None
            stamp = hlc.update(remote).encode() if remote is not None else hlc.stamp()
            try:  # straight into the span's fresh attribute map (no lock: nobody else has the span yet)
                attributes = span._attributes  # noqa: SLF001
                limit = attributes.max_value_len
                if (attributes.maxlen is None or len(attributes) < attributes.maxlen) and (
                    limit is None or len(stamp) <= limit
                ):
                    attributes._dict[HLC_ATTRIBUTE] = stamp  # noqa: SLF001 - a short str, nothing to clean
                else:
                    span.set_attribute(HLC_ATTRIBUTE, stamp)
            except AttributeError:  # not the SDK's BoundedAttributes
                span.set_attribute(HLC_ATTRIBUTE, stamp)
            span.add_event = _stamping(span, hlc)  # this span only; see _stamping
            if hlc.skew_ms and span._start_time is not None:  # noqa: SLF001 - simulated skew
                span._start_time += hlc.skew_ms * 1_000_000  # noqa: SLF001
        except Exception:  # never into the application
            self._failed()

    def _on_ending(self, span: Span) -> None:
        # The SDK calls this hook (private in 1.45) while the span is still
        # mutable and before any exporter sees it: the only place to move the
        # end and event times consistently with the start time.
        try:
            hlc = self._hlc or clock()
            if not hlc.skew_ms:
                return
            shift = hlc.skew_ms * 1_000_000
            if span._end_time is not None:  # noqa: SLF001
                span._end_time += shift  # noqa: SLF001
            for event in span._events:  # noqa: SLF001
                event._timestamp += shift  # noqa: SLF001
        except Exception:
            self._failed()

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    @property
    def errors(self) -> int:
        """Internal failures swallowed so far."""
        return self._errors

    def _failed(self) -> None:
        self._errors += 1
        if self._errors == 1:
            _log.exception("scope-otel: HLC span stamping failed; further failures are only counted")



def _stamping(span: Span, hlc: HybridLogicalClock) -> Callable[..., None]:
    # An instance attribute shadowing Span.add_event: the event's clock must be
    # read when the event is added (a child span started in between orders
    # before it), and patching the SDK class would touch every provider's spans.
    # It holds the span weakly: a strong reference (the bound method) would
    # make every span a reference cycle, freed only by the cyclic collector.
    add = type(span).add_event
    ref = weakref.ref(span)

    def add_event(name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        try:
            attributes = {**(attributes or {}), HLC_ATTRIBUTE: hlc.stamp()}
        except Exception:  # a stamp is never worth losing the event
            pass
        target = ref()
        if target is not None:
            add(target, name, attributes, timestamp)

    return add_event
