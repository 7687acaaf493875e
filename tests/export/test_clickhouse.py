"""ClickHouseSpanExporter and the correlation views, on a real chDB (and a server if configured)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from scope_otel.export.clickhouse import ClickHouseSpanExporter
from scope_otel.store import Store, StoreError
from scope_otel.store.target import parse, TargetError
from tests.export import scenario

# The collector's clickhouseexporter traces table (internal/sqltemplates/traces_table.sql).
COLLECTOR_COLUMNS = [
    ("Timestamp", "DateTime64(9)"), ("TraceId", "String"), ("SpanId", "String"),
    ("ParentSpanId", "String"), ("TraceState", "String"), ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"), ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"), ("ScopeName", "String"),
    ("ScopeVersion", "String"), ("SpanAttributes", "Map(LowCardinality(String), String)"),
    ("Duration", "UInt64"), ("StatusCode", "LowCardinality(String)"), ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"), ("Events.Name", "Array(LowCardinality(String))"),
    ("Events.Attributes", "Array(Map(LowCardinality(String), String))"),
    ("Links.TraceId", "Array(String)"), ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"), ("Links.Attributes", "Array(Map(LowCardinality(String), String))"),
]


@pytest.fixture(scope="module")
def recorded(ch_target):
    url, database = ch_target
    exporter = ClickHouseSpanExporter(url, database, embedded="inprocess", idle_close_s=30.0)
    ids = scenario.record(exporter)
    store = Store(parse(url, database))
    yield exporter, store, ids
    store.close()


def test_otel_traces_has_exactly_the_collector_clickhouseexporter_columns(recorded):
    _, store, _ = recorded
    rows = store.query("DESCRIBE TABLE otel_traces").rows
    assert [(r[0], r[1]) for r in rows] == COLLECTOR_COLUMNS


def test_spans_are_stored_with_collector_conventions(recorded):
    exporter, store, ids = recorded
    rows = store.query(
        "SELECT SpanName, SpanKind, ServiceName, StatusCode, ParentSpanId, ScopeName, ScopeVersion "
        "FROM otel_traces WHERE SpanId = {sid:String}", {"sid": ids.pay_server},
    ).rows
    assert rows == [("POST /pay", "SPAN_KIND_SERVER", "pay", "STATUS_CODE_ERROR", ids.pay_client,
                     "tests.scenario", "1.0")]
    stats = exporter.stats()
    assert stats["spans_queued"] == 7 and stats["spans_dropped"] == 0 and stats["spool_pending"] == 0


def test_trace_id_lookup_table_is_filled_by_the_materialized_view(recorded):
    _, store, ids = recorded
    rows = store.query("SELECT count() FROM otel_traces_trace_id_ts WHERE TraceId = {t:String}",
                       {"t": ids.trace_id}).rows
    assert rows[0][0] >= 1


def test_function_spans_are_exploded_into_scope_events_in_order(recorded):
    _, store, ids = recorded
    events = [e for e in store.events(ids.trace_id) if e["SpanId"] == ids.cart]
    assert [(e["Kind"], e["Name"], e["Value"]) for e in events] == [
        ("arg", "items", "[1, 2]"), ("state_change", "self.total", "3"), ("return", "", "3"),
    ]
    row = store.query("SELECT Function, Hlc, ServiceName FROM scope_events WHERE SpanId = {s:String} LIMIT 1",
                      {"s": ids.cart}).rows[0]
    assert row == ("shop.cart:total", "0190000000050000.shop", "shop")


def test_exceptions_become_scope_events_with_type_and_message(recorded):
    _, store, ids = recorded
    raised = [e for e in store.events(ids.trace_id) if e["Kind"] == "exception"]
    assert [(e["SpanId"], e["Name"], e["Value"]) for e in raised] == [(ids.charge, "ValueError", "card declined")]
    assert "Traceback" in raised[0]["Attributes"]["exception.stacktrace"]


def test_call_tree_is_depth_first_with_siblings_in_start_order(recorded):
    _, store, ids = recorded
    tree = store.call_tree(ids.trace_id)
    assert [(t["SpanId"], t["Depth"]) for t in tree] == [
        (ids.root, 0), (ids.cart, 1), (ids.pay_client, 1), (ids.pay_server, 2), (ids.charge, 3), (ids.publish, 1),
    ]


def test_error_path_walks_from_each_failing_span_to_the_root(recorded):
    _, store, ids = recorded
    path = store.error_path(ids.trace_id)
    by_error: dict[str, list[str]] = {}
    for hop in path:
        by_error.setdefault(hop["ErrorSpanId"], []).append(hop["SpanId"])
    assert by_error == {
        ids.charge: [ids.charge, ids.pay_server, ids.pay_client, ids.root],
        ids.pay_server: [ids.pay_server, ids.pay_client, ids.root],
    }
    first = next(h for h in path if h["SpanId"] == ids.charge)
    assert (first["ExceptionType"], first["Exception"]) == ("ValueError", "card declined")


def test_service_edges_count_calls_and_errors_between_services(recorded):
    _, store, _ = recorded
    edges = {(e["Parent"], e["Child"]): e for e in store.service_edges()}
    assert set(edges) == {("shop", "pay")}
    assert (edges["shop", "pay"]["Calls"], edges["shop", "pay"]["Errors"]) == (1, 1)
    assert edges["shop", "pay"]["P99Ns"] >= edges["shop", "pay"]["P50Ns"] > 0


def test_function_edges_include_every_parent_child_pair(recorded):
    _, store, _ = recorded
    pairs = {(e["Parent"], e["Child"]) for e in store.function_edges()}
    assert pairs == {
        ("GET /checkout", "shop.cart:total"), ("GET /checkout", "POST /pay"), ("POST /pay", "POST /pay"),
        ("POST /pay", "pay.card:charge"), ("GET /checkout", "publish orders"),
    }


def test_message_edges_join_span_links_and_send_recv_events(recorded):
    _, store, _ = recorded
    edges = {(e["Via"], e["ProducerService"], e["Producer"], e["ConsumerService"], e["Consumer"], e["Messages"])
             for e in store.message_edges()}
    assert edges == {
        ("link", "shop", "publish orders", "worker", "process orders", 1),
        ("message", "shop", "", "worker", "worker.jobs:process", 1),
    }


def test_causal_order_follows_the_hybrid_logical_clock_not_wall_time(recorded):
    _, store, ids = recorded
    rows = store.causal_order(ids.trace_id)
    spans = [r["SpanId"] for r in rows if r["What"] == "span"]
    # cart started before the payment by wall clock, but its HLC is later.
    assert spans.index(ids.pay_client) < spans.index(ids.cart)
    assert spans[0] == ids.root


def test_hostile_values_are_stored_exactly_or_cut_and_counted(ch_target):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    url, database = ch_target
    exporter = ClickHouseSpanExporter(url, database, max_value_chars=1000, embedded="inprocess", idle_close_s=30.0)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    odd = "it's \"quoted\"\nnew line\ttab\x00nul ☃ '); DROP TABLE otel_traces; --"
    with provider.get_tracer("t").start_as_current_span("hostile", attributes={
        "odd": odd, "huge": "x" * 5000, "bad.utf8": b"ok\xff\xfe".decode("utf-8", "surrogateescape"),
        "list": ["a", "b"], "n": 3, "flag": True,
    }) as span:
        sid = f"{span.get_span_context().span_id:016x}"
    stats = exporter.stats()
    store = Store(parse(url, database))
    attrs = store.query("SELECT SpanAttributes FROM otel_traces WHERE SpanId = {s:String}", {"s": sid}).rows[0][0]
    assert attrs["odd"] == odd
    assert attrs["huge"] == "x" * 1000 and stats["values_truncated"] == 1
    assert attrs["bad.utf8"] == "ok\\xff\\xfe" and stats["values_escaped"] == 1
    assert (attrs["list"], attrs["n"], attrs["flag"]) == ('["a", "b"]', "3", "true")
    assert store.query("SELECT count() FROM otel_traces").rows[0][0] > 0  # the table survived


def test_otlp_requests_are_written_like_sdk_spans(ch_target):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    url, database = ch_target
    memory = InMemorySpanExporter()
    ids = scenario.record(memory)
    exporter = ClickHouseSpanExporter(url, database, embedded="inprocess", idle_close_s=30.0)
    request = encode_spans(memory.get_finished_spans())
    assert exporter.export_otlp(request).name == "SUCCESS"
    store = Store(parse(url, database))
    tree = store.call_tree(ids.trace_id)
    assert [t["SpanId"] for t in tree][:2] == [ids.root, ids.cart]
    row = store.query("SELECT SpanKind, StatusCode, ServiceName FROM otel_traces WHERE SpanId = {s:String}",
                      {"s": ids.charge}).rows[0]
    assert row == ("SPAN_KIND_INTERNAL", "STATUS_CODE_ERROR", "pay")
    kinds = [e["Kind"] for e in store.events(ids.trace_id) if e["SpanId"] == ids.cart]
    assert kinds == ["arg", "state_change", "return"]


def test_schema_versions_are_recorded_and_reapplying_changes_nothing(recorded, ch_target):
    from scope_otel.store.migrations import ensure_schema

    _, store, _ = recorded
    versions = store.query("SELECT Version, Name FROM scope_schema_versions ORDER BY Version").rows
    assert [v[1] for v in versions] == ["ch_001_traces.sql", "ch_002_scope_events.sql", "ch_003_spans_by_trace.sql",
                                         "ch_004_part_format.sql", "ch_005_spans_by_time.sql", "ch_006_function_stats.sql",
                                         "ch_007_edges_and_search.sql", "ch_008_edges_cheaper_inserts.sql",
                                         "ch_R_views.sql"]
    assert store._backend.run(lambda client: ensure_schema(client, store.database)) == []


def test_embedded_parts_are_compact_and_servers_keep_clickhouse_default(recorded, ch_target):
    from scope_otel.store.migrations import EMBEDDED_WIDE_PART_BYTES, SERVER_WIDE_PART_BYTES

    url, _ = ch_target
    _, store, _ = recorded
    tables = ("otel_traces", "otel_traces_trace_id_ts", "scope_events", "scope_spans_by_trace")
    expected = EMBEDDED_WIDE_PART_BYTES if url.startswith("chdb://") else SERVER_WIDE_PART_BYTES
    for table in tables:
        ddl = store.query(f"SHOW CREATE TABLE {table}").rows[0][0]
        assert f"min_bytes_for_wide_part = {expected}" in ddl, table
    if url.startswith("chdb://"):
        types = store.query("SELECT DISTINCT part_type FROM system.parts WHERE database = {d:String} "
                            "AND table = 'otel_traces' AND active", {"d": store.database}).rows
        assert types == [("Compact",)]


def test_unsafe_database_names_are_refused_before_any_sql():
    for bad in ("otel; DROP TABLE x", "a-b", "1abc", "x" * 65, ""):
        with pytest.raises(TargetError):
            ClickHouseSpanExporter("/tmp/never-created", bad)


def test_malformed_trace_ids_are_refused_by_the_query_api(recorded):
    _, store, _ = recorded
    with pytest.raises(StoreError, match="32 lowercase hex"):
        store.call_tree("' OR 1=1 --")


def test_importing_scope_otel_export_does_not_import_chdb():
    code = ("import sys, scope_otel, scope_otel.export; "
            "print('chdb' in sys.modules, 'clickhouse_connect' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_unreachable_server_spools_batches_that_a_later_store_replays(ch_target, tmp_path, caplog):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    url, database = ch_target
    spool = tmp_path / "spool"
    down = ClickHouseSpanExporter("http://alice:s3cret-pw@127.0.0.1:9", database, spool_dir=str(spool),
                                  retries=1, backoff_s=0.01, connect_timeout_s=0.5)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(down))
    with caplog.at_level(logging.DEBUG):
        for i in range(3):
            with provider.get_tracer("t").start_as_current_span(f"offline-{i}"):
                pass
    stats = down.stats()
    assert stats["spans_spooled"] == 3 and stats["spans_dropped"] == 0
    assert stats["retries"] >= 1 and stats["spool_pending"] >= 1
    assert "s3cret-pw" not in caplog.text and "s3cret-pw" not in repr(down.target)
    assert "Retrying" not in caplog.text  # urllib3's own retry chatter stays out of the app's logs
    assert "alice:***@" in down.target.display
    # The spool format does not depend on the destination: a store that can be
    # reached replays it when it opens.
    up = ClickHouseSpanExporter(url, database, spool_dir=str(spool), embedded="inprocess", idle_close_s=30.0)
    assert up.force_flush() is True
    assert up.stats()["batches_replayed"] == stats["spool_pending"]
    store = Store(parse(url, database))
    names = store.query("SELECT SpanName FROM otel_traces WHERE SpanName LIKE 'offline-%' ORDER BY SpanName").rows
    assert names == [("offline-0",), ("offline-1",), ("offline-2",)]


def test_export_after_shutdown_drops_and_counts_without_raising(ch_target, tmp_path):
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    url, database = ch_target
    memory = InMemorySpanExporter()
    scenario.record(memory)
    exporter = ClickHouseSpanExporter(url, database, spool_dir=str(tmp_path))
    exporter.shutdown()
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.FAILURE
    assert exporter.stats()["spans_dropped"] == 7


def test_a_full_spool_drops_and_counts_instead_of_growing(tmp_path):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    scenario.record(memory)
    exporter = ClickHouseSpanExporter("http://127.0.0.1:9", "otel", spool_dir=str(tmp_path), spool_max_bytes=1,
                                      retries=0, connect_timeout_s=0.5)
    exporter.export(memory.get_finished_spans())
    stats = exporter.stats()
    assert stats["spans_dropped"] == 7 and stats["spans_spooled"] == 0 and stats["spool_pending"] == 0
