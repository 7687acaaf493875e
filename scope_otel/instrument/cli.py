"""``scope-otel compile``: build the rewritten-bytecode cache ahead of time.

    scope-otel compile --plan scope-otel.plan.json src/
    scope-otel compile --instrument 'shop.*' --level full examples/
    scope-otel compile            # no plan: the program's own code, as `scope-otel run` records it

Each PATH is a ``.py`` file or a directory searched recursively; a file's
module name is found by walking up through packages (``__init__.py``).
Modules the plan does not want are skipped.  Cache entries are the ones the
import hook reads (see :mod:`scope_otel.instrument.cache`), so a read-only
deployment can ship them pre-built.  Exit status 1 when a planned module
could not be rewritten (the reasons are printed), 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Iterator

from scope_otel.instrument import cache
from scope_otel.instrument.exclusions import never_instrumented
from scope_otel.instrument.hook import ImportHook
from scope_otel.instrument.own import module_name
from scope_otel.plan import LEVELS


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scope-otel compile``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="scope-otel compile", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=["."], metavar="PATH")
    parser.add_argument("--plan", help="plan file (default: the configured plan, else scope-otel.plan.json in the "
                                       "working directory or the project root)")
    parser.add_argument("--instrument", action="append", default=[], metavar="GLOB",
                        help="module glob to instrument without a plan (repeatable)")
    parser.add_argument("--level", default="full", choices=LEVELS,
                        help="level for --instrument (default: full)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    args = parser.parse_args(argv)

    from scope_otel.plan import Plan, PlanError, load_plan

    try:
        if args.plan:
            plan = load_plan(args.plan)
        elif args.instrument:
            plan = Plan.from_globs(args.instrument, args.level)
        else:
            from scope_otel import config

            cfg = config.current()
            if cfg.plan:
                plan = load_plan(cfg.plan)
                if not args.quiet:
                    print(f"plan {cfg.plan} ({cfg.source('plan')})", file=sys.stderr)
            elif cfg.instrument:
                plan = Plan.from_globs(list(cfg.instrument), cfg.level)
            elif cfg.level == "off" and cfg.source("level") != "default":
                parser.error("nothing to compile: level = off; give --plan FILE or --instrument GLOB")
            else:
                # what `scope-otel run` records with no plan: the program's own code, at boundaries
                from scope_otel.instrument.own import own_code_globs

                globs = own_code_globs([], os.getcwd())
                if not globs:
                    parser.error("nothing to compile: no plan and no modules of the program's own in the working "
                                 "directory; give --plan FILE or --instrument GLOB")
                plan = Plan.from_globs(globs, "boundaries")
                if not args.quiet:
                    shown = ", ".join(g for g in globs if not g.endswith(".*"))
                    print(f"no plan: the program's own code ({shown}) at boundaries, as `scope-otel run` records "
                          "it with no plan", file=sys.stderr)
    except PlanError as exc:
        print(f"scope-otel compile: {exc}", file=sys.stderr)
        return 2

    hook = ImportHook(plan)
    hook.force_write = True  # asked for explicitly, like compileall
    written = failed = 0
    for path, module in _modules(args.paths):
        if never_instrumented(module) or not plan.wants_module(module):
            continue
        with open(path, "rb") as fh:
            source = fh.read()
        if hook.code_for(module, os.path.abspath(path), source) is None:
            if module in hook.failed:
                failed += 1
                print(f"FAILED {module}: {hook.failed[module]}", file=sys.stderr)
            continue
        written += 1
        if not args.quiet:
            what = "compiled" if module in hook.rewritten else "cached (nothing planned)"
            print(f"{what} {module} -> {cache.cache_path(os.path.abspath(path), hook.plan_hash)}")
    if not args.quiet:
        print(f"{written} module(s) compiled, {failed} failed")
    return 1 if failed else 0


def _modules(paths: list[str]) -> Iterator[tuple[str, str]]:
    for top in paths:
        if os.path.isfile(top):
            yield top, module_name(top)
            continue
        for root, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    yield path, module_name(path)


