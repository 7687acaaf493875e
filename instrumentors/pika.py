"""RabbitMQ (pika): trace context and causal clock in message headers.

Usage::

    from scope_otel.instrumentors.pika import ScopePikaInstrumentor
    ScopePikaInstrumentor().instrument()      # before or after connecting

or nothing under ``scope-otel run`` / ``opentelemetry-instrument``, which load
the ``opentelemetry_instrumentor`` entry point ``scope_pika``.

Publishing
    ``basic_publish`` (blocking and asynchronous adapters) runs inside a
    PRODUCER span ``send <exchange or queue>`` and adds ``traceparent``,
    ``tracestate`` (with the hybrid logical clock) and any other configured
    propagator's headers to a *copy* of the message properties; the
    caller's ``BasicProperties`` object is left as it was.

Consuming
    A ``basic_consume`` callback runs inside a CONSUMER span
    ``process <queue>``, child of and linked to the producer span, ended when
    the callback returns (an exception escaping the callback is recorded and
    re-raised).  ``basic_get`` and the ``consume()`` generator pull: the span
    stays current on the thread until its next pull.  Messages without
    trace headers get no consumer span.

Attributes follow the messaging semantic conventions: ``messaging.system``
= ``rabbitmq``, ``messaging.destination.name``, ``messaging.operation.type``,
``messaging.operation.name``, ``messaging.message.id`` (when the publisher
set ``message_id``), ``messaging.rabbitmq.destination.routing_key``.
"""
from __future__ import annotations

import copy
import threading
from typing import Any, Callable

from opentelemetry import trace

from scope_otel.instrumentors import _broker
from scope_otel.instrumentors._base import Patch, ScopeInstrumentor
from scope_otel.instrumentors._report import failed
from scope_otel.version import __version__

_SYSTEM = "rabbitmq"
_in_blocking_publish = threading.local()


class _State:
    def __init__(self, **kwargs: Any) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, tracer_provider=kwargs.get("tracer_provider"))


_state: _State | None = None


class ScopePikaInstrumentor(ScopeInstrumentor):
    """pika ≥ 1.0: context in AMQP headers, producer and consumer spans linked."""

    _requires = ("pika >= 1.0",)
    _what = "RabbitMQ (pika)"

    def _configure(self, **kwargs: Any) -> _State:
        return _State(**kwargs)

    @property
    def _hooks(self) -> tuple:
        blocking, channel = "pika.adapters.blocking_connection", "pika.channel"
        return (
            Patch(blocking, "BlockingChannel", "basic_publish", _wrap_publish(blocking=True)),
            Patch(channel, "Channel", "basic_publish", _wrap_publish(blocking=False)),
            Patch(blocking, "BlockingChannel", "basic_consume", _wrap_basic_consume),
            Patch(channel, "Channel", "basic_consume", _wrap_basic_consume),
            Patch(blocking, "BlockingChannel", "basic_get", _wrap_basic_get),
            Patch(blocking, "BlockingChannel", "consume", _wrap_consume),
        )


def _message(properties: Any) -> _broker.Message | None:
    headers = getattr(properties, "headers", None)
    if not headers or "traceparent" not in headers:
        return None
    return headers, getattr(properties, "message_id", None)


# --------------------------------------------------------------------------
# publishing
# --------------------------------------------------------------------------

def _wrap_publish(blocking: bool) -> Callable[[Callable], Callable]:
    def make(original: Callable) -> Callable:
        def basic_publish(self, exchange, routing_key, body, properties=None, mandatory=False):
            state = _state
            # BlockingChannel.basic_publish calls Channel.basic_publish: one span, outermost.
            if state is None or (not blocking and getattr(_in_blocking_publish, "active", False)):
                return original(self, exchange, routing_key, body, properties, mandatory)
            destination = exchange or routing_key or "amq.default"
            send = _broker.start_send(state.tracer, _SYSTEM, destination, "publish",
                                      {"messaging.rabbitmq.destination.routing_key": str(routing_key)})
            if send is None:
                return original(self, exchange, routing_key, body, properties, mandatory)
            sent_properties = properties
            message_id = None
            try:
                from pika import BasicProperties

                sent_properties = copy.copy(properties) if properties is not None else BasicProperties()
                sent_properties.headers = {**(sent_properties.headers or {}), **send.carrier}
                message_id = sent_properties.message_id
            except Exception:
                failed("pika.publish")
                sent_properties = properties
            _in_blocking_publish.active = blocking
            try:
                result = original(self, exchange, routing_key, body, sent_properties, mandatory)
            except BaseException as exc:
                send.done(exc, message_id)
                raise
            finally:
                if blocking:
                    _in_blocking_publish.active = False
            send.done(message_id=message_id)
            return result

        basic_publish.__wrapped__ = original
        return basic_publish

    return make


# --------------------------------------------------------------------------
# consuming
# --------------------------------------------------------------------------

def _wrap_basic_consume(original: Callable) -> Callable:
    def basic_consume(self, queue, on_message_callback, *args, **kwargs):
        state = _state
        # BlockingChannel hands its own buffering callback to Channel; the
        # user's callback is wrapped once, on the blocking side.
        internal = type(getattr(on_message_callback, "__self__", None)).__name__ == "BlockingChannel"
        if state is None or on_message_callback is None or internal:
            return original(self, queue, on_message_callback, *args, **kwargs)
        return original(self, queue, _traced_callback(state, queue, on_message_callback), *args, **kwargs)

    basic_consume.__wrapped__ = original
    return basic_consume


def _traced_callback(state: _State, queue: str, callback: Callable) -> Callable:
    def on_message(channel, method, properties, body):
        message = _message(properties)
        if message is None:
            return callback(channel, method, properties, body)
        with _broker.processing(state.tracer, _SYSTEM, queue, "deliver", message,
                                _routing(method)):
            return callback(channel, method, properties, body)

    on_message.__wrapped__ = callback
    return on_message


def _wrap_basic_get(original: Callable) -> Callable:
    def basic_get(self, queue, *args, **kwargs):
        state = _state
        if state is None:
            return original(self, queue, *args, **kwargs)
        _broker.finish_current()
        result = original(self, queue, *args, **kwargs)
        try:
            method, properties, _body = result
            message = _message(properties)
            if message is not None:
                _broker.deliver(state.tracer, _SYSTEM, queue, "get", [message], _routing(method))
        except Exception:
            failed("pika.basic_get")
        return result

    basic_get.__wrapped__ = original
    return basic_get


def _wrap_consume(original: Callable) -> Callable:
    def consume(self, queue, *args, **kwargs):
        state = _state
        inner = original(self, queue, *args, **kwargs)
        if state is None:
            return inner
        return _traced_generator(state, queue, inner)

    consume.__wrapped__ = original
    return consume


def _traced_generator(state: _State, queue: str, inner):
    try:
        for item in inner:
            try:
                method, properties, _body = item
                message = _message(properties)
                if message is not None:
                    _broker.deliver(state.tracer, _SYSTEM, queue, "consume", [message], _routing(method))
            except Exception:
                failed("pika.consume")
            yield item
            _broker.finish_current()
    finally:
        _broker.finish_current()
        inner.close()


def _routing(method: Any) -> dict[str, str]:
    key = getattr(method, "routing_key", None)
    return {"messaging.rabbitmq.destination.routing_key": str(key)} if key is not None else {}
