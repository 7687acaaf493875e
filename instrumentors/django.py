"""Django integration: SERVER spans from a middleware, model saves as events.

Usage::

    from scope_otel.instrumentors.django import ScopeDjangoInstrumentor
    ScopeDjangoInstrumentor().instrument()   # any time, even before settings exist

or the entry point ``scope_django`` under ``scope-otel run`` /
``opentelemetry-instrument`` (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=
scope_django`` turns it off).  WSGI (gunicorn, ``runserver --noreload``,
mod_wsgi) and ASGI (uvicorn, daphne), Django ≥ 4.2.

How it attaches
    ``BaseHandler.load_middleware`` is wrapped on the *class*: when Django
    builds its middleware chain, ``scope_otel.instrumentors.django.
    ScopeOtelMiddleware`` is inserted into ``settings.MIDDLEWARE`` at
    ``middleware_position`` (keyword, or ``OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION``
    like contrib; default 0 = outermost, negative counts from the end).  The
    settings are only read then, so instrumenting before ``DJANGO_SETTINGS_
    MODULE`` is set works.  A handler that built its chain *before*
    instrumenting (``gunicorn --preload`` with ``get_wsgi_application()`` in
    the master) is covered too: ``BaseHandler.get_response`` /
    ``get_response_async`` run the same span logic around its chain.  You may
    also list the middleware in ``MIDDLEWARE`` yourself; it is then not
    inserted again.

Signals
    ``request_started`` stamps the request's arrival, so the span starts
    where Django starts even when the middleware is not first;
    ``got_request_exception`` records the exception (event, ``error.type``,
    ERROR status) that Django turns into a 500; ``post_save`` (connected once
    the program imports ``django.db.models``) becomes a ``scope.state_change``
    event on the current span (inside a function recorded by the capture
    runtime, on a zero-length child span of that function)
    (``scope.target`` = ``django:<app_label.Model>``, ``scope.action`` =
    ``insert``/``update``, ``scope.pk``, ``scope.db_alias``; at level ``full``
    also ``scope.value``: the fields already loaded on the instance, read
    from its ``__dict__`` (never a deferred field, never a related object,
    never a query), redacted by the ``redact`` patterns and truncated).
    Nothing listens to ``pre_delete``/``post_delete``: a receiver there
    makes Django give up fast deletes (it would SELECT every row first); a
    deletion shows as its ``DELETE`` span.  ``pre_save`` is not used: a
    change is a fact once saved, and a failed save shows as an exception.
    These three receivers are the integration's only visible trace: a
    program reading a signal's ``receivers`` list finds them there.
    The span ends when the view's response comes back; a streaming
    response's span ends, once, when the response is closed (Django's
    ``request_finished`` point).

SQL
    The innermost step of Django's cursor, ``CursorWrapper._execute`` /
    ``_executemany`` (what every ``execute_wrapper`` ends by calling), is
    replaced on the class: every statement through a Django cursor (ORM
    queries, raw cursors, ``executemany``, savepoints and the ``BEGIN`` of
    ``atomic`` blocks, sync and async views, every backend, connections of
    every thread, opened before or after instrumenting) is one CLIENT span in
    the shared SQL shape (``_sql``: named by ``db.query.summary``,
    ``db.system.name``, ``db.namespace``, ``db.query.text`` with
    placeholders, ``server.address``, ``db.response.returned_rows`` where the
    driver reports it, ``error.type``), nested under the function or request
    it runs in.  The text recorded is the one sent to the driver, after the
    program's own execute wrappers; ``connection.execute_wrappers`` holds
    only the program's, and no receiver is connected to ``connection_created``.
    ``callproc`` is not recorded.  The statements a new connection runs
    while Django opens it (``DatabaseWrapper.connect``: the backend's set-up
    on the driver's connection, such as SQLite's ``PRAGMA foreign_keys =
    ON``, PostgreSQL's ``SET TIME ZONE``, and those of ``connection_created``
    receivers) are one CLIENT span named ``connect``, from the start of the
    connect to its end, whose ``db.query.text`` lists every one of them
    (joined by ``"; "``) and ``scope.db.setup_statements`` their number; a
    failing one marks it ``error.type``.  With Django's default
    ``CONN_MAX_AGE=0`` this runs on every request: one span, not one per
    statement.  Only statements the integrations see are listed (the driver's
    when the DB-API integration traces it).  ``COMMIT`` and ``ROLLBACK`` are the
    driver's (``commit()`` is not a cursor statement): they are spans where
    the DB-API integration traces the driver.  The request span carries
    ``scope.db.statements`` (a connection's set-up counting its statements)
    and ``scope.db.repeated_statements`` (same ``db.query.text`` again:
    N+1).  Over an instrumented driver a statement is still one span: this
    one.

Span name, attributes and options
    As the Flask integration (one shared implementation): ``METHOD route``
    with Django's route pattern (``items/<int:pk>/``), stable HTTP semantic
    conventions and ``OTEL_SEMCONV_STABILITY_OPT_IN``, W3C context extracted
    from the request, excluded URLs (``OTEL_PYTHON_DJANGO_EXCLUDED_URLS``,
    ``OTEL_PYTHON_EXCLUDED_URLS``), header capture and sanitising
    (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*``), ``request_hook(span,
    request.META)``, ``response_hook(span, status, headers)``,
    ``tracer_provider=``.

Coexistence
    If the contrib ``DjangoInstrumentor`` middleware is in ``MIDDLEWARE``,
    this integration stays out of the way: no second span.
"""
from __future__ import annotations

import os
import sys
from functools import partial
from time import time_ns
from typing import Any, Callable

from opentelemetry import context, trace

from scope_otel.instrumentors import _http, _sql
from scope_otel.instrumentors._base import Patch, Receiver, ScopeInstrumentor
from scope_otel.instrumentors._record import add_event, level
from scope_otel.instrumentors._report import failed, say_once
from scope_otel.instrumentors._support import redacted_repr
from scope_otel.version import __version__

MIDDLEWARE = "scope_otel.instrumentors.django.ScopeOtelMiddleware"
_CONTRIB_MIDDLEWARE = "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
_SPAN = "scope_otel.span"
_ARRIVED = "scope_otel.arrived"
_MODE = "_scope_otel_mode"  # handler attribute: "middleware", "wrap" or "contrib"


class _State:
    def __init__(self, **kwargs: Any) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, kwargs.get("tracer_provider"))
        self.options = _http.ServerOptions.from_env("django", **kwargs)
        position = kwargs.get("middleware_position", os.environ.get("OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION", 0))
        try:
            self.position = int(position)
        except (TypeError, ValueError):
            say_once("django.position", f"scope-otel: middleware position {position!r} is not an integer; using 0")
            self.position = 0
        self.inserted = False  # did load_middleware put MIDDLEWARE into settings?
        self.db_mode = _http.semconv_mode("database")
        self.databases: dict[tuple, _sql.Database] = {}


_state: _State | None = None


class ScopeDjangoInstrumentor(ScopeInstrumentor):
    """Django ≥ 4.2: SERVER spans (WSGI and ASGI), SQL spans and model-change events."""

    _requires = ("django >= 4.2",)
    _what = "Django"

    def _configure(self, **kwargs: Any) -> _State:
        return _State(**kwargs)

    @property
    def _hooks(self) -> tuple:
        # each part once the program imports its module: a Flask app never pays for importing Django
        handlers = "django.core.handlers.base"
        return (
            Patch(handlers, "BaseHandler", "load_middleware", _make_load_middleware),
            Patch(handlers, "BaseHandler", "get_response", _make_get_response),
            Patch(handlers, "BaseHandler", "get_response_async", _make_get_response_async),
            Receiver("django.core.signals", "request_started", _on_request_started),
            Receiver("django.core.signals", "got_request_exception", _on_exception),
            # SQL at the driver call, under any execute wrappers: nothing in
            # connection.execute_wrappers, every connection of every thread
            Patch("django.db.backends.utils", "CursorWrapper", "_execute", _make_execute),
            Patch("django.db.backends.utils", "CursorWrapper", "_executemany", _make_execute),
            # the statements a new connection runs (the backend's set-up, connection_created
            # receivers'): one "connect" span
            Patch("django.db.backends.base.base", "BaseDatabaseWrapper", "connect", _make_connect),
            # nothing on pre_delete/post_delete: a receiver there makes Django
            # give up fast deletes (it SELECTs every row first); a deletion
            # shows as its DELETE span instead
            Receiver("django.db.models", "signals.post_save", _on_post_save),
        )


# --------------------------------------------------------------------------
# attaching: middleware list, or a wrap for handlers built earlier
# --------------------------------------------------------------------------

def _make_load_middleware(original: Callable) -> Callable:
    def load_middleware(self, is_async: bool = False) -> None:
        mode = None
        try:
            mode = _insert_middleware()
        except Exception:
            failed("django.load_middleware")
        original(self, is_async)
        if mode is not None:
            setattr(self, _MODE, mode)

    return load_middleware


def _insert_middleware() -> str | None:
    """Put the middleware into settings.MIDDLEWARE; return the handler mode."""
    from django.conf import settings

    state = _state
    if state is None:
        return None
    current = list(getattr(settings, "MIDDLEWARE", None) or [])
    if _CONTRIB_MIDDLEWARE in current:
        return "contrib"
    if MIDDLEWARE not in current:
        state.inserted = True
        position = state.position
        if position < 0:
            position = max(0, len(current) + 1 + position)
        current.insert(min(position, len(current)), MIDDLEWARE)
        settings.MIDDLEWARE = current
    return "middleware"


def _handler_mode(handler: Any) -> str:
    mode = getattr(handler, _MODE, None)
    if mode is None:  # chain built before instrumenting
        from django.conf import settings

        names = list(getattr(settings, "MIDDLEWARE", None) or [])
        # listed by the user: it is in this chain; inserted by us for a
        # handler built later: it is not
        listed = MIDDLEWARE in names and not (_state is not None and _state.inserted)
        mode = "contrib" if _CONTRIB_MIDDLEWARE in names else "middleware" if listed else "wrap"
        setattr(handler, _MODE, mode)
    return mode


def _make_get_response(original: Callable) -> Callable:
    def get_response(self, request: Any) -> Any:
        if _state is None or _handler_mode(self) != "wrap":
            return original(self, request)
        started = _start(request)
        if started is None:
            return original(self, request)
        try:
            response = original(self, request)
        except BaseException as exc:
            _finish(request, started, exc=exc)
            raise
        _finish(request, started, response=response)
        return response

    return get_response


def _make_get_response_async(original: Callable) -> Callable:
    async def get_response_async(self, request: Any) -> Any:
        if _state is None or _handler_mode(self) != "wrap":
            return await original(self, request)
        started = _start(request)
        if started is None:
            return await original(self, request)
        try:
            response = await original(self, request)
        except BaseException as exc:
            _finish(request, started, exc=exc)
            raise
        _finish(request, started, response=response)
        return response

    return get_response_async


class ScopeOtelMiddleware:
    """The request span as a Django middleware (sync and async)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction

        self.get_response = get_response
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._is_async:
            return self.__acall__(request)
        started = _start(request)
        if started is None:
            return self.get_response(request)
        try:
            response = self.get_response(request)
        except BaseException as exc:
            _finish(request, started, exc=exc)
            raise
        _finish(request, started, response=response)
        return response

    async def __acall__(self, request: Any) -> Any:
        started = _start(request)
        if started is None:
            return await self.get_response(request)
        try:
            response = await self.get_response(request)
        except BaseException as exc:
            _finish(request, started, exc=exc)
            raise
        _finish(request, started, response=response)
        return response


# --------------------------------------------------------------------------
# the span
# --------------------------------------------------------------------------

def _start(request: Any) -> tuple[trace.Span, object] | None:
    state = _state
    if state is None:
        return None
    try:
        meta = request.META
        if _SPAN in meta:
            return None
        scheme = request.scheme
        if _http.is_excluded(meta, state.options, scheme):
            return None
        arrived = meta.get(_ARRIVED)
        if arrived is None:
            arrived = (getattr(request, "scope", None) or {}).get(_ARRIVED)
        span, ctx = _http.start_server_span(state.tracer, meta, state.options, scheme=scheme, start_time=arrived)
        ctx = _sql.track(ctx)
        meta[_SPAN] = span
        return span, context.attach(ctx), ctx
    except Exception:
        failed("django.start")
        return None


def _finish(request: Any, started: tuple, response: Any = None, exc: BaseException | None = None) -> None:
    span, token, ctx = started
    end = _End(span, ctx)
    try:
        context.detach(token)
    except Exception:
        failed("django.detach")
    state = _state
    try:
        options = state.options if state is not None else _http.ServerOptions()
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None) if match is not None else None
        _http.set_route(span, request.method, route, options)
        if exc is not None:
            _http.record_exception(span, exc, options)
            end()
            return
        _http.set_status(span, response.status_code, options)
        if options.response_headers is not None or options.response_hook is not None:
            headers = list(response.items())
            _http.capture_response_headers(span, headers, options)
            _http.call_response_hook(span, f"{response.status_code} {response.reason_phrase}", headers, options)
        if getattr(response, "streaming", False):
            response._resource_closers.append(end)  # ends with the stream
        else:
            end()
    except Exception:
        failed("django.finish")
        end()


class _End:
    """Ends a request's span once, with its SQL counts, however often it is called."""

    __slots__ = ("_span", "_ctx")

    def __init__(self, span: trace.Span, ctx: Any) -> None:
        self._span = span
        self._ctx = ctx

    def __call__(self) -> None:
        span, self._span = self._span, None
        if span is not None:
            _sql.report(span, self._ctx)
            span.end()


# --------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------

def _on_request_started(sender: Any, environ: dict | None = None, scope: dict | None = None, **_: Any) -> None:
    carrier = environ if environ is not None else scope
    if carrier is not None:
        carrier[_ARRIVED] = time_ns()


def _on_exception(sender: Any, request: Any = None, **_: Any) -> None:
    try:
        span = request.META.get(_SPAN) if request is not None else None
        error = sys.exc_info()[1]
        if span is not None and error is not None:
            _http.record_exception(span, error, _state.options if _state else None)
    except Exception:
        failed("django.got_request_exception")


def _state_change(instance: Any, action: str, using: str | None) -> None:
    state = _state
    if state is None or not trace.get_current_span().get_span_context().is_valid:
        return
    meta = instance._meta
    loaded = instance.__dict__  # fields already loaded: never a query, never a descriptor
    attrs: dict[str, Any] = {"scope.target": f"django:{meta.label}", "scope.action": action}
    pk = loaded.get(meta.pk.attname)
    if pk is not None:
        attrs["scope.pk"] = str(pk)
    if using:
        attrs["scope.db_alias"] = using
    if level() == "full":
        attrs["scope.value"] = redacted_repr(
            {f.attname: loaded[f.attname] for f in meta.concrete_fields if f.attname in loaded})
    add_event(state.tracer, "scope.state_change", attrs)


def _on_post_save(sender: Any, instance: Any = None, created: bool = False, using: str | None = None, **_: Any) -> None:
    try:
        _state_change(instance, "insert" if created else "update", using)
    except Exception:
        failed("django.post_save")


# --------------------------------------------------------------------------
# SQL: the innermost step of Django's cursor, under every execute wrapper
# --------------------------------------------------------------------------

def _make_execute(original: Callable) -> Callable:
    many = original.__name__ == "_executemany"

    def execute(self, sql: Any, params: Any, *wrapper_args: Any) -> Any:
        state = _state
        claimed = _sql.claimed()
        if claimed:  # a statement of a connection's set-up (a connection_created receiver's)
            if claimed is True or state is None:
                return original(self, sql, params, *wrapper_args)
            return claimed.run(sql, lambda: original(self, sql, params, *wrapper_args))
        if state is None or type(sql) is not str:
            return original(self, sql, params, *wrapper_args)
        try:
            database = _database(state, self.db)
        except Exception:
            failed("django.sql.database")
            return original(self, sql, params, *wrapper_args)
        return _sql.run(state.tracer, database, sql, lambda: original(self, sql, params, *wrapper_args),
                        None if many else (lambda: self.cursor.rowcount), "django.sql")

    execute.__name__ = original.__name__
    execute.__qualname__ = original.__qualname__
    execute.__doc__ = original.__doc__
    return execute


def _make_connect(original: Callable) -> Callable:
    def connect(self) -> None:
        state = _state
        if state is None or _sql.claimed():
            return original(self)
        return _sql.opening(state.tracer, partial(original, self), "django.sql.connect",
                            partial(_database, state, self))

    connect.__name__ = original.__name__
    connect.__qualname__ = original.__qualname__
    connect.__doc__ = original.__doc__
    return connect


def _database(state: _State, connection: Any) -> _sql.Database:
    """The :class:`_sql.Database` of a Django connection, looked up by what
    names its target (the test runner renames the database in place)."""
    settings = connection.settings_dict
    key = (connection.vendor, settings.get("NAME"), settings.get("HOST"), settings.get("PORT"))
    found = state.databases.get(key)
    if found is None:
        vendor, name, host, port = key
        name = str(name) if name else None
        if vendor == "sqlite":
            name = _sql.database_name(name)
        if len(state.databases) >= 64:
            state.databases.clear()
        found = state.databases[key] = _sql.database(
            vendor, name, host or None, int(port) if port and str(port).isdigit() else None, state.db_mode)
    return found
