"""Fixtures for the causal-order tests: an in-memory tracer provider with the HLC stamp."""
from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scope_otel.causal.processor import HLCSpanProcessor


class Recorded:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(HLCSpanProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests.causal")

    def spans(self, name: str | None = None) -> list:
        found = list(self.exporter.get_finished_spans())
        return [s for s in found if s.name == name] if name else found

    def one(self, name: str):
        (span,) = self.spans(name)
        return span


@pytest.fixture
def recorded():
    rec = Recorded()
    yield rec
    rec.provider.shutdown()
