"""Fixtures for the distributed tests: an in-memory tracer provider with the HLC stamp, ``scope-otel collect`` in a subprocess."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scope_otel.distributed.processor import HLCSpanProcessor


class Recorded:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(HLCSpanProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests.distributed")

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


class CollectProcess:
    """``scope-otel collect`` running in a subprocess on free loopback ports."""

    def __init__(self, store: str, *args: str, env: dict | None = None) -> None:
        self.store = store
        ready = store + ".ready.json"
        exe = os.path.join(os.path.dirname(sys.executable), "scope-otel")
        self.proc = subprocess.Popen(
            [exe, "collect", "--store", store, "--grpc-port", "0", "--http-port", "0", "--ready-file", ready, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"scope-otel collect did not start:\n{self.output}")
            time.sleep(0.05)
        with open(ready) as fh:
            endpoints = json.load(fh)
        self.grpc_endpoint, self.http_endpoint = endpoints["grpc"], endpoints["http"]
        self.output = ""

    def stop(self, timeout: float = 30) -> int:
        """SIGINT (the documented way to stop it), wait, keep its output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except Exception:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.output = out or ""
        return self.proc.returncode


@pytest.fixture
def collect_process(tmp_path):
    started: list[CollectProcess] = []

    def start(*args: str, env: dict | None = None) -> CollectProcess:
        process = CollectProcess(str(tmp_path / f"store{len(started)}"), *args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
