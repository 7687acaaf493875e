"""The viewer's HTTP server: the standard library's ``ThreadingHTTPServer``.

Pages (``/``, ``/trace/<id>``, ``/graph``), their JSON (``/api/...``), saved
pages (``/trace/<id>.html``), Chrome-trace downloads and the two static
assets.  One store query runs at a time (an embedded store is one engine per
process, kept open between requests); a store held by a running application
is shared as ``scope-otel query`` shares it.  Serving a trace page starts
reading its trace, so the read overlaps the page's loading.  Bound to 127.0.0.1 unless told otherwise; with a token,
every request must carry it (``?token=`` once, then a cookie, or an
``Authorization: Bearer`` header).  Responses forbid framing and carry a
Content-Security-Policy that allows only the viewer's own script.
"""
from __future__ import annotations

import datetime as _dt
import hmac
import json
import re
import threading
import time
import urllib.parse
from concurrent.futures import Future
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scope_otel.store import Store, StoreError, TraceFilter
from scope_otel.ui import model, pages
from scope_otel.ui.chrome_trace import chrome_trace

_TRACE = re.compile(r"/trace/([0-9a-fA-F]{32})(\.html)?")
_API_TRACE = re.compile(r"/api/trace/([0-9a-fA-F]{32})(/chrome-trace)?")
_COOKIE = "scope_otel_ui"
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


#: An embedded store's engine stays open this long after the viewer's last query (opening it
#: costs ~0.5 s, more under load; the list page asks every 3 s).  A process that asks for
#: the store, such as an application's store writer, still gets it within ~0.1 s.
KEEP_OPEN_S = 60.0
#: A trace read ahead for a page just served (:meth:`ViewerServer.prefetch_trace`) is used for
#: that page's data request within this many seconds, else dropped and read again.
PREFETCH_KEEP_S = 10.0
PREFETCH_MAX = 4


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        self.store = store
        store.keep_open(KEEP_OPEN_S)
        self.token = token or None
        self.lock = threading.Lock()
        self._prefetched: dict[str, tuple[float, Future]] = {}
        self._prefetch_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/" + (f"?token={urllib.parse.quote(self.token)}" if self.token else "")

    def ask(self, fn: Any, *args: Any) -> Any:
        """Run one store read, one at a time."""
        with self.lock:
            return fn(self.store, *args)

    def prefetch_trace(self, trace_id: str) -> None:
        """Start reading a trace whose page was just served: its script asks for the data next,
        and the read then overlaps the page's own loading instead of following it."""
        now = time.monotonic()
        with self._prefetch_lock:
            for key, (when, _) in list(self._prefetched.items()):
                if now - when > PREFETCH_KEEP_S:
                    del self._prefetched[key]
            self._prefetched.pop(trace_id, None)  # an older read of it: this page gets a fresh one
            if len(self._prefetched) >= PREFETCH_MAX:
                return
            future: Future = Future()
            self._prefetched[trace_id] = (now, future)

        def read() -> None:
            try:
                future.set_result(self.ask(model.load_trace, trace_id))
            except BaseException as exc:  # handed to whoever asks for the trace
                future.set_exception(exc)

        threading.Thread(target=read, name="scope-otel-ui-prefetch", daemon=True).start()

    def trace_bundle(self, trace_id: str) -> dict[str, Any] | None:
        """The trace's bundle: the one read for its page moments ago, else read now."""
        with self._prefetch_lock:
            when, future = self._prefetched.pop(trace_id, (0.0, None))
        if future is not None and time.monotonic() - when <= PREFETCH_KEEP_S:
            return future.result()
        return self.ask(model.load_trace, trace_id)


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"
    server_version = "scope-otel-ui"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if not self._allowed(query):
            return
        path = url.path
        try:
            if path == "/":
                return self._html(pages.served("list", {"services": self.server.ask(Store.services)}))
            if path == "/graph":
                return self._html(pages.served("graph", {}))
            m = _TRACE.fullmatch(path)
            if m:
                return self._trace_page(m.group(1).lower(), saved=bool(m.group(2)))
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):])
            if path == "/api/traces":
                return self._json(self.server.ask(model.trace_rows, _filter(query)))
            if path == "/api/services":
                return self._json(self.server.ask(Store.services))
            if path == "/api/graph":
                window = (_one(query, "window") or "all").strip()
                try:
                    window_s = None if window == "all" else float(window)
                except ValueError:
                    raise ValueError(f"window={window!r}: seconds, or all") from None
                return self._json(self.server.ask(model.load_graph, _one(query, "by") or "service", window_s))
            m = _API_TRACE.fullmatch(path)
            if m:
                bundle = self.server.trace_bundle(m.group(1).lower())
                if bundle is None:
                    return self._error(HTTPStatus.NOT_FOUND, f"trace {m.group(1)} is not in the store")
                if m.group(2):
                    return self._json(chrome_trace(bundle), download=f"trace-{m.group(1).lower()}.json")
                return self._json_text(model.trace_json(bundle))
            if path == "/favicon.ico":
                return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            return self._error(HTTPStatus.NOT_FOUND, f"no page at {path}")
        except (StoreError, ValueError) as exc:
            return self._error(HTTPStatus.BAD_REQUEST if isinstance(exc, ValueError) else HTTPStatus.SERVICE_UNAVAILABLE,
                               str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__)
        except Exception as exc:  # the store's own errors: one line to the page, the server keeps serving
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500])

    # -- responses -------------------------------------------------------------

    def _trace_page(self, trace_id: str, saved: bool) -> None:
        if not saved:  # a shell: the page fetches /api/trace/<id> (see ui.js)
            if not self.server.ask(model.has_trace, trace_id):
                return self._error(HTTPStatus.NOT_FOUND, f"trace {trace_id} is not in the store")
            self.server.prefetch_trace(trace_id)
            return self._html(pages.served("trace", {"trace_id": trace_id}, fetch=f"/api/trace/{trace_id}"))
        bundle = self.server.ask(model.load_trace, trace_id)
        if bundle is None:
            return self._error(HTTPStatus.NOT_FOUND, f"trace {trace_id} is not in the store")
        body = pages.self_contained("trace", pages.trace_page_data(bundle)).encode("utf-8")
        return self._send(HTTPStatus.OK, body, "text/html; charset=utf-8",
                          download=f"trace-{trace_id}.html", csp=None)

    def _static(self, name: str) -> None:
        try:
            body = pages.asset(name)
        except KeyError:
            return self._error(HTTPStatus.NOT_FOUND, f"no asset {name}")
        kind = "text/css; charset=utf-8" if name.endswith(".css") else "text/javascript; charset=utf-8"
        self._send(HTTPStatus.OK, body, kind, cache="no-cache")

    def _html(self, text: str) -> None:
        self._send(HTTPStatus.OK, text.encode("utf-8"), "text/html; charset=utf-8")

    def _json(self, data: Any, download: str | None = None) -> None:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send(HTTPStatus.OK, body, "application/json; charset=utf-8", download=download)

    def _json_text(self, text: str) -> None:
        self._send(HTTPStatus.OK, text.encode("utf-8"), "application/json; charset=utf-8")

    def _error(self, status: HTTPStatus, message: str) -> None:
        if self.path.startswith("/api/"):
            body = json.dumps({"error": message}).encode("utf-8")
            return self._send(status, body, "application/json; charset=utf-8")
        page = pages.served("error", {"error": message, "status": int(status)})
        self._send(status, page.encode("utf-8"), "text/html; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, kind: str, download: str | None = None,
              cache: str = "no-store", csp: str | None = _CSP, cookie: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        if csp:
            self.send_header("Content-Security-Policy", csp)
        if download:
            self.send_header("Content-Disposition", f'attachment; filename="{download}"')
        if self._new_cookie:
            self.send_header("Set-Cookie", f"{_COOKIE}={self._new_cookie}; HttpOnly; SameSite=Strict; Path=/")
        self.end_headers()
        self.wfile.write(body)

    # -- access ------------------------------------------------------------------

    _new_cookie: str | None = None

    def _allowed(self, query: dict[str, list[str]]) -> bool:
        self._new_cookie = None
        token = self.server.token
        if not token:
            return True
        offered = [_one(query, "token") or ""]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            offered.append(auth[7:].strip())
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == _COOKIE:
                offered.append(value)
        if any(hmac.compare_digest(o.encode(), token.encode()) for o in offered if o):
            if _one(query, "token"):
                self._new_cookie = token
            return True
        self._send(HTTPStatus.UNAUTHORIZED, b"scope-otel ui: this viewer needs its token: open the URL it printed\n",
                   "text/plain; charset=utf-8")
        return False


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _filter(query: dict[str, list[str]]) -> TraceFilter:
    """The list's filters from a query string; a malformed value is a ValueError naming it."""
    def number(key: str) -> float | None:
        raw = (_one(query, key) or "").strip()
        if not raw:
            return None
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{key}={raw!r} is not a number") from None

    def when(key: str) -> _dt.datetime | None:
        raw = (_one(query, key) or "").strip()
        if not raw:
            return None
        try:
            value = _dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{key}={raw!r} is not a date and time (ISO 8601)") from None
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return value

    limit = number("limit")
    return TraceFilter(
        service=(_one(query, "service") or "").strip() or None,
        name=(_one(query, "name") or "").strip() or None,
        errors=(_one(query, "errors") or "") in ("1", "true", "on", "yes"),
        min_duration_ms=number("min_ms"),
        since=when("since"),
        until=when("until"),
        text=(_one(query, "text") or "").strip() or None,
        span=(_one(query, "span") or "").strip() or None,
        limit=int(limit) if limit else 50,
    )
