"""scope-otel schema (scope_otel.store.schema_cli): apply the schema ahead of time."""
from __future__ import annotations

from scope_otel.store.engine import close_engine
from scope_otel.store.schema_cli import main


def test_schema_command_applies_once_then_reports_current(tmp_path, capsys):
    store = str(tmp_path / "schema-store")
    try:
        assert main(["--store", store, "--database", "otel", "--ttl-days", "7"]) == 0
        first = capsys.readouterr().out
        assert "applied ch_001_traces.sql, ch_002_scope_events.sql, ch_003_spans_by_trace.sql, ch_004_part_format.sql, ch_005_spans_by_time.sql, ch_006_function_stats.sql, ch_R_views.sql" in first
        assert main(["--store", store, "--database", "otel"]) == 0
        assert capsys.readouterr().out.strip().endswith("schema current")
    finally:
        close_engine()


def test_schema_command_refuses_unsafe_names_before_connecting(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "x"), "--database", "otel; DROP"]) == 2
    assert "database name" in capsys.readouterr().err
    assert main(["--store", str(tmp_path / "x"), "--database", "otel", "--cluster", "a b"]) == 2
    assert "cluster name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_store_made_before_the_time_projection_gains_it_for_its_existing_spans(tmp_path, monkeypatch):
    import os
    import shutil

    from scope_otel.store import migrations, open_store

    old = tmp_path / "schemas-before-005"
    old.mkdir()
    for name in os.listdir(migrations.schema_dir()):
        if name.startswith("ch_") and name != "ch_005_spans_by_time.sql":
            shutil.copy(os.path.join(migrations.schema_dir(), name), old / name)
    path = str(tmp_path / "old-store")
    spans = ("SELECT now64(9) - INTERVAL number SECOND, 'aa' || toString(intDiv(number, 2)), toString(number), "
             "if(number % 2 = 0, '', toString(number - 1)), if(number % 2 = 0, 'root', 'child'), "
             "'SPAN_KIND_INTERNAL', 'svc', 1000 + number, 'STATUS_CODE_UNSET' FROM numbers(10)")
    columns = "(Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Duration, StatusCode)"
    try:
        with monkeypatch.context() as patched:
            patched.setattr(migrations, "schema_dir", lambda: str(old))
            store = open_store(path, "otel")
            store.query(f"INSERT INTO otel.otel_traces {columns} {spans}")
            before = store.function_edges()
            store.close()
            close_engine()
        store = open_store(path, "otel")
        parts = store.query("SELECT count() FROM system.projection_parts WHERE database = 'otel' "
                            "AND table = 'scope_spans_by_trace' AND name = 'by_time' AND active").rows[0][0]
        assert parts >= 1
        assert [(e["Parent"], e["Child"], e["Calls"]) for e in before] == [("root", "child", 5)]
        assert store.function_edges() == before
        store.close()
    finally:
        close_engine()
