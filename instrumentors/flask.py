"""Flask integration: one SERVER span per request, whatever the import order.

Usage::

    from scope_otel.instrumentors.flask import ScopeFlaskInstrumentor
    ScopeFlaskInstrumentor().instrument()      # before or after Flask(...)

or nothing at all under ``scope-otel run`` / ``opentelemetry-instrument``,
which load the ``opentelemetry_instrumentor`` entry point ``scope_flask``
(turn it off with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=scope_flask``).

How it attaches
    ``Flask.__call__`` is replaced on the *class*, so applications created
    before instrumenting, applications wrapped in WSGI middleware before
    instrumenting, and apps loaded by ``gunicorn --preload`` before the fork
    are all covered.  Flask's signals add what only Flask knows:
    ``request_started`` (the route → span name ``GET /items/<int:id>`` and
    ``http.route``), ``got_request_exception`` (exception event,
    ``error.type``, ERROR status; an exception that skips it, such as
    ``KeyboardInterrupt``, is recorded as it leaves the app),
    ``before_render_template``/``template_rendered`` (an INTERNAL span
    ``render <template>``).  The status is the one the server sends, taken
    from ``start_response``.

What the span carries
    Stable HTTP semantic conventions: ``http.request.method``, ``url.scheme``,
    ``url.path``, ``url.query``, ``http.route``, ``http.response.status_code``,
    ``server.address``, ``server.port``, ``client.address`` (first
    ``X-Forwarded-For`` hop, else the peer), ``network.peer.address`` (when
    it differs: behind a proxy),
    ``user_agent.original``, ``error.type``.  ``OTEL_SEMCONV_STABILITY_OPT_IN``
    = ``http/dup`` adds the old names, ``http/old`` uses only them.  The parent
    is the W3C context of the incoming request (``OTEL_PROPAGATORS``).

Options (environment, or keywords to ``instrument()``)
    ``OTEL_PYTHON_FLASK_EXCLUDED_URLS`` / ``OTEL_PYTHON_EXCLUDED_URLS`` or
    ``excluded_urls=``: comma-separated regular expressions searched in the
    full URL; matching requests get no span.
    ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` /
    ``..._SERVER_RESPONSE``: headers recorded as ``http.request.header.<name>``;
    ``..._SANITIZE_FIELDS`` and scope-otel's ``redact`` patterns replace values
    with ``[REDACTED]``.
    ``request_hook(span, environ)`` and ``response_hook(span, status,
    response_headers)``, as in the contrib instrumentation.
    ``tracer_provider=``.

Coexistence
    An app the contrib ``FlaskInstrumentor`` instrumented (it marks the app
    ``_is_instrumented_by_opentelemetry``) is left to contrib: no second span.
    A Flask app mounted inside another Flask app gets one span, not two.
"""
from __future__ import annotations

from time import time_ns
from typing import Any, Callable

from opentelemetry import context, trace

from scope_otel.instrumentors import _http, _sql
from scope_otel.instrumentors._base import Call, Patch, Receiver, ScopeInstrumentor
from scope_otel.instrumentors._report import failed
from scope_otel.version import __version__

_SPAN = "scope_otel.span"
_RECORDED = "scope_otel.recorded"
_TEMPLATES = "scope_otel.templates"
_BUFFERED = "scope_otel.buffered"  # the response's body is a list: finished when returned


class _State:
    def __init__(self, **kwargs: Any) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, kwargs.get("tracer_provider"))
        self.options = _http.ServerOptions.from_env("flask", **kwargs)
        self.flask: Any = None  # the flask module, once the program imports it
        self.request_ctx: Any = None  # flask.globals._cv_request where Flask has it (3.0, 3.1): the cheap way in


def _bind(flask: Any) -> None:
    state = _state
    if state is not None:
        state.flask = flask
        state.request_ctx = getattr(flask.globals, "_cv_request", None)


def _unbind(flask: Any) -> None:
    pass


_state: _State | None = None


class ScopeFlaskInstrumentor(ScopeInstrumentor):
    """Flask ≥ 3.0: SERVER spans via a class-level hook plus Flask's signals."""

    _requires = ("flask >= 3.0",)
    _what = "Flask"

    def _configure(self, **kwargs: Any) -> _State:
        return _State(**kwargs)

    @property
    def _hooks(self) -> tuple:
        return (
            Patch("flask", "Flask", "__call__", _make_call),
            Call("flask", _bind, _unbind),
            Receiver("flask", "request_started", _on_request_started),
            Receiver("flask", "got_request_exception", _on_exception),
            Receiver("flask", "request_finished", _on_request_finished),
            Receiver("flask", "before_render_template", _on_before_render),
            Receiver("flask", "template_rendered", _on_rendered),
        )


def _make_call(original: Callable) -> Callable:
    def __call__(self, environ: dict, start_response: Callable) -> Any:
        state = _state
        if (
            state is None
            or _SPAN in environ  # a Flask app mounted in a traced one
            or getattr(self, "_is_instrumented_by_opentelemetry", False)  # contrib owns this app
        ):
            return original(self, environ, start_response)
        options = state.options
        try:
            if options.excluded is not None and _http.is_excluded(environ, options):
                return original(self, environ, start_response)
            span, ctx = _http.start_server_span(state.tracer, environ, options)
            if span.is_recording():  # a request sampled out gets no statement counts
                ctx = _sql.track(ctx)
            environ[_SPAN] = span
            token = context.attach(ctx)
        except Exception:
            failed("flask.start")
            return original(self, environ, start_response)

        def traced_start_response(status: str, headers: list, *exc_info: Any) -> Any:
            try:
                _http.set_status(span, int(status[:3]), options)
                if options.response_headers is not None:
                    _http.capture_response_headers(span, headers, options)
                if options.response_hook is not None:
                    _http.call_response_hook(span, status, headers, options)
            except Exception:
                failed("flask.start_response")
            return start_response(status, headers, *exc_info)

        try:
            body = original(self, environ, traced_start_response)
        except BaseException as exc:
            try:
                if environ.get(_RECORDED) is not exc:  # a signal may have recorded it already
                    _http.record_exception(span, exc, options)
                _sql.report(span, ctx)
                span.end()
            except Exception:
                failed("flask.end")
            raise
        finally:
            context.detach(token)
        if environ.get(_BUFFERED):
            _sql.report(span, ctx)
            span.end()  # the whole body is in memory: the request is finished
            return body
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            _sql.report(span, ctx)
            span.end()  # keep the server's sendfile path; the transfer is not timed
            return body
        return _Body(body, span, ctx)

    return __call__


class _Body:
    """A streamed response's iterable; the span ends exactly once, when the
    stream is exhausted, fails, or is closed, or at the latest when the
    iterable is released (a server or test client that never closes it).

    Iteration runs in the request's context, so spans made while a streamed
    response is produced nest under the request span.
    """

    __slots__ = ("_body", "_it", "_span", "_ctx")

    def __init__(self, body: Any, span: trace.Span, ctx: context.Context) -> None:
        self._body = body
        self._it = None
        self._span = span
        self._ctx = ctx

    def __iter__(self) -> "_Body":
        return self

    def __next__(self) -> bytes:
        token = context.attach(self._ctx)
        try:
            if self._it is None:
                self._it = iter(self._body)
            return next(self._it)
        except StopIteration:
            self._end()
            raise
        except BaseException as exc:
            span = self._span
            if span is not None:
                _http.record_exception(span, exc)
                self._end()
            raise
        finally:
            context.detach(token)

    def _end(self) -> None:
        span, self._span = self._span, None
        if span is not None:
            _sql.report(span, self._ctx)
            span.end()

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._end()

    def __del__(self) -> None:
        try:
            self._end()
        except Exception:
            failed("flask.release")


# --------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------

def _request() -> Any:
    """The current Flask request object (not the proxy), or None."""
    state = _state
    if state is None:
        return None
    cv = state.request_ctx
    if cv is not None:
        ctx = cv.get(None)
        return ctx.request if ctx is not None else None
    flask = state.flask
    if flask is None or not flask.has_request_context():
        return None
    return flask.request._get_current_object()


def _on_request_started(sender: Any, **_: Any) -> None:
    try:
        request = _request()
        span = request.environ.get(_SPAN) if request is not None else None
        if span is None or _state is None:
            return
        rule = request.url_rule
        _http.set_route(span, request.method, rule.rule if rule is not None else None, _state.options)
    except Exception:
        failed("flask.request_started")


def _on_exception(sender: Any, exception: BaseException | None = None, **_: Any) -> None:
    # Not also on request_tearing_down: every exception it carries has been
    # through got_request_exception or leaves the app into __call__ (or into
    # _Body, streamed), which record it; and it fires after every request.
    if exception is None:
        return
    try:
        request = _request()
        span = request.environ.get(_SPAN) if request is not None else None
        if span is None:
            return
        environ = request.environ
        if environ.get(_RECORDED) is exception:  # recorded once, whoever sees it first
            return
        environ[_RECORDED] = exception
        _http.record_exception(span, exception, _state.options if _state else None)
    except Exception:
        failed("flask.exception")


def _on_request_finished(sender: Any, response: Any = None, **_: Any) -> None:
    # werkzeug keeps a body given as bytes or str as a one-item list; anything
    # else is an iterable the server will pull later (a stream)
    try:
        if response is None or type(response.__dict__.get("response")) not in (list, tuple):
            return
        request = _request()
        if request is not None and _SPAN in request.environ:
            request.environ[_BUFFERED] = True
    except Exception:
        failed("flask.request_finished")


def _on_before_render(sender: Any, template: Any = None, **_: Any) -> None:
    try:
        request = _request()
        if request is None or _SPAN not in request.environ:
            return
        request.environ.setdefault(_TEMPLATES, []).append(time_ns())
    except Exception:
        failed("flask.before_render_template")


def _on_rendered(sender: Any, template: Any = None, **_: Any) -> None:
    try:
        request = _request()
        if request is None or _state is None:
            return
        starts = request.environ.get(_TEMPLATES)
        if not starts:
            return
        name = getattr(template, "name", None) or "template"
        span = _state.tracer.start_span(
            f"render {name}",
            start_time=starts.pop(),
            attributes={"scope.kind": "template", "code.file.path": getattr(template, "filename", None) or name},
        )
        span.end()
    except Exception:
        failed("flask.template_rendered")
