"""Sustained recording under the overhead governor: a CPU-bound service stand-in for a minute at ``full``.

    .venv/bin/python bench/bench_governor.py [--seconds 60] [--budgets 10,50] [--rounds 1]

``governor_app/driver.py`` calls ``govapp.handle`` (nine instrumented calls per request, each one
a trace: the driver itself is not instrumented) for SECONDS seconds.  Each round runs it plainly
(the peer) and then, for each budget, under ``scope-otel run --instrument 'govapp*' --level full
--budget B`` into a fresh default store (embedded chDB).  Printed per run:

* requests and instrumented calls per second, and CPU time per request (this process' threads,
  the span processor's included; the store writer is a process of its own and not in it);
* the overhead: CPU per request against the plain run's, and wall throughput against it (the wall
  figure moves with whatever else the machine runs; the CPU figure much less);
* seconds of the run without a stored span (from ``otel_traces``, by second), the largest gap;
* what was not stored, from the summary: ring drops, calls of sampled-out traces, export failures,
  and the governor's changes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "governor_app")
BIN = os.path.dirname(sys.executable)


def _run(command: list[str], env: dict, timeout: float) -> tuple[dict, str]:
    proc = subprocess.run(command, cwd=APP, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _seconds_with_spans(store: str, start: float, end: float) -> tuple[int, int, int]:
    """(seconds of the run, seconds without a stored span, the longest run of such seconds)."""
    sql = ("SELECT toUInt32(toUnixTimestamp(Timestamp)) AS s, count() FROM otel_traces "
           "WHERE SpanName != 'scope-otel.governor' GROUP BY s ORDER BY s")
    proc = subprocess.run([os.path.join(BIN, "scope-otel"), "query", "--store", store, "--format", "csv", sql],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"query failed: {proc.stderr}")
    seen = set()
    for line in proc.stdout.splitlines():
        parts = line.replace('"', "").split(",")
        if parts and parts[0].isdigit():
            seen.add(int(parts[0]))
    seconds = list(range(int(start) + 1, int(end)))  # whole seconds inside the run
    missing = [s for s in seconds if s not in seen]
    longest = run = 0
    for s in seconds:
        run = run + 1 if s not in seen else 0
        longest = max(longest, run)
    return len(seconds), len(missing), longest


def _summary(stderr: str) -> dict:
    out = {"changes": sum(1 for line in stderr.splitlines() if line.startswith("scope-otel["))}
    for line in stderr.splitlines():
        line = line.strip()
        # the summary's lines (launcher/summary.py): what was not recorded, the ring, the governor
        for key, prefix in (("not_stored", "not recorded:"), ("ring", "capture queue:"),
                            ("governor", "overhead governor:")):
            if line.startswith(prefix):
                out[key] = line[len(prefix):].strip()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--budgets", default="10,50")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SCOPE_OTEL_"))}
    base_env["PATH"] = BIN + os.pathsep + base_env.get("PATH", "")
    timeout = args.seconds * 4 + 120
    rows = []
    for rnd in range(args.rounds):
        plain, _ = _run([sys.executable, "driver.py", str(args.seconds)], base_env, timeout)
        plain_cpu = plain["cpu_s"] / plain["requests"] * 1e6
        plain_rate = plain["requests"] / plain["seconds"]
        rows.append(("plain", rnd, plain, plain_cpu, None, None, None, {}))
        for budget in budgets:
            store = tempfile.mkdtemp(prefix="scope-otel-bench-governor-")
            env = dict(base_env, SCOPE_OTEL_STORE=store, SCOPE_OTEL_SUMMARY="true")
            got, err = _run([os.path.join(BIN, "scope-otel"), "run", "--instrument", "govapp*", "--level", "full",
                             "--budget", str(budget), "--", sys.executable, "driver.py", str(args.seconds)],
                            env, timeout)
            cpu = got["cpu_s"] / got["requests"] * 1e6
            gaps = _seconds_with_spans(store, got["start"], got["end"])
            rows.append((f"budget {budget:g}%", rnd, got, cpu, cpu / plain_cpu - 1,
                         plain_rate / (got["requests"] / got["seconds"]) - 1, gaps, _summary(err)))
    print(f"{'run':12s} {'round':>5s} {'req/s':>8s} {'calls/s':>9s} {'CPU us/req':>10s} {'CPU ovh':>8s} "
          f"{'wall ovh':>8s}  {'s w/o spans':>11s} {'max gap':>7s}")
    for name, rnd, got, cpu, ovh, wall, gaps, summary in rows:
        rate = got["requests"] / got["seconds"]
        print(f"{name:12s} {rnd:5d} {rate:8.0f} {rate * 9:9.0f} {cpu:10.2f} "
              f"{'' if ovh is None else f'{ovh:+.1%}':>8s} {'' if wall is None else f'{wall:+.1%}':>8s}  "
              f"{'' if gaps is None else f'{gaps[1]} of {gaps[0]}':>11s} {'' if gaps is None else gaps[2]:>7}")
        if summary:
            print(f"{'':18s}changes: {summary.get('changes')}; capture queue: {summary.get('ring')}; "
                  f"not recorded: {summary.get('not_stored')}")
            print(f"{'':18s}governor: {summary.get('governor')}")


if __name__ == "__main__":
    main()
