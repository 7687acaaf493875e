"""Shared fixtures: a real OTLP receiver and helpers to run programs under scope-otel."""
from __future__ import annotations

import os

import pytest

from tests.support.otlp_receiver import OTLPReceiver

# The overhead governor samples traces when recording costs more than its budget of the process'
# CPU, which depends on the machine's load: tests that count spans would count what the load left.
# Every test runs with a budget the governor never reaches (1000 %), in this process and in the
# programs it starts that inherit the environment; tests of the governor give their own budget.
os.environ["SCOPE_OTEL_BUDGET"] = "1000"


@pytest.fixture(autouse=True)
def _governor_out_of_the_way():
    from scope_otel.capture import runtime

    runtime.governor.configure(1000)
    yield
    runtime.governor.configure(1000)
    if runtime.governor.step or runtime.governor.caps:
        runtime.governor.reset()


@pytest.fixture
def otlp_receiver():
    """A real gRPC + HTTP OTLP receiver on free loopback ports."""
    receiver = OTLPReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
