"""Captured values as text with secrets redacted: :func:`redacted_repr`."""
from __future__ import annotations

from typing import Any


def redacted_repr(values: dict[str, Any]) -> str:
    """``{key: repr(value)}`` with secret-looking keys redacted, length-capped.

    Keys are matched (case-insensitive substring) against the configured
    ``redact`` patterns; the result is truncated to ``max_value_length``.
    """
    try:
        from scope_otel import config

        cfg = config.current()
        patterns = tuple(p.lower() for p in cfg.redact)
        limit = cfg.max_value_length
    except Exception:
        from scope_otel.config import DEFAULT_REDACT

        patterns, limit = DEFAULT_REDACT, 512
    parts = []
    for key, value in values.items():
        lowered = key.lower()
        shown = "[REDACTED]" if any(p in lowered for p in patterns) else _short_repr(value)
        parts.append(f"{key}={shown}")
    text = "{" + ", ".join(parts) + "}"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= 120 else text[:117] + "..."
