"""Captured values as text with secrets redacted: :func:`redacted_repr`."""
from __future__ import annotations

from typing import Any

from scope_otel import redact


def redacted_repr(values: dict[str, Any]) -> str:
    """``{key: repr(value)}`` redacted by :mod:`scope_otel.redact` (counted), length-capped
    to ``max_value_length``."""
    redactor = redact.current()
    try:
        from scope_otel import config

        limit = config.current().max_value_length
    except Exception:
        limit = 512
    text = "{" + ", ".join(f"{key}={redactor.value(key, _short_repr(value))}" for key, value in values.items()) + "}"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= 120 else text[:117] + "..."
