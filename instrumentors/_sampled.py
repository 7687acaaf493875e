"""Whether the current trace is one the sampler left out: integrations then skip the work of a span
nobody records.

A trace the overhead governor samples out still runs every integration's hooks; when the sampler
follows the parent's decision (``ParentBased`` with its defaults: what ``scope-otel run`` installs
under the governor), a span started under an unsampled parent is a non-recording span that only
costs its making (the SDK's ``start_span``, its sampler, a span id).  :func:`left_out` says so
before it is made.
"""
from __future__ import annotations

from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import get_current_span

_follows: tuple[Any, bool] = (None, False)


def left_out(tracer: Any, ctx: Context | None = None) -> bool:
    """True when a span ``tracer`` starts in ``ctx`` (default: the current context) would be
    dropped: its parent is a valid, unsampled, non-recording span and the tracer's sampler follows
    parents (any other sampler, or no SDK tracer: False, the span is made as before)."""
    span = get_current_span(ctx)
    if span.is_recording():
        return False
    parent = span.get_span_context()
    if not parent.is_valid or parent.trace_flags.sampled:
        return False
    return _follows_parents(getattr(tracer, "sampler", None))


def _follows_parents(sampler: Any) -> bool:
    """Whether ``sampler`` (an SDK sampler, possibly the governor's wrapper around one) drops every
    span whose parent was not sampled, local or remote."""
    global _follows
    seen, answer = _follows
    if seen is sampler and sampler is not None:
        return answer
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    inner = getattr(sampler, "inner", sampler)  # GovernedSampler: the configured sampler within
    answer = (isinstance(inner, ParentBased)
              and getattr(inner, "_local_parent_not_sampled", None) is ALWAYS_OFF
              and getattr(inner, "_remote_parent_not_sampled", None) is ALWAYS_OFF)
    _follows = (sampler, answer)
    return answer
