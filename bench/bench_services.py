"""Services planned from the store: per-request overhead of a `plan --from-store` plan against the plain server.

    .venv/bin/python bench/bench_services.py [--apps shop,django] [--budgets 2,5,20] [--runs 5]
                                             [--requests 300] [--train 400] [--sequential]

For each app, served by gunicorn with two workers and driven over HTTP by two
clients in this process (one per worker) (a fixed mix of listings, look-ups and orders, some of
them refused):

1. a training run under ``scope-otel run`` with no plan (the zero-configuration
   default: the app's own code at boundaries) into a fresh store, stopped by
   SIGTERM, which leaves every worker's per-function statistics there;
2. ``scope-otel plan --from-store --budget B`` for each budget;
3. for each budget, RUNS pairs: the plain server (no scope-otel at all) and the
   server under ``scope-otel run --plan P --budget B``, both up at once and
   each taking every request in turn after a warm-up, so that the pair shares
   whatever else loads the machine (``--sequential``: one after the other, as
   before 2026-12-07 22:00, when identical plain runs varied about 2x).

Per-request overhead is the server's CPU time per request (gunicorn's master,
its workers and, when instrumented, the store writer they start; read from
/proc while the requests run) of the instrumented run against the plain run
of its pair; client latency is shown beside it.  A budget is met when the
overhead is within it in at least 4 of the RUNS pairs.  After the runs of a
budget its store is asked, for every recorded trace holding a request
(SERVER) span, whether a function span of the app's own code is a direct
child of that span: the request's handler was recorded.

The shop is ``examples/shop`` (Flask + SQLAlchemy); the Django app is
``bench/services_app/catalog`` (Django ORM on SQLite).  The load-independent
figure (instructions per request, the WSGI app called in one process, under
callgrind) is ``bench/services_app/drive.py``'s.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
_TICK = os.sysconf("SC_CLK_TCK")
#: clients sending at once: one per worker, so both workers stay busy
CLIENTS = 2

APPS = {
    "shop": {"cwd": os.path.join(REPO, "examples"), "target": "shop.web:create_app()", "source": "shop",
             "health": "/products"},
    "django": {"cwd": os.path.join(HERE, "services_app"), "target": "catalog.wsgi:application",
               "source": "catalog", "health": "/products/"},
}


def _tool(name: str) -> str:
    return os.path.join(BIN, name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(store: str, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SCOPE_OTEL_"))}
    env.pop("PYTHONPATH", None)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["SCOPE_OTEL_STORE"] = store
    env.update(extra or {})
    return env


def _request(base: str, method: str, path: str, body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def _script(app: str, n: int) -> list[tuple]:
    """The same ``n`` requests for every run of ``app``: listings, look-ups, orders, some refused."""
    out = []
    for i in range(n):
        k = i % 10
        if app == "shop":
            if k < 4:
                out.append(("GET", "/products", None))
            elif k < 7:
                out.append(("GET", f"/orders/{1 + i % 5}", None))
            elif k < 9:
                # the seeded stock runs out after a few orders: later ones are refused (409), as the last kind
                out.append(("POST", "/orders", {"customer": f"c{i % 7}", "items": [
                    {"product_id": 1 + i % 2, "quantity": 1}]}))
            else:
                out.append(("POST", "/orders", {"customer": "x", "items": [{"product_id": 3, "quantity": 1}]}))
        else:
            if k < 3:
                out.append(("GET", "/products/", None))
            elif k < 6:
                out.append(("GET", f"/products/{1 + i % 20}/", None))
            elif k < 9:
                out.append(("POST", "/orders/", {"customer": ("vip" if i % 3 else "c") + str(i % 7),
                                                 "items": {str(1 + i % 20): 2, str(1 + (i * 7) % 20): 1}}))
            else:
                out.append(("POST", "/orders/", {"customer": "x", "items": {"1": 10 ** 7}}))
    return out


def _tree_cpu(root: int, store: str | None) -> dict[int, float]:
    """CPU seconds of ``root``, its descendants and the store writer of ``store`` (its pid negated)."""
    parents, cpu = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            pid = int(name)
            parents[pid] = int(fields[1])
            cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICK
        except (OSError, IndexError, ValueError):
            continue
    mine = {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                changed = True
    if store:
        for pid in parents:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except OSError:
                continue
            if b"scope_otel.store.writer" in cmd and store.encode() in cmd:
                mine.discard(pid)
                mine.add(-pid)
    return {pid: cpu[abs(pid)] for pid in mine if abs(pid) in cpu}


class _Server:
    """One gunicorn server of ``app`` (2 workers), plain or under ``scope-otel run``, answering."""

    def __init__(self, app: str, store: str, plan: str | None = None, budget: float | None = None,
                 instrumented: bool = True) -> None:
        spec = APPS[app]
        self.app, self.store, self.instrumented = app, store, instrumented
        port = _free_port()
        server = [_tool("gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10",
                  "--log-level", "warning", spec["target"]]
        extra = {"CATALOG_DB": os.path.join(os.path.dirname(store), f"catalog-{port}.db")}
        if app == "django":
            subprocess.run([sys.executable, "-m", "catalog.setup_db"], cwd=spec["cwd"], env=_env(store, extra),
                           check=True)
        if instrumented:
            args = [_tool("scope-otel"), "run", "--service_name", app]
            if plan:
                args += ["--plan", plan]
            if budget is not None:
                args += ["--budget", str(budget)]
            args += ["--", *server]
        else:
            args = server
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(args, cwd=spec["cwd"], env=_env(store, extra), stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if _request(self.base, "GET", spec["health"]) == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{app} did not start: {self.output()[-2000:]}")
            time.sleep(0.1)
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}

    def cpu(self) -> dict[int, float]:
        return _tree_cpu(self.proc.pid, self.store if self.instrumented else None)

    def mark(self) -> None:
        self.first = self.cpu()
        self.last = dict(self.first)

    def look(self) -> None:  # a process that ends meanwhile keeps what it spent
        self.last.update(self.cpu())

    def send(self, method: str, path: str, body: dict | None) -> None:
        t0 = time.perf_counter()
        status = _request(self.base, method, path, body)
        self.latencies.append(time.perf_counter() - t0)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def result(self, n: int) -> dict:
        last, first = self.last, self.first
        app_cpu = sum(last[pid] - first.get(pid, 0.0) for pid in last if pid > 0)
        writer_cpu = sum(last[pid] - first.get(pid, 0.0) for pid in last if pid < 0)
        ratios = {}
        for line in self.output().splitlines():  # the governor's lines: the last share of traces per worker
            m = re.match(r"scope-otel\[(\d+)\]: .*recording 1 in (\d+) traces", line)
            if m:
                ratios[m.group(1)] = int(m.group(2))
        return {"cpu_us_per_request": (app_cpu + writer_cpu) / n * 1e6, "writer_us_per_request": writer_cpu / n * 1e6,
                "latency_ms": statistics.mean(self.latencies) * 1000 if self.latencies else 0.0,
                "statuses": self.statuses, "last_ratios": sorted(ratios.values()),
                "changes": sum(1 for line in self.output().splitlines() if "recording cost" in line
                               or "is overflowing" in line)}


def _drive(servers: list[_Server], requests: list[tuple], warmup: int) -> None:
    """Warm every server up, then send each request to each server in turn (the order alternating), from
    CLIENTS threads, while the servers' CPU is watched: a pair of servers shares whatever else loads the
    machine while it is measured."""
    for server in servers:
        for method, path, body in _script(server.app, warmup):
            server.send(method, path, body)
        server.latencies.clear()
        server.statuses.clear()
    # the store writer's start (importing chDB, opening the store: ~1 s of CPU once per run) is a
    # fixed cost, not a request's: it is over before the requests are counted, as the governor does
    time.sleep(3.0 if any(s.instrumented for s in servers) else 0.5)
    for server in servers:
        server.mark()

    def client(offset: int) -> None:
        for i in range(offset, len(requests), CLIENTS):
            method, path, body = requests[i]
            for server in (servers if i % 2 == 0 else servers[::-1]):
                server.send(method, path, body)

    clients = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in clients:
        t.start()
    while any(t.is_alive() for t in clients):
        for server in servers:
            server.look()
        for t in clients:
            t.join(0.5)
    for server in servers:
        server.look()


def serve(app: str, requests: list[tuple], store: str, plan: str | None = None, budget: float | None = None,
          instrumented: bool = True, warmup: int = 40) -> dict:
    """One server run: start, warm up, answer ``requests`` while its CPU is watched, SIGTERM."""
    server = _Server(app, store, plan, budget, instrumented)
    try:
        _drive([server], requests, warmup)
    finally:
        server.stop()
    return server.result(len(requests))


def serve_pair(app: str, requests: list[tuple], store: str, plan: str | None, budget: float,
               warmup: int = 40) -> tuple[dict, dict]:
    """The plain server and the planned one up at once, each answering every request (``--paired``)."""
    plain = _Server(app, store + "-plain", instrumented=False)
    try:
        inst = _Server(app, store, plan, budget)
    except Exception:
        plain.stop()
        raise
    try:
        _drive([plain, inst], requests, warmup)
    finally:
        plain.stop()
        inst.stop()
    return plain.result(len(requests)), inst.result(len(requests))


def _query(store: str, sql: str) -> list[tuple]:
    out = subprocess.run([_tool("scope-otel"), "query", "--store", store, "--format", "json", sql],
                         capture_output=True, text=True, timeout=300, env=_env(store))
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def handlers_recorded(store: str) -> tuple[int, int]:
    """(recorded traces with a request span, of those with a function span right under it)."""
    rows = _query(store, """
        SELECT count() AS traces, countIf(handled) AS handled FROM (
            SELECT s.TraceId, max(f.SpanId != '') AS handled
            FROM (SELECT TraceId, SpanId FROM otel_traces WHERE SpanKind = 'SPAN_KIND_SERVER') AS s
            LEFT JOIN (SELECT TraceId, SpanId, ParentSpanId FROM otel_traces
                       WHERE SpanAttributes['scope.kind'] = 'function') AS f
              ON f.TraceId = s.TraceId AND f.ParentSpanId = s.SpanId
            GROUP BY s.TraceId)""")
    row = rows[0]
    return int(row["traces"]), int(row["handled"])


def plan_from_store(app: str, store: str, budget: float, out: str) -> str:
    spec = APPS[app]
    result = subprocess.run([_tool("scope-otel"), "plan", "--from-store", "--store", store, "--service", app,
                             "--budget", str(budget), "-o", out, "--explain", spec["source"]],
                            cwd=spec["cwd"], env=_env(store), capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return result.stderr.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", default="shop,django")
    parser.add_argument("--budgets", default="2,5,20")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--sequential", action="store_true",
                        help="the plain server, then the planned one (before 2026-12-07 22:00: the only way); "
                             "by default both are up at once and take each request in turn")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    work = tempfile.mkdtemp(prefix="bench-services-")
    summary = []
    try:
        for app in args.apps.split(","):
            training = os.path.join(work, f"{app}-train")
            t = serve(app, _script(app, args.train), training)
            print(f"{app}: training run (no plan, {args.train} requests): {t['cpu_us_per_request']:.0f} us CPU "
                  f"per request, statuses {t['statuses']}", flush=True)
            time.sleep(3)  # the store writer finishes the spool
            for budget in budgets:
                plan = os.path.join(work, f"{app}-{budget:g}.plan.json")
                line = plan_from_store(app, training, budget, plan)
                with open(plan) as fh:
                    levels = json.load(fh)["estimate"]["levels"]
                print(f"{app} {budget:g}%: {line}", flush=True)
                store = os.path.join(work, f"{app}-{budget:g}")
                ratios, lat, app_over = [], [], []
                for i in range(args.runs):
                    if args.sequential:
                        plain = serve(app, _script(app, args.requests), store + "-plain", instrumented=False)
                        inst = serve(app, _script(app, args.requests), store, plan=plan, budget=budget)
                    else:
                        plain, inst = serve_pair(app, _script(app, args.requests), store, plan, budget)
                    over = inst["cpu_us_per_request"] / plain["cpu_us_per_request"] - 1
                    app_only = (inst["cpu_us_per_request"] - inst["writer_us_per_request"]) / plain["cpu_us_per_request"] - 1
                    app_over.append(app_only)
                    lover = inst["latency_ms"] / plain["latency_ms"] - 1
                    ratios.append(over)
                    lat.append(lover)
                    print(f"  run {i + 1} (load {os.getloadavg()[0]:.1f}): plain {plain['cpu_us_per_request']:.0f} us CPU/request "
                          f"({plain['latency_ms']:.2f} ms), planned {inst['cpu_us_per_request']:.0f} us "
                          f"(store writer {inst['writer_us_per_request']:.0f} of it; {inst['latency_ms']:.2f} ms): "
                          f"overhead {over:+.1%} CPU ({app_only:+.1%} without the store writer), {lover:+.1%} latency "
                          f"[{'within' if over <= budget / 100 else 'OVER'}]; governor: {inst['changes']} changes, "
                          f"last 1 in {inst['last_ratios'] or [1]} traces", flush=True)
                time.sleep(3)
                traces, handled = handlers_recorded(store)
                met = sum(r <= budget / 100 for r in ratios)
                summary.append((app, budget, levels, ratios, lat, met, traces, handled, app_over))
                print(f"  {app} {budget:g}%: within the budget in {met} of {len(ratios)} runs "
                      f"({'met' if met >= 4 * len(ratios) / 5 else 'MISSED'}); median overhead "
                      f"{statistics.median(ratios):+.1%} CPU ({statistics.median(app_over):+.1%} without the store "
                      f"writer), {statistics.median(lat):+.1%} latency; request "
                      f"handler recorded in {handled} of {traces} recorded traces", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\napp     budget  plan f/b/off  CPU overhead per request, each run            met   "
          "median without writer  handler in traces")
    for app, budget, levels, ratios, lat, met, traces, handled, app_over in summary:
        runs = " ".join(f"{r:+.1%}" for r in ratios)
        print(f"{app:7s} {budget:5g}%  {levels['full']}/{levels['boundaries']}/{levels['off']:<8}  {runs:45s} "
              f"{met}/{len(ratios)}{' ' if met >= 4 * len(ratios) / 5 else '!'}  "
              f"{statistics.median(app_over):+.1%}{'':15s}  {handled}/{traces}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
