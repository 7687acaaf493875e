"""The ``SCOPE_OTEL_PURE_PYTHON`` switch, parsed in this one place.

The capture hot path, the OTLP request encoder, the ClickHouse span encoder
and the store writer's block merger each have a C accelerator and a
pure-Python twin that behave the same.  ``SCOPE_OTEL_PURE_PYTHON=1`` (or
``true``, ``yes``, ``on``) makes every one of them use the twin; each asks
:func:`pure_python_requested` when it chooses, so a test that sets the
variable sees its effect at the next choice.
"""
from __future__ import annotations

import os

__all__ = ["pure_python_requested"]


def pure_python_requested() -> bool:
    """True when ``SCOPE_OTEL_PURE_PYTHON`` asks for the pure-Python twins."""
    return os.environ.get("SCOPE_OTEL_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes", "on")
