"""Choose a level, capture set and sampling rate per function within a budget.

:func:`build_plan` turns an :class:`~.records.Analysis`, call counts
(estimated by :func:`.callgraph.static_frequencies` or measured by
``--profile``) and a :class:`~.costmodel.CostModel` into a plan document
(see :mod:`scope_otel.plan` and ``schemas/plan.schema.json``).

The model::

    run time   T = sum over f of calls(f) * own_cost(f)        (or measured)
    own_cost(f)  = call + statements*stmt (+ loops) + I/O of its patterns
    overhead(f)  = calls(f) * CostModel.call_cost(level, args, state, sampling)

The budget is ``budget_pct`` of ``T``; a measured run also pays, once per
process, the start-up of the instrumentation (``CostModel.startup_us``),
charged first when anything is recorded.  Recording a function is worth a
*value* that does not grow with how often it runs (one recorded call shows
what it does; the thousandth adds little): entry points and boundaries
(framework handlers, SQL, HTTP, queues, threads, processes) are worth most,
then state mutation, exception handling, recursion and branching; trivial
accessors and implicitly-called dunders little.  ``full`` adds the value of
arguments, return value and state on top of ``boundaries``.

The choice is a knapsack solved greedily by value per microsecond: each
function offers an upgrade ``off -> boundaries`` and, once taken,
``boundaries -> full``; a valuable function too expensive to record on
every call also offers ``boundaries`` sampled at the rate that fits a
quarter of the budget (a sampled-out call still costs the level check).
Upgrades are taken best ratio first while they fit, so the most valuable
set for the budget is chosen, not a threshold.

User overrides win over the optimiser, in this order: ``--pin GLOB=LEVEL``
(the last matching pin), then ``--exclude GLOB`` (off), then
``--include GLOB`` (at least boundaries).  Their cost is charged to the
budget first.  Every function gets a one-line reason.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from scope_otel.planner.callgraph import is_implicit
from scope_otel.planner.costmodel import CostModel
from scope_otel.planner.patterns import BOUNDARIES, ENTRY_POINTS
from scope_otel.planner.records import Analysis, FunctionInfo
from scope_otel.plan import PLAN_VERSION, content_hash
from scope_otel.version import __version__

#: Time spent outside Python by a call with this pattern (µs), for run-time estimates.
IO_COST_US = {
    "http.client": 1000.0, "subprocess": 3000.0, "multiprocessing": 1000.0,
    "sqlalchemy.query": 150.0, "sqlalchemy.session": 50.0, "sqlalchemy.engine": 50.0,
    "queue.put": 2.0, "queue.get": 5.0, "thread.spawn": 100.0, "executor.submit": 20.0,
}
_LOOP_WORK = 27          # statements a loop adds: ~10 iterations of ~3 statements
_SAMPLED_SHARE = 0.25    # a sampled function may use this share of the budget
_MIN_SAMPLING = 0.001


@dataclass
class Overrides:
    include: list = field(default_factory=list)
    exclude: list = field(default_factory=list)
    pin: dict = field(default_factory=dict)      # glob -> level, in the order given

    def as_dict(self) -> dict:
        return {"include": list(self.include), "exclude": list(self.exclude), "pin": dict(self.pin)}

    def forced(self, key: str) -> tuple[str, str] | None:
        """(level, reason) forced by the user for ``key``, or None (precedence above)."""
        pinned = None
        for glob, level in self.pin.items():
            if _matches(glob, key):
                pinned = (level, f"pinned by --pin {glob}={level}")
        if pinned:
            return pinned
        for glob in self.exclude:
            if _matches(glob, key):
                return "off", f"excluded by --exclude {glob}"
        for glob in self.include:
            if _matches(glob, key):
                return "boundaries", f"included by --include {glob}"
        return None


def _matches(glob: str, key: str) -> bool:
    """A glob over ``module:qualname``; one without ``:`` matches whole modules."""
    if ":" not in glob:
        module = key.partition(":")[0]
        return fnmatchcase(module, glob) or (glob.endswith(".*") and module == glob[:-2])
    return fnmatchcase(key, glob)


def own_cost_us(info: FunctionInfo, model: CostModel) -> float:
    """Estimated run time of one call of ``info`` itself, callees excluded (µs)."""
    work = info.body.statements + _LOOP_WORK * info.body.loops
    io = sum(IO_COST_US.get(p, 0.0) for p in info.patterns)
    return model.call_us + model.stmt_us * work + io


def _value(info: FunctionInfo) -> tuple[float, float, list[str]]:
    """(value at boundaries, extra value at full, what makes it valuable)."""
    b = info.body
    why: list[str] = []
    value = 0.5
    entry = sorted(info.patterns & ENTRY_POINTS)
    edge = sorted(info.patterns & BOUNDARIES)
    if entry:
        value += 10.0
        why.append("entry point " + ",".join(entry))
    if edge:
        value += 6.0
        why.append("boundary " + ",".join(edge))
    shape = sorted(info.patterns & {"coroutine", "generator", "async_generator"})
    if shape:
        value += 1.5
        why.append(shape[0])
    if b.mutations:
        value += 2.0 + min(len(b.mutations), 4) * 0.5
        why.append(f"mutates {', '.join(b.mutations[:3])}")
    if b.handlers or b.raises:
        value += 2.0
        why.append(f"exception handling ({b.handlers} except, {b.raises} raise)")
    if info.recursion != "none":
        value += 3.0
        why.append(f"{info.recursion} recursion")
    if b.cyclomatic > 1:
        value += 1.5 * math.log2(b.cyclomatic) + 0.5 * b.max_nesting
        if b.cyclomatic >= 5:
            why.append(f"complex (cyclomatic {b.cyclomatic}, nesting {b.max_nesting})")
    value += 0.2 * min(len(info.callees), 10)
    public = not info.name.startswith("_")
    if public:
        value += 1.0
    implicit = is_implicit(info)
    trivial = b.statements <= 2 and b.cyclomatic == 1 and not info.patterns and not b.mutations
    if implicit or trivial:
        value *= 0.3
        why.append("implicitly called accessor" if implicit else "trivial body")
    if not why:
        why.append("plain function" if public else "private helper")
    has_args = len(info.params) > (1 if info.self_name else 0)
    extra = 0.4 * value + (2.0 if b.mutations else 0.0) + (1.0 if has_args else 0.0)
    return value, extra, why


def _capture(info: FunctionInfo, level: str) -> list[str]:
    if level == "off":
        return []
    if level == "boundaries":
        return ["exceptions"]
    capture = ["exceptions", "return"]
    if len(info.params) > (1 if info.self_name else 0):
        capture.append("args")
    if info.body.mutations:
        capture.append("state")
    return sorted(capture)


@dataclass
class _Choice:
    info: FunctionInfo
    calls: float
    value_b: float
    value_f: float
    why: list
    cost_b: float
    cost_f: float
    level: str = "off"
    sampling: float = 1.0
    cost: float = 0.0
    forced: str | None = None
    sampled_rate: float = 1.0
    sampled_cost: float = 0.0


def _fmt_calls(calls: float) -> str:
    return f"{calls:.0f}" if calls >= 10 or calls == int(calls) else f"{calls:.2g}"


def build_plan(
    analysis: Analysis,
    calls: dict[str, float],
    model: CostModel,
    *,
    budget_pct: float = 5.0,
    overrides: Overrides | None = None,
    frequencies: str = "static",
    baseline_us: float | None = None,
    profile_meta: dict | None = None,
    fixed_us: float = 0.0,
    args_repr_us: dict[str, float] | None = None,
) -> dict:
    """The plan document (see module docstring).

    ``baseline_us`` is a measured run time; ``fixed_us`` a once-per-run cost
    paid as soon as anything is recorded (instrumentation start-up in each
    process of a profiled command); ``args_repr_us`` the measured cost of
    capturing each function's arguments (from ``--profile``).
    """
    args_repr_us = args_repr_us or {}
    overrides = overrides or Overrides()
    choices: dict[str, _Choice] = {}
    estimated_baseline = 0.0
    for key, info in analysis.functions.items():
        n = float(calls.get(key, 0.0))
        nmut = len(info.body.mutations)
        nargs = len(info.params) - (1 if info.self_name else 0)
        containers = len(set(info.params[1 if info.self_name else 0:]) & info.body.iterated)
        value_b, value_f, why = _value(info)
        choices[key] = _Choice(
            info, n, value_b, value_f, why,
            cost_b=n * model.call_cost("boundaries"),
            cost_f=n * model.call_cost("full", nargs=nargs, mutations=nmut, containers=containers,
                                       args_repr_us=args_repr_us.get(key)),
        )
        estimated_baseline += n * own_cost_us(info, model)
    baseline = baseline_us if baseline_us is not None else estimated_baseline
    budget = max(budget_pct, 0.0) / 100.0 * baseline

    remaining = budget - fixed_us
    # 1. the user's word first
    for key, choice in choices.items():
        forced = overrides.forced(key)
        if forced is not None:
            level, why = forced
            choice.level, choice.forced = level, why
            choice.cost = choice.cost_f if level == "full" else choice.cost_b if level == "boundaries" else 0.0
            remaining -= choice.cost

    # 2. greedy knapsack by value per µs
    heap: list = []

    def offer(choice: _Choice, kind: str) -> None:
        if kind == "boundaries":
            value, cost = choice.value_b, choice.cost_b
        elif kind == "full":
            value, cost = choice.value_f, choice.cost_f - choice.cost_b
        else:  # sampled boundaries
            value, cost = choice.value_b * math.sqrt(choice.sampled_rate), choice.sampled_cost
        ratio = value / cost if cost > 0 else math.inf
        heapq.heappush(heap, (-ratio, cost, choice.info.key, kind))

    for choice in choices.values():
        if choice.forced:
            if choice.forced.startswith("included"):  # at least boundaries: full may still fit
                offer(choice, "full")
            continue
        offer(choice, "boundaries")
        important = choice.info.patterns & (ENTRY_POINTS | BOUNDARIES)
        if important and budget > 0 and choice.cost_b > _SAMPLED_SHARE * budget:
            per_call_b = model.call_cost("boundaries")
            rate = (_SAMPLED_SHARE * budget / choice.calls - model.sampled_out_us) / max(per_call_b - model.sampled_out_us, 1e-9)
            if rate >= _MIN_SAMPLING:
                choice.sampled_rate = min(rate, 1.0)
                choice.sampled_cost = choice.calls * model.call_cost("boundaries", sampling=choice.sampled_rate)
                offer(choice, "sampled")
    while heap:
        _ratio, cost, key, kind = heapq.heappop(heap)
        choice = choices[key]
        if kind == "full" and choice.level != "boundaries":
            continue
        if kind in ("boundaries", "sampled") and choice.level != "off":
            continue
        if cost > remaining:
            continue
        remaining -= cost
        if kind == "sampled":
            choice.level, choice.sampling, choice.cost = "boundaries", choice.sampled_rate, cost
        else:
            choice.level, choice.sampling = kind, 1.0
            if kind == "boundaries":
                choice.cost = cost
                offer(choice, "full")
            else:
                choice.cost = choice.cost_f

    # 3. the document
    functions = {}
    recorded = any(c.level != "off" for c in choices.values())
    spent = fixed_us if recorded else 0.0
    startup_too_dear = fixed_us > budget and not recorded
    counts = {"off": 0, "boundaries": 0, "full": 0}
    for key in sorted(choices):
        choice = choices[key]
        info = choice.info
        spent += choice.cost
        counts[choice.level] += 1
        if startup_too_dear:
            choice.why.insert(0, f"instrumentation start-up alone ({_share(fixed_us, baseline)}) "
                                 f"exceeds the budget")
        functions[key] = {
            "level": choice.level,
            "capture": _capture(info, choice.level),
            "sampling": round(choice.sampling if choice.level != "off" else 1.0, 4),
            "reason": _reason(choice, baseline, budget_pct),
            "patterns": sorted(info.patterns),
            "complexity": info.complexity(),
            "estimated_calls": round(choice.calls, 3),
            "estimated_cost_us": round(choice.cost, 3),
            "file": info.file,
            "line": info.line,
        }
    document = {
        "version": PLAN_VERSION,
        "scope_otel_version": __version__,
        "hash": "",
        "budget_pct": budget_pct,
        "defaults": {"level": "off", "capture": [], "sampling": 1.0},
        "functions": functions,
        "overrides": overrides.as_dict(),
        "estimate": {
            "overhead_pct": round(100.0 * spent / baseline, 4) if baseline > 0 else 0.0,
            "overhead_us": round(spent, 3),
            "fixed_us": round(fixed_us if recorded else 0.0, 3),
            "baseline_us": round(baseline, 3),
            "frequencies": frequencies,
            "levels": counts,
            "over_budget_by_overrides": spent > budget + 1e-9,
            "cost_model": model.as_dict(),
            "modules": len(analysis.modules),
            "skipped": [{"path": s.path, "reason": s.reason} for s in analysis.skipped],
            **({"profile": profile_meta} if profile_meta else {}),
        },
    }
    document["hash"] = content_hash(document)
    return document


def _share(us: float, baseline: float) -> str:
    return f"{100.0 * us / baseline:.3g}% of run time" if baseline > 0 else f"{us:.3g} µs"


def _reason(choice: _Choice, baseline: float, budget_pct: float) -> str:
    why = "; ".join(choice.why)

    def share(us: float) -> str:
        return _share(us, baseline)

    calls = _fmt_calls(choice.calls)
    if choice.forced:
        return f"{choice.level}: {choice.forced} ({why}; ~{calls} calls, {share(choice.cost)})"
    if choice.level == "off":
        if choice.calls == 0:
            return f"off: never called in the measured run ({why})"
        return (f"off: {why}; ~{calls} calls would cost {share(choice.cost_b)} at boundaries, "
                f"below the value per cost that fits the {budget_pct:g}% budget")
    sampled = f" sampled at {choice.sampling:.3g}" if choice.sampling < 1.0 else ""
    extra = "; full capture fits the budget" if choice.level == "full" else ""
    return f"{choice.level}{sampled}: {why}{extra}; ~{calls} calls, {share(choice.cost)}"
