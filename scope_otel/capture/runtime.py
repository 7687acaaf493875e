"""The function-event runtime: what instrumented code calls.

Instrumented code (the AST rewriter or a wrapt wrapper) does, per function::

    fid = runtime.register("pkg.mod", "Cls.meth", __file__, 42, level="full",
                           capture=frozenset({"args", "return"}))
    ...
    token = runtime.enter(fid, {"x": x})         # None: not recorded
    try:
        result = body()
    except BaseException as exc:
        runtime.exception(token, exc)
        raise
    runtime.exit(token, result)

``enter`` takes ownership of the ``args`` dict (build a fresh one per call;
values that are not plain ``int``/``str``/``float``/``bool``/``None`` are
snapshotted at once by :mod:`scope_otel.capture.snapshot`, which runs none of
the program's code).  ``enter_params(fid, *values)`` is the
same with the values of the parameters named by ``register(...,
params=(...))``, in order: the argument dict is built only when the level
is ``full``, so a caller need not read the level first (the AST rewriter
uses it).  Both return a token (or ``None`` when the call is not recorded:
level off, sampled out, inside :func:`disabled`, unsampled
parent trace, a trace the governor sampled out); every other call accepts ``None`` and does nothing.
``exit`` returns the value it is given (``return runtime.exit(token, x)``
ends a call in its return statement), and a token that already ended is
left alone by ``exit`` and ``exception``.  None of them
raises into the application; internal failures are counted (``stats()``) and
logged once.  They never block unless the ring was configured with
``overflow="block"``.

``LEVELS[fid]`` is the effective level code (0 off, 1 boundaries, 2 full);
instrumented code may read it inline to skip work.  It is updated in place
when configuration changes at run time (``level``, ``function_levels``,
``sampling_rate`` through :func:`scope_otel.config.update` or SIGHUP) and when
the overhead governor (:mod:`.governor`) lowers or raises a function.

Effective level of a function: the first ``function_levels`` glob matching
``module:qualname``; else the configured ``level`` if it was set explicitly
(file, env, flag or run time); else the level given to :func:`register` (the
plan's).  The governor caps it.  Effective sampling is the function's
``sampling`` times ``sampling_rate``.

What is recorded: one record per call into the ring (see ``records.py``),
turned into an OpenTelemetry span off the hot path by
``RingBufferSpanProcessor``.  Calls nest through a per-thread/per-task call
stack kept in a ContextVar, and trace ids are inherited from the current
OpenTelemetry span, so a function called in a request span is its child, and
(through ``context.py``) an SDK span started in a function is the function's.

Generators (sync and async) call :func:`suspend` at ``yield`` and
:func:`resume` when re-entered, because their frames run in the consumer's
context.  Coroutines run by an asyncio task need neither at ``await``: each
task has its own context, so its call stack is its own; calling ``suspend``
before ``await child()`` would make ``child`` a sibling instead of a child.
:func:`state_change`, :func:`send` and :func:`recv` add span events.

Where the innermost call lives: the pure-Python hot path sets its ContextVar
on every enter/exit, so a new asyncio task (a copied context) starts from the
call that was innermost when the task was *created*.  The C hot path keeps one
stack object per context (a ContextVar.set per call would be most of its
cost), so a new task starts from the creator's innermost call when the task
*first records a call*.  The two differ only if the creating call has already
returned by then (fire-and-forget tasks), where C parents the task's calls to
the creator's caller instead.
"""
from __future__ import annotations

import copyreg
import fnmatch
import itertools
import logging
import os
import random
import sys
import threading
import types
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

from opentelemetry.trace.propagation import _SPAN_KEY

from scope_otel import config as _config_module

from scope_otel.capture import context as _context
from scope_otel.capture import _accel
from scope_otel.capture import governor as _governor
from scope_otel.capture.records import CAP_ARGS, CAP_EXCEPTIONS, CAP_RETURN, CAP_STATE
from scope_otel.capture.ring import Ring
from scope_otel.capture.snapshot import exception_summary as _exception_summary
from scope_otel.capture.snapshot import _native as _native_snapshot
from scope_otel.capture.snapshot import set_repr_types, snapshot as _snapshot
from scope_otel.plan import LEVELS as LEVEL_NAMES

__all__ = [
    "LEVELS", "register", "probe", "enter", "enter_params", "exit", "exception", "state_change", "suspend", "resume",
    "send", "recv", "disabled", "stats", "function_info", "bind_ring", "unbind_ring", "governor",
    "configure", "set_enabled", "use_implementation", "IMPLEMENTATION",
]

_log = logging.getLogger("scope_otel.capture")

LEVEL_CODES = {name: code for code, name in enumerate(LEVEL_NAMES)}
_CAPTURE_BITS = {"args": CAP_ARGS, "return": CAP_RETURN, "state": CAP_STATE, "exceptions": CAP_EXCEPTIONS}
_FULL_BITS = CAP_ARGS | CAP_RETURN | CAP_STATE | CAP_EXCEPTIONS

#: effective level code per function id (read inline by instrumented code)
LEVELS: list[int] = []
_RATES: list[float] = []   # effective sampling per fid
_FLAGS: list[int] = []     # capture bits per fid
_PARAMS: list[tuple[str, ...]] = []  # parameter names per fid (enter_params)
_FUNCS: list[tuple[str, str, str, int, int, frozenset, float]] = []  # register() arguments
_BY_IDENTITY: dict[tuple[str, str, str, int], int] = {}  # (module, qualname, file, line) -> fid
_registry_lock = threading.Lock()

#: marks "record nothing here" where the innermost call would be
_DISABLED = object()

# ---------------------------------------------------------------- failures

_errors = itertools.count()
_errors_seen = 0
_logged_error = False


def _on_error(exc: BaseException) -> None:
    global _errors_seen, _logged_error
    _errors_seen = next(_errors) + 1
    if not _logged_error:
        _logged_error = True
        _log.error("scope-otel capture failed internally (logged once, counted in stats): %r", exc)


# ---------------------------------------------------------------- values

_MAX_KEEP = 1 << 16  # a snapshot longer than this is cut here; correlation truncates further
#: snapshots are cut at max_value_length + 1 (enough to see truncation): the default's until
#: configure() applies the configuration (instrument.apply() alone never calls it)
_keep = _config_module.BY_KEY["max_value_length"].default + 1


def _set_keep(keep: int) -> None:
    """Snapshots are cut at ``keep`` characters (both implementations)."""
    global _keep
    _keep = keep
    if _native_snapshot is not None:
        _native_snapshot.snapshot_config(limit=keep)


if _native_snapshot is not None:
    _native_snapshot.snapshot_config(limit=_keep)


def _snap(value: Any) -> Any:
    """Something safe to keep until the worker formats it: the value if
    immutable and plain, else its snapshot (:mod:`snapshot`: computed now,
    while it is true, running none of the program's code)."""
    t = type(value)
    if t is int or t is str or t is float or t is bool or value is None:
        return value
    try:
        return _snapshot(value, _keep)
    except Exception:
        return "<unrepresentable value>"
def _summarize(exc: BaseException) -> tuple:
    """What a record keeps of an exception (see :func:`snapshot.exception_summary`)."""
    try:
        return _exception_summary(exc, _keep)
    except Exception as err:
        _on_error(err)
        return ("BaseException", "builtins", "<unrepresentable exception>", (), 0, None, None)


# ---------------------------------------------------------------- ids

# Ids come from a private generator: drawing from the application's global
# `random` would change what a seeded program computes.  Reseeded after fork.
_rng = random.Random()
_trace_bits = _rng.getrandbits


def _new_prefix() -> int:
    # 32 random bits, never zero, so span ids (prefix << 32 | counter) are never 0
    return _rng.getrandbits(31) | (1 << 31)


_MASK64 = (1 << 64) - 1


def _root_of(octx: Any) -> tuple | None:
    span = octx.get(_SPAN_KEY)
    if span is not None:
        sc = span.get_span_context()
        if sc.is_valid:
            if not sc.trace_flags & 1:
                return None  # the trace is not sampled: neither are its functions
            return sc.trace_id, sc.span_id
    trace_id = _trace_bits(128) or 1
    # a new trace: the governor's ratio decides, for the whole trace (governor.keeps, inlined)
    return (trace_id, 0) if trace_id & _MASK64 < _governor._bound else (trace_id, 0, False)


# ---------------------------------------------------------------- the hot path

_overlay = _context.install(lambda: None, _DISABLED)
# Until a RingBufferSpanProcessor binds its ring, records wait in a small one
# (moved over at bind); without any processor this bounds what is kept.
_UNBOUND_SIZE = 4096
_ring = Ring(_UNBOUND_SIZE)


def _new_hot() -> Any:
    # Each hot path keeps the innermost call of every thread/task in its own
    # ContextVar (a token in Python, a per-Context stack in C), read and
    # written only through hot.current()/hot.set_current().
    hot = _accel.IMPL.HotPath(
        LEVELS, _RATES, _FLAGS, _PARAMS, ContextVar("scope_otel_call", default=None), _DISABLED,
        _context.raw_source(_overlay), _root_of, _accel.IMPL.snap or _snap, _ring.sink, _new_prefix(),
        _on_error, _accel.IMPL.summarize or _summarize,
    )
    _overlay.current = hot.current
    _governor.on_ratio(lambda bound, every: hot.set_roots(_SPAN_KEY, bound, every))
    return hot


_hot = _new_hot()
_governor.attach_runtime(sys.modules[__name__])
enter = _hot.enter
enter_params = _hot.enter_params
exit = _hot.exit  # noqa: A001 - the contract's name
exception = _hot.exception
_current = _hot.current
_set_current = _hot.set_current
IMPLEMENTATION: str = _accel.IMPL.name


def use_implementation(pure: bool | None) -> str:
    """Switch between the C hot path and the pure-Python twin (tests and
    benchmarks; code that imported ``enter`` by name, and modules rewritten
    before the switch, which bind the calls at import, keep the old one)."""
    global _hot, enter, enter_params, exit, exception, IMPLEMENTATION, _ring, _current, _set_current
    global state_change, suspend, resume, _event
    impl = _accel.select(pure)
    _ring = Ring(_ring.capacity, _ring.overflow, _ring.block_timeout)
    _hot = _new_hot()
    _hot.set_max_events(_max_events)
    enter, enter_params, exit, exception = _hot.enter, _hot.enter_params, _hot.exit, _hot.exception
    state_change, suspend, resume, _event = _hot.state_change, _hot.suspend, _hot.resume, _hot.event
    _current, _set_current = _hot.current, _hot.set_current
    IMPLEMENTATION = impl.name
    return impl.name


def probe(fid: int, helpers: Any = None) -> Any:
    """``enter(*values)``/``exit``/``exception`` bound to function ``fid``
    (what rewritten modules call: ``enter`` is :func:`enter_params` for that
    function), its current ``level`` and ``sup`` (``helpers``: the rewrite's
    helper module).  Bound to the hot path current now (see
    :func:`use_implementation`).  A probe pickles as the identity of its
    function (module, qualname, file, line...), so a function pickled by value
    (cloudpickle) carries its probe to another process, where it registers
    the function again (see :func:`_probe_by_identity`)."""
    return _hot.probe(fid, helpers)


def _probe_by_identity(module: str, qualname: str, filename: str, firstlineno: int, level: str,
                       capture: frozenset, sampling: float, params: tuple, helpers: Any) -> Any:
    """The probe of the function with this identity, registering it if this process has not.
    ``helpers`` may be a module's name (a module does not pickle with plain ``pickle``)."""
    if isinstance(helpers, str):
        import importlib

        helpers = importlib.import_module(helpers)
    key = (module, qualname, filename, firstlineno)
    with _registry_lock:
        fid = _BY_IDENTITY.get(key)
    if fid is None:
        fid = register(module, qualname, filename, firstlineno, level, capture, sampling, params)
    return probe(fid, helpers)


def _reduce_probe(p: Any) -> tuple:
    module, qualname, filename, line, code, capture, sampling = _FUNCS[p.fid]
    helpers = p.sup
    if isinstance(helpers, types.ModuleType):
        helpers = helpers.__name__
    return _probe_by_identity, (module, qualname, filename, line, LEVEL_NAMES[code], capture, sampling,
                                _PARAMS[p.fid], helpers)


def _register_probe_pickling() -> None:
    # copyreg: both pickle and cloudpickle (whose dispatch table chains copyreg's) use it
    for pure in (True, False):
        copyreg.pickle(_accel.load(pure).Probe, _reduce_probe)


_register_probe_pickling()


def bind_ring(ring: Ring, move: bool = True) -> None:
    """Send function records to ``ring`` (the processor calls this); records
    already waiting in the previous ring move over unless ``move`` is False
    (after a fork, when the old ring's lock may be held by a dead thread)."""
    global _ring
    old, _ring = _ring, ring
    _hot.set_ring(ring.sink)
    if move and old is not ring:
        for item in old.take(old.capacity):
            ring.put(item)


def unbind_ring(ring: Ring) -> None:
    """Stop writing into ``ring`` (processor shutdown); a fresh ring takes over."""
    global _ring
    if _ring is ring:
        _ring = Ring(_UNBOUND_SIZE)
        _hot.set_ring(_ring.sink)


def current_ring() -> Ring:
    return _ring


# ---------------------------------------------------------------- events


#: Events kept per call (configure(): ``max_events``, OpenTelemetry's span event limit by default).
#: A generator that yields a million times must not hold two million suspend/resume events until
#: it ends: past the limit one last event, ``scope.events_dropped``, counts the rest.
_max_events = 128
EVENTS_DROPPED = "scope.events_dropped"


def set_max_events(n: int) -> None:
    """Keep the first ``n`` events of each call (both implementations; the rest are counted)."""
    global _max_events
    _max_events = max(0, int(n))
    _hot.set_max_events(_max_events)


# The events of a call, on the hot path (C where built): an event is (name, time_ns, attributes
# as a tuple of (key, value) pairs or None), only immutable values, so the record, once its
# events list becomes a tuple at exit, holds nothing the cyclic garbage collector keeps tracking.
#: ``state_change(token, target, value)``: ``target`` (e.g. ``"self.total"``) was assigned
#: ``value`` during the call (kept at ``full``, the value snapshotted at once).
state_change = _hot.state_change
#: ``suspend(token)``: the generator/coroutine of ``token`` leaves the stack (``yield``).
suspend = _hot.suspend
#: ``resume(token)``: the generator/coroutine of ``token`` is re-entered.
resume = _hot.resume
_event = _hot.event


_raw_ctx = _context.raw_getter(_overlay)
_orphans = itertools.count()
_orphans_seen = 0


def _message(kind: str, channel: str, message_id: str) -> None:
    global _orphans_seen
    try:
        token = _current()
        attrs = (("messaging.destination.name", str(channel)), ("messaging.message.id", str(message_id)))
        if token is not None and token is not _DISABLED:
            _event(token, kind, attrs)
            return
        if token is _DISABLED:
            return
        span = _raw_ctx().get(_SPAN_KEY)
        if span is not None and span.is_recording():
            span.add_event(kind, dict(attrs))
        else:
            _orphans_seen = next(_orphans) + 1
    except Exception as exc:
        _on_error(exc)


def send(channel: str, message_id: str) -> None:
    """A message leaves through ``channel`` (a queue, topic, socket...)."""
    _message("scope.send", channel, message_id)


def recv(channel: str, message_id: str) -> None:
    """A message arrives from ``channel``."""
    _message("scope.recv", channel, message_id)


@contextmanager
def disabled() -> Iterator[None]:
    """Nothing is recorded inside (scope-otel's own threads use this)."""
    saved = _current()
    _set_current(_DISABLED)
    try:
        yield
    finally:
        _set_current(saved)


def disable_current_thread() -> None:
    """Record nothing more in this thread's context (worker threads)."""
    _set_current(_DISABLED)


# ---------------------------------------------------------------- registry and levels


def _config() -> Any:
    try:
        from scope_otel import config

        return config.current()
    except Exception as exc:  # a bad config must not break the application
        _on_error(exc)
        return None


def _effective(fid: int, cfg: Any) -> tuple[int, float, int]:
    module, qualname, _f, _l, plan_level, capture, sampling = _FUNCS[fid]
    level = plan_level
    rate = sampling
    if cfg is not None:
        key = f"{module}:{qualname}"
        for pattern, name in cfg.function_levels.items():
            if fnmatch.fnmatchcase(key, pattern):
                level = LEVEL_CODES[name]
                break
        else:
            if cfg.source("level") != "default":
                level = LEVEL_CODES[cfg.level]
        rate = sampling * cfg.sampling_rate
    if not _enabled:
        level = 0
    level = min(level, governor.cap(fid))
    bits = _FULL_BITS if level == 2 else sum(_CAPTURE_BITS[c] for c in capture if c in _CAPTURE_BITS)
    return level, rate, bits


def _recompute(cfg: Any = None) -> None:
    cfg = cfg if cfg is not None else _config()
    with _registry_lock:
        for fid in range(len(_FUNCS)):
            LEVELS[fid], _RATES[fid], _FLAGS[fid] = _effective(fid, cfg)


def register(
    module: str,
    qualname: str,
    filename: str,
    firstlineno: int,
    level: str = "boundaries",
    capture: frozenset[str] = frozenset(),
    sampling: float = 1.0,
    params: tuple[str, ...] = (),
) -> int:
    """Declare an instrumented function; returns its function id (``fid``).

    ``params`` names the values that :func:`enter_params` receives, in order."""
    global _subscribed
    try:
        code = LEVEL_CODES.get(level, 1)
        sampling = min(1.0, max(0.0, float(sampling)))
    except Exception as exc:
        _on_error(exc)
        code, sampling = 1, 1.0
    cfg = _config()
    with _registry_lock:
        fid = len(_FUNCS)
        _FUNCS.append((str(module), str(qualname), str(filename), int(firstlineno or 0), code,
                       frozenset(capture or ()), sampling))
        _BY_IDENTITY.setdefault(_FUNCS[fid][:4], fid)
        LEVELS.append(0)
        _RATES.append(1.0)
        _FLAGS.append(0)
        try:
            _PARAMS.append(tuple(str(p) for p in params or ()))
        except Exception as exc:
            _on_error(exc)
            _PARAMS.append(())
        try:
            LEVELS[fid], _RATES[fid], _FLAGS[fid] = _effective(fid, cfg)
        except Exception as exc:
            _on_error(exc)
        if not _subscribed:
            _subscribed = True
            _subscribe()
    return fid


def function_info(fid: int) -> tuple[str, str, str, int]:
    """``(module, qualname, filename, firstlineno)`` of a registered function."""
    return _FUNCS[fid][:4]


_subscribed = False


def _subscribe() -> None:
    try:
        from scope_otel import config

        config.subscribe(_on_config_change)
    except Exception as exc:
        _on_error(exc)


def _on_config_change(cfg: Any, changed: dict) -> None:
    if changed.keys() & {"level", "function_levels", "sampling_rate"}:
        _recompute(cfg)


_enabled = True


def configure(cfg: Any = None, processor: Any = None, resource: Any = None) -> None:
    """Apply a (new) configuration to every registered function (the
    launcher calls this once at start); ``resource`` is given to
    ``processor`` for function spans ended before any SDK span."""
    global _keep
    try:
        _recompute(cfg)
        if cfg is not None and getattr(cfg, "max_value_length", None):
            _set_keep(min(_MAX_KEEP, int(cfg.max_value_length) + 1))
        if cfg is not None and getattr(cfg, "max_events", None) is not None:
            set_max_events(cfg.max_events)
        if cfg is not None and getattr(cfg, "budget", None) is not None:
            governor.configure(cfg.budget)
        if cfg is not None and getattr(cfg, "value_repr", None) is not None:
            set_repr_types(cfg.value_repr)
        if processor is not None and resource is not None and hasattr(processor, "set_resource"):
            processor.set_resource(resource)
    except Exception as exc:
        _on_error(exc)


def set_enabled(on: bool) -> None:
    """Turn all function capture on or off (levels become 0 while off)."""
    global _enabled
    _enabled = bool(on)
    _recompute()


governor = _governor.Governor(lambda: _recompute())


# ---------------------------------------------------------------- fork and stats


def _after_fork_in_child() -> None:
    global _ring
    _rng.seed()  # children must not repeat the parent's trace ids
    # A worker may have held the old ring's lock at fork time: never touch it.
    _ring = Ring(_ring.capacity, _ring.overflow, _ring.block_timeout)
    _hot.set_ring(_ring.sink)
    _hot.reseed(_new_prefix())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def reseed_after_fork() -> None:
    """For fork paths without at-fork hooks (uWSGI): fresh span-id prefix."""
    _rng.seed()
    _hot.reseed(_new_prefix())


def stats() -> dict[str, Any]:
    """Runtime counters: functions, internal errors, governor state, implementation."""
    out = {
        "implementation": IMPLEMENTATION,
        "functions_registered": len(_FUNCS),
        "internal_errors": _errors_seen,
        "orphan_messages": _orphans_seen,
        "calls_unsampled": _hot.unsampled(),
    }
    out.update(governor.stats())
    return out
