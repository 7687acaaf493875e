"""``scope-otel ui`` and ``scope-otel export``.

::

    scope-otel ui [--store PATH_OR_URL] [--port N] [--open] [--token T] [--host H]
    scope-otel export --format chrome-trace|html TRACE_ID [-o FILE]
"""
from __future__ import annotations

import json
import sys
from typing import Any

from scope_otel.store.cli import _fail, _first_line, _opened, _parser


def ui_main(argv: list[str]) -> int:
    parser = _parser("ui", "serve a local web viewer over the store: traces, waterfall, time travel, graphs")
    parser.add_argument("--port", type=int, default=8700, help="TCP port (default 8700; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; anything else exposes recorded values)")
    parser.add_argument("--token", default=None, help="require this token (the printed URL carries it)")
    parser.add_argument("--open", action="store_true", help="open the viewer in a browser")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token:
        print(f"scope-otel: warning: serving on {args.host} without --token: anyone who can reach it "
              "reads every recorded argument and value", file=sys.stderr)
    from scope_otel.ui.server import ViewerServer

    with _opened(args) as store:
        if store is None:
            return 1
        try:
            server = ViewerServer(store, host=args.host, port=args.port, token=args.token)
        except OSError as exc:
            return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc} "
                         "(choose another --port, or 0 for a free one)")
        print(f"scope-otel ui: {server.url}  (store {store.target.display}; Ctrl-C stops)", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(server.url)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0


def export_main(argv: list[str]) -> int:
    parser = _parser("export", "write one trace as Chrome Trace Event JSON or a self-contained HTML page")
    parser.add_argument("trace_id", help="32 hex digits")
    parser.add_argument("--format", choices=("chrome-trace", "html"), default="chrome-trace")
    parser.add_argument("-o", "--output", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    with _opened(args) as store:
        if store is None:
            return 1
        try:
            text = render(store, args.trace_id.lower(), args.format)
        except Exception as exc:
            return _fail(_first_line(exc))
        if text is None:
            return _fail(f"trace {args.trace_id} not found in {store.target.display}")
    return write(text, args.output)


def render(store: Any, trace_id: str, fmt: str) -> str | None:
    """One trace as ``chrome-trace`` JSON or a self-contained ``html`` page; None when absent."""
    from scope_otel.ui import model, pages
    from scope_otel.ui.chrome_trace import chrome_trace

    bundle = model.load_trace(store, trace_id)
    if bundle is None:
        return None
    if fmt == "chrome-trace":
        return json.dumps(chrome_trace(bundle), ensure_ascii=False) + "\n"
    return pages.self_contained("trace", pages.trace_page_data(bundle))


def write(text: str, path: str | None) -> int:
    if not path or path == "-":
        sys.stdout.write(text)
        return 0
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        return _fail(f"cannot write {path}: {exc.strerror or exc}")
    print(f"wrote {path} ({len(text.encode('utf-8')):,} bytes)", file=sys.stderr)
    return 0
