"""Messaging spans and context hand-off shared by the Redis and RabbitMQ integrations.

One shape for every broker, so their spans join up the same way in the
correlation views:

* sending: a PRODUCER span ``send <destination>`` is current while the
  library call runs; the trace context and hybrid logical clock of that span
  travel with the message (:func:`scope_otel.causal.carrier.inject`);
* receiving one message: a CONSUMER span ``process <destination>`` whose
  parent is the producer span *and* which links to it, so the trace crosses
  the broker as one tree and ``messaging`` edges are explicit;
* receiving several at once: ``receive <destination>`` linking every producer.

Where the library calls back per message (``basic_consume``) the consumer span
is current exactly while the callback runs (:func:`processing`).  Where the
application pulls (``BLPOP``, ``XREAD``, ``basic_get``) the span stays current
on that thread until the thread's next pull through an instrumented call, as
the contrib Kafka integration does (:func:`deliver`, :func:`finish_current`).
Nothing here raises into the application: failures are counted and the
message goes through untouched.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from opentelemetry import context, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from scope_otel.causal import carrier as _carrier
from scope_otel.instrumentors._record import capture_runtime
from scope_otel.instrumentors._report import failed

Message = tuple[Mapping[str, str], "str | None"]  # (carrier, message id)


class Send:
    """A PRODUCER span in progress; ``carrier`` is what travels with the message."""

    __slots__ = ("span", "carrier", "_token", "_system", "_destination")

    def __init__(self, tracer: trace.Tracer, system: str, destination: str, operation: str,
                 attributes: Mapping[str, Any] | None) -> None:
        self._system, self._destination = system, destination
        self.span = tracer.start_span(
            f"send {destination}", kind=SpanKind.PRODUCER,
            attributes={**_base(system, destination, "send", operation), **(attributes or {})},
        )
        try:
            ctx = trace.set_span_in_context(self.span)
            self.carrier: dict[str, str] = dict(_carrier.inject({}, context=ctx))
            self._token = context.attach(ctx)
        except BaseException:
            self.span.end()  # never leave a started span behind
            raise

    def done(self, error: BaseException | None = None, message_id: Any = None) -> None:
        """End the span (recording *error*); never raises."""
        try:
            if message_id is not None:
                message_id = _text(message_id)
                self.span.set_attribute("messaging.message.id", message_id)
                _capture("send", self._system, self._destination, message_id)  # inside the span
            context.detach(self._token)
            if error is not None:
                _record(self.span, error)
            self.span.end()
        except Exception:
            failed(f"{self._system}.send_end")


def start_send(tracer: trace.Tracer, system: str, destination: Any, operation: str,
               attributes: Mapping[str, Any] | None = None) -> Send | None:
    """Start sending; None (after counting the failure) if that went wrong."""
    try:
        return Send(tracer, system, _text(destination), operation, attributes)
    except Exception:
        failed(f"{system}.send_start")
        return None


def start_consume(tracer: trace.Tracer, system: str, destination: Any, operation: str,
                  messages: list[Message], attributes: Mapping[str, Any] | None = None) -> trace.Span | None:
    """A started CONSUMER span for *messages* (see module docs); None if there are none."""
    if not messages:
        return None
    destination = _text(destination)
    contexts = [_carrier.extract(c) for c, _ in messages]
    remotes = [trace.get_current_span(ctx).get_span_context() for ctx in contexts]
    links = [Link(sc) for sc in remotes if sc.is_valid]
    attrs = {**_base(system, destination, "process" if len(messages) == 1 else "receive", operation),
             **(attributes or {})}
    ids = [_text(mid) for _, mid in messages if mid is not None]
    if len(messages) == 1:
        if ids:
            attrs["messaging.message.id"] = ids[0]
        span = tracer.start_span(f"process {destination}", context=contexts[0], kind=SpanKind.CONSUMER,
                                 attributes=attrs, links=links)
    else:
        attrs["messaging.batch.message_count"] = len(messages)
        span = tracer.start_span(f"receive {destination}", kind=SpanKind.CONSUMER, attributes=attrs, links=links)
    return span


def _captured(system: str, destination: Any, messages: list[Message]) -> None:
    # Called once the consumer span is current, so the events land in it.
    for _, mid in messages:
        if mid is not None:
            _capture("recv", system, _text(destination), _text(mid))


# --------------------------------------------------------------------------
# pulled messages: the span stays current until the thread pulls again
# --------------------------------------------------------------------------

_current = threading.local()


def finish_current() -> None:
    """End the consumer span this thread is processing, if any; never raises."""
    try:
        held = getattr(_current, "held", None)
        if held is None:
            return
        _current.held = None
        span, token = held
        context.detach(token)
        span.end()
    except Exception:
        failed("broker.finish")


def deliver(tracer: trace.Tracer, system: str, destination: Any, operation: str,
            messages: list[Message], attributes: Mapping[str, Any] | None = None) -> None:
    """Start the consumer span of pulled *messages* and make it current on this thread.

    One pull returning several destinations (``XREAD`` over two streams)
    delivers each in turn: only the last one's span stays current.
    """
    try:
        span = start_consume(tracer, system, destination, operation, messages, attributes)
        if span is not None:
            finish_current()
            _current.held = (span, context.attach(trace.set_span_in_context(span)))
            _captured(system, destination, messages)
    except Exception:
        failed(f"{system}.deliver")


# --------------------------------------------------------------------------
# pushed messages: the span is current while the callback runs
# --------------------------------------------------------------------------

@contextmanager
def processing(tracer: trace.Tracer, system: str, destination: Any, operation: str,
               message: Message, attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Run the block inside the consumer span of one pushed *message*."""
    span = token = None
    try:
        span = start_consume(tracer, system, destination, operation, [message], attributes)
        if span is not None:
            token = context.attach(trace.set_span_in_context(span))
            _captured(system, destination, [message])
    except Exception:
        failed(f"{system}.process_start")
    try:
        yield
    except BaseException as exc:
        if span is not None:
            _safe(lambda: _record(span, exc), f"{system}.process_error")
        raise
    finally:
        if token is not None:
            _safe(lambda: context.detach(token), f"{system}.process_end")
        if span is not None:
            _safe(span.end, f"{system}.process_end")


# --------------------------------------------------------------------------

def _base(system: str, destination: str, kind: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation.type": kind,
        "messaging.operation.name": operation,
    }


def _record(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.set_attribute("error.type", type(error).__qualname__)


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _capture(which: str, system: str, destination: str, message_id: str) -> None:
    # Function-level capture correlates its own send/recv events with ours.
    runtime = capture_runtime()
    if runtime is not None:
        try:
            getattr(runtime, which)(f"{system}:{destination}", message_id)
        except Exception:
            failed(f"{system}.capture_{which}")


def _safe(action, where: str) -> None:
    try:
        action()
    except Exception:
        failed(where)
