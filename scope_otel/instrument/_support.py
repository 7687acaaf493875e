"""Small helpers that rewritten code calls, through its probes (``probe.sup``).

They exist only where an inline statement cannot do the job: a ``yield``
nested inside a larger expression (no room for ``try``/``finally``) and
``locals()``/``vars()`` (hide the ``_@scope_*`` locals the rewrite adds).
"""
from __future__ import annotations

from typing import Any, Generator

from scope_otel.capture import runtime as _rt

_PREFIX = "_@"


def yield_one(token: Any, value: Any) -> Generator[Any, Any, Any]:
    """``(yield value)`` as ``(yield from yield_one(token, value))``: suspend, yield, resume.

    A generator, so that ``throw()`` and ``close()`` at the yield still
    resume first; used for yields nested in expressions of generators.
    """
    if token is None:
        return (yield value)
    _rt.suspend(token)
    try:
        return (yield value)
    finally:
        _rt.resume(token)


def suspending(token: Any, value: Any) -> Any:
    """Report the frame leaving the stack; pass ``value`` through to ``yield``."""
    if token is not None:
        _rt.suspend(token)
    return value


def resumed(token: Any, value: Any) -> Any:
    """Report the frame back on the stack; pass the sent value through."""
    if token is not None:
        _rt.resume(token)
    return value


def user_locals(namespace: dict) -> dict:
    """``locals()`` without the names the rewrite added."""
    if any(type(k) is str and k.startswith(_PREFIX) for k in namespace):
        return {k: v for k, v in namespace.items() if not (type(k) is str and k.startswith(_PREFIX))}
    return namespace
