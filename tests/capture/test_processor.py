"""RingBufferSpanProcessor: export, OTEL_BSP_*, bounded flush/shutdown, fork, stats."""
from __future__ import annotations

import os
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scope_otel.capture import RingBufferSpanProcessor, runtime
from tests.capture.conftest import Pipeline


class HangingExporter(SpanExporter):
    """An exporter whose backend never answers (until released)."""

    def __init__(self):
        self.release = threading.Event()
        self.calls = 0

    def export(self, spans):
        self.calls += 1
        self.release.wait()
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.release.wait()


def _run_bounded(call, limit: float = 20.0):
    """Run call() in a thread; return (finished, result). Liveness, not timing."""
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", call()), daemon=True)
    t.start()
    t.join(limit)
    return not t.is_alive(), out.get("r")


def test_spans_are_exported_with_counters(pipeline):
    for i in range(50):
        with pipeline.tracer.start_as_current_span(f"s{i}"):
            pass
    spans = pipeline.spans()
    assert sorted(s.name for s in spans) == sorted(f"s{i}" for i in range(50))
    st = pipeline.processor.stats()
    assert st["exported"] == 50 and st["written"] == 50 and st["dropped"] == 0
    assert st["implementation"] in ("c", "python")


def test_otel_bsp_environment_is_honoured_when_arguments_are_none(monkeypatch, impl):
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "128")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "1000")
    p = RingBufferSpanProcessor(InMemorySpanExporter())
    try:
        assert (p.max_queue_size, p.max_export_batch_size) == (128, 16)
        assert (p.schedule_delay_millis, p.export_timeout_millis) == (250, 1000)
        explicit = RingBufferSpanProcessor(InMemorySpanExporter(), max_queue_size=64, max_export_batch_size=8)
        assert (explicit.max_queue_size, explicit.max_export_batch_size) == (64, 8)
        explicit.shutdown()
    finally:
        p.shutdown()


def test_full_queue_drops_oldest_and_counts_while_exporter_hangs(impl):
    exporter = HangingExporter()
    p = Pipeline.__new__(Pipeline)
    p.exporter = exporter
    p.processor = RingBufferSpanProcessor(exporter, max_queue_size=100, max_export_batch_size=10,
                                          schedule_delay_millis=10, export_timeout_millis=200)
    provider = TracerProvider()
    provider.add_span_processor(p.processor)
    tracer = provider.get_tracer("t")
    try:
        for i in range(1000):
            with tracer.start_as_current_span("x"):
                pass
        st = p.processor.stats()
        assert st["written"] == 1000
        assert st["dropped_oldest"] + st["size"] + st["read"] == 1000
        assert st["dropped_oldest"] >= 1000 - 100 - 10  # at most a batch left with the worker
    finally:
        finished, _ = _run_bounded(lambda: p.processor.shutdown(timeout_millis=300))
        exporter.release.set()
    assert finished


def test_force_flush_and_shutdown_return_within_their_timeout_when_the_exporter_hangs(impl):
    exporter = HangingExporter()
    processor = RingBufferSpanProcessor(exporter, schedule_delay_millis=10)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("stuck"):
        pass
    try:
        finished, flushed = _run_bounded(lambda: processor.force_flush(timeout_millis=200))
        assert finished and flushed is False
        finished, _ = _run_bounded(lambda: processor.shutdown(timeout_millis=200))
        assert finished
        # after shutdown spans are ignored, never raised
        processor.on_end(object())
        assert processor.force_flush(100) is False
    finally:
        exporter.release.set()


def test_exporter_exceptions_are_counted_not_raised(impl):
    class Broken(SpanExporter):
        def export(self, spans):
            raise ConnectionError("backend down")

    processor = RingBufferSpanProcessor(Broken(), schedule_delay_millis=10)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("a"):
        pass
    assert processor.force_flush(5000)
    assert processor.stats()["export_failures"] == 1
    processor.shutdown(1000)


def test_shutdown_exports_what_is_queued(impl):
    exporter = InMemorySpanExporter()
    processor = RingBufferSpanProcessor(exporter, schedule_delay_millis=60_000)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for _ in range(5):
        with provider.get_tracer("t").start_as_current_span("late"):
            pass
    processor.shutdown(5000)
    assert len(exporter.get_finished_spans()) == 5


# These tests fork while the processor's worker thread runs, as gunicorn does on purpose; Python
# 3.12+ warns about any fork of a threaded process, which is the very case under test.
FORK_WITH_THREADS = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("hooks", ["at_fork", "pid_check"])
@FORK_WITH_THREADS
def test_fork_child_exports_its_own_spans_and_parent_keeps_working(pipeline, hooks):
    tracer, processor = pipeline.tracer, pipeline.processor
    with tracer.start_as_current_span("before-fork"):
        pass
    assert processor.force_flush(5000)  # nothing pending: the child's counts are exact
    if hooks == "pid_check":
        # simulate uWSGI: fork without at-fork hooks, so only the pid check can notice
        fork = _fork_without_hooks
    else:
        fork = os.fork
    # a worker holding its locks at fork time must not deadlock the child
    read_fd, write_fd = os.pipe()
    pid = fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            if hooks == "pid_check":
                # without hooks the child is noticed at the first drain request;
                # what was ended before that is dropped and counted
                with tracer.start_as_current_span("before-detection"):
                    pass
                processor.force_flush(5000)
            with tracer.start_as_current_span("in-child"):
                pass
            fid = runtime.register("tests.fork", "child_fn", __file__, 1)
            runtime.exit(runtime.enter(fid))
            ok = processor.force_flush(5000)
            names = sorted(s.name for s in pipeline.exporter.get_finished_spans())
            st = processor.stats()
            os.write(write_fd, (repr((ok, names, st["forks"], st["dropped_at_fork"]))).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    ok, names, forks, dropped_at_fork = eval(data.decode())  # noqa: S307 - our own child's repr
    assert ok and forks == 1
    assert "before-detection" not in names
    assert dropped_at_fork == (1 if hooks == "pid_check" else 0)
    assert "in-child" in names and "child_fn" in names
    with tracer.start_as_current_span("after-fork-parent"):
        pass
    parent_names = [s.name for s in pipeline.spans()]
    assert "after-fork-parent" in parent_names and "in-child" not in parent_names
    assert processor.stats()["forks"] == 0


def _fork_without_hooks() -> int:
    """fork(2) through ctypes: Python's at-fork hooks do not run (as under uWSGI).  PyDLL, not CDLL:
    CDLL releases the GIL around the call, and a thread of the parent (the exporter's, gRPC's) that
    takes it at that moment leaves the child waiting for it forever."""
    import ctypes

    return ctypes.PyDLL(None, use_errno=True).fork()


def test_stats_report_ring_export_and_runtime_counters(pipeline, fn):
    fid = fn("stats_fn")
    runtime.exit(runtime.enter(fid))
    pipeline.spans()
    st = pipeline.processor.stats()
    for key in ("written", "read", "dropped_oldest", "dropped_newest", "dropped_block_timeout",
                "high_water", "exported", "function_spans", "values_truncated", "values_redacted",
                "governor_ratio", "governor_changes", "calls_unsampled", "internal_errors"):
        assert key in st
    assert st["function_spans"] == 1


def test_metrics_publish_exported_dropped_and_queue_size(impl):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    processor = RingBufferSpanProcessor(InMemorySpanExporter(), schedule_delay_millis=10, meter_provider=meters)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("m"):
        pass
    processor.force_flush(5000)
    data = reader.get_metrics_data()
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"scope_otel.spans.exported", "scope_otel.spans.dropped", "scope_otel.queue.size"} <= names
    processor.shutdown(1000)


def test_several_workers_export_every_span_once(impl):
    exporter = InMemorySpanExporter()
    processor = RingBufferSpanProcessor(exporter, workers=3, max_export_batch_size=7, schedule_delay_millis=5)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for i in range(500):
        with tracer.start_as_current_span(f"w{i}"):
            pass
    processor.shutdown(10_000)
    names = [s.name for s in exporter.get_finished_spans()]
    assert sorted(names) == sorted(f"w{i}" for i in range(500))
    assert processor.stats()["workers_alive"] == 0


def test_block_overflow_waits_for_room_instead_of_dropping(impl):
    class Slow(SpanExporter):
        def __init__(self):
            self.count = 0

        def export(self, spans):
            threading.Event().wait(0.002)
            self.count += len(spans)
            return SpanExportResult.SUCCESS

    exporter = Slow()
    processor = RingBufferSpanProcessor(exporter, overflow="block", max_queue_size=16,
                                        max_export_batch_size=4, schedule_delay_millis=5)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for _ in range(200):
        with tracer.start_as_current_span("b"):
            pass
    assert processor.force_flush(20_000)
    st = processor.stats()
    processor.shutdown(2000)
    assert exporter.count == 200 and st["dropped"] == 0 and st["high_water"] <= 16


def test_exporter_failure_results_are_counted_as_failures(impl):
    class Refusing(SpanExporter):
        def export(self, spans):
            return SpanExportResult.FAILURE

    processor = RingBufferSpanProcessor(Refusing(), schedule_delay_millis=10)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("refused"):
        pass
    assert processor.force_flush(5000)
    st = processor.stats()
    processor.shutdown(1000)
    assert (st["exported"], st["export_failures"]) == (0, 1)


def test_force_flush_with_several_workers_waits_for_a_batch_still_being_exported(impl):
    exporter = HangingExporter()
    processor = RingBufferSpanProcessor(exporter, workers=2, max_export_batch_size=1, schedule_delay_millis=5)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("held"):
        pass
    try:
        for _ in range(200):  # until a worker has taken the span into the hung export
            if exporter.calls:
                break
            threading.Event().wait(0.01)
        assert exporter.calls == 1
        finished, flushed = _run_bounded(lambda: processor.force_flush(timeout_millis=200))
        assert finished and flushed is False  # the other, idle worker must not say "done"
        exporter.release.set()
        assert processor.force_flush(timeout_millis=10_000) is True
    finally:
        exporter.release.set()
        processor.shutdown(2000)


def test_record_only_spans_are_not_exported_as_with_batch_processor(impl):
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class RecordOnly(Sampler):
        def should_sample(self, *args, **kwargs):
            return SamplingResult(Decision.RECORD_ONLY)

        def get_description(self):
            return "record-only"

    exporter = InMemorySpanExporter()
    processor = RingBufferSpanProcessor(exporter, schedule_delay_millis=10)
    provider = TracerProvider(sampler=RecordOnly())
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("recorded-not-sampled"):
        pass
    assert processor.force_flush(5000)
    st = processor.stats()
    processor.shutdown(1000)
    assert exporter.get_finished_spans() == () and st["unsampled"] == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@FORK_WITH_THREADS
def test_fork_while_the_worker_is_stuck_in_the_exporter_does_not_deadlock_the_child(impl):
    import time

    class LockingHangingExporter(HangingExporter):
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()

        def export(self, spans):
            with self.lock:  # held across the fork by the parent's worker
                return super().export(spans)

    exporter = LockingHangingExporter()
    processor = RingBufferSpanProcessor(exporter, schedule_delay_millis=5, max_export_batch_size=1)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("stuck"):
        pass
    for _ in range(200):
        if exporter.calls:
            break
        threading.Event().wait(0.01)
    assert exporter.calls == 1
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with tracer.start_as_current_span("child"):
                pass
            processor.force_flush(200)  # the copied exporter hangs too: returns, never deadlocks
            processor.shutdown(200)
            code = 0 if processor.stats()["forks"] == 1 else 2
        finally:
            os._exit(code)
    try:
        deadline = time.monotonic() + 20
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the fork child deadlocked")
            threading.Event().wait(0.02)
        assert os.WEXITSTATUS(status) == 0
    finally:
        exporter.release.set()
        processor.shutdown(2000)


def test_an_exported_exception_no_longer_holds_its_frames_locals(pipeline, fn):
    """The worker formats each exception once and remembers it while a batch is converted;
    after the batch, nothing of ours keeps the exception, its frames or their locals alive."""
    import gc
    import weakref

    class Local:
        pass

    fid = fn("fails", level="full", capture=["exceptions"])
    held = []

    def fails():
        local = Local()
        held.append(weakref.ref(local))
        raise ValueError("boom")

    token = runtime.enter(fid)
    try:
        fails()
    except ValueError as exc:
        runtime.exception(token, exc)
    del token  # the ended call's record holds the exception until the worker has converted it
    spans = pipeline.spans()
    assert [e.name for e in spans[0].events] == ["exception"]
    assert "boom" in spans[0].events[0].attributes["exception.stacktrace"]
    gc.collect()
    assert held[0]() is None


def test_capturing_functions_without_a_correlator_is_refused_with_the_fix_named(impl):
    with pytest.raises(ValueError, match="correlator="):
        RingBufferSpanProcessor(InMemorySpanExporter(), capture_functions=True)


def test_without_a_correlator_the_processor_carries_sdk_spans_and_leaves_the_runtime_ring_alone(impl, fn):
    before = runtime.current_ring()
    exporter = InMemorySpanExporter()
    processor = RingBufferSpanProcessor(exporter, schedule_delay_millis=10)
    try:
        assert runtime.current_ring() is before  # function records keep going where they went
        provider = TracerProvider()
        provider.add_span_processor(processor)
        with provider.get_tracer("t").start_as_current_span("sdk"):
            pass
        assert processor.force_flush(5000)
        assert [s.name for s in exporter.get_finished_spans()] == ["sdk"]
    finally:
        processor.shutdown(1000)


def test_a_function_record_reaching_a_processor_without_correlator_is_counted_not_exported(impl, fn):
    exporter = InMemorySpanExporter()
    processor = RingBufferSpanProcessor(exporter, schedule_delay_millis=10)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    try:
        with provider.get_tracer("t").start_as_current_span("sdk"):
            pass
        ring = runtime.current_ring()
        runtime.bind_ring(processor._ring, move=False)
        try:
            runtime.exit(runtime.enter(fn("stray")))
        finally:
            runtime.bind_ring(ring, move=False)
        assert processor.force_flush(5000)
        st = processor.stats()
        assert [s.name for s in exporter.get_finished_spans()] == ["sdk"] and st["export_failures"] == 1
    finally:
        processor.shutdown(1000)
