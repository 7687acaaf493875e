"""Real servers in subprocesses: gunicorn with 2 workers (with and without
``--preload``) and Django's ``runserver --noreload``, spans received by a
real OTLP receiver."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import pytest
import requests

from tests.support.procs import REPO, clean_env, tool

SHOP = "tests.instrumentors.apps.shop:app"
DJANGO = "tests.instrumentors.apps.djangoapp.wsgi:application"
HOOKS = os.path.join(REPO, "tests", "instrumentors", "apps", "gunicorn_hooks.py")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"

pytestmark = pytest.mark.skipif(not os.path.exists(tool("gunicorn")), reason="gunicorn is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running(args: list[str], env: dict[str, str], health: str):
    """Start a server process; yield its base URL once ``health`` answers."""
    port = _free_port()
    args = [a.replace("{port}", str(port)) for a in args]
    # a file, not a pipe: nobody drains a pipe here, and a preloaded gunicorn
    # master blocked on a full pipe would not stop on SIGTERM
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(url + health, timeout=5)
                break
            except requests.RequestException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    log.seek(0)
                    pytest.fail(f"server did not start: {' '.join(args)}\n{log.read()[-3000:]}")
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def databases(tmp_path_factory) -> dict[str, str]:
    """The shop's and the Django app's SQLite files, made once per module."""
    folder = tmp_path_factory.mktemp("servers")
    env = {
        "SHOP_DB": f"sqlite:///{folder / 'shop.db'}",
        "DJANGO_DB": str(folder / "django.db"),
        "DJANGO_SETTINGS_MODULE": "tests.instrumentors.apps.djangoapp.settings",
    }
    code = (
        "import django; django.setup();"
        "from tests.instrumentors.apps.djangoapp.models import create_tables; create_tables();"
        "from tests.instrumentors.apps import shop; shop.reset_db()"
    )
    subprocess.run([sys.executable, "-c", code], env=clean_env(**env), cwd=REPO, check=True, timeout=60)
    return env


@pytest.fixture
def scope_env(otlp_receiver, databases):
    """``scope_env(**extra)``: environment for a server exporting to the receiver."""

    def make(**extra: str) -> dict[str, str]:
        settings = {
            **otlp_receiver.env("http/protobuf"),
            "OTEL_SERVICE_NAME": "shop",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            **databases,
        }
        return clean_env(**{**settings, **extra})

    return make


def server_span(spans, name):
    matching = [s for s in spans if s["name"] == name and s["kind"] == "SERVER"]
    assert matching, f"no SERVER span {name!r}: {sorted({s['name'] for s in spans})}"
    return matching


def check_shop_tree(receiver, url: str) -> None:
    """Requests to the shop give SERVER spans with SQL children, over OTLP."""
    for _ in range(4):
        assert requests.get(f"{url}/items/1").json() == {"id": 1, "name": "apple"}
    requests.get(f"{url}/items/2", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    spans = receiver.wait_for(
        10, timeout=20, where=lambda s: s["name"] in ("GET /items/<int:item_id>", "SELECT shop_items")
    )
    servers = server_span(spans, "GET /items/<int:item_id>")
    assert len(servers) == 5
    for server in servers:
        assert server["attributes"]["http.route"] == "/items/<int:item_id>"
        assert server["attributes"]["http.response.status_code"] == 200
        children = [s for s in spans if s["parent_span_id"] == server["span_id"]]
        assert [(c["name"], c["kind"]) for c in children] == [("SELECT shop_items", "CLIENT")]
        assert children[0]["attributes"]["db.system.name"] == "sqlite"
    (remote,) = [s for s in servers if s["trace_id"] == TRACE_ID]
    assert remote["parent_span_id"] == PARENT_ID


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_gunicorn_two_workers_under_scope_otel_run(otlp_receiver, scope_env, preload):
    env = scope_env()
    args = [tool("scope-otel"), "run", "--", tool("gunicorn"), "-w", "2", "-b", "127.0.0.1:{port}", "--log-level", "warning", "--graceful-timeout", "3"]
    if preload:
        args.append("--preload")
    with running(args + [SHOP], env, "/health") as url:
        check_shop_tree(otlp_receiver, url)
    assert {s["resource"].get("service.name") for s in otlp_receiver.spans} == {"shop"}


@pytest.mark.parametrize("app", ["flask", "django"])
def test_gunicorn_preload_app_built_before_instrumenting_in_post_fork(otlp_receiver, scope_env, app):
    env = scope_env(HOOK_OTLP=otlp_receiver.http_endpoint)
    args = [tool("gunicorn"), "-w", "2", "-b", "127.0.0.1:{port}", "--log-level", "warning", "--graceful-timeout", "3", "--preload", "-c", HOOKS]
    if app == "flask":
        with running(args + [SHOP], env, "/health") as url:
            check_shop_tree(otlp_receiver, url)
        return
    with running(args + [DJANGO], env, "/items/0/") as url:
        requests.get(f"{url}/items/999/", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        spans = otlp_receiver.wait_for(2, timeout=20, where=lambda s: s["trace_id"] == TRACE_ID)
    (span,) = [s for s in spans if s["kind"] == "SERVER"]
    (sql,) = [s for s in spans if s["kind"] == "CLIENT"]  # the ORM's query, at the driver call of Django's cursor
    assert sql["name"] == "SELECT djangoapp_item" and sql["parent_span_id"] == span["span_id"]
    assert span["name"] == "GET items/<int:pk>/"
    assert span["parent_span_id"] == PARENT_ID
    assert span["attributes"]["http.response.status_code"] == 404
    assert span["resource"]["service.name"] == "hooked"


def test_django_runserver_noreload_under_scope_otel_run(otlp_receiver, scope_env):
    env = scope_env(OTEL_SERVICE_NAME="django")
    args = [tool("scope-otel"), "run", "--", sys.executable, "-m", "django", "runserver", "--noreload", "127.0.0.1:{port}"]
    with running(args, env, "/items/0/") as url:
        assert requests.post(f"{url}/items/", data='{"name": "plum"}').status_code == 201
        spans = otlp_receiver.wait_for(1, timeout=20, where=lambda s: s["name"] == "POST items/")
    (span,) = spans
    assert span["kind"] == "SERVER"
    assert span["attributes"]["http.response.status_code"] == 201
    changes = [e["attributes"] for e in span["events"] if e["name"] == "scope.state_change"]
    assert [c["scope.action"] for c in changes] == ["insert", "update"]


def test_opentelemetry_instrument_with_contrib_and_scope_gives_one_span_per_request(otlp_receiver, scope_env):
    # both contrib's and scope-otel's entry points load; contrib's Flask
    # instrumentation owns apps created after it, scope-otel steps aside
    env = scope_env()
    serve = (
        "import sys; from werkzeug.serving import run_simple;"
        "from tests.instrumentors.apps import shop;"
        "run_simple('127.0.0.1', int(sys.argv[1]), shop.app)"
    )
    args = [tool("opentelemetry-instrument"), sys.executable, "-c", serve, "{port}"]
    with running(args, env, "/health") as url:
        requests.get(f"{url}/items/1")
        otlp_receiver.wait_for(2, timeout=20, where=lambda s: "items" in s["name"] or "SELECT" in s["name"])
        time.sleep(0.5)  # a duplicate would arrive in the same batch or soon after
    servers = [s for s in otlp_receiver.spans if s["kind"] == "SERVER" and "items" in s["name"]]
    assert len(servers) == 1
    selects = [s for s in otlp_receiver.spans if s["name"].startswith("SELECT")]
    assert len(selects) == 1 and selects[0]["parent_span_id"] == servers[0]["span_id"]


def test_function_spans_nest_between_request_and_sql_spans_under_gunicorn(otlp_receiver, scope_env):
    env = scope_env()
    args = [
        tool("scope-otel"), "run", "--instrument", "tests.instrumentors.apps.shop", "--level", "boundaries", "--",
        tool("gunicorn"), "-w", "2", "-b", "127.0.0.1:{port}", "--log-level", "warning", "--graceful-timeout", "3",
        "--preload", SHOP,
    ]
    with running(args, env, "/health") as url:
        assert requests.post(f"{url}/items", json={"name": "fig"}).status_code == 201
        spans = otlp_receiver.wait_for(
            4, timeout=20, where=lambda s: s["name"] in ("POST /items", "add_item", "INSERT shop_items", "scope.state_change")
        )
    by_name = {s["name"]: s for s in spans}
    request, function = by_name["POST /items"], by_name["add_item"]
    assert function["kind"] == "INTERNAL" and function["parent_span_id"] == request["span_id"]
    assert by_name["INSERT shop_items"]["parent_span_id"] == function["span_id"]
    change = by_name["scope.state_change"]
    assert change["parent_span_id"] == function["span_id"]
    assert change["events"][0]["attributes"]["scope.target"] == "orm:Item"
