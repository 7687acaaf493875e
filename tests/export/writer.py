"""A stand-alone program that records spans into a ClickHouse store, for process tests.

    python -m tests.export.writer STORE N [--fork] [--name NAME] [--hold SECONDS] [--hold-until FILE]

Runs N root spans through a BatchSpanProcessor into ``ClickHouseSpanExporter(STORE)``.
With ``--fork`` it then forks a child that records N spans more and exits the
normal way (``sys.exit``), as a gunicorn worker would.  ``--hold`` keeps the
process alive that long afterwards; ``--hold-until`` keeps it alive until FILE
exists (at most two minutes), so a test decides when it may end.  Prints the exporters' stats as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from scope_otel.export.clickhouse import ClickHouseSpanExporter


def record(exporter: ClickHouseSpanExporter, n: int, name: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    processor = BatchSpanProcessor(exporter, schedule_delay_millis=50, max_export_batch_size=64)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("writer")
    for i in range(n):
        with tracer.start_as_current_span(f"{name}-{i}"):
            time.sleep(0.001)
    processor.force_flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("n", type=int)
    parser.add_argument("--fork", action="store_true")
    parser.add_argument("--name", default=f"w{os.getpid()}")
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--hold-until", metavar="FILE")
    args = parser.parse_args()
    exporter = ClickHouseSpanExporter(args.store)
    record(exporter, args.n, args.name)
    if args.fork:
        pid = os.fork()
        if pid == 0:
            child = ClickHouseSpanExporter(args.store)
            record(child, args.n, args.name + "-child")
            print(json.dumps({"child": child.stats()}), flush=True)
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"child_status": status}), flush=True)
    time.sleep(args.hold)
    deadline = time.monotonic() + 120
    while args.hold_until and not os.path.exists(args.hold_until) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps({"parent": exporter.stats()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
