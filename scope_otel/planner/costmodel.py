"""What recording costs on this machine, per event: the prices the planner spends its budget with.

:class:`CostModel` holds the costs in microseconds (a plain call and a
statement, the application's unit of work; an instrumented function at each
level; turning a record into a span and encoding it; the start-up a process
pays once) and :meth:`CostModel.call_cost` prices one call at a level.
:func:`calibrate` measures them (:mod:`.measure.calibrate`, about a second)
once per Python, machine, capture runtime, exporter and scope-otel version,
and caches them in ``$XDG_CACHE_HOME/scope-otel/costmodel.json`` (else
``~/.cache/scope-otel/``); ``refresh=True`` measures again.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields

from scope_otel.accelerators import pure_python_requested
from scope_otel.version import __version__


@dataclass(frozen=True)
class CostModel:
    """Measured costs in microseconds per event."""

    call_us: float          # a plain Python call, the application's unit of work
    stmt_us: float          # one simple statement
    check_us: float         # an instrumented function at level off (probe enter + exit)
    boundaries_us: float    # enter + exit at boundaries
    full_us: float          # enter(args) + exit(value) at full, one argument
    arg_us: float           # each further argument at full
    container_us: float     # extra for an argument that is a collection (100 small tuples)
    sampled_out_us: float   # enter that samples the call out
    state_us: float         # one state_change event
    offpath_us: float       # record -> span conversion off the hot path
    source: str
    startup_us: float = 0.0  # once per process: instrumentation import, hook, rewrite
    export_us: float = 0.0  # encoding one span for the exporter
    exporter: str = "none"
    key: str = ""
    calibration_s: float = 0.0
    cached: bool = False

    def call_cost(self, level: str, nargs: int = 0, mutations: int = 0, sampling: float = 1.0,
                  containers: int = 0, args_repr_us: float | None = None) -> float:
        """Overhead of one call of a function recorded at ``level`` (µs).

        ``containers`` of the ``nargs`` arguments look like collections (the
        body iterates or indexes them); their repr is what capturing costs.
        ``args_repr_us``, when measured (``--profile``), replaces that guess.
        """
        if level == "off":
            return self.check_us
        if level == "full":
            guessed = self.container_us * containers if args_repr_us is None else args_repr_us
            recorded = (self.full_us + self.arg_us * max(nargs - 1, 0) + self.state_us * mutations
                        + guessed)
        else:
            recorded = self.boundaries_us
        recorded += self.offpath_us + self.export_us
        return sampling * recorded + (1.0 - sampling) * self.sampled_out_us

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "scope-otel", "costmodel.json")


#: Bumped when what is measured changes, so older cache entries are not reused.
_MODEL_VERSION = 6


def _cache_key(runtime: str, exporter: str) -> str:
    impl = sys.implementation.name
    return "|".join([f"{impl}-{platform.python_version()}", platform.machine(), platform.node(),
                     runtime, exporter, f"scope-otel-{__version__}", f"model-{_MODEL_VERSION}"])


def _measure(n: int, exporter: str) -> CostModel:
    # imported here: it loads the capture runtime, the SDK and the encoders, which a cached model never needs
    from scope_otel.planner.measure import calibrate as timing

    started = time.perf_counter()
    costs, source = timing.measure(n, exporter)
    return CostModel(**costs, source=source, exporter=exporter, calibration_s=time.perf_counter() - started)


def configured_exporter() -> str:
    """The traces exporter scope-otel's configuration names (``none`` if unreadable)."""
    try:
        from scope_otel.config import current

        names = [n for n in current().traces_exporter if n != "none"]
    except Exception:  # a broken config file is reported by `scope-otel run`, not here
        return "none"
    for name in ("clickhouse", "otlp", "console"):
        if name in names:
            return name
    return "none"


def _read_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: str, entries: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".costmodel-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs a re-calibration next time


def _runtime_kind() -> str:
    """Which capture runtime would be timed, without importing it (part of the cache key)."""
    import importlib.util

    fast = importlib.util.find_spec("scope_otel.capture._speedups") is not None
    return "runtime-c" if fast and not pure_python_requested() else "runtime-py"


def calibrate(*, refresh: bool = False, cache: str | None = None, iterations: int = 20000,
              exporter: str | None = None) -> CostModel:
    """The machine's cost model for ``exporter`` (default: the configured one), cached."""
    path = cache or cache_path()
    exporter = exporter or configured_exporter()
    key = _cache_key(_runtime_kind(), exporter)
    entries = _read_cache(path)
    cached = entries.get(key)
    known = {f.name for f in fields(CostModel)}
    if not refresh and isinstance(cached, dict) and known - {"key", "cached"} <= set(cached):
        try:
            values = {k: v for k, v in cached.items() if k in known}
            return CostModel(**{**values, "key": key, "cached": True})
        except TypeError:
            pass  # unreadable entry: measure again
    measured = CostModel(**{**asdict(_measure(iterations, exporter)), "key": key})
    entries[key] = measured.as_dict()
    _write_cache(path, entries)
    return CostModel(**entries[key])  # rounded as cached, so both paths agree
