"""Call-graph edges counted as spans arrive (schemas/ch_007_edges_and_search.sql) equal a join over the spans."""
from __future__ import annotations

import os
import shutil

import pytest

from scope_otel.store import migrations, open_store
from scope_otel.store.engine import close_engine

COLUMNS = "(Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Duration, StatusCode)"

#: The graph computed from the spans at query time (what the views did before ch_007): every child
#: span joined to its parent span, counted per (parent service, name) -> (child service, name).
FROM_SPANS = """
SELECT p.ServiceName AS ParentService, p.SpanName AS Parent, c.ServiceName AS ChildService, c.SpanName AS Child,
       count() AS Calls, countIf(c.StatusCode IN ('STATUS_CODE_ERROR', 'Error')) AS Errors,
       quantilesBFloat16(0.5, 0.95, 0.99)(c.Duration) AS Q
FROM (SELECT ParentKey, ServiceName, SpanName, SpanKind, StatusCode, Duration
      FROM otel.scope_spans_by_trace WHERE ParentKey != 0) AS c
INNER JOIN (SELECT SpanKey AS Key, any(ServiceName) AS ServiceName, any(SpanName) AS SpanName, any(SpanKind) AS SpanKind
            FROM otel.scope_spans_by_trace GROUP BY Key) AS p ON c.ParentKey = p.Key
WHERE {extra}
GROUP BY ParentService, Parent, ChildService, Child
ORDER BY ALL"""
SERVICE_ONLY = ("c.SpanKind IN ('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER') AND p.SpanKind IN ('SPAN_KIND_CLIENT', "
                "'SPAN_KIND_PRODUCER') AND p.ServiceName != c.ServiceName")


def spans(rows: list[tuple]) -> str:
    """``SELECT`` of spans given as (trace, span, parent, name, kind, service, duration_ns, error)."""
    values = ", ".join(
        f"(now64(9) - INTERVAL 10 SECOND, '{t}', '{s}', '{p}', '{n}', 'SPAN_KIND_{k}', '{svc}', {d}, "
        f"'{'STATUS_CODE_ERROR' if e else 'STATUS_CODE_UNSET'}')" for t, s, p, n, k, svc, d, e in rows)
    return f"INSERT INTO otel.otel_traces {COLUMNS} VALUES {values}"


def function_edges(store) -> list[tuple]:
    return [(e["ParentService"], e["Parent"], e["ChildService"], e["Child"], e["Calls"], e["Errors"], e["Q"])
            for e in store.query("SELECT * FROM otel.scope_function_edges ORDER BY ALL").dicts()]


def service_edges(store) -> list[tuple]:
    return [(e["Parent"], e["Child"], e["Calls"], e["Errors"], e["Q"])
            for e in store.query("SELECT * FROM otel.scope_service_edges ORDER BY ALL").dicts()]


def from_spans(store, extra: str = "1") -> list[tuple]:
    return [tuple(r) for r in store.query(FROM_SPANS.format(extra=extra)).rows]


def services_from_spans(store) -> list[tuple]:
    return [(r[0], r[2], *r[4:]) for r in from_spans(store, SERVICE_ONLY)]


T1, T2, T3 = "a1" * 16, "b2" * 16, "c3" * 16


def schemas_before(tmp_path, version: str, first_view: str, old_views: str):
    """A schema folder as it was before migration ``version``: the earlier files, and the repeatable
    views up to ``first_view`` followed by ``old_views`` (the edge views of that time)."""
    old = tmp_path / f"schemas-before-{version}"
    old.mkdir()
    for name in os.listdir(migrations.schema_dir()):
        if name.startswith("ch_0") and name < version:
            shutil.copy(os.path.join(migrations.schema_dir(), name), old / name)
    with open(os.path.join(migrations.schema_dir(), "ch_R_views.sql"), encoding="utf-8") as fh:
        views = fh.read()
    head = views[:views.index(f"CREATE OR REPLACE VIEW ${{db}}.{first_view}")]
    (old / "ch_R_views.sql").write_text(head + old_views, encoding="utf-8")
    return old


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "edges"), "otel")
    yield s
    s.close()
    close_engine()


def test_a_call_is_counted_once_whichever_of_its_spans_arrives_first(store):
    # T1: parent and children in one insert; T2: the children first (they end, and are exported,
    # before their parent), the parent in a later insert; T3: parent first, a child later.
    store.query(spans([(T1, "1", "", "GET /", "SERVER", "shop", 9000, 0),
                       (T1, "2", "1", "Cart.add", "INTERNAL", "shop", 3000, 0),
                       (T1, "3", "1", "Cart.add", "INTERNAL", "shop", 5000, 1),
                       (T2, "3", "2", "Cart.add", "INTERNAL", "shop", 4000, 1),
                       (T2, "4", "3", "SELECT shop.db", "CLIENT", "shop", 700, 0)]))
    assert function_edges(store) == from_spans(store)
    store.query(spans([(T2, "2", "1", "place_order", "INTERNAL", "shop", 8000, 0),
                       (T2, "1", "", "POST /orders", "SERVER", "shop", 9000, 0),
                       (T3, "1", "", "POST /pay", "CLIENT", "shop", 4000, 0)]))
    store.query(spans([(T3, "2", "1", "charge", "SERVER", "pay", 3500, 1)]))
    store.query(spans([(T3, "3", "1", "charge", "SERVER", "pay", 1500, 0)]))
    edges = function_edges(store)
    assert edges == from_spans(store)
    calls = {(e[1], e[3]): (e[4], e[5]) for e in edges}
    assert calls == {("GET /", "Cart.add"): (2, 1), ("Cart.add", "SELECT shop.db"): (1, 0),
                     ("place_order", "Cart.add"): (1, 1), ("POST /orders", "place_order"): (1, 0),
                     ("POST /pay", "charge"): (2, 1)}
    assert service_edges(store) == services_from_spans(store)
    assert [(e[0], e[1], e[2], e[3]) for e in service_edges(store)] == [("shop", "pay", 2, 1)]
    # a child whose parent never arrives is not an edge (as in the join), and waits
    store.query(spans([(T3, "9", "8", "orphan", "INTERNAL", "shop", 10, 0)]))
    assert function_edges(store) == from_spans(store)
    assert store.query("SELECT count() FROM otel.scope_edge_pending WHERE Child = 'orphan'").rows == [(1,)]


def test_graph_window_reads_the_minutes_of_the_window(store):
    store.query(spans([(T1, "1", "", "GET /", "SERVER", "shop", 9000, 0),
                       (T1, "2", "1", "Cart.add", "INTERNAL", "shop", 3000, 0)]))
    store.query(f"INSERT INTO otel.otel_traces {COLUMNS} VALUES "
                f"(now64(9) - INTERVAL 3 HOUR, '{T2}', '1', '', 'GET /', 'SPAN_KIND_SERVER', 'shop', 9000, ''), "
                f"(now64(9) - INTERVAL 3 HOUR, '{T2}', '2', '1', 'Cart.add', 'SPAN_KIND_INTERNAL', 'shop', 10, '')")
    import datetime as dt

    hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    assert [e["Calls"] for e in store.function_edges()] == [2]
    assert [e["Calls"] for e in store.function_edges(since=hour_ago)] == [1]


def test_a_window_counts_whole_hours_from_the_hourly_table_and_the_rest_by_minute(store):
    """Calls every 7 minutes over 5 hours: any window counts exactly the calls started in its minutes."""
    import datetime as dt

    store.query(f"""
        INSERT INTO otel.otel_traces {COLUMNS}
        SELECT now64(9) - toIntervalMinute(intDiv(number, 2) * 7), toString(intDiv(number, 2)), toString(number % 2),
               if(number % 2 = 0, '', '0'), if(number % 2 = 0, 'GET /', 'Cart.add'), 'SPAN_KIND_INTERNAL', 'shop',
               1000, '' FROM numbers(90)""")
    now = dt.datetime.now(dt.timezone.utc)
    for minutes in (0, 1, 59, 60, 61, 119, 150, 299, 400):
        since = now - dt.timedelta(minutes=minutes, seconds=13)
        expected = store.query(
            "SELECT count() FROM otel.scope_spans_by_trace WHERE ParentKey != 0 "
            "AND toStartOfMinute(Timestamp) >= toStartOfMinute(fromUnixTimestamp64Nano({s:Int64}))",
            {"s": int(since.timestamp() * 1e9)}).rows[0][0]
        assert sum(e["Calls"] for e in store.function_edges(since=since)) == expected, minutes
    assert store.query("SELECT sum(Calls) FROM otel.scope_edges_rollup WHERE Grain = 'h'").rows == [(45,)]


def test_a_store_made_before_ch_007_shows_its_old_spans_and_pairs_them_with_new_ones(tmp_path, monkeypatch):
    """The migration counts the calls already stored (a backfill) and keeps their unmatched children waiting."""
    # the views as they were: the edge views joined spans at query time
    old = schemas_before(tmp_path, "ch_007", "scope_service_edges_between", OLD_EDGE_VIEWS)
    path = str(tmp_path / "old-store")
    try:
        with monkeypatch.context() as patched:
            patched.setattr(migrations, "schema_dir", lambda: str(old))
            store = open_store(path, "otel")
            store.query(spans([(T1, "1", "", "GET /", "SERVER", "shop", 9000, 0),
                               (T1, "2", "1", "Cart.add", "INTERNAL", "shop", 3000, 1),
                               (T2, "3", "2", "Cart.add", "INTERNAL", "shop", 4000, 0)]))
            before = function_edges(store)
            assert store.query("EXISTS TABLE otel.scope_edges").rows == [(0,)]
            store.close()
            close_engine()
        store = open_store(path, "otel")
        after = function_edges(store)
        assert after == from_spans(store)
        # the same calls and errors as the old views; p50/p95/p99 now bfloat16 estimates (within 0.4 %)
        assert [e[:6] for e in after] == [e[:6] for e in before]
        assert all(q == pytest.approx(old_q, rel=0.004) for a, b in zip(after, before) for q, old_q in zip(a[6], b[6]))
        # T2's Cart.add waited for its parent since the migration; T1 gains a child of an old parent
        store.query(spans([(T2, "2", "1", "place_order", "INTERNAL", "shop", 8000, 0),
                           (T1, "5", "2", "line_price", "INTERNAL", "shop", 10, 0)]))
        edges = function_edges(store)
        assert edges == from_spans(store)
        assert {(e[1], e[3]) for e in edges} == {("GET /", "Cart.add"), ("place_order", "Cart.add"),
                                                 ("Cart.add", "line_price")}
        store.close()
    finally:
        close_engine()


def test_edges_of_a_big_insert_equal_the_join_over_its_spans(store):
    """4,000 traces in one INSERT, each trace's children before its root, ~1 % errors: counts and quantiles agree.

    (One block: a call whose spans land in two blocks of one INSERT can be missed: see ch_007.)"""
    store.query(f"""
        INSERT INTO otel.otel_traces {COLUMNS}
        SELECT now64(9) - toIntervalMillisecond(number), toString(cityHash64(intDiv(number, 6))),
               toString(number % 6), if(number % 6 = 5, '', toString(intDiv(number % 6, 2) + 3)),
               ['Cart.add', 'line_price', 'SELECT shop.db', 'place_order', 'POST /pay', 'GET /'][number % 6 + 1],
               ['INTERNAL', 'INTERNAL', 'CLIENT', 'INTERNAL', 'SERVER', 'SERVER'][number % 6 + 1],
               if(number % 6 = 4, 'pay', 'shop'), 1000 + cityHash64(number) % 5000,
               if(cityHash64(number, 1) % 100 = 0, 'STATUS_CODE_ERROR', 'STATUS_CODE_UNSET')
        FROM numbers(24000)""")
    expected = from_spans(store)
    assert sum(e[4] for e in expected) == 20000
    assert function_edges(store) == expected


OLD_EDGE_VIEWS = """
CREATE OR REPLACE VIEW ${db}.scope_function_edges ${on_cluster} AS
SELECT p.ServiceName AS ParentService, p.SpanName AS Parent, c.ServiceName AS ChildService, c.SpanName AS Child,
       count() AS Calls, countIf(c.StatusCode IN ('STATUS_CODE_ERROR', 'Error')) AS Errors,
       quantiles(0.5, 0.95, 0.99)(c.Duration) AS Q, Q[1] AS P50Ns, Q[2] AS P95Ns, Q[3] AS P99Ns
FROM (SELECT ParentKey, ServiceName, SpanName, StatusCode, Duration FROM ${db}.scope_spans_by_trace
      WHERE ParentKey != 0) AS c
INNER JOIN (SELECT SpanKey AS Key, any(ServiceName) AS ServiceName, any(SpanName) AS SpanName
            FROM ${db}.scope_spans_by_trace GROUP BY Key) AS p ON c.ParentKey = p.Key
GROUP BY ParentService, Parent, ChildService, Child;
"""


def test_a_store_counted_by_ch_007_keeps_its_counts_after_ch_008_and_pairs_waiting_children(tmp_path, monkeypatch):
    """ch_008 moves the counts to scope_edges_rollup (both grains) and swaps the views; nothing counted twice or lost."""
    old = schemas_before(tmp_path, "ch_008", "scope_edges_between", OLD_007_VIEWS)
    path = str(tmp_path / "store-007")
    three_hours_ago = "now64(9) - INTERVAL 3 HOUR"
    try:
        with monkeypatch.context() as patched:
            patched.setattr(migrations, "schema_dir", lambda: str(old))
            store = open_store(path, "otel")
            store.query(spans([(T1, "1", "", "GET /", "SERVER", "shop", 9000, 0),
                               (T1, "2", "1", "Cart.add", "INTERNAL", "shop", 3000, 1),
                               (T2, "3", "2", "Cart.add", "INTERNAL", "shop", 4000, 0)]))
            store.query(spans([(T3, "1", "", "GET /", "SERVER", "shop", 9000, 0),
                               (T3, "2", "1", "Cart.add", "INTERNAL", "shop", 5000, 0)]).replace(
                "now64(9) - INTERVAL 10 SECOND", three_hours_ago))
            before = function_edges(store)
            assert store.query("EXISTS TABLE otel.scope_edges_rollup").rows == [(0,)]
            assert store.query("SELECT sum(Calls) FROM otel.scope_edges_hourly").rows == [(2,)]
            store.close()
            close_engine()
        store = open_store(path, "otel")
        assert function_edges(store) == before == from_spans(store)
        assert store.query("SELECT Grain, sum(Calls) FROM otel.scope_edges_rollup GROUP BY Grain ORDER BY Grain"
                           ).rows == [("h", 2), ("m", 2)]
        # T2's Cart.add waited (ch_007's pending table) for its parent; T1 gains a child of an old parent
        store.query(spans([(T2, "2", "1", "place_order", "INTERNAL", "shop", 8000, 0),
                           (T1, "5", "2", "line_price", "INTERNAL", "shop", 10, 0)]))
        edges = function_edges(store)
        assert edges == from_spans(store)
        assert sum(e[4] for e in edges) == 4
        # the old tables are no longer written
        assert store.query("SELECT sum(Calls) FROM otel.scope_edges_hourly").rows == [(2,)]
        store.close()
    finally:
        close_engine()


def test_one_block_with_parents_in_it_in_the_table_and_not_yet_arrived(store):
    """Children in one INSERT whose parents are in that INSERT, stored before it, and written after it."""
    store.query(spans([(T1, "1", "", "GET /", "SERVER", "shop", 9000, 0)]))
    store.query(spans([(T1, "2", "1", "Cart.add", "INTERNAL", "shop", 3000, 0),        # parent stored before
                       (T2, "1", "", "POST /orders", "SERVER", "shop", 9000, 0),
                       (T2, "2", "1", "place_order", "INTERNAL", "shop", 8000, 1),     # parent in the block
                       (T3, "2", "1", "charge", "SERVER", "pay", 1500, 0)]))           # parent comes later
    assert store.query("SELECT count() FROM otel.scope_edge_pending").rows == [(1,)]
    store.query(spans([(T3, "1", "", "POST /pay", "CLIENT", "shop", 4000, 0)]))
    edges = function_edges(store)
    assert edges == from_spans(store)
    assert {(e[1], e[3]): e[4] for e in edges} == {("GET /", "Cart.add"): 1, ("POST /orders", "place_order"): 1,
                                                  ("POST /pay", "charge"): 1}


#: ch_R_views.sql's edge views as they read ch_007's two tables.
OLD_007_VIEWS = """
CREATE OR REPLACE VIEW ${db}.scope_function_edges ${on_cluster} AS
SELECT ParentService, Parent, ChildService, Child, sum(Calls) AS Calls, sum(Errors) AS Errors,
       quantilesBFloat16Merge(0.5, 0.95, 0.99)(Durations) AS Q, Q[1] AS P50Ns, Q[2] AS P95Ns, Q[3] AS P99Ns
FROM ${db}.scope_edges
GROUP BY ParentService, Parent, ChildService, Child;
"""
