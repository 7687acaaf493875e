"""What redaction costs the span processor's worker, measured in the same run.

    .venv/bin/python bench/bench_redact.py [--spans N] [--rounds R]

Every SDK span is redacted by ``scope_otel.redact.scrub_spans`` in the
RingBufferSpanProcessor's worker before export.  This times the processor
alone (finished spans -> ``on_end`` -> null exporter, as the "processor only"
row of bench_processor.py) with redaction on, and with it replaced by a
no-op: the peer is the same processor without redaction.  Two span shapes:
the one-integer-attribute span of bench_processor.py, and an HTTP server span
with the eleven attributes our Flask/Django integrations set.  Rounds
alternate on/off; the best of each is kept.
"""
from __future__ import annotations

import argparse
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from scope_otel.capture import RingBufferSpanProcessor, processor as processor_module

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
    proc = RingBufferSpanProcessor(exporter, max_queue_size=len(spans), max_export_batch_size=512,
                                   capture_functions=False)
    on_end = proc.on_end
    t0 = time.perf_counter()
    for s in spans:
        on_end(s)
    proc.force_flush(120_000)
    dt = time.perf_counter() - t0
    proc.shutdown()
    assert exporter.count == len(spans)
    return exporter.count / dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
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
