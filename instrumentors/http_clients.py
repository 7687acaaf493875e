"""Outgoing HTTP: a CLIENT span per call and W3C context in the request.

Usage::

    from scope_otel.instrumentors.http_clients import ScopeHTTPClientsInstrumentor
    ScopeHTTPClientsInstrumentor().instrument()

or the entry point ``scope_http_clients`` (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
=scope_http_clients`` turns it off).

Covered, each at class level and only if installed: ``requests``
(``Session.send``), ``urllib3`` (``HTTPConnectionPool.urlopen``), ``httpx``
(``Client.send`` and ``AsyncClient.send``) and the standard library's
``urllib.request`` (``AbstractHTTPHandler.do_open``).

Each call gets a CLIENT span named after the method, with
``http.request.method``, ``url.full`` (user and password removed),
``server.address``, ``server.port``, ``http.response.status_code`` and, for
4xx/5xx or an exception, ``error.type`` and ERROR status.  The span's context
is injected into the request headers through :mod:`opentelemetry.propagate`,
so ``OTEL_PROPAGATORS`` decides the format (``traceparent``/``tracestate`` and
``baggage`` by default); the Flask and Django integrations extract it on the
other side.  ``OTEL_SEMCONV_STABILITY_OPT_IN`` works as for servers.

One span per logical call: while a client span is open, HTTP instrumentation
is suppressed (the OpenTelemetry-wide key), so ``requests`` going through
``urllib3`` — or a contrib client instrumentation — does not add a second
one.  Calls made while instrumentation is suppressed (e.g. by an exporter
sending spans) are not traced.
"""
from __future__ import annotations

from typing import Any, Callable

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.utils import (
    _SUPPRESS_HTTP_INSTRUMENTATION_KEY,
    is_http_instrumentation_enabled,
)
from opentelemetry.trace import SpanKind

from scope_otel.instrumentors import _http
from scope_otel.instrumentors._base import Patch, ScopeInstrumentor
from scope_otel.instrumentors._report import failed
from scope_otel.version import __version__


class _State:
    def __init__(self, **kwargs: Any) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, kwargs.get("tracer_provider"))
        self.mode = _http.semconv_mode("http")


_state: _State | None = None


class ScopeHTTPClientsInstrumentor(ScopeInstrumentor):
    """requests, urllib3, httpx and urllib: client spans and context injection."""

    _what = "HTTP clients"

    def _configure(self, **kwargs: Any) -> _State:
        return _State(**kwargs)

    @property
    def _hooks(self) -> tuple:
        # each client when the program imports it: an app using only urllib
        # does not pay for importing requests and httpx
        return (
            Patch("requests.sessions", "Session", "send", _wrap_requests),
            Patch("urllib3.connectionpool", "HTTPConnectionPool", "urlopen", _wrap_urllib3),
            Patch("httpx", "Client", "send", _wrap_httpx),
            Patch("httpx", "AsyncClient", "send", _wrap_httpx_async),
            Patch("urllib.request", "AbstractHTTPHandler", "do_open", _wrap_urllib),
        )


# --------------------------------------------------------------------------
# one call
# --------------------------------------------------------------------------

def _begin(method: str, url: str, inject: Callable[[dict], None]) -> tuple | None:
    """Start the client span, inject its context, suppress nested HTTP spans."""
    state = _state
    if state is None or not is_http_instrumentation_enabled():
        return None
    try:
        method = method.upper()
        span = state.tracer.start_span(
            method, kind=SpanKind.CLIENT, attributes=_http.client_attributes(method, url, state.mode)
        )
        ctx = trace.set_span_in_context(span)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=ctx)
        if carrier:
            inject(carrier)
        token = context.attach(context.set_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY, True, ctx))
        return span, token, state.mode
    except Exception:
        failed("http_clients.begin")
        return None


def _end(started: tuple, status: int | None = None, exc: BaseException | None = None) -> None:
    span, token, mode = started
    try:
        context.detach(token)
        if exc is not None:
            _http.record_exception(span, exc)
        elif status is not None:
            _http.client_status(span, status, mode)
        span.end()
    except Exception:
        failed("http_clients.end")


def _sync(call: Callable, started: tuple | None, status_of: Callable[[Any], int]) -> Any:
    if started is None:
        return call()
    try:
        result = call()
    except BaseException as exc:
        _end(started, exc=exc)
        raise
    _end(started, status=_safe_status(result, status_of))
    return result


def _safe_status(result: Any, status_of: Callable[[Any], int]) -> int | None:
    try:
        return int(status_of(result))
    except Exception:
        return None


# --------------------------------------------------------------------------
# the clients
# --------------------------------------------------------------------------

def _wrap_requests(original: Callable) -> Callable:
    def send(self, request, **kwargs):
        started = _begin(request.method or "GET", request.url, request.headers.update)
        return _sync(lambda: original(self, request, **kwargs), started, lambda r: r.status_code)

    return send


def _wrap_urllib3(original: Callable) -> Callable:
    def urlopen(self, method, url, *args, **kwargs):
        if _state is None or not is_http_instrumentation_enabled():
            return original(self, method, url, *args, **kwargs)
        # headers is the 2nd optional positional (body, headers, ...); copy it
        # so the caller's dict is never changed.
        positional = len(args) >= 2
        headers = args[1] if positional else kwargs.get("headers")
        headers = dict(headers if headers is not None else (self.headers or {}))
        full = url if "://" in url else f"{self.scheme}://{self.host}:{self.port}{url}"
        started = _begin(method, full, headers.update)
        if positional:
            args = (args[0], headers, *args[2:])
        else:
            kwargs["headers"] = headers
        return _sync(lambda: original(self, method, url, *args, **kwargs), started, lambda r: r.status)

    return urlopen


def _wrap_httpx(original: Callable) -> Callable:
    def send(self, request, **kwargs):
        started = _begin(request.method, str(request.url), request.headers.update)
        return _sync(lambda: original(self, request, **kwargs), started, lambda r: r.status_code)

    return send


def _wrap_httpx_async(original: Callable) -> Callable:
    async def send(self, request, **kwargs):
        started = _begin(request.method, str(request.url), request.headers.update)
        if started is None:
            return await original(self, request, **kwargs)
        try:
            response = await original(self, request, **kwargs)
        except BaseException as exc:
            _end(started, exc=exc)
            raise
        _end(started, status=_safe_status(response, lambda r: r.status_code))
        return response

    return send


def _wrap_urllib(original: Callable) -> Callable:
    def do_open(self, http_class, req, **http_conn_args):
        def inject(carrier: dict) -> None:
            for key, value in carrier.items():
                req.add_unredirected_header(key, value)

        started = _begin(req.get_method(), req.full_url, inject)
        return _sync(lambda: original(self, http_class, req, **http_conn_args), started, lambda r: r.status)

    return do_open
