"""Fixtures for the viewer: a recorded shop, a running viewer, Chromium through Playwright.

The browser is Debian's Chromium (``/usr/bin/chromium``, or ``SCOPE_OTEL_CHROMIUM``)
driven by Playwright for Python through ``executable_path``: no browser is
downloaded.  Tests needing it skip with the reason when either is missing
(``.ci/browser-setup`` installs Chromium).  A console error or an uncaught page
exception fails the test; a failing test leaves a screenshot in
``tests/ui/artifacts/`` (or ``$SCOPE_OTEL_UI_ARTIFACTS``).
"""
from __future__ import annotations

import os
import shutil
import sys
import threading

import pytest

from tests.support.procs import clean_env, run, tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = os.environ.get("SCOPE_OTEL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.environ.get("SCOPE_OTEL_UI_ARTIFACTS", os.path.join(ROOT, "tests", "ui", "artifacts"))
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


def record_shop(workdir: str) -> str:
    """Run examples/shop_demo.py under scope-otel (as the README's first command does); the store's path."""
    store = os.path.join(workdir, "store")
    result = run([tool("scope-otel"), "run", "--service_name", "shop", "--instrument", "shop.*", "--level", "full",
                  "--store", store, "--", sys.executable, os.path.join(ROOT, "examples", "shop_demo.py")],
                 clean_env(), cwd=workdir, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return store


class Viewer:
    """A ViewerServer on a free loopback port, in a thread of this process."""

    def __init__(self, store_url: str, token: str | None = None) -> None:
        from scope_otel.store import open_store
        from scope_otel.ui.server import ViewerServer

        self.store = open_store(store_url, "otel", wait_s=60)
        self.server = ViewerServer(self.store, port=0, token=token)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.store.close()


def close_engine() -> None:
    from scope_otel.store.engine import close_engine as _close

    _close()


@pytest.fixture(scope="package")
def shop_store(tmp_path_factory):
    """The example shop recorded into a fresh embedded store."""
    return record_shop(str(tmp_path_factory.mktemp("shop")))


@pytest.fixture(scope="package")
def viewer(shop_store):
    v = Viewer(shop_store)
    yield v
    v.close()
    close_engine()


@pytest.fixture(scope="package")
def failing_order(viewer):
    """The trace id of the order that fails on stock (the demo's last request)."""
    from scope_otel.store import TraceFilter

    rows = viewer.server.ask(lambda store: store.traces(TraceFilter(errors=True, text="OutOfStock")))
    orders = [r for r in rows if r["Entry"] == "POST /orders"]
    assert orders, rows
    return orders[0]["TraceId"]


@pytest.fixture(scope="package")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}: run .ci/browser-setup (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def page(browser, request):
    """A fresh page; console errors, page exceptions and dialogs are collected and fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page exception: {e}"))

    def on_dialog(dialog):
        problems.append(f"dialog ({dialog.type}): {dialog.message}")
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    pg.problems = problems
    yield pg
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed or problems:
        os.makedirs(ARTIFACTS, exist_ok=True)
        try:
            pg.screenshot(path=os.path.join(ARTIFACTS, request.node.name + ".png"), full_page=True)
        except Exception:
            pass
    context.close()
    assert not problems, "the page reported problems:\n" + "\n".join(problems)
