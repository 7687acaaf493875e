"""``scope-otel plan``: analyse source and write an instrumentation plan.

::

    scope-otel plan [PATHS ...] [--budget PCT] [-o scope-otel.plan.json] [--explain]
                    [--include GLOB] [--exclude GLOB] [--pin GLOB=LEVEL]
                    [--counts FILE] [--profile [--trial] -- CMD ...]
                    [--from-store [--since DURATION] [--service NAME]]

``--from-store`` plans from the calls that earlier runs under ``scope-otel
run`` observed (:mod:`scope_otel.planner.observed`).

PATHS are files, packages or source roots (default: the directory of the
profiled script, else the current directory).  ``--budget`` is the overhead
allowed, as a percentage of CPU run time (default 5), priced with costs
measured on this machine for the exporter that will be used (``--exporter``,
default the configured ``traces_exporter``).

``--profile -- CMD`` runs CMD once plainly (for its run time) and once under
a call counter, and plans with the real counts (saved to ``--counts-out``,
default ``<plan>.counts.json``; reuse them with ``--counts``).  Without it,
call counts are estimated from the source.  ``--trial`` runs CMD under
``scope-otel run`` in pairs (without a plan, and with every called function
at ``boundaries``) and prices a recorded call from the difference, which
sees what microbenchmarks cannot (the exporter's real work, GC over the
program's heap); then it runs the plan it made the same way and, if that
costs more, or less, than its runs can tell from their noise, reprices and
plans again; a plan made with higher prices is run in turn, up to three
(five pairs per trial, up to fifteen for a plan's own trial while its runs
cannot tell its cost from the estimate: 20 to 130 runs of CMD in all, plus
five plain runs for the run time); see
:mod:`scope_otel.planner.trial`.  After a first pair, the two runs of a pair
start together, so a shared machine's drifting speed moves both; a command
that cannot run twice at once is detected (the pair exits differently) and
run one at a time, or ask for that with ``--sequential-trial``.

Globs are over ``module:qualname``; a glob without ``:`` means whole
modules.  Precedence: ``--pin`` > ``--exclude`` > ``--include`` > the
optimiser.  ``--explain`` prints why each function got its level.

Files that cannot be read or parsed are reported on stderr and skipped; the
plan is still written.  Exit status: 0 written; 2, with one line on stderr
and any existing plan left as it was, for bad arguments, a path that does not
exist, no Python functions under the paths, a profiled command that failed
(any status but 0 or a stop by SIGTERM/SIGINT) or made no calls to them, or an
unwritable output file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

from scope_otel.plan import LEVELS


#: Exit statuses of a profiled command that ended as servers do: SIGTERM or SIGINT (or their shell
#: statuses), besides 0.  Its counts are whole: the counter writes them before SIGTERM acts.
_STOPPED = frozenset({0, -15, -2, 143, 130})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scope-otel plan",
        description="Analyse Python source (without importing it) and write an instrumentation plan.",
        epilog="Run a workload for real call counts: scope-otel plan src/ --profile -- python app.py",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files, packages or source roots to analyse")
    p.add_argument("--budget", type=float, default=5.0, metavar="PCT",
                   help="allowed overhead in percent of run time (default: 5)")
    p.add_argument("-o", "--output", default="scope-otel.plan.json", metavar="FILE",
                   help="plan file to write ('-' for stdout; default: scope-otel.plan.json)")
    p.add_argument("--explain", action="store_true", help="print a table: function, patterns, complexity, calls, level, reason")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N rows with --explain")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="always record matching functions (at least boundaries)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="never record matching functions")
    p.add_argument("--pin", action="append", default=[], metavar="GLOB=LEVEL",
                   help=f"fix the level of matching functions ({', '.join(LEVELS)})")
    p.add_argument("--profile", action="store_true",
                   help="run the command after '--' twice (plain, then counted) and plan with its real call counts")
    p.add_argument("--no-baseline-run", action="store_true",
                   help="with --profile, run the command once only (its run time is then estimated)")
    p.add_argument("--trial", action="store_true",
                   help="with --profile: also run the command under scope-otel without a plan and with the "
                        "profiled functions at boundaries, and price recording from the difference "
                        "(catches what microbenchmarks cannot: export, GC of a large heap)")
    p.add_argument("--sequential-trial", action="store_true",
                   help="with --trial: run the pairs one after the other, never two at once (for a command that "
                        "cannot run twice at the same time; the trial is then noisier)")
    p.add_argument("--from-store", action="store_true",
                   help="plan from the calls that runs under `scope-otel run` observed (the store's per-function "
                        "statistics) instead of estimating them; see scope_otel.planner.observed")
    p.add_argument("--since", metavar="DURATION", help="with --from-store: only the last DURATION (90s, 30m, 2h, 7d)")
    p.add_argument("--service", metavar="NAME", help="with --from-store: only this service's runs")
    p.add_argument("--store", metavar="URL", help="with --from-store: the store (default: the configured one)")
    p.add_argument("--database", metavar="NAME", help="with --from-store: its database (default: the configured one)")
    p.add_argument("--counts", metavar="FILE", help="use call counts saved by an earlier --profile")
    p.add_argument("--counts-out", metavar="FILE", help="where --profile saves its counts (default: <plan>.counts.json)")
    p.add_argument("--exporter", choices=("otlp", "clickhouse", "console", "none"),
                   help="exporter whose per-span cost to count (default: the configured traces_exporter)")
    p.add_argument("--recalibrate", action="store_true", help="measure the cost model again instead of using the cache")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary on stderr")
    return p


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def _default_paths(command: list[str]) -> list[str]:
    """Guess the application's source from the profiled command."""
    for i, arg in enumerate(command):
        if arg.endswith(".py") and os.path.isfile(arg):
            return [os.path.dirname(os.path.abspath(arg))]
        if arg == "-m" and i + 1 < len(command):
            top = command[i + 1].split(".")[0]
            if os.path.isdir(top) or os.path.isfile(top + ".py"):
                return [top if os.path.isdir(top) else top + ".py"]
    return ["."]


def _pins(values: list[str], parser: argparse.ArgumentParser) -> dict:
    pins: dict = {}
    for value in values:
        glob, sep, level = value.rpartition("=")
        if not sep or not glob or level not in LEVELS:
            parser.error(f"--pin {value!r}: expected GLOB=LEVEL with LEVEL one of {', '.join(LEVELS)}")
        pins.pop(glob, None)  # re-pinning moves the glob last: the last pin wins
        pins[glob] = level
    return pins


def _trial(command, analysis, calls, model, profile, meta, args, err):
    """The cost model corrected by a trial run of the command (see :mod:`scope_otel.planner.trial`)."""
    from scope_otel.planner import trial
    from scope_otel.planner.orchestrator import Overrides, build_plan

    # one exact pin per called function (a "*" pin would reach every module the program imports)
    pins = {key: "boundaries" for key in analysis.functions if calls.get(key, 0) > 0}
    every_called = build_plan(analysis, calls, model, budget_pct=100.0, overrides=Overrides(pin=pins),
                              frequencies="profile", baseline_us=profile.baseline_us,
                              args_repr_us=profile.arg_cost_for(analysis.functions))
    if not args.quiet:
        err.write("scope-otel plan: trial: running the command under scope-otel, without and with recording\n")
    try:
        result = trial.measure(command, every_called, calls, model, profile.processes,
                               side_by_side=not args.sequential_trial)
    except (OSError, subprocess.SubprocessError) as exc:
        err.write(f"scope-otel plan: trial failed ({exc}); using the microbenchmark costs\n")
        return model, meta, None
    if result is None:
        if not args.quiet:
            err.write(f"scope-otel plan: trial: fewer than {trial.MIN_CALLS} recorded calls; "
                      "using the microbenchmark costs\n")
        return model, meta, None
    if not args.quiet:
        err.write(f"scope-otel plan: trial: {result.per_call_us:.2f} us per recorded call "
                  f"(microbenchmarks: {result.model_per_call_us:.2f} us)\n")
        step = result.gc_step
        if step is not None:
            err.write(f"scope-otel plan: trial: recording brings on a full collection of {step.full_us / 1000:.1f} ms "
                      f"after {step.headroom:.1f} young collections, {step.per_call * 1000:.1f} per 1000 calls "
                      f"(the trial's cost {result.gc_us / 1000:.1f} ms of it)\n")
        else:
            err.write(f"scope-otel plan: trial: no collector step priced ({result.gc_note})\n")
    return trial.calibrated(model, result), dict(meta, trial=result.as_dict()), result.gc_step


def _collector_rescaled(step, document, paired):
    """``step`` with its collections per call scaled up to what ``document``'s runs started, when they
    started more than the tolerance beyond the estimate (a request handler recorded at full allocates
    more than the average call of the trial at boundaries); else ``step`` itself."""
    from scope_otel.planner import gcstep, trial

    if step is None or paired is None:
        return step
    observed = gcstep.observed_triggers(list(paired.noplan_gc), list(paired.planned_gc))
    predicted = document["estimate"].get("gc", {}).get("collections", 0.0)
    if observed is None or predicted <= 0 or observed <= 0:
        return step
    if observed - predicted < gcstep.MIN_TRIGGERS or observed < step.headroom / 4:
        # a few collections more or less is run-to-run jitter (threads, timing), and far from the
        # step they change nothing: acc_app's tiny plan, 0.3 estimated and a few seen, scaled x6
        return step
    factor = trial.within_limits(observed / predicted)
    if factor <= 1.0 + trial.RESCALE_TOLERANCE:
        # only ever up: an average over the plan's calls, and a smaller one let the next, unmeasured plan
        # take functions that allocate more (the shop's 5 % plans went x1.9, x2.1, then x0.35)
        return step
    return dataclasses.replace(step, per_call=step.per_call * factor)


def _trial_of_the_plan(command, document, model, meta, plan_with, args, err, step=None):
    """Run the plan itself; if it costs more or less than estimated, reprice per call and plan again.

    Its runs also count the young collections recording started: more than
    the estimate said scales the collector step's collections per call up
    (:func:`_collector_rescaled`).  A plan made again that records no more is
    run in turn, and repriced again while it costs more than estimated, up to
    :data:`~scope_otel.planner.trial.MAX_REPRICES` times (a price per call is
    an average: the functions a smaller plan keeps can cost more per call than
    the ones it dropped).  One that records more (made with lower prices) is
    run too, and kept only if its runs put it within the budget; otherwise the
    plan before it stands.  When it is kept, one price factor is fitted to
    both runs and the plan made with it, so that the estimate agrees with what
    was measured (kept if it records no more).
    """
    from scope_otel.planner import trial

    def measured(doc, until):
        if not trial.recorded(doc):
            return None
        try:
            return trial.paired_cpu_s(command, doc, until=until, side_by_side=not args.sequential_trial)
        except (OSError, subprocess.SubprocessError) as exc:
            err.write(f"scope-otel plan: trial of the plan failed ({exc}); keeping it\n")
            return None

    def summary(doc, paired, factor):
        return {"measured_us": round(paired.cost_us, 1), "interval_us": [round(paired.low_us, 1),
                round(paired.high_us, 1)], "pairs": paired.pairs, "side_by_side": paired.side_by_side,
                "gc_us": round(paired.gc_us, 1), "estimated_us": doc["estimate"]["overhead_us"],
                "estimated_gc_us": doc["estimate"].get("gc_us", 0.0),
                "factor": round(factor, 3)}

    budget_us = document["estimate"]["baseline_us"] * args.budget / 100.0
    trials = dict(meta["trial"], plans=[])
    for attempt in range(trial.MAX_REPRICES):
        # pairs are added while the runs cannot tell the plan's cost from its estimate, nor half as much
        # again, nor which side of the budget it is on
        settled = trial.settled(document["estimate"]["overhead_us"])
        first = measured(document, lambda paired: settled(paired) and not paired.agrees_with(budget_us))
        if first is None:
            return document
        scaled, factor = trial.rescaled(model, document, first, over_budget=first.cost_us > budget_us)
        new_step = _collector_rescaled(step, document, first)
        if factor == 1.0 and new_step is step:
            return document
        if not args.quiet:
            err.write(f"scope-otel plan: trial: the plan cost {first.cost_us / 1000:.1f} ms ({first.pairs} pairs, "
                      f"median within {first.low_us / 1000:.1f}..{first.high_us / 1000:.1f}; full collections "
                      f"{first.gc_us / 1000:.1f} ms of it), estimated {document['estimate']['overhead_us'] / 1000:.1f} "
                      f"ms (full collections {document['estimate'].get('gc_us', 0.0) / 1000:.1f}); planning again "
                      f"with per-call prices x{factor:.2f}"
                      + (f", collections per call x{new_step.per_call / step.per_call:.2f}" if new_step is not step
                         else "") + "\n")
        trials.setdefault("first_plan", summary(document, first, factor))
        trials["plans"].append(summary(document, first, factor))
        step = new_step
        again = plan_with(scaled, dict(meta, trial=trials), step)
        if trial.recorded(again) == trial.recorded(document):
            return again
        if trial.records_no_more(again, document):
            if attempt + 1 == trial.MAX_REPRICES and not args.quiet:
                err.write(f"scope-otel plan: trial: repriced {trial.MAX_REPRICES} times; keeping the last plan "
                          "without running it\n")
            document, model = again, scaled
            continue
        return _larger_plan(document, first, again, model, factor, trials, meta, budget_us,
                            lambda m, mt: plan_with(m, mt, step), measured, summary, args, err)
    return document


def _larger_plan(document, first, again, model, factor, trials, meta, budget_us, plan_with, measured, summary,
                 args, err):
    """``again``, made with prices lowered by ``factor``, records more than ``document``: kept only if its
    runs put it within the budget."""
    from scope_otel.planner import trial

    # Its whole interval must lie under the budget, pairs added while the interval holds the budget.  A
    # median under the budget is not enough: the shop's runs vary by more than its 5 % plan costs, and a
    # 5 % plan recording 20 of its 21 functions measured 8.6 %.
    second = measured(again, lambda paired: not paired.agrees_with(budget_us))
    if second is None or second.high_us > budget_us:
        if not args.quiet and second is not None:
            err.write(f"scope-otel plan: trial: the larger plan cost {second.cost_us / 1000:.1f} ms (median within "
                      f"{second.low_us / 1000:.1f}..{second.high_us / 1000:.1f}; full collections "
                      f"{second.gc_us / 1000:.1f} ms of it), not clearly within the budget's "
                      f"{budget_us / 1000:.1f} ms; keeping the plan before it\n")
        return document
    # Both runs priced with one factor: the estimate then agrees with what the kept plan measured.
    fixed = document["estimate"]["fixed_us"]
    points = [(trial.variable_us(document), first.cost_us - fixed - first.gc_us),
              (trial.variable_us(again) / factor, second.cost_us - fixed - second.gc_us)]
    fitted = trial.fitted_factor(points)
    trials["second_plan"] = summary(again, second, fitted)
    final = plan_with(trial.scaled_by(model, fitted), dict(meta, trial=trials))
    return final if trial.records_no_more(final, again) else again


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, command = _split_command(argv)
    parser = _parser()
    args = parser.parse_args(own)
    if args.profile and not command:
        parser.error("--profile needs a command after '--', e.g. --profile -- python app.py")
    if command and not args.profile:
        parser.error("a command after '--' is only used with --profile")
    if args.trial and not args.profile:
        parser.error("--trial needs --profile (it runs the profiled command)")
    if args.sequential_trial and not args.trial:
        parser.error("--sequential-trial is an option of --trial")
    if args.profile and args.counts:
        parser.error("use either --profile or --counts, not both")
    if args.budget < 0:
        parser.error("--budget must be >= 0")
    if args.from_store and (args.profile or args.counts):
        parser.error("--from-store plans from the store's observed calls: not with --profile or --counts")
    if not args.from_store and (args.since or args.service or args.store or args.database):
        parser.error("--since, --service, --store and --database are options of --from-store")
    pins = _pins(args.pin, parser)
    if args.from_store:
        from scope_otel.planner.observed import plan_from_store

        return plan_from_store(args, pins)

    # Heavy imports only once arguments are known to be fine.
    from scope_otel.planner import callgraph
    from scope_otel.planner.analysis import analyse
    from scope_otel.planner.costmodel import calibrate
    from scope_otel.planner.explain import render
    from scope_otel.planner.orchestrator import Overrides, build_plan
    from scope_otel.planner.profile import ProfileError, load_profile, run_profile
    from scope_otel.planner.progress import Progress
    from scope_otel.planner.source import discover

    err = sys.stderr

    def fail(message: str) -> int:
        """One line, status 2, nothing written: an existing plan stays as it was."""
        err.write(f"scope-otel plan: error: {message}\n")
        return 2

    paths = args.paths or _default_paths(command)
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        return fail(f"{', '.join(missing)}: not found (give the application's source files or directories)")
    profile = None
    if args.profile:
        if not args.quiet:
            err.write(f"scope-otel plan: profiling {' '.join(command)}\n")
        try:
            files = [f.path for f in discover(paths)[0]]
            # the trial prices recording against this run time: the median of five, as the trial's own pairs
            profile = run_profile(command, baseline_run=not args.no_baseline_run, files=files,
                                  baseline_runs=5 if args.trial else 1)
        except ProfileError as exc:
            return fail(str(exc))
        if profile.returncode not in _STOPPED:
            return fail(f"the profiled command exited with status {profile.returncode}; no plan written "
                        "(its counts would describe a failed run)")
    elif args.counts:
        try:
            profile = load_profile(args.counts)
        except ProfileError as exc:
            return fail(str(exc))

    progress = Progress(err) if not args.quiet else None
    analysis = analyse(paths, progress=progress)
    if progress is not None:
        progress.close()
    for skipped in analysis.skipped:
        err.write(f"scope-otel plan: skipped {skipped.path}: {skipped.reason}\n")
    if not analysis.functions:
        return fail(f"no Python functions found under {', '.join(paths)}")

    model = calibrate(refresh=args.recalibrate, exporter=args.exporter)
    fixed, args_repr, gc_step = 0.0, None, None
    if profile is not None:
        calls = profile.counts_for(analysis.functions)
        if not any(calls.values()):
            return fail(f"the {'profiled command' if args.profile else 'counts in ' + args.counts} made no calls "
                        f"to the {len(analysis.functions)} functions under {', '.join(paths)} (is that the "
                        "program's source?)")
        if args.profile:
            counts_out = args.counts_out or (
                (args.output if args.output != "-" else "scope-otel.plan.json").removesuffix(".json")
                + ".counts.json")
            profile.save(counts_out)
        frequencies, baseline, meta = "profile", profile.baseline_us, profile.meta()
        fixed = model.startup_us * max(profile.processes, 1)
        args_repr = profile.arg_cost_for(analysis.functions)
        if args.trial:
            model, meta, gc_step = _trial(command, analysis, calls, model, profile, meta, args, err)
    else:  # per unit of work: no per-process start-up to charge
        calls, frequencies, baseline, meta = callgraph.static_frequencies(analysis), "static", None, None
    def plan_with(model, meta, gc_step=gc_step):
        return build_plan(
            analysis, calls, model, budget_pct=args.budget,
            overrides=Overrides(include=args.include, exclude=args.exclude, pin=pins),
            frequencies=frequencies, baseline_us=baseline, profile_meta=meta, fixed_us=fixed,
            args_repr_us=args_repr, gc_step=gc_step,
        )

    document = plan_with(model, meta)
    if args.trial and meta and "trial" in meta:
        document = _trial_of_the_plan(command, document, model, meta, plan_with, args, err, gc_step)

    text = json.dumps(document, indent=1, sort_keys=False, ensure_ascii=False) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        tmp = args.output + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, args.output)
        except OSError as exc:
            err.write(f"scope-otel plan: cannot write {args.output}: {exc.strerror or exc}\n")
            return 2
    if args.explain:
        render(document, sys.stdout if args.output != "-" else err, limit=args.limit)
    if not args.quiet:
        est = document["estimate"]
        levels = est["levels"]
        where = "stdout" if args.output == "-" else args.output
        err.write(
            f"scope-otel plan: wrote {where}: {len(document['functions'])} functions in "
            f"{len(analysis.modules)} modules ({levels['full']} full, {levels['boundaries']} boundaries, "
            f"{levels['off']} off); estimated overhead {est['overhead_pct']:.3g}% (budget {args.budget:g}%, "
            f"{frequencies} frequencies); analysis {analysis.seconds:.1f}s, "
            f"{len(analysis.skipped)} skipped; costs: {model.source}"
            f"{' (cached)' if model.cached else ''}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
