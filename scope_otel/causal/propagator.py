"""``scope_hlc``: the hybrid logical clock on every hop, inside W3C ``tracestate``.

Inject stamps a send event on this process' clock (:func:`hlc.clock`) and
writes it as the ``scope-otel`` member of ``tracestate``; extract merges a
received one into the local clock, so whatever the receiver does next is
ordered after the send, whatever the two wall clocks say.

Enable it after ``tracecontext`` (it rewrites the ``tracestate`` header that
``tracecontext`` wrote, keeping every other vendor's member)::

    OTEL_PROPAGATORS=tracecontext,baggage,scope_hlc

It is registered as the ``opentelemetry_propagator`` entry point
``scope_hlc``.  Without a valid span in the context nothing is injected, as
W3C requires ``tracestate`` to travel with a ``traceparent``.
"""
from __future__ import annotations

import typing

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace.span import TraceState

from scope_otel.causal.hlc import HLCTimestamp, HybridLogicalClock, clock

#: The tracestate member key carrying the clock.
TRACESTATE_KEY = "scope-otel"
_HEADER = "tracestate"


class HLCPropagator(TextMapPropagator):
    """Carries the hybrid logical clock in ``tracestate`` (see module docs)."""

    def __init__(self, hlc: HybridLogicalClock | None = None) -> None:
        self._hlc = hlc

    @property
    def _clock(self) -> HybridLogicalClock:
        return self._hlc or clock()

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        stamp = self._clock.stamp()
        state = span_context.trace_state or TraceState()
        setter.set(carrier, _HEADER, state.update(TRACESTATE_KEY, stamp).to_header())

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        if context is None:
            context = Context()
        remote = remote_stamp(getter.get(carrier, _HEADER))
        if remote is not None:
            self._clock.update(remote)
        return context

    @property
    def fields(self) -> set[str]:
        return {_HEADER}


def remote_stamp(headers: typing.Iterable[str] | str | None) -> HLCTimestamp | None:
    """The scope-otel HLC in ``tracestate`` header value(s), or None if absent or bad."""
    if not headers:
        return None
    if isinstance(headers, str):
        headers = [headers]
    for header in headers:
        for member in header.split(","):
            key, sep, value = member.strip().partition("=")
            if sep and key == TRACESTATE_KEY:
                try:
                    return HLCTimestamp.decode(value)
                except ValueError:
                    return None
    return None


def stamp_in(state: TraceState | None) -> HLCTimestamp | None:
    """The scope-otel HLC carried by a span context's trace state, if any."""
    if not state:
        return None
    value = state.get(TRACESTATE_KEY)
    if value is None:
        return None
    try:
        return HLCTimestamp.decode(value)
    except ValueError:
        return None
