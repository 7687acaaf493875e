"""What the viewer and the CLI read from a recorded shop: filters, steps, grouping, exports, access."""
from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.error
import urllib.request

import pytest

from scope_otel.store import TraceFilter
from scope_otel.store.cli import traces_main
from scope_otel.ui.cli import trace_main
from scope_otel.store.shape import group_repeats
from scope_otel.ui import model
from scope_otel.ui.chrome_trace import chrome_trace
from scope_otel.ui.cli import export_main
from scope_otel.ui.server import ViewerServer


def ask(viewer, fn, *args):
    return viewer.server.ask(fn, *args)


def test_trace_filters_select_by_errors_text_service_name_duration_span_and_time(viewer, failing_order):
    traces = lambda **kw: [r["TraceId"] for r in ask(viewer, lambda s: s.traces(TraceFilter(**kw)))]  # noqa: E731
    everything = traces()
    assert failing_order in everything and len(everything) >= 8
    errors = traces(errors=True)
    assert failing_order in errors and len(errors) < len(everything)
    assert failing_order in traces(text="apron: 0 left")            # an exception message
    assert set(traces(text="apron: 0 left")) <= set(errors)
    assert failing_order in traces(text="outofstock")              # an exception type, any case
    assert len(traces(text="WHERE products.id = ?")) >= 3  # SQL text
    assert failing_order in traces(service="shop", name="post /ORDERS")
    assert traces(service="nobody") == []
    assert failing_order in traces(span="Cart.add")
    assert traces(span="Cart.ad") == []                              # exact span names only
    assert traces(min_duration_ms=60_000) == []
    rows = ask(viewer, lambda s: s.traces(TraceFilter(limit=3)))
    assert len(rows) == 3 and [r["Start"] for r in rows] == sorted((r["Start"] for r in rows), reverse=True)
    start = next(r["Start"] for r in ask(viewer, lambda s: s.traces()) if r["TraceId"] == failing_order)
    assert failing_order in traces(since=start - dt.timedelta(seconds=1), until=start + dt.timedelta(seconds=1))
    assert traces(since=start + dt.timedelta(hours=1)) == []


def test_trace_bundle_holds_every_span_with_times_from_the_start_and_its_facts(viewer, failing_order):
    bundle = ask(viewer, model.load_trace, failing_order)
    spans = model.spans(bundle)
    assert len(spans) == 10 and min(s["start"] for s in spans) == 0
    assert bundle["duration_ns"] == max(s["start"] + s["dur"] for s in spans)
    bad_add = [s for s in spans if s["name"] == "Cart.add" and s["status"] == "error"]
    assert len(bad_add) == 1
    assert bad_add[0]["attrs"]["scope.arg.quantity"] == "1"
    exc = bad_add[0]["events"][0]
    assert exc["name"] == "exception" and exc["attrs"]["exception.type"] == "OutOfStock"
    assert 0 <= exc["t"] - bad_add[0]["start"] <= bad_add[0]["dur"] + 1000
    selects = [s for s in spans if s["kind"] == "client" and s["sql"]]
    assert selects and all(s["sql"].startswith("SELECT products.id") for s in selects)
    columns = json.loads(model.trace_json(bundle))["columns"]  # what the page gets: the same spans
    assert columns["n"] == 10 and model.spans({"columns_json": json.dumps(columns)}) == spans


def test_repeated_siblings_group_where_the_first_stood():
    kids = ["a", "sel", "b", "sel", "sel", "c", "c"]
    assert group_repeats(kids, key=lambda k: k) == [["a"], ["sel", "sel", "sel"], ["b"], ["c"], ["c"]]


def test_chrome_trace_events_nest_on_each_thread_and_carry_arguments(viewer, failing_order):
    data = chrome_trace(ask(viewer, model.load_trace, failing_order))
    complete = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert len(complete) == 10
    add = [e for e in complete if e["name"] == "Cart.add"]
    assert {e["args"]["quantity"] for e in add} == {"1"}
    assert any(e["ph"] == "i" and e["name"] == "exception OutOfStock" for e in data["traceEvents"])
    lanes: dict = {}
    for e in sorted(complete, key=lambda e: (e["ts"], -e["dur"])):
        stack = lanes.setdefault((e["pid"], e["tid"]), [])
        while stack and stack[-1] <= e["ts"]:
            stack.pop()
        assert not stack or e["ts"] + e["dur"] <= stack[-1] + 1e-6, f"{e['name']} overlaps its lane"
        stack.append(e["ts"] + e["dur"])


def test_cli_export_html_and_chrome_trace_and_trace_html(viewer, failing_order, shop_store, tmp_path, capsys):
    flags = ["--store", shop_store, "--database", "otel"]
    out = tmp_path / "t.json"
    assert export_main([failing_order, "--format", "chrome-trace", "-o", str(out), *flags]) == 0
    assert json.loads(out.read_text())["otherData"]["trace_id"] == failing_order
    page = tmp_path / "t.html"
    assert trace_main([failing_order, "--html", str(page), *flags]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and "Content-Security-Policy" in text and "OutOfStock" in text
    assert export_main(["0" * 32, *flags]) == 1
    assert "not found" in capsys.readouterr().err


def test_cli_traces_lists_with_filters_and_trace_prints_sql_and_a_legend(viewer, failing_order, shop_store, capsys):
    flags = ["--store", shop_store, "--database", "otel"]
    assert traces_main(["--errors", "--text", "apron", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if failing_order in line)
    assert "✗" in row and "POST /orders" in row and all("✗" in line for line in lines[:-1])
    assert lines[-1].startswith(f"({len(lines) - 1} trace")
    assert traces_main(["--service", "nobody", *flags]) == 0
    assert capsys.readouterr().out == "(no trace matches)\n"
    assert trace_main([failing_order, *flags]) == 0
    out = capsys.readouterr().out
    assert "sql: SELECT products.id, products.name" in out
    assert out.rstrip().splitlines()[-1].startswith("markers: ✗ failing span · ↑ on the error path")


def test_cli_trace_groups_repeated_siblings(viewer, shop_store, capsys):
    listing = [r for r in ask(viewer, lambda s: s.traces(TraceFilter(name="GET /products")))]
    assert listing
    assert trace_main([listing[0]["TraceId"], "--store", shop_store, "--database", "otel"]) == 0
    out = capsys.readouterr().out
    assert "[shop] category_path ×3" in out and out.count("category_path") == 1


def test_token_is_required_then_kept_in_a_cookie(viewer):
    server = ViewerServer(viewer.store, port=0, token="s3cret")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(base + "/api/services", timeout=30)
        assert denied.value.code == 401
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/api/services?token=wrong", timeout=30)
        with urllib.request.urlopen(base + "/?token=s3cret", timeout=30) as resp:
            cookie = resp.headers["Set-Cookie"].split(";")[0]
            assert "HttpOnly" in resp.headers["Set-Cookie"]
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        req = urllib.request.Request(base + "/api/services", headers={"Cookie": cookie})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert "shop" in json.loads(resp.read())
    finally:
        server.shutdown()
        server.server_close()


def test_bad_filter_and_unknown_trace_answer_with_one_clear_message(viewer):
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(viewer.base + "/api/traces?min_ms=fast", timeout=30)
    assert bad.value.code == 400 and json.loads(bad.value.read()) == {"error": "min_ms='fast' is not a number"}
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(viewer.base + "/api/trace/" + "0" * 32, timeout=30)
    assert missing.value.code == 404


def test_graph_window_counts_only_recent_calls(viewer):
    future = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=1)
    past = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(hours=1)
    everything = ask(viewer, lambda s: s.function_edges())
    assert ask(viewer, lambda s: s.function_edges(since=future)) == []
    recent = ask(viewer, lambda s: s.function_edges(since=past))
    key = lambda e: (e["Parent"], e["Child"], e["Calls"])  # noqa: E731
    assert sorted(map(key, recent)) == sorted(map(key, everything)) and recent
    graph = ask(viewer, model.load_graph, "function", 3600.0)
    assert any(e["src"] == "shop:place_order" and e["dst"] == "shop:Cart.add" for e in graph["edges"])


def test_cli_graph_of_one_service_points_to_the_function_graph(viewer, shop_store, capsys):
    from scope_otel.store.cli import graph_main

    assert graph_main(["--store", shop_store, "--database", "otel"]) == 0
    out = capsys.readouterr().out
    assert "(no calls between services: with one service, `scope-otel graph --by function`" in out
    assert graph_main(["--by", "function", "--store", shop_store, "--database", "otel"]) == 0
    assert "shop:place_order -> shop:Cart.add" in capsys.readouterr().out


def test_graph_edges_counted_as_spans_arrived_equal_the_join_over_the_recorded_spans(viewer):
    """The shop's spans reach the store as the writer drains them (children before their parents, in
    several INSERTs): every call is counted once, with the join's counts, errors and quantiles."""
    from tests.store.test_edges import from_spans, function_edges

    aggregated = ask(viewer, function_edges)
    assert aggregated and aggregated == ask(viewer, from_spans)
    plan = "\n".join(r[0] for r in ask(viewer, lambda s: s.query(
        "EXPLAIN SELECT * FROM otel.scope_function_edges_between(since = now64(9) - INTERVAL 1 HOUR, "
        "until = '2262-01-01 00:00:00')").rows))
    assert "scope_edges" in plan and "scope_spans_by_trace" not in plan


def test_trace_page_is_a_shell_that_preloads_its_data_and_an_unknown_trace_is_404(viewer, failing_order):
    with urllib.request.urlopen(f"{viewer.base}/trace/{failing_order}", timeout=30) as resp:
        page = resp.read().decode("utf-8")
    assert f'<link rel="preload" href="/api/trace/{failing_order}" as="fetch" crossorigin>' in page
    assert "OutOfStock" not in page and len(page) < 2000  # the spans come as JSON, not inside the HTML
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{viewer.base}/trace/{'0' * 32}", timeout=30)
    assert missing.value.code == 404


def test_viewer_keeps_the_engine_open_between_requests_and_lets_go_when_another_process_asks(viewer, shop_store):
    """Opening an embedded store's engine costs ~0.5 s (more under load): a page opened a few
    seconds after the last one must not pay it again, yet an application or a query still gets
    the store."""
    import time

    from scope_otel.store.ownership import owner_is_running
    from tests.support.procs import clean_env, run, tool

    urllib.request.urlopen(f"{viewer.base}/api/services", timeout=60).read()
    time.sleep(3.5)  # past a store's default idle close (2 s)
    assert owner_is_running(shop_store), "the viewer closed the engine between requests"
    result = run([tool("scope-otel"), "query", "SELECT count() FROM otel_traces", "--store", shop_store,
                  "--database", "otel", "--format", "csv", "--wait", "30"], clean_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip().splitlines()[-1]) > 0
    assert json.loads(urllib.request.urlopen(f"{viewer.base}/api/services", timeout=60).read()) == ["shop"]


def test_trace_page_starts_reading_its_data_when_served_and_the_data_request_uses_that_read(viewer, failing_order):
    """The read of a trace overlaps the page's own loading: it starts when the shell is served,
    the page's data request takes that result, and a later request reads the store again."""
    import time

    calls: list[str] = []
    ask_store = viewer.server.ask
    viewer.server.ask = lambda fn, *args: (calls.append(fn.__name__), ask_store(fn, *args))[1]
    try:
        urllib.request.urlopen(f"{viewer.base}/trace/{failing_order}", timeout=60).read()
        deadline = time.monotonic() + 30
        while "load_trace" not in calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls == ["has_trace", "load_trace"]  # started before the page asked for it
        first = json.loads(urllib.request.urlopen(f"{viewer.base}/api/trace/{failing_order}", timeout=60).read())
        assert calls == ["has_trace", "load_trace"] and first["columns"]["n"] == 10
        again = json.loads(urllib.request.urlopen(f"{viewer.base}/api/trace/{failing_order}", timeout=60).read())
        assert calls == ["has_trace", "load_trace", "load_trace"] and again == first
    finally:
        viewer.server.ask = ask_store
