"""scope-otel schema (scope_otel.store.schema_cli): apply the schema ahead of time."""
from __future__ import annotations

from scope_otel.store.engine import close_engine
from scope_otel.store.schema_cli import main


def test_schema_command_applies_once_then_reports_current(tmp_path, capsys):
    store = str(tmp_path / "schema-store")
    try:
        assert main(["--store", store, "--database", "otel", "--ttl-days", "7"]) == 0
        first = capsys.readouterr().out
        assert "applied ch_001_traces.sql, ch_002_scope_events.sql, ch_003_spans_by_trace.sql, ch_004_part_format.sql, ch_005_spans_by_time.sql, ch_006_function_stats.sql, ch_007_edges_and_search.sql, ch_008_edges_cheaper_inserts.sql, ch_R_views.sql" in first
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
