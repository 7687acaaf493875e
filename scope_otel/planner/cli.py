"""``scope-otel plan``: analyse source and write an instrumentation plan.

::

    scope-otel plan [PATHS ...] [--budget PCT] [-o scope-otel.plan.json] [--explain]
                    [--include GLOB] [--exclude GLOB] [--pin GLOB=LEVEL]
                    [--counts FILE] [--profile -- CMD ...]
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
call counts are estimated from the source.  A plan is an estimate made
before the program runs; while it runs, the overhead governor
(:mod:`scope_otel.capture.governor`) holds recording to the budget.

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
import json
import os
import sys

from scope_otel.plan import LEVELS, save_plan


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, command = _split_command(argv)
    parser = _parser()
    args = parser.parse_args(own)
    if args.profile and not command:
        parser.error("--profile needs a command after '--', e.g. --profile -- python app.py")
    if command and not args.profile:
        parser.error("a command after '--' is only used with --profile")
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
    from scope_otel.planner.measure.profile import ProfileError, load_profile, run_profile
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
            profile = run_profile(command, baseline_run=not args.no_baseline_run, files=files)
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
    fixed, args_repr = 0.0, None
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
    else:  # per unit of work: no per-process start-up to charge
        calls, frequencies, baseline, meta = callgraph.static_frequencies(analysis), "static", None, None
    document = build_plan(
        analysis, calls, model, budget_pct=args.budget,
        overrides=Overrides(include=args.include, exclude=args.exclude, pin=pins),
        frequencies=frequencies, baseline_us=baseline, profile_meta=meta, fixed_us=fixed,
        args_repr_us=args_repr,
    )

    problem = save_plan(document, args.output, sys.stdout)
    if problem:
        err.write(f"scope-otel plan: {problem}\n")
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
