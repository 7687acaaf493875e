"""HTTP pieces shared by the Flask, Django and HTTP-client integrations.

Written once here so the frameworks cannot drift apart:

* semantic-convention mode (:func:`semconv_mode`): stable attribute names by
  default; ``OTEL_SEMCONV_STABILITY_OPT_IN`` picks others (``http`` = stable,
  ``http/dup`` = stable and old, ``http/old`` = old only — the last one is a
  scope-otel addition for dashboards built on pre-1.0 names; the same with
  ``database``, ``database/dup``, ``database/old`` for SQL spans);
* :class:`ServerOptions`: excluded URLs (``OTEL_PYTHON_EXCLUDED_URLS`` and
  ``OTEL_PYTHON_<FRAMEWORK>_EXCLUDED_URLS``, comma-separated regular
  expressions searched in the full URL), captured headers
  (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` /
  ``..._SERVER_RESPONSE``, names or regular expressions, case-insensitive)
  with values sanitised (``..._SANITIZE_FIELDS`` plus scope-otel's ``redact``
  patterns, so ``Authorization`` and ``Cookie`` never leave the process),
  request and response hooks;
* :func:`start_server_span` / :func:`set_route` / :func:`set_status` /
  :func:`record_exception`: a server span from a WSGI environ (or Django's
  ``request.META``, which has the same keys), with the incoming W3C context
  extracted through :mod:`opentelemetry.propagate` so ``OTEL_PROPAGATORS``
  applies;
* :func:`client_attributes` / :func:`client_status` for outgoing calls.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from scope_otel.instrumentors._report import failed

STABLE, OLD, DUP = "stable", "old", "dup"
_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


def semconv_mode(signal: str = "http") -> str:
    """``stable`` (default), ``dup`` or ``old`` for ``http`` or ``database``."""
    values = {v.strip().lower() for v in os.environ.get(_OPT_IN, "").split(",")}
    if f"{signal}/dup" in values:
        return DUP
    if signal in values:
        return STABLE
    if f"{signal}/old" in values:
        return OLD
    return STABLE


def _names(new: str, old: str | None, mode: str) -> tuple[str, ...]:
    if mode == STABLE or old is None:
        return (new,)
    if mode == OLD:
        return (old,)
    return (new, old)


class _Attrs:
    """Attribute-name table for one mode: ``keys["http.request.method"]``
    gives the names to set (one or two)."""

    _OLD = {
        "http.request.method": "http.method",
        "url.scheme": "http.scheme",
        "url.path": "http.target",
        "url.full": "http.url",
        "http.response.status_code": "http.status_code",
        "server.address": "net.host.name",
        "server.port": "net.host.port",
        "client.address": "http.client_ip",
        "network.peer.address": "net.peer.ip",
        "user_agent.original": "http.user_agent",
        "http.route": "http.route",
    }
    _OLD_CLIENT = {"server.address": "net.peer.name", "server.port": "net.peer.port"}

    def __init__(self, mode: str, client: bool = False) -> None:
        old = dict(self._OLD)
        if client:
            old.update(self._OLD_CLIENT)
        self.mode = mode
        self.keys: dict[str, tuple[str, ...]] = {}
        for new in (*old, "url.query", "error.type"):
            self.keys[new] = _names(new, old.get(new), mode)

    def put(self, attrs: dict, key: str, value: Any) -> None:
        for name in self.keys[key]:
            attrs[name] = value


# --------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------

def _env_list(*names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        out += [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]
    return out


def _pattern(parts: Iterable[str], whole: bool = False) -> re.Pattern | None:
    parts = list(parts)
    if not parts:
        return None
    if whole:  # header names: the whole name must match
        return re.compile("^(?:" + "|".join(parts) + ")$", re.I)
    return re.compile("|".join(f"(?:{p})" for p in parts), re.I)


_CAPTURE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_"


@dataclass
class ServerOptions:
    """Everything a server integration decides once, at instrument time."""

    framework: str = "http"
    mode: str = STABLE
    excluded: re.Pattern | None = None
    request_headers: re.Pattern | None = None
    response_headers: re.Pattern | None = None
    sanitize: re.Pattern | None = None
    request_hook: Callable[[Span, Mapping], None] | None = None
    response_hook: Callable[[Span, str, list], None] | None = None
    attrs: _Attrs = field(init=False)
    status_keys: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.attrs = _Attrs(self.mode)
        self.status_keys = self.attrs.keys["http.response.status_code"]

    @classmethod
    def from_env(cls, framework: str, **kwargs: Any) -> "ServerOptions":
        """Options from the standard ``OTEL_*`` variables; keyword arguments win.

        ``excluded_urls`` (comma-separated string), ``request_hook``,
        ``response_hook`` are accepted as keywords, like the contrib
        instrumentors.
        """
        excluded = kwargs.get("excluded_urls")
        excluded_parts = (
            [p.strip() for p in excluded.split(",") if p.strip()]
            if excluded is not None
            else _env_list(f"OTEL_PYTHON_{framework.upper()}_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")
        )
        try:
            from scope_otel.config import current

            redact = list(current().redact)
        except Exception:
            from scope_otel.config import DEFAULT_REDACT as redact
        sanitize = _env_list(_CAPTURE + "SANITIZE_FIELDS") + [re.escape(r) for r in redact]
        return cls(
            framework=framework,
            mode=semconv_mode("http"),
            excluded=_pattern(excluded_parts),
            request_headers=_pattern(_env_list(_CAPTURE + "SERVER_REQUEST"), whole=True),
            response_headers=_pattern(_env_list(_CAPTURE + "SERVER_RESPONSE"), whole=True),
            sanitize=_pattern(sanitize),
            request_hook=kwargs.get("request_hook"),
            response_hook=kwargs.get("response_hook"),
        )


# --------------------------------------------------------------------------
# server side
# --------------------------------------------------------------------------

_ENVIRON_KEYS: dict[str, str] = {}  # header name -> WSGI environ key


def _environ_key(header: str) -> str:
    """Where a WSGI server puts request header ``header``: ``traceparent`` -> ``HTTP_TRACEPARENT``."""
    return "HTTP_" + header.upper().replace("-", "_")


class _EnvironGetter(Getter):
    """Reads ``traceparent`` from ``HTTP_TRACEPARENT`` in a WSGI environ."""

    def get(self, carrier: Mapping, key: str) -> list[str] | None:
        name = _ENVIRON_KEYS.get(key)
        if name is None:
            name = _environ_key(key)
            if len(_ENVIRON_KEYS) < 256:  # propagators ask for a few fixed names
                _ENVIRON_KEYS[key] = name
        value = carrier.get(name)
        return [value] if value is not None else None

    def keys(self, carrier: Mapping) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


_GETTER = _EnvironGetter()

#: Propagators whose ``extract`` reads only their ``fields`` and, when those
#: headers are absent, returns the context it was given, or when given none
#: a fresh empty one (``empty``) or the current one (``current``).
_PLAIN_PROPAGATORS = {
    "opentelemetry.trace.propagation.tracecontext.TraceContextTextMapPropagator": "empty",
    "opentelemetry.baggage.propagation.W3CBaggagePropagator": "current",
    "scope_otel.causal.propagator.HLCPropagator": "empty",
}
_NO_PLAN = (None, None, None)
_extract_plan: tuple[Any, tuple[str, ...] | None, str | None] = _NO_PLAN


def _plan(textmap: Any) -> tuple[Any, tuple[str, ...] | None, str | None]:
    """(textmap, environ keys it reads, what it returns without them), or
    no keys when the textmap is one this module does not know."""
    propagators = getattr(textmap, "_propagators", None) if type(textmap) is CompositePropagator else None
    if propagators is None:
        return textmap, None, None
    result = None  # an empty composite returns the context it was given
    keys: list[str] = []
    for propagator in propagators:
        cls = type(propagator)
        kind = _PLAIN_PROPAGATORS.get(f"{cls.__module__}.{cls.__qualname__}")
        if kind is None:
            return textmap, None, None
        if result is None:
            result = kind
        keys += (_environ_key(f) for f in propagator.fields)
    return textmap, tuple(dict.fromkeys(keys)), result


def _parent(environ: Mapping) -> Any:
    """The context extracted from the request's headers (``OTEL_PROPAGATORS``).

    A request without any propagation header (most requests, where no
    client passes trace context) skips the propagators' work when they are
    the standard ones and yields exactly what they would have returned.
    """
    global _extract_plan
    textmap = propagate.get_global_textmap()
    plan = _extract_plan
    if plan[0] is not textmap:
        plan = _extract_plan = _plan(textmap)
    keys = plan[1]
    if keys is not None:
        for key in keys:
            if key in environ:
                break
        else:
            result = plan[2]
            return Context() if result == "empty" else get_current() if result == "current" else None
    return propagate.extract(environ, getter=_GETTER)


def full_url(environ: Mapping, scheme: str | None = None) -> str:
    scheme = scheme or environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    path = (environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "")
    query = environ.get("QUERY_STRING")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def is_excluded(environ: Mapping, options: ServerOptions, scheme: str | None = None) -> bool:
    return options.excluded is not None and options.excluded.search(full_url(environ, scheme)) is not None


def start_server_span(
    tracer: trace.Tracer,
    environ: Mapping,
    options: ServerOptions,
    scheme: str | None = None,
    start_time: int | None = None,
) -> tuple[Span, Any]:
    """Start (not activate) a SERVER span for the request in ``environ``: (span, the context to attach).

    Its parent is the context extracted from the request headers, and the
    context to attach is that one with the span in it, so the request's
    baggage is current in the application as well.  The name is the method
    until :func:`set_route` knows the route.
    """
    get = environ.get
    method = get("REQUEST_METHOD", "GET")
    path = (get("SCRIPT_NAME") or "") + (get("PATH_INFO") or "/")
    attrs: dict[str, Any] = {
        "http.request.method": method,
        "url.scheme": scheme or get("wsgi.url_scheme", "http"),
        "url.path": path,
    }
    query = get("QUERY_STRING")
    if query:
        attrs["url.query"] = query
    host = get("HTTP_HOST")
    if host:
        name, _, port = host.rpartition(":")
        if not port.isdigit():  # no port, or the end of an IPv6 address
            name, port = host, ""
        attrs["server.address"] = name
    else:
        attrs["server.address"] = get("SERVER_NAME", "")
        port = str(get("SERVER_PORT") or "")
    if port.isdigit():
        attrs["server.port"] = int(port)
    peer = get("REMOTE_ADDR")
    forwarded = get("HTTP_X_FORWARDED_FOR")
    client = forwarded.split(",")[0].strip() if forwarded else peer
    if client:
        attrs["client.address"] = client
    if peer and peer != client:  # only worth an attribute behind a proxy
        attrs["network.peer.address"] = peer
    agent = get("HTTP_USER_AGENT")
    if agent:
        attrs["user_agent.original"] = agent
    if options.mode != STABLE:
        attrs = _with_old_names(attrs, options)
    if options.request_headers is not None:
        _capture_request_headers(attrs, environ, options)
    parent = _parent(environ)
    span = tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attrs, start_time=start_time)
    if options.request_hook is not None:
        try:
            options.request_hook(span, environ)
        except Exception:
            failed(f"{options.framework}.request_hook")
    return span, trace.set_span_in_context(span, parent)


def _with_old_names(attrs: dict[str, Any], options: ServerOptions) -> dict[str, Any]:
    """Stable attributes -> old names (``old``) or both (``dup``)."""
    out: dict[str, Any] = {}
    keys = options.attrs.keys
    for name, value in attrs.items():
        if name == "url.query":
            continue
        for key in keys.get(name, (name,)):
            out[key] = value
    if options.mode == DUP and "url.query" in attrs:
        out["url.query"] = attrs["url.query"]
    target = attrs["url.path"] + (f"?{attrs['url.query']}" if "url.query" in attrs else "")
    out["http.target"] = target  # the old name carried path and query together
    return out


def _capture_request_headers(attrs: dict, environ: Mapping, options: ServerOptions) -> None:
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].lower().replace("_", "-")
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.lower().replace("_", "-")
        else:
            continue
        if options.request_headers.match(name):
            attrs[f"http.request.header.{name}"] = [_sanitized(name, value, options)]


def _sanitized(name: str, value: str, options: ServerOptions) -> str:
    if options.sanitize is not None and options.sanitize.search(name):
        return "[REDACTED]"
    return value


def capture_response_headers(span: Span, headers: Iterable[tuple[str, str]], options: ServerOptions) -> None:
    if options.response_headers is None or not span.is_recording():
        return
    found: dict[str, list[str]] = {}
    for name, value in headers:
        name = name.lower()
        if options.response_headers.match(name):
            found.setdefault(f"http.response.header.{name}", []).append(_sanitized(name, value, options))
    if found:
        span.set_attributes(found)


def set_route(span: Span, method: str, route: str | None, options: ServerOptions) -> None:
    """Name the span ``METHOD route`` and set ``http.route``."""
    if route:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)


def set_status(span: Span, status_code: int, options: ServerOptions) -> None:
    """Response status; 5xx marks the server span as an error."""
    keys = options.status_keys
    if len(keys) == 1:
        span.set_attribute(keys[0], status_code)
    else:
        span.set_attributes(dict.fromkeys(keys, status_code))
    if status_code >= 500:
        attributes = getattr(span, "attributes", None) or {}
        if options.mode != OLD and "error.type" not in attributes:  # an exception type says more
            span.set_attribute("error.type", str(status_code))
        span.set_status(Status(StatusCode.ERROR))


def record_exception(span: Span, exc: BaseException, options: ServerOptions | None = None) -> None:
    """Exception event (semconv ``exception.*``), ``error.type``, ERROR status."""
    if not span.is_recording():
        return
    span.record_exception(exc)
    if options is None or options.mode != OLD:
        span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def call_response_hook(span: Span, status: str, headers: list, options: ServerOptions) -> None:
    if options.response_hook is None:
        return
    try:
        options.response_hook(span, status, headers)
    except Exception:
        failed(f"{options.framework}.response_hook")


# --------------------------------------------------------------------------
# client side
# --------------------------------------------------------------------------

_CLIENT_ATTRS: dict[str, _Attrs] = {}


def client_attrs(mode: str) -> _Attrs:
    table = _CLIENT_ATTRS.get(mode)
    if table is None:
        table = _CLIENT_ATTRS[mode] = _Attrs(mode, client=True)
    return table


def client_attributes(method: str, url: str, mode: str) -> dict[str, Any]:
    """Attributes of an outgoing request; user:password is removed from the URL."""
    a = client_attrs(mode)
    attrs: dict[str, Any] = {}
    a.put(attrs, "http.request.method", method)
    try:
        parts = urlsplit(url)
        if parts.username or parts.password:
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        a.put(attrs, "url.full", url)
        if parts.hostname:
            a.put(attrs, "server.address", parts.hostname)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        if port:
            a.put(attrs, "server.port", port)
    except ValueError:
        a.put(attrs, "url.full", url)
    return attrs


def client_status(span: Span, status_code: int, mode: str) -> None:
    for name in client_attrs(mode).keys["http.response.status_code"]:
        span.set_attribute(name, status_code)
    if status_code >= 400:
        if mode != OLD:
            span.set_attribute("error.type", str(status_code))
        span.set_status(Status(StatusCode.ERROR))
