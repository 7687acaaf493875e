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
    ERROR status) that Django turns into a 500; ``post_save`` and
    ``post_delete`` become ``scope.state_change`` events on the current span
    (inside a function recorded by the capture runtime, on a zero-length
    child span of that function)
    (``scope.target`` = ``django:<app_label.Model>``, ``scope.action`` =
    ``insert``/``update``/``delete``, ``scope.pk``, ``scope.db_alias``; at
    level ``full`` also ``scope.value``, the field values redacted by the
    ``redact`` patterns and truncated).  ``pre_save`` is not used: a change is
    a fact once saved, and a failed save shows as an exception.  The span
    ends when the view's response comes back; a streaming response's span
    ends when the response is closed (Django's ``request_finished`` point).

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
from time import time_ns
from typing import Any, Callable

from opentelemetry import context, trace

from scope_otel.instrumentors import _http
from scope_otel.instrumentors._support import (
    ScopeInstrumentor,
    add_event,
    failed,
    level,
    patch,
    redacted_repr,
    unpatch,
)
from scope_otel.version import __version__

MIDDLEWARE = "scope_otel.instrumentors.django.ScopeOtelMiddleware"
_CONTRIB_MIDDLEWARE = "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
_SPAN = "scope_otel.span"
_ARRIVED = "scope_otel.arrived"
_MODE = "_scope_otel_mode"  # handler attribute: "middleware", "wrap" or "contrib"


class _State:
    tracer: trace.Tracer
    options: _http.ServerOptions
    position: int
    inserted: bool = False  # did load_middleware put MIDDLEWARE into settings?


_state: _State | None = None


class ScopeDjangoInstrumentor(ScopeInstrumentor):
    """Django ≥ 4.2: SERVER spans (WSGI and ASGI) and model-change events."""

    _requires = ("django >= 4.2",)
    _what = "Django"
    _library = "django"  # a Flask app never pays for importing Django

    def _attach(self, **kwargs: Any) -> None:
        from django.core.handlers.base import BaseHandler

        global _state
        state = _State()
        state.tracer = trace.get_tracer(__name__, __version__, kwargs.get("tracer_provider"))
        state.options = _http.ServerOptions.from_env("django", **kwargs)
        position = kwargs.get("middleware_position", os.environ.get("OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION", 0))
        try:
            state.position = int(position)
        except (TypeError, ValueError):
            from scope_otel.instrumentors._support import say_once

            say_once("django.position", f"scope-otel: middleware position {position!r} is not an integer; using 0")
            state.position = 0
        _state = state
        patch(BaseHandler, "load_middleware", _make_load_middleware)
        patch(BaseHandler, "get_response", _make_get_response)
        patch(BaseHandler, "get_response_async", _make_get_response_async)
        for signal, receiver in _receivers():
            signal.connect(receiver, weak=False, dispatch_uid=f"scope_otel.{receiver.__name__}")

    def _detach(self, **kwargs: Any) -> None:
        global _state
        from django.core.handlers.base import BaseHandler

        for name in ("load_middleware", "get_response", "get_response_async"):
            unpatch(BaseHandler, name)
        for signal, receiver in _receivers():
            signal.disconnect(receiver, dispatch_uid=f"scope_otel.{receiver.__name__}")
        _state = None


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
        meta[_SPAN] = span
        return span, context.attach(ctx)
    except Exception:
        failed("django.start")
        return None


def _finish(request: Any, started: tuple, response: Any = None, exc: BaseException | None = None) -> None:
    span, token = started
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
            span.end()
            return
        _http.set_status(span, response.status_code, options)
        if options.response_headers is not None or options.response_hook is not None:
            headers = list(response.items())
            _http.capture_response_headers(span, headers, options)
            _http.call_response_hook(span, f"{response.status_code} {response.reason_phrase}", headers, options)
        if getattr(response, "streaming", False):
            response._resource_closers.append(span.end)  # ends with the stream
        else:
            span.end()
    except Exception:
        failed("django.finish")
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
    attrs: dict[str, Any] = {
        "scope.target": f"django:{meta.label}",
        "scope.action": action,
        "scope.pk": str(instance.pk),
    }
    if using:
        attrs["scope.db_alias"] = using
    if level() == "full":
        attrs["scope.value"] = redacted_repr({f.attname: getattr(instance, f.attname, None) for f in meta.concrete_fields})
    add_event(state.tracer, "scope.state_change", attrs)


def _on_post_save(sender: Any, instance: Any = None, created: bool = False, using: str | None = None, **_: Any) -> None:
    try:
        _state_change(instance, "insert" if created else "update", using)
    except Exception:
        failed("django.post_save")


def _on_post_delete(sender: Any, instance: Any = None, using: str | None = None, **_: Any) -> None:
    try:
        _state_change(instance, "delete", using)
    except Exception:
        failed("django.post_delete")


def _receivers() -> list[tuple[Any, Callable]]:
    from django.core import signals
    from django.db.models import signals as model_signals

    return [
        (signals.request_started, _on_request_started),
        (signals.got_request_exception, _on_exception),
        (model_signals.post_save, _on_post_save),
        (model_signals.post_delete, _on_post_delete),
    ]
