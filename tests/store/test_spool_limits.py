"""The spool is bounded: past ``spool_max_mb`` (or when the disk itself is
full) the oldest queued batches make room for the newest, and every span so
dropped is counted; nothing is dropped silently."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scope_otel import config
from scope_otel.store.spool import Spool
from scope_otel.export.clickhouse import ClickHouseSpanExporter
from tests.store.test_writer import _encoded_batches
from tests.support.procs import clean_env, run, tool


def _size(parts) -> int:
    return sum(len(p[2]) for p in parts)


def test_a_full_spool_drops_its_oldest_batches_first_and_counts_their_spans(tmp_path):
    batches = _encoded_batches("b", 6, per_batch=4)
    per = max(_size(b) for b in batches)
    spool = Spool(str(tmp_path / "spool"), max_bytes=int(per * 3.5))
    for parts in batches:
        assert spool.put(parts)
    kept = spool.pending()
    assert len(kept) == 3
    assert (spool.dropped_batches, spool.dropped_spans) == (3, 12)
    # the newest three are the ones kept, in order
    claimed = [parts for _dir, parts in spool.claim()]
    names = [p.rows for parts in claimed for p in parts if p.table == "otel_traces"]
    assert names == [4, 4, 4]


def test_a_batch_larger_than_the_whole_spool_is_refused(tmp_path):
    (parts,) = _encoded_batches("big", 1, per_batch=50)
    spool = Spool(str(tmp_path / "spool"), max_bytes=_size(parts) - 1)
    assert not spool.put(parts)
    assert spool.pending() == []


def test_the_exporter_counts_spans_the_bound_dropped(tmp_path):
    batches = _encoded_batches("e", 5, per_batch=2)
    exporter = ClickHouseSpanExporter(str(tmp_path / "store"), spool_max_bytes=int(max(map(_size, batches)) * 2.5))
    try:
        exporter._backend.ensure_owner = lambda force=False: None  # nobody writes: the queue only grows
        for parts in batches:
            assert exporter._queue(parts, 2, "spans_queued")
        stats = exporter.stats()
        kept = len(exporter._backend.spool.pending())
        assert 0 < kept < 5
        assert stats["spool_dropped"] == stats["spans_dropped"] == 2 * (5 - kept)
        assert stats["spans_queued"] == 10
    finally:
        exporter._shutdown = True


def test_spool_max_mb_is_a_config_key_the_exporter_uses(tmp_path):
    cfg = config.load(env={"SCOPE_OTEL_SPOOL_MAX_MB": "3"})
    assert cfg.spool_max_mb == 3
    from scope_otel.export.factory import _clickhouse

    exporter = _clickhouse(config.load(env={"SCOPE_OTEL_SPOOL_MAX_MB": "3", "SCOPE_OTEL_STORE": str(tmp_path / "s")}))
    assert exporter._backend.spool.max_bytes == 3 << 20
    shown = run([tool("scope-otel"), "config"], clean_env(SCOPE_OTEL_SPOOL_MAX_MB="3"), cwd=str(tmp_path))
    assert any(line.split()[:3] == ["spool_max_mb", "3", "env"] for line in shown.stdout.splitlines()), shown.stdout
