"""The ``scope_function_stats`` rows: encoded without clickhouse-connect exactly as it encodes them, and
read back from a real embedded store."""
from __future__ import annotations

from scope_otel.store import open_store
from scope_otel.store.engine import Backend
from scope_otel.store.function_stats import COLUMNS, encode, observed
from scope_otel.store.rows import _native
from scope_otel.store.target import parse


def _row(pid, qualname, records, calls, window, program_ns, service="svc", entries=0, window_records=0):
    """A row as a process writes it: the window's totals (program CPU, records) repeated on each row."""
    return (window + 1_000_000_000, window, service, "host", pid, "app.mod", qualname, "boundaries", records,
            calls, 1 if qualname == "g" else 0, records * 1000, records, entries, program_ns, 5_000_000,
            window_records, 3)


def test_rows_are_encoded_as_clickhouse_connect_encodes_them():
    rows = [_row(7, "f", 10, 20.5, 1_796_000_000_000_000_000, 10**9), _row(8, "gé", 0, 0.0, 1, 0, service="x y")]
    (table, names, data, count), = encode(rows)
    assert (table, count) == ("scope_function_stats", 2) and names == [n for n, _ in COLUMNS]
    assert data == _native(COLUMNS, [list(c) for c in zip(*rows)])


def test_observed_sums_functions_and_windows_of_every_process(tmp_path):
    url = str(tmp_path / "store")
    backend = Backend(parse(url, "otel"))
    rows = [_row(1, "f", 10, 10.0, 100, 10**9, entries=10, window_records=12),
            _row(1, "g", 2, 4.0, 100, 10**9, window_records=12),
            _row(2, "f", 30, 30.0, 100, 3 * 10**9, window_records=30),
            _row(2, "g", 0, 0.0, 100, 3 * 10**9, window_records=30)]
    backend.spool.put(encode(rows))
    store = open_store(url, "otel")  # opening the store writes the spool
    try:
        functions, totals = observed(store)
    finally:
        store.close()
        backend.close()
    by_key = {f.key: f for f in functions}
    assert by_key["app.mod:f"].calls == 40 and by_key["app.mod:f"].program_cpu_ns == 4 * 10**9
    assert by_key["app.mod:f"].calls_per_cpu_s == 10 and by_key["app.mod:f"].entries == 10
    assert by_key["app.mod:g"].errors == 2 and by_key["app.mod:g"].processes == 2
    assert (totals.windows, totals.processes, totals.program_cpu_ns) == (2, 2, 4 * 10**9)
    assert (totals.records, totals.other_spans, totals.services) == (12 + 30, 6, ["svc"])
