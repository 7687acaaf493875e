"""Zero configuration on the example shop: ``scope-otel run -- python serve_shop.py`` with no plan, against the plain run.

    .venv/bin/python bench/bench_zeroconf.py [--runs 3] [--requests 300]

The shop (``examples/shop``, Flask + SQLAlchemy) is served by a script of its own
(``bench/zeroconf_app/serve_shop.py``, werkzeug's threaded server, one process) from ``examples/``
with no plan anywhere, so ``scope-otel run`` records the program's own code (the ``shop`` package
and the script's functions) at ``boundaries`` within the default budget.  Each run is a pair started
one after the other: the plain server (no scope-otel) and the same command under ``scope-otel run``,
each answering the same requests (``bench_services``' mix of listings, look-ups and orders) from two
clients after a warm-up.  Per-request overhead is the server's CPU time per request (the server and,
when recorded, the store writer it starts; read from /proc while the requests run) against the
plain run of its pair.  After the runs the store is asked how many function spans of the program's
own code it holds (by module), so "records function spans of the app's own code" is shown, not assumed.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_services as bs  # noqa: E402 - the same requests, CPU reading and store queries

SCRIPT = os.path.join(HERE, "zeroconf_app", "serve_shop.py")
CWD = os.path.join(bs.REPO, "examples")


def serve(requests: list[tuple], store: str, recorded: bool, warmup: int = 40, flags: tuple = ()) -> dict:
    """One server run: start, warm up, answer ``requests`` while its CPU is watched, SIGTERM."""
    port = bs._free_port()
    command = [sys.executable, SCRIPT, str(port)]
    args = [bs._tool("scope-otel"), "run", "--service_name", "shop-zeroconf", *flags, "--", *command] \
        if recorded else command
    log = tempfile.TemporaryFile("w+")
    # the shop importable in both runs (`scope-otel run` also puts the working directory on the path)
    proc = subprocess.Popen(args, cwd=CWD, env=bs._env(store, {"PYTHONPATH": CWD}), stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if bs._request(base, "GET", "/products") == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"the shop did not start: {log.read()[-2000:]}")
            time.sleep(0.1)
        for method, path, body in bs._script("shop", warmup):
            bs._request(base, method, path, body)
        time.sleep(3.0 if recorded else 0.5)  # the store writer's start is a fixed cost, not a request's
        first = bs._tree_cpu(proc.pid, store if recorded else None)
        last = dict(first)
        statuses: dict[int, int] = {}

        def client(mine: list) -> None:
            for method, path, body in mine:
                status = bs._request(base, method, path, body)
                statuses[status] = statuses.get(status, 0) + 1

        clients = [threading.Thread(target=client, args=(requests[i::2],)) for i in range(2)]
        for t in clients:
            t.start()
        while any(t.is_alive() for t in clients):
            last.update(bs._tree_cpu(proc.pid, store if recorded else None))
            for t in clients:
                t.join(0.5)
        last.update(bs._tree_cpu(proc.pid, store if recorded else None))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.seek(0)
    cpu = sum(last[pid] - first.get(pid, 0.0) for pid in last)
    writer = sum(last[pid] - first.get(pid, 0.0) for pid in last if pid < 0)
    return {"us": cpu / len(requests) * 1e6, "writer_us": writer / len(requests) * 1e6, "statuses": statuses,
            "log": log.read()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--level-off", action="store_true",
                        help="also run --level off (requests and SQL only) in each run, to show what the program's "
                             "functions add on top of them")
    args = parser.parse_args()
    from scope_otel import config as _config

    budget = _config.load(env={}).budget  # the default budget, as `scope-otel config` shows it
    requests = bs._script("shop", args.requests)
    work = tempfile.mkdtemp(prefix="bench-zeroconf-")
    store = os.path.join(work, "store")
    print(f"load average {os.getloadavg()[0]:.1f}; default budget {budget:g}%; {args.requests} requests per run")
    print(f"{'run':>3}  {'plain us/req':>12}  {'recorded us/req':>15}  {'(writer)':>8}  {'ratio':>6}  {'overhead':>8}  "
          f"{'w/o writer':>10}  within {budget:g}%" + ("  level off: overhead" if args.level_off else ""))
    met = 0
    ratios = []
    for i in range(args.runs):
        plain = serve(requests, store, recorded=False)
        recorded = serve(requests, store, recorded=True)
        ratio = recorded["us"] / plain["us"]
        ratios.append(ratio)
        within = (ratio - 1) * 100 <= budget
        met += within
        alone = (recorded["us"] - recorded["writer_us"]) / plain["us"]  # the server's own CPU only
        off = ""
        if args.level_off:
            sdk_only = serve(requests, os.path.join(work, "store-off"), recorded=True, flags=("--level", "off"))
            off = f"  {(sdk_only['us'] / plain['us'] - 1) * 100:+19.0f}%"
        print(f"{i + 1:>3}  {plain['us']:12.0f}  {recorded['us']:15.0f}  {recorded['writer_us']:8.0f}  {ratio:6.2f}  "
              f"{(ratio - 1) * 100:+7.0f}%  {(alone - 1) * 100:+9.0f}%  {'yes' if within else 'NO':>9}{off}",
              flush=True)
    print(f"median ratio {statistics.median(ratios):.2f}; within the {budget:g}% budget in {met} of {args.runs} runs")
    print("startup line:", next((line for line in recorded["log"].splitlines() if "scope-otel run:" in line),
                                "(not printed: stderr is not a terminal)"))
    rows = bs._query(store, "SELECT SpanAttributes['code.namespace'] AS module, count() AS spans FROM otel_traces "
                            "WHERE SpanAttributes['scope.kind'] = 'function' GROUP BY module ORDER BY spans DESC")
    print("function spans of the program's own code in the store:",
          ", ".join(f"{r['module']} {r['spans']}" for r in rows) or "NONE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
