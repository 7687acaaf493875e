"""The store writer's drain: every spooled batch lands once, in order, or is set aside.

``Backend._drain`` claims queued batches, merges them into one INSERT per
table and repeats while it finds full drains.  These tests force many small
drains and check what must not change: no batch lost or written twice, a
batch the store rejects quarantined alone, claims given back when the store
goes away, and claims never taken from their holder.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scope_otel.store import spool as store_spool
from scope_otel.store import staging as store_staging
from scope_otel.store.writer import GATHER_BATCHES, GATHER_MAX_S, GATHER_MIN_BURST, GATHER_QUIET_S, gathered
from scope_otel.store.engine import Backend, _Engine
from scope_otel.store.staging import _merged, _Scratch
from scope_otel.store.rows import Batch
from scope_otel.store.spool import Spool, read_parts
from scope_otel.store.target import parse
from scope_otel.export.clickhouse import ClickHouseSpanExporter


@pytest.fixture
def small_drains(monkeypatch):
    """Every drain takes at most two batches: a dozen queued batches make six full drains."""
    monkeypatch.setattr(Backend._drain, "__defaults__", (2, 64 << 20))


def _encoded_batches(prefix: str, batches: int, per_batch: int = 3, args: bool = False) -> list[list[tuple]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("writer-test")
    out = []
    for b in range(batches):
        memory.clear()
        for i in range(per_batch):
            attributes = {"scope.kind": "function", **({"scope.arg.n": str(i)} if args else {})}  # args: scope_events
            with tracer.start_as_current_span(f"{prefix}-{b:02d}-{i}", attributes=attributes):
                pass
        batch = Batch()
        batch.add_spans(memory.get_finished_spans())
        out.append(batch.encode())
    return out


def _names(exporter: ClickHouseSpanExporter, prefix: str) -> list[str]:
    return exporter._backend.run(lambda client: [r[0] for r in client.query(
        f"SELECT SpanName FROM otel.otel_traces WHERE SpanName LIKE '{prefix}-%' ORDER BY SpanName").result_rows])


def _leftovers(spool: Spool) -> list[str]:
    """Batches still queued or claimed, and INSERT files not deleted."""
    return [n for n in os.listdir(spool.folder) if ".batch" in n or n.startswith(".insert-")]


@pytest.mark.parametrize("reuse_buffers", [False, True], ids=["fresh memory", "the writer's reused memory"])
def test_many_drains_write_every_batch_exactly_once(store_path, small_drains, reuse_buffers):
    exporter = ClickHouseSpanExporter(store_path, embedded="inprocess", idle_close_s=30.0)
    backend = exporter._backend
    prefix = "reused" if reuse_buffers else "once"  # one store for the module
    if reuse_buffers:
        backend._scratch = _Scratch()
    backend.run(lambda client: None)  # the schema
    batches = _encoded_batches(prefix, 12)
    with _Engine.lock:  # no keeper drain while queueing
        for parts in batches:
            assert backend.spool.put(parts)
    before = backend.batches_replayed
    backend.run(lambda client: None)
    assert backend.batches_replayed - before == 12
    assert _names(exporter, prefix) == sorted(f"{prefix}-{b:02d}-{i}" for b in range(12) for i in range(3))
    assert _leftovers(backend.spool) == []


def _already_sorted(backend: Backend) -> int:
    """How many inserted blocks chDB found sorted by their table's key (a process-wide counter)."""
    return backend.run(lambda client: client.query(
        "SELECT sum(value) FROM system.events WHERE event = 'MergeTreeDataWriterBlocksAlreadySorted'").result_rows[0][0])


@pytest.mark.skipif(store_staging._block_merger() is None, reason="the C accelerator (_chnative) is not built")
def test_the_writer_inserts_rows_in_each_tables_sorting_key_order(store_path):
    exporter = ClickHouseSpanExporter(store_path, embedded="inprocess", idle_close_s=30.0)
    backend = exporter._backend
    backend.run(lambda client: None)  # the schema, and the keys read from the live tables
    assert backend._orders == {
        "otel_traces": ((b"ServiceName", 0), (b"SpanName", 0), (b"Timestamp", 10 ** 9)),
        "scope_events": ((b"TraceId", 0), (b"SpanId", 0), (b"Seq", 0)),
        "scope_spans_by_trace": ((b"TraceId", 0), (b"SpanId", 0)),
    }
    counts = {}
    for prefix, orders in (("keyed", backend._orders), ("unkeyed", {})):
        backend._orders = orders
        batches = _encoded_batches(prefix, 12, args=True)[::-1]  # newest first: not in key order
        before = _already_sorted(backend)
        with _Engine.lock:  # one drain (this one or the engine keeper's): one INSERT per table
            for parts in batches:
                assert backend.spool.put(parts)
        backend.run(lambda client: None)
        counts[prefix] = _already_sorted(backend) - before
        assert _names(exporter, prefix) == sorted(f"{prefix}-{b:02d}-{i}" for b in range(12) for i in range(3))
    # otel_traces and scope_events took their blocks as they came; unsorted, chDB sorts both
    assert counts["keyed"] - counts["unkeyed"] == 2


@pytest.mark.skipif(not store_staging._MEMFD, reason="a writer stages in memory only where memfd_create exists")
@pytest.mark.parametrize("case", ["fits", "merged block outgrows the room", "blocks the merger does not know"])
def test_reused_staging_memory_holds_exactly_what_fresh_memory_would(tmp_path, monkeypatch, case):
    spool = Spool(str(tmp_path / "spool"))
    if case == "merged block outgrows the room":
        monkeypatch.setattr(store_staging, "_room_for", lambda size: 64)
    if case == "blocks the merger does not know":
        def refuse(data, targets, into=None, order=None):
            raise ValueError("malformed Native data")
        monkeypatch.setattr(store_staging, "_block_merger", lambda: refuse)
    scratch = _Scratch()
    fds = []
    for prefix, count in (("large", 9), ("small", 2)):  # the second drain reuses the first one's memory
        for parts in _encoded_batches(prefix, count, per_batch=5):
            assert spool.put(parts)
        claimed = list(spool.claim())
        parts = [p for _dir, ps in claimed for p in ps if p.table == "otel_traces"]
        stage = scratch.stage(parts, None)
        with open(stage.path, "rb") as fh:  # what chDB reads: the whole file
            assert fh.read() == bytes(_merged(parts)) != b""
        fds.append(stage.fd)
        stage.close()
        for dir_, _parts in claimed:
            spool.done(dir_)
    assert fds[0] == fds[1]  # one in-memory file, written twice
    scratch.discard()
    with pytest.raises(OSError):
        os.fstat(fds[0])  # closed


def test_a_batch_the_store_rejects_mid_way_is_quarantined_alone(store_path, small_drains):
    exporter = ClickHouseSpanExporter(store_path, embedded="inprocess", idle_close_s=30.0)
    backend = exporter._backend
    backend.run(lambda client: None)
    batches = _encoded_batches("reject", 7)
    table, columns, data, rows = batches[3][0]
    batches[3] = [(table, columns + ["NoSuchColumn"], data, rows)]  # chDB refuses the INSERT
    with _Engine.lock:
        for parts in batches:
            assert backend.spool.put(parts)
    backend.run(lambda client: None)
    want = sorted(f"reject-{b:02d}-{i}" for b in range(7) if b != 3 for i in range(3))
    assert _names(exporter, "reject") == want
    assert _leftovers(backend.spool) == []
    assert len(os.listdir(os.path.join(backend.spool.folder, "rejected"))) == 1


class _GoesAway:
    """A store client whose connection drops at the ``fail_at``-th INSERT; it reads what it is given."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.inserts: list[int] = []

    def command(self, sql: str) -> None:
        if len(self.inserts) + 1 == self.fail_at:
            raise ConnectionError("the store went away")
        path = sql.split("FROM INFILE '", 1)[1].split("'", 1)[0]
        with open(path, "rb") as fh:
            self.inserts.append(len(fh.read()))


def test_a_lost_connection_gives_back_every_claim_not_written(tmp_path, small_drains):
    backend = Backend(parse(f"chdb://{tmp_path / 'store'}", "otel"))
    for parts in _encoded_batches("away", 9):
        assert backend.spool.put(parts)
    client = _GoesAway(fail_at=3)  # one table (no function events): drains 1 and 2 written, drain 3 fails
    with pytest.raises(ConnectionError):
        backend._drain(client)
    assert all(client.inserts)  # the staged files held the merged blocks
    assert backend.batches_replayed == 4
    assert [n for n in os.listdir(backend.spool.folder) if ".claim-" in n] == []
    assert len(backend.spool.pending()) == 5  # drain 3 and the batches never claimed are queued


def test_claims_and_temporary_files_are_cleared_only_when_their_holder_is_gone(tmp_path):
    spool = Spool(str(tmp_path / "spool"), stale_claim_s=600)
    for parts in _encoded_batches("claims", 4):
        assert spool.put(parts)
    names = spool.pending()
    for name in names:  # queued an hour ago, e.g. while the store was away
        path = os.path.join(spool.folder, name)
        os.utime(path, (os.path.getmtime(path) - 3600,) * 2)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for name, holder in ((names[0], live.pid), (names[1], dead.pid)):
            path = os.path.join(spool.folder, name)
            os.rename(path, f"{path}.claim-{holder}")
        for pid in (dead.pid, os.getpid()):  # a writer's temporary file: a dead one's goes with the next claim
            with open(os.path.join(spool.folder, f".insert-{pid}-7.native"), "wb"):
                pass
        ours = [claimed for claimed, _parts in spool.claim()]  # in flight in this process
        # the dead writer's claim was put back first, and claimed again, by us
        assert [os.path.basename(c) for c in ours] == [f"{n}.claim-{os.getpid()}" for n in names[1:]]
        store_spool._in_flight.discard(ours[2])  # as if the drain holding it had been interrupted
        spool._release_stale()  # what the next claim() does first
        left = sorted(os.listdir(spool.folder))
    finally:
        live.kill()
        live.wait()
    assert f"{names[0]}.claim-{live.pid}" in left  # an old batch, but claimed just now by a live writer
    assert os.path.basename(ours[0]) in left and os.path.basename(ours[1]) in left  # ours, in flight: untouched
    assert names[3] in left  # ours, abandoned: queued again
    assert f".insert-{os.getpid()}-7.native" in left and f".insert-{dead.pid}-7.native" not in left


def test_written_batch_files_are_reused_for_later_batches_with_nothing_of_the_old_ones_left(tmp_path, monkeypatch):
    monkeypatch.setattr(store_spool, "FREE_KEEP", 2)
    monkeypatch.setattr(store_spool, "FREE_MAX", 3)
    folder = str(tmp_path / "spool")
    writer, app = Spool(folder), Spool(folder)  # the store writer's and an application's views of one folder
    for parts in _encoded_batches("long", 4, per_batch=40, args=True):
        assert app.put(parts)
    for dir_, _parts in writer.claim():
        writer.done(dir_)
    sizes = {os.stat(os.path.join(folder, n)).st_ino: os.path.getsize(os.path.join(folder, n))
             for n in os.listdir(folder) if n.startswith(store_spool.FREE)}
    free = set(sizes)
    assert app.pending() == [] and len(free) == 3  # the fourth deleted
    assert sorted(size > 0 for size in sizes.values()) == [False, True, True]  # two kept whole, one emptied

    short = _encoded_batches("short", 3, per_batch=2)  # smaller than the files they are written into
    app._free_listed = 0.0  # its last listing found none: look again now rather than 50 ms later
    for parts in short:
        assert app.put(parts)
    names = app.pending()
    assert len(names) == 3
    assert {os.stat(os.path.join(folder, n)).st_ino for n in names} == free  # the free files, reused
    for (dir_, parts), sent in zip(writer.claim(), short):
        assert [(p.table, p.columns, p.rows) for p in parts] == [(t, c, r) for t, c, _data, r in sent]
        assert [bytes(read_parts([p])) for p in parts] == [data for _t, _c, data, _r in sent]
        with open(dir_, "rb") as fh:
            head = fh.readline()
        assert os.path.getsize(dir_) == len(head) + sum(len(data) for _t, _c, data, _r in sent)  # no old tail
        writer.done(dir_)


def test_the_store_writer_empties_spare_batch_files_when_idle_not_during_a_burst(tmp_path, monkeypatch):
    monkeypatch.setattr(store_spool, "FREE_KEEP", 2)
    folder = str(tmp_path / "spool")
    writer, app = Spool(folder), Spool(folder)
    writer.trim_later = True  # as the store writer sets it
    for parts in _encoded_batches("burst", 5, per_batch=20):
        assert app.put(parts)
    for dir_, _parts in writer.claim():
        writer.done(dir_)

    def free_sizes() -> list[int]:
        return sorted(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)
                      if n.startswith(store_spool.FREE))

    assert len(free_sizes()) == 5 and 0 not in free_sizes()  # all kept whole during the burst
    assert writer.trim() == 3  # idle: all but FREE_KEEP emptied
    assert free_sizes()[:3] == [0, 0, 0] and 0 not in free_sizes()[3:]
    assert writer.trim() == 0  # nothing more to empty
    app._free_listed = 0.0
    for parts in _encoded_batches("after", 5, per_batch=2):  # emptied files are written as any other
        assert app.put(parts)
    assert len(app.pending()) == 5 and free_sizes() == []


def test_free_files_do_not_count_against_the_spool_bound(tmp_path):
    folder = str(tmp_path / "spool")
    parts = _encoded_batches("bound", 1, per_batch=40)[0]
    size = sum(len(data) for _t, _c, data, _r in parts)
    writer = Spool(folder)
    assert Spool(folder, max_bytes=int(size * 1.5)).put(parts)
    for dir_, _parts in writer.claim():
        writer.done(dir_)
    assert any(n.startswith(store_spool.FREE) for n in os.listdir(folder))
    full = Spool(folder, max_bytes=int(size * 1.5))  # counts what is in the folder when it starts
    assert full.put(parts)
    assert full.put(parts)  # a second batch would pass the bound: the oldest makes room, counted
    assert len(full.pending()) == 1 and full.dropped_batches == 1


def test_the_writer_waits_for_a_bursts_batches_and_never_long():
    ms = 1_000_000
    now = 10_000 * 1000 * ms

    def queue(*ages_ms: float) -> list[str]:  # batch names as Spool.put makes them, oldest first
        return [f"{now - int(age * ms):020d}-42-{i:06d}.batch" for i, age in enumerate(ages_ms)]

    burst = queue(*[30 - 0.1 * i for i in range(20)])  # 20 batches in 2 ms, the last one just now
    assert gathered(burst, now)  # coming faster than a full gather a second: write, more will follow
    assert not gathered(queue(*[30 - 0.1 * i for i in range(GATHER_MIN_BURST - 1)]), now)  # too few yet
    slow = queue(*[900 - 100 * i for i in range(10)])  # 10 a second, the last 0 ms ago
    assert not gathered(slow, now)  # a slow stream: gathered up to a second
    assert gathered(queue(*[0.01] * GATHER_BATCHES), now)  # a drain's worth: write
    from scope_otel.store.writer import THIN_QUIET_S

    assert gathered(queue(1000 * THIN_QUIET_S + 1), now)  # a lone batch, nothing since: write
    assert not gathered(queue(1000 * THIN_QUIET_S - 10), now)  # (a thin stream's quiet)
    assert gathered(queue(*[1000 * GATHER_QUIET_S + 1] * 20), now)  # a stream's worth, quiet: write
    steady = queue(*[1000 * GATHER_MAX_S + 5] + [1000 * GATHER_MAX_S - 10 * i for i in range(1, 50)] + [1])
    assert gathered(steady, now)  # a stream that never pauses: the oldest waited long enough
    assert gathered(["not-a-time.batch"], now)  # a name we cannot read: written at once


def test_a_services_thin_stream_is_gathered_for_seconds_not_written_every_second():
    from scope_otel.store.writer import GATHER_THIN_BATCHES, THIN_MAX_S

    ms = 1_000_000
    now = 10_000 * 1000 * ms
    # a batch every 300 ms for 3 s: each INSERT has a fixed cost of its own, so this waits
    thin = [f"{now - int((3000 - 300 * i) * ms):020d}-42-{i:06d}.batch" for i in range(10)]
    assert len(thin) < GATHER_THIN_BATCHES and not gathered(thin, now)
    assert gathered(thin, now + int((THIN_MAX_S - 3) * 1000 * ms) + 1)  # ... until the oldest waited THIN_MAX_S
    steady = [f"{now - int((1500 - 60 * i) * ms):020d}-42-{i:06d}.batch" for i in range(GATHER_THIN_BATCHES + 4)]
    assert gathered(steady, now)  # a stream of some size: written once a second, as before


def test_the_writers_loop_sleeps_until_the_queue_is_due_and_wakes_for_a_batch_a_flush_or_a_release(tmp_path):
    from scope_otel.store.engine import FLUSH_PREFIX
    from scope_otel.store.ownership import RELEASE_PREFIX
    from scope_otel.store.writer import IDLE_TRIM_S, THIN_QUIET_S, _answered, _next_look, _Retry, _Wakeup

    ms = 1_000_000
    now = 10_000 * 1000 * ms
    retry = _Retry(None)
    queued = [f"{now - 1000 * ms:020d}-42-000000.batch", f"{now - 500 * ms:020d}-42-000001.batch"]
    assert _next_look(queued, retry, 0.0, False, 30.0, now) == pytest.approx(THIN_QUIET_S - 0.5)
    assert _next_look([], retry, 0.2, False, 30.0, now) == pytest.approx(IDLE_TRIM_S - 0.2)  # the trim
    assert _next_look([], retry, 5.0, True, 30.0, now) == pytest.approx(25.0)  # leaving when idle
    spool, store = tmp_path / "spool", tmp_path / "store"
    store.mkdir()
    wake = _Wakeup(str(spool), str(store))
    if not wake.watching:
        pytest.skip("no inotify here: the writer looks on a timer")
    try:
        assert not wake.wait(0.05) and not wake.released()  # nothing came
        (spool / ".tmp").write_bytes(b"x")
        os.rename(spool / ".tmp", spool / "0001.batch")  # as Spool.put queues a batch
        assert wake.wait(30.0) and not wake.released()  # woken by the batch
        assert not wake.asked()
        Backend(parse("chdb://" + str(store)), spool_dir=str(spool))._ask_for_write()  # a process flushing
        assert wake.wait(30.0) and wake.asked() and not wake.asked()  # seen once
        assert any(n.startswith(FLUSH_PREFIX) for n in os.listdir(store))
        _answered(str(store))
        assert not any(n.startswith(FLUSH_PREFIX) for n in os.listdir(store))
        (store / f"{RELEASE_PREFIX}123").write_bytes(b"")
        assert wake.wait(30.0) and wake.released()  # and by a request for the store
    finally:
        wake.close()


def test_a_writer_without_inotify_looks_in_the_folder_for_flushes_and_releases(tmp_path):
    from scope_otel.store.engine import FLUSH_PREFIX
    from scope_otel.store.ownership import RELEASE_PREFIX
    from scope_otel.store.writer import _Wakeup

    spool, store = tmp_path / "spool", tmp_path / "store"
    store.mkdir()
    wake = _Wakeup(str(spool), str(store))
    wake.close()  # as where inotify is missing
    assert not wake.watching and not wake.released() and not wake.asked()
    (store / f"{FLUSH_PREFIX}7").write_bytes(b"")
    assert wake.asked()
    (store / f"{RELEASE_PREFIX}123").write_bytes(b"")
    assert wake.released()


def test_the_writer_publishes_what_it_spent_and_wrote_for_the_processes_that_export_to_it(tmp_path):
    from scope_otel.store.engine import WRITER_COST_FILE
    from scope_otel.store.writer import _Totals

    class Written:
        rows_written = {"otel_traces": 1234, "scope_events": 0}

    totals = _Totals(str(tmp_path), Written())
    totals.publish()
    pid, cpu, spans = (tmp_path / WRITER_COST_FILE).read_text().split()
    assert int(pid) == os.getpid() and float(cpu) > 0 and int(spans) == 1234
    totals.remove()
    assert not (tmp_path / WRITER_COST_FILE).exists()
