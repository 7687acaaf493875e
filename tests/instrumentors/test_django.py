"""Django integration over real HTTP: WSGI (werkzeug's server) and ASGI (uvicorn)."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager

import pytest
import requests
from opentelemetry.trace import SpanKind, StatusCode

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.instrumentors.apps.djangoapp.settings")

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from scope_otel.instrumentors.django import MIDDLEWARE, ScopeDjangoInstrumentor  # noqa: E402
from tests.instrumentors.conftest import instrumented, level_full, serve  # noqa: E402

BASE_MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]


@pytest.fixture(scope="module", autouse=True)
def django_ready(tmp_path_factory):
    if settings.configured and os.environ["DJANGO_SETTINGS_MODULE"] != "tests.instrumentors.apps.djangoapp.settings":
        pytest.skip("another Django settings module is active in this process")
    os.environ["DJANGO_DB"] = str(tmp_path_factory.mktemp("django") / "db.sqlite3")
    django.setup()
    from tests.instrumentors.apps.djangoapp.models import create_tables

    create_tables()


@pytest.fixture(autouse=True)
def fresh_middleware():
    settings.MIDDLEWARE = list(BASE_MIDDLEWARE)
    yield
    settings.MIDDLEWARE = list(BASE_MIDDLEWARE)


def wsgi_app():
    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


def server_spans(spans, count=1, timeout=10.0):
    return spans.wait(count, lambda s: s.kind is SpanKind.SERVER, timeout=timeout)


def test_handler_built_before_instrumenting_is_covered(spans):
    app = wsgi_app()  # middleware chain built now, without scope-otel
    with instrumented(ScopeDjangoInstrumentor(), spans), serve(app) as url:
        assert requests.get(f"{url}/items/999/", headers={"User-Agent": "t"}).status_code == 404
        (span,) = server_spans(spans)
    assert MIDDLEWARE not in settings.MIDDLEWARE
    assert span.name == "GET items/<int:pk>/"
    assert span.kind is SpanKind.SERVER
    attrs = dict(span.attributes)
    assert attrs["http.route"] == "items/<int:pk>/"
    assert attrs["http.response.status_code"] == 404
    assert attrs["url.path"] == "/items/999/"
    assert attrs["user_agent.original"] == "t"
    assert span.status.status_code is StatusCode.UNSET


def test_middleware_is_inserted_at_the_configured_position(spans):
    with instrumented(ScopeDjangoInstrumentor(), spans, middleware_position=1):
        app = wsgi_app()
        assert settings.MIDDLEWARE == BASE_MIDDLEWARE + [MIDDLEWARE]
        with serve(app) as url:
            requests.get(f"{url}/items/999/")
            (span,) = server_spans(spans)
    assert span.name == "GET items/<int:pk>/"


def test_model_saves_are_state_change_events_and_deletes_show_as_sql(spans):
    with instrumented(ScopeDjangoInstrumentor(), spans):
        with serve(wsgi_app()) as url:
            item_id = requests.post(f"{url}/items/", data=json.dumps({"name": "fig"})).json()["id"]
            requests.get(f"{url}/items/{item_id}/delete/")
            created, deleted = sorted(server_spans(spans, 2), key=lambda s: s.start_time)
    assert created.name == "POST items/"
    assert created.attributes["http.response.status_code"] == 201
    changes = [dict(e.attributes) for e in created.events if e.name == "scope.state_change"]
    assert [c["scope.action"] for c in changes] == ["insert", "update"]
    assert changes[0]["scope.target"] == "django:djangoapp.Item"
    assert changes[0]["scope.pk"] == str(item_id)
    assert "scope.value" not in changes[0]  # values only at level full
    assert not [e for e in deleted.events if e.name == "scope.state_change"]  # no delete receiver
    sql = [s.attributes["db.query.summary"] for s in spans.children(deleted) if s.kind is SpanKind.CLIENT]
    assert sql == ["SELECT djangoapp_item", "DELETE djangoapp_item"]


def test_field_values_at_level_full_are_redacted(spans):
    with level_full(), instrumented(ScopeDjangoInstrumentor(), spans), serve(wsgi_app()) as url:
        requests.post(f"{url}/items/", data=json.dumps({"name": "kiwi"}))
        (span,) = server_spans(spans)
    values = [e.attributes["scope.value"] for e in span.events if e.name == "scope.state_change"]
    assert "name='kiwi'" in values[0] and "name='KIWI'" in values[1]
    assert all("api_key=[REDACTED]" in v and "k-123" not in v for v in values)


def test_view_exception_is_recorded_from_the_signal(spans):
    with instrumented(ScopeDjangoInstrumentor(), spans), serve(wsgi_app()) as url:
        assert requests.get(f"{url}/boom/").status_code == 500
        (span,) = server_spans(spans)
    assert span.name == "GET boom/"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ZeroDivisionError"
    assert span.attributes["http.response.status_code"] == 500
    assert [e.attributes["exception.type"] for e in span.events if e.name == "exception"] == ["ZeroDivisionError"]


def test_streaming_response_span_ends_after_the_stream(spans):
    with instrumented(ScopeDjangoInstrumentor(), spans), serve(wsgi_app()) as url:
        assert requests.get(f"{url}/stream/").text == "chunk0 chunk1 chunk2 "
        (span,) = server_spans(spans)
    assert span.name == "GET stream/"
    assert span.end_time > span.start_time


def test_incoming_context_is_extracted_and_outgoing_calls_propagate(spans):
    from scope_otel.instrumentors.http_clients import ScopeHTTPClientsInstrumentor

    with instrumented(ScopeDjangoInstrumentor(), spans), instrumented(ScopeHTTPClientsInstrumentor(), spans):
        with serve(wsgi_app()) as url:
            with spans.tracer.start_as_current_span("client") as root:
                requests.get(f"{url}/call/", params={"url": f"{url}/items/999/"})
            server = server_spans(spans, 2)
    by_name = {s.name: s for s in server}
    outer, inner = by_name["GET call/"], by_name["GET items/<int:pk>/"]
    trace_id = root.get_span_context().trace_id
    assert outer.context.trace_id == inner.context.trace_id == trace_id
    # client span (test) -> server span -> client span (view) -> server span
    outgoing = [s for s in spans.children(outer) if s.kind is SpanKind.CLIENT]
    assert len(outgoing) == 1 and inner.parent.span_id == outgoing[0].context.span_id


def test_incoming_baggage_is_current_in_the_view(spans):
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "baggage": "user=alice"}
    with instrumented(ScopeDjangoInstrumentor(), spans), serve(wsgi_app()) as url:
        assert requests.get(f"{url}/baggage/", headers=headers).json() == {"user": "alice"}
        (span,) = server_spans(spans)
    assert format(span.parent.span_id, "016x") == "b7ad6b7169203331"


def test_contrib_middleware_present_means_no_second_span(spans):
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    DjangoInstrumentor().instrument(tracer_provider=spans.provider)
    try:
        with instrumented(ScopeDjangoInstrumentor(), spans), serve(wsgi_app()) as url:
            requests.get(f"{url}/items/999/")
            server_spans(spans)
            server_spans(spans, 2, timeout=0.3)  # waits briefly for a duplicate that must not come
    finally:
        DjangoInstrumentor().uninstrument()
    (span,) = [s for s in spans.all() if s.kind is SpanKind.SERVER]
    assert span.instrumentation_scope.name.startswith("opentelemetry.instrumentation.django")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def uvicorn_server(app):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


def test_asgi_sync_and_async_views_get_spans(spans):
    from django.core.handlers.asgi import ASGIHandler

    with instrumented(ScopeDjangoInstrumentor(), spans):
        app = ASGIHandler()
        with uvicorn_server(app) as url:
            assert requests.get(f"{url}/async/").json() == {"async": True}
            assert requests.get(f"{url}/items/999/").status_code == 404
            found = server_spans(spans, 2)
    assert sorted(s.name for s in found) == ["GET async/", "GET items/<int:pk>/"]
    assert all(s.attributes["url.scheme"] == "http" for s in found)


def test_asgi_handler_built_before_instrumenting_is_covered(spans):
    from django.core.handlers.asgi import ASGIHandler

    app = ASGIHandler()
    with instrumented(ScopeDjangoInstrumentor(), spans), uvicorn_server(app) as url:
        requests.get(f"{url}/async/")
        (span,) = server_spans(spans)
    assert span.name == "GET async/"


def test_same_options_as_flask_excluded_urls_and_hooks(spans, monkeypatch):
    monkeypatch.setenv("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "stream/")
    seen = []
    with instrumented(ScopeDjangoInstrumentor(), spans, response_hook=lambda span, status, headers: seen.append(status)):
        with serve(wsgi_app()) as url:
            requests.get(f"{url}/stream/")
            requests.get(f"{url}/items/999/")
            server_spans(spans)
            server_spans(spans, 2, timeout=0.3)
    assert [s.name for s in spans.all() if s.kind is SpanKind.SERVER] == ["GET items/<int:pk>/"]
    assert seen == ["404 Not Found"]


def test_handler_built_before_stays_covered_after_another_handler_got_the_middleware(spans):
    early = wsgi_app()
    with instrumented(ScopeDjangoInstrumentor(), spans):
        wsgi_app()  # built now: the middleware goes into settings.MIDDLEWARE
        assert MIDDLEWARE in settings.MIDDLEWARE
        with serve(early) as url:
            requests.get(f"{url}/items/999/")
            (span,) = server_spans(spans)
            server_spans(spans, 2, timeout=0.3)
    assert span.name == "GET items/<int:pk>/"
    assert len([s for s in spans.all() if s.kind is SpanKind.SERVER]) == 1


def test_middleware_listed_by_the_user_is_not_inserted_twice(spans):
    settings.MIDDLEWARE = [MIDDLEWARE, *BASE_MIDDLEWARE]
    app = wsgi_app()  # built before instrumenting, with the user's own listing
    with instrumented(ScopeDjangoInstrumentor(), spans), serve(app) as url:
        requests.get(f"{url}/items/999/")
        server_spans(spans)
        server_spans(spans, 2, timeout=0.3)
    assert settings.MIDDLEWARE.count(MIDDLEWARE) == 1
    assert len([s for s in spans.all() if s.kind is SpanKind.SERVER]) == 1


# --------------------------------------------------------------------------
# SQL at Django's cursor, and what the ORM must not notice
# --------------------------------------------------------------------------

def sql_children(spans, parent):
    return sorted((s for s in spans.children(parent) if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time)


def _fresh_items(*names, using="default"):
    from tests.instrumentors.apps.djangoapp.models import Item

    Item.objects.using(using).all().delete()
    return [Item.objects.using(using).create(name=n).pk for n in names]


@pytest.mark.parametrize("with_driver", [False, True], ids=["django", "django+sqlite3"])
def test_orm_statements_are_one_span_each_under_the_request_with_counts(spans, with_driver):
    from scope_otel.instrumentors.dbapi import ScopeDBAPIInstrumentor

    from contextlib import nullcontext

    _fresh_items("fig", "kiwi", "lime")
    driver = instrumented(ScopeDBAPIInstrumentor(), spans) if with_driver else nullcontext()
    with instrumented(ScopeDjangoInstrumentor(), spans), driver:
        with serve(wsgi_app()) as url:
            assert requests.get(f"{url}/names/").json() == {"names": ["fig", "kiwi", "lime"]}
            (request,) = server_spans(spans)
    everything = sql_children(spans, request)
    # with the driver traced too, the new connection's own set-up (PRAGMAs) shows as well, as one span
    sql = [s for s in everything if "djangoapp_item" in s.name]
    assert [s.name for s in sql] == ["SELECT djangoapp_item"] * 4  # one span per statement, not two
    assert {s.instrumentation_scope.name for s in sql} == {"scope_otel.instrumentors.django"}
    assert len(everything) == len([s for s in spans.all() if s.kind is SpanKind.CLIENT])
    if not with_driver:
        assert len(everything) == 4
    first = dict(sql[0].attributes)
    assert first["db.system.name"] == "sqlite" and first["db.namespace"] == os.path.basename(settings.DATABASES["default"]["NAME"])
    assert first["db.operation.name"] == "SELECT" and first["db.collection.name"] == "djangoapp_item"
    assert "%s" in sql[1].attributes["db.query.text"]  # placeholders, never the values
    assert request.attributes["scope.db.statements"] == _statements(everything)
    assert request.attributes["scope.db.repeated_statements"] == 2  # the N+1: the same get() three times


def _statements(client_spans):
    """Statements the spans record: one each, a connection's ``connect`` span its set-up's number."""
    return sum(s.attributes.get("scope.db.setup_statements", 1) for s in client_spans)


@pytest.mark.parametrize("with_driver", [False, True], ids=["django", "django+sqlite3"])
def test_a_new_connections_setup_is_one_connect_span_listing_every_statement(spans, with_driver):
    from django.db import connection
    from django.db.backends.signals import connection_created

    from scope_otel.instrumentors.dbapi import ScopeDBAPIInstrumentor

    from contextlib import nullcontext

    def receiver(connection, **_):  # the program's own set-up, through a Django cursor
        with connection.cursor() as cursor:
            cursor.execute("SELECT 42")

    connection.close()
    connection_created.connect(receiver)
    driver = instrumented(ScopeDBAPIInstrumentor(), spans) if with_driver else nullcontext()
    try:
        with instrumented(ScopeDjangoInstrumentor(), spans), driver:
            with spans.tracer.start_as_current_span("work"):
                connection.ensure_connection()
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
    finally:
        connection_created.disconnect(receiver)
        connection.close()
    (work,) = spans.named("work")
    client = sql_children(spans, work)
    assert [s.name for s in client] == ["connect", "SELECT"]
    assert len(client) == len([s for s in spans.all() if s.kind is SpanKind.CLIENT])
    connect = client[0].attributes
    texts = connect["db.query.text"].split("; ")
    if with_driver:  # the backend's own set-up, run on the driver's connection
        assert "PRAGMA foreign_keys = ON" in texts and "PRAGMA legacy_alter_table = OFF" in texts
    assert texts[-1] == "SELECT ?"  # the receiver's, last; literals as placeholders
    assert connect["scope.db.setup_statements"] == len(texts)
    assert connect["db.system.name"] == "sqlite" and "db.namespace" in connect
    assert client[1].attributes["db.query.text"] == "SELECT ?"


def test_a_failing_connection_setup_is_an_error_span_and_later_statements_are_recorded(spans):
    from django.db import DatabaseError, connection
    from django.db.backends.signals import connection_created

    def receiver(connection, **_):
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    connection.close()
    connection_created.connect(receiver)
    try:
        with instrumented(ScopeDjangoInstrumentor(), spans), spans.tracer.start_as_current_span("work"):
            with pytest.raises(DatabaseError):
                connection.ensure_connection()
            connection_created.disconnect(receiver)
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
    finally:
        connection_created.disconnect(receiver)
        connection.close()
    (work,) = spans.named("work")
    client = sql_children(spans, work)
    assert [s.name for s in client] == ["connect", "SELECT"]
    assert client[0].status.status_code is StatusCode.ERROR
    assert client[0].attributes["error.type"] == "OperationalError"
    assert client[0].attributes["db.query.text"] == "SELECT * FROM no_such_table"


def test_raw_cursor_executemany_and_savepoints_are_spans(spans):
    from scope_otel.instrumentors.dbapi import ScopeDBAPIInstrumentor

    _fresh_items()
    with instrumented(ScopeDjangoInstrumentor(), spans), instrumented(ScopeDBAPIInstrumentor(), spans):
        with serve(wsgi_app()) as url:
            assert requests.get(f"{url}/sql/").json() == {"a": 1}
            (request,) = server_spans(spans)
    names = [s.name for s in sql_children(spans, request)]
    assert names == ["connect", "BEGIN", "INSERT djangoapp_item", "SAVEPOINT", "INSERT djangoapp_item",
                     "ROLLBACK", "RELEASE", "SELECT djangoapp_item", "COMMIT"], names
    assert request.attributes["scope.db.statements"] == _statements(sql_children(spans, request))


def test_fast_deletes_stay_fast(spans):
    import re

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.instrumentors.apps.djangoapp.models import Item

    def deletes():
        pks = _fresh_items("a", "b", "c")
        with CaptureQueriesContext(connection) as queries:
            Item.objects.filter(pk__in=pks[:2]).delete()
            Item(pk=pks[2]).delete()
        return [re.sub(r"\d+", "N", q["sql"]) for q in queries.captured_queries]

    plain = deletes()
    with instrumented(ScopeDjangoInstrumentor(), spans), spans.tracer.start_as_current_span("work"):
        traced = deletes()
    # the same SQL: no SELECT of the rows first, no transaction around the single delete
    assert traced == plain
    assert [q.split()[0] for q in plain] == ["BEGIN", "DELETE", "COMMIT", "DELETE"]
    (work,) = spans.named("work")
    assert [s.name for s in spans.children(work) if s.kind is SpanKind.CLIENT][-3:] == [
        "BEGIN", "DELETE djangoapp_item", "DELETE djangoapp_item"]


def test_full_level_reads_only_loaded_fields_and_says_nothing_after_a_delete(spans):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from scope_otel.instrumentors import _report
    from tests.instrumentors.apps.djangoapp.models import Item

    (pk,) = _fresh_items("fig")
    before = {k: v for k, v in _report.stats().items() if k.startswith("django")}
    with level_full(), instrumented(ScopeDjangoInstrumentor(), spans), spans.tracer.start_as_current_span("work"):
        with CaptureQueriesContext(connection) as queries:
            item = Item.objects.only("name").get(pk=pk)  # api_key deferred
            item.name = "FIG"
            item.save(update_fields=["name"])
            Item.objects.only("name").get(pk=pk).delete()
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["SELECT", "UPDATE", "SELECT", "DELETE"]
    (work,) = spans.named("work")
    (change,) = [e.attributes for e in work.events if e.name == "scope.state_change"]
    assert change["scope.action"] == "update" and "name='FIG'" in change["scope.value"]
    assert "api_key" not in change["scope.value"]  # deferred: not loaded, not shown
    after = {k: v for k, v in _report.stats().items() if k.startswith("django")}
    assert after == before


def test_streaming_response_span_ends_exactly_once_with_the_test_client(spans, caplog):
    from django.test import Client
    from opentelemetry.sdk.trace import SpanProcessor

    ends = []

    class Count(SpanProcessor):
        def on_end(self, span):
            ends.append(span.name)

    spans.provider.add_span_processor(Count())
    with instrumented(ScopeDjangoInstrumentor(), spans):
        response = Client().get("/stream/")
        assert b"".join(response.streaming_content) == b"chunk0 chunk1 chunk2 "
        response.close()
    assert ends == ["GET stream/"]
    assert not [r for r in caplog.records if "ended span" in r.getMessage()]


def test_sql_nests_under_the_recorded_function_it_runs_in(spans):
    from opentelemetry import trace

    from scope_otel.capture import runtime
    from tests.instrumentors.apps.djangoapp.models import Item

    fid = runtime.register("tests.instrumentors", "count_items", __file__, 1)
    with instrumented(ScopeDjangoInstrumentor(), spans), spans.tracer.start_as_current_span("request"):
        token = runtime.enter(fid)
        if token is None:
            pytest.skip("the capture runtime records nothing in this process")
        try:
            function_span_id = trace.get_current_span().get_span_context().span_id
            Item.objects.count()
        finally:
            runtime.exit(token)
    (sql,) = [s for s in spans.all() if s.kind is SpanKind.CLIENT]
    assert sql.parent.span_id == function_span_id


def test_async_view_sql_nests_under_its_request(spans):
    from django.core.handlers.asgi import ASGIHandler

    _fresh_items("fig")
    with instrumented(ScopeDjangoInstrumentor(), spans):
        with uvicorn_server(ASGIHandler()) as url:
            assert requests.get(f"{url}/async-count/").json() == {"count": 1}
            (request,) = server_spans(spans)
    (sql,) = sql_children(spans, request)
    assert sql.name == "SELECT djangoapp_item"
    assert request.attributes["scope.db.statements"] == 1


@pytest.fixture
def pg_items():
    from django.db import connections

    try:
        connections["pg"].ensure_connection()
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {type(exc).__name__}")
    from tests.instrumentors.apps.djangoapp.models import create_tables

    create_tables("pg")
    yield
    connections["pg"].close()


def test_postgresql_orm_statements_are_one_span_each_with_server_and_rows(spans, pg_items):
    from scope_otel.instrumentors.dbapi import ScopeDBAPIInstrumentor
    from tests.instrumentors.apps.djangoapp.models import Item

    _fresh_items("fig", "kiwi", using="pg")
    with instrumented(ScopeDjangoInstrumentor(), spans), instrumented(ScopeDBAPIInstrumentor(), spans):
        with spans.tracer.start_as_current_span("work") as work:
            assert sorted(Item.objects.using("pg").values_list("name", flat=True)) == ["fig", "kiwi"]
            Item.objects.using("pg").filter(name="fig").update(name="FIG")
    sql = [s for s in spans.all() if s.kind is SpanKind.CLIENT]
    assert [s.name for s in sql] == ["SELECT djangoapp_item", "UPDATE djangoapp_item"]
    assert {s.instrumentation_scope.name for s in sql} == {"scope_otel.instrumentors.django"}  # not psycopg's too
    assert all(s.parent.span_id == work.get_span_context().span_id for s in sql)
    attrs = dict(sql[0].attributes)
    assert attrs["db.system.name"] == "postgresql" and attrs["db.namespace"] == "test"
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == 5432
    assert attrs["db.response.returned_rows"] == 2


def test_postgresql_connection_setup_is_one_connect_span(spans, pg_items):
    from django.db import connections
    from django.db.backends.signals import connection_created

    from scope_otel.instrumentors.dbapi import ScopeDBAPIInstrumentor

    def receiver(connection, **_):  # the program's set-up, the usual kind on PostgreSQL
        if connection.alias == "pg":
            with connection.cursor() as cursor:
                cursor.execute("SET search_path TO public")

    pg = connections["pg"]
    pg.close()
    connection_created.connect(receiver)
    try:
        with instrumented(ScopeDjangoInstrumentor(), spans), instrumented(ScopeDBAPIInstrumentor(), spans):
            with spans.tracer.start_as_current_span("work") as work:
                with pg.cursor() as cursor:
                    cursor.execute("SELECT 1")
    finally:
        connection_created.disconnect(receiver)
        pg.close()
    sql = [s for s in spans.all() if s.kind is SpanKind.CLIENT]
    assert [s.name for s in sql] == ["connect", "SELECT"]
    assert all(s.parent.span_id == work.get_span_context().span_id for s in sql)
    connect = sql[0].attributes
    assert connect["db.query.text"].split("; ")[-1] == "SET search_path TO public"
    assert connect["scope.db.setup_statements"] == len(connect["db.query.text"].split("; "))
    assert connect["db.system.name"] == "postgresql" and connect["server.port"] == 5432


def test_execute_wrappers_stay_the_programs_own(spans):
    """Django's ``connection.execute_wrappers`` lists only what the program put there
    (Django's own ``ExecuteWrapperTests`` assert it is empty), and a wrapper of the
    program sees every statement as before, with the SQL span inside it."""
    from django.db import connection

    from tests.instrumentors.apps.djangoapp.models import Item

    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append((sql.split()[0], many, context["connection"].alias))
        return execute(sql, params, many, context)

    connection.close()  # the next statement opens the connection under the integration
    with instrumented(ScopeDjangoInstrumentor(), spans), spans.tracer.start_as_current_span("work"):
        Item.objects.count()  # connects
        assert connection.execute_wrappers == []
        with connection.execute_wrapper(wrapper):
            assert connection.execute_wrappers == [wrapper]
            Item.objects.filter(name="x").count()
            with connection.cursor() as cursor:
                cursor.executemany("UPDATE djangoapp_item SET name = %s WHERE id = %s", [("y", -1), ("z", -2)])
        assert connection.execute_wrappers == []
    assert seen == [("SELECT", False, "default"), ("UPDATE", True, "default")]
    names = [s.name for s in spans.all() if s.kind is SpanKind.CLIENT]
    assert names == ["SELECT djangoapp_item", "SELECT djangoapp_item", "UPDATE djangoapp_item"]


def test_connection_opened_in_another_thread_before_instrumenting_is_covered(spans):
    """Django keeps a connection per thread; one a worker thread opened before
    ``instrument()`` records its statements too."""
    from django.db import connection

    from tests.instrumentors.apps.djangoapp.models import Item

    opened, go, done = threading.Event(), threading.Event(), threading.Event()
    counts = []

    def worker():
        try:
            Item.objects.count()  # this thread's connection, opened before instrumenting
            opened.set()
            go.wait(10)
            with spans.tracer.start_as_current_span("worker"):
                counts.append(Item.objects.count())
        finally:
            connection.close()
            opened.set()
            done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    assert opened.wait(10)
    with instrumented(ScopeDjangoInstrumentor(), spans):
        go.set()
        assert done.wait(10)
    thread.join(10)
    assert len(counts) == 1
    (work,) = spans.named("worker")
    assert [s.name for s in spans.children(work) if s.kind is SpanKind.CLIENT] == ["SELECT djangoapp_item"]
