"""The tables' sorting keys, in the form the C block merger sorts rows by.

A MergeTree sorts every inserted block by its sorting key and writes each
column through that permutation, unless the block is sorted already; the
store writer copies every row while merging a drain anyway, so it copies them
in key order (``merge_blocks(..., order)``).  A key that is more than plain
columns and ``toDateTime`` of a DateTime64(9) column is left to ClickHouse.
"""
from __future__ import annotations

import logging
from typing import Any

_log = logging.getLogger("scope_otel.export.clickhouse")


_TABLE_TYPES: dict[bytes, bytes] = {}



def _table_types() -> dict[bytes, bytes]:
    if not _TABLE_TYPES:
        from scope_otel.store.rows import EVENT_COLUMNS, TRACE_COLUMNS

        # the two tables agree on the types of the column names they share
        _TABLE_TYPES.update((n.encode(), t.encode()) for n, t in TRACE_COLUMNS + EVENT_COLUMNS)
    return _TABLE_TYPES



def sort_order(sorting_key: str) -> tuple[tuple[bytes, int], ...] | None:
    """A table's sorting key (``system.tables.sorting_key``) as ``merge_blocks`` takes it, or None
    when it is more than plain columns and ``toDateTime`` of a DateTime64(9) column."""
    order = []
    for term in (t.strip() for t in sorting_key.split(",")):
        divisor = 0
        if term.startswith("toDateTime(") and term.endswith(")"):
            term, divisor = term[len("toDateTime("):-1].strip(), 10 ** 9
        name = term[1:-1] if len(term) > 1 and term[0] == term[-1] == "`" else term
        if not name or not all(ch.isalnum() or ch in "_." for ch in name):
            return None
        column_type = _table_types().get(name.encode())
        if column_type is None or (divisor and column_type != b"DateTime64(9)"):
            return None
        order.append((name.encode(), divisor))
    return tuple(order) or None



def _sorting_keys(client: Any, database: str) -> dict[str, tuple[tuple[bytes, int], ...]]:
    """The sorting key of each of the database's tables the writer can sort its rows by."""
    try:
        rows = client.query("SELECT name, sorting_key FROM system.tables WHERE database = {db:String}",
                            parameters={"db": database}).result_rows
    except Exception as exc:  # the rows still go in, unsorted: ClickHouse sorts them
        _log.warning("scope-otel: could not read the tables' sorting keys (%s: %.300s); rows go in unsorted",
                     type(exc).__name__, exc)
        return {}
    return {name: order for name, key in rows if (order := sort_order(key)) is not None}
