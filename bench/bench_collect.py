"""Spans/s through ``scope-otel collect`` into chDB, beside the exporter writing chDB directly.

    .venv/bin/python bench/bench_collect.py [--quick] [--clients N] [--batches N]

Rows measured in the same run, each into a fresh embedded store (chDB):

* ``direct``: one process, ``ClickHouseSpanExporter.export(batch)`` in a loop
  (the exporter-direct rate of the ClickHouse work);
* ``collect grpc`` / ``collect http``: ``scope-otel collect`` as a subprocess,
  fed by N client processes, each an SDK ``OTLPSpanExporter`` (gRPC, or
  HTTP/protobuf with gzip) exporting the same batches.  Time runs from the
  clients' start until the collector has written everything (``SIGINT``
  after the clients finish; it drains its queue first and reports how long
  that took as ``stop_s``);
* ``collect grpc, 2 MiB queue``: the same with ``--max-queue-size 2MiB``, so
  the store falls behind and backpressure (``RESOURCE_EXHAUSTED`` with
  RetryInfo, retried by the exporters) shows in the notes;
* ``receiver only``: the same collector code with a sink that stores nothing,
  so the receivers' (and the clients') share of the cost is visible.

Every batch is the same 512 pre-built SDK spans (8 attributes, one event,
HLC stamp), so span creation is not measured, only encoding, transport,
decoding, queueing and the ClickHouse insert.  Rows written are checked with
``scope-otel query``; collector refusals (backpressure) and the exporters'
retries are reported, not hidden.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil

BIN = os.path.dirname(sys.executable)
BATCH = 512


def _spans(n: int = BATCH) -> list:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from scope_otel.causal.processor import HLCSpanProcessor

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(HLCSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for i in range(n // 8):
        with tracer.start_as_current_span("GET /items/<int:id>", attributes={
            "http.request.method": "GET", "http.route": "/items/<int:id>", "url.path": f"/items/{i}",
            "http.response.status_code": 200, "server.address": "127.0.0.1", "server.port": 8000,
            "user_agent.original": "bench/1.0", "client.address": "127.0.0.1"}):
            for j in range(7):
                with tracer.start_as_current_span("shop.orders:place_order", attributes={
                    "code.function.name": "place_order", "code.namespace": "shop.orders",
                    "code.file.path": "/srv/shop/orders.py", "code.line.number": 40 + j,
                    "scope.kind": "function", "scope.level": "full", "scope.arg.item": repr(i),
                    "scope.return": "True"}) as span:
                    span.add_event("scope.state_change", {"scope.target": "self.total", "scope.value": str(j)})
    return list(memory.get_finished_spans())


# -- the measured paths ----------------------------------------------------------------

def _direct(store: str, batches: int, queue) -> None:
    from scope_otel.export import ClickHouseSpanExporter

    spans = _spans()
    exporter = ClickHouseSpanExporter(store)
    exporter.export(spans[:1])  # schema creation and engine start are not the steady state
    start = time.perf_counter()
    for _ in range(batches):
        exporter.export(spans)
    exporter.force_flush()
    elapsed = time.perf_counter() - start
    stats = exporter.stats()
    exporter.shutdown()
    queue.put({"seconds": elapsed, "spans": batches * len(spans), "dropped": stats.get("spans_dropped", 0),
               "spooled": stats.get("spans_spooled", 0)})


def _client(protocol: str, endpoint: str, batches: int, start_at: float, queue) -> None:
    import logging

    logging.disable(logging.WARNING)  # retry chatter would cost more than it tells
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=60)
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, compression=Compression.Gzip, timeout=60)
    spans = _spans()
    while time.time() < start_at:
        time.sleep(0.001)
    failed = 0
    for _ in range(batches):
        if exporter.export(spans).name != "SUCCESS":
            failed += 1
    exporter.shutdown()
    queue.put({"failed_batches": failed})


def _serve_null(ready: str) -> int:
    """The collector of ``scope-otel collect`` with a sink that stores nothing (receiver cost only)."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    from scope_otel.collect.cli import _serve
    from scope_otel.collect.collector import Collector

    class NullSink:
        def export_otlp(self, request):
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    sink = NullSink()
    collector = Collector(sink, grpc_port=0, http_port=0).start()
    return _serve(collector, sink, argparse.Namespace(store="(none)", token=None, ready_file=ready))


def _collect(protocol: str, store: str, clients: int, batches: int, *extra: str, null: bool = False) -> dict:
    ctx = mp.get_context("spawn")
    ready = store + ".ready.json"
    command = ([sys.executable, os.path.abspath(__file__), "--serve-null", ready] if null else
               [os.path.join(BIN, "scope-otel"), "collect", "--store", store, "--grpc-port", "0",
                "--http-port", "0", "--ready-file", ready, *extra])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not os.path.exists(ready):
        if proc.poll() is not None:
            raise SystemExit(f"scope-otel collect did not start:\n{proc.communicate()[0]}")
        time.sleep(0.05)
    endpoints = json.load(open(ready))
    endpoint = endpoints["grpc"] if protocol == "grpc" else endpoints["http"]
    queue = ctx.Queue()
    start_at = time.time() + 3.0  # let every client import and build its spans first
    workers = [ctx.Process(target=_client, args=(protocol, endpoint, batches, start_at, queue)) for _ in range(clients)]
    for w in workers:
        w.start()
    results = _result(queue, workers)
    for w in workers:
        w.join()
    clients_done = time.time() - start_at
    collector = psutil.Process(proc.pid)
    stop_at = time.time()
    proc.send_signal(signal.SIGINT)
    cpu = 0.0
    while proc.poll() is None:  # the collector's own CPU time, read until it exits
        try:
            times = collector.cpu_times()
            cpu = times.user + times.system
        except psutil.Error:
            break
        time.sleep(0.02)
    out = proc.communicate(timeout=600)[0]
    stats = json.loads(out.split("stopped ", 1)[1].splitlines()[0])
    # written = the moment the collector had stored everything (not its exit,
    # which adds closing the engine and the interpreter's teardown)
    elapsed = stop_at + stats["stop_s"] - start_at
    return {"seconds": elapsed, "spans": stats["written_spans"], "stats": stats, "collector_cpu": cpu,
            "clients_done": clients_done,
            "failed_batches": sum(r["failed_batches"] for r in results)}


def _result(queue, processes: list, timeout: float = 900) -> list[dict]:
    """One result per process; fail loudly (not after the timeout) if one dies without answering."""
    import queue as _queue

    results, deadline = [], time.monotonic() + timeout
    while len(results) < len(processes):
        try:
            results.append(queue.get(timeout=1))
        except _queue.Empty:
            dead = [p for p in processes if not p.is_alive() and p.exitcode != 0]
            if dead or time.monotonic() > deadline:
                raise SystemExit(f"bench worker failed: exit codes {[p.exitcode for p in processes]}")
    return results


def _count_rows(store: str) -> int:
    out = subprocess.run([os.path.join(BIN, "scope-otel"), "query", "SELECT count() FROM otel_traces",
                          "--store", store, "--format", "csv"], capture_output=True, text=True, timeout=120)
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"could not count rows in {store}: {out.stderr.strip() or out.stdout.strip()}", file=sys.stderr)
        return -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer batches)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent OTLP exporter processes (default 4)")
    parser.add_argument("--batches", type=int, help="batches of 512 spans per client (default 40, quick 8)")
    parser.add_argument("--serve-null", metavar="READY_FILE", help=argparse.SUPPRESS)  # internal: receiver-only row
    args = parser.parse_args()
    if args.serve_null:
        return _serve_null(args.serve_null)
    per_client = args.batches or (8 if args.quick else 40)
    total_batches = per_client * args.clients
    ctx = mp.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-collect-") as tmp:
        queue = ctx.Queue()
        direct_store = os.path.join(tmp, "direct")
        p = ctx.Process(target=_direct, args=(direct_store, total_batches, queue))
        p.start()
        (direct,) = _result(queue, [p])
        p.join()
        direct["rows"] = _count_rows(direct_store) - 1  # minus the warm-up span
        rows.append(("direct ClickHouseSpanExporter", 1, direct))
        for name, protocol, extra in (("collect grpc", "grpc", ()), ("collect http (gzip)", "http", ()),
                                      ("collect grpc, 2 MiB queue", "grpc", ("--max-queue-size", "2MiB"))):
            store = os.path.join(tmp, name.replace(" ", "_").replace(",", ""))
            result = _collect(protocol, store, args.clients, per_client, *extra)
            result["rows"] = _count_rows(store)
            rows.append((name, args.clients, result))
        for protocol in ("grpc", "http"):
            result = _collect(protocol, os.path.join(tmp, "null-" + protocol), args.clients, per_client, null=True)
            result["rows"] = "-"
            rows.append((f"receiver only {protocol}, no store", args.clients, result))

    base = direct["spans"] / direct["seconds"]
    print(f"\nspans/s into chDB, {total_batches} batches x {BATCH} spans per row, cpu count {os.cpu_count()}\n")
    print(f"{'path':32} {'clients':>7} {'spans':>8} {'rows':>8} {'seconds':>8} {'spans/s':>9} {'vs direct':>9}  notes")
    for name, clients, r in rows:
        rate = r["spans"] / r["seconds"]
        notes = ""
        if "stats" in r:
            s = r["stats"]
            notes = (f"collector CPU {r['collector_cpu']:.1f} s, clients done at {r['clients_done']:.1f} s, "
                     f"refused {s['rejected_requests']} req (retried by exporters), peak queue "
                     f"{s['peak_bytes'] / 1e6:.1f} MB, {s['store_writes']} inserts, failed batches {r['failed_batches']}")
        else:
            notes = f"dropped {r['dropped']}, spooled {r['spooled']}"
        print(f"{name:32} {clients:>7} {r['spans']:>8} {r['rows']!s:>8} {r['seconds']:>8.2f} {rate:>9.0f} "
              f"{rate / base:>8.2f}x  {notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
