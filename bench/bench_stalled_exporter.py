"""A backend that never answers: application latency, memory and drops.

    .venv/bin/python bench/bench_stalled_exporter.py [--quick] [--seconds 60]

For ``--seconds`` (default 60; ``--quick``: 10) the application thread ends
SDK spans at a steady rate (and records instrumented function calls) while
the exporter blocks forever on its first batch.  Measured per scenario:
application-thread time per span (p50/p99 from a 100 ns histogram, max),
RSS every second, the processor's drop counters and the overhead governor's
state.  Scenarios, each in a fresh child process:

* ``healthy``: RingBufferSpanProcessor, null exporter (the baseline p99);
* ``stalled``: RingBufferSpanProcessor, exporter stalled;
* ``bsp-stalled``: BatchSpanProcessor, exporter stalled (the peer).

Targets (issue 3): RSS bounded by the ring (+20 MB), p99 unchanged within
noise, every drop counted, no exception reaches the application.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def scenario(name: str, seconds: float, ring_size: int) -> dict:
    import psutil
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from scope_otel.capture import RingBufferSpanProcessor, runtime
    from scope_otel.correlate.spans import Correlator

    forever = threading.Event()

    class Exporter(SpanExporter):
        exported = 0

        def export(self, spans):
            if name != "healthy":
                forever.wait()
            self.exported += len(spans)
            return SpanExportResult.SUCCESS

    exporter = Exporter()
    if name == "bsp-stalled":
        proc = BatchSpanProcessor(exporter, max_queue_size=ring_size)
    else:
        proc = RingBufferSpanProcessor(exporter, max_queue_size=ring_size, schedule_delay_millis=200,
                                       correlator=Correlator)
    provider = TracerProvider()
    provider.add_span_processor(proc)
    tracer = provider.get_tracer("bench")
    fid = runtime.register("bench", "handler", __file__, 1, level="full")
    me = psutil.Process()
    rss = [me.memory_info().rss]
    # latency histogram in 100 ns buckets up to 10 ms (fixed memory: a list of
    # every sample would itself grow by tens of MB and hide the ring's RSS)
    hist = [0] * 100_001
    worst = 0
    errors = 0
    ended = 0
    clock = time.perf_counter_ns
    deadline = time.monotonic() + seconds
    next_sample = time.monotonic() + 1
    while time.monotonic() < deadline:
        for _ in range(200):
            try:
                t0 = clock()
                token = runtime.enter(fid, {"order": ended})
                span = tracer.start_span("request", attributes={"n": ended})
                span.end()
                runtime.exit(token, "ok")
                dt = clock() - t0
                hist[min(dt // 100, 100_000)] += 1
                if dt > worst:
                    worst = dt
                ended += 1
            except Exception:
                errors += 1
        time.sleep(0.0005)  # a steady, not saturating, request rate
        if time.monotonic() >= next_sample:
            rss.append(me.memory_info().rss)
            next_sample += 1
    def quantile(q: float) -> float:
        target, seen = q * ended, 0
        for bucket, count in enumerate(hist):
            seen += count
            if seen >= target:
                return (bucket + 1) / 10  # upper edge of the bucket, in us
        return worst / 1000

    step = max(1, len(rss) // 6)
    out = {
        "scenario": name,
        "spans": ended,
        "p50_us": quantile(0.50),
        "p99_us": quantile(0.99),
        "max_us": worst / 1000,
        "rss_start_mb": rss[0] / 2**20,
        "rss_max_mb": max(rss) / 2**20,
        "rss_end_mb": rss[-1] / 2**20,
        "rss_series_mb": [round(r / 2**20) for r in rss[::step]],
        "app_errors": errors,
    }
    if isinstance(proc, RingBufferSpanProcessor):
        st = proc.stats()
        out.update(dropped=st["dropped"], written=st["written"], exported=st["exported"],
                   governor=f"{st['governor_changes']} changes, 1/{round(1 / st['governor_ratio'])}, "
                            f"{st['governor_functions_lowered']} lowered")
    else:
        out.update(dropped="not counted", written="", exported=exporter.exported, governor="n/a")
    forever.set()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s per scenario")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--ring", type=int, default=1 << 16, help="queue/ring size for every scenario")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    if args.scenario:
        print(json.dumps(scenario(args.scenario, seconds, args.ring)))
        return 0
    results = []
    for name in ("healthy", "stalled", "bsp-stalled"):
        proc = subprocess.run(
            [sys.executable, __file__, "--scenario", name, "--seconds", str(seconds), "--ring", str(args.ring)],
            capture_output=True, text=True, check=True,
        )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{seconds:.0f} s per scenario, ring/queue size {args.ring}; each span = 1 function call (full) + 1 SDK span")
    cols = ["scenario", "spans", "p50_us", "p99_us", "max_us", "rss_start_mb", "rss_max_mb", "rss_end_mb",
            "written", "dropped", "exported", "app_errors", "governor"]
    print("  ".join(f"{c:>12}" for c in cols))
    for r in results:
        print("  ".join(f"{r[c]:>12.1f}" if isinstance(r[c], float) else f"{r[c]!s:>12}" for c in cols))
    print("governor: the overhead governor samples whole traces (1 in 2 ... 1024), then lowers the busiest "
          "functions, while the ring overflows; the function calls then cost less")
    for r in results:
        print(f"RSS over time ({r['scenario']}, MB, every {seconds / max(1, len(r['rss_series_mb']) - 1):.0f} s): "
              f"{r['rss_series_mb']}")
    healthy, stalled, bsp = results
    print(f"p99 stalled/healthy (RingBufferSpanProcessor): {stalled['p99_us'] / healthy['p99_us']:.2f}; "
          f"p99 RingBufferSpanProcessor/BatchSpanProcessor, both stalled: {stalled['p99_us'] / bsp['p99_us']:.2f}; "
          f"RSS growth stalled: {stalled['rss_max_mb'] - stalled['rss_start_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
