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

The resource is the one of the SDK spans seen by the processor (it calls
:meth:`Correlator.learn_resource`), else ``Resource.create()``.  Runs in the
processor's worker thread, never on the application's.
"""
from __future__ import annotations

import traceback
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from scope_otel.capture import runtime
from scope_otel.capture.records import (
    ARGS, CAP_EXCEPTIONS, END_NS, EVENTS, FID, FLAGS, LEVEL, PARENT_ID, RAISED, SPAN_ID, START_NS,
    STATUS, TRACE_ID, VALUE,
)
from scope_otel.correlate.values import ValuePolicy
from scope_otel.version import __version__

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_LEVEL_NAMES = ("off", "boundaries", "full")
_SCOPE = InstrumentationScope("scope_otel.capture", __version__)


class Correlator:
    """Turns records into spans; keeps the truncation/redaction counters."""

    def __init__(self, policy: ValuePolicy | None = None, resource: Resource | None = None) -> None:
        if policy is None:
            policy = _policy_from_config()
        self.policy = policy
        self.resource = resource
        self.spans = 0
        self._static: dict[int, dict[str, Any]] = {}  # fid -> code.* attributes

    def learn_resource(self, resource: Resource) -> None:
        if self.resource is None:
            self.resource = resource

    def to_span(self, token) -> ReadableSpan:
        """The span of one ended call (a token completed by exit/exception)."""
        end_ns, status, value = token[END_NS], token[STATUS], token[VALUE]
        fid = token[FID]
        static = self._static.get(fid)
        if static is None:
            module, qualname, filename, line = runtime.function_info(fid)
            static = self._static[fid] = {
                "code.function.name": qualname,
                "code.namespace": module,
                "code.file.path": filename,
                "code.line.number": line,
                "scope.kind": "function",
            }
        attrs = dict(static)
        attrs["scope.level"] = _LEVEL_NAMES[token[LEVEL]]
        fmt = self.policy.format
        args = token[ARGS]
        if args:
            for name, val in args.items():
                attrs["scope.arg." + name] = fmt(name, val)
        events = []
        raw_events = token[EVENTS]
        if raw_events:
            for name, ts, ev_attrs in raw_events:
                if ev_attrs and "scope.value" in ev_attrs:
                    ev_attrs = dict(ev_attrs)
                    ev_attrs["scope.value"] = fmt(ev_attrs["scope.target"], ev_attrs["scope.value"])
                events.append(Event(name, ev_attrs, ts))
        span_status = _UNSET
        if status == RAISED:
            events.append(self._exception_event(value, end_ns, token[FLAGS] & CAP_EXCEPTIONS))
            span_status = Status(StatusCode.ERROR, f"{type(value).__name__}: {value}")
        elif value is not None:
            attrs["scope.return"] = fmt("return", value)
        if self.resource is None:
            self.resource = Resource.create()
        trace_id = token[TRACE_ID]
        parent_id = token[PARENT_ID]
        self.spans += 1
        return ReadableSpan(
            name=static["code.function.name"],
            context=SpanContext(trace_id, token[SPAN_ID], False, _SAMPLED),
            parent=SpanContext(trace_id, parent_id, False, _SAMPLED) if parent_id else None,
            resource=self.resource,
            attributes=attrs,
            events=events,
            kind=SpanKind.INTERNAL,
            status=span_status,
            start_time=token[START_NS],
            end_time=end_ns,
            instrumentation_scope=_SCOPE,
        )

    def _exception_event(self, exc: Any, ts: int, with_stack: int) -> Event:
        attrs = {
            "exception.type": type(exc).__qualname__,
            "exception.message": self.policy.format("exception.message", str(exc)),
        }
        if with_stack and isinstance(exc, BaseException):
            attrs["exception.stacktrace"] = "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)
            )
        return Event("exception", attrs, ts)

    def stats(self) -> dict[str, int]:
        return {
            "function_spans": self.spans,
            "values_truncated": self.policy.truncated,
            "values_redacted": self.policy.redacted,
        }


_UNSET = Status(StatusCode.UNSET)


def _policy_from_config() -> ValuePolicy:
    try:
        from scope_otel import config

        cfg = config.current()
        return ValuePolicy(cfg.max_value_length, cfg.redact)
    except Exception:  # a bad config must not stop export; use the defaults
        return ValuePolicy()
