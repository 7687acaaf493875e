"""Function spans and SDK spans nest both ways, in threads and asyncio tasks."""
from __future__ import annotations

import asyncio
import threading

from opentelemetry import context as otel_context
from opentelemetry import trace

from scope_otel.capture import runtime


def _call(fid, body=None):
    token = runtime.enter(fid)
    try:
        return body() if body else None
    finally:
        runtime.exit(token)


def _assert_child(child, parent):
    assert child.parent is not None, f"{child.name} has no parent"
    assert child.parent.span_id == parent.context.span_id, f"{child.name} is not a child of {parent.name}"
    assert child.context.trace_id == parent.context.trace_id


def test_function_called_in_a_request_span_is_its_child(pipeline, fn):
    handler = fn("handler")
    with pipeline.tracer.start_as_current_span("GET /orders"):
        _call(handler)
    spans = pipeline.by_name()
    _assert_child(spans["handler"], spans["GET /orders"])


def test_sdk_span_started_in_a_function_is_the_functions_child(pipeline, fn):
    repo = fn("load_orders")

    def query():
        with pipeline.tracer.start_as_current_span("SELECT orders"):
            assert trace.get_current_span().get_span_context().is_valid

    with pipeline.tracer.start_as_current_span("GET /orders"):
        _call(repo, query)
    spans = pipeline.by_name()
    _assert_child(spans["SELECT orders"], spans["load_orders"])
    _assert_child(spans["load_orders"], spans["GET /orders"])


def test_function_inside_an_sdk_span_inside_a_function_chains_correctly(pipeline, fn):
    outer, inner = fn("service"), fn("row_mapper")

    def body():
        with pipeline.tracer.start_as_current_span("SELECT"):
            _call(inner)

    _call(outer, body)
    spans = pipeline.by_name()
    _assert_child(spans["SELECT"], spans["service"])
    _assert_child(spans["row_mapper"], spans["SELECT"])
    assert spans["service"].parent is None


def test_get_current_span_sees_the_innermost_function_only_while_it_runs(pipeline, fn):
    fid = fn("visible")
    seen = {}

    def body():
        seen["inside"] = trace.get_current_span().get_span_context()

    _call(fid, body)
    seen["after"] = trace.get_current_span().get_span_context()
    (span,) = pipeline.spans()
    assert seen["inside"].span_id == span.context.span_id
    assert not seen["after"].is_valid


def test_attached_context_inside_a_function_keeps_the_function_as_parent(pipeline, fn):
    fid = fn("attaching")

    def body():
        token = otel_context.attach(otel_context.set_value("k", "v"))
        try:
            with pipeline.tracer.start_as_current_span("child"):
                pass
        finally:
            otel_context.detach(token)

    _call(fid, body)
    spans = pipeline.by_name()
    _assert_child(spans["child"], spans["attaching"])


def test_threads_have_their_own_call_stacks(pipeline, fn):
    fid_a, fid_b, leaf = fn("thread_a"), fn("thread_b"), fn("leaf")
    barrier = threading.Barrier(2)

    def worker(fid, name):
        with pipeline.tracer.start_as_current_span(f"req-{name}"):
            def body():
                barrier.wait()  # both threads are inside their function now
                token = runtime.enter(leaf)
                with pipeline.tracer.start_as_current_span(f"sql-{name}"):
                    pass
                runtime.exit(token)
            _call(fid, body)

    threads = [threading.Thread(target=worker, args=(f, n)) for f, n in ((fid_a, "a"), (fid_b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = pipeline.spans()
    by = {s.name: s for s in spans}
    leaves = [s for s in spans if s.name == "leaf"]
    assert len(leaves) == 2
    for name, fname in (("a", "thread_a"), ("b", "thread_b")):
        fspan = by[fname]
        _assert_child(fspan, by[f"req-{name}"])
        (my_leaf,) = [s for s in leaves if s.parent.span_id == fspan.context.span_id]
        _assert_child(by[f"sql-{name}"], my_leaf)


def test_asyncio_tasks_have_their_own_stacks_and_inherit_their_creator(pipeline, fn):
    gather_fid, task_fid = fn("fan_out"), fn("task_body")

    async def task(i):
        token = runtime.enter(task_fid)
        await asyncio.sleep(0.001 * (3 - i))  # interleave the tasks
        with pipeline.tracer.start_as_current_span(f"sql-{i}"):
            pass
        runtime.exit(token)

    async def main():
        with pipeline.tracer.start_as_current_span("request"):
            token = runtime.enter(gather_fid)
            await asyncio.gather(*(task(i) for i in range(3)))
            runtime.exit(token)

    asyncio.run(main())
    spans = pipeline.spans()
    by = {s.name: s for s in spans}
    _assert_child(by["fan_out"], by["request"])
    bodies = {s.context.span_id: s for s in spans if s.name == "task_body"}
    assert len(bodies) == 3
    for body in bodies.values():
        _assert_child(body, by["fan_out"])
    for i in range(3):
        sql = by[f"sql-{i}"]
        assert sql.parent.span_id in bodies  # each query under its own task's function
    assert len({by[f"sql-{i}"].parent.span_id for i in range(3)}) == 3


def test_unsampled_parent_trace_records_no_function_spans(impl, fn):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from tests.capture.conftest import Pipeline

    p = Pipeline()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(p.processor)
    fid = fn("unsampled")
    try:
        with provider.get_tracer("t").start_as_current_span("dropped"):
            assert runtime.enter(fid) is None
    finally:
        p.processor.shutdown(2000)
