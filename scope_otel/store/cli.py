"""``scope-otel query``, ``scope-otel trace`` and ``scope-otel graph``.

::

    scope-otel query "SELECT SpanName, count() FROM otel_traces GROUP BY 1" [--format table|csv|json]
    scope-otel trace [TRACE_ID | --last | --slowest] [--html FILE]
    scope-otel traces [--service S] [--name ROUTE] [--errors] [--min-ms N] [--since T] [--until T] [--text T]
    scope-otel graph [--by service|function] [--format text|dot|mermaid]

All take ``--store PATH_OR_URL`` and ``--database NAME`` (default: the
configuration's ``store`` and ``database``, i.e. ``.scope-otel`` and ``otel``).
Unqualified table names in ``query`` refer to that database.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import sys
from typing import Any, Sequence

from scope_otel.store import QueryResult, Store, TraceFilter, open_store
from scope_otel.store.shape import group_repeats

LEGEND = ("markers: ✗ failing span · ↑ on the error path from a failing span to the root · "
          "×N repeated siblings shown once · N+1? the same statement run again and again under one parent")


def query_main(argv: list[str]) -> int:
    parser = _parser("query", "run SQL against the scope-otel store")
    parser.add_argument("sql", help="one SQL statement")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    args = parser.parse_args(argv)
    with _opened(args) as store:
        if store is None:
            return 1
        try:
            result = store.query(args.sql)
        except Exception as exc:  # the user's SQL or the store: ClickHouse's message, no traceback
            return _fail(_first_line(exc))
        sys.stdout.write(_format(result, args.format))
    return 0


def trace_main(argv: list[str]) -> int:
    parser = _parser("trace", "print a trace as a call tree with arguments, returns and errors")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("trace_id", nargs="?", help="32 hex digits")
    which.add_argument("--last", action="store_true", help="the most recent trace (default)")
    which.add_argument("--slowest", action="store_true", help="the longest trace")
    parser.add_argument("--html", metavar="FILE", help="write the trace as a self-contained HTML page instead")
    args = parser.parse_args(argv)
    with _opened(args) as store:
        if store is None:
            return 1
        try:
            trace_id = args.trace_id or (store.slowest_trace_id() if args.slowest else store.last_trace_id())
            if trace_id is None:
                return _fail(f"{store.target.display} holds no traces yet")
            trace_id = trace_id.lower()
            if args.html:
                from scope_otel.ui.cli import render, write  # the viewer's page, only when asked

                text = render(store, trace_id, "html")
                if text is None:
                    return _fail(f"trace {trace_id} not found in {store.target.display}")
                return write(text, args.html)
            spans = store.call_tree(trace_id)
            if not spans:
                return _fail(f"trace {trace_id} not found in {store.target.display}")
            events = store.events(trace_id)
            errors = store.error_path(trace_id)
            sql = store.sql_texts(trace_id)
        except Exception as exc:  # store or SQL trouble: one line, no traceback
            return _fail(_first_line(exc))
        sys.stdout.write(render_tree(trace_id, spans, events, errors, sql))
    return 0


def traces_main(argv: list[str]) -> int:
    parser = _parser("traces", "list traces, newest first (the viewer's filters)")
    parser.add_argument("--service", help="service of the root or entry span")
    parser.add_argument("--name", help="root name or route contains this (case-insensitive)")
    parser.add_argument("--errors", action="store_true", help="only traces with a failing span")
    parser.add_argument("--min-ms", type=float, help="root or entry span at least this long")
    parser.add_argument("--since", type=_when, help="started at or after (ISO 8601, UTC unless an offset is given)")
    parser.add_argument("--until", type=_when, help="started at or before (ISO 8601)")
    parser.add_argument("--text", help="text in an argument, return value, exception, state change or SQL")
    parser.add_argument("--span", help="holds a span of exactly this name")
    parser.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    args = parser.parse_args(argv)
    where = TraceFilter(service=args.service, name=args.name, errors=args.errors, min_duration_ms=args.min_ms,
                        since=args.since, until=args.until, text=args.text, span=args.span, limit=args.limit)
    with _opened(args) as store:
        if store is None:
            return 1
        try:
            rows = store.traces(where)
        except Exception as exc:
            return _fail(_first_line(exc))
        sys.stdout.write(render_traces(rows))
    return 0


def _when(text: str) -> _dt.datetime:
    try:
        value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date and time") from None
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return value


def render_traces(rows: list[dict]) -> str:
    """One line per trace: start (UTC), id, error mark, spans, duration, root (and route), services."""
    if not rows:
        return "(no trace matches)\n"
    lines = []
    for r in rows:
        root = r["RootName"] or "(no root span)"
        if r["Entry"] and r["Entry"] != root:
            root += f"  {r['Entry']}"
        mark = "✗" if r["Errors"] else " "
        lines.append(f"{r['Start']:%Y-%m-%d %H:%M:%S}  {r['TraceId']}  {mark} {int(r['Spans']):>5} spans  "
                     f"{_ms(r['DurationNs']):>12}  {_short(root, 80)}  [{', '.join(r['Services'])}]")
    lines.append(f"({len(rows)} trace{'s' if len(rows) != 1 else ''}, newest first; ✗ has failing spans; "
                 "`scope-otel trace ID` prints one)")
    return "\n".join(lines) + "\n"


def graph_main(argv: list[str]) -> int:
    parser = _parser("graph", "print the service or function call graph")
    parser.add_argument("--by", choices=("service", "function"), default="service")
    parser.add_argument("--format", choices=("text", "dot", "mermaid"), default="text")
    args = parser.parse_args(argv)
    with _opened(args) as store:
        if store is None:
            return 1
        try:
            if args.by == "service":
                edges = [(e["Parent"], e["Child"], e) for e in store.service_edges()]
            else:
                edges = [(f'{e["ParentService"]}:{e["Parent"]}', f'{e["ChildService"]}:{e["Child"]}', e)
                         for e in store.function_edges()]
            messages = [(f'{m["ProducerService"]}:{m["Producer"]}' if args.by == "function" else m["ProducerService"],
                         f'{m["ConsumerService"]}:{m["Consumer"]}' if args.by == "function" else m["ConsumerService"],
                         m) for m in store.message_edges()]
        except Exception as exc:
            return _fail(_first_line(exc))
        sys.stdout.write(render_graph(edges, messages, args.format))
    return 0


# -- rendering ------------------------------------------------------------------

def render_tree(trace_id: str, spans: list[dict], events: list[dict], errors: list[dict],
                sql: dict[str, str] | None = None) -> str:
    """The call tree as text: one line per span, its captured facts and SQL indented below.

    Siblings repeated three times or more print once as ``name ×N`` with
    their total time (``N+1?`` when they ran the same statement).
    """
    sql = sql or {}
    by_span: dict[str, list[dict]] = {}
    for event in events:
        by_span.setdefault(event["SpanId"], []).append(event)
    failing = {e["SpanId"]: e for e in errors if e["Hops"] == 0}
    on_path = {e["SpanId"] for e in errors}
    ids = {span["SpanId"] for span in spans}
    children: dict[str, list[dict]] = {}
    roots: list[dict] = []
    for span in spans:  # depth-first with siblings in start order: children lists keep that order
        if span["ParentSpanId"] and span["ParentSpanId"] in ids and span["Depth"] > 0:
            children.setdefault(span["ParentSpanId"], []).append(span)
        else:
            roots.append(span)
    lines = [f"trace {trace_id}  ({len(spans)} spans)"]
    grouped = False

    def mark(span_ids: list[str]) -> str:
        if any(i in failing for i in span_ids):
            return "✗ "
        return "↑ " if any(i in on_path for i in span_ids) else ""

    def emit(span: dict) -> None:
        nonlocal grouped
        pad = "  " * int(span["Depth"])
        service = f"[{span['ServiceName']}] " if span["ServiceName"] else ""
        kind = str(span["SpanKind"]).replace("SPAN_KIND_", "").lower()
        lines.append(f"{pad}{mark([span['SpanId']])}{service}{span['SpanName']}  {_ms(span['Duration'])}  {kind}")
        detail = pad + "    "
        if sql.get(span["SpanId"]):
            lines.append(f"{detail}sql: {_short(' '.join(sql[span['SpanId']].split()), 200)}")
        for fact in by_span.get(span["SpanId"], []):
            lines.append(detail + _fact(fact))
        if span["SpanId"] in failing and failing[span["SpanId"]]["StatusMessage"]:
            lines.append(f"{detail}status: {_short(failing[span['SpanId']]['StatusMessage'])}")
        kids = children.get(span["SpanId"], [])
        for row in group_repeats(kids, key=lambda c: (c["ServiceName"], c["SpanName"], sql.get(c["SpanId"], ""))):
            if len(row) == 1:
                emit(row[0])
                continue
            grouped = True
            first = row[0]
            cpad = "  " * int(first["Depth"])
            cservice = f"[{first['ServiceName']}] " if first["ServiceName"] else ""
            total = sum(int(c["Duration"]) for c in row)
            hint = "  N+1?" if sql.get(first["SpanId"]) else ""
            lines.append(f"{cpad}{mark([c['SpanId'] for c in row])}{cservice}{first['SpanName']} ×{len(row)}  "
                         f"{_ms(total)} total{hint}")
            if sql.get(first["SpanId"]):
                lines.append(f"{cpad}    sql: {_short(' '.join(sql[first['SpanId']].split()), 200)}")
            for c in row:  # what a grouped call recorded still shows when it failed
                if c["SpanId"] in on_path:
                    emit(c)

    for root in roots:
        emit(root)
    if errors:
        lines.append("")
        lines.append("error path (failing span → root):")
        current = None
        for hop in errors:
            if hop["ErrorSpanId"] != current:
                current = hop["ErrorSpanId"]
                lines.append(f"  {hop['SpanName']}: {_short(hop['Exception'] or hop['StatusMessage'] or 'error')}")
            else:
                lines.append(f"    ← {hop['ServiceName']}:{hop['SpanName']}")
    if errors or grouped:
        lines.append("")
        lines.append(LEGEND)
    return "\n".join(lines) + "\n"


def _fact(event: dict) -> str:
    kind, name, value = event["Kind"], event["Name"], event["Value"]
    if kind == "arg":
        return f"arg {name} = {_short(value)}"
    if kind == "return":
        return f"return {_short(value)}"
    if kind == "exception":
        return f"raised {name}: {_short(value)}"
    if kind == "state_change":
        return f"set {name} = {_short(value)}"
    if kind in ("send", "recv"):
        return f"{kind} {name} #{_short(value)}"
    return kind


def render_graph(edges: list[tuple[str, str, dict]], messages: list[tuple[str, str, dict]], fmt: str) -> str:
    if fmt == "dot":
        lines = ["digraph scope {", "  rankdir=LR;"]
        for src, dst, e in edges:
            label = f"{e['Calls']} calls, {e['Errors']} err, p95 {_ms(e['P95Ns'])}"
            lines.append(f"  {_dot_id(src)} -> {_dot_id(dst)} [label={_dot_id(label)}];")
        for src, dst, m in messages:
            lines.append(f"  {_dot_id(src)} -> {_dot_id(dst)} [style=dashed, label={_dot_id(str(m['Messages']) + ' msgs')}];")
        lines.append("}")
        return "\n".join(lines) + "\n"
    if fmt == "mermaid":
        ids: dict[str, str] = {}

        def node(name: str) -> str:
            if name not in ids:
                ids[name] = f"n{len(ids)}"
            return f'{ids[name]}["{_mermaid_text(name)}"]'

        lines = ["graph LR"]
        for src, dst, e in edges:
            label = _mermaid_text(f"{e['Calls']} calls, {e['Errors']} err, p95 {_ms(e['P95Ns'])}")
            lines.append(f"  {node(src)} -->|{label}| {node(dst)}")
        for src, dst, m in messages:
            lines.append(f"  {node(src)} -.->|{m['Messages']} msgs| {node(dst)}")
        return "\n".join(lines) + "\n"
    lines = []
    for src, dst, e in edges:
        lines.append(f"{src} -> {dst}  calls={e['Calls']} errors={e['Errors']} "
                     f"p50={_ms(e['P50Ns'])} p95={_ms(e['P95Ns'])} p99={_ms(e['P99Ns'])}")
    for src, dst, m in messages:
        lines.append(f"{src} ~> {dst}  messages={m['Messages']} via={m['Via']}"
                     + (f" channel={m['Channel']}" if m["Channel"] else ""))
    if not lines:
        lines.append("(no edges yet)")
    return "\n".join(lines) + "\n"


def _format(result: QueryResult, fmt: str) -> str:
    if fmt == "json":
        return "".join(json.dumps(dict(zip(result.columns, map(_plain, row))), ensure_ascii=False) + "\n"
                       for row in result.rows)
    if fmt == "csv":
        import io

        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow([_cell(v) for v in row])
        return out.getvalue()
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [min(60, max([len(c)] + [len(r[i]) for r in cells])) for i, c in enumerate(result.columns)]
    line = lambda values: "  ".join(v[:60].ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    out = [line(result.columns), line(["-" * w for w in widths])] + [line(r) for r in cells]
    out.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(out) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    text = "" if value is None else str(value)
    return text.replace("\n", "\\n").replace("\0", "\\0")


def _ms(ns: Any) -> str:
    try:
        return f"{float(ns) / 1e6:.3f} ms"
    except (TypeError, ValueError):
        return "?"


def _short(text: Any, limit: int = 120) -> str:
    text = _cell(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("|", "#124;")


# -- plumbing ------------------------------------------------------------------

def _parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"scope-otel {name}", description=description)
    parser.add_argument("--store", help="path (embedded chDB) or http(s)://host:port (default: config 'store')")
    parser.add_argument("--database", help="ClickHouse database (default: config 'database')")
    parser.add_argument("--wait", type=float, default=15.0,
                        help="seconds to wait for an embedded store held by a running application (default 15)")
    return parser


class _opened:
    """``with _opened(args) as store``: a Store, or None after printing why not."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.store: Store | None = None

    def __enter__(self) -> Store | None:
        try:
            self.store = open_store(self.args.store, self.args.database, wait_s=self.args.wait)
        except Exception as exc:
            _fail(_first_line(exc))
            return None
        return self.store

    def __exit__(self, *exc: Any) -> None:
        if self.store is not None:
            self.store.close()


def _fail(message: Any) -> int:
    print(f"scope-otel: {message}", file=sys.stderr)
    return 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - python -m
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"query": query_main, "trace": trace_main, "traces": traces_main, "graph": graph_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m scope_otel.store.cli {query,trace,graph} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
