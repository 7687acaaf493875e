"""Recorded values are data, never markup: a hostile trace renders as text and runs nothing.

The corpus goes straight into the store with SQL (invalid UTF-8 cannot pass
through the SDK): span and service names, arguments, return value, SQL,
status message, exception type, message and traceback, state changes, event
and link attributes.  Every page that shows them is opened in Chromium, every
span selected and every time-travel step visited; a script that ran would set
``window.__xss`` or open a dialog, and one blocked by the page's CSP would log
a console error: all three fail the test.
"""
from __future__ import annotations

import urllib.request

import pytest
from playwright.sync_api import expect

HOSTILE_TRACE = "feed" * 8
SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=1;alert(1)">'
QUOTES = "\"'><svg onload=window.__xss=1>`${1}`"
CLOSE = "</script><script>window.__xss=1</script><!--"
NUL = "before\x00after"
BIG = "A" * 65_536 + SCRIPT


@pytest.fixture(scope="module")
def hostile(viewer):
    """Insert the hostile trace into the viewer's store (once)."""
    base = "toDateTime64(now64(9) - 5, 9)"
    bad_utf8 = "unhex('ff3cfe3e80c0')"  # invalid UTF-8 around '<' and '>'
    spans = [
        # span id, parent, name, kind, status, offset ns, attributes (SQL map expression), events, links
        ("0000000000000001", "", "{script:String}", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", 0,
         "map('http.route', {img:String}, 'scope.hlc', '')", "[]", "[]"),
        ("0000000000000002", "0000000000000001", "{img:String}", "SPAN_KIND_INTERNAL", "STATUS_CODE_ERROR", 1000,
         f"map('scope.kind', 'function', 'scope.arg.' || {{quotes:String}}, {{close:String}}, 'scope.arg.big', {{big:String}}, "
         f"'scope.arg.nul', {{nul:String}}, 'scope.arg.bytes', {bad_utf8}, 'scope.return', {{script:String}}, "
         f"'__proto__', {{img:String}}, 'constructor', {{quotes:String}})",
         f"[({base}, 'scope.state_change', map('scope.target', {{img:String}}, 'scope.value', {{close:String}})),"
         f" ({base}, 'exception', map('exception.type', {{script:String}}, 'exception.message', {{img:String}}, "
         f"'exception.stacktrace', 'Traceback (most recent call last):\\n  File \"' || {{close:String}} || '\", line 1, in ' || {{img:String}} || '\\nX: y\\n')),"
         f" ({base}, {{quotes:String}}, map({{img:String}}, {bad_utf8}))]",
         "[('javascript:window.__xss=1', {quotes:String}, '', map('messaging.destination.name', {script:String}))]"),
        ("0000000000000003", "0000000000000002", "'SELECT ' || {quotes:String}", "SPAN_KIND_CLIENT", "STATUS_CODE_UNSET", 2000,
         "map('db.query.text', 'SELECT ' || {close:String} || ' FROM t WHERE x = ' || {nul:String})", "[]", "[]"),
    ]
    params = {"script": SCRIPT, "img": IMG, "quotes": QUOTES, "close": CLOSE, "nul": NUL, "big": BIG}
    for span_id, parent, name, kind, status, offset, attrs, events, links in spans:
        sql = f"""INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName,
                      ResourceAttributes, SpanAttributes, Duration, StatusCode, StatusMessage,
                      `Events.Timestamp`, `Events.Name`, `Events.Attributes`,
                      `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`)
                  SELECT {base} + toIntervalNanosecond({offset}), '{HOSTILE_TRACE}', '{span_id}', '{parent}', {name},
                      '{kind}', {{quotes:String}} || {bad_utf8}, map('service.name', {{img:String}}), {attrs},
                      {100000 - offset}, '{status}', {{close:String}},
                      arrayMap(e -> e.1, {events}), arrayMap(e -> e.2, {events}), arrayMap(e -> e.3, {events}),
                      arrayMap(l -> l.1, {links}), arrayMap(l -> l.2, {links}), arrayMap(l -> l.3, {links}),
                      arrayMap(l -> l.4, {links})"""
        viewer.server.ask(lambda store: store.query(sql, params))
    return HOSTILE_TRACE


def assert_nothing_ran(page) -> None:
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("img, svg:not(#graph-svg), iframe, object, embed").count() == 0 or \
        page.locator("img").count() == 0


def test_hostile_trace_in_the_list_renders_as_text(page, viewer, hostile):
    page.goto(viewer.base + "/?errors=1")
    row = page.locator(f"#traces tr[data-trace-id='{hostile}']")
    expect(row).to_have_count(1)
    expect(row.locator("td.root a")).to_have_text(SCRIPT)
    expect(row.locator("td.services .chip")).to_have_text(QUOTES + "\ufffd<\ufffd>\ufffd\ufffd")
    assert_nothing_ran(page)


def test_hostile_trace_page_every_span_and_step_renders_as_text(page, viewer, hostile):
    page.goto(f"{viewer.base}/trace/{hostile}")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#trace-root")).to_have_text(SCRIPT)
    rows = page.locator(".wf-row")
    expect(rows).to_have_count(3)
    for i in range(3):
        rows.nth(i).click()
        assert_nothing_ran(page)
    rows.nth(1).click()
    detail = page.locator("#detail")
    expect(page.locator("#detail-name")).to_contain_text(IMG)
    expect(page.locator("#detail-args")).to_contain_text(CLOSE)
    expect(page.locator("#detail-args")).to_contain_text(QUOTES)
    expect(page.locator("#detail-args")).to_contain_text("before\x00after")
    expect(page.locator("#detail-args")).to_contain_text("\ufffd")  # invalid UTF-8, replaced and shown
    expect(page.locator("#detail-return pre")).to_have_text(SCRIPT)
    attributes = page.locator("#detail details.attrs")  # keys that name JavaScript's own properties
    expect(attributes.locator("th", has_text="__proto__")).to_have_count(1)
    expect(attributes.locator("tr", has_text="constructor")).to_contain_text(QUOTES)
    expect(attributes.locator("tr", has_text="__proto__")).to_contain_text(IMG)
    expect(page.locator("#detail-exception")).to_contain_text(IMG)
    big = page.locator("button.more")
    expect(big).to_have_text("show all 65,567 characters")
    big.click()
    expect(detail).to_contain_text("A" * 1000 + "A")
    assert detail.evaluate("d => d.textContent.includes('AAAA' + '<script>window.__xss=1</script>')")
    link = page.locator("#detail-links a").first  # a link to another trace stays a path on this server
    assert link.get_attribute("href").startswith("/trace/javascript%3Awindow.__xss%3D1#span=")
    expect(link).to_contain_text(SCRIPT)
    page.keyboard.press("Home")
    for _ in range(40):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("End")
    rows.nth(2).click()
    expect(page.locator("#detail")).to_contain_text("SELECT " + CLOSE)
    assert_nothing_ran(page)


def test_hostile_trace_in_the_graph_and_the_saved_page_runs_nothing(page, viewer, hostile, browser, tmp_path):
    page.goto(viewer.base + "/graph?by=function")
    page.wait_for_selector("body[data-ready='1']")
    nodes = page.locator("#graph-svg g.node").evaluate_all("gs => gs.map(g => g.dataset.node)")
    assert any(n.startswith(QUOTES) and n.endswith(":" + IMG) for n in nodes), nodes
    assert_nothing_ran(page)
    with urllib.request.urlopen(f"{viewer.base}/trace/{hostile}.html", timeout=30) as resp:
        saved = resp.read().decode("utf-8")
    assert SCRIPT not in saved and "<img" not in saved  # data is escaped JSON inside the page
    path = tmp_path / "hostile.html"
    path.write_text(saved, encoding="utf-8")
    context = browser.new_context(offline=True)
    offline = context.new_page()
    problems: list[str] = []
    offline.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    offline.on("pageerror", lambda e: problems.append(str(e)))
    offline.on("dialog", lambda d: (problems.append("dialog " + d.message), d.dismiss()))
    offline.goto(path.as_uri())
    offline.wait_for_selector("body[data-ready='1']")
    expect(offline.locator("#trace-root")).to_have_text(SCRIPT)
    offline.locator(".wf-row").nth(1).click()
    offline.keyboard.press("End")
    assert offline.evaluate("() => window.__xss") is None
    context.close()
    assert not problems, problems
