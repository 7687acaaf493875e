"""What counting per-function statistics adds to the export worker, against what the worker already does.

    .venv/bin/python bench/bench_tally.py

Real records from the capture runtime (a function recorded at boundaries and
at full, under an SDK span and not) go through ``capture.tally.add_batch`` (the
statistics `plan --from-store` reads) and through the correlator's
``to_span`` (what the worker does with every record anyway); µs per record,
best of 5 rounds, and the ratio.  The application's threads run nothing more
for the statistics: this is their whole cost, charged to recording by the
overhead governor with the rest of the worker's CPU.
"""
from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from scope_otel.capture import runtime, tally
from scope_otel.capture.processor import _new_correlator
from scope_otel.capture.ring import Ring


def _records(n: int) -> list:
    provider = TracerProvider()
    tracer = provider.get_tracer("bench")
    b = runtime.register("bench.mod", "b", __file__, 1, level="boundaries")
    f = runtime.register("bench.mod", "f", __file__, 2, level="full", params=("x", "y"))
    ring = Ring(1 << 16)
    runtime.bind_ring(ring)
    try:
        with tracer.start_as_current_span("request"):
            for i in range(n // 4):
                runtime.exit(runtime.enter(b), i)
                runtime.exit(runtime.enter_params(f, i, "text"), i)
        for i in range(n // 4):
            runtime.exit(runtime.enter(b), i)
            runtime.exit(runtime.enter_params(f, i, "text"), i)
    finally:
        runtime.unbind_ring(ring)
    return [r for r in ring.take(ring.capacity) if not hasattr(r, "resource")]


def main() -> None:
    records = _records(20000)
    if not records:
        raise SystemExit("no records were made (capture runtime not bound?)")
    rates = runtime._RATES
    correlator = _new_correlator()
    best_tally = best_span = float("inf")
    for _ in range(5):
        tally.take()
        t0 = time.perf_counter()
        tally.add_batch(records, rates)
        best_tally = min(best_tally, (time.perf_counter() - t0) / len(records) * 1e6)
        t0 = time.perf_counter()
        for r in records:
            correlator.to_span(r)
        correlator.batch_done()
        best_span = min(best_span, (time.perf_counter() - t0) / len(records) * 1e6)
    counts, n = tally.take()
    print(f"{len(records)} records ({n} counted in the last round)")
    print(f"{'step':38s} {'us/record':>10s}")
    print(f"{'to_span (the worker already does it)':38s} {best_span:10.3f}")
    print(f"{'tally.add_batch (per-function stats)':38s} {best_tally:10.3f}")
    print(f"ratio tally/to_span: {best_tally / best_span:.2f}")


if __name__ == "__main__":
    main()
