"""The viewer's HTML: one shell for every page, with its data inlined as JSON.

A page served by ``scope-otel ui`` links its script and style from
``/static/``; a saved page (:func:`self_contained`) carries them inline and a
Content-Security-Policy that allows exactly those two and no network at all,
so the file works offline and cannot reach anything.  Data travels only as a
JSON block (``<`` escaped, so no value can close the block); the script
builds the DOM with ``textContent``, never parses data as HTML.
"""
from __future__ import annotations

import base64
import hashlib
import json
from importlib import resources
from typing import Any

#: Served under /static/ and inlined into saved pages.
ASSETS = ("ui.css", "ui.js")


def asset(name: str) -> bytes:
    if name not in ASSETS:
        raise KeyError(name)
    return resources.files("scope_otel.ui").joinpath("static", name).read_bytes()


def data_json(data: Any) -> str:
    """``data`` (or JSON text) as JSON that is safe inside a ``<script type="application/json">`` block."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


_TITLES = {"list": "traces · scope-otel", "graph": "graph · scope-otel", "trace": "trace · scope-otel"}


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def served(page: str, data: Any, fetch: str | None = None) -> str:
    """A page for the server: assets linked from /static/; ``fetch``: a URL the script will
    fetch, asked for at once (preloaded) so it arrives while the script is still loading."""
    preload = f"<link rel=\"preload\" href=\"{_escape_text(fetch)}\" as=\"fetch\" crossorigin>" if fetch else ""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_escape_text(_TITLES.get(page, 'scope-otel'))}</title>{preload}"
        "<link rel=\"stylesheet\" href=\"/static/ui.css\">"
        # deferred: fetched while the data below is still arriving, run once the page is parsed
        "<script defer src=\"/static/ui.js\"></script></head>"
        f"<body data-page=\"{page}\"><script id=\"scope-data\" type=\"application/json\">{data_json(data)}</script>"
        "</body></html>\n"
    )


def self_contained(page: str, data: Any) -> str:
    """One file with data, script and style inline; its CSP forbids every fetch."""
    css = asset("ui.css").decode("utf-8")
    js = asset("ui.js").decode("utf-8")
    css_hash = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode()
    js_hash = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode()
    csp = (f"default-src 'none'; script-src 'sha256-{js_hash}'; style-src 'sha256-{css_hash}'; "
           "img-src data:; base-uri 'none'; form-action 'none'")
    # a stylesheet or script cannot contain "</style" / "</script": ours are checked here
    if "</style" in css.lower() or "</script" in js.lower():
        raise ValueError("an asset contains a closing tag and cannot be inlined")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_escape_text(_TITLES.get(page, 'scope-otel'))}</title><style>{css}</style></head>"
        f"<body data-page=\"{page}\" data-offline=\"1\">"
        f"<script id=\"scope-data\" type=\"application/json\">{data_json(data)}</script>"
        f"<script>{js}</script></body></html>\n"
    )


def trace_page_data(bundle: dict[str, Any]) -> str:
    """The trace page's data as JSON text."""
    from scope_otel.ui.model import trace_json

    return '{"trace":' + trace_json(bundle) + "}"
