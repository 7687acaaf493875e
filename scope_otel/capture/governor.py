"""The overhead governor: recording stays within its budget of this process' CPU, and never goes dark.

Twice a second a thread of its own measures what recording cost this process
in the last window:

* on the threads that run the program, for each kind of new trace (a request,
  mostly: a SERVER root span) the CPU time its thread spent from that root's
  decision to the thread's next one, kept apart for recorded and sampled-out
  roots (:class:`_RootCosts`, fed by :class:`GovernedSampler`).  Traces are
  sampled whole, so the difference of the two means is what recording one
  costs where it happens: the SDK's spans, the integrations, the hot path, the
  context.  The window is charged that for each root recorded in it.  Below a
  budget of 100 %, a kind of root never seen sampled out is left unrecorded 1
  in 64 (:data:`PROBE_EVERY`) at the top ratio until it is measured (and again
  once a minute), counted with the sampled-out traces.  Where no root is
  measured (a batch program), the hot path's cost per record, measured once at
  start, times the records written, and the calls of sampled-out traces at
  their own cost;
* off those threads, the span processor's workers' CPU time per record they
  exported (turning records into spans and exporting them), times the records
  written in the window; and this process' share of the store writer's CPU:
  the writer says what it spent and wrote (``scope-writer-cost`` in the
  store), and each process exporting to it is charged for its own spans' part
  (:class:`_WriterShare`), whichever process started it.

It compares that with the CPU time the program itself used (the process' CPU
time less recording) and with the ring: records dropped, or a ring more than
half full, mean export cannot keep up.  What an unrecorded request still costs
(the integrations' hooks deciding there is nothing to record) is not
recording's cost and no sampling removes it; it is measured by
``bench/bench_services.py``.  When recording costs more than the budget, or
the ring would overflow (records dropped, or more than half of it waiting and
more than a window before), it

1. samples whole traces: a new trace is recorded with probability 1, 1/2,
   1/4, ... 1/1024 (:data:`MIN_RATIO`), decided from the trace id as
   ``TraceIdRatioBased`` does, and every span under it follows: a request is
   recorded entirely or not at all.  SDK root spans are decided by
   :class:`GovernedSampler`, and the sampled flag carries the decision to the
   processes the request calls; a function call with no span around it is
   decided in :func:`keeps` (the runtime's ``root_of``), and the calls under an
   unrecorded root are not recorded (the hot path counts them, ``unsampled``);
2. only at the lowest ratio, lowers the level of the functions that wrote the
   most records (full -> boundaries -> off), a few at a time;

and when recording costs less than half its target (80 % of the budget) it
raises the levels again, then the ratio, one step per tick: from the lowest
ratio back to every trace in about five seconds.  The window after a
lowering is not judged (unless records are dropped): it still shows the
export of what was written before.  A function lowered again
soon after it was raised waits twice as long as before (1 s up to 64 s) to
be raised again, so that one that overloads whenever it records does not
flap.  The ratio never goes below
:data:`MIN_RATIO`: something is recorded while any budget remains.

Every change is one line on stderr (``scope-otel[PID]: ...``), a span named
``scope-otel.governor`` in the store (through :meth:`Governor.on_change`,
which the launcher connects), and counted in :meth:`Governor.stats`; root
spans carry the ratio that applied to them (``scope.sampling.ratio``).
"""
from __future__ import annotations

import bisect
import os
import threading
import time
import weakref
from collections import deque
from contextvars import ContextVar
from typing import Any, Callable

from scope_otel.plan import LEVELS as _LEVEL_NAMES

#: seconds between two looks at the cost
TICK = 0.5
#: the lowest share of traces recorded (as a power of two: 1/1024)
MAX_STEP = 10
MIN_RATIO = 2.0 ** -MAX_STEP
#: the cost aimed at, as a share of the budget; raised again only below half of it (a step doubles it)
TARGET = 0.8
#: a window in which the program used less CPU than this share of its length is not judged by cost
#: (a program waiting for work, or exiting while the worker drains); a busy server's worker on a
#: loaded machine gets as little as 5 % of a core, and is judged (at 10 %, a gunicorn worker at load
#: 20 was never judged and recorded every request at a 2 % budget)
IDLE = 0.01
#: functions whose level is lowered at once, at most, when sampling is at its lowest
LOWER_AT_ONCE = 4
#: a function lowered again after being raised waits twice as long as the last time before it is
#: raised again, from HOLD_S up to HOLD_MAX_S: a function that overloads whenever it records must not
#: flap twice a second
HOLD_S = 1.0
HOLD_MAX_S = 64.0
_MASK64 = (1 << 64) - 1
#: a root's on-thread cost is the mean of the last this many samples of its kind and class
ROOT_SAMPLES = 256
#: samples of each class (recorded, not) needed before their difference is trusted
ROOT_MIN_SAMPLES = 8
#: share of samples cut off at either end before the mean (a request that spans a collection of
#: the program's garbage, or a thread's first root after minutes of other work)
ROOT_TRIM = 0.1
#: below a budget of this share, a kind of root with too few (or too old) unrecorded samples has
#: 1 trace in :data:`PROBE_EVERY` left unrecorded at the top ratio, so that what recording one
#: costs stays measured; at 100 % or more the budget is taken as "record everything" and the cost
#: is estimated from the hot path alone
PROBE_BUDGET = 1.0
PROBE_EVERY = 64
#: unrecorded samples older than this are refreshed by probing
PROBE_REFRESH_S = 60.0

# The ratio in force, read on every new trace: a module global, one comparison.
_bound = 1 << 64

#: the capture runtime, handed over by it at import (:func:`attach_runtime`): the runtime
#: imports this module, so importing it back would make a cycle
_runtime: Any = None


def attach_runtime(module: Any) -> None:
    """Called once by :mod:`scope_otel.capture.runtime` as it is imported."""
    global _runtime
    _runtime = module
# (time_ns, ratio) of every change, to tell a root span the ratio of its start
_history_t: list[int] = [0]
_history_r: list[float] = [1.0]


#: new traces the governor's sampling left unrecorded (a root span dropped), for the summary
_sampled_out = 0
_sampled_out_lock = threading.Lock()


def keeps(trace_id: int) -> bool:
    """Whether a new trace with this id is recorded (the same answer in every process)."""
    return (trace_id & _MASK64) < _bound


def ratio_at(time_ns: int) -> float:
    """The share of traces recorded at ``time_ns`` (for a root span's ``scope.sampling.ratio``)."""
    return _history_r[bisect.bisect_right(_history_t, time_ns) - 1]


def _hot_path_cost_us() -> tuple[float, float]:
    """What the hot path costs on this machine per recorded call (``enter`` with two values at level
    ``full`` and ``exit`` with a value) and per call in a sampled-out trace, into a private table and
    sink (about two milliseconds)."""
    from scope_otel.capture import _accel
    from scope_otel.capture.records import CAP_ARGS, CAP_RETURN

    sink: deque = deque(maxlen=64)  # a callable sink: a private C ring would resize the shared free list
    octx: ContextVar = ContextVar("scope_otel_governor_octx", default=None)
    hot = _accel.IMPL.HotPath([2], [1.0], [CAP_ARGS | CAP_RETURN], [("a", "b")],
                              ContextVar("scope_otel_governor_call", default=None), object(), octx,
                              lambda _ctx: (1, 0), lambda v: v, sink.append, 1, lambda _exc: None)
    enter, exit_ = hot.enter_params, hot.exit
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for i in range(1000):
            exit_(enter(0, i, "x"), i)
        best = min(best, (time.perf_counter_ns() - t0) / 1000 / 1000)
    unsampled = float("inf")
    hot.set_roots(None, 0, False)
    hot_out = _accel.IMPL.HotPath([2], [1.0], [CAP_ARGS | CAP_RETURN], [("a", "b")],
                                  ContextVar("scope_otel_governor_call2", default=None), object(), octx,
                                  lambda _ctx: (1, 0, False), lambda v: v, sink.append, 1, lambda _exc: None)
    enter, exit_ = hot_out.enter_params, hot_out.exit
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for i in range(100):
            root = enter(0, i, "x")
            for j in range(9):
                exit_(enter(0, j, "x"), j)
            exit_(root, i)
        unsampled = min(unsampled, (time.perf_counter_ns() - t0) / 1000 / 1000)
    return best, unsampled


#: helper pid -> [when it was named, its CPU seconds at the end of its start-up, or None before]
_helpers: dict[int, list] = {}
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: a helper's first seconds (the store writer imports chDB and opens the store: a fixed cost that
#: sampling cannot lower) are not charged
HELPER_START_S = 3.0


def helper_process(pid: int) -> None:
    """Count the CPU time of process ``pid`` (the store writer this process started) as recording's,
    after its start-up."""
    _helpers[pid] = [time.monotonic(), None]


def _helpers_cpu_s() -> float:
    """CPU seconds the helper processes still alive spent after their start-up (from ``/proc``)."""
    total = 0.0
    now = time.monotonic()
    for pid, entry in list(_helpers.items()):
        if now - entry[0] < HELPER_START_S:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
        except (OSError, IndexError, ValueError):
            _helpers.pop(pid, None)
            continue
        if entry[1] is None:
            entry[1] = cpu
        total += cpu - entry[1]
    return total


_writer_file: str | None = None


def store_writer_totals(path: str | None) -> None:
    """Where the writer of the store this process exports to keeps its running totals
    (``PID CPU_SECONDS SPANS_WRITTEN``, see :mod:`scope_otel.store.writer`), so that each process
    sharing it is charged for its own spans' part of what it spends."""
    global _writer_file
    _writer_file = path


def _writer_totals() -> tuple[int, float, int] | None:
    if _writer_file is None:
        return None
    try:
        with open(_writer_file, "rb") as fh:
            pid, cpu, spans = fh.read(256).split()
        return int(pid), float(cpu), int(spans)
    except (OSError, ValueError):
        return None


class _WriterShare:
    """This process' share of the store writer's CPU, cumulative.  Each time the writer has written
    more spans, the CPU it spent since the last time (its idle time included) times the share of
    those spans this process exported meanwhile (at most all of them) is spread evenly over the time
    the writer took to gather them (up to :data:`WRITER_SPREAD_S`): the writer gathers a stream for seconds and
    writes it at once, and a window judged on that burst alone would send the ratio to the floor and
    back.  Without the writer's totals (no store, or an older writer), the CPU of the writer this
    process started, after its start-up (``helper_process``), as it is spent."""

    def __init__(self) -> None:
        self.charged = 0.0
        self._base: tuple[int, float, int] | None = None
        self._read = 0
        self._helpers: float | None = None
        self._rate = 0.0  # CPU seconds a second charged until the next write
        self._left = 0.0  # of the last write's share, not charged yet
        self._since = 0.0  # when the writer last wrote
        self._last: float | None = None

    def __call__(self, read: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self._last is not None:
            step = min(self._rate * (now - self._last), self._left)
            self.charged += step
            self._left -= step
        self._last = now
        totals = _writer_totals()
        if totals is None:
            helpers = _helpers_cpu_s()
            if self._helpers is not None:
                self.charged += max(helpers - self._helpers, 0.0)
            self._helpers = helpers
            self._read = read
            return self.charged
        self._helpers = None
        base = self._base
        if base is None or base[0] != totals[0] or totals[2] < base[2]:
            self._base, self._read, self._since = totals, read, now  # a new writer: its start-up is not charged
        elif totals[2] > base[2]:
            # this process' share of the spans written since, at most all of them: the writer's fixed
            # costs (its engine's background work, an INSERT's own cost) spread over few spans must not
            # make a span look dearer than the writer's whole CPU
            share = min(max(read - self._read, 0) / (totals[2] - base[2]), 1.0)
            spent = max(totals[1] - base[1], 0.0) * share
            self.charged += self._left  # what is left of the write before: charged now
            self._left = spent
            self._rate = spent / min(max(now - self._since, TICK), WRITER_SPREAD_S)
            self._base, self._read, self._since = totals, read, now
        return self.charged


#: the longest a store writer's write is spread over (the writer gathers a thin stream for up to 15 s)
WRITER_SPREAD_S = 30.0


class _RootCosts:
    """What a thread spent from one root decision (a new trace: a request, mostly) to its next, by
    the first root's kind and whether it was recorded: traces are sampled whole, so the difference
    of the two means is what recording one root of that kind costs on the thread that runs it (the
    SDK's spans, the integrations, the hot path, the context), whatever the cost model says."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Nothing measured (a forked child starts over: a lock another thread held at the fork would
        stay held in the child, so it gets a new one too)."""
        self._lock = threading.Lock()
        self._local = threading.local()
        self.samples: dict[tuple[Any, bool], deque] = {}
        self.recorded: dict[Any, int] = {}  # kind -> recorded roots since the last ``take``
        self.fresh: dict[Any, float] = {}  # kind -> when its last unrecorded sample came

    def decided(self, kind: Any, recorded: bool) -> None:
        """A root of ``kind`` was decided on this thread (from the sampler)."""
        now = time.thread_time_ns()
        local = self._local
        mark = getattr(local, "mark", None)
        local.mark = (now, kind, recorded)
        if recorded:
            self.count(kind)
        if mark is not None and now >= mark[0]:  # a forked child's thread starts its clock again
            self.sample(mark[1], mark[2], now - mark[0])

    def count(self, kind: Any) -> None:
        with self._lock:
            self.recorded[kind] = self.recorded.get(kind, 0) + 1

    def sample(self, kind: Any, recorded: bool, spent_ns: int) -> None:
        with self._lock:
            queue = self.samples.get((kind, recorded))
            if queue is None:
                queue = self.samples[(kind, recorded)] = deque(maxlen=ROOT_SAMPLES)
            queue.append(spent_ns)
            if not recorded:
                self.fresh[kind] = time.monotonic()

    def extra_ns(self, kind: Any) -> float | None:
        """What recording a root of ``kind`` costs its thread, in ns (None: not measured yet)."""
        with self._lock:
            kept = list(self.samples.get((kind, True), ()))
            out = list(self.samples.get((kind, False), ()))
        if len(kept) < ROOT_MIN_SAMPLES or len(out) < ROOT_MIN_SAMPLES:
            return None
        return max(_trimmed_mean(kept) - _trimmed_mean(out), 0.0)

    def take(self) -> float:
        """CPU seconds the roots recorded since the last call cost their threads (kinds measured)."""
        with self._lock:
            counts, self.recorded = self.recorded, {}
        total = 0.0
        for kind, n in counts.items():
            extra = self.extra_ns(kind)
            if extra is not None:
                total += n * extra
        return total / 1e9

    def unmeasured(self, now: float) -> frozenset:
        """The kinds of roots seen whose unrecorded samples are too few or too old."""
        with self._lock:
            kinds = {kind for kind, _recorded in self.samples} | set(self.recorded)
            return frozenset(kind for kind in kinds
                             if len(self.samples.get((kind, False), ())) < ROOT_MIN_SAMPLES
                             or now - self.fresh.get(kind, now) > PROBE_REFRESH_S)


def _trimmed_mean(values: list) -> float:
    values.sort()
    cut = int(len(values) * ROOT_TRIM)
    kept = values[cut:len(values) - cut] or values
    return sum(kept) / len(kept)


#: every process' roots, measured by :class:`GovernedSampler`
_roots = _RootCosts()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_roots.reset)
#: kinds of roots left unrecorded 1 in PROBE_EVERY at the top ratio (set by the governor's tick)
_probe: frozenset = frozenset()
_PROBE_BOUND = (1 << 64) - (1 << 64) // PROBE_EVERY


def _thread_cpu_s(threads: list[threading.Thread]) -> float:
    total = 0.0
    for t in threads:
        ident = t.ident
        if ident is None or not t.is_alive():
            continue
        try:
            total += time.clock_gettime(time.pthread_getcpuclockid(ident))
        except (AttributeError, OSError, ValueError):
            pass
    return total


class Governor:
    """Keeps this process' recording within ``budget_pct`` percent of its CPU time (see the module)."""

    def __init__(self, apply: Callable[[], None], budget_pct: float = 5.0) -> None:
        self._apply = apply
        self.budget = budget_pct / 100.0
        self.step = 0
        self.caps: dict[int, int] = {}     # fid -> the level it is lowered to
        self._hold: dict[int, tuple[float, float]] = {}  # fid -> (not raised before, the hold it got)
        self.changes = 0
        self.lowerings = 0
        self.cost = 0.0                    # the last window's cost, share of the program's CPU
        self.peak_cost = 0.0
        self._listeners: list[Callable[[dict], None]] = []
        self._processor: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._hot_us: float | None = None
        self._settling = False
        self._export_us = 0.0  # the workers' CPU per record exported, last measured
        self._smoothed: float | None = None
        self.smooth = True
        self._unsampled_us = 0.0  # the hot path's cost per call in a sampled-out trace
        self._mark: tuple | None = None
        self._pid = os.getpid()
        self.function_counts: dict[int, int] = {}  # fid -> records since the last tick (the worker adds)
        self.quiet = False
        self._writer = _WriterShare()
        self.roots_cost = 0.0  # the last window's on-thread cost of its recorded roots, CPU seconds

    # ---------------------------------------------------------------- wiring

    def configure(self, budget_pct: float) -> None:
        self.budget = max(float(budget_pct), 0.0) / 100.0

    def on_change(self, listener: Callable[[dict], None]) -> None:
        """Call ``listener(change)`` after every change (from the governor's thread)."""
        self._listeners.append(listener)

    def attach(self, processor: Any) -> None:
        """Watch ``processor``'s ring and worker threads; starts the governor's thread (once per process)."""
        self._processor = weakref.ref(processor)
        if self._pid != os.getpid():
            self._after_fork()
        self._mark = None
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="scope-otel-governor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _after_fork(self) -> None:
        # a child starts over: its own costs, every trace recorded, no function lowered
        self._pid = os.getpid()
        self._thread = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._mark = None
        self.function_counts = {}
        self.changes = self.lowerings = 0
        self.cost = self.peak_cost = 0.0
        self._hold = {}
        self._writer = _WriterShare()
        _roots.reset()
        _set_probe(frozenset())
        if self.step or self.caps:
            self.step, self.caps = 0, {}
            _set_ratio(1.0)
            self._apply()

    # ---------------------------------------------------------------- the loop

    def _run(self) -> None:
        runtime = _runtime

        runtime.disable_current_thread()
        try:
            self._hot_us, self._unsampled_us = _hot_path_cost_us()
        except Exception:
            self._hot_us, self._unsampled_us = 1.0, 0.1
        self.tick()  # the first mark: the first decision comes one tick after start
        while not self._stop.wait(TICK):
            try:
                self.tick()
            except Exception as exc:  # never into the application; counted as the runtime's own errors
                runtime._on_error(exc)

    def _sample(self) -> tuple | None:
        proc = self._processor() if self._processor is not None else None
        if proc is None:
            return None
        ring = proc._ring
        c = ring.counters()
        runtime = _runtime

        return (time.monotonic(), time.process_time(), _thread_cpu_s(list(proc._threads)), c["written"],
                c["dropped"], c["size"], ring.capacity, c["read"], runtime._hot.unsampled(), self._writer(c["read"]))

    def tick(self, sample: tuple | None = None) -> None:
        """Look at the last window and change the ratio or levels if needed (``sample`` for tests)."""
        sample = sample if sample is not None else self._sample()
        if sample is None:
            return
        with self._lock:
            mark, self._mark = self._mark, sample
            if mark is None:
                return
            now, cpu, worker, written, dropped, size, capacity, read, unsampled, helpers = sample
            t0, cpu0, worker0, written0, dropped0, size0, _c, read0, unsampled0, helpers0 = mark
            counts, self.function_counts = self.function_counts, {}
            spent = max(worker - worker0, 0.0)
            if read > read0:
                self._export_us = spent / (read - read0) * 1e6
            hot = ((written - written0) * (self._hot_us or 1.0) + (unsampled - unsampled0) * self._unsampled_us) / 1e6
            # the recorded roots' measured cost on their threads holds the hot path's for the records
            # under them; the model is what is left when no root is measured (a batch program)
            self.roots_cost = _roots.take()
            hot = max(hot, self.roots_cost)
            program = max((cpu - cpu0) - spent - hot, 1e-6)
            # the window is charged for the records written in it, at what exporting one costs: what
            # the worker spends now on a backlog written earlier is not what recording costs now
            # (the store writer's CPU is charged as it is spent: it works in batches of its own)
            stored = max(helpers - helpers0, 0.0)
            window = ((written - written0) * self._export_us / 1e6 + hot + stored) / program
            if program < IDLE * (now - t0):
                # the program hardly ran (waiting for requests, or exiting while the worker drains):
                # what recording costs then slows nothing of it, and a share of almost nothing says
                # nothing; only a ring about to overflow is acted on
                window = 0.0
            self.peak_cost = max(self.peak_cost, window)
            # judged on a moving average of two windows or so: the store writer works in bursts, and a
            # burst judged alone sends the ratio to the floor and back every few seconds
            self.cost = cost = window if self._smoothed is None or not self.smooth else (self._smoothed + window) / 2
            self._smoothed = cost
            new_drops = dropped - dropped0
            # more than half the ring waiting, and more than a window ago: export is falling behind (a
            # large ring draining a backlog is not); a ring still full is, even with no drop yet (with
            # overflow=block a record waits up to a second for room before it is dropped)
            overflowing = new_drops > 0 or size > max(capacity // 2, size0) or size >= capacity
            if self._settling and not new_drops:
                # the window after a change still shows the records written before it being exported:
                # judged once the change has had a whole window to act
                self._settling = False
            else:
                self._settling = False
                if cost > self.budget or overflowing:
                    self._less(cost, new_drops, size, capacity, counts, now)
                elif cost < self.budget * TARGET / 2:
                    self._more(cost, now)
            # at the top ratio nothing would be left unrecorded to compare with: probe
            _set_probe(_roots.unmeasured(now) if self.step == 0 and self.budget < PROBE_BUDGET else frozenset())

    def _less(self, cost: float, drops: int, size: int, capacity: int, counts: dict[int, int], now: float) -> None:
        why = (f"recording cost {cost:.1%} of the program's CPU (budget {self.budget:.0%})" if cost > self.budget
               else f"the ring is overflowing ({drops} records dropped, {size} of {capacity} waiting)")
        if self.step < MAX_STEP:
            # as many halvings as bring the cost to the target at once (the ring: one at a time)
            steps = 1
            if cost > self.budget and self.budget > 0:
                need = cost / (self.budget * TARGET)
                while steps < MAX_STEP and 2 ** steps < need:
                    steps += 1
            old = self.step
            self.step = min(MAX_STEP, self.step + steps)
            self._changed(why, f"recording 1 in {2 ** self.step} traces (was 1 in {2 ** old})", True)
            return
        lowered = self._lower(counts, now)
        if lowered:
            self._changed(why, "lowered " + ", ".join(lowered), True)

    def _more(self, cost: float, now: float) -> None:
        why = f"recording cost {cost:.1%} of the program's CPU (budget {self.budget:.0%})"
        if self.caps:
            raised = self._raise(now)
            if raised:
                self._changed(why, "raised " + ", ".join(raised), False)
        elif self.step > 0:
            self.step -= 1
            self._changed(why, f"recording 1 in {2 ** self.step} traces (was 1 in {2 ** (self.step + 1)})", False)

    def _lower(self, counts: dict[int, int], now: float) -> list[str]:
        runtime = _runtime

        names = []
        ranked = sorted(counts.items(), key=lambda kv: kv[1] * (2 if runtime.LEVELS[kv[0]] > 1 else 1),
                        reverse=True)
        for fid, _n in ranked:
            level = runtime.LEVELS[fid] if fid < len(runtime.LEVELS) else 0
            if level <= 0:
                continue
            self.caps[fid] = level - 1
            _until, held = self._hold.get(fid, (0.0, HOLD_S / 2))
            held = min(held * 2, HOLD_MAX_S)
            self._hold[fid] = (now + held, held)
            module, qualname = runtime.function_info(fid)[:2]
            names.append(f"{module}:{qualname} to {_LEVEL_NAMES[level - 1]}")
            if len(names) >= LOWER_AT_ONCE:
                break
        if names:
            self.lowerings += len(names)
            self._apply()
        return names

    def _raise(self, now: float) -> list[str]:
        runtime = _runtime

        names = []
        ready = [fid for fid in self.caps if self._hold.get(fid, (0.0, 0.0))[0] <= now]
        if not ready:
            return names
        for fid in ready[-LOWER_AT_ONCE:]:  # the last lowered first
            cap = self.caps.pop(fid) + 1
            if cap < 2:
                self.caps[fid] = cap
            module, qualname = runtime.function_info(fid)[:2]
            names.append(f"{module}:{qualname} to at most {_LEVEL_NAMES[cap]}")
        self._apply()
        return names

    def _changed(self, why: str, what: str, lower: bool) -> None:
        self.changes += 1
        self._settling = lower
        ratio = 2.0 ** -self.step
        _set_ratio(ratio)
        if not self.quiet:
            try:
                os.write(2, f"scope-otel[{os.getpid()}]: {why}: {what}\n".encode("utf-8", "replace"))
            except OSError:
                pass
        change = {"scope.governor.reason": why, "scope.governor.change": what,
                  "scope.sampling.ratio": ratio, "scope.governor.cost": round(self.cost, 4),
                  "scope.governor.budget": self.budget, "scope.governor.functions_lowered": len(self.caps)}
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                pass

    # ---------------------------------------------------------------- reading

    def cap(self, fid: int) -> int:
        """The highest level function ``fid`` may record at now (2: not lowered)."""
        return self.caps.get(fid, 2)

    def helpers_cpu_s(self) -> float:
        """This process' share of the store writer's CPU so far, as the governor last measured it
        (:class:`_WriterShare`: its spans' part of a writer shared by several processes)."""
        return self._writer.charged

    def per_record_us(self) -> float:
        """What one record costs this process, as last measured: the hot path's cost plus the export
        workers' CPU per record exported (0 before the first measure)."""
        return (self._hot_us or 0.0) + self._export_us

    @property
    def ratio(self) -> float:
        return 2.0 ** -self.step

    def stats(self) -> dict[str, Any]:
        return {"governor_budget_pct": round(self.budget * 100, 3), "governor_cost_pct": round(self.cost * 100, 2),
                "governor_peak_cost_pct": round(self.peak_cost * 100, 2), "governor_ratio": self.ratio,
                "governor_changes": self.changes, "governor_functions_lowered": len(self.caps),
                "governor_lowerings": self.lowerings, "traces_unsampled": _sampled_out}

    def reset(self) -> None:
        """Every trace recorded, no function lowered (tests)."""
        with self._lock:
            self._mark = self._smoothed = None
            self.step, self.caps, self._hold = 0, {}, {}
            self._writer = _WriterShare()
            _roots.reset()
            _set_probe(frozenset())
            _set_ratio(1.0)
        self._apply()


_ratio_listeners: list[Callable[[int, bool], None]] = []


def _set_probe(kinds: frozenset) -> None:
    global _probe
    _probe = kinds


def on_ratio(listener: Callable[[int, bool], None]) -> None:
    """``listener(bound, every)`` now and at every change of the ratio: the C hot path decides new
    traces without calling ``root_of`` (the newest listener replaces the others: one hot path is live)."""
    _ratio_listeners[:] = [listener]
    listener(min(_bound, _MASK64), _bound > _MASK64)


def _set_ratio(ratio: float) -> None:
    global _bound
    _bound = int(ratio * (1 << 64))
    for listener in _ratio_listeners:
        listener(min(_bound, _MASK64), _bound > _MASK64)
    now = time.time_ns()
    if _history_r[-1] != ratio:
        _history_t.append(now)
        _history_r.append(ratio)
        if len(_history_t) > 4096:  # a day of changes every half second is not kept: the oldest go
            del _history_t[1:2048], _history_r[1:2048]


class GovernedSampler:
    """An SDK sampler: a root span (no parent) is first sampled by the governor's ratio, from its trace
    id, then by ``inner``; a span with a parent is ``inner``'s call (``ParentBased`` follows the parent's
    sampled flag, so a request is recorded in every process or in none).  Kept roots carry
    ``scope.sampling.ratio``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None):
        from opentelemetry.sdk.trace.sampling import Decision, SamplingResult
        from opentelemetry.trace import get_current_span

        global _sampled_out
        parent = get_current_span(parent_context).get_span_context()
        if (parent is None or not parent.is_valid) and name != GOVERNOR_SPAN:
            low = trace_id & _MASK64
            if low >= _bound or (_probe and low >= _PROBE_BOUND and kind in _probe):
                with _sampled_out_lock:
                    _sampled_out += 1
                _roots.decided(kind, False)
                return SamplingResult(Decision.DROP, None, None)
            result = self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links,
                                              trace_state)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            _roots.decided(kind, sampled)
            if sampled:
                attrs = dict(result.attributes or {})
                attrs["scope.sampling.ratio"] = (min(_bound, _PROBE_BOUND) if _probe and kind in _probe
                                                 else _bound) / (1 << 64)
                return SamplingResult(result.decision, attrs, result.trace_state)
            return result
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"GovernedSampler{{{self.inner.get_description()}}}"


#: the name of the span recording one change of the governor
GOVERNOR_SPAN = "scope-otel.governor"
