"""``scope-otel plan --from-store``: a plan priced on the traffic the program really served.

Every run under ``scope-otel run`` leaves per-function statistics in the store
(``scope_function_stats``: calls, time per call, errors, whether under a
request, and each window's program CPU time and recording cost; see
:mod:`scope_otel.launcher.observe`).  This module reads them back and plans:

- a function's calls are its observed calls per second of the program's CPU
  time (over the windows that watched it), so runs of different lengths and
  many processes (gunicorn workers) add up, and a function the current plan
  leaves ``off`` keeps what an earlier run observed of it;
- a call is priced by the cost model measured on this machine
  (:func:`~.costmodel.calibrate`), raised to the cost per record the overhead
  governor measured in the observed processes when that is higher (it sees
  the real exporter and the program's heap);
- what the other spans (requests, SQL, messages) cost in those windows is
  recorded whatever the plan says: it comes off the budget first, and the
  functions share the rest;
- a function observed right under a request's span (the first of the
  program's functions the request reached: its handler) is recorded at
  least at ``boundaries`` whatever it costs, so that every request recorded
  shows its handler; when that is over the budget, the overhead governor
  keeps the budget at run time by recording fewer requests, each whole.

``--since DURATION`` (``90s``, ``30m``, ``2h``, ``7d``) keeps the recent
windows; ``--service NAME`` one service (required when the windows hold
several).  No observations, no store, or none of the observed functions
under the analysed paths: exit 2 with one line, any existing plan left as it
was.  With ``--explain`` every function's reason starts with what was
observed of it.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: recorded calls are priced at most this many times the microbenchmarks' price (a window whose
#: governor measured a tiny number of records says little)
MAX_PRICE_FACTOR = 10.0


class NoObservations(Exception):
    """The store cannot give a plan anything to go on; the message says what to do."""


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit s, m, h, d or w (``30m``); ValueError if not."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def read(store_url: str | None, database: str | None, since_s: float | None, service: str | None):
    """``(functions, totals)`` from the store (see :func:`scope_otel.store.function_stats.observed`)."""
    from scope_otel import config as _config
    from scope_otel.store import StoreError, open_store
    from scope_otel.store.function_stats import observed
    from scope_otel.store.target import TargetError, parse

    cfg = _config.current()
    url = store_url or cfg.store
    database = database or cfg.database
    try:
        target = parse(url, database)
    except TargetError as exc:
        raise NoObservations(str(exc)) from None
    if target.kind == "chdb" and not os.path.isdir(target.path):
        raise NoObservations(f"no store at {target.path} (run the program under `scope-otel run` first, or give "
                             "--store)")
    try:
        store = open_store(url, database)
    except StoreError as exc:
        raise NoObservations(str(exc)) from None
    try:
        functions, totals = observed(store, since_s, service)
    except Exception as exc:  # an unreachable server, a store from before the statistics table
        raise NoObservations(f"cannot read per-function statistics from {target.display}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from None
    finally:
        try:
            store.close()
        except Exception:
            pass
    where = (f" in the last {_since_text(since_s)}" if since_s is not None else "") + (
        f" of service {service!r}" if service else "")
    if not any(f.calls > 0 for f in functions):
        raise NoObservations(f"no observed calls in {target.display}{where} (run the program under "
                             "`scope-otel run` first: every run records its own functions' statistics)")
    if service is None and len(totals.services) > 1:
        raise NoObservations(f"the store holds {len(totals.services)} services{where} "
                             f"({', '.join(totals.services)}): choose one with --service")
    return functions, totals


def _since_text(seconds: float) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNIT_S[unit] and seconds % _UNIT_S[unit] == 0:
            return f"{seconds / _UNIT_S[unit]:g}{unit}"
    return f"{seconds:g}s"


def priced(model: Any, totals: Any) -> tuple[Any, float, float]:
    """``(model, factor, measured µs per record)``: the model with its recorded calls' prices raised to
    what the governor measured per record in the observed processes, when that is higher."""
    records = totals.records + totals.other_spans
    if records <= 0 or totals.recording_cpu_ns <= 0:
        return model, 1.0, 0.0
    measured = totals.recording_cpu_ns / 1000.0 / records
    factor = min(max(measured / max(model.call_cost("boundaries"), 1e-9), 1.0), MAX_PRICE_FACTOR)
    if factor == 1.0:
        return model, 1.0, measured
    scaled = {name: getattr(model, name) * factor
              for name in ("boundaries_us", "full_us", "arg_us", "container_us", "state_us", "offpath_us",
                           "export_us")}
    return dataclasses.replace(model, **scaled, source=f"{model.source}, x{factor:.2f} as measured"), factor, measured


def _observed_text(f: Any, rate: float) -> str:
    share = 100.0 * f.on_request / f.records if f.records else 0.0
    errors = f", {f.errors} raised" if f.errors else ""
    errors += f", {f.entries:,} right under a request" if f.entries else ""
    return (f"observed {f.calls:,.0f} calls ({rate:.3g}/s of program CPU) in {f.windows} windows of "
            f"{f.processes} processes, {f.mean_us:.3g} µs each{errors}, {share:.0f}% under a request")


def plan_from_store(args: Any, pins: dict, err: Any = None) -> int:
    """The ``--from-store`` path of ``scope-otel plan`` (``args`` as its parser leaves them); its exit
    status."""
    from scope_otel.planner.analysis import analyse
    from scope_otel.planner.costmodel import calibrate
    from scope_otel.planner.explain import render
    from scope_otel.planner.orchestrator import Overrides, build_plan
    from scope_otel.plan import content_hash, save_plan

    err = err or sys.stderr

    def fail(message: str) -> int:
        """One line, status 2, nothing written: an existing plan stays as it was."""
        err.write(f"scope-otel plan: error: {message}\n")
        return 2

    try:
        since = parse_duration(args.since) if args.since else None
    except ValueError as exc:
        return fail(f"--since {exc}")
    paths = args.paths or ["."]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        return fail(f"{', '.join(missing)}: not found (give the application's source files or directories)")
    try:
        functions, totals = read(args.store, args.database, since, args.service)
    except NoObservations as exc:
        return fail(str(exc))

    analysis = analyse(paths)
    for skipped in analysis.skipped:
        err.write(f"scope-otel plan: skipped {skipped.path}: {skipped.reason}\n")
    if not analysis.functions:
        return fail(f"no Python functions found under {', '.join(paths)}")
    seen = {f.key: f for f in functions}
    known = [key for key in seen if key in analysis.functions]
    if not known:
        return fail(f"none of the {len(seen)} functions observed in the store (e.g. {sorted(seen)[0]}) is under "
                    f"{', '.join(paths)} (give the program's source, as it is imported)")

    model, factor, measured_us = priced(calibrate(refresh=args.recalibrate, exporter=args.exporter), totals)
    baseline_us = totals.program_cpu_ns / 1000.0
    floor_us = totals.other_spans * (measured_us or model.call_cost("boundaries"))
    floor_pct = 100.0 * floor_us / baseline_us if baseline_us > 0 else 0.0
    calls = {key: seen[key].calls_per_cpu_s * baseline_us / 1e6 for key in known}
    # a request's handler is recorded in every request recorded: at least boundaries, charged first (the
    # governor keeps the budget by recording fewer requests, each whole)
    handlers = sorted(key for key in known if seen[key].entries > 0)
    document = build_plan(analysis, calls, model, budget_pct=max(args.budget - floor_pct, 0.0),
                          overrides=Overrides(include=list(args.include) + handlers, exclude=args.exclude,
                                              pin=pins),
                          frequencies="store", baseline_us=baseline_us)

    document["budget_pct"] = args.budget  # the governor holds the run to the whole budget
    for key, entry in document["functions"].items():
        f = seen.get(key)
        if f is None:
            if entry["level"] == "off" and not entry["reason"].startswith("off: pinned"):
                entry["reason"] = "off: not observed in the store (no run recorded it)" + \
                    entry["reason"].removeprefix("off: never called in the measured run")
            continue
        rate = f.calls_per_cpu_s
        entry["observed"] = {"calls": round(f.calls, 3), "records": f.records, "per_cpu_s": round(rate, 4),
                             "mean_us": round(f.mean_us, 3), "errors": f.errors, "on_request": f.on_request,
                             "entries": f.entries, "windows": f.windows, "processes": f.processes,
                             "level": f.level}
        reason = entry["reason"]
        if key in handlers and f"included by --include {key}" in reason:
            reason = reason.replace(f"included by --include {key}",
                                    f"a request's handler (right under {f.entries:,} of the requests observed), "
                                    "recorded in every request recorded")
        entry["reason"] = f"{_observed_text(f, rate)}; {reason}"
    estimate = document["estimate"]
    estimate["overhead_pct"] = round(estimate["overhead_pct"] + floor_pct, 4)
    estimate["overhead_us"] = round(estimate["overhead_us"] + floor_us, 3)
    estimate["store"] = {
        "since_s": since, "service": args.service or (totals.services[0] if totals.services else None),
        "windows": totals.windows, "processes": totals.processes,
        "first": str(totals.first), "last": str(totals.last),
        "program_cpu_s": round(totals.program_cpu_ns / 1e9, 4),
        "recording_cpu_s": round(totals.recording_cpu_ns / 1e9, 4),
        "function_records": totals.records, "other_spans": totals.other_spans,
        "other_spans_pct": round(floor_pct, 4), "measured_us_per_record": round(measured_us, 3),
        "price_factor": round(factor, 3), "functions_observed": len(seen), "functions_matched": len(known),
        "handlers": handlers,
    }
    document["hash"] = content_hash(document)

    problem = save_plan(document, args.output, sys.stdout)
    if problem:
        return fail(problem)
    if args.explain:
        out = sys.stdout if args.output != "-" else err
        s = estimate["store"]
        out.write(f"observed: {s['windows']} windows of {s['processes']} processes ({s['first']} .. {s['last']}), "
                  f"program CPU {s['program_cpu_s']:.3g} s, {s['function_records']} function records and "
                  f"{s['other_spans']} other spans; recording measured at {s['measured_us_per_record']:.3g} µs per "
                  f"record (model {model.call_cost('boundaries') / factor:.3g} µs at boundaries, prices x{factor:.2f}); "
                  f"other spans cost {floor_pct:.3g}% of the program's CPU, the functions share the remaining "
                  f"{max(args.budget - floor_pct, 0.0):.3g}% of the {args.budget:g}% budget\n\n")
        render(document, out, limit=args.limit)
    if not args.quiet and estimate["overhead_pct"] > args.budget:
        err.write(f"scope-otel plan: warning: what is recorded whatever the plan (request, SQL and other spans: "
                  f"{floor_pct:.3g}%, with the store writer) and the requests' handlers cost "
                  f"{estimate['overhead_pct']:.3g}% of the program's CPU in the observed runs, over the "
                  f"{args.budget:g}% budget: the governor will hold it by recording fewer requests, each whole\n")
    if not args.quiet:
        levels = estimate["levels"]
        where = "stdout" if args.output == "-" else args.output
        err.write(f"scope-otel plan: wrote {where} from the store: {len(known)} observed functions of "
                  f"{len(document['functions'])} ({levels['full']} full, {levels['boundaries']} boundaries, "
                  f"{levels['off']} off); estimated overhead {estimate['overhead_pct']:.3g}% (budget "
                  f"{args.budget:g}%, of which other spans {floor_pct:.3g}%); {totals.windows} windows of "
                  f"{totals.processes} processes\n")
    return 0
