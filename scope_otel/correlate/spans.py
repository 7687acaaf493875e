"""Function-call records -> OpenTelemetry ``ReadableSpan`` objects.

``Correlator(policy=None, resource=None).to_span(record)`` builds the span of
one recorded call (see ``scope_otel.capture.records`` for the record):

* name = qualname, kind INTERNAL, trace id and parent span id as decided at
  ``enter`` (inherited from the caller function or the current SDK span);
* attributes ``code.function.name``, ``code.namespace``, ``code.file.path``,
  ``code.line.number``, ``scope.kind="function"``, ``scope.level``; at
  ``full`` (or with ``args``/``return`` captured) ``scope.arg.<name>`` and
  ``scope.return``, through :class:`~scope_otel.correlate.values.ValuePolicy`;
* events: ``exception`` (semconv ``exception.type``, ``exception.message``,
  ``exception.stacktrace``; the span status becomes ERROR),
  ``scope.state_change``, ``scope.send``/``scope.recv``,
  ``scope.suspend``/``scope.resume``.

The resource is the one given, else the one of the first SDK span seen by
the processor (it calls :meth:`Correlator.learn_resource`), else, until then,
``Resource.create()`` (the environment's).  Runs in the
processor's worker thread, never on the application's.
"""
from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from scope_otel.capture import runtime
from scope_otel.capture.records import CAP_EXCEPTIONS, RAISED, TOKEN_LEN
from scope_otel.correlate.stack import StackFormatter
from scope_otel.correlate.values import ValuePolicy
from scope_otel.plan import LEVELS
from scope_otel.version import __version__

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def _context_factory():
    """SpanContext without its Python-level ``__new__`` (a third of the cost
    of a function span), if this SDK's layout is the one we know; our ids are
    always valid, which is all ``__new__`` checks."""
    from opentelemetry.trace.span import DEFAULT_TRACE_STATE

    def fast(trace_id: int, span_id: int) -> SpanContext:
        return tuple.__new__(SpanContext, (trace_id, span_id, False, _SAMPLED, DEFAULT_TRACE_STATE, True))

    def slow(trace_id: int, span_id: int) -> SpanContext:
        return SpanContext(trace_id, span_id, False, _SAMPLED)

    try:
        probe, ref = fast(7, 9), slow(7, 9)
        if probe == ref and (probe.trace_id, probe.span_id, probe.is_valid, probe.trace_flags) == (7, 9, True, _SAMPLED):
            return fast
    except Exception:
        pass
    return slow


_span_context = _context_factory()
_SCOPE = InstrumentationScope("scope_otel.capture", __version__)


class Correlator:
    """Turns records into spans; keeps the truncation/redaction counters."""

    def __init__(self, policy: ValuePolicy | None = None, resource: Resource | None = None) -> None:
        if policy is None:
            policy = _policy_from_config()
        self.policy = policy
        self.resource = resource
        self.spans = 0
        self._fallback: Resource | None = None
        self._static: dict[tuple[int, int], dict[str, Any]] = {}  # (fid, level) -> fixed attributes
        self._stacktrace = StackFormatter()  # the same exception raised in a loop is formatted once

    def learn_resource(self, resource: Resource) -> None:
        if self.resource is None:
            self.resource = resource

    def to_span(self, token) -> ReadableSpan:
        """The span of one ended call (a token completed by exit/exception)."""
        # one unpacking instead of a dozen index calls (cheaper on C tokens)
        (span_id, trace_id, parent_id, fid, start_ns, _ctx, _prev, args, raw_events, _overlay,
         level, flags, end_ns, status, value) = token
        static = self._static.get((fid, level))
        if static is None:
            static = self._static[(fid, level)] = self._static_attributes(fid, level)
        attrs = dict(static)
        fmt = self.policy.format
        if args:
            for name, val in args.items():
                attrs["scope.arg." + name] = fmt(name, val)
        events = []
        if raw_events:
            for name, ts, ev_attrs in raw_events:
                if ev_attrs:  # (key, value) pairs: records hold only immutable values
                    ev_attrs = dict(ev_attrs)
                    if "scope.value" in ev_attrs:
                        ev_attrs["scope.value"] = fmt(ev_attrs["scope.target"], ev_attrs["scope.value"])
                events.append(Event(name, ev_attrs, ts))
        span_status = _UNSET
        if status == RAISED:
            events.append(self._exception_event(value, end_ns, flags & CAP_EXCEPTIONS))
            span_status = Status(StatusCode.ERROR, f"{value[0]}: {value[2]}")
        elif value is not None:
            attrs["scope.return"] = fmt("return", value)
        resource = self.resource
        if resource is None:  # no SDK span seen yet: the environment's resource
            resource = self._fallback
            if resource is None:
                resource = self._fallback = Resource.create()
        self.spans += 1
        return ReadableSpan(
            static["code.function.name"],
            _span_context(trace_id, span_id),
            _span_context(trace_id, parent_id) if parent_id else None,
            resource,
            attrs,
            events,
            (),
            _INTERNAL,
            None,
            span_status,
            start_ns,
            end_ns,
            _SCOPE,
        )

    @staticmethod
    def _static_attributes(fid: int, level: int) -> dict[str, Any]:
        module, qualname, filename, line = runtime.function_info(fid)
        return {
            "code.function.name": qualname,
            "code.namespace": module,
            "code.file.path": filename,
            "code.line.number": line,
            "scope.kind": "function",
            "scope.level": LEVELS[level],
        }

    def _exception_event(self, summary: tuple, ts: int, with_stack: int) -> Event:
        # a record keeps a summary of the exception (capture/snapshot.py), never the exception
        attrs = {
            "exception.type": summary[0],
            "exception.message": self.policy.format("exception.message", summary[2]),
        }
        if with_stack:
            attrs["exception.stacktrace"] = self._stacktrace(summary)
        return Event("exception", attrs, ts)

    def batch_done(self) -> None:
        """Forget the texts kept for formatting (a batch's worth)."""
        self._stacktrace.clear()

    def stats(self) -> dict[str, int]:
        return {
            "function_spans": self.spans,
            "values_truncated": self.policy.truncated,
            "values_redacted": self.policy.redacted,
        }


_UNSET = Status(StatusCode.UNSET)
_INTERNAL = SpanKind.INTERNAL
assert TOKEN_LEN == 15, "to_span unpacks the token layout of records.py"


def _policy_from_config() -> ValuePolicy:
    try:
        from scope_otel import config

        cfg = config.current()
        return ValuePolicy(cfg.max_value_length, cfg.redact)
    except Exception:  # a bad config must not stop export; use the defaults
        return ValuePolicy()
