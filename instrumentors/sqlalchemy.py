"""SQLAlchemy integration: a CLIENT span per statement, ORM flushes as events.

Usage::

    from scope_otel.instrumentors.sqlalchemy import ScopeSQLAlchemyInstrumentor
    ScopeSQLAlchemyInstrumentor().instrument()   # before or after create_engine()

Under ``scope-otel run`` / ``opentelemetry-instrument`` the entry point
``scope_sqlalchemy`` does this (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=
scope_sqlalchemy`` turns it off).  SQLAlchemy 2.0 and 2.1, sync and asyncio
engines (an ``AsyncEngine`` drives a sync ``Engine``, so it is covered).

How it attaches
    Event listeners on the ``Engine`` *class* (``before_cursor_execute``,
    ``after_cursor_execute``, ``handle_error``), the ``Pool`` class
    (``checkout``, ``checkin``) and, once the program imports
    ``sqlalchemy.orm`` (never before), the ORM ``Session`` class
    (``after_flush``).  Engines and sessions created before instrumenting are
    covered; nothing wraps ``create_engine``.

Statement spans (kind CLIENT)
    The shared SQL span shape (``_sql``), as for Django and the DB-API
    drivers: named by ``db.query.summary`` (``SELECT scope_accounts``), with
    ``db.system.name`` (``postgresql``, ``sqlite``, ``mysql``, ...),
    ``db.namespace`` (database name), ``db.query.text`` (the statement as
    sent, with placeholders and literals as ``?``: parameter values are never
    recorded), ``db.operation.name``, ``db.collection.name`` (one table),
    ``server.address``, ``server.port``, ``db.response.returned_rows`` (when
    the driver reports it); on failure an ``exception`` event, ``error.type``
    and ERROR status.  ``OTEL_SEMCONV_STABILITY_OPT_IN=database/dup`` adds the
    old names (``db.system``, ``db.name``, ``db.statement``, ``db.operation``,
    ``net.peer.name``, ``net.peer.port``), ``database/old`` uses only them.
    Over an instrumented driver (``sqlite3``, ``psycopg``) a statement is
    still one span: this one.

Pool and ORM events on the current span
    ``db.client.connection.checkin`` when a pooled connection goes back, with
    ``db.client.connection.pool.name`` and how long it was held
    (``scope.held_ms``, measured from ``checkout``).  Nothing is written
    into SQLAlchemy's user-visible ``info`` dictionaries.
    The statements a new DB-API connection runs while the pool opens it (the
    dialect's first-connect initialisation, ``connect`` listeners') are one
    CLIENT span named ``connect``, as Django's (see ``_sql.connecting``):
    ``db.query.text`` lists them, ``scope.db.setup_statements`` counts them.
    They are seen where the DB-API integration traces the driver.
    After each ORM flush, one ``scope.state_change`` event per mapped class
    (inside a function recorded by the capture runtime, on a zero-length
    child span of that function named ``scope.state_change``):
    ``scope.target`` = ``orm:<Class>``, ``scope.inserted`` /
    ``scope.updated`` / ``scope.deleted`` (counts), ``scope.pk`` (primary
    keys, as text); at level ``full`` also ``scope.value`` (column values,
    redacted by the ``redact`` patterns, truncated).

Options (keywords to ``instrument()``)
    ``enable_commenter=True`` (or ``SCOPE_OTEL_SQLCOMMENTER=true``): append the
    statement span's ``traceparent`` as a sqlcommenter comment
    (``/*traceparent='00-…'*/``) so database logs join the trace.
    ``tracer_provider=``.

Coexistence
    Engines that the contrib ``SQLAlchemyInstrumentor`` traces (it registers
    listeners on each engine it sees) are left to contrib: no second span.
"""
from __future__ import annotations

import os
import sys
import weakref
from functools import partial
from time import monotonic
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import INVALID_SPAN, get_current_span

from scope_otel.instrumentors import _sql
from scope_otel.instrumentors._base import Listener, Patch, ScopeInstrumentor
from scope_otel.instrumentors._record import add_event, level
from scope_otel.instrumentors._report import failed
from scope_otel.instrumentors._sampled import left_out
from scope_otel.instrumentors._support import redacted_repr
from scope_otel.version import __version__

_SPAN = "_scope_otel_span"  # on SQLAlchemy's per-statement ExecutionContext: (span, returns rows, claim)


class _State:
    def __init__(self, **kwargs: Any) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, kwargs.get("tracer_provider"))
        commenter = kwargs.get("enable_commenter")
        if commenter is None:
            commenter = os.environ.get("SCOPE_OTEL_SQLCOMMENTER", "").strip().lower() in ("1", "true", "yes", "on")
        self.commenter = bool(commenter)
        self.engines: "weakref.WeakKeyDictionary[Any, _sql.Database]" = weakref.WeakKeyDictionary()
        self.last: tuple[Any, _sql.Database | None] = (None, None)  # (weak ref to the last engine, its database)
        self.contrib: "weakref.WeakKeyDictionary[Any, tuple[int, bool]]" = weakref.WeakKeyDictionary()
        self.checkouts: "weakref.WeakKeyDictionary[Any, float]" = weakref.WeakKeyDictionary()  # record -> out at
        self.pools: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


_state: _State | None = None


class ScopeSQLAlchemyInstrumentor(ScopeInstrumentor):
    """SQLAlchemy 2.0–2.1: statement spans and ORM flush events, class-level."""

    _requires = ("sqlalchemy >= 2.0, < 2.2",)
    _what = "SQLAlchemy"

    def _configure(self, **kwargs: Any) -> _State:
        return _State(**kwargs)

    @property
    def _hooks(self) -> tuple:
        # listeners on the Engine class: engines made before attaching are covered;
        # the ORM's once the program imports sqlalchemy.orm, never importing it for the program
        return (
            Listener("sqlalchemy", "engine.Engine", "before_cursor_execute", _before_cursor_execute, retval=True),
            Listener("sqlalchemy", "engine.Engine", "after_cursor_execute", _after_cursor_execute),
            Listener("sqlalchemy", "engine.Engine", "handle_error", _handle_error),
            Listener("sqlalchemy", "pool.Pool", "checkout", _on_checkout),
            Listener("sqlalchemy", "pool.Pool", "checkin", _on_checkin),
            Listener("sqlalchemy.orm", "Session", "after_flush", _after_flush),
            # a new DB-API connection's set-up (the dialect's first-connect and connect statements): one span
            Patch("sqlalchemy.pool.base", "_ConnectionRecord", "_ConnectionRecord__connect", _make_pool_connect),
        )


# --------------------------------------------------------------------------
# statements
# --------------------------------------------------------------------------

def _database(engine: Any, state: _State) -> _sql.Database:
    """The shared SQL span description of one engine's database."""
    ref, database = state.last
    if ref is not None and ref() is engine:
        return database
    database = state.engines.get(engine)
    if database is None:
        url = engine.url
        dialect = engine.dialect.name
        name = url.database or None
        if dialect == "sqlite":
            name = _sql.database_name(name)
        database = state.engines[engine] = _sql.database(dialect, name, url.host, url.port)
    state.last = (weakref.ref(engine), database)
    return database


def _contrib_traces(engine: Any, state: _State) -> bool:
    """Does the contrib instrumentation have listeners on this engine?"""
    module = sys.modules.get("opentelemetry.instrumentation.sqlalchemy.engine")
    if module is None:
        return False
    registered = module.EngineTracer._remove_event_listener_params
    seen = state.contrib.get(engine)
    if seen is not None and seen[0] == len(registered):
        return seen[1]
    result = any(ref() is engine for ref, *_ in registered)
    state.contrib[engine] = (len(registered), result)
    return result


def _make_pool_connect(original: Any) -> Any:
    def connect(self) -> None:
        state = _state
        if state is None or _sql.claimed():
            return original(self)
        # the database is that of the driver layer whose statement came first
        return _sql.opening(state.tracer, partial(original, self), "sqlalchemy.connect")

    connect.__name__ = original.__name__
    connect.__qualname__ = original.__qualname__
    return connect


def _before_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    state = _state
    if state is None or context is None:
        return statement, parameters
    try:
        engine = conn.engine
        if _contrib_traces(engine, state):
            return statement, parameters
        if left_out(state.tracer):  # a trace the sampler left out: no span, and none from the driver
            setattr(context, _SPAN, (INVALID_SPAN, False, _sql.claim()))
            return statement, parameters
        span, rows = _sql.start(state.tracer, _database(engine, state), statement)
        setattr(context, _SPAN, (span, rows and not executemany, _sql.claim()))
        if state.commenter and span.is_recording():
            statement = statement + _sql_comment(span)
    except Exception:
        failed("sqlalchemy.before_cursor_execute")
    return statement, parameters


def _sql_comment(span: trace.Span) -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    if not carrier:
        return ""
    from urllib.parse import quote

    fields = ",".join(f"{k}='{quote(v, safe='')}'" for k, v in sorted(carrier.items()))
    return f" /*{fields}*/"


def _taken(context: Any) -> tuple | None:
    """The statement's (span, returns rows, claim), removed from its context; the claim released."""
    started = getattr(context, _SPAN, None)
    if started is None:
        return None
    setattr(context, _SPAN, None)
    try:
        _sql.release(started[2])
    except ValueError:  # released in another context than it was claimed in
        pass
    return started


def _after_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    try:
        started = _taken(context)
        if started is not None:
            span, rows, _ = started
            _sql.end(span, cursor.rowcount if rows else None)
    except Exception:
        failed("sqlalchemy.after_cursor_execute")


def _handle_error(exception_context):
    try:
        started = _taken(exception_context.execution_context)
        if started is not None:
            _sql.end(started[0], error=exception_context.original_exception)
    except Exception:
        failed("sqlalchemy.handle_error")


# --------------------------------------------------------------------------
# pool
# --------------------------------------------------------------------------

def _pool_name(record: Any, state: _State) -> str:
    """The pool's ``logging_name``, else ``<PoolClass>@<id>``, computed once per pool."""
    # the record's pool is private to SQLAlchemy (``__pool``, 2.0 and 2.1)
    pool = getattr(record, "_ConnectionRecord__pool", None)
    if pool is None:
        return "pool"
    name = state.pools.get(pool)
    if name is None:
        name = state.pools[pool] = getattr(pool, "logging_name", None) or f"{type(pool).__name__}@{id(pool):x}"
    return name


def _on_checkout(dbapi_connection, record, proxy):
    # only a timestamp here; the one event is made at check-in (events cost
    # as much as a few attributes each, and the hold time is what matters)
    state = _state
    if state is not None:
        try:
            state.checkouts[record] = monotonic()
        except Exception:
            failed("sqlalchemy.checkout")


def _on_checkin(dbapi_connection, record):
    try:
        state = _state
        if record is None or state is None:
            return
        out = state.checkouts.pop(record, None)
        if out is None:
            return
        span = get_current_span()
        if span.is_recording():  # add_event(carrier=False) drops it otherwise
            attrs = {
                "db.client.connection.pool.name": _pool_name(record, state),
                "scope.held_ms": round((monotonic() - out) * 1000.0, 3),
            }
            add_event(state.tracer, "db.client.connection.checkin", attrs, carrier=False, span=span)
    except Exception:
        failed("sqlalchemy.checkin")


# --------------------------------------------------------------------------
# ORM flushes
# --------------------------------------------------------------------------

def _after_flush(session, flush_context):
    try:
        state = _state
        if state is None or not trace.get_current_span().get_span_context().is_valid:
            return
        from sqlalchemy import inspect

        full = level() == "full"
        per_class: dict[str, dict[str, list]] = {}
        for action, instances in (("inserted", session.new), ("updated", session.dirty), ("deleted", session.deleted)):
            for obj in instances:
                if action == "updated" and not session.is_modified(obj, include_collections=False):
                    continue
                entry = per_class.setdefault(type(obj).__name__, {"inserted": [], "updated": [], "deleted": []})
                entry[action].append(obj)
        for cls_name, actions in per_class.items():
            attrs: dict[str, Any] = {"scope.target": f"orm:{cls_name}"}
            pks: list[str] = []
            values: list[str] = []
            for action, objs in actions.items():
                attrs[f"scope.{action}"] = len(objs)
                for obj in objs:
                    insp = inspect(obj)
                    # insp.identity is only set after the flush completes
                    pk = insp.mapper.primary_key_from_instance(obj)
                    pks.append(str(pk[0] if len(pk) == 1 else tuple(pk)))
                    if full:
                        values.append(redacted_repr({a.key: a.loaded_value for a in insp.attrs if a.key in insp.dict}))
            attrs["scope.pk"] = pks
            if full:
                attrs["scope.value"] = values
            add_event(state.tracer, "scope.state_change", attrs)
    except Exception:
        failed("sqlalchemy.after_flush")
