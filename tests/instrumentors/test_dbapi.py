"""DB-API integration (sqlite3, psycopg 3) and one SQL span per statement
end to end: Flask's tutorial app over sqlite3, and Flask + SQLAlchemy over
SQLite and PostgreSQL, each served by a real WSGI server over HTTP."""
from __future__ import annotations

import asyncio
import os
import sqlite3
from contextlib import contextmanager

import flask
import pytest
import requests
import sqlalchemy as sa
from opentelemetry.trace import SpanKind, StatusCode

from scope_otel.instrumentors.dbapi import ScopeDBAPIInstrumentor
from scope_otel.instrumentors.flask import ScopeFlaskInstrumentor
from scope_otel.instrumentors.sqlalchemy import ScopeSQLAlchemyInstrumentor
from tests.instrumentors.conftest import instrumented, serve

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def sql_spans(spans, parent=None):
    found = [s for s in spans.all() if s.kind is SpanKind.CLIENT]
    if parent is not None:
        found = [s for s in found if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return sorted(found, key=lambda s: s.start_time)


def server_span(spans, name):
    (span,) = spans.wait(1, lambda s: s.kind is SpanKind.SERVER and s.name == name)
    return span


@pytest.fixture
def pg():
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_DSN}: {type(exc).__name__}")
    return psycopg


# --------------------------------------------------------------------------
# sqlite3
# --------------------------------------------------------------------------

def test_sqlite3_statements_are_spans_and_the_connection_is_still_the_callers_kind(spans, tmp_path):
    class MyConnection(sqlite3.Connection):
        pass

    with instrumented(ScopeDBAPIInstrumentor(), spans):
        with spans.tracer.start_as_current_span("work") as work:
            db = sqlite3.connect(tmp_path / "t.db", factory=MyConnection)
            db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
            db.executemany("INSERT INTO t (name) VALUES (?)", [("a",), ("secret-b",)])
            db.commit()
            db.row_factory = sqlite3.Row
            rows = db.cursor().execute("SELECT name FROM t WHERE name != 'x'").fetchall()
            db.executescript("DELETE FROM t; ")
            with pytest.raises(sqlite3.OperationalError):
                db.execute("SELECT nope FROM t")
            db.close()
    assert isinstance(db, MyConnection) and type(db).__name__ == "MyConnection"
    assert [r["name"] for r in rows] == ["a", "secret-b"]
    sql = sql_spans(spans, work)
    assert [s.name for s in sql] == ["CREATE TABLE t", "INSERT t", "COMMIT", "SELECT t", "DELETE t", "SELECT t"]
    attrs = dict(sql[3].attributes)
    assert attrs["db.system.name"] == "sqlite" and attrs["db.namespace"] == "t.db"
    assert attrs["db.query.text"] == "SELECT name FROM t WHERE name != ?"  # literal replaced
    assert "secret-b" not in str([dict(s.attributes) for s in sql])
    assert sql[-1].status.status_code is StatusCode.ERROR and sql[-1].attributes["error.type"] == "OperationalError"


def test_sqlite3_parameters_are_passed_on_only_when_given(spans):
    """A cursor subclass may tell "no parameters" from "empty ones": Django's SQLite
    cursor formats the query (``%s`` -> ``?``, ``%%`` -> ``%``) only when given some."""

    class FormatStyle(sqlite3.Cursor):
        def execute(self, sql, params=None):
            if params is None:
                return super().execute(sql)
            return super().execute(sql.replace("%s", "?"), params)

    with instrumented(ScopeDBAPIInstrumentor(), spans), spans.tracer.start_as_current_span("work") as work:
        db = sqlite3.connect(":memory:")
        assert db.cursor(FormatStyle).execute("SELECT '%s'").fetchone() == ("%s",)
        assert db.cursor(FormatStyle).execute("SELECT %s", (1,)).fetchone() == (1,)
        assert db.execute("SELECT 2").fetchone() == (2,)
        db.close()
    assert [s.name for s in sql_spans(spans, work)] == ["SELECT"] * 3


def test_sqlite3_uninstrument_restores_connect(spans):
    connect = sqlite3.connect
    with instrumented(ScopeDBAPIInstrumentor(), spans):
        assert sqlite3.connect is not connect and sqlite3.dbapi2.connect is not connect
    assert sqlite3.connect is connect and sqlite3.dbapi2.connect is connect
    sqlite3.connect(":memory:").execute("SELECT 1")
    assert sql_spans(spans) == []


def test_flask_tutorial_app_over_http_every_statement_one_span_under_its_request(spans, tmp_path, monkeypatch):
    from tests.instrumentors.apps import tutorial

    monkeypatch.setattr(tutorial, "DB", str(tmp_path / "flaskr.sqlite"))
    tutorial.init_db()
    with instrumented(ScopeFlaskInstrumentor(), spans), instrumented(ScopeDBAPIInstrumentor(), spans):
        with serve(tutorial.app) as url:
            assert requests.post(f"{url}/register", data={"username": "ann", "password": "pw-secret"}).ok
            assert requests.post(f"{url}/login", data={"username": "ann", "password": "pw-secret"}).json() == {"id": 1}
            assert requests.post(f"{url}/posts", data={"title": ["one", "two", "three"]}).json() == {"added": 3}
            assert requests.get(f"{url}/posts").json()["authors"] == ["ann"] * 3
            register = server_span(spans, "POST /register")
            login = server_span(spans, "POST /login")
            get = server_span(spans, "GET /posts")
    assert [s.name for s in sql_spans(spans, register)] == ["INSERT user", "COMMIT"]
    assert [s.name for s in sql_spans(spans, login)] == ["SELECT user"]
    assert [s.name for s in sql_spans(spans, get)] == ["SELECT post"] + ["SELECT user"] * 3
    assert get.attributes["scope.db.statements"] == 4
    assert get.attributes["scope.db.repeated_statements"] == 2
    everything = str([dict(s.attributes) for s in spans.all()])
    assert "pw-secret" not in everything


# --------------------------------------------------------------------------
# psycopg 3
# --------------------------------------------------------------------------

def test_psycopg_statements_rows_and_transactions(spans, pg):
    with instrumented(ScopeDBAPIInstrumentor(), spans):
        with spans.tracer.start_as_current_span("work") as work:
            with pg.connect(PG_DSN) as conn:  # opened after instrumenting, by any code
                conn.execute("CREATE TEMP TABLE scope_dbapi (id int, name text)")
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO scope_dbapi VALUES (%s, %s)", [(1, "a"), (2, "hunter2")])
                    cur.execute("SELECT name FROM scope_dbapi ORDER BY id")
                    assert [r[0] for r in cur.fetchall()] == ["a", "hunter2"]
                with pytest.raises(pg.errors.UndefinedColumn):
                    conn.execute("SELECT nope FROM scope_dbapi")
                conn.rollback()
    sql = sql_spans(spans, work)
    assert [s.name for s in sql] == ["CREATE TABLE scope_dbapi", "INSERT scope_dbapi", "SELECT scope_dbapi",
                                     "SELECT scope_dbapi", "ROLLBACK"]
    attrs = dict(sql[2].attributes)
    assert attrs["db.system.name"] == "postgresql" and attrs["db.namespace"] == "test"
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == 5432
    assert attrs["db.response.returned_rows"] == 2
    assert sql[3].attributes["error.type"] == "UndefinedColumn"
    assert "hunter2" not in str([dict(s.attributes) for s in sql])


def test_psycopg_connection_and_cursor_opened_before_instrumenting_are_covered(spans, pg):
    """psycopg 3 is traced on its classes: a connection (and a cursor) the program
    opened before ``instrument()`` records its statements too, and stays the same object."""
    conn = pg.connect(PG_DSN)
    cur = conn.cursor()
    try:
        cur.execute("CREATE TEMP TABLE scope_before (id int)")  # before: not recorded
        with instrumented(ScopeDBAPIInstrumentor(), spans):
            with spans.tracer.start_as_current_span("work") as work:
                cur.execute("INSERT INTO scope_before VALUES (%s)", (1,))
                assert conn.execute("SELECT id FROM scope_before").fetchall() == [(1,)]
                conn.commit()
        assert type(conn) is pg.Connection and type(cur) is pg.Cursor
    finally:
        conn.close()
    assert [s.name for s in sql_spans(spans, work)] == ["INSERT scope_before", "SELECT scope_before", "COMMIT"]
    assert len(sql_spans(spans)) == 3


def test_psycopg_async_cursor_is_traced(spans, pg):
    async def main():
        async with await pg.AsyncConnection.connect(PG_DSN) as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1 WHERE %s", [True])
                return await cur.fetchone()

    with instrumented(ScopeDBAPIInstrumentor(), spans):
        assert asyncio.run(main()) == (1,)
    span, commit = sql_spans(spans)  # leaving the connection's block commits
    assert span.name == "SELECT" and span.attributes["db.response.returned_rows"] == 1
    assert commit.name == "COMMIT"


# --------------------------------------------------------------------------
# Flask + SQLAlchemy over an instrumented driver: one span per statement
# --------------------------------------------------------------------------

def _shop(url: str) -> tuple[flask.Flask, sa.Engine]:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    items = sa.Table("scope_e2e_items", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String))
    meta.drop_all(engine)
    meta.create_all(engine)
    app = flask.Flask("e2e")

    @app.post("/items")
    def add():
        with engine.begin() as conn:
            conn.execute(items.insert(), [{"name": n} for n in flask.request.form.getlist("name")])
        return {"ok": True}

    @app.get("/items")
    def names():
        with engine.connect() as conn:
            ids = [r.id for r in conn.execute(sa.select(items.c.id).order_by(items.c.id))]
            return {"names": [conn.execute(sa.select(items.c.name).where(items.c.id == i)).scalar() for i in ids]}

    return app, engine


@contextmanager
def _database(kind: str, tmp_path):
    if kind == "postgresql":
        psycopg = pytest.importorskip("psycopg")
        try:
            psycopg.connect(PG_DSN, connect_timeout=3).close()
        except Exception as exc:
            pytest.skip(f"PostgreSQL not reachable at {PG_DSN}: {type(exc).__name__}")
        yield "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    else:
        yield f"sqlite:///{tmp_path / 'e2e.db'}"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_flask_sqlalchemy_over_http_one_span_per_statement_with_the_driver_traced(spans, tmp_path, kind):
    with _database(kind, tmp_path) as url:
        app, engine = _shop(url)
        try:
            with instrumented(ScopeFlaskInstrumentor(), spans), instrumented(ScopeSQLAlchemyInstrumentor(), spans), \
                    instrumented(ScopeDBAPIInstrumentor(), spans):
                with serve(app) as base:
                    assert requests.post(f"{base}/items", data={"name": ["a", "b"]}).ok
                    assert requests.get(f"{base}/items").json() == {"names": ["a", "b"]}
                    post = server_span(spans, "POST /items")
                    get = server_span(spans, "GET /items")
        finally:
            engine.dispose()
    inserted = sql_spans(spans, post)
    assert [s.name for s in inserted if s.name != "COMMIT"] == ["INSERT scope_e2e_items"]
    assert inserted[0].instrumentation_scope.name == "scope_otel.instrumentors.sqlalchemy"
    listed = sql_spans(spans, get)
    assert [s.name for s in listed if not s.name.startswith("ROLLBACK")] == ["SELECT scope_e2e_items"] * 3
    assert {s.instrumentation_scope.name for s in listed if s.name.startswith("SELECT")} == {
        "scope_otel.instrumentors.sqlalchemy"}
    # every span under a request is one of the statements the app ran, none twice
    assert get.attributes["scope.db.statements"] == len(listed)
    assert get.attributes["scope.db.repeated_statements"] == 1
    assert listed[0].attributes["db.system.name"] == kind


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_sqlalchemy_new_connections_setup_is_one_connect_span_listing_every_statement(spans, tmp_path, kind):
    with _database(kind, tmp_path) as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)  # a new DB-API connection each time

        @sa.event.listens_for(engine, "connect")
        def on_connect(dbapi_connection, record):  # the program's own set-up, on the driver's connection
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 42")
            cursor.close()

        try:
            with instrumented(ScopeSQLAlchemyInstrumentor(), spans), instrumented(ScopeDBAPIInstrumentor(), spans):
                with spans.tracer.start_as_current_span("work") as work:
                    for _ in range(2):
                        with engine.connect() as conn:
                            conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    sql = sql_spans(spans, work)
    assert len(sql) == len([s for s in spans.all() if s.kind is SpanKind.CLIENT])  # all under "work"
    names = [s.name for s in sql if s.name != "ROLLBACK"]  # the pool's reset on return
    assert names == ["connect", "SELECT", "connect", "SELECT"], names
    first, second = (s.attributes for s in sql if s.name == "connect")
    # the first connection also ran the dialect's initialisation; each lists the listener's statement last
    assert first["scope.db.setup_statements"] > second["scope.db.setup_statements"] >= 1
    for connect in (first, second):
        texts = connect["db.query.text"].split("; ")
        assert texts[-1] == "SELECT ?" and connect["scope.db.setup_statements"] == len(texts)
        assert connect["db.system.name"] == kind


def test_psycopg2_statements_rows_and_transactions_with_the_callers_factories(spans, pg):
    psycopg2 = pytest.importorskip("psycopg2")
    import psycopg2.extras

    with instrumented(ScopeDBAPIInstrumentor(), spans):
        with spans.tracer.start_as_current_span("work") as work:
            conn = psycopg2.connect(PG_DSN, cursor_factory=psycopg2.extras.RealDictCursor)
            try:
                with conn.cursor() as cur:
                    cur.execute("CREATE TEMP TABLE scope_pg2 (id int, name text)")
                    cur.executemany("INSERT INTO scope_pg2 VALUES (%s, %s)", [(1, "a"), (2, "hunter2")])
                    cur.execute("SELECT name FROM scope_pg2 ORDER BY id")
                    rows = cur.fetchall()
                    assert isinstance(cur, psycopg2.extras.RealDictCursor)
                conn.commit()
            finally:
                conn.close()
    assert [r["name"] for r in rows] == ["a", "hunter2"]
    sql = sql_spans(spans, work)
    assert [s.name for s in sql] == ["CREATE TABLE scope_pg2", "INSERT scope_pg2", "SELECT scope_pg2", "COMMIT"]
    attrs = dict(sql[2].attributes)
    assert attrs["db.system.name"] == "postgresql" and attrs["db.namespace"] == "test"
    assert attrs["server.port"] == 5432 and attrs["db.response.returned_rows"] == 2
    assert "hunter2" not in str([dict(s.attributes) for s in sql])
