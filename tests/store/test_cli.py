"""scope-otel query / trace / graph against a real store."""
from __future__ import annotations

import csv
import io
import json

import pytest

from scope_otel.export.clickhouse import ClickHouseSpanExporter
from scope_otel.store.cli import graph_main, query_main, trace_main
from tests.export import scenario


@pytest.fixture(scope="module")
def recorded(ch_target):
    url, database = ch_target
    exporter = ClickHouseSpanExporter(url, database, embedded="inprocess", idle_close_s=30.0)
    ids = scenario.record(exporter)
    return ["--store", url, "--database", database], ids


def test_query_prints_a_table_with_a_row_count(recorded, capsys):
    flags, _ = recorded
    assert query_main(["SELECT ServiceName, count() AS n FROM otel_traces GROUP BY ServiceName "
                       "ORDER BY ServiceName", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ServiceName", "n"]
    assert [line.split() for line in lines[2:5]] == [["pay", "2"], ["shop", "4"], ["worker", "1"]]
    assert lines[-1] == "(3 rows)"


def test_query_csv_and_json_formats_round_trip(recorded, capsys):
    flags, ids = recorded
    sql = f"SELECT SpanName, SpanAttributes FROM otel_traces WHERE SpanId = '{ids.cart}'"
    assert query_main([sql, "--format", "csv", *flags]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["SpanName", "SpanAttributes"] and rows[1][0] == "shop.cart:total"
    assert json.loads(rows[1][1])["scope.return"] == "3"
    assert query_main([sql, "--format", "json", *flags]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["SpanAttributes"]["scope.arg.items"] == "[1, 2]"


def test_query_with_bad_sql_fails_with_one_line_and_no_traceback(recorded, capsys):
    flags, _ = recorded
    assert query_main(["SELEC nonsense", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("scope-otel: ") and "Traceback" not in err and err.count("\n") == 1


def test_trace_prints_the_call_tree_with_args_returns_and_errors(recorded, capsys):
    flags, ids = recorded
    assert trace_main([ids.trace_id, *flags]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"trace {ids.trace_id}  (6 spans)"
    names = [line.strip() for line in lines[1:]]
    assert names[0].startswith("↑ [shop] GET /checkout")  # the root is on the error path
    assert any(n.startswith("[shop] shop.cart:total") for n in names)
    assert "arg items = [1, 2]" in names and "set self.total = 3" in names and "return 3" in names
    assert "raised ValueError: card declined" in names
    assert any(n.startswith("✗ [pay] pay.card:charge") for n in names)
    assert "error path (failing span → root):" in lines
    # indentation follows depth: the charge span is three levels down
    charge = next(line for line in lines if "pay.card:charge" in line and "✗" in line)
    assert charge.startswith("      ✗")


def test_trace_last_and_slowest_pick_a_trace(recorded, capsys):
    flags, ids = recorded
    assert trace_main(["--slowest", *flags]) == 0
    assert capsys.readouterr().out.startswith(f"trace {ids.trace_id}")
    assert trace_main(["--last", *flags]) == 0
    assert capsys.readouterr().out.startswith("trace ")


def test_trace_with_an_unknown_or_malformed_id_fails_cleanly(recorded, capsys):
    flags, _ = recorded
    assert trace_main(["0" * 32, *flags]) == 1
    assert "not found" in capsys.readouterr().err
    assert trace_main(["'; DROP TABLE otel_traces", *flags]) == 1
    assert "32 lowercase hex" in capsys.readouterr().err


def test_graph_by_service_in_text_dot_and_mermaid(recorded, capsys):
    flags, _ = recorded
    assert graph_main(["--by", "service", *flags]) == 0
    text = capsys.readouterr().out
    assert "shop -> pay  calls=1 errors=1" in text
    assert "shop ~> worker  messages=1 via=link channel=orders" in text
    assert graph_main(["--format", "dot", *flags]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph scope {") and '"shop" -> "pay"' in dot and "style=dashed" in dot
    assert graph_main(["--format", "mermaid", *flags]) == 0
    mermaid = capsys.readouterr().out.splitlines()
    assert mermaid[0] == "graph LR"
    assert any('["shop"] -->|1 calls, 1 err' in line and '["pay"]' in line for line in mermaid)


def test_graph_by_function_names_service_and_function(recorded, capsys):
    flags, _ = recorded
    assert graph_main(["--by", "function", *flags]) == 0
    out = capsys.readouterr().out
    assert "pay:POST /pay -> pay:pay.card:charge  calls=1 errors=1" in out
    assert "shop:GET /checkout -> shop:shop.cart:total  calls=1 errors=0" in out


def test_commands_report_an_unusable_store_url(capsys):
    assert query_main(["SELECT 1", "--store", "ftp://nowhere"]) == 1
    assert "scheme 'ftp' is not supported" in capsys.readouterr().err
