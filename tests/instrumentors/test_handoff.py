"""Work handed to threads, executors, queues and asyncio stays linked to its origin."""
from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.trace import SpanKind

from scope_otel.instrumentors.handoff import ScopeHandoffInstrumentor
from tests.instrumentors.conftest import instrumented


@pytest.fixture
def handoff(spans):
    with instrumented(ScopeHandoffInstrumentor(), spans):
        yield spans.tracer


def parent_of(spans, name):
    (span,) = spans.named(name)
    return span.parent.span_id if span.parent else None


def test_thread_work_is_a_child_of_the_span_that_started_it(spans, handoff):
    class Worker(threading.Thread):  # a subclass overriding run() is covered too
        def run(self):
            with handoff.start_as_current_span("in-subclass"):
                pass

    with handoff.start_as_current_span("starter") as starter:
        plain = threading.Thread(target=lambda: handoff.start_as_current_span("in-thread").__enter__().end())
        plain.start()
        worker = Worker()
        worker.start()
    plain.join()
    worker.join()
    sid = starter.get_span_context().span_id
    assert parent_of(spans, "in-thread") == sid
    assert parent_of(spans, "in-subclass") == sid


def test_executor_created_before_instrumenting_propagates_each_job(spans):
    executor = ThreadPoolExecutor(max_workers=2)
    executor.submit(lambda: None).result()  # workers exist before instrumenting
    with instrumented(ScopeHandoffInstrumentor(), spans):
        tracer = spans.tracer

        def job(n):
            with tracer.start_as_current_span(f"job-{n}"):
                return n * n

        with tracer.start_as_current_span("first") as first:
            assert executor.submit(job, 1).result() == 1
        with tracer.start_as_current_span("second") as second:
            assert list(executor.map(job, [2, 3])) == [4, 9]
    executor.shutdown()
    assert parent_of(spans, "job-1") == first.get_span_context().span_id
    assert parent_of(spans, "job-2") == parent_of(spans, "job-3") == second.get_span_context().span_id


def test_asyncio_tasks_and_run_in_executor_nest_under_their_creator(spans, handoff):
    def blocking():
        with handoff.start_as_current_span("in-executor"):
            return 7

    async def child():
        with handoff.start_as_current_span("in-task"):
            await asyncio.sleep(0)

    async def main():
        with handoff.start_as_current_span("creator") as creator:
            await asyncio.create_task(child())
            assert await asyncio.get_running_loop().run_in_executor(None, blocking) == 7
        return creator.get_span_context().span_id

    creator_id = asyncio.run(main())
    assert parent_of(spans, "in-task") == creator_id
    assert parent_of(spans, "in-executor") == creator_id


def test_queue_get_links_the_consumer_to_the_producer(spans, handoff):
    q = queue.Queue()
    item = {"order": 1}
    got = []

    def consume():
        with handoff.start_as_current_span("consumer"):
            got.append(q.get(timeout=5))

    consumer = threading.Thread(target=consume)
    with handoff.start_as_current_span("producer") as producer:
        q.put(item)
    consumer.start()
    consumer.join()
    assert got == [item] and got[0] is item  # the item itself is untouched
    (prod,) = spans.named("producer")
    (cons,) = spans.named("consumer")
    (send,) = [e for e in prod.events if e.name == "scope.send"]
    (recv,) = [e for e in cons.events if e.name == "scope.recv"]
    assert send.attributes["messaging.message.id"] == recv.attributes["messaging.message.id"]
    assert send.attributes["messaging.destination.name"] == recv.attributes["messaging.destination.name"]
    (link,) = cons.links
    assert link.context.span_id == producer.get_span_context().span_id
    assert link.attributes["scope.handoff"] == "queue"


def test_consumer_without_a_span_gets_a_linked_receive_span(spans, handoff):
    q = queue.LifoQueue()
    with handoff.start_as_current_span("producer") as producer:
        q.put_nowait("a")
    assert q.get_nowait() == "a"
    (receive,) = [s for s in spans.all() if s.kind is SpanKind.CONSUMER]
    assert receive.name.startswith("receive LifoQueue@")
    assert receive.links[0].context.span_id == producer.get_span_context().span_id


def test_items_put_twice_are_matched_in_order(spans, handoff):
    q = queue.Queue()
    with handoff.start_as_current_span("p1") as p1:
        q.put(5)
    with handoff.start_as_current_span("p2") as p2:
        q.put(5)
    with handoff.start_as_current_span("c"):
        assert [q.get(), q.get()] == [5, 5]
    (c,) = spans.named("c")
    assert [link.context.span_id for link in c.links] == [p1.get_span_context().span_id, p2.get_span_context().span_id]


def test_full_queue_raises_as_before_and_leaves_no_record(spans, handoff):
    q = queue.Queue(maxsize=1)
    with handoff.start_as_current_span("p"):
        q.put(1)
        with pytest.raises(queue.Full):
            q.put(2, block=False)
    assert q.get() == 1
    assert not q.__dict__.get("_scope_otel_sent")


def test_asyncio_queue_links_consumer_to_producer(spans, handoff):
    async def main():
        q = asyncio.Queue()
        with handoff.start_as_current_span("producer") as producer:
            await q.put("job")
        with handoff.start_as_current_span("consumer"):
            assert await q.get() == "job"
        return producer.get_span_context().span_id

    producer_id = asyncio.run(main())
    (cons,) = spans.named("consumer")
    assert [link.context.span_id for link in cons.links] == [producer_id]


def test_uninstrument_restores_thread_and_queue(spans):
    originals = (threading.Thread.start, queue.Queue.put, ThreadPoolExecutor.submit)
    with instrumented(ScopeHandoffInstrumentor(), spans):
        assert threading.Thread.start is not originals[0]
    assert (threading.Thread.start, queue.Queue.put, ThreadPoolExecutor.submit) == originals


def _seen_context(n):
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return n, f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def test_process_pool_jobs_run_under_the_submitters_trace_context(spans, handoff):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        with handoff.start_as_current_span("submitter") as submitter:
            results = list(pool.map(_seen_context, [1, 2]))
    ctx = submitter.get_span_context()
    assert results == [(n, f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") for n in (1, 2)]


def test_thread_started_inside_a_recorded_function_nests_under_that_function(spans, handoff):
    from opentelemetry import trace

    from scope_otel.capture import runtime

    fid = runtime.register("tests.instrumentors", "starts_a_thread", __file__, 1)
    with handoff.start_as_current_span("request"):
        token = runtime.enter(fid)
        if token is None:
            pytest.skip("the capture runtime records nothing in this process")
        try:
            function_span_id = trace.get_current_span().get_span_context().span_id
            worker = threading.Thread(target=lambda: handoff.start_span("in-thread").end())
            worker.start()
            worker.join()
        finally:
            runtime.exit(token)
    assert parent_of(spans, "in-thread") == function_span_id


def test_untraced_puts_leave_no_bookkeeping(spans, handoff):
    q = queue.Queue()
    q.put("internal")  # no span: e.g. a library's own worker queue
    assert "_scope_otel_sent" not in q.__dict__
    assert q.get() == "internal"


def test_queue_drained_without_get_stops_growing_the_table(spans, handoff, monkeypatch):
    from scope_otel.instrumentors import handoff as module

    monkeypatch.setattr(module, "_MAX_PENDING", 3)
    q = queue.Queue()
    before = module.dropped()
    with handoff.start_as_current_span("p"):
        for i in range(5):
            q.put(object())
    q.queue.clear()  # drained behind put/get's back
    assert len(q.__dict__["_scope_otel_sent"]) == 3
    assert module.dropped() == before + 2


def test_queues_inside_libraries_are_not_correlated(spans, handoff):
    import logging
    import logging.handlers

    import urllib3

    from tests.instrumentors.apps import shop
    from tests.instrumentors.conftest import serve

    records = queue.Queue()
    logger = logging.getLogger("tests.handoff.library")
    logger.addHandler(logging.handlers.QueueHandler(records))  # the stdlib puts into the queue
    logger.propagate = False
    try:
        with serve(shop.app) as url, handoff.start_as_current_span("request"):
            pool = urllib3.PoolManager()  # its connection pool is a LifoQueue
            for _ in range(2):
                assert pool.request("GET", f"{url}/health").status == 200
            logger.warning("hello")
    finally:
        logger.handlers.clear()
    assert records.get_nowait().getMessage() == "hello"
    assert "_scope_otel_sent" not in records.__dict__
    (request,) = spans.named("request")
    assert not request.links and not [e for e in request.events if e.name.startswith("scope.")]
    assert not [s for s in spans.all() if s.kind is SpanKind.CONSUMER]
