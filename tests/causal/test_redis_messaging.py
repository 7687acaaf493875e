"""Trace context and HLC through real Redis streams and (opt-in) lists; the application sees its data unchanged."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from opentelemetry.trace import SpanKind, StatusCode

redis = pytest.importorskip("redis")

from scope_otel.causal.hlc import HLCTimestamp  # noqa: E402
from scope_otel.instrumentors.redis import FIELD, ScopeRedisInstrumentor  # noqa: E402
from scope_otel.instrumentors import _broker  # noqa: E402


def _client(**kwargs):
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5, **kwargs)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"Redis is not reachable on 127.0.0.1:6379 ({exc})")
    return client


@pytest.fixture
def key():
    name = f"scope-test-{uuid.uuid4().hex[:8]}"
    yield name
    redis.Redis(host="127.0.0.1", port=6379).delete(name)


@pytest.fixture
def instrumented(recorded):
    def start(**kwargs):
        ScopeRedisInstrumentor().instrument(tracer_provider=recorded.provider, **kwargs)
        return recorded

    yield start
    _broker.finish_current()
    ScopeRedisInstrumentor().uninstrument()


def hlc(span) -> HLCTimestamp:
    return HLCTimestamp.decode(span.attributes["scope.hlc"])


def test_stream_entry_carries_context_and_consumer_span_is_child_of_producer(instrumented, key):
    rec = instrumented()
    client = _client()
    with rec.tracer.start_as_current_span("api"):
        entry_id = client.xadd(key, {"order": "42"})
    [(stream, [(got_id, fields)])] = client.xread({key: 0})
    with rec.tracer.start_as_current_span("handle"):
        pass
    _broker.finish_current()

    assert fields == {b"order": b"42"}  # the context field never reaches the application
    assert got_id == entry_id and stream == key.encode()
    send, process = rec.one(f"send {key}"), rec.one(f"process {key}")
    assert send.kind == SpanKind.PRODUCER and process.kind == SpanKind.CONSUMER
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.attributes["messaging.message.id"] == entry_id.decode()
    assert send.attributes["messaging.destination.name"] == key
    # work done after the read nests under the consumer span, and the clock orders it
    assert rec.one("handle").parent.span_id == process.context.span_id
    assert hlc(send) < hlc(process) < hlc(rec.one("handle"))


def test_raw_stream_holds_the_context_field_for_other_consumers(instrumented, key):
    instrumented()
    _client().xadd(key, {"a": "1"})
    ScopeRedisInstrumentor().uninstrument()
    [(_id, fields)] = _client().xrange(key)
    assert fields[b"a"] == b"1" and b"traceparent" in fields[FIELD.encode()]


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_group_read_of_several_entries_gives_one_receive_span_linking_each_producer(instrumented, key, protocol):
    rec = instrumented()
    client = _client(decode_responses=True, protocol=protocol)
    client.xgroup_create(key, "workers", id="0", mkstream=True)
    for n in range(3):
        with rec.tracer.start_as_current_span(f"producer-{n}"):
            client.xadd(key, {"n": str(n)})
    reply = client.xreadgroup("workers", "w1", {key: ">"}, count=10)
    entries = reply[0][1] if isinstance(reply, list) else reply[key][0]
    assert [fields for _id, fields in entries] == [{"n": "0"}, {"n": "1"}, {"n": "2"}]
    _broker.finish_current()
    receive = rec.one(f"receive {key}")
    assert receive.attributes["messaging.batch.message_count"] == 3
    assert {link.context.span_id for link in receive.links} == {s.context.span_id for s in rec.spans(f"send {key}")}


def test_xadd_error_reaches_the_application_and_is_recorded(instrumented, key):
    rec = instrumented()
    client = _client()
    client.set(key, "not a stream")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        client.xadd(key, {"a": "1"})
    send = rec.one(f"send {key}")
    assert send.status.status_code == StatusCode.ERROR
    assert send.events[0].name == "exception"


def test_lists_are_left_alone_unless_enabled(instrumented, key):
    rec = instrumented()
    client = _client()
    client.rpush(key, "plain")
    assert client.lindex(key, 0) == b"plain"
    assert client.lpop(key) == b"plain"
    assert rec.spans() == []


@pytest.mark.parametrize("decode", [False, True])
def test_list_envelope_round_trips_values_unchanged_and_links_spans(instrumented, key, decode):
    rec = instrumented(lists=True)
    client = _client(decode_responses=decode)
    with rec.tracer.start_as_current_span("api"):
        client.rpush(key, "text", b"\x00\x1fbinary", 7)
    first = client.blpop([key], timeout=1)
    with rec.tracer.start_as_current_span("handle-first"):
        pass
    rest = client.lpop(key, 2)
    _broker.finish_current()

    if decode:
        assert first == (key, "text") or first == [key, "text"]
        assert rest == ["\x00\x1fbinary", "7"]
    else:
        assert tuple(first) == (key.encode(), b"text")
        assert rest == [b"\x00\x1fbinary", b"7"]
    send = rec.one(f"send {key}")
    process = rec.one(f"process {key}")
    assert process.parent.span_id == send.context.span_id
    assert rec.one("handle-first").parent.span_id == process.context.span_id
    # the second pull ended the first message's span and started a batch span
    assert process.end_time <= rec.one(f"receive {key}").start_time
    assert len(rec.one(f"receive {key}").links) == 2


def test_elements_pushed_without_scope_otel_pop_unchanged_without_spans(instrumented, key):
    rec = instrumented(lists=True)
    raw = _client()
    raw.execute_command("RPUSH", key, b"\x1fscope-otel\x1fnot json\x1fpayload", b"plain")
    assert raw.lpop(key, 2) == [b"\x1fscope-otel\x1fnot json\x1fpayload", b"plain"]
    assert rec.spans() == []


def test_uninstrument_restores_plain_redis(instrumented, key):
    instrumented(lists=True)
    ScopeRedisInstrumentor().uninstrument()
    client = _client()
    client.rpush(key, "x")
    assert client.lindex(key, 0) == b"x"
    assert not hasattr(redis.Redis.rpush, "__wrapped__")


def test_two_processes_under_scope_otel_run_share_one_trace_through_redis(otlp_receiver, key):
    _client()
    nodes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodes")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SCOPE_OTEL_"))}
    env.update(otlp_receiver.env("grpc"), NODE_KEY=key, SCOPE_OTEL_REDIS_LISTS="true", OTEL_BSP_SCHEDULE_DELAY="100")
    run = os.path.join(os.path.dirname(sys.executable), "scope-otel")
    try:
        for role, service in (("redis_producer.py", "producer"), ("redis_consumer.py", "consumer")):
            result = subprocess.run([run, "run", "--service_name", service, "--", sys.executable,
                                     os.path.join(nodes, role)], env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
    finally:
        redis.Redis(host="127.0.0.1", port=6379).delete(key + ":s")
    assert result.stdout.strip() == "job-1 {'job': '2'}"  # no envelope, no context field
    spans = {s["name"]: s for s in otlp_receiver.wait_for(7, timeout=15)}
    enqueue = spans["enqueue"]
    for kind in ("", ":s"):
        send, process = spans[f"send {key}{kind}"], spans[f"process {key}{kind}"]
        assert (send["service_name"], process["service_name"]) == ("producer", "consumer")
        assert send["parent_span_id"] == enqueue["span_id"]
        assert process["parent_span_id"] == send["span_id"] and process["trace_id"] == enqueue["trace_id"]
        assert HLCTimestamp.decode(process["attributes"]["scope.hlc"]) > HLCTimestamp.decode(send["attributes"]["scope.hlc"])
    assert spans["handle list job"]["parent_span_id"] == spans[f"process {key}"]["span_id"]
    assert spans["handle stream job"]["parent_span_id"] == spans[f"process {key}:s"]["span_id"]


def test_one_read_over_two_streams_ends_every_consumer_span(instrumented, key):
    rec = instrumented()
    client = _client()
    other = key + ":other"
    try:
        with rec.tracer.start_as_current_span("api"):
            client.xadd(key, {"a": "1"})
            client.xadd(other, {"b": "2"})
        reply = client.xread({key: 0, other: 0})
        assert [fields for _stream, [(_id, fields)] in reply] == [{b"a": b"1"}, {b"b": b"2"}]
        _broker.finish_current()
        ended = rec.spans(f"process {key}") + rec.spans(f"process {other}")
        assert len(ended) == 2  # both exported, i.e. ended
    finally:
        client.delete(other)
