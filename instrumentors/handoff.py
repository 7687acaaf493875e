"""Work handed to threads, executors, queues and tasks stays linked to its origin.

Usage::

    from scope_otel.instrumentors.handoff import ScopeHandoffInstrumentor
    ScopeHandoffInstrumentor().instrument()

or the entry point ``scope_handoff`` (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=
scope_handoff`` turns it off).

Threads and executors: *parent*
    ``threading.Thread.start`` and ``concurrent.futures.ThreadPoolExecutor.
    submit`` (hence ``Executor.map`` and ``loop.run_in_executor``) copy the
    caller's :mod:`contextvars` context and run the thread's ``run`` / the
    job inside that copy.  Everything kept in context variables travels:
    the OpenTelemetry context (spans made in the thread are children of the
    span that started it) and the capture runtime's call stack (function
    spans nest under the caller's function span).  Patched on the classes,
    so subclasses and executors created before instrumenting are covered.

Queues: *link*
    ``queue.Queue.put``/``get`` (also ``LifoQueue``, ``PriorityQueue``,
    ``put_nowait``/``get_nowait``) and ``asyncio.Queue.put_nowait``/
    ``get_nowait`` (``put``/``get`` go through them).  The producer's span
    gets a ``scope.send`` event, the consumer side a ``scope.recv`` event and
    a *span link* to the producer's span, both with
    ``messaging.destination.name`` (``Queue@<id>``) and
    ``messaging.message.id``.  When the consumer has no span of its own, a
    short CONSUMER span ``receive Queue@<id>`` carries the link.  When the
    capture runtime (``scope_otel.capture.runtime``) is present the events
    are made by its ``send``/``recv``, which put them on the innermost
    recorded function call (or the current span), so function-level
    recordings correlate too.  Items are matched by identity;
    the queued objects themselves are never touched.  Only puts made by
    application code while something is traced are recorded (queues used
    inside libraries — urllib3's connection pool, logging, executors — are
    plumbing, not hand-offs; code under the standard library, site-packages
    or scope-otel itself counts as library), and at most 10,000 waiting items per
    queue (a queue drained without ``get`` cannot grow the table further;
    :func:`dropped` counts what was not correlated).

asyncio tasks
    ``asyncio.create_task`` already copies the context into the task, so a
    task's spans are children of the code that created it without any
    patching; ``asyncio.to_thread`` copies it as well.
"""
from __future__ import annotations

import asyncio
import asyncio.queues
import contextvars
import itertools
import os
import queue
import sys
import sysconfig
import threading
from typing import Any, Callable

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Link, SpanKind

import scope_otel
from scope_otel.instrumentors._base import Patch, ScopeInstrumentor
from scope_otel.instrumentors._record import capture_runtime
from scope_otel.instrumentors._report import failed
from scope_otel.version import __version__

_PENDING = "_scope_otel_sent"
_MAX_PENDING = 10_000  # distinct items awaiting get() per queue
_DROPPED = [0]  # puts not correlated because a queue's table was full
_LOCK = threading.Lock()
_ids = itertools.count(1)

# Queues used inside libraries (urllib3's connection pool is a LifoQueue,
# logging, executors, exporters...) are plumbing, not hand-offs between parts
# of the application: only puts made by application code are correlated.
_QUEUE_FILES = frozenset({queue.__file__, asyncio.queues.__file__})
_LIBRARY_DIRS = tuple(
    sorted(
        {os.path.join(os.path.realpath(sysconfig.get_paths()[k]), "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
        | {os.path.join(os.path.dirname(os.path.realpath(scope_otel.__file__)), "")}  # scope-otel itself
        | {os.path.join(os.path.dirname(os.path.realpath(__file__)), "")}
    )
)
_IN_APP: dict[str, bool] = {}


class _State:
    def __init__(self, **kwargs: Any) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, kwargs.get("tracer_provider"))
        self.runtime = capture_runtime()


_state: _State | None = None


class ScopeHandoffInstrumentor(ScopeInstrumentor):
    """Thread, executor, queue and asyncio hand-off correlation."""

    _what = "hand-off"

    def _configure(self, **kwargs: Any) -> _State:
        return _State(**kwargs)

    @property
    def _hooks(self) -> tuple:
        return (
            Patch("threading", "Thread", "start", _wrap_thread_start),
            Patch("concurrent.futures", "ThreadPoolExecutor", "submit", _wrap_submit),
            Patch("concurrent.futures", "ProcessPoolExecutor", "submit", _wrap_process_submit),
            Patch("queue", "Queue", "put", _wrap_put),
            Patch("queue", "Queue", "get", _wrap_get),
            Patch("asyncio", "Queue", "put_nowait", _wrap_put),
            Patch("asyncio", "Queue", "get_nowait", _wrap_get),
        )


def dropped() -> int:
    """Queue puts left uncorrelated because a queue's table was full."""
    return _DROPPED[0]


# --------------------------------------------------------------------------
# threads and executors: run in a copy of the caller's context
# --------------------------------------------------------------------------

def _wrap_thread_start(original: Callable) -> Callable:
    def start(self) -> None:
        if _state is not None:
            try:
                ctx = contextvars.copy_context()
                run = self.run

                def run_in_caller_context() -> None:
                    ctx.run(run)

                self.run = run_in_caller_context
            except Exception:
                failed("handoff.thread")
        return original(self)

    return start


def _wrap_submit(original: Callable) -> Callable:
    def submit(self, fn, /, *args, **kwargs):
        if _state is None:
            return original(self, fn, *args, **kwargs)
        # a fresh copy per job: one Context cannot be entered by two threads
        return original(self, contextvars.copy_context().run, fn, *args, **kwargs)

    return submit


def _wrap_process_submit(original: Callable) -> Callable:
    def submit(self, fn, /, *args, **kwargs):
        if _state is None or not trace.get_current_span().get_span_context().is_valid:
            return original(self, fn, *args, **kwargs)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return original(self, _InContext(fn, carrier), *args, **kwargs)

    return submit


class _InContext:
    """A process-pool job that runs under the submitter's trace context."""

    __slots__ = ("fn", "carrier")

    def __init__(self, fn: Callable, carrier: dict[str, str]) -> None:
        self.fn = fn
        self.carrier = carrier

    def __getstate__(self) -> tuple:
        return self.fn, self.carrier

    def __setstate__(self, state: tuple) -> None:
        self.fn, self.carrier = state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = context.attach(propagate.extract(self.carrier))
        try:
            return self.fn(*args, **kwargs)
        finally:
            context.detach(token)


# --------------------------------------------------------------------------
# queues: send/recv events and a span link
# --------------------------------------------------------------------------

def _put_by_application() -> bool:
    """Was the queue put called from application code (not a library)?"""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in _QUEUE_FILES:  # put_nowait -> put, asyncio put
        frame = frame.f_back
    if frame is None:
        return False
    filename = frame.f_code.co_filename
    verdict = _IN_APP.get(filename)
    if verdict is None:
        real = os.path.realpath(filename)
        verdict = _IN_APP[filename] = not filename.startswith("<frozen") and not real.startswith(_LIBRARY_DIRS)
    return verdict


def _channel(q: Any) -> str:
    return f"{type(q).__name__}@{id(q):x}"


def _wrap_put(original: Callable) -> Callable:
    def put(self, item, *args, **kwargs):
        state = _state
        if state is None:
            return original(self, item, *args, **kwargs)
        span = trace.get_current_span()
        producer = span.get_span_context()
        if not producer.is_valid or not _put_by_application():  # nothing traced hands work over
            return original(self, item, *args, **kwargs)
        key = id(item)
        entry = None
        try:
            message_id = f"{os.getpid():x}-{next(_ids):x}"
            channel = _channel(self)
            with _LOCK:  # recorded before the item is visible to consumers
                pending = self.__dict__.setdefault(_PENDING, {})
                if len(pending) < _MAX_PENDING:
                    entry = (producer, message_id)
                    pending.setdefault(key, []).append(entry)
                else:  # drained some other way (e.g. q.queue.clear()): stop growing
                    _DROPPED[0] += 1
            if state.runtime is not None:  # it puts the event on the innermost function or span
                state.runtime.send(channel, message_id)
            elif span.is_recording():
                span.add_event("scope.send", {"messaging.destination.name": channel, "messaging.message.id": message_id})
        except Exception:
            failed("handoff.put")
        try:
            return original(self, item, *args, **kwargs)
        except BaseException:
            if entry is not None:  # queue.Full etc.: nothing was sent
                _take(self, key, entry)
            raise

    return put


def _take(q: Any, key: int, entry: tuple | None = None) -> tuple | None:
    with _LOCK:
        pending = q.__dict__.get(_PENDING)
        if not pending:
            return None
        entries = pending.get(key)
        if not entries:
            return None
        if entry is None:
            found = entries.pop(0)
        else:
            try:
                entries.remove(entry)
            except ValueError:
                return None
            found = entry
        if not entries:
            del pending[key]
        return found


def _wrap_get(original: Callable) -> Callable:
    def get(self, *args, **kwargs):
        item = original(self, *args, **kwargs)
        if _state is not None and _PENDING in self.__dict__:
            try:
                found = _take(self, id(item))
                if found is not None:
                    _received(_channel(self), *found)
            except Exception:
                failed("handoff.get")
        return item

    return get


def _received(channel: str, producer: trace.SpanContext, message_id: str) -> None:
    state = _state
    if state is None:
        return
    attrs = {"messaging.destination.name": channel, "messaging.message.id": message_id}
    span = trace.get_current_span()
    if span.is_recording():
        if producer.is_valid:
            span.add_link(producer, {"scope.handoff": "queue", **attrs})
        if state.runtime is not None:  # it puts the event on the innermost function or span
            state.runtime.recv(channel, message_id)
        else:
            span.add_event("scope.recv", attrs)
        return
    if state.runtime is not None:
        state.runtime.recv(channel, message_id)
    if producer.is_valid:
        span = state.tracer.start_span(
            f"receive {channel}",
            kind=SpanKind.CONSUMER,
            links=[Link(producer, {"scope.handoff": "queue", **attrs})],
            attributes={"messaging.operation.type": "receive", **attrs},
        )
        span.add_event("scope.recv", attrs)
        span.end()
