"""``inject`` / ``extract``: trace context and the causal clock over any transport.

For transports scope-otel has no integration for (a custom socket protocol,
a database row used as a queue, a file drop), put a carrier next to the
payload on the sending side and read it back on the receiving side::

    from scope_otel.causal.carrier import inject, extract

    # sender, inside the span that sends
    headers = inject()                        # {"traceparent": ..., "tracestate": ...}
    send(payload, headers)

    # receiver
    ctx = extract(headers)
    with tracer.start_as_current_span("process job", context=ctx, kind=SpanKind.CONSUMER):
        handle(payload)

``inject`` uses the configured propagators (``OTEL_PROPAGATORS``) and always
adds the hybrid logical clock (``scope_hlc``), so the receiver's clock
orders its work after the send even when the propagators were chosen without
it; ``extract`` merges the clock likewise.  Carriers are plain ``str → str``
mappings (header names lowercase), safe to serialise as JSON.
"""
from __future__ import annotations

from typing import Mapping, MutableMapping

from opentelemetry import propagate
from opentelemetry.context import Context

from scope_otel.causal.propagator import HLCPropagator

_hlc = HLCPropagator()


def inject(carrier: MutableMapping[str, str] | None = None, context: Context | None = None) -> MutableMapping[str, str]:
    """Write the current (or *context*'s) trace context and HLC into *carrier*; return it."""
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier, context=context)
    if not _hlc_configured():
        _hlc.inject(carrier, context=context)
    return carrier


def extract(carrier: Mapping[str, str] | None, context: Context | None = None) -> Context:
    """The context a carrier describes (the clock is merged as a side effect)."""
    carrier = _lowercase(carrier or {})
    ctx = propagate.extract(carrier, context=context)
    if not _hlc_configured():
        _hlc.extract(carrier)
    return ctx


def _lowercase(carrier: Mapping) -> dict[str, str]:
    # Brokers hand back header names as sent, sometimes as bytes.
    out = {}
    for key, value in carrier.items():
        key = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(value, str):
            out[key.lower()] = value
    return out


def _hlc_configured() -> bool:
    textmap = propagate.get_global_textmap()
    members = getattr(textmap, "_propagators", None) or [textmap]
    return any(isinstance(p, HLCPropagator) for p in members)
