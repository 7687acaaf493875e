"""A store that cannot take batches *now* (a full disk, a timeout, a store
another process is still creating) keeps them queued for a later try; only
batches the store refuses as invalid are set aside, each with one readable
log line; several processes creating one new store at once reject nothing."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from scope_otel.store.engine import Backend, StoreRetry
from scope_otel.store.target import parse
from scope_otel.store import Store
from tests.store.test_writer import _encoded_batches, small_drains  # noqa: F401 (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Refuses:
    """A store client whose ``fail_at``-th INSERT fails with ``error``; it reads what it is given."""

    def __init__(self, fail_at: int, error: Exception) -> None:
        self.fail_at, self.error = fail_at, error
        self.inserts = 0

    def command(self, sql: str) -> None:
        self.inserts += 1
        if self.inserts >= self.fail_at:
            raise self.error


@pytest.mark.parametrize("error", [
    Exception("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)"),
    OSError(28, "No space left on device"),
    Exception("Code: 159. DB::Exception: Timeout exceeded: elapsed 30 seconds. (TIMEOUT_EXCEEDED)"),
    Exception("Code: 60. DB::Exception: Table otel.otel_traces does not exist. (UNKNOWN_TABLE)"),
], ids=["NOT_ENOUGH_SPACE", "ENOSPC", "TIMEOUT_EXCEEDED", "UNKNOWN_TABLE (a store being created)"])
def test_a_store_that_cannot_take_batches_now_keeps_them_queued(tmp_path, small_drains, error):  # noqa: F811
    backend = Backend(parse(f"chdb://{tmp_path / 'store'}", "otel"))
    for parts in _encoded_batches("full", 6):
        assert backend.spool.put(parts)
    with pytest.raises(StoreRetry):
        backend._drain(_Refuses(fail_at=2, error=error))
    assert backend.batches_replayed == 2  # the first drain went in
    assert len(backend.spool.pending()) == 4  # the rest wait, none set aside
    assert not os.path.isdir(os.path.join(backend.spool.folder, "rejected"))
    assert [n for n in os.listdir(backend.spool.folder) if ".claim-" in n] == []


def test_an_invalid_batch_is_set_aside_with_its_reason_in_one_line(tmp_path, small_drains, caplog):  # noqa: F811
    backend = Backend(parse(f"chdb://{tmp_path / 'store'}", "otel"))
    for parts in _encoded_batches("bad", 1):
        assert backend.spool.put(parts)
    error = Exception("Code: 27. DB::Exception: Cannot parse input: expected '\\t'. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)\n"
                      "Stack trace:\n0. DB::Exception::Exception() @ 0x1\n1. ...")
    with caplog.at_level(logging.WARNING, logger="scope_otel.export.clickhouse"):
        backend._drain(_Refuses(fail_at=1, error=error))
    assert len(os.listdir(os.path.join(backend.spool.folder, "rejected"))) == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and "CANNOT_PARSE_INPUT" in line and "Stack trace" not in line
    assert "rejected/" in line and "3 spans" in line


def test_processes_creating_one_new_store_together_reject_no_batch(tmp_path):
    store = str(tmp_path / "new-store")
    go = str(tmp_path / "go")
    n, spans = 6, 40
    code = (
        "import os, sys, time\n"
        "from tests.export.writer import record\n"
        "from scope_otel.export.clickhouse import ClickHouseSpanExporter\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "e = ClickHouseSpanExporter(sys.argv[1])\n"
        f"record(e, {spans}, 'p%d' % os.getpid())\n"
        "e.shutdown()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, store, go], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    time.sleep(2.0)  # every process imported and waiting: they start together
    open(go, "w").close()
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [o[1][-2000:] for o in outputs]
    s = Store(parse(store, "otel"), wait_s=60)
    try:
        stored = s.query("SELECT count() FROM otel_traces").rows[0][0]
    finally:
        s.close()
    rejected = os.path.join(store, "scope-spool", "rejected")
    assert not os.path.isdir(rejected) or os.listdir(rejected) == []
    assert stored == n * spans
