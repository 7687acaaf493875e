"""The function-event runtime: recording rules, levels, sampling, breaker, safety."""
from __future__ import annotations

import pytest

from scope_otel import config
from scope_otel.capture import runtime


@pytest.fixture
def live_config(monkeypatch):
    """A private live configuration, restored afterwards."""
    saved = config._current
    for key in ("SCOPE_OTEL_LEVEL", "SCOPE_OTEL_FUNCTION_LEVELS", "SCOPE_OTEL_SAMPLING_RATE"):
        monkeypatch.delenv(key, raising=False)
    cfg = config.load(env={})
    config.set_current(cfg)
    try:
        yield cfg
    finally:
        config.set_current(saved)
        runtime._recompute()


def test_a_recorded_call_becomes_one_function_span(pipeline, fn):
    fid = fn("plain")
    token = runtime.enter(fid)
    assert token is not None
    runtime.exit(token, 42)
    (span,) = pipeline.spans()
    assert span.name == "plain"
    assert span.attributes["code.namespace"] == "tests.sample"
    assert span.attributes["scope.kind"] == "function"
    assert span.attributes["scope.level"] == "boundaries"
    assert "scope.return" not in span.attributes  # boundaries: no values


def test_full_level_records_arguments_and_return_value(pipeline, fn):
    fid = fn("full_fn", level="full")
    runtime.exit(runtime.enter(fid, {"a": 1, "b": [1, 2]}), {"ok": True})
    (span,) = pipeline.spans()
    assert span.attributes["scope.arg.a"] == "1"
    assert span.attributes["scope.arg.b"] == "[1, 2]"
    assert span.attributes["scope.return"] == "{'ok': True}"


def test_capture_set_records_return_at_boundaries(pipeline, fn):
    fid = fn("ret_only", capture=frozenset({"return"}))
    runtime.exit(runtime.enter(fid, {"a": 1}), "value")
    (span,) = pipeline.spans()
    assert span.attributes["scope.return"] == "value"
    assert "scope.arg.a" not in span.attributes


def test_enter_params_names_the_values_and_builds_arguments_only_at_full(live_config, impl, fn):
    from scope_otel.capture import records

    fid = fn("by_params", level="boundaries", params=("a", "items", "rest"))
    token = runtime.enter_params(fid, 1, [1, 2], ())
    assert token is not None and token[records.ARGS] is None  # boundaries: no arguments
    runtime.exit(token)
    config.update(function_levels="tests.sample:by_params=full")  # takes effect on the next call
    items = [1, 2]
    token = runtime.enter_params(fid, 1, items, ("x",))
    items.append(3)  # snapshotted at entry
    assert token[records.ARGS] == {"a": 1, "items": "[1, 2]", "rest": "('x',)"}
    runtime.exit(token)
    token = runtime.enter_params(fid, "s", None, 2.5)
    assert token[records.ARGS] == {"a": "s", "items": None, "rest": 2.5}  # plain values as they are
    runtime.exit(token)
    no_params = fn("no_params", level="full")
    token = runtime.enter_params(no_params)
    assert token is not None and token[records.ARGS] is None
    runtime.exit(token)
    config.update(function_levels="tests.sample:by_params=off")
    assert runtime.enter_params(fid, 1, 2, 3) is None


def test_a_probe_is_enter_params_exit_and_exception_bound_to_one_function(impl, fn):
    from scope_otel.capture import records

    fid = fn("probed", level="full", params=("a",))
    probe = runtime.probe(fid)
    assert not callable(probe) and probe.fid == fid
    token = probe.enter([1])
    assert token[records.FID] == fid and token[records.ARGS] == {"a": "[1]"}
    assert probe.exit(token, "v") == "v" and token[records.VALUE] == "v"
    token = probe.enter(2)
    probe.exception(token, KeyError("k"))
    assert token[records.STATUS] == records.RAISED
    assert probe.exit(None, 3) == 3


def test_ended_calls_are_recycled_up_to_the_capacity_of_the_ring(impl, fn):
    if impl != "c":
        pytest.skip("the pure-Python twin's tokens are lists")
    from scope_otel.capture import _speedups
    from scope_otel.capture.ring import Ring

    fid = fn("recycled")
    saved = runtime.current_ring()
    small, large = Ring(1500), Ring(3000)
    try:
        runtime.bind_ring(large, move=False)
        for _ in range(2500):
            runtime.exit(runtime.enter(fid))
        del _
        assert len(large.take(3000)) == 2500  # freed: kept for reuse, within the bound
        free, bound = _speedups.call_cache()
        assert bound == 3000 and 2500 <= free <= 3000
        runtime.bind_ring(small, move=False)  # a smaller ring: fewer kept
        assert _speedups.call_cache() == (1500, 1500)
    finally:
        runtime.bind_ring(saved, move=False)


def test_a_call_that_raised_is_collected_even_when_its_traceback_holds_the_token(impl, fn):
    import gc
    import weakref

    class Marker(Exception):
        pass

    fid = fn("raises_in_a_cycle")
    refs = []

    def body():
        token = runtime.enter(fid)  # a local of the frame the traceback keeps
        try:
            raise Marker()
        except Marker as exc:
            runtime.exception(token, exc)
            refs.append(weakref.ref(exc))

    ring = runtime.current_ring()
    ring.take(ring.capacity)
    body()
    assert len(ring.take(ring.capacity)) == 1  # token -> exception -> traceback -> frame -> token
    gc.collect()
    assert refs[0]() is None


def test_an_otel_span_attached_after_a_call_is_seen_by_the_next_call(pipeline, fn):
    fid = fn("around_spans")
    runtime.exit(runtime.enter(fid))  # no span: a root
    with pipeline.tracer.start_as_current_span("request") as request:
        runtime.exit(runtime.enter(fid))  # the same context, a new OpenTelemetry context in it
    runtime.exit(runtime.enter(fid))
    first, inside, after = [s for s in pipeline.spans() if s.name == "around_spans"]
    assert first.parent is None and after.parent is None
    assert inside.parent.span_id == request.get_span_context().span_id
    assert inside.context.trace_id == request.get_span_context().trace_id
    assert after.context.trace_id != inside.context.trace_id


def test_exit_returns_the_value_and_a_call_ends_only_once(impl, fn):
    from scope_otel.capture import records

    fid = fn("ends_once", level="full")
    ring = runtime.current_ring()
    ring.take(ring.capacity)
    value = object()
    assert runtime.exit(None, value) is value and runtime.exit(None) is None
    token = runtime.enter(fid)
    assert runtime.exit(token, value) is value
    end = token[records.END_NS]
    assert runtime.exit(token, 2) == 2  # a second end (a signal's exception, say) is ignored
    runtime.exception(token, KeyError("late"))
    (record,) = ring.take(ring.capacity)  # the token itself (C), an immutable copy (Python)
    assert record[records.SPAN_ID] == token[records.SPAN_ID] and record[records.END_NS] == end
    assert token[records.END_NS] == end and record[records.STATUS] == records.RETURNED
    assert runtime._current() is None  # the caller is innermost again, once


def test_values_are_captured_at_call_time_not_export_time(pipeline, fn):
    fid = fn("mutating", level="full")
    data = [1]
    token = runtime.enter(fid, {"data": data})
    data.append(2)
    runtime.exit(token)
    (span,) = pipeline.spans()
    assert span.attributes["scope.arg.data"] == "[1]"


def test_exception_ends_the_call_with_a_semconv_event_and_error_status(pipeline, fn):
    fid = fn("fails", level="full")
    token = runtime.enter(fid)
    try:
        raise KeyError("missing")
    except KeyError as exc:
        runtime.exception(token, exc)
    (span,) = pipeline.spans()
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "KeyError"
    assert "missing" in event.attributes["exception.message"]
    assert "raise KeyError" in event.attributes["exception.stacktrace"]
    assert span.status.status_code.name == "ERROR"


def test_nested_calls_are_parent_and_child(pipeline, fn):
    outer, inner = fn("outer"), fn("inner")
    t1 = runtime.enter(outer)
    t2 = runtime.enter(inner)
    runtime.exit(t2)
    runtime.exit(t1)
    spans = pipeline.by_name()
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id
    assert spans["inner"].context.trace_id == spans["outer"].context.trace_id
    assert spans["outer"].parent is None


def test_state_changes_and_messages_become_span_events(pipeline, fn):
    fid = fn("stateful", level="full")
    token = runtime.enter(fid)
    runtime.state_change(token, "self.total", 10)
    runtime.send("orders", "m-1")
    runtime.recv("replies", "m-2")
    runtime.exit(token)
    (span,) = pipeline.spans()
    events = {e.name: e.attributes for e in span.events}
    assert events["scope.state_change"] == {"scope.target": "self.total", "scope.value": "10"}
    assert events["scope.send"] == {"messaging.destination.name": "orders", "messaging.message.id": "m-1"}
    assert events["scope.recv"]["messaging.destination.name"] == "replies"


def test_generator_suspend_and_resume_leave_and_reenter_the_stack(pipeline, fn):
    gen_fid, caller_fid, other_fid = fn("gen"), fn("caller"), fn("other")

    def gen():
        token = runtime.enter(gen_fid)
        runtime.suspend(token)
        yield 1
        runtime.resume(token)
        runtime.exit(token)

    c = runtime.enter(caller_fid)
    g = gen()
    next(g)
    runtime.exit(runtime.enter(other_fid))  # the caller's child, not the generator's
    next(g, None)
    runtime.exit(c)
    spans = pipeline.by_name()
    assert spans["other"].parent.span_id == spans["caller"].context.span_id
    assert spans["gen"].parent.span_id == spans["caller"].context.span_id
    assert [e.name for e in spans["gen"].events] == ["scope.suspend", "scope.resume"]


def test_disabled_records_nothing_inside(pipeline, fn):
    fid = fn("quiet")
    with runtime.disabled():
        assert runtime.enter(fid) is None
    assert runtime.enter(fid) is not None


def test_off_level_and_zero_sampling_record_nothing(pipeline, fn):
    assert runtime.enter(fn("off_fn", level="off")) is None
    assert runtime.enter(fn("never", sampling=0.0)) is None
    half = fn("half", sampling=0.5)
    recorded = 0
    for _ in range(2000):
        token = runtime.enter(half)
        if token is not None:
            recorded += 1
            runtime.exit(token)
    assert 0 < recorded < 2000


def test_none_tokens_and_bad_input_never_raise(impl):
    runtime.exit(None, 1)
    runtime.exception(None, ValueError())
    runtime.state_change(None, "x", 1)
    runtime.suspend(None)
    runtime.resume(None)
    before = runtime.stats()["internal_errors"]
    assert runtime.enter(10 ** 9) is None  # unknown function id
    assert runtime.enter_params(10 ** 9, 1) is None
    runtime.exit(["not", "a", "token"])
    assert runtime.stats()["internal_errors"] == before + 3


def test_level_changes_at_run_time_update_LEVELS_in_place(live_config, impl, fn):
    fid = fn("tunable", level="boundaries")
    other = fn("untouched", level="boundaries")
    assert runtime.LEVELS[fid] == 1
    config.update(function_levels="tests.sample:tunable=full")
    assert runtime.LEVELS[fid] == 2 and runtime.LEVELS[other] == 1
    config.update(level="off")
    assert runtime.LEVELS[other] == 0 and runtime.LEVELS[fid] == 2  # the glob still wins
    config.update(sampling_rate=0.0)
    assert runtime.enter(fid) is None


def test_breaker_degrades_levels_when_drops_pass_the_threshold_and_recovers(impl, fn):
    fid = fn("busy", level="full")
    b = runtime.breaker
    try:
        b.reset()
        b.observe(written=0, dropped=0, now=100.0)
        b.observe(written=1000, dropped=500, now=101.5)
        assert b.cap == 1 and runtime.LEVELS[fid] == 1
        b.observe(written=2000, dropped=1000, now=103.0)
        assert b.cap == 0 and runtime.LEVELS[fid] == 0
        assert runtime.enter(fid) is None
        b.observe(written=3000, dropped=1000, now=140.0)
        assert b.cap == 1
        assert runtime.stats()["breaker_trips"] >= 2
    finally:
        b.reset()
    assert runtime.LEVELS[fid] == 2


def test_pure_python_is_chosen_by_environment_variable():
    import subprocess
    import sys

    code = "from scope_otel.capture import runtime; print(runtime.IMPLEMENTATION)"
    env = dict(__import__("os").environ, SCOPE_OTEL_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "python"


def test_tokens_of_both_implementations_read_alike(impl, fn):
    from scope_otel.capture import records

    fid = fn("shape", level="full")
    token = runtime.enter(fid, {"a": 1})
    assert len(token) == records.TOKEN_LEN
    assert token[records.FID] == fid and token[records.LEVEL] == 2
    assert token[records.ARGS] == {"a": 1} and token[records.END_NS] == 0
    runtime.exit(token, 5)
    assert token[records.END_NS] >= token[records.START_NS]
    assert (token[records.STATUS], token[records.VALUE]) == (records.RETURNED, 5)


def test_configure_applies_a_config_and_gives_the_processor_a_resource(live_config, pipeline, fn):
    from opentelemetry.sdk.resources import Resource

    fid = fn("configured", level="boundaries")
    cfg = config.load(env={"SCOPE_OTEL_FUNCTION_LEVELS": "tests.sample:configured=off"})
    config.set_current(cfg)
    runtime.configure(cfg, processor=pipeline.processor, resource=Resource.create({"service.name": "svc"}))
    assert runtime.LEVELS[fid] == 0
    other = fn("configured_other")
    runtime.exit(runtime.enter(other))
    (span,) = pipeline.spans()
    assert span.resource.attributes["service.name"] == "svc"


@pytest.fixture
def repr_opt_in():
    """``value_repr`` for the types the test names, reset afterwards."""
    from scope_otel.capture import snapshot

    yield snapshot.set_repr_types
    snapshot.set_repr_types(())


def test_captured_values_never_run_the_programs_repr(pipeline, fn):
    fid = fn("no_repr", level="full")
    ran = []

    class Chatty:
        def __init__(self):
            self.n = 1

        def __repr__(self):
            ran.append(1)
            return "Chatty()"

    obj = Chatty()
    runtime.exit(runtime.enter(fid, {"obj": obj}), [obj])
    (span,) = pipeline.spans()
    assert ran == []
    assert span.attributes["scope.arg.obj"] == f"<{__name__}.{Chatty.__qualname__} at {id(obj):#x}: n=1>"
    assert span.attributes["scope.return"] == f"[<{__name__}.{Chatty.__qualname__} at {id(obj):#x}: n=1>]"


def test_a_repr_that_calls_instrumented_code_is_not_recorded(pipeline, fn, repr_opt_in):
    outer, helper = fn("outer_full", level="full"), fn("repr_helper")

    class Chatty:
        def __repr__(self):
            runtime.exit(runtime.enter(helper))  # instrumented code inside a repr
            return "Chatty()"

    repr_opt_in(["*.Chatty"])  # value_repr: the user allows repr() for this type
    runtime.exit(runtime.enter(outer, {"obj": Chatty()}), Chatty())
    spans = pipeline.spans()
    assert [s.name for s in spans] == ["outer_full"]
    assert spans[0].attributes["scope.arg.obj"] == "Chatty()"
    assert spans[0].attributes["scope.return"] == "Chatty()"


def test_a_failing_opted_in_repr_is_recorded_as_such(pipeline, fn, repr_opt_in):
    fid = fn("odd_args", level="full")

    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    repr_opt_in(["*Broken"])
    b = Broken()
    runtime.exit(runtime.enter(fid, {"b": b}))
    (span,) = pipeline.spans()
    assert span.attributes["scope.arg.b"] == f"<{__name__}.{Broken.__qualname__} at {id(b):#x}: repr() raised RuntimeError>"
