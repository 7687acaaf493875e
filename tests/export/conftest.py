"""ClickHouse destinations for the export and store tests.

``ch_target`` is module-scoped (chDB start-up is slow, and one process can
hold one chDB engine): an embedded store in a temporary folder, and, when
``SCOPE_OTEL_TEST_CLICKHOUSE_URL`` is set (e.g. ``http://default:@127.0.0.1:8123``),
the same tests against that server in a throw-away database.
"""
from __future__ import annotations

import os
import uuid

import pytest

SERVER_ENV = "SCOPE_OTEL_TEST_CLICKHOUSE_URL"


@pytest.fixture(scope="module", params=["chdb", "server"])
def ch_target(request, tmp_path_factory):
    """``(url, database)`` of a fresh, empty store."""
    if request.param == "chdb":
        path = tmp_path_factory.mktemp("store") / "scope-otel"
        yield f"chdb://{path}", "otel"
        from scope_otel.store.engine import _Engine, _close_engine

        with _Engine.lock:
            _close_engine()
        return
    url = os.environ.get(SERVER_ENV)
    if not url:
        pytest.skip(f"{SERVER_ENV} is not set: no ClickHouse server to test against")
    database = "scope_test_" + uuid.uuid4().hex[:8]
    yield url, database
    import clickhouse_connect

    from scope_otel.store.target import parse

    t = parse(url, database)
    client = clickhouse_connect.get_client(host=t.host, port=t.port, username=t.username,
                                           password=t.password, secure=t.secure)
    client.command(f"DROP DATABASE IF EXISTS `{database}`")
    client.close()


@pytest.fixture(scope="module")
def store_path(request, tmp_path_factory):
    """An embedded store of the test module's own, closed at the module's end."""
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]) / "scope-otel"
    yield str(path)
    from scope_otel.store.engine import _close_engine, _Engine

    with _Engine.lock:
        _close_engine()

