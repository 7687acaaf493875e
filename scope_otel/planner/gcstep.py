"""The full collection that recording brings on: a cost paid in one piece, not per call.

CPython's cyclic collector runs a young collection every ``threshold[0]``
net allocations of tracked objects, a middle one every ``threshold[1] + 1``
young ones, and a full one every ``threshold[2] + 1`` middle ones (when
enough objects are waiting in the oldest generation).  Recording allocates
(records, spans, their attribute dicts), so it moves the program's next full
collection earlier, and a run that ended before it now pays for it.  On a
program with a large heap that is one large cost: on the example shop one
full collection over ~94,000 objects took 40-60 ms, 3-4 % of the run, and
it came once a plan recorded more than ~30 young collections' worth of
allocations.  Priced per call, a step like that misleads: a plan that leaves
out 900 cheap calls and stays over the step saves almost nothing, and was
estimated at 4.4 % and measured at 7.4-8.6 % for a 5 % budget.

So the planner prices the step as a step.  The trial's runs report the
collector at exit (``_gcwatch/sitecustomize.py``): without recording, how many
young collections (*triggers*) the program had left before its next full one
(:func:`triggers_until_full`, from the generation counters and thresholds);
with every called function recorded at ``boundaries``, how many more
triggers per recorded call recording made, and how long the full collections
took.  :class:`GcStep` holds that; the orchestrator either keeps a plan's
triggers under the headroom or pays for the collections it brings on,
whichever records more value within the budget.

Only single-process programs on a generational collector (CPython 3.10-3.13)
are modelled; elsewhere :func:`from_runs` returns ``None`` and the per-call
prices carry everything, as before.
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass

#: The plan kept under the step leaves this share of the headroom unused: the trial's
#: triggers per call are an average, and a program's collections vary a little run to run.
SAFETY = 0.8
#: Fewer young collections than this between two runs is jitter (threads, timing), not a measurement.
MIN_TRIGGERS = 5


@dataclass(frozen=True)
class GcReport:
    """One process's collector at exit, as ``_gcwatch`` wrote it."""
    collections: tuple[int, ...]   # per generation, young first
    full_ms: tuple[float, ...]     # how long each full collection took (CPU of the collecting thread)
    count: tuple[int, ...]         # gc.get_count() at exit
    threshold: tuple[int, ...]     # gc.get_threshold()
    exit_full_ms: float = 0.0      # what a full collection would cost over the heap the run left (see read_reports)

    @property
    def triggers(self) -> int:
        """Young collections started (each one collects one generation)."""
        return sum(self.collections)

    @property
    def full(self) -> int:
        return self.collections[-1]

    def headroom(self) -> float:
        """Triggers left before the next full collection (fractional: allocations already counted)."""
        left = triggers_until_full(self.count, self.threshold)
        return left - min(self.count[0] / max(self.threshold[0], 1), 1.0)


def triggers_until_full(count: tuple[int, ...] | list[int], threshold: tuple[int, ...] | list[int]) -> int:
    """How many more collections are triggered up to and including the next full one.

    Follows CPython's ``collect_generations``: at each trigger the oldest
    generation whose counter exceeds its threshold is collected, which adds one
    to the next generation's counter and resets the younger ones.  (A full
    collection can also be put off while few objects wait in the oldest
    generation: then it comes later, never sooner.)
    """
    if len(count) != 3 or len(threshold) != 3 or threshold[0] <= 0:
        raise ValueError(f"not a three-generation collector: count {count}, threshold {threshold}")
    _c0, c1, c2 = count
    _t0, t1, t2 = threshold
    triggers = 0
    while True:
        triggers += 1
        if c2 > t2:
            return triggers
        if c1 > t1:
            c2, c1 = c2 + 1, 0
        else:
            c1 += 1


def _full_ms_at_exit(doc: dict) -> float:
    """A full collection over the heap the run left: the run's last one, scaled by the objects then and at exit.

    (A full collection's work is a walk over every tracked object.)  0 when the run made none.
    """
    spent, walked = doc.get("full_ms") or [], doc.get("full_objects") or []
    if not spent or not walked or walked[-1] <= 0:
        return 0.0
    return float(spent[-1]) * float(doc.get("objects_at_exit", walked[-1])) / float(walked[-1])


def read_reports(folder: str) -> list[GcReport]:
    """The reports the processes of one run left in ``folder`` (unreadable ones are skipped)."""
    reports = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    for name in names:
        if not (name.startswith("gc-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as fh:
                doc = json.load(fh)
            reports.append(GcReport(tuple(doc["collections"]), tuple(doc["full_ms"]), tuple(doc["count"]),
                                    tuple(doc["threshold"]), _full_ms_at_exit(doc)))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return reports


@dataclass(frozen=True)
class GcStep:
    """Where recording brings on the program's next full collection, and what that costs."""
    headroom: float        # triggers the program leaves before its next full collection, without recording
    per_call: float        # triggers per call recorded at boundaries (from the trial; full: CostModel.gc_factor)
    full_us: float         # one more full collection
    cycle: float           # triggers from one full collection to the next (133 with the default thresholds)

    def extra_full(self, triggers: float) -> int:
        """Full collections that ``triggers`` more young collections bring on."""
        if triggers < self.headroom:
            return 0
        return 1 + int((triggers - self.headroom) // self.cycle)

    def cost_us(self, triggers: float) -> float:
        return self.extra_full(triggers) * self.full_us

    def as_dict(self) -> dict:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def _single(noplan: list, planned: list) -> tuple[list[GcReport], list[GcReport], str]:
    """Each run's one report, or a reason the runs cannot be modelled."""
    if not noplan or not planned or len(noplan) != len(planned):
        return [], [], "no collector reports"
    if any(len(run) != 1 for run in list(noplan) + list(planned)):
        return [], [], "more than one process per run"
    bare, rec = [run[0] for run in noplan], [run[0] for run in planned]
    if any(len(r.collections) != 3 or len(r.threshold) != 3 for r in bare + rec):
        return [], [], "not a three-generation collector"
    return bare, rec, ""


def _extra_full_us(bare: list[GcReport], rec: list[GcReport]) -> tuple[float, float]:
    """(median extra full collections per pair, what one costs in µs: median of the exit timings)."""
    extra = statistics.median(r.full - b.full for b, r in zip(bare, rec))
    timed = [r.exit_full_ms for r in rec if r.exit_full_ms > 0]
    return max(extra, 0), (1000.0 * statistics.median(timed) if timed else 0.0)


def observed_us(noplan: list, planned: list) -> float:
    """What the extra full collections of runs with a plan cost, against runs without (0 when unknown)."""
    bare, rec, _why = _single(noplan, planned)
    if not bare:
        return 0.0
    extra, full_us = _extra_full_us(bare, rec)
    return extra * full_us


def _extra_triggers(bare: list[GcReport], rec: list[GcReport]) -> float:
    """Young collections started with recording beyond without it (median pair)."""
    return float(statistics.median(r.triggers - b.triggers for b, r in zip(bare, rec)))


def observed_triggers(noplan: list, planned: list) -> float | None:
    """The young collections a plan's runs started beyond runs without it (median pair); None when unknown."""
    bare, rec, _why = _single(noplan, planned)
    if not bare:
        return None
    return _extra_triggers(bare, rec)


def from_runs(noplan: list, planned: list, calls_recorded: float) -> tuple[GcStep | None, float, str]:
    """The step, from a trial's runs without and with every called function recorded at boundaries.

    ``noplan``/``planned``: each run's reports, pair by pair.  Returns (step
    or None, what the trial's extra full collections cost in µs (median pair:
    to take out of its per-call price), why there is no step).
    """
    bare, rec, why = _single(noplan, planned)
    if not bare:
        return None, 0.0, why
    if calls_recorded <= 0:
        return None, 0.0, "no calls recorded"
    extra_triggers = _extra_triggers(bare, rec)
    extra_full, full_us = _extra_full_us(bare, rec)
    if extra_triggers <= 0 or full_us <= 0:
        return None, 0.0, "recording brought on no collections"
    headroom = statistics.median(b.headroom() for b in bare)
    if extra_full < 1 and extra_triggers > headroom * 1.25:
        # the collector put its full collection off (few objects waiting in the oldest generation)
        return None, 0.0, "no full collection came past the headroom"
    step = GcStep(headroom=headroom, per_call=extra_triggers / calls_recorded, full_us=full_us,
                  cycle=float(triggers_until_full((0, 0, 0), bare[0].threshold)))
    return step, extra_full * full_us, ""
