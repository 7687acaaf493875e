"""Trace context and HLC through real RabbitMQ message headers (pika), producer and consumer spans linked."""
from __future__ import annotations

import uuid

import pytest
from opentelemetry.trace import SpanKind, StatusCode

pika = pytest.importorskip("pika")

from scope_otel.causal.hlc import HLCTimestamp  # noqa: E402
from scope_otel.instrumentors import _broker  # noqa: E402
from scope_otel.instrumentors.pika import ScopePikaInstrumentor  # noqa: E402


@pytest.fixture
def channel():
    try:
        connection = pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest"),
                                      connection_attempts=1, socket_timeout=3, blocked_connection_timeout=5)
        )
    except pika.exceptions.AMQPError as exc:
        pytest.skip(f"RabbitMQ is not reachable on 127.0.0.1:5672 ({exc!r})")
    ch = connection.channel()
    yield ch
    if connection.is_open:
        connection.close()


@pytest.fixture
def queue(channel):
    name = f"scope-test-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name, auto_delete=False)
    yield name
    if channel.is_open:
        channel.queue_delete(name)


@pytest.fixture
def rec(recorded):
    ScopePikaInstrumentor().instrument(tracer_provider=recorded.provider)
    yield recorded
    _broker.finish_current()
    ScopePikaInstrumentor().uninstrument()


def hlc(span) -> HLCTimestamp:
    return HLCTimestamp.decode(span.attributes["scope.hlc"])


def test_published_headers_carry_context_without_touching_callers_properties(rec, channel, queue):
    props = pika.BasicProperties(headers={"tenant": "t1"}, message_id="m-1")
    with rec.tracer.start_as_current_span("api"):
        channel.basic_publish("", queue, b"payload", properties=props)
    assert props.headers == {"tenant": "t1"}
    method, got_props, body = channel.basic_get(queue, auto_ack=True)
    with rec.tracer.start_as_current_span("handle"):
        pass
    _broker.finish_current()

    assert body == b"payload" and got_props.headers["tenant"] == "t1"
    assert got_props.headers["traceparent"].startswith("00-")
    assert "scope-otel=" in got_props.headers["tracestate"]
    send, process = rec.one(f"send {queue}"), rec.one(f"process {queue}")
    assert (send.kind, process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert send.attributes["messaging.message.id"] == process.attributes["messaging.message.id"] == "m-1"
    assert rec.one("handle").parent.span_id == process.context.span_id
    assert hlc(send) < hlc(process) < hlc(rec.one("handle"))
    assert len(rec.spans(f"send {queue}")) == 1  # blocking + impl publish: one span


def test_consume_callback_runs_inside_the_consumer_span(rec, channel, queue):
    with rec.tracer.start_as_current_span("api"):
        channel.basic_publish("", queue, b"job")
    seen = []

    def on_message(ch, method, properties, body):
        with rec.tracer.start_as_current_span("work"):
            seen.append(body)
        ch.basic_ack(method.delivery_tag)
        ch.stop_consuming()

    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    assert seen == [b"job"]
    process = rec.one(f"process {queue}")
    assert process.parent.span_id == rec.one(f"send {queue}").context.span_id
    assert rec.one("work").parent.span_id == process.context.span_id
    assert process.end_time is not None


def test_callback_exception_is_recorded_and_re_raised(rec, channel, queue):
    with rec.tracer.start_as_current_span("api"):
        channel.basic_publish("", queue, b"poison")

    def on_message(ch, method, properties, body):
        raise ValueError("cannot handle poison")

    channel.basic_consume(queue, on_message, auto_ack=True)
    with pytest.raises(ValueError, match="cannot handle poison"):
        channel.start_consuming()
    process = rec.one(f"process {queue}")
    assert process.status.status_code == StatusCode.ERROR
    assert process.attributes["error.type"] == "ValueError"


def test_consume_generator_keeps_each_message_span_current_until_the_next(rec, channel, queue):
    for n in range(2):
        with rec.tracer.start_as_current_span(f"api-{n}"):
            channel.basic_publish("", queue, str(n).encode())
    bodies = []
    for method, properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=1):
        if body is None:
            break
        with rec.tracer.start_as_current_span(f"work-{body.decode()}"):
            bodies.append(body)
        if len(bodies) == 2:
            break
    channel.cancel()
    assert bodies == [b"0", b"1"]
    processes = sorted(rec.spans(f"process {queue}"), key=lambda s: s.start_time)
    sends = sorted(rec.spans(f"send {queue}"), key=lambda s: s.start_time)
    for n in range(2):
        assert processes[n].parent.span_id == sends[n].context.span_id
        assert rec.one(f"work-{n}").parent.span_id == processes[n].context.span_id


def test_messages_without_trace_headers_get_no_consumer_span(rec, channel, queue):
    ScopePikaInstrumentor().uninstrument()
    channel.basic_publish("", queue, b"legacy")
    ScopePikaInstrumentor().instrument(tracer_provider=rec.provider)
    method, props, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"legacy"
    assert rec.spans() == []


def test_asynchronous_select_connection_publish_and_consume_are_linked(rec, channel, queue):
    """The SelectConnection adapter: pika.channel.Channel without BlockingChannel around it."""
    seen = []

    def on_open(connection):
        connection.channel(on_open_callback=on_channel)

    def on_channel(ch):
        def on_message(ch, method, properties, body):
            with rec.tracer.start_as_current_span("async work"):
                seen.append(body)
            ch.basic_ack(method.delivery_tag)
            ch.connection.close()

        ch.basic_consume(queue, on_message)
        with rec.tracer.start_as_current_span("async api"):
            ch.basic_publish("", queue, b"async job")

    connection = pika.SelectConnection(
        pika.ConnectionParameters("127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest")),
        on_open_callback=on_open,
        on_close_callback=lambda conn, reason: conn.ioloop.stop(),
    )
    connection.ioloop.call_later(10, connection.ioloop.stop)  # never hang the suite
    connection.ioloop.start()
    assert seen == [b"async job"]
    send, process = rec.one(f"send {queue}"), rec.one(f"process {queue}")
    assert send.parent.span_id == rec.one("async api").context.span_id
    assert process.parent.span_id == send.context.span_id
    assert rec.one("async work").parent.span_id == process.context.span_id
