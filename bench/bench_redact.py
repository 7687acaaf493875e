"""What redaction costs the span processor's worker, measured in the same run.

    .venv/bin/python bench/bench_redact.py [--spans N] [--rounds R]
    .venv/bin/python bench/bench_redact.py --instructions   # callgrind, load-independent

Every SDK span is redacted by ``scope_otel.redact.scrub_spans`` in the
RingBufferSpanProcessor's worker before export.  This times the processor
alone (finished spans -> ``on_end`` -> null exporter, as the "processor only"
row of bench_processor.py) with redaction on, and with it replaced by a
no-op: the peer is the same processor without redaction.  Two span shapes:
the one-integer-attribute span of bench_processor.py, and an HTTP server span
with the eleven attributes our Flask/Django integrations set.  Rounds
alternate on/off; the best of each is kept.

``--instructions`` counts instead, under valgrind's callgrind, the
instructions per span of the worker's export step (``_export`` on batches of
512, called directly after a warm-up; counting switched on for the measured
batches only), redaction on and off: exact and independent of the machine's
load, though blind to cache misses, which the timed rows include.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_processor import end_each, timed_rate  # noqa: E402
from scope_otel.capture import RingBufferSpanProcessor, processor as processor_module  # noqa: E402

HTTP = {
    "http.request.method": "GET", "url.scheme": "http", "url.path": "/items/{i}", "url.query": "page=2&sort=name",
    "server.address": "127.0.0.1", "server.port": 8000, "network.protocol.version": "1.1",
    "user_agent.original": "python-requests/2.32.3", "http.route": "/items/<id>",
    "http.response.status_code": 200, "client.address": "127.0.0.1",
}


class Null(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans):
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _spans(n: int, shape: str) -> list:
    tracer = TracerProvider().get_tracer("bench")
    out = []
    for i in range(n):
        if shape == "http":
            attrs = dict(HTTP, **{"url.path": f"/items/{i % 500}"})
        else:
            attrs = {"i": i}
        span = tracer.start_span("op", attributes=attrs)
        span.end()
        out.append(span)
    return out


def _rate(spans: list) -> float:
    exporter = Null()
    proc = RingBufferSpanProcessor(exporter, max_queue_size=len(spans), max_export_batch_size=512)
    rate = timed_rate(proc, exporter, end_each(spans))
    assert exporter.count == len(spans)
    return rate


def _count_worker(shape: str, mode: str, n: int) -> None:
    """Run under callgrind by :func:`_instructions`: ``_export`` of ``n`` spans, counted."""
    if mode == "off":
        processor_module.scrub_spans = lambda spans, redactor: None
    spans = _spans(n, shape)
    proc = RingBufferSpanProcessor(Null(), max_queue_size=1024, max_export_batch_size=512)
    chunks = [spans[i:i + 512] for i in range(0, len(spans), 512)]
    for chunk in chunks[:2]:  # warm-up: caches of the rules, specialised bytecode
        proc._export(chunk)
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True, check=True)
    for chunk in chunks:
        proc._export(chunk)
    subprocess.run(["callgrind_control", "-i", "off", pid], capture_output=True, check=True)


def _instructions(n: int) -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (callgrind_control) on PATH")
    print(f"instructions per span, processor worker's export step (_export, batches of 512), {n} spans counted (callgrind)")
    print(f"{'span shape':34s} {'redaction on':>14s} {'off (peer)':>14s} {'added':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for shape, label in (("int", "1 int attribute (bench_processor)"), ("http", "HTTP server span, 11 attributes")):
            per_span = {}
            for mode in ("on", "off"):
                out = os.path.join(tmp, f"callgrind.{shape}.{mode}")
                subprocess.run(
                    ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                     sys.executable, os.path.abspath(__file__), "--count-worker", shape, mode, "--spans", str(n)],
                    env=dict(os.environ, PYTHONHASHSEED="0"), capture_output=True, text=True, check=True)
                total = 0
                for name in os.listdir(tmp):  # one file per thread or dump
                    if name.startswith(f"callgrind.{shape}.{mode}"):
                        with open(os.path.join(tmp, name)) as fh:
                            total += sum(int(line.split()[1]) for line in fh if line.startswith("totals:"))
                per_span[mode] = total / n
            print(f"{label:34s} {per_span['on']:14,.0f} {per_span['off']:14,.0f} {per_span['on'] - per_span['off']:8,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="instructions per span under callgrind instead")
    parser.add_argument("--count-worker", nargs=2, metavar=("SHAPE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_worker:
        _count_worker(*args.count_worker, args.spans)
        return
    if args.instructions:
        _instructions(args.spans or 10_240)
        return
    args.spans = args.spans or 200_000
    real = processor_module.scrub_spans
    print(f"processor only, finished spans -> null exporter, {args.spans} spans, best of {args.rounds}")
    print(f"{'span shape':34s} {'redaction on':>14s} {'off (peer)':>14s} {'ratio':>7s}")
    for shape, label in (("int", "1 int attribute (bench_processor)"), ("http", "HTTP server span, 11 attributes")):
        spans = _spans(args.spans, shape)
        best = {"on": 0.0, "off": 0.0}
        for _ in range(args.rounds):
            for mode in ("on", "off"):
                processor_module.scrub_spans = real if mode == "on" else (lambda spans, redactor: None)
                best[mode] = max(best[mode], _rate(spans))
        processor_module.scrub_spans = real
        print(f"{label:34s} {best['on']:12,.0f}/s {best['off']:12,.0f}/s {best['on'] / best['off']:6.2f}x")


if __name__ == "__main__":
    main()
