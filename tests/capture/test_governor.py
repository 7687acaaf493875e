"""The overhead governor: whole traces sampled, then the busiest functions lowered, raised again, never dark."""
from __future__ import annotations

import os
import random
import re
import signal
import sys
import textwrap
import time

import pytest
from opentelemetry.trace import NonRecordingSpan

from scope_otel.capture import governor as gov
from scope_otel.capture import runtime
from scope_otel.capture.governor import GovernedSampler
from tests.support.procs import clean_env, run, tool


class Window:
    """Measurements as the governor's thread takes them: (time, process CPU, workers' CPU, written,
    dropped, ring size, capacity, read, unsampled calls, store writer's CPU), advanced one tick at a time; every record
    written is read."""

    def __init__(self, governor):
        self.g = governor
        self.t = self.cpu = self.worker = 0.0
        self.written = self.dropped = 0
        governor._hot_us = 1.0
        governor.tick((0.0, 0.0, 0.0, 0, 0, 0, 1024, 0, 0, 0.0))

    def tick(self, cost: float, records: int = 1000, dropped: int = 0, size: int = 0):
        """One window in which recording cost ``cost`` of the program's CPU (0.5 s of it)."""
        self.t += gov.TICK
        recording = 0.5 * cost
        self.cpu += 0.5 + recording
        self.worker += recording - records * 1e-6
        self.written += records
        self.dropped += dropped
        self.g.tick((self.t, self.cpu, self.worker, self.written, self.dropped, size, 1024, self.written, 0, 0.0))


@pytest.fixture
def governor():
    g = runtime.governor
    if g._thread is not None:  # the thread an earlier pipeline started would tick between the test's own ticks
        g.stop()
        g._thread.join(5)
        g._thread = None
    g.reset()
    g.configure(10)
    g.quiet = True
    g.smooth = False  # the control law on each window as it comes (smoothing has a test of its own)
    saved = g._listeners[:]
    try:
        yield g
    finally:
        g._listeners[:] = saved
        g.quiet = False
        g.smooth = True
        g.configure(1000)
        g.reset()


def test_over_budget_halves_traces_at_once_to_the_target_and_recovers_within_seconds(governor):
    w = Window(governor)
    w.tick(0.05)
    assert governor.ratio == 1.0  # within the 10 % budget: nothing changes
    w.tick(0.50)  # five times the budget: 0.5 / (0.8 * 0.1) = 6.25 -> three halvings (1/8)
    assert governor.ratio == 1 / 8
    ids = random.Random(1)
    kept = sum(gov.keeps(ids.getrandbits(128)) for _ in range(8000))
    assert 800 < kept < 1200  # one in eight
    w.tick(0.07)
    assert governor.ratio == 1 / 8  # within the band: held
    ticks = 0
    while governor.ratio < 1.0:
        w.tick(0.01)
        ticks += 1
    assert ticks == 3 and ticks * gov.TICK <= 2.0


def test_a_single_burst_is_averaged_with_the_window_before(governor):
    governor.smooth = True
    w = Window(governor)
    w.tick(0.02)
    w.tick(0.30)  # a store writer's burst: judged as (0.02 + 0.30) / 2 = 0.16 -> one halving, not three
    assert governor.ratio == 0.5


def test_a_window_in_which_the_program_hardly_ran_is_not_judged_by_cost(governor):
    w = Window(governor)
    w.t += gov.TICK  # 0.5 s of wall time, 0.002 s of the program's CPU and as much of recording's
    w.cpu += 0.004
    w.worker += 0.002 - 1000 * 1e-6
    w.written += 1000
    governor.tick((w.t, w.cpu, w.worker, w.written, 0, 0, 1024, w.written, 0, 0.0))
    assert governor.ratio == 1.0 and governor.cost == 0.0


def test_a_program_given_a_twentieth_of_a_core_by_a_loaded_machine_is_still_judged(governor):
    w = Window(governor)
    w.t += gov.TICK  # 0.5 s of wall time, 0.025 s of the program's CPU (5 %), recording as much
    w.cpu += 0.05
    w.worker += 0.025 - 1000 * 1e-6
    w.written += 1000
    governor.tick((w.t, w.cpu, w.worker, w.written, 0, 0, 1024, w.written, 0, 0.0))
    assert governor.cost == pytest.approx(1.0) and governor.ratio < 1.0


def test_a_ring_that_would_overflow_halves_the_traces_even_within_budget(governor):
    w = Window(governor)
    w.tick(0.01, dropped=12)
    assert governor.ratio == 0.5
    w.tick(0.01, size=900)  # not judged: the window after a change
    w.tick(0.01, size=950)  # more than half the ring waiting, and more than before
    assert governor.ratio == 0.25
    w.tick(0.01, size=950)  # not judged
    w.tick(0.01, size=700)  # a backlog draining, at little cost: not lowered, raised
    assert governor.ratio == 0.5



def test_a_ring_that_stays_full_without_drops_yet_is_overflowing(governor):
    w = Window(governor)
    w.tick(0.01, size=1024)
    assert governor.ratio == 0.5
    w.tick(0.01, size=1024)  # not judged
    w.tick(0.01, size=1024)  # as full as a window before, nothing dropped yet (records wait for room)
    assert governor.ratio == 0.25


def test_sampling_never_goes_below_the_floor_then_the_busiest_functions_are_lowered_and_raised(governor, fn):
    busy, quiet = fn("busy", level="full"), fn("quiet", level="full")
    w = Window(governor)
    for _ in range(4):
        w.tick(5.0)
    assert governor.ratio == gov.MIN_RATIO > 0
    w.tick(5.0)  # not judged
    governor.function_counts.update({busy: 90_000, quiet: 10})
    w.tick(5.0)
    assert runtime.LEVELS[busy] == 1 and runtime.LEVELS[quiet] == 1  # both wrote: both one step down
    w.tick(5.0)  # not judged
    governor.function_counts.update({busy: 90_000})
    w.tick(5.0)
    assert runtime.LEVELS[busy] == 0 and runtime.LEVELS[quiet] == 1
    assert runtime.enter(busy) is None
    w.tick(0.01)  # not judged
    w.tick(0.01)  # quiet, lowered once, is held 1 s; busy, lowered twice, 2 s
    assert runtime.LEVELS[quiet] == 2 and runtime.LEVELS[busy] == 0
    w.tick(0.01)
    assert runtime.LEVELS[busy] == 0
    w.tick(0.01)
    assert runtime.LEVELS[busy] == 1
    w.tick(0.01)
    assert runtime.LEVELS[busy] == 2 and runtime.LEVELS[quiet] == 2  # levels first, then traces
    assert governor.ratio == gov.MIN_RATIO
    for _ in range(gov.MAX_STEP):
        w.tick(0.01)
    assert governor.ratio == 1.0
    assert governor.stats()["governor_changes"] >= 14


def test_every_change_is_one_stderr_line_and_a_record(governor, capfd):
    changes = []
    governor.on_change(changes.append)
    governor.quiet = False
    w = Window(governor)
    w.tick(0.5)
    w.tick(0.001)  # not judged
    w.tick(0.001)
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith(f"scope-otel[{os.getpid()}]: ") for line in err)
    assert "recording 1 in 8 traces (was 1 in 1)" in err[0] and "budget 10%" in err[0]
    assert [c["scope.sampling.ratio"] for c in changes] == [1 / 8, 1 / 4]


def test_a_sampled_out_trace_records_none_of_its_calls_and_a_kept_one_all(governor, pipeline, fn):
    root, leaf = fn("root"), fn("leaf")
    governor.step = 2
    gov._set_ratio(0.25)
    time.sleep(0.005)  # the hot path's clock (the TSC, aligned to the system's) may trail by microseconds
    for _ in range(400):
        t = runtime.enter(root)
        for _ in range(3):
            runtime.exit(runtime.enter(leaf))
        runtime.exit(t)
    spans = pipeline.spans()
    roots = [s for s in spans if s.name == "root"]
    by_trace = {}
    for s in spans:
        by_trace.setdefault(s.context.trace_id, []).append(s.name)
    assert 40 < len(roots) < 200  # about a quarter of 400
    assert all(sorted(names) == ["leaf", "leaf", "leaf", "root"] for names in by_trace.values())
    assert [r.attributes["scope.sampling.ratio"] for r in roots] == [0.25] * len(roots), gov._history_t[-3:]
    assert runtime.stats()["calls_unsampled"] == (400 - len(roots)) * 4


def test_a_sampled_out_trace_leaves_exceptions_generators_and_sdk_spans_as_they_were(governor, pipeline, fn):
    root = fn("root")
    gov._set_ratio(gov.MIN_RATIO)
    governor.step = gov.MAX_STEP
    seen = []
    for _ in range(50):
        t = runtime.enter(root)
        if t is None:
            continue
        with pipeline.tracer.start_as_current_span("inner") as span:
            seen.append((t[10], span.get_span_context().trace_flags.sampled))
            assert not isinstance(span, NonRecordingSpan) or not span.get_span_context().trace_flags.sampled
        err = ValueError("boom")
        runtime.exception(t, err)
        assert err.__traceback__ is None
    # under a sampled-out root (a level-0 marker) an SDK span is unsampled too; under a kept one, sampled
    assert len(seen) == 50 and all(bool(level) == sampled for level, sampled in seen)
    assert sum(level == 0 for level, _ in seen) >= 45  # 1 in 1024 kept
    assert runtime._current() is None  # every marker left the stack


def test_the_sdk_sampler_decides_roots_by_trace_id_and_follows_parents(governor):
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased
    from opentelemetry.trace import SpanContext, TraceFlags, set_span_in_context

    sampler = GovernedSampler(ParentBased(ALWAYS_ON))
    gov._set_ratio(0.5)
    low, high = 1, (1 << 64) - 1  # the lower 64 bits decide, as TraceIdRatioBased does
    assert sampler.should_sample(None, low, "GET /").decision is Decision.RECORD_AND_SAMPLE
    assert sampler.should_sample(None, low, "GET /").attributes["scope.sampling.ratio"] == 0.5
    before = runtime.stats()["traces_unsampled"]
    assert sampler.should_sample(None, high, "GET /").decision is Decision.DROP
    assert runtime.stats()["traces_unsampled"] == before + 1  # counted: the summary says so in words
    parent = set_span_in_context(NonRecordingSpan(SpanContext(high, 5, True, TraceFlags(1))))
    assert sampler.should_sample(parent, high, "child").decision is Decision.RECORD_AND_SAMPLE
    assert sampler.should_sample(None, high, gov.GOVERNOR_SPAN).decision is Decision.RECORD_AND_SAMPLE


WORKLOAD = """
    import time

    def leaf(i):
        return sum(range(i % 50))

    def handle(i):
        return leaf(i) + leaf(i + 1) + leaf(i + 2)
"""
# the driver is not instrumented: every handle() is a trace of its own, as a request is
DRIVER = """
    import time
    import work

    end = time.monotonic() + 4.0
    i = 0
    while time.monotonic() < end:
        work.handle(i)
        i += 1
"""


def test_a_busy_program_is_sampled_whole_traces_and_says_so(tmp_path, otlp_receiver):
    (tmp_path / "work.py").write_text(textwrap.dedent(WORKLOAD))
    (tmp_path / "app.py").write_text(textwrap.dedent(DRIVER))
    # overflow=block: a record dropped at a full ring would leave its trace partial, and what is checked
    # here is that sampling never does
    env = clean_env(SCOPE_OTEL_BUDGET="200", SCOPE_OTEL_SUMMARY="true", SCOPE_OTEL_OVERFLOW="block",
                    **otlp_receiver.env("grpc"))
    result = run([tool("scope-otel"), "run", "--instrument", "work", "--level", "full", "--", sys.executable,
                  "app.py"], env, cwd=str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    changes = [line for line in result.stderr.splitlines() if line.startswith("scope-otel[")]
    assert changes and "traces" in changes[0], result.stderr
    assert "capture queue: nothing dropped" in result.stderr, result.stderr
    unsampled = int(re.search(r"not recorded: (\d+) function calls", result.stderr).group(1))
    assert unsampled > 0
    governed = otlp_receiver.wait_for(len(changes), timeout=30, where=lambda s: s["name"] == gov.GOVERNOR_SPAN)
    assert len(governed) == len(changes)
    spans = otlp_receiver.spans
    handles = [s for s in spans if s["name"] == "handle"]
    assert handles and min(s["attributes"]["scope.sampling.ratio"] for s in handles) < 1.0
    # a function lowered (when sampling at its floor is not enough) leaves traces with fewer calls:
    # only the traces started before the first lowering must be whole
    lowered = [s["start_ns"] for s in governed if s["attributes"]["scope.governor.change"].startswith("lowered")]
    until = min(lowered, default=float("inf"))
    by_trace = {}
    for s in spans:
        by_trace.setdefault(s["trace_id"], []).append(s)
    partial = [sorted(x["name"] for x in t) for t in by_trace.values()
               if any(x["name"] == "handle" and x["start_ns"] < until for x in t)
               and sorted(x["name"] for x in t) != ["handle", "leaf", "leaf", "leaf"]]
    assert not partial, partial[:5]
    assert all(sum(x["name"] == "handle" for x in t) == 1 for t in by_trace.values() if t[0]["name"] != gov.GOVERNOR_SPAN)


BACKEND = """
    from flask import Flask

    app = Flask(__name__)

    @app.route("/work")
    def work():
        return "done"

    if __name__ == "__main__":
        import sys
        from werkzeug.serving import make_server

        server = make_server("127.0.0.1", 0, app, threaded=True)
        with open(sys.argv[1], "w") as fh:
            fh.write(str(server.server_port))
        server.serve_forever()
"""
FRONT = """
    import sys
    import time
    import urllib.request

    base = sys.argv[1]
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        urllib.request.urlopen(base + "/work").read()
        for _ in range(2000):  # the front's own work between requests
            pass
"""


def test_the_front_process_samples_whole_requests_and_the_backend_follows_its_flag(tmp_path, otlp_receiver):
    import subprocess

    (tmp_path / "backend.py").write_text(textwrap.dedent(BACKEND))
    (tmp_path / "front.py").write_text(textwrap.dedent(FRONT))
    port_file = tmp_path / "port"
    backend_env = clean_env(OTEL_SERVICE_NAME="backend", **otlp_receiver.env("grpc"))  # budget 1000 %
    log = open(tmp_path / "backend.log", "w")  # werkzeug logs every request: a pipe would fill and block it
    backend = subprocess.Popen([tool("scope-otel"), "run", "--plan", "none", "--", sys.executable, "backend.py",
                                str(port_file)], env=backend_env, cwd=str(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            assert backend.poll() is None and time.monotonic() < deadline, (tmp_path / "backend.log").read_text()
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        # a budget the front's recording cannot meet: it samples its requests down to the floor
        front_env = clean_env(OTEL_SERVICE_NAME="front", SCOPE_OTEL_BUDGET="0.001", **otlp_receiver.env("grpc"))
        result = run([tool("scope-otel"), "run", "--plan", "none", "--", sys.executable, "front.py", base],
                     front_env, cwd=str(tmp_path), timeout=120)
        assert result.returncode == 0, result.stderr
        assert "recording 1 in" in result.stderr
    finally:
        backend.send_signal(signal.SIGINT)  # serve_forever ends, the exit flushes what it recorded
        backend.wait(30)
        log.close()
    spans = otlp_receiver.spans
    clients = {s["trace_id"] for s in spans if s["kind"] == "CLIENT" and s["resource"].get("service.name") == "front"}
    servers = {s["trace_id"] for s in spans if s["kind"] == "SERVER" and s["resource"].get("service.name") == "backend"}
    assert clients and servers
    # every request the backend recorded is one the front kept, and the other way round
    assert servers == clients


def _roots(kind, recorded_ns: int, unrecorded_ns: int, n: int = 20):
    for _ in range(n):
        gov._roots.sample(kind, True, recorded_ns)
        gov._roots.sample(kind, False, unrecorded_ns)


def test_what_recorded_requests_cost_their_threads_is_charged_when_the_hot_path_model_sees_little(governor):
    from opentelemetry.trace import SpanKind

    w = Window(governor)
    # requests recorded cost their thread 3 ms of CPU, requests sampled out 1 ms: 2 ms each to record
    _roots(SpanKind.SERVER, 3_000_000, 1_000_000)
    for _ in range(100):
        gov._roots.count(SpanKind.SERVER)
    w.cpu += 100 * 0.002  # the process spent it, on the request threads
    w.tick(0.01)  # what the hot path's model and the workers alone would say: 1 %, within 10 %
    assert governor.roots_cost == pytest.approx(0.2)
    assert governor.cost == pytest.approx((0.005 + 0.2) / 0.5, rel=0.01)
    assert governor.ratio < 1.0
    w.tick(0.01)  # not judged
    w.tick(0.01)  # no root recorded in the window: only the model's 1 %, raised again
    assert governor.roots_cost == 0.0


def test_a_kind_of_root_never_left_unrecorded_is_probed_one_in_64_at_the_top_ratio_below_100_percent(governor):
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
    from opentelemetry.trace import SpanKind

    sampler = GovernedSampler(ALWAYS_ON)
    ids = random.Random(7)

    def dropped(kind, n=6400):
        return sum(sampler.should_sample(None, ids.getrandbits(128), "GET", kind).decision is Decision.DROP
                   for _ in range(n))

    w = Window(governor)
    assert dropped(SpanKind.SERVER, 640) == 0  # before the governor has looked: every request
    w.tick(0.01)
    assert gov._probe == {SpanKind.SERVER}
    out = dropped(SpanKind.SERVER)
    assert 50 < out < 160  # about 1 in 64 of 6,400
    assert dropped(SpanKind.CLIENT, 640) == 0  # a kind the governor has not seen yet: recorded
    _roots(SpanKind.SERVER, 2_000_000, 1_000_000)
    w.tick(0.01)  # enough of both: measured, no more probing
    assert SpanKind.SERVER not in gov._probe and dropped(SpanKind.SERVER, 640) == 0
    governor.configure(100)
    gov._roots.reset()
    dropped(SpanKind.SERVER, 64)
    w.tick(0.01)
    assert gov._probe == frozenset()  # a budget of 100 % or more: every trace at the top ratio


def test_a_root_decision_measures_the_thread_from_the_last_one_as_recorded_or_not(governor):
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace import SpanKind

    sampler = GovernedSampler(ALWAYS_ON)
    governor.step = 1
    gov._set_ratio(0.5)
    ids = random.Random(3)
    decisions = [sampler.should_sample(None, ids.getrandbits(128), "GET", SpanKind.SERVER).decision.is_sampled()
                 for _ in range(200)]
    kept = gov._roots.samples[(SpanKind.SERVER, True)]
    out = gov._roots.samples[(SpanKind.SERVER, False)]
    # each decision closes the previous root's sample: 199 samples, split as the first 199 decisions
    assert (len(kept), len(out)) == (sum(decisions[:-1]), 199 - sum(decisions[:-1]))
    assert 50 < sum(decisions) < 150 and gov._roots.recorded == {SpanKind.SERVER: sum(decisions)}
    gov._roots.take()
    assert gov._roots.recorded == {}  # counted per window


def test_each_process_is_charged_its_own_spans_share_of_the_shared_store_writer(governor, tmp_path):
    totals = tmp_path / "scope-writer-cost"
    gov.store_writer_totals(str(totals))
    try:
        mine, other = gov._WriterShare(), gov._WriterShare()
        totals.write_text("4242 1.500000 0\n")  # the writer's start-up: not charged
        assert mine(0, now=0.0) == 0.0 and other(0, now=0.0) == 0.0
        assert mine(500, now=2.0) == 0.0  # nothing written since: nothing to share yet
        totals.write_text("4242 1.800000 3000\n")  # 0.3 s of CPU for 3,000 spans in 4 s
        assert mine(1000, now=4.0) == 0.0 and other(2000, now=4.0) == 0.0
        # spread over the next seconds: 1,000 of the spans were this process', 2,000 the other's
        assert mine(1100, now=6.0) == pytest.approx(0.1 / 4 * 2)
        assert other(2100, now=8.0) == pytest.approx(0.2)
        assert mine(1200, now=8.0) == pytest.approx(0.1)
        totals.write_text("77 0.900000 10\n")  # another writer: its start-up is not charged
        assert mine(1300, now=8.5) == pytest.approx(0.1)
        totals.write_text("77 1.500000 12\n")  # 0.6 s for 2 spans (the engine's background work):
        assert mine(1400, now=9.0) == pytest.approx(0.1)  # the whole 0.6 s at most, not 100 spans' worth,
        assert mine(1400, now=9.2) == pytest.approx(0.1 + 0.6 / 0.5 * 0.2)  # spread over as long as it took
        assert mine(1400, now=30.0) == pytest.approx(0.1 + 0.6)  # and never more than it spent
    finally:
        gov.store_writer_totals(None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_a_child_forked_while_a_root_was_being_counted_measures_its_own_roots(governor):
    from opentelemetry.trace import SpanKind

    gov._roots.sample(SpanKind.SERVER, True, 1_000_000)
    with gov._roots._lock:  # another thread is counting a root as the process forks
        pid = os.fork()
        if pid == 0:  # the child: its own measurements, and a lock nobody holds
            try:
                gov._roots.decided(SpanKind.SERVER, True)
                gov._roots.decided(SpanKind.SERVER, False)
                ok = gov._roots.samples == {(SpanKind.SERVER, True): gov._roots.samples[(SpanKind.SERVER, True)]}
                os._exit(0 if ok and len(gov._roots.samples[(SpanKind.SERVER, True)]) == 1 else 1)
            finally:
                os._exit(2)
    for _ in range(600):  # a child that hangs on the lock is failed, not waited for forever
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the root counter's lock")
    assert os.waitstatus_to_exitcode(status) == 0
