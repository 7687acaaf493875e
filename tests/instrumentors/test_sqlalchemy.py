"""SQLAlchemy integration against real SQLite and PostgreSQL databases."""
from __future__ import annotations

import asyncio
import os

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from scope_otel.capture import runtime
from scope_otel.instrumentors.sqlalchemy import ScopeSQLAlchemyInstrumentor
from tests.instrumentors.conftest import instrumented, level_full

PG_URL = os.environ.get("SCOPE_OTEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET = "hunter2-never-in-spans"


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "scope_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str]
    password: Mapped[str] = mapped_column(default="")


@pytest.fixture
def engine(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'accounts.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def pg_engine():
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}")
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


def sql_spans(spans):
    return [s for s in spans.all() if s.kind is SpanKind.CLIENT]


def all_attribute_text(span) -> str:
    texts = [str(v) for v in span.attributes.values()]
    texts += [str(v) for e in span.events for v in e.attributes.values()]
    return " ".join(texts)


def test_engine_created_before_instrumenting_is_traced_with_db_conventions(spans, engine):
    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        with spans.tracer.start_as_current_span("request") as request:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT owner FROM scope_accounts WHERE password = :p"), {"p": SECRET})
    (span,) = sql_spans(spans)
    assert span.name == "SELECT scope_accounts"  # db.query.summary, as the conventions name spans
    assert span.parent.span_id == request.get_span_context().span_id
    attrs = dict(span.attributes)
    assert attrs["db.system.name"] == "sqlite"
    assert attrs["db.namespace"] == "accounts.db"
    assert attrs["db.operation.name"] == "SELECT"
    assert attrs["db.query.text"] == "SELECT owner FROM scope_accounts WHERE password = ?"
    assert attrs["db.query.summary"] == "SELECT scope_accounts"
    assert attrs["db.collection.name"] == "scope_accounts"
    assert SECRET not in all_attribute_text(span)  # parameters are never recorded


def test_failed_statement_records_exception_and_error_status(spans, engine):
    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        with engine.connect() as conn, pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT * FROM no_such_table"))
    (span,) = sql_spans(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "OperationalError"
    assert [e.name for e in span.events] == ["exception"]


def test_orm_flush_becomes_state_change_events_per_class(spans, engine):
    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        with spans.tracer.start_as_current_span("request"):
            with Session(engine) as session:
                session.add_all([Account(id=7, owner="ann"), Account(id=8, owner="bob")])
                session.commit()
                ann, bob = session.get(Account, 7), session.get(Account, 8)
                ann.owner = "anna"
                session.delete(bob)
                session.commit()
    (request,) = spans.named("request")
    changes = [dict(e.attributes) for e in request.events if e.name == "scope.state_change"]
    assert changes[0]["scope.target"] == "orm:Account"
    assert changes[0]["scope.inserted"] == 2 and changes[0]["scope.pk"] == ("7", "8")
    assert changes[1]["scope.updated"] == 1 and changes[1]["scope.deleted"] == 1
    assert sorted(changes[1]["scope.pk"]) == ["7", "8"]
    assert all("scope.value" not in c for c in changes)  # values only at level full
    (checkin, *_) = [e for e in request.events if e.name == "db.client.connection.checkin"]
    assert checkin.attributes["scope.held_ms"] >= 0


def test_orm_values_at_level_full_are_redacted(spans, engine):
    with level_full(), instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        with spans.tracer.start_as_current_span("request"):
            with Session(engine) as session:
                session.add(Account(id=9, owner="cy", password=SECRET))
                session.commit()
    (request,) = spans.named("request")
    (change,) = [e for e in request.events if e.name == "scope.state_change"]
    (value,) = change.attributes["scope.value"]
    assert "owner='cy'" in value
    assert "password=[REDACTED]" in value and SECRET not in value


def test_sqlcommenter_appends_the_statement_spans_traceparent(spans, engine):
    executed = []
    sa.event.listen(engine, "after_cursor_execute", lambda c, cur, statement, *a: executed.append(statement))
    with instrumented(ScopeSQLAlchemyInstrumentor(), spans, enable_commenter=True):
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    (span,) = sql_spans(spans)
    ctx = span.context
    assert executed == [f"SELECT 1 /*traceparent='00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}'*/"]
    assert span.attributes["db.query.text"] == "SELECT ?"  # literals become placeholders


def test_async_engine_statements_nest_under_the_calling_span(spans, tmp_path):
    from sqlalchemy.ext.asyncio import create_async_engine

    async def main():
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
        with spans.tracer.start_as_current_span("task"):
            async with engine.connect() as conn:
                assert (await conn.execute(sa.text("SELECT 41 + 1"))).scalar() == 42
        await engine.dispose()

    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        asyncio.run(main())
    (task,) = spans.named("task")
    (span,) = sql_spans(spans)
    assert span.parent.span_id == task.context.span_id
    assert span.attributes["db.system.name"] == "sqlite"


def test_engine_traced_by_contrib_gets_no_second_span(spans, engine):
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    contrib = SQLAlchemyInstrumentor()
    # contrib 0.66b1 declares "sqlalchemy < 2.1": skip its check to make it run
    contrib.instrument(engine=engine, tracer_provider=spans.provider, skip_dep_check=True)
    try:
        with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
    finally:
        contrib.uninstrument()
    (span,) = [s for s in sql_spans(spans) if s.name != "connect"]  # contrib also times connect()
    assert span.instrumentation_scope.name.startswith("opentelemetry.instrumentation.sqlalchemy")


def test_uninstrument_removes_the_listeners(spans, engine):
    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        pass
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert spans.all() == []


def test_postgresql_statements_carry_server_and_namespace(spans, pg_engine):
    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        with Session(pg_engine) as session:
            session.add(Account(id=1, owner="pg", password=SECRET))
            session.commit()
            assert session.scalars(sa.select(Account.owner)).all() == ["pg"]
    sql = sql_spans(spans)
    assert [s.attributes["db.operation.name"] for s in sql] == ["INSERT", "SELECT"]
    attrs = dict(sql[0].attributes)
    assert attrs["db.system.name"] == "postgresql"
    assert attrs["db.namespace"] == "test"
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == 5432
    assert sql[0].name == "INSERT scope_accounts"
    assert sql[1].attributes["db.response.returned_rows"] == 1
    assert "%(owner)s" in attrs["db.query.text"] and SECRET not in all_attribute_text(sql[0])


def test_postgresql_async_engine_is_traced(spans, pg_engine):
    from sqlalchemy.ext.asyncio import create_async_engine

    async def main():
        engine = create_async_engine(PG_URL.replace("+psycopg", "+psycopg_async"))
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT count(*) FROM scope_accounts"))
        await engine.dispose()

    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        asyncio.run(main())
    names = [s.name for s in sql_spans(spans)]
    assert "SELECT scope_accounts" in names


def test_flush_inside_a_recorded_function_attaches_to_that_function(spans, engine):
    from scope_otel.capture import runtime

    fid = runtime.register("tests.instrumentors", "save_accounts", __file__, 1)
    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        with spans.tracer.start_as_current_span("request"):
            token = runtime.enter(fid)
            if token is None:
                pytest.skip("the capture runtime records nothing in this process")
            try:
                function_span_id = trace.get_current_span().get_span_context().span_id
                with Session(engine) as session:
                    session.add(Account(id=11, owner="fn"))
                    session.commit()
            finally:
                runtime.exit(token)
    (carrier,) = spans.named("scope.state_change")
    assert carrier.parent.span_id == function_span_id
    (event,) = carrier.events
    assert event.attributes["scope.target"] == "orm:Account" and event.attributes["scope.pk"] == ("11",)
    (insert,) = [s for s in sql_spans(spans) if s.name.startswith("INSERT")]
    assert insert.parent.span_id == function_span_id  # SQL nests under the function too


def test_database_semconv_dup_adds_the_old_names(spans, engine, monkeypatch):
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "database/dup")
    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    (span,) = sql_spans(spans)
    attrs = dict(span.attributes)
    assert attrs["db.system.name"] == attrs["db.system"] == "sqlite"
    assert attrs["db.namespace"] == attrs["db.name"] == "accounts.db"
    assert attrs["db.query.text"] == attrs["db.statement"] == "SELECT ?"


def test_checkin_event_names_the_pool(spans, tmp_path):
    named = sa.create_engine(f"sqlite:///{tmp_path / 'named.db'}", pool_logging_name="shop")
    plain = sa.create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    plain_pool = f"{type(plain.pool).__name__}@{id(plain.pool):x}"  # dispose() makes a new pool
    try:
        with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
            with spans.tracer.start_as_current_span("request"):
                for engine in (named, plain, named):
                    with engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
    finally:
        named.dispose()
        plain.dispose()
    (request,) = spans.named("request")
    pools = [e.attributes["db.client.connection.pool.name"] for e in request.events
             if e.name == "db.client.connection.checkin"]
    assert pools[0] == pools[2] == "shop"
    assert pools[1] == plain_pool


def test_repeated_statement_keeps_its_own_engines_name_and_attributes(spans, tmp_path):
    engines = [sa.create_engine(f"sqlite:///{tmp_path / name}") for name in ("one.db", "two.db")]
    try:
        with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
            for engine in (*engines, *engines):
                with engine.connect() as conn:
                    conn.execute(sa.text("select 1"))
                    conn.execute(sa.text("SELECT 2"))
    finally:
        for engine in engines:
            engine.dispose()
    found = [(s.name, s.attributes["db.namespace"], s.attributes["db.query.text"]) for s in sql_spans(spans)]
    expected = [
        ("SELECT", "one.db", "select ?"), ("SELECT", "one.db", "SELECT ?"),
        ("SELECT", "two.db", "select ?"), ("SELECT", "two.db", "SELECT ?"),
    ]
    assert found == expected * 2


def test_nothing_is_written_into_user_visible_info_dicts(spans, engine):
    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        with spans.tracer.start_as_current_span("request"):
            with Session(engine) as session:
                session.add(Account(id=21, owner="info"))
                session.commit()
                conn = session.connection()
                assert dict(conn.info) == {} and dict(session.info) == {}
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
                record_info = conn.connection._connection_record.info
                assert dict(conn.info) == {} and dict(record_info) == {}
    (request,) = spans.named("request")
    assert [e.name for e in request.events].count("db.client.connection.checkin") >= 2  # still measured


def test_attaching_does_not_import_the_orm_and_its_hook_follows_the_import(tmp_path):
    import subprocess
    import sys

    code = """
import sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from scope_otel.instrumentors.sqlalchemy import ScopeSQLAlchemyInstrumentor
exporter = InMemorySpanExporter(); provider = TracerProvider(); provider.add_span_processor(SimpleSpanProcessor(exporter))
ScopeSQLAlchemyInstrumentor().instrument(tracer_provider=provider)
import sqlalchemy
print("orm imported:", "sqlalchemy.orm" in sys.modules)
from sqlalchemy import orm, event
print("orm hook:", event.contains(orm.Session, "after_flush", sys.modules["scope_otel.instrumentors.sqlalchemy"]._after_flush))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["orm imported: False", "orm hook: True"]


def test_a_statement_in_a_trace_the_sampler_left_out_makes_no_span_at_all(spans, engine, monkeypatch):
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, use_span

    decided = []
    sampler = spans.provider.sampler  # ParentBased(ALWAYS_ON): a child of an unsampled parent is dropped
    original = sampler.should_sample
    monkeypatch.setattr(sampler, "should_sample", lambda *a, **k: decided.append(a[2]) or original(*a, **k))
    left_out = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0)))
    with instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        with use_span(left_out):
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM scope_accounts")).scalar() == 0
        assert decided == [] and sql_spans(spans) == []  # not even a span for the sampler to drop
        with spans.tracer.start_as_current_span("request"):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT count(*) FROM scope_accounts"))
    assert len(sql_spans(spans)) == 1 and "SELECT scope_accounts" in decided  # a recorded trace: as before
