"""The viewer in Chromium over the recorded example shop: list, trace, time travel, graph, saved page."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.ui.conftest import record_shop


def open_trace(page, viewer, trace_id: str) -> None:
    page.goto(f"{viewer.base}/trace/{trace_id}")
    page.wait_for_selector("body[data-ready='1']")


def test_list_filters_to_errors_and_opens_the_failing_order(page, viewer, failing_order):
    page.goto(viewer.base + "/")
    rows = page.locator("#traces tr.row")
    expect(rows.first).to_be_visible()
    everything = rows.count()
    page.check("#f-errors")
    expect(page).to_have_url(re.compile(r"errors=1"))
    expect(page.locator("#traces tr.row:not(.has-error)")).to_have_count(0)
    assert 0 < rows.count() < everything
    order = page.locator(f"#traces tr[data-trace-id='{failing_order}']")
    expect(order).to_contain_text("POST /orders")
    expect(order.locator("td.mark")).to_have_text("✗")
    order.locator("td.root a").click()
    page.wait_for_selector("body[data-ready='1']")
    assert page.url.endswith(f"/trace/{failing_order}")


def test_list_filters_by_text_in_values_and_sql(page, viewer, failing_order):
    page.goto(viewer.base + "/?text=apron")
    page.wait_for_selector("#traces tr.row")
    ids = page.locator("#traces tr.row").evaluate_all("rows => rows.map(r => r.dataset.traceId)")
    assert failing_order in ids
    page.fill("#f-text", "FROM products")
    page.press("#f-text", "Enter")
    expect(page).to_have_url(re.compile(r"text=FROM\+products"))
    expect(page.locator("#list-status")).to_contain_text("updated")
    assert page.locator("#traces tr.row").count() >= 3


def test_failing_order_shows_cart_add_its_arguments_and_out_of_stock_on_the_error_path(page, viewer, failing_order):
    open_trace(page, viewer, failing_order)
    failing = page.locator(".wf-row.failing", has_text="Cart.add")
    expect(failing).to_have_count(1)
    # the error path: every ancestor of the failing Cart.add is marked, up to the root
    for name in ("place_order", "create_app.<locals>.create_order", "POST /orders"):
        row = page.locator(".wf-row", has=page.locator(".name", has_text=re.compile("^ " + re.escape(name) + "$")))
        expect(row).to_have_class(re.compile(r"\b(failing|err-path)\b"))
    expect(page.locator(".wf-row").first).to_have_class(re.compile(r"\b(failing|err-path)\b"))
    expect(page.locator(".wf-row.err-path").first).to_be_visible()
    failing.click()
    expect(page.locator("#detail-name")).to_contain_text("Cart.add")
    args = page.locator("#detail-args")
    expect(args).to_contain_text("product")
    expect(args).to_contain_text("quantity")
    expect(args).to_contain_text("<shop.db.Product at")
    exc = page.locator("#detail-exception")
    expect(exc).to_contain_text("OutOfStock")
    expect(exc).to_contain_text("apron: 0 left, 1 wanted")
    expect(exc.locator("ol.frames li").last).to_contain_text("add")  # frame summary, innermost last
    # SQL text is shown in the waterfall
    expect(page.locator(".wf-row .sql").first).to_contain_text("SELECT products.id")


def test_time_travel_steps_with_the_keyboard_and_shows_the_stack(page, viewer, failing_order):
    open_trace(page, viewer, failing_order)
    what = page.locator("#tt-what")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tt-step")).to_contain_text("step 1 /")
    expect(what).to_have_text(re.compile(r"^→ call POST"))
    for _ in range(200):  # step until Cart.add raises
        if what.text_content().startswith("✗ Cart.add raised OutOfStock"):
            break
        page.keyboard.press("ArrowRight")
    expect(what).to_have_text("✗ Cart.add raised OutOfStock: apron: 0 left, 1 wanted")
    stack = page.locator("#tt-stack li").evaluate_all("items => items.map(i => i.dataset.spanName)")
    assert stack == ["Cart.add", "place_order", "create_app.<locals>.create_order", "POST /orders", "POST"]
    known = page.locator("#tt-known")
    expect(known).to_contain_text("self.total_cents")
    expect(known).to_contain_text("2999")            # set by the first Cart.add
    expect(known).to_contain_text("line_price")       # a call that finished earlier, with its return value
    expect(page.locator(".wf-row.now")).to_contain_text("Cart.add")
    step = page.locator("#tt-step").text_content()
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#tt-step")).not_to_have_text(step)
    expect(what).not_to_have_text(re.compile("raised"))
    page.keyboard.press("End")
    expect(what).to_have_text(re.compile(r"^← leave POST"))
    expect(page.locator("#tt-stack li")).to_have_text(["(nothing running)"])


def test_every_time_travel_step_keeps_calls_nested(page, viewer, failing_order):
    """Walk all steps: an entry pushes its call on the stack, an exit pops it, facts happen on top."""
    open_trace(page, viewer, failing_order)
    page.keyboard.press("ArrowRight")
    total = int(re.search(r"/ (\d+)", page.locator("#tt-step").text_content()).group(1))
    expected: list[str] = []
    for i in range(total):
        what = page.locator("#tt-what").text_content()
        stack = page.locator("#tt-stack li").evaluate_all("items => items.map(i => i.dataset.spanName || '')")
        if what.startswith("→ call "):
            expected.insert(0, what[len("→ call "):].rsplit("  [", 1)[0])
        elif what.startswith("← leave "):
            assert expected and what[len("← leave "):].startswith(expected[0]), (i, what, expected)
            expected.pop(0)
        assert [n for n in stack if n] == expected, (i, what)
        page.keyboard.press("ArrowRight")
    assert expected == [] and total >= 38


def test_graph_draws_edges_with_counts_and_a_click_lists_matching_traces(page, viewer):
    page.goto(viewer.base + "/graph")
    page.wait_for_selector("body[data-ready='1']")
    # one service: the page says so and draws the function graph
    expect(page.locator("#graph-note")).to_contain_text("showing the function graph")
    edge = page.locator("#graph-svg g.edge[data-src='shop:place_order'][data-dst='shop:Cart.add']")
    expect(edge).to_have_count(1)
    expect(edge.locator("text")).to_have_text(re.compile(r"^\d+× · \d+% err · [\d.]+ ms / [\d.]+ ms$"))
    expect(page.locator("#graph-svg g.edge.has-error").first).to_be_visible()
    edge.locator("text").click()
    page.wait_for_url(re.compile(r"/\?service=shop&span=Cart\.add"))
    expect(page.locator("#f-span")).to_have_value("Cart.add")
    page.wait_for_selector("#traces tr.row")
    assert page.locator("#traces tr.row").count() >= 3  # the three orders that priced a cart


def test_saved_page_works_offline_with_the_network_blocked(page, viewer, failing_order, browser, tmp_path):
    open_trace(page, viewer, failing_order)
    with page.expect_download() as info:
        page.click("#save-html")
    saved = tmp_path / "trace.html"
    info.value.save_as(saved)
    html = saved.read_text(encoding="utf-8")
    assert "<script src" not in html and "<link" not in html and "http://" not in html.split("<script id")[0]
    context = browser.new_context(offline=True)
    requests: list[str] = []
    context.route(re.compile(r"^(?!file:).*"), lambda route: (requests.append(route.request.url), route.abort()))
    offline = context.new_page()
    problems: list[str] = []
    offline.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    offline.on("pageerror", lambda e: problems.append(str(e)))
    offline.goto(saved.as_uri())
    offline.wait_for_selector("body[data-ready='1']")
    expect(offline.locator(".wf-row.failing", has_text="Cart.add")).to_have_count(1)
    offline.locator(".wf-row.failing", has_text="Cart.add").click()
    expect(offline.locator("#detail-exception")).to_contain_text("OutOfStock")
    offline.keyboard.press("ArrowRight")
    expect(offline.locator("#tt-what")).to_have_text(re.compile(r"^→ call POST"))
    context.close()
    assert not problems, problems
    assert requests == [], f"the saved page fetched {requests}"


def test_list_updates_while_the_app_records_into_the_same_store(page, viewer, shop_store):
    """The viewer holds the embedded store; a second run of the shop writes into it meanwhile."""
    page.goto(viewer.base + "/")
    rows = page.locator("#traces tr.row")
    expect(rows.first).to_be_visible()
    before = rows.count()
    expect(page.locator("#traces tr.new")).to_have_count(0)
    record_shop(shop_store.rsplit("/", 1)[0])  # the app's store writer asks the viewer to let go
    expect(page.locator("#traces tr.new").first).to_be_visible(timeout=30_000)
    assert rows.count() > before
