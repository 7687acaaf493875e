"""Pure-Python twin of ``_speedups.HotPath``: the enter/exit/exception calls.

Built once by :mod:`scope_otel.capture.runtime`, which re-exports the bound
functions.  Everything the calls need is captured in closure cells so the hot
path does no attribute or global lookups.  The C version takes the same
constructor arguments and behaves the same (see ``records.py`` for the token
and record layout).
"""
from __future__ import annotations

import functools
import itertools
import random
import time
from contextvars import ContextVar
from typing import Any, Callable

from scope_otel.capture.records import CAP_ARGS, CAP_RETURN, CAP_STATE

_RNG = random.Random()  # private: the application's seeded `random` stays untouched

_PLAIN = frozenset({int, str, float, bool, type(None)})


class HotPath:
    """``enter``/``exit``/``exception`` bound to one set of runtime tables.

    ``levels``, ``rates``, ``flags`` and ``params`` (tuples of parameter
    names, for :meth:`enter_params`) are lists indexed by function id and
    are read on every call, so in-place updates take effect immediately.
    ``cur`` is the ContextVar holding the innermost token (or ``disabled``).
    ``octx`` is the ContextVar holding the current OpenTelemetry Context (or a
    callable returning it); ``root_of(ctx)``
    returns ``(trace_id, parent_span_id)`` for a call with no recorded caller,
    ``(trace_id, parent_span_id, False)`` for one whose trace is sampled out as
    a whole (it is pushed as a level-0 marker that is never emitted, and no
    call under it is recorded; :meth:`unsampled` counts them), or ``None``
    when the call must not be recorded (unsampled parent).
    ``snap(obj)`` turns a value into something safe to keep (runs with
    recording disabled).  ``put`` is the ring (anything with ``put``) or a
    callable that writes a record.  ``summarize(exc)`` turns an exception
    leaving a call into the immutable summary the record keeps.

    An ended call's record is a tuple of immutable values: the token list
    with the caller, the OpenTelemetry contexts and the events list left
    out (events become a tuple), so records waiting in the ring keep nothing
    alive and leave nothing for the cyclic garbage collector.  One
    difference from C: the collector untracks nested tuples one nesting level
    per collection, where the C path untracks a record's tuples at once.
    """

    def __init__(
        self,
        levels: list[int],
        rates: list[float],
        flags: list[int],
        params: list[tuple[str, ...]],
        cur: ContextVar,
        disabled: Any,
        octx: Any,
        root_of: Callable[[Any], tuple[int, int] | None],
        snap: Callable[[Any], Any],
        put: Any,
        prefix: int,
        on_error: Callable[[BaseException], None],
        summarize: Callable[[BaseException], Any],
    ) -> None:
        octx_get = octx.get if isinstance(octx, ContextVar) else octx
        self._build(levels, rates, flags, params, cur, disabled, octx_get, root_of, snap, _writer(put),
                    prefix, on_error, summarize)

    def set_ring(self, put: Any) -> None:
        """Write records into ``put`` (a ring or a callable) from now on."""
        self._rebind(_writer(put), None)

    def probe(self, fid: int, sup: Any = None) -> "Probe":
        """``enter``/``exit``/``exception`` bound to function ``fid``, with its ``level`` and the
        helpers ``sup`` (see :class:`Probe`)."""
        if type(fid) is not int:
            raise TypeError("probe(fid): fid must be an int")
        if fid < 0:
            raise ValueError("probe(fid): fid must not be negative")
        return Probe(self, fid, sup)

    def set_roots(self, span_key: Any, bound: int, every: bool) -> None:
        """The C twin decides new traces itself; here ``root_of`` does, with the same rule."""

    def reseed(self, prefix: int) -> None:
        """New span-id prefix and counter (after fork, so ids stay unique)."""
        self._rebind(None, prefix)

    def _build(self, levels, rates, flags, params, cur, disabled, octx_get, root_of, snap, put, prefix,
               on_error, summarize) -> None:
        # enter/exit/exception are built once and never replaced (callers may
        # hold them); _rebind swaps the ring and id prefix through nonlocal.
        cur_get, cur_set = cur.get, cur.set
        count = itertools.count(1).__next__
        prefix = (prefix & 0xFFFFFFFF) << 32
        clock = time.time_ns
        unsampled = [0]
        rand = _RNG.random  # sampling never consumes the application's random state

        def enter(fid: int, args: dict | None = None) -> list | None:
            try:  # zero-cost in 3.11; nothing may reach the application
                lvl = levels[fid]
                if not lvl:
                    return None
                rate = rates[fid]
                if rate < 1.0 and rand() >= rate:
                    return None
                caller = cur_get()
                if caller is disabled:
                    return None
                if caller is not None and not caller[10]:  # inside a trace that is not recorded
                    unsampled[0] += 1
                    return None
                octx = octx_get()
                if caller is not None and caller[5] is octx:
                    trace_id = caller[1]
                    parent_id = caller[0]
                else:
                    root = root_of(octx)
                    if root is None:
                        return None
                    if len(root) == 3:  # sampled out as a whole: a marker, never emitted
                        unsampled[0] += 1
                        token = [prefix | (count() & 0xFFFFFFFF), root[0], root[1], fid, 0,
                                 octx, caller, None, None, None, 0, 0, 0, 0, None]
                        cur_set(token)
                        return token
                    trace_id, parent_id = root
                flg = flags[fid]
                captured = None
                if args is not None and flg & CAP_ARGS:
                    if type(args) is dict and all(type(v) in _PLAIN for v in args.values()):
                        captured = args  # enter() owns the dict; plain values need no snapshot
                    else:
                        cur_set(disabled)  # a repr() must not record itself
                        captured = {k: snap(v) for k, v in args.items()}
                token = [prefix | (count() & 0xFFFFFFFF), trace_id, parent_id, fid, clock(),
                         octx, caller, captured, None, None, lvl, flg, 0, 0, None]
                cur_set(token)
                return token
            except Exception as exc:
                on_error(exc)
                return None

        def enter_params(fid: int, *values: Any) -> list | None:
            # the dict is built only where enter() would keep it: at full
            try:
                args = None
                if values and levels[fid] > 1 and flags[fid] & CAP_ARGS:
                    args = dict(zip(params[fid], values))
            except Exception as exc:
                on_error(exc)
                return None
            return enter(fid, args)

        def exit(token: list | None, value: Any = None) -> Any:
            # returns value: instrumented code may end a call inside its
            # return statement; a token that already ended is left alone
            if token is None:
                return value
            try:
                if token[12]:
                    return value
                if not token[10]:  # a marker (see enter): only leaves the stack
                    token[12] = 1
                    cur_set(token[6])
                    return value
                end = clock()
                if value is not None and token[11] & CAP_RETURN:
                    cur_set(disabled)
                    kept = snap(value)
                else:
                    kept = None
                cur_set(token[6])
                token[12] = end
                token[14] = kept
                events = token[8]
                put((token[0], token[1], token[2], token[3], token[4], None, None, token[7],
                     None if events is None else tuple(events), None, token[10], token[11], end, 0, kept))
            except Exception as exc:
                on_error(exc)
            return value

        def exception(token: list | None, exc: BaseException) -> None:
            if token is None:
                return
            try:
                if token[12]:
                    return
                cur_set(token[6])
                if not token[10]:  # a marker: the exception is not kept
                    token[12] = 1
                    return
                end = token[12] = clock()
                token[13] = 1
                summary = token[14] = summarize(exc)
                events = token[8]
                put((token[0], token[1], token[2], token[3], token[4], None, None, token[7],
                     None if events is None else tuple(events), None, token[10], token[11], end, 1,
                     summary))
            except Exception as err:
                on_error(err)

        max_events = [128]
        dropped_name = "scope.events_dropped"

        def event(token: list | None, name: str, attrs: tuple | None) -> None:
            # see the C twin's add_event: the first max_events events, then one that counts the rest
            if token is None:
                return
            try:
                if token[12] or not token[10]:
                    return
                events = token[8]
                if events is None:
                    events = token[8] = []
                kept = len(events)
                if kept < max_events[0]:
                    events.append((name, clock(), attrs))
                elif kept == max_events[0]:
                    events.append((dropped_name, clock(), (("scope.dropped", 1),)))
                else:
                    last = events[-1]
                    events[-1] = (last[0], last[1], (("scope.dropped", last[2][0][1] + 1),))
            except Exception as exc:
                on_error(exc)

        def suspend(token: list | None) -> None:
            if token is None:
                return
            try:
                cur_set(token[6])
            except Exception as exc:
                on_error(exc)
            event(token, "scope.suspend", None)

        def resume(token: list | None) -> None:
            if token is None:
                return
            try:
                octx = octx_get()
                if token[5] is not octx:
                    token[5] = octx
                    token[9] = None
                top = cur_get()
                if top is not token:
                    token[6] = top
                    cur_set(token)
            except Exception as exc:
                on_error(exc)
            event(token, "scope.resume", None)

        def state_change(token: list | None, target: str, value: Any) -> None:
            if token is None:
                return
            try:
                if not token[11] & CAP_STATE or token[12] or not token[10]:
                    return
                if type(value) in _PLAIN:
                    kept = value
                else:
                    saved = cur_get()
                    cur_set(disabled)
                    try:
                        kept = snap(value)
                    finally:
                        cur_set(saved)
            except Exception as exc:
                on_error(exc)
                return
            event(token, "scope.state_change", (("scope.target", target), ("scope.value", kept)))

        def delegate(token: Any, iterable: Any) -> Any:
            it = iter(iterable)  # as yield from does: its TypeError is the program's
            return it if token is None else Delegation(suspend, resume, token, it)

        def set_max_events(n: int) -> None:
            max_events[0] = max(0, int(n))

        def rebind(new_put, new_prefix):
            nonlocal put, count, prefix
            if new_put is not None:
                put = new_put
            if new_prefix is not None:
                prefix = (new_prefix & 0xFFFFFFFF) << 32
                count = itertools.count(1).__next__
                unsampled[0] = 0

        def set_current(token: Any) -> None:
            cur_set(token)

        self.enter, self.enter_params, self.exit, self.exception = enter, enter_params, exit, exception
        self.suspend, self.resume, self.state_change, self.event = suspend, resume, state_change, event
        self.set_max_events, self.delegate = set_max_events, delegate
        self._levels = levels
        self.current, self.set_current = cur_get, set_current
        self.unsampled = lambda: unsampled[0]
        self._rebind = rebind


class Probe:
    """One function's calls: ``enter(*values)`` is ``HotPath.enter_params(fid,
    *values)``; ``exit``, ``exception``, ``suspend``, ``resume``,
    ``state_change`` and ``delegate`` are the hot path's; ``level`` is
    the function's current level code; ``sup`` the helpers given at creation.
    Not callable itself, so a module holding probes gains no callable."""

    __slots__ = ("enter", "exit", "exception", "suspend", "resume", "state_change", "delegate", "fid", "sup",
                 "_levels")

    def __init__(self, hot: HotPath, fid: int, sup: Any = None) -> None:
        self.enter = functools.partial(hot.enter_params, fid)  # no frame of its own
        self.exit, self.exception, self.fid, self.sup = hot.exit, hot.exception, fid, sup
        self.suspend, self.resume, self.state_change = hot.suspend, hot.resume, hot.state_change
        self.delegate = hot.delegate
        self._levels = hot._levels

    @property
    def level(self) -> int:
        return self._levels[self.fid]


class Delegation:
    """``yield from x`` in a rewritten generator (the C twin's ``Delegation``): hands x's values
    over with the delegating call reported suspended while a value is out.  Unlike C, its methods
    are Python frames between the delegating generator and x."""

    __slots__ = ("_suspend", "_resume", "_token", "_sub", "_out")

    def __init__(self, suspend: Callable, resume: Callable, token: Any, sub: Any) -> None:
        self._suspend, self._resume, self._token, self._sub, self._out = suspend, resume, token, sub, False

    def __iter__(self) -> "Delegation":
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def _back(self) -> None:
        if self._out:
            self._out = False
            self._resume(self._token)

    def _gone(self, value: Any) -> Any:
        self._out = True
        self._suspend(self._token)
        return value

    def send(self, value: Any) -> Any:
        self._back()
        # StopIteration (with x's return value) ends the delegation as it ends x
        return self._gone(next(self._sub) if value is None else self._sub.send(value))

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._back()
        throw = getattr(self._sub, "throw", None)
        if throw is None:  # PEP 380: raised in the delegating generator
            exc = typ if isinstance(typ, BaseException) else (val if isinstance(val, typ) else
                                                               typ() if val is None else typ(val))
            raise exc.with_traceback(tb) if tb is not None else exc
        args = (typ,) if val is None and tb is None else (typ, val) if tb is None else (typ, val, tb)
        return self._gone(throw(*args))

    def close(self) -> None:
        self._back()
        close = getattr(self._sub, "close", None)
        if close is not None:
            close()


def _writer(put: Any) -> Callable[[Any], Any]:
    return put.put if hasattr(put, "put") else put
