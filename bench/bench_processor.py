"""RingBufferSpanProcessor vs BatchSpanProcessor, measured in the same run.

    .venv/bin/python bench/bench_processor.py [--quick] [--spans N]

1. ``on_end`` cost on the application thread: the same finished spans handed
   to each processor's ``on_end`` (queues large enough that nothing drops).
2. End-to-end spans/s: start+end N spans through a TracerProvider, then
   ``force_flush``; wall time until the exporter has everything.  Once with a
   null exporter, once with the OTLP gRPC exporter sending to a local
   receiver running in a separate process (it only counts).  Rows "equal
   queues" give both processors a queue of N (nothing can drop); rows
   "default queues" use each one's defaults (BatchSpanProcessor: 2048, drops
   when the burst outruns its worker; RingBufferSpanProcessor: 65536).
   Rows "processor only" hand already-finished spans to ``on_end`` and time
   until the exporter has them all: the pipeline's own throughput, without
   the SDK's span creation that both share.  OTLP rows "(both stock
   exporter)" give both processors the stock OTLPSpanExporter; rows
   "(ring: scope-otel exporter)" put RingBufferSpanProcessor with scope-otel's
   OTLP gRPC exporter (C request encoder), the product's default pipeline,
   beside BatchSpanProcessor with the stock exporter, measured in the same
   rounds.
3. OTLP request encoding, us per span: the stock ``encode_spans`` +
   ``SerializeToString`` vs scope-otel's C encoder, on batches of 512 spans
   with 1 and with 10 attributes.

Targets (issue 3): on_end <= 0.25x BatchSpanProcessor; spans/s >= 2x.
"""
from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402

from scope_otel.capture import RingBufferSpanProcessor, runtime  # noqa: E402
from scope_otel.export import otlp  # noqa: E402

_SINK = r"""
import sys, time
from concurrent import futures
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb, trace_service_pb2_grpc as pbg
count = 0
class S(pbg.TraceServiceServicer):
    def Export(self, request, context):
        global count
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                count += len(ss.spans)
        return pb.ExportTraceServiceResponse()
server = grpc.server(futures.ThreadPoolExecutor(4))
pbg.add_TraceServiceServicer_to_server(S(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()
"""


class NullExporter(SpanExporter):
    def __init__(self):
        self.count = 0

    def export(self, spans):
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


class _Collect(SpanProcessor):
    def __init__(self):
        self.spans = []

    def on_end(self, span):
        self.spans.append(span)


def _finished_spans(n: int, attributes: int = 1) -> list:
    provider = TracerProvider()
    collect = _Collect()
    provider.add_span_processor(collect)
    tracer = provider.get_tracer("bench")
    for i in range(n):
        attrs = {"i": i}
        for k in range(1, attributes):  # strings, ints, floats, a bool, as real spans carry
            attrs[f"attr.{k}"] = (f"value-{k}-{i}", i * k, i / (k + 1), bool(i & 1))[k % 4]
        tracer.start_span("op", attributes=attrs).end()
    return collect.spans


class Counting(SpanExporter):
    """Counts what the wrapped exporter accepted."""

    def __init__(self, inner):
        self.inner = inner
        self.count = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.count += len(spans)
        return result

    def shutdown(self):
        self.inner.shutdown()


def _processor(kind: str, exporter, n: int | None):
    """Same queue size for both when n is given; each one's defaults otherwise."""
    if kind == "batch":
        if n is None:
            return BatchSpanProcessor(exporter)
        return BatchSpanProcessor(exporter, max_queue_size=n, max_export_batch_size=512)
    if n is None:
        return RingBufferSpanProcessor(exporter)
    return RingBufferSpanProcessor(exporter, max_queue_size=n, max_export_batch_size=512)


def bench_on_end(n: int, rounds: int) -> dict[str, float]:
    spans = _finished_spans(n)
    best = {}
    for _ in range(rounds):
        for kind in ("batch", "ring"):
            proc = _processor(kind, NullExporter(), n)
            on_end = proc.on_end
            gc.disable()
            t0 = time.perf_counter_ns()
            for s in spans:
                on_end(s)
            dt = (time.perf_counter_ns() - t0) / n
            gc.enable()
            proc.force_flush()
            proc.shutdown()
            best[kind] = min(best.get(kind, dt), dt)
    return best


def _variants(make_exporter, variants):
    """{row key: (processor kind, exporter factory)}; both processors on make_exporter by default."""
    return variants or {"batch": ("batch", make_exporter), "ring": ("ring", make_exporter)}


def timed_rate(proc, exporter, feed) -> float:
    """Exported spans per second of wall time: ``feed(proc)`` hands the processor its spans, then
    ``force_flush``; the processor is shut down after.  The one timing loop of the processor rows
    (and of bench_redact.py)."""
    t0 = time.perf_counter()
    feed(proc)
    proc.force_flush(120_000)
    dt = time.perf_counter() - t0
    proc.shutdown()
    return exporter.count / dt


def _best_rates(rounds: int, make_exporter, variants, n: int | None, feed) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(rounds):
        for key, (kind, factory) in _variants(make_exporter, variants).items():
            exporter = Counting(factory())
            rate = timed_rate(_processor(kind, exporter, n), exporter, feed)
            best[key] = max(best.get(key, rate), rate)
    return best


def bench_end_to_end(n: int, rounds: int, make_exporter, defaults: bool = False, variants=None) -> dict[str, float]:
    """Exported spans per second of wall time (start+end N spans, then flush)."""

    def feed(proc):
        provider = TracerProvider()
        provider.add_span_processor(proc)
        tracer = provider.get_tracer("bench")
        for i in range(n):
            tracer.start_span("op", attributes={"i": i}).end()

    return _best_rates(rounds, make_exporter, variants, None if defaults else n, feed)


def end_each(spans: list):
    """A feed for :func:`timed_rate`: ``on_end`` of each finished span."""

    def feed(proc):
        on_end = proc.on_end
        for s in spans:
            on_end(s)

    return feed


def bench_pipeline(n: int, rounds: int, make_exporter, variants=None) -> dict[str, float]:
    """Exported spans per second for already-finished spans: ``on_end`` of
    each, then flush.  The processor's own throughput, without the SDK's span
    creation (identical for both and ~20x the processor's cost)."""
    return _best_rates(rounds, make_exporter, variants, n, end_each(_finished_spans(n)))


def bench_encode(rounds: int, batch: int = 512, batches: int = 8) -> list[tuple[int, float, float]]:
    """(attributes per span, stock us/span, C us/span), best of ``rounds``."""
    c_encode = otlp._load_c()
    out = []
    for attributes in (1, 10):
        spans = _finished_spans(batch * batches, attributes)
        chunks = [spans[i:i + batch] for i in range(0, len(spans), batch)]
        best = {}
        for _ in range(rounds):
            for name, encode in (("stock", otlp._encode_python), ("c", c_encode)):
                if encode is None:
                    continue
                t0 = time.perf_counter()
                for chunk in chunks:
                    encode(chunk)
                dt = (time.perf_counter() - t0) / len(spans) * 1e6
                best[name] = min(best.get(name, dt), dt)
        if c_encode is not None:
            assert all(c_encode(c) == otlp._encode_python(c) for c in chunks[:2])
        out.append((attributes, best["stock"], best.get("c", float("nan"))))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer spans and rounds")
    parser.add_argument("--spans", type=int, default=None)
    args = parser.parse_args(argv)
    n = args.spans or (10_000 if args.quick else 50_000)
    rounds = 2 if args.quick else 3

    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}, hot path: {runtime.IMPLEMENTATION}, OTLP encoder: {otlp.IMPLEMENTATION}, "
          f"spans per run: {n}, best of {rounds}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    rows = []
    oe = bench_on_end(n, rounds)
    rows.append(("on_end, app thread (ns/span, lower is better)", oe["batch"], oe["ring"], oe["ring"] / oe["batch"], "<= 0.25"))
    pipe = bench_pipeline(n, rounds, NullExporter)
    rows.append(("processor only: finished spans -> null exporter (exported/s)", pipe["batch"], pipe["ring"], pipe["ring"] / pipe["batch"], ">= 2"))
    e2e = bench_end_to_end(n, rounds, NullExporter)
    rows.append(("end-to-end, null exporter, equal queues (exported/s)", e2e["batch"], e2e["ring"], e2e["ring"] / e2e["batch"], ">= 2"))
    e2e = bench_end_to_end(n, rounds, NullExporter, defaults=True)
    rows.append(("end-to-end, null exporter, default queues (exported/s)", e2e["batch"], e2e["ring"], e2e["ring"] / e2e["batch"], ">= 2"))

    sink = subprocess.Popen([sys.executable, "-c", _SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(sink.stdout.readline())
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        def stock():
            return OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)

        def scope():
            return otlp.OTLPGrpcSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)

        variants = {"batch": ("batch", stock), "ring": ("ring", stock), "ring+scope": ("ring", scope)}

        def otlp_rows(label, result):
            b = result["batch"]
            rows.append((f"{label} (both stock exporter)", b, result["ring"], result["ring"] / b, ">= 2"))
            rows.append((f"{label} (ring: scope-otel exporter)", b, result["ring+scope"], result["ring+scope"] / b, ">= 2"))

        otlp_rows("processor only: finished spans -> OTLP gRPC", bench_pipeline(n, rounds, stock, variants))
        otlp_rows("end-to-end, OTLP gRPC, equal queues", bench_end_to_end(n, rounds, stock, variants=variants))
        otlp_rows("end-to-end, OTLP gRPC, default queues", bench_end_to_end(n, rounds, stock, True, variants))
    finally:
        sink.stdin.close()
        sink.terminate()
        sink.wait()

    w = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(w)}  {'BatchSpanProcessor':>18}  {'RingBufferSpanProcessor':>23}  {'ratio':>6}  target")
    for name, peer, ours, ratio, target in rows:
        print(f"{name.ljust(w)}  {peer:>18,.1f}  {ours:>23,.1f}  {ratio:>6.2f}  {target}")
    print("OTLP rows in exported spans/s; the OTLP gRPC receiver runs in a separate process.")

    print()
    print("OTLP request encoding (us/span, batches of 512, best of %d)" % rounds)
    print(f"{'attributes per span':>20}  {'stock encode_spans':>18}  {'scope-otel C':>12}  {'stock/C':>7}")
    for attributes, stock_us, c_us in bench_encode(rounds):
        print(f"{attributes:>20}  {stock_us:>18.2f}  {c_us:>12.2f}  {stock_us / c_us:>7.1f}")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
