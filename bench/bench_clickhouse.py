"""ClickHouse exporter and store benchmarks (embedded chDB).

    .venv/bin/python bench/bench_clickhouse.py [--quick]

1. Ingest: spans/s from ``ClickHouseSpanExporter`` into chDB, 10 attributes per
   span, in SDK-sized batches, beside chDB's own ingest rate for the same rows
   (Native blocks for otel_traces and scope_events, built beforehand in every
   encoding the exporter has, one INSERT ... FROM INFILE per table into fresh
   tables, in a child process; the fastest encoding is the ceiling).  The
   default mode, ``process`` (the app queues, a store-writer process ingests),
   is timed until every batch is written, five times, each into a fresh store
   right after a ceiling measurement of its own; each run's ratio is to its
   own ceiling, and the run with the median ratio is the result.  Then
   ``inprocess`` (chDB in the exporting process).  The application side is
   also timed stage by stage, for the encoder in use and for the pure-Python
   path.
2. Queries on a large table generated inside ClickHouse (INSERT ... SELECT
   FROM numbers()): trace lookup by id through the call-tree view and a plain
   WHERE, and the service-edge view beside a naive full self-join.

Targets (issue 7): ingest >= 150k spans/s and >= 0.5 of the ceiling; trace
lookup <= 100 ms and service edges <= 2 s on 5M spans.

``--edges both`` (the default) makes every end-to-end run twice, in
alternating order, each with its own ceiling on the same schema: once as the
schema is (the call-graph edges counted on insert, ch_007/ch_008), once with
what ch_007 added to every INSERT into otel_traces removed (the edge views'
two joins and the SQL text index), so the cost of counting edges on insert
is read from one invocation.  ``--edges on`` / ``off`` run one of the two.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from scope_otel.store import rows as store_rows  # noqa: E402
from scope_otel.store.rows import Batch  # noqa: E402
from scope_otel.export.clickhouse import ClickHouseSpanExporter  # noqa: E402


def make_spans(n: int) -> list:
    """``n`` finished SDK spans, traces of 10 spans, 10 attributes each."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    made = 0
    while made < n:
        with tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER, attributes=_attrs(made)):
            made += 1
            for j in range(9):
                with tracer.start_as_current_span(f"orders.repo:load_{j}", attributes=_attrs(made)):
                    made += 1
    return list(memory.get_finished_spans())[:n]


def _attrs(i: int) -> dict:
    return {
        "http.request.method": "GET", "http.route": "/orders/{id}", "url.path": f"/orders/{i}",
        "http.response.status_code": 200, "server.address": "shop.internal", "user.id": f"u-{i % 997}",
        "scope.kind": "function", "code.function.name": "load", "code.namespace": "orders.repo",
        "scope.arg.order_id": str(i),
    }


#: What ch_007_edges_and_search.sql adds to every INSERT into otel_traces, undone for ``--edges off``:
#: the two views that pair children with parents (everything after them is fed by them) and the
#: n-gram index on SQL text.
WITHOUT_EDGES = ("DROP VIEW IF EXISTS {db}.scope_edge_children_mv", "DROP VIEW IF EXISTS {db}.scope_edge_parents_mv",
                 "ALTER TABLE {db}.otel_traces DROP INDEX IF EXISTS idx_sql_text")


def batches(spans: list, size: int) -> list:
    return [spans[i:i + size] for i in range(0, len(spans), size)]


def count_rows(store: str) -> int:
    """The rows of ``store``'s otel_traces, counted in a child process (it asks the writer for the store)."""
    return int(_child({"op": "count", "store": store}))


def wait_written(exporter: ClickHouseSpanExporter, timeout_s: float = 120.0) -> None:
    """Until every queued batch is in the store: none pending, none claimed by a writer still inserting it."""
    assert exporter.force_flush(int(timeout_s * 1000)), "spool not drained"
    folder = exporter._backend.spool.folder
    deadline = time.monotonic() + timeout_s
    while any(".batch" in name for name in os.listdir(folder)):
        assert time.monotonic() < deadline, "batches still claimed"
        time.sleep(0.005)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) another process has used."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


CEILING_VARIANTS = (  # label, pure Python encoder, LowCardinality targets, rows in sorting-key order
    ("one block per table, LowCardinality, key order (as written)", False, True, True),
    ("one block per table, LowCardinality, arrival order", False, True, False),
    ("one block per table, LowCardinality as String", False, False, False),
    ("C encoder's 512-row blocks (String)", False, None, False),
    ("clickhouse-connect's 512-row blocks (pure Python)", True, None, False),
)


def ceiling_files(groups: list, workdir: str) -> dict[str, dict[str, tuple[str, list[str]]]]:
    """Native files of every block encoding the exporter has, one per table: label -> table -> (path, columns).

    One block per table with the tables' LowCardinality columns, rows in each
    table's sorting-key order, is what the store writer inserts (byte-identical
    to clickhouse-connect writing the sorted rows as one block); the others are
    the same rows in arrival order, with LowCardinality columns as String, the C
    encoder's 512-row blocks, and clickhouse-connect's 512-row blocks (the
    pure-Python path)."""
    from scope_otel.store.sortkeys import _table_types

    # the sorting keys as a store writer reads them from a fresh store's tables (read in a child
    # process: this one, the application, never loads chDB)
    keys = json.loads(_child({"op": "keys", "store": os.path.join(workdir, "keys")}))
    orders = {table: tuple((name.encode(), div) for name, div in order) for table, order in keys.items() if order}
    c_built = store_rows.load_encoder(pure=False) is not None
    variants: dict[str, dict[str, tuple[str, list[str]]]] = {}
    for label, pure, lowcardinality, by_key in CEILING_VARIANTS:
        if not pure and not c_built:
            continue
        chunks: dict[str, list[bytes]] = {}
        names: dict[str, list[str]] = {}
        for group in groups:
            batch = Batch(pure=pure)
            batch.add_spans(group)
            for table, columns, data, _rows in batch.encode():
                chunks.setdefault(table, []).append(data)
                names[table] = columns
        files: dict[str, tuple[str, list[str]]] = {}
        for table, parts in chunks.items():
            data = b"".join(parts)
            if lowcardinality is not None:
                from scope_otel.store._chnative import merge_blocks

                data = merge_blocks(data, _table_types() if lowcardinality else {}, None,
                                    orders.get(table) if by_key else None)
            path = os.path.join(workdir, f"ceil{len(variants)}-{table}.native")
            with open(path, "wb") as fh:
                fh.write(data)
            files[table] = (path, names[table])
        variants[label] = files
        del chunks
    return variants


def _child(job: dict) -> str:
    """Run ``job`` in a fresh Python process (this file, ``--child``); its last line of output."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child ({job['op']}) failed: {out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def child_main(job: dict) -> None:
    """In a child process: a store's row count or its tables' sorting keys, or chDB's own ingest rate
    for prebuilt files (the ceiling)."""
    from scope_otel.store.engine import Backend
    from scope_otel.store.sortkeys import _sorting_keys
    from scope_otel.store.target import parse

    if job["op"] == "count":
        from scope_otel.store import Store

        s = Store(parse(job["store"], "otel"), wait_s=60)
        try:
            print(s.query("SELECT count() FROM otel_traces").rows[0][0])
        finally:
            s.close()
        return
    if job["op"] == "drop_edges":
        from scope_otel.store import Store

        s = Store(parse(job["store"], "otel"), wait_s=60)
        try:
            for statement in WITHOUT_EDGES:
                s.query(statement.format(db="otel"))
            print("dropped")
        finally:
            s.close()
        return
    if job["op"] == "keys":
        orders = Backend(parse("chdb://" + job["store"], "otel")).run(lambda client: _sorting_keys(client, "otel"))
        print(json.dumps({t: [[n.decode(), d] for n, d in o] for t, o in orders.items()}))
        return
    rates = {}
    for i, (label, files) in enumerate(job["variants"].items()):
        database = f"ceil_{i}"
        backend = Backend(parse("chdb://" + job["store"], database), idle_close_s=600)
        backend.run(lambda client: None)  # the schema, outside the timing
        if not job.get("edges", True):
            backend.run(lambda client, db=database: [client.command(q.format(db=db)) for q in WITHOUT_EDGES])
        time.sleep(1.0)  # let the schema's and earlier inserts' background work settle

        def load(client, files=files, database=database):
            for table, (path, columns) in files.items():
                cols = ", ".join(f"`{c}`" for c in columns)
                client.command(f"INSERT INTO {database}.{table} ({cols}) FROM INFILE '{path}' FORMAT Native")

        t0 = time.perf_counter()
        backend.run(load)
        rates[label] = job["spans"] / (time.perf_counter() - t0)
    print(json.dumps(rates))


def ingest(spans: list, batch_size: int, workdir: str, process_runs: int = 5,
           edges: tuple = (True, False)) -> dict:
    """End-to-end runs of the default mode, each paired with chDB's ceiling measured just before it.

    A single INSERT of a few seconds and an end-to-end run both move a lot
    with this shared machine's load and its file system's state (one run
    measured the ceiling at 287k and at 420k spans/s minutes apart), so each
    run's ratio compares the two measured a few seconds apart, and the median
    ratio is the result.  The ceiling runs in a child process with chDB in
    it, as the store writer does; this process, the application, never loads
    chDB.  ``edges``: the schemas to run, True as it is, False without ch_007's per-INSERT work
    (WITHOUT_EDGES); with both, each run is made on both, in alternating order."""
    out: dict = {"process_runs": [], "ceilings": {}}
    groups = batches(spans, batch_size)
    variants = ceiling_files(groups, workdir)
    plan = [(run, on) for run in range(process_runs)
             for on in ((True, False) if run % 2 == 0 else (False, True)) if on in edges]
    for run, on in plan:
        # ceiling: chDB ingesting the same rows (otel_traces and scope_events) from the prebuilt
        # files, one INSERT per table, no Python in the loop, into fresh tables of the same schema;
        # the fastest encoding is the ceiling
        tag = f"{run}-{'edges' if on else 'noedges'}"
        rates = json.loads(_child({"op": "ceiling", "store": os.path.join(workdir, f"ceiling-{tag}"),
                                   "variants": variants, "spans": len(spans), "edges": on}))
        for label, rate in rates.items():
            out["ceilings"].setdefault((label, on), []).append(rate)
        ceiling = max(rates.values())

        # process mode: the application queues, a store-writer process ingests
        assert "chdb" not in sys.modules, "the benchmark process, the application here, loaded chDB"
        store = os.path.join(workdir, f"process-{tag}")
        exporter = ClickHouseSpanExporter(store)
        exporter.export(groups[0][:1])  # start the writer and create the schema outside the timing
        wait_written(exporter, 60)
        warmup = 1
        if not on:
            _child({"op": "drop_edges", "store": store})  # the writer lets go of the store for it
            exporter.export(groups[0][:1])  # and a new writer starts, outside the timing
            wait_written(exporter, 60)
            warmup = 2
        writer = exporter._backend._drainer
        writer_cpu0 = _cpu_s(writer.pid) if writer is not None else None
        app_cpu0 = _own_cpu_s()
        t0 = time.perf_counter()
        for group in groups:
            exporter.export(group)
        app_s = time.perf_counter() - t0
        app_cpu = _own_cpu_s() - app_cpu0
        wait_written(exporter)
        total_s = time.perf_counter() - t0
        writer_cpu = _cpu_s(writer.pid) - writer_cpu0 if writer_cpu0 is not None else float("nan")
        assert count_rows(store) == len(spans) + warmup
        rate = len(spans) / total_s
        out["process_runs"].append({"edges": on, "rate": rate, "ceiling": ceiling, "ratio": rate / ceiling,
                                    "app_rate": len(spans) / app_s, "app_us": 1e6 * app_cpu / len(spans),
                                    "writer_us": 1e6 * writer_cpu / len(spans)})
        time.sleep(2.0)  # let the exiting writer's and the count's work settle
    runs = out["process_runs"]
    out["median"] = {}  # per schema: the run with the median ratio
    for on in edges:
        mine = sorted((r for r in runs if r["edges"] == on), key=lambda r: r["ratio"])
        out["median"][on] = mine[len(mine) // 2]

    # where the application side spends its time, stage by stage, for the
    # encoder in use and for the pure-Python path (the peer)
    from scope_otel.store.spool import Spool

    n = len(spans)
    for label, pure in (("app", None), ("python", True)):
        spool = Spool(os.path.join(workdir, f"stages-{label}"))
        t0 = time.perf_counter()
        built = []
        for group in groups:
            batch = Batch(pure=pure)
            batch.add_spans(group)
            built.append(batch)
        t1 = time.perf_counter()
        encoded = [b.encode() for b in built]
        t2 = time.perf_counter()
        for parts in encoded:
            spool.put(parts)
        t3 = time.perf_counter()
        out[f"stages_{label}"] = (1e6 * (t1 - t0) / n, 1e6 * (t2 - t1) / n, 1e6 * (t3 - t2) / n)
        del built, encoded
    out["encoder"] = "C (_chnative)" if store_rows.ENCODER is not None else "pure Python"

    # inprocess mode: chDB in this process (loaded only now), timed until everything is written.
    store = os.path.join(workdir, "inprocess")
    exporter = ClickHouseSpanExporter(store, "inproc", embedded="inprocess", idle_close_s=60)
    exporter.export(groups[0][:1])
    wait_written(exporter, 60)
    t0 = time.perf_counter()
    for group in groups:
        exporter.export(group)
    wait_written(exporter)
    out["inprocess"] = len(spans) / (time.perf_counter() - t0)
    out["inprocess_ceiling"] = statistics.median(r["ceiling"] for r in runs if r["edges"] == edges[0])
    exporter._backend.close()
    return out


# Traces of 20 spans: a SERVER root, and four CLIENT -> SERVER hops into other
# services, each SERVER with two INTERNAL children; 1% of spans fail.
GENERATE = """
INSERT INTO otel.otel_traces
    (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, ResourceAttributes,
     ScopeName, SpanAttributes, Duration, StatusCode)
SELECT
    toDateTime64('2026-01-01 00:00:00', 9) + toIntervalMillisecond(tr * 300 + k),
    lower(concat(leftPad(hex(cityHash64(tr)), 16, '0'), leftPad(hex(cityHash64(tr + 1)), 16, '0'))),
    lower(leftPad(hex(number + 1), 16, '0')),
    if(k = 0, '', lower(leftPad(hex(number - k + parent_k + 1), 16, '0'))),
    concat('op_', toString(k)),
    multiIf(k = 0, 'SPAN_KIND_SERVER', k % 5 = 1, 'SPAN_KIND_CLIENT', k % 5 = 2, 'SPAN_KIND_SERVER',
            'SPAN_KIND_INTERNAL'),
    concat('svc-', toString((tr + if(k = 0 OR k % 5 = 1, 0, intDiv(k - 1, 5) + 1) * 3) % 10)),
    map('service.version', '1.0', 'host.name', 'node-1'),
    'bench',
    map('http.request.method', 'GET', 'http.route', '/orders/{id}', 'user.id', toString(number % 997),
        'scope.kind', 'function', 'code.namespace', 'orders', 'code.function.name', 'op',
        'a6', 'x', 'a7', 'y', 'a8', 'z', 'a9', 'w'),
    1000 + cityHash64(number) % 5000000,
    if(cityHash64(number) % 100 = 0, 'STATUS_CODE_ERROR', 'STATUS_CODE_UNSET')
FROM (
    SELECT number, number % 20 AS k, intDiv(number, 20) AS tr,
           multiIf(k = 0, 0, k % 5 = 1, 0, k % 5 = 2, k - 1, k % 5 = 3, k - 1, k % 5 = 4, k - 2, k - 3) AS parent_k
    FROM numbers({n})
)
"""

NAIVE_EDGES = """
SELECT p.ServiceName AS Parent, c.ServiceName AS Child, count() AS Calls,
       countIf(c.StatusCode = 'STATUS_CODE_ERROR') AS Errors, quantile(0.95)(c.Duration) AS P95
FROM otel.otel_traces AS c
INNER JOIN otel.otel_traces AS p ON c.TraceId = p.TraceId AND c.ParentSpanId = p.SpanId
WHERE p.ServiceName != c.ServiceName
GROUP BY Parent, Child
"""


def timed(fn, repeat: int) -> float:
    """Median wall time in ms."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def queries(n: int, workdir: str, repeat: int) -> dict:
    from scope_otel.store.target import parse
    from scope_otel.store import Store

    store = Store(parse(os.path.join(workdir, "big"), "otel"))
    t0 = time.perf_counter()
    store.query(GENERATE.replace("{n}", str(n)))
    store.query("OPTIMIZE TABLE otel.otel_traces FINAL")
    gen_s = time.perf_counter() - t0
    rows = store.query("SELECT count() FROM otel_traces").rows[0][0]
    tids = [r[0] for r in store.query(
        f"SELECT TraceId FROM otel_traces WHERE SpanName = 'op_0' AND cityHash64(SpanId) % 1000 = 7 LIMIT {repeat}"
    ).rows]
    if not tids:
        raise SystemExit(f"no trace ids sampled from {rows} rows: use --rows 100000 or more")
    it = itertools.cycle(tids)  # a small table may sample fewer traces than repeats
    out = {"rows": rows, "generate_s": gen_s}
    out["tree_ms"] = timed(lambda: store.call_tree(next(it)), repeat)
    it = itertools.cycle(tids)
    out["plain_ms"] = timed(lambda: store.query(
        "SELECT SpanId, ParentSpanId, SpanName, Duration FROM otel_traces WHERE TraceId = {t:String}",
        {"t": next(it)}), repeat)
    tree = store.call_tree(tids[0])
    out["tree_rows"] = len(tree)
    out["edges_ms"] = timed(lambda: store.service_edges(), max(3, repeat // 3))
    out["edges"] = len(store.service_edges())
    out["naive_edges_ms"] = timed(lambda: store.query(NAIVE_EDGES), 1 if n > 1_000_000 else 3)
    store.close()
    return out


def file_create_us(workdir: str, n: int = 300) -> float:
    """Microseconds to create one small file (in folders of 12, as chDB makes a part) in ``workdir``.

    ext4 without a journal (this VM) skips inodes deleted in the last minutes when it allocates
    one, scanning past each: right after a large delete (an earlier run's stores, a test run)
    a file here cost 116-557 us against 25-33 us in a quiet folder, and every INSERT makes ~65
    files (five tables' parts).  Printed so that a run's conditions can be told apart."""
    probe = os.path.join(workdir, "create-probe")
    os.mkdir(probe)
    t0 = time.perf_counter()
    for i in range(n):
        folder = os.path.join(probe, f"p{i // 12}")
        if i % 12 == 0:
            os.mkdir(folder)
        with open(os.path.join(folder, f"f{i}"), "wb") as fh:
            fh.write(b"x")
    return 1e6 * (time.perf_counter() - t0) / n


def ingest_table(spans_n: int, batch: int, workdir: str, process_runs: int = 5,
                 edges: tuple = (True, False)) -> None:
    t0 = time.perf_counter()
    spans = make_spans(spans_n)
    # The benchmark holds every span in memory at once, which a running
    # application never does (processors release spans once exported);
    # freeze that set-up heap so the collector's full passes over it are
    # not charged to the exporter.
    gc.collect()
    gc.freeze()
    print(f"built {len(spans)} SDK spans (10 attributes each) in {time.perf_counter() - t0:.1f} s; "
          f"batch size {batch}")
    ing = ingest(spans, batch, workdir, process_runs, edges)
    runs = ing["process_runs"]
    print()
    print("chDB's own ingest rate (the ceiling), measured before each end-to-end run, spans/s:")
    for (label, on), rates in ing["ceilings"].items():
        print(f"  {label + (' [edges]' if on else ' [no edges]'):73s} " + ", ".join(f"{r:,.0f}" for r in rates))
    print()
    print(f"{'exporter, embedded=process, end to end':44s} {'spans/s':>10s} {'ceiling':>10s} {'x ceiling':>10s}"
          f" {'app us':>7s} {'writer us':>9s}")
    for i, r in enumerate(runs):
        name = f"  run {i + 1} ({'edges' if r['edges'] else 'no edges'})"
        print(f"{name:44s} {r['rate']:10,.0f} {r['ceiling']:10,.0f} {r['ratio']:10.2f}"
              f" {r['app_us']:7.1f} {r['writer_us']:9.1f}")
    for on, med in ing["median"].items():
        name = f"  median run (by ratio), {'edges' if on else 'no edges'}"
        mine = [r["writer_us"] for r in runs if r["edges"] == on]
        print(f"{name:44s} {med['rate']:10,.0f} {med['ceiling']:10,.0f} {med['ratio']:10.2f}"
              f" {med['app_us']:7.1f} {med['writer_us']:9.1f}  (writer us, median of runs: "
              f"{statistics.median(mine):.1f})")
    med = ing["median"][edges[0]]
    print(f"app side only (export() calls), median run: {med['app_rate']:,.0f} spans/s")
    print(f"exporter, embedded=inprocess ({'edges' if edges[0] else 'no edges'}): {ing['inprocess']:,.0f} spans/s, "
          f"{ing['inprocess'] / ing['inprocess_ceiling']:.2f} x the median run's ceiling")
    print(f"embedded=process CPU per span (median run): application {med['app_us']:.1f} us, store writer process "
          f"{med['writer_us']:.1f} us (load-independent capacity with a core each: "
          f"{1e6 / max(med['app_us'], med['writer_us']):,.0f} spans/s)")
    convert, encode, spool = ing["stages_app"]
    print(f"app side per span, {ing['encoder']}: spans -> Native {convert + encode:.1f} us, "
          f"spool write {spool:.1f} us")
    convert, encode, spool = ing["stages_python"]
    print(f"app side per span, pure Python (peer): convert {convert:.1f} us, Native encode {encode:.1f} us, "
          f"spool write {spool:.1f} us")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--spans", type=int, default=None)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--skip-ingest", action="store_true", help="only the query benchmarks")
    parser.add_argument("--process-runs", type=int, default=5, help="end-to-end runs of the default mode, each with its own ceiling (the run with the median ratio is the result)")
    parser.add_argument("--edges", choices=("both", "on", "off"), default="both",
                        help="the schema as it is (on), without ch_007's per-INSERT edge views and SQL index (off), "
                             "or each run on both (both, alternating order)")
    parser.add_argument("--workdir", default=os.curdir,
                        help="where the stores are made, in a fresh folder (default: the current directory, where "
                             "scope-otel's embedded store lives by default; /tmp on this VM is slowed by its own "
                             "history of deleted files)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a count, sorting-key or ceiling job (JSON), in a child process
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return 0
    spans_n = args.spans or (40_000 if args.quick else 200_000)
    rows_n = args.rows or (500_000 if args.quick else 5_000_000)
    workdir = tempfile.mkdtemp(prefix=".scope-bench-ch-", dir=args.workdir)
    create_us = file_create_us(workdir)
    print(f"stores under {os.path.abspath(workdir)}; creating a file there takes {create_us:.0f} us")
    if create_us > 60:
        print("  WARNING: file creation is slow here (ext4 without a journal scans past inodes deleted nearby in\n"
              "  the last minutes, and keeps doing so while files are created next to them); the exporter makes\n"
              "  ~10x the ceiling's files, so its ratio will be low.  A fresh top-level folder (--workdir\n"
              "  $(mktemp -d /scopebench.XXXX)) lands in a quiet inode group: 25-33 us here.")
    try:
        if not args.skip_ingest:
            edges = {"both": (True, False), "on": (True,), "off": (False,)}[args.edges]
            ingest_table(spans_n, args.batch, workdir, args.process_runs, edges)
        q = queries(rows_n, workdir, 15)
        print()
        print(f"table of {q['rows']:,} spans generated with INSERT ... SELECT FROM numbers() "
              f"in {q['generate_s']:.1f} s")
        print(f"{'query':52s} {'median ms':>10s}")
        print(f"{'trace by id: scope_call_tree view (' + str(q['tree_rows']) + ' spans)':52s} {q['tree_ms']:10.1f}")
        print(f"{'trace by id: plain WHERE TraceId = (peer)':52s} {q['plain_ms']:10.1f}")
        print(f"{'service edges: scope_service_edges (' + str(q['edges']) + ' edges)':52s} {q['edges_ms']:10.1f}")
        print(f"{'service edges: naive full self-join (peer)':52s} {q['naive_edges_ms']:10.1f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
