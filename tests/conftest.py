"""Shared fixtures: a real OTLP receiver and helpers to run programs under scope-otel."""
from __future__ import annotations

import pytest

from tests.support.otlp_receiver import OTLPReceiver


@pytest.fixture
def otlp_receiver():
    """A real gRPC + HTTP OTLP receiver on free loopback ports."""
    receiver = OTLPReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
