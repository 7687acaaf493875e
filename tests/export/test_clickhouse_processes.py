"""Several processes and forked children writing one embedded store: nothing lost, nothing hangs.

chDB opens a data directory in one process at a time and does not survive
``fork()`` (see ``scope_otel.store.engine``); applications therefore
only queue batches and a store-writer process owns chDB.  These tests run
real processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from scope_otel.store.target import parse
from scope_otel.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _writer(store: str, n: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.export.writer", store, str(n), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _count(store: str, where: str = "1") -> int:
    s = Store(parse(store, "otel"), wait_s=30)
    try:
        return s.query(f"SELECT count() FROM otel_traces WHERE {where}").rows[0][0]
    finally:
        s.close()


def test_concurrent_processes_on_one_store_lose_no_span(tmp_path):
    store = str(tmp_path / "shared")
    procs = [_writer(store, 150, "--name", f"p{i}") for i in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outputs]
    stats = [json.loads(o[0].splitlines()[-1])["parent"] for o in outputs]
    assert all(s["spans_dropped"] == 0 for s in stats)
    # Opening the store replays whatever the writers spooled while another held it.
    assert _count(store) == 450
    assert not [n for n in os.listdir(os.path.join(store, "scope-spool")) if n.endswith(".json")] \
        if os.path.isdir(os.path.join(store, "scope-spool")) else True


def test_forked_worker_exports_and_exits_normally(tmp_path):
    store = str(tmp_path / "forked")
    proc = _writer(store, 20, "--fork", "--name", "app")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    lines = [json.loads(line) for line in out.splitlines()]
    child = next(x["child"] for x in lines if "child" in x)
    status = next(x["child_status"] for x in lines if "child_status" in x)
    assert status == 0  # exited normally: no hang, no crash
    assert child["spans_queued"] == 20 and child["spans_dropped"] == 0
    assert _count(store, "SpanName LIKE 'app-child-%'") == 20
    assert _count(store, "SpanName LIKE 'app-%' AND SpanName NOT LIKE 'app-child-%'") == 20


def test_the_application_process_never_loads_chdb(tmp_path):
    code = (
        "import sys\n"
        "from tests.export.writer import record\n"
        "from scope_otel.export.clickhouse import ClickHouseSpanExporter\n"
        f"e = ClickHouseSpanExporter({str(tmp_path / 'lean')!r})\n"
        "record(e, 10, 'lean')\n"
        "assert e.force_flush(20000)\n"
        "print('chdb' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False"]
    assert _count(str(tmp_path / "lean"), "SpanName LIKE 'lean-%'") == 10


def test_query_waits_for_a_running_application_to_release_the_store(tmp_path):
    store = str(tmp_path / "held")
    release = tmp_path / "release"
    proc = _writer(store, 30, "--name", "busy", "--hold-until", str(release))
    try:
        # The writer holds the store while exporting, then lets go after 0.5 s idle
        # although it keeps running (until the test lets it end): the query gets in
        # while the app is alive, however long the query takes on a loaded machine.
        import time

        time.sleep(1.5)
        assert _count(store, "SpanName LIKE 'busy-%'") == 30
        assert proc.poll() is None  # still running
    finally:
        release.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]


FORK_AFTER_CHDB = """
import json, os, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from scope_otel.export.clickhouse import ClickHouseSpanExporter
from scope_otel.store.target import parse
from scope_otel.store import Store

store_path = sys.argv[1]
parent = Store(parse(store_path, "otel"))
parent.query("SELECT 1")                      # this process now runs chDB
read_fd, write_fd = os.pipe()
pid = os.fork()
if pid == 0:
    code = 1
    try:
        exporter = ClickHouseSpanExporter(store_path, embedded="inprocess")
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("from-forked-child"):
            pass
        os.write(write_fd, json.dumps(exporter.stats()).encode())
        code = 0
    finally:
        os._exit(code)  # see scope_otel.store.engine: such a child must not run chDB's exit handlers
os.close(write_fd)
child = json.loads(os.read(read_fd, 65536))
_, status = os.waitpid(pid, 0)
rows = parent.query("SELECT count() FROM otel_traces WHERE SpanName = 'from-forked-child'").rows[0][0]
print(json.dumps({"child": child, "status": status, "rows": rows}))
"""


def test_a_child_forked_from_a_chdb_process_never_opens_chdb_and_its_spans_arrive(tmp_path):
    out = subprocess.run([sys.executable, "-c", FORK_AFTER_CHDB, str(tmp_path / "inherited")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["status"] == 0
    assert result["child"]["store_busy"] >= 1 and result["child"]["spans_queued"] == 1
    assert result["child"]["spans_dropped"] == 0
    assert result["rows"] == 1  # queued by the child, written by the parent that owns the store


def test_a_steady_stream_is_written_about_once_a_second_not_batch_by_batch(tmp_path):
    """30 batches, one every 100 ms: the store writer gathers them (GATHER_MAX_S) into a few INSERTs.
    Each INSERT takes the table's next block number, so the highest block number counts them;
    the engine's keeper, when it also ran in the writer, made 18-23 here."""
    store = str(tmp_path / "steady")
    code = (
        "import time\n"
        "from opentelemetry.sdk.resources import Resource\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from scope_otel.export.clickhouse import ClickHouseSpanExporter\n"
        "memory = InMemorySpanExporter()\n"
        "provider = TracerProvider(resource=Resource.create({'service.name': 'steady'}))\n"
        "provider.add_span_processor(SimpleSpanProcessor(memory))\n"
        "tracer = provider.get_tracer('steady')\n"
        "for i in range(300):\n"
        "    with tracer.start_as_current_span(f'steady-{i}'):\n"
        "        pass\n"
        "spans = memory.get_finished_spans()\n"
        f"e = ClickHouseSpanExporter({store!r})\n"
        "for i in range(30):\n"
        "    e.export(spans[10 * i:10 * i + 10])\n"
        "    time.sleep(0.1)\n"
        "assert e.force_flush(20000)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    s = Store(parse(store, "otel"), wait_s=30)
    try:
        assert s.query("SELECT count() FROM otel_traces WHERE SpanName LIKE 'steady-%'").rows[0][0] == 300
        inserts = s.query("SELECT max(max_block_number) FROM system.parts "
                          "WHERE database = 'otel' AND table = 'otel_traces'").rows[0][0]
    finally:
        s.close()
    # about 3 s of batches: 3-4 INSERTs gathered; a slow machine's pauses may end a few gathers early,
    # and a writer that starts late (a loaded machine) finds them all queued and writes them in one
    assert 1 <= inserts <= 10, inserts
