"""Calibration: what recording costs per event on this machine, timed in well under a second.

The planner spends its budget with these prices (:class:`scope_otel.planner.costmodel.CostModel`,
which caches them).  :func:`measure` times:

* the application's own work: a plain Python call and one simple statement
  (the unit the planner estimates a function's run time in);
* the capture runtime called as rewritten code calls it: an instrumented
  function at ``off`` (its probe's ``enter``, which returns ``None``, and
  ``exit``), at ``boundaries`` and at ``full`` (one and five arguments, a
  collection argument of 100 small tuples), a sampled-out ``enter`` and one
  ``state_change``;
* the off-path work per span: turning a record into a span
  (:class:`scope_otel.correlate.spans.Correlator`) and encoding it for the
  exporter in use (``otlp``: the OTLP request encoder; ``clickhouse``: the
  store's column batch and Native blocks; ``none``/``console``: nothing).
  It runs on the processor's thread, but on a GIL-bound program it competes
  with the application, so it is counted;
* the same calls through a real ``RingBufferSpanProcessor`` with an
  encode-only exporter, in process CPU time (all threads): what the separate
  parts miss (worker wake-ups, batching, GIL hand-offs) is added off-path;
* the start-up a process pays once for running under a plan (importing the
  instrumentation, installing its hook, rewriting a module), in a fresh
  interpreter.

Loops are timed in the thread's CPU time, so a machine busy with other
programs does not inflate the costs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from scope_otel.capture import RingBufferSpanProcessor, runtime
from scope_otel.correlate.spans import Correlator
from scope_otel.export import otlp
from scope_otel.store.rows import Batch

#: CPU time of this thread: other programs on a busy machine do not inflate it.
_clock = time.thread_time_ns
_PROBE_ARGS_1 = {"a": 1}
_PROBE_ARGS_5 = {"a": 1, "b": "text", "c": [1, 2], "d": None, "e": 2.5}
#: A typical collection argument: capturing it costs its repr.
_PROBE_CONTAINER = {"a": [(i, i * 7, "item") for i in range(100)]}


def measure(n: int, exporter: str) -> tuple[dict[str, float], str]:
    """(cost of each event in µs by :class:`~scope_otel.planner.costmodel.CostModel` field, what was timed).

    ``n`` is the number of calls per timed loop; ``exporter`` the one whose
    per-span encoding is priced.
    """
    call, stmt = _application_costs(n)
    costs, source = _runtime_costs(n, exporter)
    costs.update(call_us=call, stmt_us=stmt, startup_us=_startup_cost())
    return costs, source


def _per_op_us(loop, n: int, empty_ns: float) -> float:
    loop(max(n // 10, 1))  # warm up: first calls pay for caches and specialisation
    best = min(loop(n) for _ in range(3))
    return max((best - empty_ns) / n / 1000.0, 0.0)


def _empty_loop(n: int) -> int:
    t0 = _clock()
    for _ in range(n):
        pass
    return _clock() - t0


def _application_costs(n: int) -> tuple[float, float]:
    """(a plain call, one simple statement) in µs."""
    def nothing():
        return None

    def twenty():  # twenty simple statements
        a = 1; b = a + 1; c = b * 2; d = c - a; e = d + b  # noqa: E702
        a = e; b = a + 1; c = b * 2; d = c - a; e = d + b  # noqa: E702
        a = e; b = a + 1; c = b * 2; d = c - a; e = d + b  # noqa: E702
        a = e; b = a + 1; c = b * 2; d = c - a; e = d + b  # noqa: E702
        return e

    def call_loop(count: int, f=nothing) -> int:
        t0 = _clock()
        for _ in range(count):
            f()
        return _clock() - t0

    empty = min(_empty_loop(n) for _ in range(3))
    call = _per_op_us(call_loop, n, empty)
    stmt = max(_per_op_us(lambda c: call_loop(c, twenty), n, empty) - call, 0.0) / 20.0
    return call, stmt


def _encoder(exporter: str):
    """A function encoding a list of spans the way ``exporter`` does, or None (``none``, ``console``)."""
    if exporter == "clickhouse":
        def encode(spans):  # rows, then the Native blocks the store writer ingests
            batch = Batch()
            batch.add_spans(spans)
            return batch.encode()

        return encode
    if exporter == "otlp":
        return otlp.encode_request  # the encoder scope-otel's OTLP exporters use (C where built)
    return None


def _export_cost(exporter: str, spans: list) -> float:
    """µs to encode one span for ``exporter`` (0 for none/console)."""
    encode = _encoder(exporter)
    if not spans or encode is None:
        return 0.0
    encode(spans)  # warm up
    t0 = _clock()
    encode(spans)
    return (_clock() - t0) / len(spans) / 1000.0


def _pipeline_cost(fid: int, exporter: str, n: int) -> float:
    """µs of process CPU (all threads) per call recorded through the real processor.

    Ring, worker thread, record-to-span conversion, the exporter's encoding
    (not its network send) and the threads' competition for the GIL: what a
    recorded call really costs the program.
    """
    encode = _encoder(exporter)

    class _EncodeOnly(SpanExporter):
        def export(self, spans):
            if encode is not None:
                encode(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    # the Correlator turns the recorded calls into spans, as in a run
    processor = RingBufferSpanProcessor(_EncodeOnly(), schedule_delay_millis=50, correlator=Correlator)
    probe = runtime.probe(fid)
    enter, exit_ = probe.enter, probe.exit
    try:
        t0 = time.process_time_ns()
        for _ in range(n):
            exit_(enter(1), None)
        processor.force_flush(10_000)
        return (time.process_time_ns() - t0) / n / 1000.0
    finally:
        processor.shutdown()


def _runtime_costs(n: int, exporter: str) -> tuple[dict, str]:
    """Time the capture runtime, called the way rewritten code calls it.

    Rewritten functions call their probe (``runtime.probe(fid)``):
    ``t = p.enter(<parameter values>)`` first and ``p.exit(t, value)`` last;
    ``enter`` reads the level itself, so a function at ``off`` pays those two
    calls and nothing else (see :mod:`scope_otel.instrument.rewrite`).
    """
    here = os.path.abspath(__file__)
    every = frozenset({"args", "return", "exceptions", "state"})
    fid_b = runtime.register(__name__, "_probe_boundaries", here, 1, level="boundaries",
                             capture=frozenset({"exceptions"}), params=("a",))
    fid_f = runtime.register(__name__, "_probe_full", here, 1, level="full", capture=every, params=("a",))
    fid_f5 = runtime.register(__name__, "_probe_full5", here, 1, level="full", capture=every,
                              params=tuple(_PROBE_ARGS_5))
    fid_s = runtime.register(__name__, "_probe_sampled", here, 1, level="boundaries", sampling=0.0,
                             params=("a",))
    fid_o = runtime.register(__name__, "_probe_off", here, 1, level="off", params=("a",))
    ring = runtime.current_ring()

    def loop(fid, value, arg=1):
        probe = runtime.probe(fid)
        enter, exit_ = probe.enter, probe.exit

        def run(count: int) -> int:
            t0 = _clock()
            for _ in range(count):
                exit_(enter(arg), value)
            elapsed = _clock() - t0
            ring.take(count)  # keep the probe's records out of anyone's way
            return elapsed
        return run

    def loop5(count: int) -> int:
        probe = runtime.probe(fid_f5)
        enter, exit_ = probe.enter, probe.exit
        a, b, c, d, e = _PROBE_ARGS_5.values()
        t0 = _clock()
        for _ in range(count):
            exit_(enter(a, b, c, d, e), 42)
        elapsed = _clock() - t0
        ring.take(count)
        return elapsed

    def state_loop(count: int) -> int:
        t = runtime.enter(fid_f, _PROBE_ARGS_1)
        t0 = _clock()
        for i in range(count):
            runtime.state_change(t, "self.total", i)
        elapsed = _clock() - t0
        runtime.exit(t, None)
        ring.take(count)
        return elapsed

    empty = min(_empty_loop(n) for _ in range(3))
    costs = {
        "check_us": _per_op_us(loop(fid_o, None), n, empty),
        "boundaries_us": _per_op_us(loop(fid_b, None), n, empty),
        "full_us": _per_op_us(loop(fid_f, 42), n, empty),
        "sampled_out_us": _per_op_us(loop(fid_s, None), n, empty),
        "state_us": _per_op_us(state_loop, n // 4, empty / 4),
    }
    full5 = _per_op_us(loop5, n, empty)
    costs["arg_us"] = max(full5 - costs["full_us"], 0.0) / 4
    container = _per_op_us(loop(fid_f, 42, _PROBE_CONTAINER["a"]), n // 10, empty / 10)
    costs["container_us"] = max(container - costs["full_us"], 0.0)
    costs["offpath_us"], spans = _offpath_cost(fid_f, n // 4)
    costs["export_us"] = _export_cost(exporter, spans)
    # What the parts above miss (worker, batching, thread switches) goes off-path.
    pipeline = _pipeline_cost(fid_b, exporter, n // 8)
    costs["offpath_us"] = max(costs["offpath_us"], pipeline - costs["boundaries_us"] - costs["export_us"])
    implementation = getattr(runtime, "IMPLEMENTATION", "?")
    if runtime.LEVELS[fid_b] != 1 or runtime.LEVELS[fid_f] != 2:
        implementation += ", levels forced by configuration"
    return costs, f"scope_otel.capture.runtime ({implementation})"


def _offpath_cost(fid: int, n: int) -> tuple[float, list]:
    """(µs to turn one record into a span, the spans made) for ``n`` calls of ``fid`` at full."""
    ring = runtime.current_ring()
    ring.take(ring.capacity if hasattr(ring, "capacity") else 1 << 16)
    for i in range(n):
        runtime.exit(runtime.enter(fid, _PROBE_ARGS_1), i)
    records = ring.take(n)
    if not records:
        return 0.0, []
    correlator = Correlator()
    t0 = _clock()
    spans = [correlator.to_span(record) for record in records]
    return (_clock() - t0) / len(records) / 1000.0, spans


_STARTUP_PROBE = r"""
import json, os, sys, time
# what `scope-otel run` has imported before it applies a plan: these are paid with or without one
import opentelemetry.sdk.trace, scope_otel.capture.runtime, scope_otel.launcher.pipeline, wrapt
sys.path.insert(0, sys.argv[1])
t0 = time.thread_time()
import scope_otel.instrument as instrument
from scope_otel.plan import Plan
instrument.apply(Plan.from_globs(["_scope_otel_probe"], "full"))
import _scope_otel_probe
_scope_otel_probe.f(1)
# the first recorded call's span: its conversion imports the correlation layer, once per process
import scope_otel.correlate.spans
print(json.dumps({"startup_us": (time.thread_time() - t0) * 1e6}))
"""


def _startup_cost(runs: int = 3) -> float:
    """µs a process pays once for running under a plan, beyond what the launcher pays without one.

    The probe module is rewritten on the first run and read from the rewrite
    cache on the others, as in every run of a program after its first: the
    least of the warm runs is kept.  0 if it cannot be measured.
    """
    env = dict(os.environ, SCOPE_OTEL_PLAN="", OTEL_SDK_DISABLED="true")
    warm = []
    try:
        with tempfile.TemporaryDirectory(prefix="scope-otel-startup-") as tmp:
            with open(os.path.join(tmp, "_scope_otel_probe.py"), "w", encoding="utf-8") as fh:
                fh.write("def f(x):\n    return x\n")
            for i in range(runs):
                out = subprocess.run([sys.executable, "-c", _STARTUP_PROBE, tmp], capture_output=True, text=True,
                                     timeout=20, env=env)
                if i:
                    warm.append(float(json.loads(out.stdout.strip().splitlines()[-1])["startup_us"]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError):
        return 0.0
    return min(warm, default=0.0)


