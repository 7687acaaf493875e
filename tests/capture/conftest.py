"""Fixtures of the capture tests: both hot-path implementations, a live pipeline."""
from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scope_otel.capture import RingBufferSpanProcessor, _accel, runtime
from scope_otel.correlate.spans import Correlator

_C_BUILT = _accel.load(pure=False).name == "c"


@pytest.fixture(params=["c", "python"])
def impl(request):
    """Run the test against the C accelerator and against the pure-Python twin."""
    if request.param == "c" and not _C_BUILT:
        pytest.skip("C accelerator not built (no compiler); pure-Python path only")
    name = runtime.use_implementation(pure=request.param == "python")
    assert name == request.param
    try:
        yield name
    finally:
        runtime.use_implementation(pure=None)


class Pipeline:
    def __init__(self, **options):
        self.exporter = InMemorySpanExporter()
        self.processor = RingBufferSpanProcessor(self.exporter, schedule_delay_millis=20,
                                                 **{"correlator": Correlator, **options})
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tests")

    def spans(self, flush: bool = True):
        if flush:
            assert self.processor.force_flush(10_000)
        return list(self.exporter.get_finished_spans())

    def by_name(self):
        return {s.name: s for s in self.spans()}


@pytest.fixture
def pipeline(impl):
    """A TracerProvider exporting through RingBufferSpanProcessor to memory."""
    p = Pipeline()
    try:
        yield p
    finally:
        p.processor.shutdown(timeout_millis=5000)


@pytest.fixture
def fn():
    """Register a test function: fn(qualname, level="boundaries", ...) -> fid."""
    def make(qualname: str, level: str = "boundaries", **kw):
        return runtime.register("tests.sample", qualname, __file__, 1, level=level, **kw)

    return make
