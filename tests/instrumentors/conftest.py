"""Fixtures for the integration tests: an in-memory span pipeline, real
WSGI servers on loopback, and helpers to read span trees."""
from __future__ import annotations

import copy
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class Spans:
    """A TracerProvider whose finished spans can be awaited and searched."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def wait(self, count: int = 1, where: Callable[[ReadableSpan], bool] = lambda s: True, timeout: float = 10.0) -> list[ReadableSpan]:
        """Spans matching ``where`` once at least ``count`` exist (servers end
        spans when they close the response, a moment after the client saw it)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [s for s in self.all() if where(s)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.01)

    def named(self, name: str, count: int = 1) -> list[ReadableSpan]:
        return self.wait(count, lambda s: s.name == name)

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.all() if s.parent is not None and s.parent.span_id == parent.context.span_id]

    def clear(self) -> None:
        self.exporter.clear()


@pytest.fixture
def spans() -> Spans:
    return Spans()


@contextmanager
def instrumented(instrumentor, spans: Spans, **kwargs) -> Iterator:
    """``instrument()`` for the test's duration, with the test's provider."""
    instrumentor.instrument(tracer_provider=spans.provider, **kwargs)
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()


@contextmanager
def level_full() -> Iterator[None]:
    """Run-time ``level=full`` for the block, then the saved configuration back.

    Not ``update(level=previous)``: that would leave ``level`` set explicitly
    (source "runtime"), overriding every later function's own level.
    """
    from scope_otel import config
    from scope_otel.capture import runtime

    previous = copy.deepcopy(config.current())
    config.update(level="full")
    try:
        yield
    finally:
        config.set_current(previous)
        runtime.configure(previous)


@contextmanager
def serve(app) -> Iterator[str]:
    """Serve a WSGI app with werkzeug's threaded dev server; yield its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
