"""Choose the C accelerator or its pure-Python twin, once, at import.

``scope_otel.capture._speedups`` (built from ``_speedups.c`` where a compiler
exists) and the pure-Python modules expose the same names and behave the
same.  ``SCOPE_OTEL_PURE_PYTHON=1`` forces the pure-Python path; the tests
use :func:`load` to get either explicitly.
"""
from __future__ import annotations

from types import SimpleNamespace

from scope_otel.accelerators import pure_python_requested


def load(pure: bool | None = None) -> SimpleNamespace:
    """The hot-path implementation: ``Ring``, ``HotPath``, ``Probe``, ``snap`` (the C snapshot
    of a captured value, None in pure Python: ``runtime._snap`` then), ``summarize`` (the C
    exception summary at the snapshots' limit, None in pure Python), ``recalibrate`` (keeps
    the C clock, which reads the TSC where it can, aligned with the system
    clock; ``SCOPE_OTEL_SYSTEM_CLOCK=1`` turns the TSC off) and ``name``."""
    if pure is None:
        pure = pure_python_requested()
    if not pure:
        try:
            from scope_otel.capture import _speedups
        except ImportError:
            pass
        else:
            return SimpleNamespace(name="c", Ring=_speedups.Ring, HotPath=_speedups.HotPath,
                                   Probe=_speedups.Probe, snap=_speedups.snap, summarize=_speedups.summarize,
                                   recalibrate=_speedups.recalibrate)
    from scope_otel.capture._pyhot import HotPath, Probe
    from scope_otel.capture._pyring import Ring

    return SimpleNamespace(name="python", Ring=Ring, HotPath=HotPath, Probe=Probe, snap=None, summarize=None,
                           recalibrate=_no_clock)


def _no_clock() -> bool:
    return False  # the pure-Python hot path reads time.time_ns() directly


IMPL = load()


def select(pure: bool | None) -> SimpleNamespace:
    """Switch the implementation new rings and hot paths use (tests, benchmarks)."""
    global IMPL
    IMPL = load(pure)
    return IMPL
