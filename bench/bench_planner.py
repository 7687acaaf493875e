"""Benchmark: plan Django's installed source tree end to end.

    .venv/bin/python bench/bench_planner.py            # whole django package
    .venv/bin/python bench/bench_planner.py --quick    # django/contrib only

Measured in the same run, on the same files:

* ``ast.parse`` of every file: the floor any AST-based planner pays;
* radon ``cc_visit`` (the usual Python complexity tool; cyclomatic
  complexity only, no patterns, call graph or plan) as the peer;
* scope-otel's analysis alone (patterns, complexity, call graph, recursion);
* ``scope-otel plan`` end to end in a fresh process (interpreter start,
  analysis, static frequencies, cost model from a fresh calibration, the
  budgeted choice, writing the JSON plan), progress shown on stderr.

Target from the issue: the end-to-end plan of Django in at most 15 s.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from scope_otel.planner.analysis import analyse  # noqa: E402
from scope_otel.planner.source import discover  # noqa: E402


def _django_dir(quick: bool) -> str:
    spec = importlib.util.find_spec("django")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("django is not installed: pip install -e '.[bench]'")
    base = list(spec.submodule_search_locations)[0]
    return os.path.join(base, "contrib") if quick else base


def _read_all(files) -> list[tuple[str, str]]:
    out = []
    for f in files:
        with open(f.path, "rb") as fh:
            out.append((f.path, fh.read().decode("utf-8", "replace")))
    return out


def _time(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def _parse_only(sources) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(1 for _p, text in sources if ast.parse(text) is not None)


def _radon(sources) -> int | None:
    try:
        from radon.complexity import cc_visit
    except ImportError:
        return None
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _path, text in sources:
            try:
                count += len(cc_visit(text))
            except Exception:
                pass
    return count


def _end_to_end(tree: str, out: str, cache: str) -> tuple[float, dict, str]:
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    cmd = [sys.executable, "-m", "scope_otel.launcher.cli", "plan", tree, "-o", out, "--budget", "5"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"scope-otel plan failed with {proc.returncode}")
    with open(out, encoding="utf-8") as fh:
        return elapsed, json.load(fh), " ".join(cmd[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="plan django/contrib only")
    args = parser.parse_args(argv)

    tree = _django_dir(args.quick)
    files, _ = discover([tree])
    sources = _read_all(files)
    print(f"tree: {tree} ({len(files)} files, {sum(len(t) for _p, t in sources) / 1e6:.1f} MB of source)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus\n")

    t_parse, parsed = _time(lambda: _parse_only(sources))
    t_radon, radon_blocks = _time(lambda: _radon(sources))
    t_analysis, analysis = _time(lambda: analyse([tree]))
    with tempfile.TemporaryDirectory() as tmp:
        t_e2e, doc, cmd = _end_to_end(tree, os.path.join(tmp, "plan.json"), os.path.join(tmp, "cache"))
        plan_bytes = os.path.getsize(os.path.join(tmp, "plan.json"))

    est = doc["estimate"]
    rows = [
        ("ast.parse only (floor)", f"{parsed} modules", t_parse),
        ("radon cc_visit (peer)", f"{radon_blocks} blocks" if radon_blocks is not None else "radon not installed",
         t_radon if radon_blocks is not None else None),
        ("scope-otel analysis", f"{len(analysis.functions)} functions", t_analysis),
        ("scope-otel plan end to end", f"{len(doc['functions'])} functions, {plan_bytes / 1e6:.1f} MB plan", t_e2e),
    ]
    peer = t_radon if radon_blocks is not None else None
    print(f"\n{'what':30} {'output':36} {'seconds':>8} {'vs radon':>9}")
    for name, output, seconds in rows:
        secs = f"{seconds:8.2f}" if seconds is not None else "       -"
        ratio = f"{seconds / peer:8.2f}x" if seconds is not None and peer else "        -"
        print(f"{name:30} {output:36} {secs} {ratio}")
    print(f"\ncommand: {cmd}")
    print(f"plan: {est['levels']} estimated overhead {est['overhead_pct']:.3g}% (budget 5%), "
          f"cost model: {est['cost_model']['source']}, calibrated in {est['cost_model']['calibration_s']:.2f}s")
    target = 15.0
    print(f"target: end to end <= {target:.0f} s: {'met' if t_e2e <= target else 'NOT met'} ({t_e2e:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
