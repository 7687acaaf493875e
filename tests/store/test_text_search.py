"""The traces list's text search: a text found in many traces lists the same newest traces as a search of all time."""
from __future__ import annotations

import pytest

import scope_otel.store as store_module
from scope_otel.store import TraceFilter, open_store
from scope_otel.store.engine import close_engine

COLUMNS = "(Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, SpanAttributes, Duration)"


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "text"), "otel")
    # 400 traces, one every 5 minutes back from now (the newest 12 in the last hour), each a root and a
    # CLIENT span whose SQL holds the text; every 3rd trace's SQL names another table
    s.query(f"""
        INSERT INTO otel.otel_traces {COLUMNS}
        SELECT now64(9) - toIntervalMinute(intDiv(number, 2) * 5) - toIntervalSecond(30) + toIntervalMillisecond(number % 2),
               lower(hex(MD5(toString(intDiv(number, 2))))), toString(number % 2 + 1), if(number % 2 = 0, '', '1'),
               if(number % 2 = 0, 'GET /orders', 'SELECT shop.db'),
               if(number % 2 = 0, 'SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT'), 'shop',
               if(number % 2 = 0, map(), map('db.query.text',
                  if(intDiv(number, 2) % 3 = 0, 'SELECT * FROM carts WHERE id = ?', 'SELECT * FROM Products WHERE id = ?'))),
               1000
        FROM numbers(800)""")
    yield s
    s.close()
    close_engine()


@pytest.mark.parametrize("limit", [5, 50, 300])
@pytest.mark.parametrize("text", ["products where", "carts"])
def test_a_common_text_lists_the_newest_traces_as_a_search_of_all_time_does(store, monkeypatch, text, limit):
    every = store.traces(TraceFilter(text=text, limit=1000))
    assert len(every) == (134 if text == "carts" else 266)
    monkeypatch.setattr(store_module, "_TEXT_TRACES", 10)  # more than 10 traces: a common text
    found = store.traces(TraceFilter(text=text, limit=limit))
    assert [t["TraceId"] for t in found] == [t["TraceId"] for t in every[:limit]]
    monkeypatch.setattr(store_module, "_TEXT_WINDOWS_NS", ())  # every match at once, as before the windows
    assert [t["TraceId"] for t in store.traces(TraceFilter(text=text, limit=limit))] == [t["TraceId"] for t in found]
