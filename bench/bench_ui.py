"""The viewer's page timings in headless Chromium, and its list and graph queries on a big store.

    .venv/bin/python bench/bench_ui.py [--spans 5000000] [--trace-spans 10000] [--runs 5]

1. A 10,000-span trace (one root, 100 calls each with ~99 children: repeated
   SELECTs, Cart.add and line_price calls with arguments) is generated into an
   embedded store with ``INSERT ... SELECT FROM numbers()``; its page is opened
   in headless Chromium (``/usr/bin/chromium``) and timed from navigation to the
   page reporting ready (waterfall drawn, handlers attached), then a click on a
   span and a jump to the last time-travel step.  Peer, same run: the store's
   own call-tree view for that trace (what ``scope-otel trace`` reads).
   Target: interactive within 1 s.
2. A store of ``--spans`` spans (10 per trace, 5 services, 1 % errors, one
   scope_events row per 5 spans, spread over 24 h, written in INSERTs of
   500,000 spans as a store writer's drains arrive) gets the list's and the
   graph's Jaeger-like queries through the viewer's HTTP API, plus the list and
   graph pages in Chromium.  Peers, same run: for the list, ``SELECT
   uniq(TraceId) FROM otel_traces``, one pass over the trace-id column; for the
   graph, the parent/child join over the spans that the edge views ran before
   ``ch_007_edges_and_search.sql`` (the graph's "before"), whose total of calls
   is also printed beside the aggregated one.  Target: each answers within 300 ms.

Medians of ``--runs`` runs after one warm-up.  Prints a table; nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scope_otel.store import open_store  # noqa: E402
from scope_otel.ui.server import ViewerServer  # noqa: E402

CHROMIUM = os.environ.get("SCOPE_OTEL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
BIG_TRACE = "b1" * 16

COLUMNS = ("Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, ResourceAttributes, "
           "SpanAttributes, Duration, StatusCode, StatusMessage")


#: The graph as the views computed it before ch_007_edges_and_search.sql (every parent and child span
#: joined at query time), measured as the peer of the aggregated edges in the same run.
JOIN_SERVICE_EDGES = """SELECT
    p.ServiceName AS Parent,
    c.ServiceName AS Child,
    count() AS Calls,
    countIf(c.StatusCode IN ('STATUS_CODE_ERROR', 'Error')) AS Errors,
    quantiles(0.5, 0.95, 0.99)(c.Duration) AS Q,
    Q[1] AS P50Ns,
    Q[2] AS P95Ns,
    Q[3] AS P99Ns
FROM (
    SELECT ParentKey, ServiceName, StatusCode, Duration
    FROM otel.scope_spans_by_trace
    WHERE ParentKey != 0
      AND SpanKind IN ('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER', 'Server', 'Consumer')
      AND Timestamp >= {since:DateTime64(9)} AND Timestamp <= {until:DateTime64(9)}
) AS c
INNER JOIN (
    SELECT SpanKey AS Key, any(ServiceName) AS ServiceName
    FROM otel.scope_spans_by_trace
    WHERE SpanKind IN ('SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER', 'Client', 'Producer')
      AND Timestamp >= {since:DateTime64(9)} - INTERVAL 1 HOUR AND Timestamp <= {until:DateTime64(9)}
    GROUP BY Key
) AS p ON c.ParentKey = p.Key
WHERE p.ServiceName != c.ServiceName
GROUP BY Parent, Child"""
JOIN_FUNCTION_EDGES = """SELECT
    p.ServiceName AS ParentService,
    p.SpanName AS Parent,
    c.ServiceName AS ChildService,
    c.SpanName AS Child,
    count() AS Calls,
    countIf(c.StatusCode IN ('STATUS_CODE_ERROR', 'Error')) AS Errors,
    quantiles(0.5, 0.95, 0.99)(c.Duration) AS Q,
    Q[1] AS P50Ns,
    Q[2] AS P95Ns,
    Q[3] AS P99Ns
FROM (
    SELECT ParentKey, ServiceName, SpanName, StatusCode, Duration
    FROM otel.scope_spans_by_trace
    WHERE ParentKey != 0 AND Timestamp >= {since:DateTime64(9)} AND Timestamp <= {until:DateTime64(9)}
) AS c
INNER JOIN (
    SELECT SpanKey AS Key, any(ServiceName) AS ServiceName, any(SpanName) AS SpanName
    FROM otel.scope_spans_by_trace
    WHERE Timestamp >= {since:DateTime64(9)} - INTERVAL 1 HOUR AND Timestamp <= {until:DateTime64(9)}
    GROUP BY Key
) AS p ON c.ParentKey = p.Key
GROUP BY ParentService, Parent, ChildService, Child"""


#: The list's first step for a text as it ran before ch_007 (a case-insensitive scan of every
#: captured value and of every client span's attribute map, inside the candidate-span query):
#: the "before" of the text rows, without the second step (summarising the traces found).
OLD_TEXT_CANDIDATES = """SELECT TraceId FROM otel.otel_traces
WHERE (empty(ParentSpanId) OR SpanKind IN ('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER', 'Server', 'Consumer'))
  AND (TraceId IN (SELECT TraceId FROM otel.scope_events
                   WHERE positionCaseInsensitiveUTF8(Value, {text:String}) > 0
                      OR positionCaseInsensitiveUTF8(Name, {text:String}) > 0)
       OR TraceId IN (SELECT TraceId FROM otel.otel_traces WHERE SpanKind IN ('SPAN_KIND_CLIENT', 'Client')
                      AND (positionCaseInsensitiveUTF8(SpanAttributes['db.query.text'], {text:String}) > 0
                           OR positionCaseInsensitiveUTF8(SpanAttributes['db.statement'], {text:String}) > 0)))
ORDER BY Timestamp DESC LIMIT 200 SETTINGS optimize_functions_to_subcolumns = 1"""


def make_big_trace(store, n: int) -> None:
    store.query(f"""
        INSERT INTO otel_traces ({COLUMNS})
        SELECT toDateTime64(now() - 60, 9) + toIntervalNanosecond(number * 1000) AS Timestamp,
               '{BIG_TRACE}', leftPad(lower(hex(number + 1)), 16, '0'),
               multiIf(number = 0, '', number <= 100, leftPad('1', 16, '0'),
                       leftPad(lower(hex(((number - 1) % 100) + 2)), 16, '0')),
               multiIf(number = 0, 'POST /orders', number <= 100, 'place_order',
                       number % 3 = 0, 'SELECT shop.db', number % 3 = 1, 'Cart.add', 'line_price'),
               multiIf(number = 0, 'SPAN_KIND_SERVER', number > 100 AND number % 3 = 0, 'SPAN_KIND_CLIENT',
                       'SPAN_KIND_INTERNAL'),
               'shop', map('service.instance.id', 'bench'),
               multiIf(number > 100 AND number % 3 = 0,
                       map('db.query.text', 'SELECT products.id, products.stock FROM products WHERE products.id = ?'),
                       map('scope.arg.product', concat('<shop.db.Product object at 0x', hex(number), '>'),
                           'scope.arg.quantity', toString(number % 7), 'scope.return', toString(number))),
               if(number = 0, {n} * 1000 + 5000, 500),
               if(number = {n} - 1, 'STATUS_CODE_ERROR', 'STATUS_CODE_UNSET'), ''
        FROM numbers({n})""")


def make_big_store(store, spans: int, per_insert: int = 500_000) -> None:
    """``spans`` spans in INSERTs of ``per_insert`` (whole traces each), as a store writer's drains arrive."""
    traces = spans // 10
    step_ns = int(86_400e9 / traces)
    for first in range(0, spans, per_insert):
        store.query(f"""
        INSERT INTO otel_traces ({COLUMNS})
        SELECT toDateTime64(now() - 86460, 9) + toIntervalNanosecond(intDiv(number, 10) * {step_ns} + (number % 10) * 100000),
               lower(hex(MD5(toString(intDiv(number, 10))))),
               leftPad(lower(hex(number % 10 + 1)), 16, '0'),
               if(number % 10 = 0, '', leftPad(lower(hex(intDiv(number % 10 - 1, 3) + 1)), 16, '0')),
               if(number % 10 = 0, ['GET /products', 'POST /orders', 'GET /orders/<id>'][intDiv(number, 10) % 3 + 1],
                  ['', 'POST /pay', 'place_order', 'Cart.add', 'POST /pay', 'SELECT shop.db', 'line_price',
                   'category_path', 'publish', 'charge'][number % 10 + 1]),
               multiIf(number % 10 = 0, 'SPAN_KIND_SERVER', number % 10 = 1, 'SPAN_KIND_CLIENT',
                       number % 10 = 4, 'SPAN_KIND_SERVER', number % 10 = 5, 'SPAN_KIND_CLIENT', 'SPAN_KIND_INTERNAL'),
               if(number % 10 = 4, concat('pay-', toString(intDiv(number, 10) % 4)), 'shop'),
               map('service.instance.id', 'bench'),
               map('scope.arg.quantity', toString(number % 7),
                   'db.query.text', if(number % 10 = 5, 'SELECT * FROM products WHERE id = ?', '')),
               (10 - number % 10) * 100000 + cityHash64(number) % 50000,
               if(cityHash64(number) % 100 = 0, 'STATUS_CODE_ERROR', 'STATUS_CODE_UNSET'), ''
        FROM numbers({first}, {min(per_insert, spans - first)})""")
    store.query(f"""
        INSERT INTO scope_events (Timestamp, TraceId, SpanId, ParentSpanId, ServiceName, Function, Kind, Name, Value, Seq)
        SELECT toDateTime64(now() - 86460, 9) + toIntervalNanosecond(intDiv(number * 5, 10) * {step_ns}),
               lower(hex(MD5(toString(intDiv(number * 5, 10))))), leftPad('4', 16, '0'), '', 'shop', 'shop.orders:Cart.add',
               'arg', 'quantity', concat('value-', toString(number)), 0
        FROM numbers({spans // 5})""")


def timed_get(url: str, runs: int) -> float:
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as resp:
            resp.read()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def timed_store(store, sql: str, runs: int, params: dict | None = None) -> float:
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        store.query(sql, params)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def page_ready(browser, url: str, runs: int, after=None) -> tuple[float, float | None]:
    """Median ms from navigation to data-ready (by the page's clock), and of ``after(page)`` if given."""
    ready, extra = [], []
    for i in range(runs + 1):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url, wait_until="commit")
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        ms = float(page.evaluate("() => Number(document.body.dataset.readyMs)"))
        took = None
        if after is not None:
            t0 = time.perf_counter()
            after(page)
            took = (time.perf_counter() - t0) * 1000
        context.close()
        if errors:
            raise RuntimeError(f"{url}: {errors}")
        if i:
            ready.append(ms)
            if took is not None:
                extra.append(took)
    return statistics.median(ready), (statistics.median(extra) if extra else None)


_HEADER = f"{'what':62s} {'scope-otel ui':>14s}  {'peer (same run)':>28s}  {'ratio':>6s}  {'target':>8s}  met"


def _line(label: str, ms: float, peer_name: str, peer_ms: float, target: float) -> str:
    peer_txt = f"{peer_name} {peer_ms:.0f} ms" if peer_name else ""
    ratio = f"{ms / peer_ms:.2f}×" if peer_name else ""
    met = ("yes" if ms <= target else "NO") if target else ""
    return (f"{label:62s} {ms:>11.0f} ms  {peer_txt:>28s}  {ratio:>6s}  "
            f"{(str(target) + ' ms') if target else '':>8s}  {met}")


class _Rows(list):
    """The table's rows, each also printed as it is measured (a long run that fails keeps what it had)."""

    def append(self, row: tuple[str, float, str, float, float]) -> None:
        if not self:
            print(_HEADER, flush=True)
        print(_line(*row), flush=True)
        super().append(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=5_000_000)
    parser.add_argument("--trace-spans", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    rows = _Rows()
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        store = open_store(f"chdb://{tmp}/store", "otel", wait_s=60)
        t0 = time.perf_counter()
        make_big_trace(store, args.trace_spans)
        print(f"generated a {args.trace_spans:,}-span trace in {time.perf_counter() - t0:.1f} s", flush=True)
        server = ViewerServer(store, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)

            def interact(page):
                page.locator(".wf-row.group").first.click()  # the 100 place_order calls, grouped: expand
                page.locator(".wf-row:not(.group)").nth(2).click()
                page.wait_for_selector("#detail-name")
                page.keyboard.press("End")
                page.wait_for_selector("#tt-stack li")

            peer = timed_store(store, f"SELECT * FROM otel.scope_call_tree(trace_id = '{BIG_TRACE}') ORDER BY Path",
                               args.runs)
            api = timed_get(f"{base}/api/trace/{BIG_TRACE}", args.runs)
            ready, click = page_ready(browser, f"{base}/trace/{BIG_TRACE}", args.runs, interact)
            rows.append((f"trace page, {args.trace_spans:,} spans: navigation → interactive", ready,
                         "call-tree view query", peer, 1000))
            rows.append(("  of which the server's data (/api/trace)", api, "", peer, 0))
            rows.append(("  expand a group, select a span, jump to the last step", click or 0, "", peer, 0))

            t0 = time.perf_counter()
            make_big_store(store, args.spans)
            print(f"generated {args.spans:,} spans in {time.perf_counter() - t0:.1f} s", flush=True)
            scan = timed_store(store, "SELECT uniq(TraceId) FROM otel.otel_traces", args.runs)
            shapes = [
                ("list: newest 50", "/api/traces"),
                ("list: errors only", "/api/traces?errors=1"),
                ("list: service + route + min duration", "/api/traces?service=shop&name=POST%20/orders&min_ms=1"),
                ("list: last hour", "/api/traces?since=" + time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                         time.gmtime(time.time() - 3600))),
                ("list: text in values", "/api/traces?text=value-12345"),
                ("list: text in SQL of every 10th span", "/api/traces?text=products%20where"),
                ("list: calls Cart.add", "/api/traces?span=Cart.add"),
                ("graph: services, last hour (the page's default)", "/api/graph?by=service&window=3600"),
                ("graph: functions, last hour", "/api/graph?by=function&window=3600"),
                ("graph: services, all time", "/api/graph?by=service&window=all"),
                ("graph: functions, all time", "/api/graph?by=function&window=all"),
            ]
            hour_ago = time.time_ns() - 3600 * 10**9
            joins = {"graph: services": JOIN_SERVICE_EDGES, "graph: functions": JOIN_FUNCTION_EDGES}
            for label, path in shapes:
                join = next((sql for prefix, sql in joins.items() if label.startswith(prefix)), None)
                if "text=" in path:
                    text = urllib.parse.unquote(path.split("text=")[1])
                    before = timed_store(store, OLD_TEXT_CANDIDATES, args.runs, {"text": text})
                    rows.append((label, timed_get(base + path, args.runs), "its 1st step before", before, 300))
                    continue
                if join is None:
                    rows.append((label, timed_get(base + path, args.runs), "uniq(TraceId) scan", scan, 300))
                    continue
                since = hour_ago if "last hour" in label else 3600 * 10**9  # all time (as the old views spelled it)
                before = timed_store(store, join.replace("{since:DateTime64(9)}", f"fromUnixTimestamp64Nano({since})")
                                     .replace("{until:DateTime64(9)}", "toDateTime64('2262-01-01 00:00:00', 9)"),
                                     args.runs)
                rows.append((label, timed_get(base + path, args.runs), "join over spans (before)", before, 300))
            exact = store.query("SELECT sum(Calls) FROM (" + JOIN_FUNCTION_EDGES.replace(
                "{since:DateTime64(9)}", "fromUnixTimestamp64Nano(3600000000000)").replace(
                "{until:DateTime64(9)}", "toDateTime64('2262-01-01 00:00:00', 9)") + ")").rows[0][0]
            counted = store.query("SELECT sum(Calls) FROM otel.scope_function_edges").rows[0][0]
            print(f"calls counted as spans arrived: {counted:,}; joined over the spans now: {exact:,}", flush=True)
            list_page, _ = page_ready(browser, base + "/", max(1, args.runs // 2),
                                      lambda page: page.wait_for_selector("#traces tr.row"))
            graph_page, _ = page_ready(browser, base + "/graph", max(1, args.runs // 2))
            rows.append(("list page in Chromium (shell; rows follow)", list_page, "", scan, 0))
            rows.append(("graph page in Chromium (drawn)", graph_page, "", scan, 300))
            browser.close()
        server.shutdown()
        server.server_close()
        store.close()
    print()
    print(_HEADER)
    for row in rows:
        print(_line(*row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
