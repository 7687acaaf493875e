"""Added latency per request: scope-otel's integrations vs the contrib ones.

One Flask + SQLAlchemy app (two SQL statements and a few plain functions per
request), served by werkzeug in one single-threaded process, is hit with a
fixed number of sequential HTTP requests from this process.  Modes, all in
one run, interleaved over several rounds:

* ``uninstrumented``   — plain ``python``;
* ``contrib``          — ``opentelemetry-instrument`` with the contrib Flask
  and SQLAlchemy instrumentations (scope-otel's integrations disabled);
* ``scope``            — ``scope-otel run`` with the Flask and SQLAlchemy
  integrations (HTTP-client and hand-off integrations disabled, as the app
  has neither);
* ``scope+functions``  — as ``scope`` plus the app's functions instrumented
  by the import hook (``--instrument bench_http --level boundaries``).

Every instrumented mode runs the same pipeline (``opentelemetry-instrument``
loads scope-otel's configurator, the only one installed) and exports the same
way: OTLP/HTTP to a sink in this process that counts the spans it receives
(``--exporter none``: spans are made but not exported, which isolates the
instrumentation's own cost).  Besides client-side latency, the server
process's CPU time per request is reported (psutil): it is much less
disturbed by other load on the machine than latency is.  The contrib SQLAlchemy
instrumentation 0.66b1 refuses SQLAlchemy 2.1, so when the installed one is
newer every mode runs on SQLAlchemy 2.0 from ``bench/out/sa20`` (installed
there with pip on first use).

``--in-process`` measures instead the CPU per request with the WSGI app
called directly in one process per mode (no server, no export): the
instrumentation's own cost with the least noise.

Run: ``.venv/bin/python bench/bench_http.py`` (``--quick`` for a short run).
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
SA20 = os.path.join(HERE, "out", "sa20")
OURS = "scope_flask,scope_django,scope_sqlalchemy,scope_http_clients,scope_handoff"


# --------------------------------------------------------------------------
# the app (runs in the server process)
# --------------------------------------------------------------------------

def tax(price: float) -> float:
    return round(price * 1.2, 2)


def describe(item_id: int, name: str, price: float, stock: int) -> dict:
    return {"id": item_id, "name": name, "price": tax(price), "in_stock": stock > 0}


def load_item(conn, item_id: int) -> dict | None:
    import sqlalchemy as sa

    row = conn.execute(sa.text("SELECT id, name, price FROM items WHERE id = :id"), {"id": item_id}).first()
    if row is None:
        return None
    stock = conn.execute(sa.text("SELECT count(*) FROM stock WHERE item_id = :id"), {"id": item_id}).scalar()
    return describe(row.id, row.name, row.price, stock)


def build_app(db_path: str):
    import flask
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{db_path}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, price REAL)"))
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS stock (id INTEGER PRIMARY KEY, item_id INTEGER)"))
        conn.execute(sa.text("DELETE FROM items"))
        conn.execute(sa.text("DELETE FROM stock"))
        for i in range(1, 11):
            conn.execute(sa.text("INSERT INTO items VALUES (:i, :n, :p)"), {"i": i, "n": f"item{i}", "p": i * 1.5})
            conn.execute(sa.text("INSERT INTO stock (item_id) VALUES (:i)"), {"i": i})
    app = flask.Flask("bench_shop")

    @app.get("/items/<int:item_id>")
    def get_item(item_id: int):
        with engine.connect() as conn:
            item = load_item(conn, item_id)
        if item is None:
            flask.abort(404)
        return item

    return app


def serve(port: int, db_path: str) -> None:
    """Server process entry point."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    server = make_server("127.0.0.1", port, build_app(db_path), request_handler=Quiet)
    print("READY", flush=True)
    server.serve_forever()


def in_process(mode: str, calls: int, db_path: str) -> float:
    """Worker of ``--in-process``: CPU µs per request, WSGI called directly.

    A bare SDK ``TracerProvider`` (spans made, nothing exported), so only the
    instrumentation's own cost differs between modes.
    """
    import io

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    if mode == "contrib":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        FlaskInstrumentor().instrument()
        SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    elif mode == "scope":
        from scope_otel.instrumentors.flask import ScopeFlaskInstrumentor
        from scope_otel.instrumentors.sqlalchemy import ScopeSQLAlchemyInstrumentor

        ScopeFlaskInstrumentor().instrument()
        ScopeSQLAlchemyInstrumentor().instrument()
    app = build_app(db_path)
    base = {
        "REQUEST_METHOD": "GET", "SERVER_NAME": "bench", "SERVER_PORT": "80", "HTTP_HOST": "bench:80",
        "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": "bench",
    }

    def call(i: int) -> None:
        environ = dict(base, PATH_INFO=f"/items/{i % 10 + 1}", **{"wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr})
        body = app(environ, lambda status, headers, exc_info=None: None)
        b"".join(body)
        getattr(body, "close", lambda: None)()

    for i in range(calls // 5):
        call(i)
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for i in range(calls):
            call(i)
        best = min(best, (time.process_time() - start) / calls * 1e6)
    return best


def run_in_process(calls: int, sa_path: str | None, workdir: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (sa_path, HERE) if p))
    results = {}
    for mode in ("uninstrumented", "contrib", "scope"):
        code = "import sys, bench_http; print(bench_http.in_process(sys.argv[1], int(sys.argv[2]), sys.argv[3]))"
        out = subprocess.run(
            [sys.executable, "-c", code, mode, str(calls), os.path.join(workdir, f"{mode}.db")],
            env=env, capture_output=True, text=True, check=True,
        )
        results[mode] = float(out.stdout.strip().splitlines()[-1])
    base, contrib = results["uninstrumented"], results["contrib"] - results["uninstrumented"]
    print(f"in-process: WSGI app called directly, {calls} calls × 5, best run; bare SDK TracerProvider (no export)")
    print(f"{'mode':16s} {'CPU µs/req':>11s} {'added µs':>9s} {'÷contrib':>9s}")
    for mode, cpu in results.items():
        ratio = f"{(cpu - base) / contrib:9.2f}" if mode != "uninstrumented" and contrib > 0 else ""
        print(f"{mode:16s} {cpu:11.1f} {cpu - base:9.1f} {ratio:>9s}")


# --------------------------------------------------------------------------
# the harness
# --------------------------------------------------------------------------

class Sink:
    """OTLP/HTTP endpoint that counts received spans."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        sink = self
        self.spans = 0
        self.names: dict[str, int] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - stdlib API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for rs in request.resource_spans:
                    for ss in rs.scope_spans:
                        sink.spans += len(ss.spans)
                        for span in ss.spans:
                            sink.names[span.name] = sink.names.get(span.name, 0) + 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self) -> tuple[int, dict[str, int]]:
        counted, names = self.spans, dict(self.names)
        self.spans, self.names = 0, {}
        return counted, names


def ensure_sqlalchemy_20() -> str | None:
    """A folder to put first on PYTHONPATH so every mode runs SQLAlchemy 2.0."""
    import sqlalchemy

    if tuple(int(p) for p in sqlalchemy.__version__.split(".")[:2]) < (2, 1):
        return None
    if not os.path.isdir(os.path.join(SA20, "sqlalchemy")):
        print("installing SQLAlchemy 2.0 into bench/out/sa20 for the contrib peer ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", SA20, "sqlalchemy>=2.0,<2.1"],
            check=True,
        )
    return SA20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def modes(sink: Sink, with_functions: bool, exporter: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    python = [sys.executable, "-c", "import sys, bench_http; bench_http.serve(int(sys.argv[1]), sys.argv[2])"]
    otel = {
        "OTEL_SERVICE_NAME": "bench-http",
        "OTEL_TRACES_EXPORTER": exporter,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
    }
    scope_off = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "scope_http_clients,scope_handoff"}
    found = {
        "uninstrumented": (python, {}),
        "contrib": ([os.path.join(BIN, "opentelemetry-instrument"), *python], {**otel, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": OURS}),
        "scope": ([os.path.join(BIN, "scope-otel"), "run", "--", *python], {**otel, **scope_off}),
    }
    if with_functions:
        found["scope+functions"] = (
            [os.path.join(BIN, "scope-otel"), "run", "--instrument", "bench_http", "--level", "boundaries", "--", *python],
            {**otel, **scope_off},
        )
    return found


def run_mode(
    args: list[str], extra_env: dict[str, str], requests: int, warmup: int, workdir: str, sa_path: str | None
) -> tuple[list[float], float]:
    """Latencies of the measured requests, and server CPU seconds per request."""
    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SCOPE_OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (sa_path, HERE) if p)
    env["SCOPE_OTEL_STORE"] = os.path.join(workdir, "store")
    env.update(extra_env)
    port = _free_port()
    proc = subprocess.Popen(
        [*args, str(port), os.path.join(workdir, f"shop-{port}.db")],
        env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = proc.stdout.readline()
        while line and "READY" not in line:
            line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server did not start: {' '.join(args)}\n{proc.stdout.read()[-2000:]}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        server = psutil.Process(proc.pid)
        timings = []
        cpu_start = None
        for i in range(warmup + requests):
            if i == warmup:
                times = server.cpu_times()
                cpu_start = times.user + times.system
            path = f"/items/{i % 10 + 1}"
            start = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            conn.close()
            elapsed = time.perf_counter() - start
            if response.status != 200 or b"price" not in body:
                raise RuntimeError(f"bad response {response.status}: {body[:200]!r}")
            if i >= warmup:
                timings.append(elapsed)
        times = server.cpu_times()
        return timings, (times.user + times.system - cpu_start) / requests
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 300 requests")
    parser.add_argument("--requests", type=int, default=1500, help="measured requests per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-functions", action="store_true", help="skip the scope+functions mode")
    parser.add_argument(
        "--in-process", action="store_true",
        help="instead: CPU per request with the WSGI app called directly (no server, no export)",
    )
    parser.add_argument(
        "--exporter", choices=("otlp", "none"), default="otlp",
        help="otlp: every mode exports to the sink; none: spans are made but not exported (instrumentation cost only)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 300, 1
    warmup = max(50, args.requests // 10)
    sa_path = ensure_sqlalchemy_20()
    if args.in_process:
        workdir = tempfile.mkdtemp(prefix="bench-http-")
        try:
            run_in_process(300 if args.quick else 1000, sa_path, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    sink = Sink()
    table = modes(sink, not args.no_functions, args.exporter)
    workdir = tempfile.mkdtemp(prefix="bench-http-")
    medians: dict[str, list[float]] = {name: [] for name in table}
    p99s: dict[str, list[float]] = {name: [] for name in table}
    cpus: dict[str, list[float]] = {name: [] for name in table}
    spans: dict[str, int] = {}
    try:
        for round_no in range(args.rounds):
            for name, (cmd, env) in table.items():
                timings, cpu = run_mode(cmd, env, args.requests, warmup, workdir, sa_path)
                cpus[name].append(cpu * 1e6)
                time.sleep(0.3)  # the last export batch
                counted, names = sink.take()
                spans[name] = counted
                medians[name].append(statistics.median(timings) * 1e6)
                p99s[name].append(sorted(timings)[int(len(timings) * 0.99) - 1] * 1e6)
                top = ", ".join(f"{k}×{v}" for k, v in sorted(names.items(), key=lambda kv: -kv[1])[:4])
                print(
                    f"round {round_no + 1} {name:16s} median {medians[name][-1]:8.1f} µs  "
                    f"server CPU {cpus[name][-1]:7.1f} µs/req  spans {counted} ({top})",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    import sqlalchemy

    sa_version = "2.0 (bench/out/sa20)" if sa_path else sqlalchemy.__version__
    base = statistics.median(medians["uninstrumented"])
    cpu_base = statistics.median(cpus["uninstrumented"])
    contrib_added = statistics.median(medians["contrib"]) - base
    contrib_cpu = statistics.median(cpus["contrib"]) - cpu_base
    print()
    print(
        f"{args.requests} sequential requests × {args.rounds} round(s) per mode, warm-up {warmup}; "
        f"Python {sys.version.split()[0]}, SQLAlchemy {sa_version}; exporter {args.exporter}; medians over rounds"
    )
    print(
        f"{'mode':16s} {'latency':>9s} {'p99':>9s} {'added':>8s} {'÷contrib':>8s}"
        f" {'srv CPU':>9s} {'added':>8s} {'÷contrib':>8s} {'spans/req':>9s}"
    )
    print(f"{'':16s} {'µs (med)':>9s} {'µs':>9s} {'µs':>8s} {'':>8s} {'µs/req':>9s} {'µs':>8s}")
    for name in table:
        med = statistics.median(medians[name])
        cpu = statistics.median(cpus[name])
        added, cpu_added = med - base, cpu - cpu_base
        peer = name != "uninstrumented"
        ratio = f"{added / contrib_added:8.2f}" if peer and contrib_added > 0 else ""
        cpu_ratio = f"{cpu_added / contrib_cpu:8.2f}" if peer and contrib_cpu > 0 else ""
        print(
            f"{name:16s} {med:9.1f} {statistics.median(p99s[name]):9.1f} {added:8.1f} {ratio:>8s}"
            f" {cpu:9.1f} {cpu_added:8.1f} {cpu_ratio:>8s} {spans.get(name, 0) / (args.requests + warmup):9.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
