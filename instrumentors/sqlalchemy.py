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
    (``checkout``, ``checkin``) and the ORM ``Session`` class
    (``after_flush``).  Engines and sessions created before instrumenting are
    covered; nothing wraps ``create_engine``.

Statement spans (kind CLIENT, named ``<operation> <database>``)
    ``db.system.name`` (``postgresql``, ``sqlite``, ``mysql``, ...),
    ``db.namespace`` (database name), ``db.query.text`` (the statement as
    sent, with placeholders: parameter values are never inlined or recorded),
    ``db.operation.name`` (first keyword), ``server.address``,
    ``server.port``; on failure an ``exception`` event, ``error.type`` and
    ERROR status.  ``OTEL_SEMCONV_STABILITY_OPT_IN=database/dup`` adds the old
    names (``db.system``, ``db.name``, ``db.statement``, ``db.operation``,
    ``net.peer.name``, ``net.peer.port``), ``database/old`` uses only them.

Pool and ORM events on the current span
    ``db.client.connection.checkin`` when a pooled connection goes back, with
    ``db.client.connection.pool.name`` and how long it was held
    (``scope.held_ms``, measured from ``checkout``).
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
from time import monotonic
from types import MappingProxyType
from typing import Any, Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import get_current
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span

from scope_otel.instrumentors import _http
from scope_otel.instrumentors._support import ScopeInstrumentor, add_event, failed, level, redacted_repr
from scope_otel.version import __version__

_SPAN = "_scope_otel_span"
_SYSTEMS = {  # dialect name -> (stable db.system.name, old db.system)
    "postgresql": ("postgresql", "postgresql"),
    "sqlite": ("sqlite", "sqlite"),
    "mysql": ("mysql", "mysql"),
    "mariadb": ("mariadb", "mariadb"),
    "mssql": ("microsoft.sql_server", "mssql"),
    "oracle": ("oracle.db", "oracle"),
}


class _State:
    tracer: trace.Tracer
    mode: str
    commenter: bool
    engines: "weakref.WeakKeyDictionary[Any, _EngineInfo]"
    contrib: "weakref.WeakKeyDictionary[Any, tuple[int, bool]]"


_state: _State | None = None


class ScopeSQLAlchemyInstrumentor(ScopeInstrumentor):
    """SQLAlchemy 2.0–2.1: statement spans and ORM flush events, class-level."""

    _requires = ("sqlalchemy >= 2.0, < 2.2",)
    _what = "SQLAlchemy"
    _library = "sqlalchemy"  # listeners on the Engine class: engines made before attaching are covered

    def _attach(self, **kwargs: Any) -> None:
        from sqlalchemy import event

        global _state
        state = _State()
        state.tracer = trace.get_tracer(__name__, __version__, kwargs.get("tracer_provider"))
        state.mode = _http.semconv_mode("database")
        commenter = kwargs.get("enable_commenter")
        if commenter is None:
            commenter = os.environ.get("SCOPE_OTEL_SQLCOMMENTER", "").strip().lower() in ("1", "true", "yes", "on")
        state.commenter = bool(commenter)
        state.engines = weakref.WeakKeyDictionary()
        state.contrib = weakref.WeakKeyDictionary()
        _state = state
        for target, name, fn, kw in _listeners():
            if not event.contains(target, name, fn):
                event.listen(target, name, fn, **kw)

    def _detach(self, **kwargs: Any) -> None:
        global _state
        from sqlalchemy import event

        for target, name, fn, _ in _listeners():
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        _state = None


# --------------------------------------------------------------------------
# statements
# --------------------------------------------------------------------------

class _EngineInfo:
    """What one engine's statement spans share, computed once per engine:
    the database name, the constant attributes, and per statement text the
    span name and full attribute map (handed to the SDK as is: it copies)."""

    __slots__ = ("database", "constant", "statements")

    def __init__(self, database: str | None, constant: dict) -> None:
        self.database = database
        self.constant = constant
        self.statements: dict[str, tuple[str, Mapping[str, Any]]] = {}


def _engine_info(engine: Any, state: _State) -> _EngineInfo:
    """The :class:`_EngineInfo` of an engine for this instrumentation."""
    try:  # kept on the engine for this instrumentation: no weak-key lookup per statement
        owner, info = engine._scope_otel_info
        if owner is state:
            return info
    except AttributeError:
        pass
    info = state.engines.get(engine)
    if info is None:
        url = engine.url
        dialect = engine.dialect.name
        stable, old = _SYSTEMS.get(dialect, (dialect, dialect))
        attrs: dict[str, Any] = {}
        database = url.database or None
        if dialect == "sqlite" and database:
            database = os.path.basename(database)
        if state.mode != _http.OLD:
            attrs["db.system.name"] = stable
            if database:
                attrs["db.namespace"] = database
            if url.host:
                attrs["server.address"] = url.host
            if url.port:
                attrs["server.port"] = url.port
        if state.mode != _http.STABLE:
            attrs["db.system"] = old
            if database:
                attrs["db.name"] = database
            if url.host:
                attrs["net.peer.name"] = url.host
            if url.port:
                attrs["net.peer.port"] = url.port
        info = state.engines[engine] = _EngineInfo(database, attrs)
    try:
        engine._scope_otel_info = (state, info)
    except Exception:  # an engine class that takes no attributes: the weak map serves
        pass
    return info


#: statements remembered per engine; SQLAlchemy hands the same cached string
#: for each execution of a statement, so a span's name and attributes are one
#: dict lookup.  Texts with inlined literals are all different: the cache then
#: starts over rather than grow, and huge texts are never kept alive by it.
_STATEMENTS_MAX = 1024
_STATEMENT_MAX = 4096


def _statement(info: _EngineInfo, statement: str, mode: str) -> tuple[str, Mapping[str, Any]]:
    """(span name, attributes) of ``statement`` on the engine of ``info``."""
    words = statement.split(None, 1)
    operation = words[0].upper() if words else "SQL"
    attrs = dict(info.constant)
    if mode != _http.OLD:
        attrs["db.query.text"] = statement
        attrs["db.operation.name"] = operation
    if mode != _http.STABLE:
        attrs["db.statement"] = statement
        attrs["db.operation"] = operation
    # read-only: samplers see the shared map, and must not change it for the next statement
    found = (f"{operation} {info.database}" if info.database else operation, MappingProxyType(attrs))
    if len(statement) <= _STATEMENT_MAX:
        statements = info.statements
        if len(statements) >= _STATEMENTS_MAX:
            statements.clear()
        statements[statement] = found
    return found


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


def _before_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    state = _state
    if state is None or context is None:
        return statement, parameters
    try:
        engine = conn.engine
        if _contrib_traces(engine, state):
            return statement, parameters
        info = _engine_info(engine, state)
        found = info.statements.get(statement)
        name, attrs = found if found is not None else _statement(info, statement, state.mode)
        # the current context read once: the SDK would read it three times (parent, sampler, trace state)
        span = state.tracer.start_span(name, context=get_current(), kind=SpanKind.CLIENT, attributes=attrs)
        setattr(context, _SPAN, span)
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


def _after_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    span = getattr(context, _SPAN, None)
    if span is None:
        return
    try:
        setattr(context, _SPAN, None)
        span.end()
    except Exception:
        failed("sqlalchemy.after_cursor_execute")


def _handle_error(exception_context):
    try:
        context = exception_context.execution_context
        span = getattr(context, _SPAN, None)
        if span is None:
            return
        setattr(context, _SPAN, None)
        exc = exception_context.original_exception
        if span.is_recording():
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
    except Exception:
        failed("sqlalchemy.handle_error")


# --------------------------------------------------------------------------
# pool
# --------------------------------------------------------------------------

_POOL_NAME = "_scope_otel_pool"


def _pool_name(record: Any) -> str:
    """The pool's ``logging_name``, else ``<PoolClass>@<id>``; kept in the
    connection record's ``info`` so it is computed once per connection."""
    info = record.info
    name = info.get(_POOL_NAME)
    if name is None:
        # the record's pool is private to SQLAlchemy (``__pool``, 2.0 and 2.1)
        pool = getattr(record, "_ConnectionRecord__pool", None)
        if pool is None:
            name = "pool"
        else:
            name = getattr(pool, "logging_name", None) or f"{type(pool).__name__}@{id(pool):x}"
        info[_POOL_NAME] = name
    return name


def _on_checkout(dbapi_connection, record, proxy):
    # only a timestamp here; the one event is made at check-in (events cost
    # as much as a few attributes each, and the hold time is what matters)
    record.info["_scope_otel_out"] = monotonic()


def _on_checkin(dbapi_connection, record):
    try:
        if record is None:
            return
        out = record.info.pop("_scope_otel_out", None)
        state = _state
        if out is None or state is None:
            return
        span = get_current_span()
        if span.is_recording():  # add_event(carrier=False) drops it otherwise
            attrs = {
                "db.client.connection.pool.name": _pool_name(record),
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


def _listeners() -> list[tuple[Any, str, Any, dict]]:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import Pool

    return [
        (Engine, "before_cursor_execute", _before_cursor_execute, {"retval": True}),
        (Engine, "after_cursor_execute", _after_cursor_execute, {}),
        (Engine, "handle_error", _handle_error, {}),
        (Pool, "checkout", _on_checkout, {}),
        (Pool, "checkin", _on_checkin, {}),
        (Session, "after_flush", _after_flush, {}),
    ]
