"""Price recording on the program itself: ``scope-otel plan --profile --trial -- CMD``.

The cost model prices a recorded call with microbenchmarks on small,
synthetic calls.  What a real program adds is invisible to them: the worker
turning real values (reprs of ORM objects, exceptions) into spans, the
exporter's sends, and the full garbage collections over a large heap that
spans waiting for their batch bring on.  On the example shop those made a
recorded call cost ~90 µs where the model said ~9 µs.

The trial measures it: the profiled command runs under ``scope-otel run``
with the configuration in force (same exporter, same endpoint) without a
plan and with every analysed function that the profile saw called at
``boundaries``, in ``repeat`` back-to-back pairs (the median pair kept).
The difference, less the instrumentation's start-up, less what the model
prices those calls at, divided by the recorded calls, is what the model
misses per call on this program; :func:`calibrated` moves it into the
per-span off-path cost, so every level's price carries it.  (A trial at
``full`` was tried: the model's own price for real arguments, measured by
the profile, then covered the difference, the export cost went unpriced,
and the shop's 5 % plan measured 20.7 %.)

That is an average over the program's calls.  The plan made with it is then
run itself (:func:`paired_cpu_s`); when it costs more or less than estimated
(heavier or lighter functions kept; a small plan brings on none of the extra
collections), beyond what the runs can tell from their own noise (the
estimate outside an interval for the median of the pairs' differences),
:func:`rescaled` scales the per-call prices to match and the plan is made
again with them.  A plan made with lower prices records more, so it is run
as well, and kept only if it stays within the budget; then one factor is
fitted to both runs (:func:`fitted_factor`), so the plan's estimate agrees
with what was measured.

Five pairs cannot always tell: on the example shop a 5 % plan costs about as
much as one run varies from the next, and a plan that cost twice its
estimate was kept because the estimate lay inside its five pairs' spread.
So a plan's trial adds pairs, two at a time up to :data:`MAX_PAIRS`, until
its interval lies on one side of the estimate or within a factor
:data:`ACCURACY` of it (:func:`settled`).  And the two runs of a pair start
together (:func:`paired_cpu_s`), so the machine's drifting speed moves both:
one after the other, five pairs measured the shop's 5 % plan at a quarter of
what it cost, and the plan kept cost twice its estimate.

Every run also reports the garbage collector at exit (``_gcwatch``): a full
collection that recording brings on is a cost paid in one piece, and priced
per call it misled every plan on the example shop.  It is taken out of the
per-call price and priced as a step (:mod:`scope_otel.planner.gcstep`); a
plan's own runs also correct how many young collections its calls start.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from scope_otel.planner import gcstep
from scope_otel.plan import LEVELS
from scope_otel.planner.profile import cpu_each, put_first_on_path

#: Fewer recorded calls than this and the difference is mostly noise.
MIN_CALLS = 200
_LAUNCHER = [sys.executable, "-m", "scope_otel.launcher.cli", "run"]
#: Put on ``PYTHONPATH`` of every trial run: reports the collector at exit (see :mod:`.gcstep`).
_GCWATCH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_gcwatch")


@dataclass(frozen=True)
class Trial:
    recorded_calls: float
    noplan_cpu_s: float
    plan_cpu_s: float
    per_call_us: float       # measured cost of one recorded call (at the trial plan's levels)
    model_per_call_us: float  # what the cost model said before, for the same calls
    gc_step: gcstep.GcStep | None = None  # the full collection recording brings on, priced apart
    gc_us: float = 0.0        # what the trial's extra full collections cost (not in per_call_us)
    gc_note: str = ""         # why there is no step, when there is none

    def as_dict(self) -> dict:
        out: dict = {k: round(getattr(self, k), 4) for k in
                     ("recorded_calls", "noplan_cpu_s", "plan_cpu_s", "per_call_us", "model_per_call_us", "gc_us")}
        if self.gc_step is not None:
            out["gc_step"] = self.gc_step.as_dict()
        elif self.gc_note:
            out["gc_step"] = None
            out["gc_note"] = self.gc_note
        return out


def _cpu_s(commands: list[list[str]], env: dict | list[dict | None] | None, cwd: str | None,
           timeout: float | None, together: bool) -> list[tuple[float, int]]:
    return cpu_each(commands, together=together, env=env, cwd=cwd, timeout=timeout)


def recorded(plan_document: dict) -> dict[str, str]:
    """The functions ``plan_document`` records (key -> level), those not at ``off``."""
    return {key: entry.get("level") for key, entry in plan_document["functions"].items()
            if entry.get("level") != "off"}


_DEPTH = {level: depth for depth, level in enumerate(LEVELS)}


def records_no_more(plan_document: dict, than: dict) -> bool:
    """Every function ``plan_document`` records, ``than`` records at the same level or deeper."""
    deeper = recorded(than)
    return all(_DEPTH.get(level, len(LEVELS)) <= _DEPTH.get(deeper.get(key, "off"), 0)
               for key, level in recorded(plan_document).items())


def variable_us(plan_document: dict) -> float:
    """What ``plan_document``'s estimate charges per recorded call, in all (its overhead less the start-up
    and the full collections it brings on)."""
    estimate = plan_document["estimate"]
    return estimate["overhead_us"] - estimate["fixed_us"] - estimate.get("gc_us", 0.0)


def measure(command: list[str], plan_document: dict, calls: dict[str, float], model: Any, processes: int, *,
            env: dict | None = None, cwd: str | None = None, timeout: float | None = None,
            repeat: int = 5, side_by_side: bool = True) -> Trial | None:
    """Run the trial; None when it recorded too few calls to tell (see :data:`MIN_CALLS`).

    ``plan_document`` is a plan with the functions to record (keys
    ``module:qualname``) and its estimate under ``model``; ``calls`` their
    profiled call counts.  The extra full collections the runs report are
    taken out of the per-call price and priced as a step
    (:func:`scope_otel.planner.gcstep.from_runs`).
    """
    calls_recorded = sum(calls.get(key, 0.0) for key in recorded(plan_document))
    if calls_recorded < MIN_CALLS:
        return None
    paired = paired_cpu_s(command, plan_document, env=env, cwd=cwd, timeout=timeout, repeat=repeat,
                          side_by_side=side_by_side)
    step, gc_us, note = gcstep.from_runs(list(paired.noplan_gc), list(paired.planned_gc), calls_recorded)
    fixed_us = model.startup_us * max(processes, 1)
    per_call = max(paired.cost_us - fixed_us - gc_us, 0.0) / calls_recorded
    return Trial(calls_recorded, paired.noplan_s, paired.planned_s, per_call,
                 variable_us(plan_document) / calls_recorded, step, gc_us, note)


#: How sure the interval around a trial's median is to hold the plan's true cost (at least).
COVERAGE = 0.6
#: A plan's trial adds pairs, up to this many, while its runs cannot tell whether the plan
#: costs what was estimated (see :func:`settled`).
MAX_PAIRS = 15
#: The accuracy asked of an estimate: within a factor of 1.5 of what was measured (the issue's +-50 %).
ACCURACY = 1.5


@dataclass(frozen=True)
class Paired:
    """CPU seconds of the median pair (without and with the plan), and an interval for the median difference."""
    noplan_s: float
    planned_s: float
    low_us: float   # lower end of the interval (with - without), from the pairs' order statistics
    high_us: float  # upper end
    pairs: int = 0
    side_by_side: bool = False  # the pairs after the first ran side by side
    noplan_gc: tuple = ()   # per run without the plan: its processes' collector reports (gcstep.GcReport)
    planned_gc: tuple = ()  # per run with the plan, in the same pair order

    @property
    def cost_us(self) -> float:
        return max(self.planned_s - self.noplan_s, 0.0) * 1e6

    @property
    def gc_us(self) -> float:
        """What the plan's extra full collections cost in these runs (median pair), 0 when not known."""
        return gcstep.observed_us(list(self.noplan_gc), list(self.planned_gc))

    def agrees_with(self, estimate_us: float) -> bool:
        """``estimate_us`` is within the interval: the runs cannot tell it from what they measured."""
        return self.low_us <= estimate_us <= self.high_us


def median_interval(n: int, coverage: float = COVERAGE) -> int:
    """``k`` (0-based) such that the k-th smallest and k-th largest of ``n`` samples hold their
    population's median with probability at least ``coverage``, as narrow as that allows.

    The count of samples below the median is binomial(n, 1/2), whatever the distribution: 5 pairs
    give the 2nd and 4th (62.5 %), 9 the 3rd and 7th (82 %), 15 the 6th and 10th (70 %).  Below
    three samples no interval reaches 60 %: 0 (the smallest and the largest)."""
    for k in range((n - 1) // 2, -1, -1):
        inside = sum(math.comb(n, i) for i in range(k + 1, n - k)) / 2 ** n  # k < below <= n-k-1
        if inside >= coverage:
            return k
    return 0


def settled(estimate_us: float) -> Callable[[Paired], bool]:
    """Whether a plan's trial can stop: its interval lies on one side of ``estimate_us`` (the estimate
    is off), or holds it and lies within a factor :data:`ACCURACY` of it either way (it is not)."""
    def enough(paired: Paired) -> bool:
        if not paired.agrees_with(estimate_us):
            return True
        return estimate_us > 0 and paired.low_us * ACCURACY >= estimate_us and paired.high_us <= estimate_us * ACCURACY
    return enough


def paired_cpu_s(command: list[str], plan_document: dict, *, env: dict | None = None, cwd: str | None = None,
                 timeout: float | None = None, repeat: int = 5, until: Callable[[Paired], bool] | None = None,
                 max_pairs: int = MAX_PAIRS, side_by_side: bool = True) -> Paired:
    """CPU seconds of ``command`` under ``scope-otel run`` without a plan and with ``plan_document``.

    The two run in ``repeat`` pairs, and the pair with the median difference
    is returned: the median ignores the pair a burst of other work landed in.
    The interval around it (order statistics, :func:`median_interval`) says
    how far it can be trusted.  With ``until``, two more pairs run at a time,
    up to ``max_pairs``, while ``until(result)`` is false: the interval
    narrows as pairs are added.

    ``side_by_side`` (on a machine with two CPUs or more): after a first pair
    run one after the other, the two runs of a pair start together.  A shared
    machine's speed drifts over seconds: on this project's 2-CPU VM the CPU
    time of one run of the example shop moves by +-10 % from the next, and two
    runs of the same command one after the other differed by 197 ms (standard
    deviation over 10 pairs, 2.1 s runs), twice what its 5 % plan costs; side
    by side they share the drift and differed by 62 ms.  If a pair run side
    by side exits differently from the first pair (a command that binds a
    fixed port, say, cannot run twice at once), that pair is dropped and the
    rest run one after the other.
    """
    side_by_side = side_by_side and (os.cpu_count() or 1) >= 2
    with tempfile.TemporaryDirectory(prefix="scope-otel-trial-") as tmp:
        plan_path = os.path.join(tmp, "trial.plan.json")
        with open(plan_path, "w", encoding="utf-8") as fh:
            json.dump(plan_document, fh)
        without, with_plan = _LAUNCHER + ["--", *command], _LAUNCHER + ["--plan", plan_path, "--", *command]
        pairs: list[tuple] = []
        first_codes: tuple[int, int] | None = None
        wanted = repeat
        runs_made = 0
        while True:
            while len(pairs) < wanted:
                flip = len(pairs) % 2 == 1  # which run starts first alternates
                together = side_by_side and first_codes is not None
                runs_made += 1
                folders = [os.path.join(tmp, f"gc-{runs_made}-{kind}") for kind in ("noplan", "plan")]
                envs = [_watched_env(env, folder) for folder in folders]
                order = [with_plan, without] if flip else [without, with_plan]
                runs = _cpu_s(order, envs[::-1] if flip else envs, cwd, timeout, together)
                (noplan, noplan_code), (planned, planned_code) = runs[::-1] if flip else runs
                if first_codes is None:
                    first_codes = (noplan_code, planned_code)
                elif together and (noplan_code, planned_code) != first_codes:
                    side_by_side = False  # the two runs got in each other's way: one after the other from now
                    continue
                pairs.append((noplan, planned, tuple(gcstep.read_reports(folders[0])),
                              tuple(gcstep.read_reports(folders[1]))))
            result = dataclasses.replace(_summary(pairs), side_by_side=side_by_side)
            if until is None or wanted + 2 > max_pairs or until(result):
                return result
            wanted += 2


def _watched_env(env: dict | None, folder: str) -> dict:
    """``env`` (else this process's) with the collector watcher on and reporting into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    out = dict(os.environ if env is None else env)
    put_first_on_path(out, _GCWATCH_DIR)
    out["SCOPE_OTEL_GC_DIR"] = folder
    return out


def _summary(pairs: list[tuple]) -> Paired:
    gc_noplan = tuple(pair[2] if len(pair) > 2 else () for pair in pairs)
    gc_planned = tuple(pair[3] if len(pair) > 3 else () for pair in pairs)
    pairs = sorted(pairs, key=lambda pair: pair[1] - pair[0])
    noplan, planned = pairs[len(pairs) // 2][:2]
    k = median_interval(len(pairs))
    low, high = pairs[k], pairs[-1 - k]
    return Paired(noplan, planned, (low[1] - low[0]) * 1e6, (high[1] - high[0]) * 1e6, len(pairs),
                  noplan_gc=gc_noplan, planned_gc=gc_planned)


#: Per-call fields of the cost model (everything but the once-per-process start-up).
_PER_CALL = ("check_us", "boundaries_us", "full_us", "arg_us", "container_us", "sampled_out_us",
             "state_us", "offpath_us", "export_us")


#: A plan made again with higher prices is run in turn, and repriced again while it costs more than
#: estimated, at most this many times in all.
MAX_REPRICES = 3
#: Below this the plan's measured cost matches its estimate closely enough: no second plan.
RESCALE_TOLERANCE = 0.2
#: How far one trial of the plan may move per-call prices, down and up.
RESCALE_LIMITS = (0.25, 20.0)


def rescaled(model: Any, plan_document: dict, measured: Paired, over_budget: bool = False) -> tuple[Any, float]:
    """``model`` with its per-call costs scaled so ``plan_document``'s estimate matches what was ``measured``.

    Returns (model, factor); factor 1.0 (and ``model`` itself) when the two
    agree within :data:`RESCALE_TOLERANCE`, or when the estimate lies within
    the interval of the paired runs that measured it (a difference the
    runs cannot tell from their noise moves nothing).  The factor is kept within
    :data:`RESCALE_LIMITS`; the once-per-process start-up is left as measured.
    Prices come down as well as up: an average price from the trial of every
    function is too high for a small plan, which brings on none of the extra
    full collections over the heap that recording everything does.

    ``over_budget``: the runs' median put the plan over its budget.  Then prices
    go up by what the median says even when the runs cannot tell it from the
    estimate (a median below the estimate is judged as without it): a budget
    is a limit, and the median is the best guess at the
    plan's cost (the shop's 5 % plan measured 1.0-1.9x its estimate over
    five benchmark runs, every time inside its trial's interval).
    """
    estimate = plan_document["estimate"]
    variable = variable_us(plan_document)
    if variable <= 0:
        return model, 1.0
    factor = within_limits((measured.cost_us - estimate["fixed_us"] - measured.gc_us) / variable)
    if over_budget and factor > 1.0:
        return scaled_by(model, factor), factor
    if abs(factor - 1.0) <= RESCALE_TOLERANCE or measured.agrees_with(estimate["overhead_us"]):
        return model, 1.0
    return scaled_by(model, factor), factor


def scaled_by(model: Any, factor: float) -> Any:
    """``model`` with every per-call price times ``factor`` (the start-up is left as measured)."""
    scaled = {name: getattr(model, name) * factor for name in _PER_CALL}
    return dataclasses.replace(model, **scaled, source=f"{model.source}, x{factor:.2f} from the plan's trial run")


def fitted_factor(points: list[tuple[float, float]]) -> float:
    """The one price factor that best explains several plans' runs: least squares over
    (variable cost estimated at unscaled prices, variable cost measured), within :data:`RESCALE_LIMITS`.
    The larger plans weigh most; their difference stands furthest out of the noise."""
    den = sum(v * v for v, _m in points)
    if den <= 0:
        return 1.0
    return within_limits(sum(v * m for v, m in points) / den)


def within_limits(factor: float) -> float:
    low, high = RESCALE_LIMITS
    return min(max(factor, low), high)


def calibrated(model: Any, trial: Trial) -> Any:
    """``model`` with the per-span off-path cost raised so that the trial's calls cost what it saw.

    Only raised: a trial cheaper than the microbenchmarks is within its noise
    more often than not, and a budget is a ceiling, so the higher price wins.
    """
    missed = max(trial.per_call_us - trial.model_per_call_us, 0.0)
    offpath = model.offpath_us + missed
    return dataclasses.replace(model, offpath_us=offpath,
                               source=f"{model.source}; off-path cost from a trial run of the program")
