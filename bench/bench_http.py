"""Added latency per request: scope-otel's integrations vs the contrib ones.

One Flask + SQLAlchemy app (two SQL statements and a few plain functions per
request), served by werkzeug in one single-threaded process, is hit with a
fixed number of sequential HTTP requests from this process.  Modes, all in
one run, interleaved over several rounds:

* ``uninstrumented``   — plain ``python``;
* ``contrib``          — the stock contrib setup: ``opentelemetry-instrument``
  from a separate virtualenv, ``bench/out/contrib``, made by this script on
  first use with opentelemetry-distro, the contrib Flask and SQLAlchemy
  instrumentations and opentelemetry-exporter-otlp (and no scope-otel), so
  the distro's configurator runs: ``BatchSpanProcessor`` + the SDK's
  OTLP/HTTP exporter, exactly what a contrib user gets;
* ``scope``            — ``scope-otel run`` (the product as shipped: its own
  span pipeline and exporter) with the Flask and SQLAlchemy integrations
  (HTTP-client and hand-off integrations disabled, as the app has neither);
* ``scope+functions``  — as ``scope`` plus the app's functions instrumented
  by the import hook (``--instrument bench_http --level boundaries``).

Both products export OTLP/HTTP to the same sink in this process, which counts
the spans it receives (``--exporter none``: spans are made but not exported).
Besides client-side latency, the server process's CPU time per request is
reported (psutil): it is much less disturbed by other load on the machine
than latency is.  It is read once the sink has gone quiet (at least 6 s after
the last request: the SDK's ``BatchSpanProcessor`` sends a partial batch only
after 5 s), so every mode is charged for exporting all its spans.  Every mode runs the same Flask, Werkzeug and SQLAlchemy
versions (each server reports them and the run stops on a mismatch): the
contrib virtualenv gets the main environment's Flask and Werkzeug, and
SQLAlchemy 2.0 (contrib-sqlalchemy 0.66b1 refuses 2.1); when the main
environment has another SQLAlchemy, the other modes run the contrib
virtualenv's exact version from ``bench/out/sa20`` (pip ``--target``, first
on ``PYTHONPATH``).  Never install opentelemetry-distro into the main
environment: a second configurator would change what plain
``opentelemetry-instrument`` does there.

``--in-process`` measures instead the CPU per request with the WSGI app
called directly in one process per mode (no server, no export): the
instrumentation's own cost with the least noise (contrib from its
virtualenv, with a bare SDK ``TracerProvider`` in both).

``--instructions`` counts, for the same in-process modes, the instructions
per request under valgrind's callgrind (counting switched on only for the
measured requests): exact, and the same on a loaded machine.

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
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
OUT = os.path.join(HERE, "out")
SA20 = os.path.join(OUT, "sa20")
CONTRIB = os.path.join(OUT, "contrib")
#: The contrib peer's packages, pinned to the OpenTelemetry release scope-otel
#: is built on; Flask and Werkzeug are added at the main environment's versions.
CONTRIB_PACKAGES = (
    "opentelemetry-distro==0.66b1",
    "opentelemetry-instrumentation-flask==0.66b1",
    "opentelemetry-instrumentation-sqlalchemy==0.66b1",
    "opentelemetry-instrumentation-django==0.66b1",
    "opentelemetry-instrumentation-sqlite3==0.66b1",
    "opentelemetry-exporter-otlp==1.45.1",
    "sqlalchemy>=2.0,<2.1",
)


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


def versions() -> str:
    """``flask=… werkzeug=… sqlalchemy=… python=…`` of this process."""
    from importlib.metadata import version

    import sqlalchemy

    return (
        f"flask={version('flask')} werkzeug={version('werkzeug')} django={version('django')} sqlalchemy={sqlalchemy.__version__}"
        f" python={sys.version.split()[0]}"
    )


def serve(port: int, db_path: str) -> None:
    """Server process entry point."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    server = make_server("127.0.0.1", port, build_app(db_path), request_handler=Quiet)
    print("READY", versions(), flush=True)
    server.serve_forever()


# --------------------------------------------------------------------------
# the Django app (``--app django``): the same two queries through the ORM
# --------------------------------------------------------------------------

def _django_item(request, item_id: int):
    from django.http import Http404, JsonResponse

    item = _DjangoItem.objects.filter(pk=item_id).values("id", "name", "price").first()
    if item is None:
        raise Http404("no such item")
    stock = _DjangoStock.objects.filter(item_id=item_id).count()
    return JsonResponse(describe(item["id"], item["name"], item["price"], stock))


_DjangoItem = _DjangoStock = None
urlpatterns: list = []  # ROOT_URLCONF of the Django app: this module


def configure_django(db_path: str) -> None:
    """Django's settings, before any instrumentation reads them."""
    from django.conf import settings

    settings.configure(
        DEBUG=False, SECRET_KEY="bench", ALLOWED_HOSTS=["*"], ROOT_URLCONF="bench_http", USE_TZ=True,
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"], INSTALLED_APPS=[], LOGGING_CONFIG=None,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_path}},
    )


def build_django_app(db_path: str):
    """A Django WSGI handler over SQLite with two models and one view (settings from :func:`configure_django`)."""
    global _DjangoItem, _DjangoStock
    import django

    django.setup()
    from django.db import connection, models
    from django.urls import path

    class Item(models.Model):
        name = models.TextField()
        price = models.FloatField()

        class Meta:
            app_label = "bench"
            db_table = "items"

    class Stock(models.Model):
        item_id = models.IntegerField()

        class Meta:
            app_label = "bench"
            db_table = "stock"

    _DjangoItem, _DjangoStock = Item, Stock
    urlpatterns[:] = [path("items/<int:item_id>", _django_item)]
    with connection.schema_editor() as editor:
        for model in (Item, Stock):
            if model._meta.db_table not in connection.introspection.table_names():
                editor.create_model(model)
    Stock.objects.all().delete()
    Item.objects.all().delete()
    for i in range(1, 11):
        Item.objects.create(id=i, name=f"item{i}", price=i * 1.5)
        Stock.objects.create(item_id=i)
    connection.close()
    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


def _in_process_app(mode: str, db_path: str, app_name: str = "flask") -> Callable[[int], None]:
    """The app of ``mode`` with a bare SDK ``TracerProvider`` (spans made,
    nothing exported), as a function making request number ``i``."""
    import io

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    if app_name == "django":
        configure_django(db_path)
        if mode == "contrib":  # contrib's Django plus its DB-API instrumentation for the same driver
            from opentelemetry.instrumentation.django import DjangoInstrumentor
            from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

            DjangoInstrumentor().instrument()
            SQLite3Instrumentor().instrument()
        elif mode in ("scope", "scope-no-dbapi"):
            from scope_otel.instrumentors.dbapi import ScopeDBAPIInstrumentor
            from scope_otel.instrumentors.django import ScopeDjangoInstrumentor

            ScopeDjangoInstrumentor().instrument()
            if mode == "scope":  # as under scope-otel run: the driver is traced too
                ScopeDBAPIInstrumentor().instrument()
        app = build_django_app(db_path)
    if mode == "contrib" and app_name == "flask":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        FlaskInstrumentor().instrument()
        SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    elif mode == "scope" and app_name == "flask":
        from scope_otel.instrumentors.dbapi import ScopeDBAPIInstrumentor
        from scope_otel.instrumentors.flask import ScopeFlaskInstrumentor
        from scope_otel.instrumentors.sqlalchemy import ScopeSQLAlchemyInstrumentor

        ScopeFlaskInstrumentor().instrument()
        ScopeSQLAlchemyInstrumentor().instrument()
        ScopeDBAPIInstrumentor().instrument()  # as under scope-otel run: the driver is traced too
    if app_name == "flask":
        app = build_app(db_path)
    base = {
        "REQUEST_METHOD": "GET", "SERVER_NAME": "bench", "SERVER_PORT": "80", "HTTP_HOST": "bench:80",
        "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": "bench",
    }

    def call(i: int) -> None:
        environ = dict(base, PATH_INFO=f"/items/{i % 10 + 1}", **{"wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr})
        if app_name == "django":
            environ["SCRIPT_NAME"] = ""
        body = app(environ, lambda status, headers, exc_info=None: None)
        b"".join(body)
        getattr(body, "close", lambda: None)()

    return call


def in_process(mode: str, calls: int, db_path: str) -> float:
    """Worker of ``--in-process``: CPU µs per request, WSGI called directly.

    A bare SDK ``TracerProvider`` (spans made, nothing exported), so only the
    instrumentation's own cost differs between modes.
    """
    call = _in_process_app(mode, db_path)
    for i in range(calls // 5):
        call(i)
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for i in range(calls):
            call(i)
        best = min(best, (time.process_time() - start) / calls * 1e6)
    return best


def in_process_instructions(mode: str, calls: int, db_path: str, app_name: str = "flask") -> None:
    """Worker of ``--instructions``, run under ``valgrind --tool=callgrind
    --instr-atstart=no``: counting is switched on for the measured requests
    only (``callgrind_control -i``), after a warm-up, so start-up and imports
    are not counted."""
    import gc

    call = _in_process_app(mode, db_path, app_name)
    spans = _count_spans()
    for i in range(100):
        call(i)
    gc.collect()
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True, check=True)
    for i in range(calls):
        call(i)
    subprocess.run(["callgrind_control", "-i", "off", pid], capture_output=True, check=True)
    print("SPANS", spans[0] / (100 + calls))


def run_in_process(calls: int, envs: dict[str, tuple[str, dict[str, str]]], workdir: str) -> None:
    results, seen = {}, {}
    for mode in ("uninstrumented", "contrib", "scope"):
        python, extra = envs[mode]
        code = (
            "import sys, bench_http; "
            "print(bench_http.in_process(sys.argv[1], int(sys.argv[2]), sys.argv[3]), bench_http.versions())"
        )
        out = subprocess.run(
            [python, "-c", code, mode, str(calls), os.path.join(workdir, f"{mode}.db")],
            env=dict(os.environ, **extra), capture_output=True, text=True, check=True,
        )
        cpu, found = out.stdout.strip().splitlines()[-1].split(" ", 1)
        results[mode], seen[mode] = float(cpu), found
    same_versions(seen)
    _per_request_table(
        f"in-process: WSGI app called directly, {calls} calls × 5, best run; bare SDK TracerProvider (no export); "
        f"{seen['scope']}", ("CPU µs/req", "added µs"), results, scale=1.0, digits=1)


def _per_request_table(title: str, units: tuple[str, str], results: dict[str, float], scale: float,
                       digits: int) -> None:
    """Per-request figures of each mode, what each adds to the uninstrumented one, and that ÷ contrib's."""
    base, contrib = results["uninstrumented"], results["contrib"] - results["uninstrumented"]
    print(title)
    print(f"{'mode':16s} {units[0]:>11s} {units[1]:>9s} {'÷contrib':>9s}")
    for mode, value in results.items():
        ratio = f"{(value - base) / contrib:9.2f}" if mode != "uninstrumented" and contrib > 0 else ""
        print(f"{mode:16s} {value * scale:11.{digits}f} {(value - base) * scale:9.{digits}f} {ratio:>9s}")


def same_versions(seen: dict[str, str]) -> None:
    """Stop when the modes did not all run the same library versions."""
    if len(set(seen.values())) > 1:
        raise SystemExit("modes ran different library versions:\n" + "\n".join(f"  {k}: {v}" for k, v in seen.items()))


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

    def settle(self, wait: float, quiet: float = 1.0, limit: float = 20.0) -> None:
        """Return once ``wait`` seconds have passed and no span came in for
        ``quiet`` seconds (at most ``limit`` seconds)."""
        start = time.monotonic()
        last, changed = self.spans, start
        while time.monotonic() - start < limit:
            time.sleep(0.1)
            now = time.monotonic()
            if self.spans != last:
                last, changed = self.spans, now
            elif now - start >= wait and now - changed >= quiet:
                return

    def take(self) -> tuple[int, dict[str, int]]:
        counted, names = self.spans, dict(self.names)
        self.spans, self.names = 0, {}
        return counted, names


def _run_python(python: str, code: str) -> str:
    # from a neutral folder: the checkout's own scope_otel/ must not be importable
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, cwd=OUT)
    return out.stdout.strip()


def ensure_contrib_venv() -> str:
    """The contrib peer's virtualenv (made on first use); returns its ``bin``.

    Same interpreter as this one, the packages of :data:`CONTRIB_PACKAGES`
    plus this environment's Flask and Werkzeug versions, no scope-otel.  A
    stamp file records what was asked for, so a changed list rebuilds it.
    """
    from importlib.metadata import version

    wanted = [*CONTRIB_PACKAGES, f"flask=={version('flask')}", f"werkzeug=={version('werkzeug')}",
              f"django=={version('django')}"]
    stamp = os.path.join(CONTRIB, "bench-packages.txt")
    bindir = os.path.join(CONTRIB, "bin")
    try:
        with open(stamp) as fh:
            ready = fh.read().split("\n") == wanted
    except OSError:
        ready = False
    if not ready:
        print(f"creating the contrib peer's virtualenv {os.path.relpath(CONTRIB)} ...", flush=True)
        shutil.rmtree(CONTRIB, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", CONTRIB], check=True)
        subprocess.run([os.path.join(bindir, "python"), "-m", "pip", "install", "-q", *wanted], check=True)
        with open(stamp, "w") as fh:
            fh.write("\n".join(wanted))
    found = _run_python(
        os.path.join(bindir, "python"),
        "import importlib.util as u, importlib.metadata as m; "
        "print(u.find_spec('scope_otel') is not None, "
        "sorted(e.value for e in m.entry_points(group='opentelemetry_configurator')))",
    )
    if found != "False ['opentelemetry.distro:OpenTelemetryConfigurator']":
        raise SystemExit(f"{CONTRIB} must hold opentelemetry-distro and no scope-otel ({found}): remove it and run again")
    return bindir


def ensure_sqlalchemy(contrib_bin: str) -> str | None:
    """A folder to put first on ``PYTHONPATH`` so the main environment runs
    the contrib virtualenv's exact SQLAlchemy, or None when it already does."""
    import sqlalchemy

    wanted = _run_python(os.path.join(contrib_bin, "python"), "import sqlalchemy; print(sqlalchemy.__version__)")
    if sqlalchemy.__version__ == wanted:
        return None
    have = None
    if os.path.isdir(os.path.join(SA20, "sqlalchemy")):
        have = _run_python(
            sys.executable, f"import sys; sys.path.insert(0, {SA20!r}); import sqlalchemy; print(sqlalchemy.__version__)"
        )
    if have != wanted:
        print(f"installing SQLAlchemy {wanted} into {os.path.relpath(SA20)} ...", flush=True)
        shutil.rmtree(SA20, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", SA20, f"sqlalchemy=={wanted}"],
            check=True,
        )
    return SA20


def _count_spans() -> list[int]:
    """Ended spans so far (a processor on the current provider): each mode must make the same spans."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor

    count = [0]

    class Count(SpanProcessor):
        def on_end(self, span):
            count[0] += 1

    trace.get_tracer_provider().add_span_processor(Count())
    return count


def run_instructions(calls: int, envs: dict[str, tuple[str, dict[str, str]]], workdir: str,
                     app_name: str = "flask") -> None:
    """``--instructions``: instructions per request of each in-process mode
    (callgrind), exact and independent of the machine's load."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (callgrind_control) on PATH")
    results, seen, spans = {}, {}, {}
    # Django: also scope without its DB-API integration, which records the same spans as contrib
    # (the driver-level statements of Django's connection set-up are contrib's blind spot)
    for mode in ("uninstrumented", "contrib", "scope", *(("scope-no-dbapi",) if app_name == "django" else ())):
        python, extra = envs["scope" if mode == "scope-no-dbapi" else mode]
        out = os.path.join(workdir, f"callgrind.{app_name}.{mode}")
        code = (
            "import sys, bench_http; "
            "bench_http.in_process_instructions(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]); "
            "print(bench_http.versions())"
        )
        ran = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             python, "-c", code, mode, str(calls), os.path.join(workdir, f"{app_name}-{mode}.db"), app_name],
            env=dict(os.environ, PYTHONHASHSEED="0", **extra), capture_output=True, text=True, check=True,
        )
        lines = ran.stdout.strip().splitlines()
        seen[mode] = lines[-1]
        spans[mode] = next(float(line.split()[1]) for line in lines if line.startswith("SPANS"))
        total = 0
        base = os.path.basename(out)
        for name in os.listdir(workdir):  # one file, or one per thread or dump
            if name == base or name.startswith((f"{base}.", f"{base}-")):
                with open(os.path.join(workdir, name)) as fh:
                    total += sum(int(line.split()[1]) for line in fh if line.startswith(("summary:", "totals:")))
        results[mode] = total / calls
    same_versions(seen)
    _per_request_table(
        f"instructions: {app_name} app (WSGI) called directly, {calls} calls counted after 100 warm-up (callgrind); "
        f"bare SDK TracerProvider (no export); {seen['scope']}", ("M instr/req", "added M"), results,
        scale=1e-6, digits=3)
    print("spans per request: " + ", ".join(f"{mode} {count:.2f}" for mode, count in spans.items()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environments(sa_path: str | None, contrib_bin: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Per mode: the Python to run the server with, and its ``PYTHONPATH``."""
    ours = {"PYTHONPATH": os.pathsep.join(p for p in (sa_path, HERE) if p)}
    return {
        "uninstrumented": (sys.executable, ours),
        "contrib": (os.path.join(contrib_bin, "python"), {"PYTHONPATH": HERE}),
        "scope": (sys.executable, ours),
    }


def modes(
    sink: Sink, with_functions: bool, exporter: str, sa_path: str | None, contrib_bin: str
) -> dict[str, tuple[list[str], dict[str, str]]]:
    envs = environments(sa_path, contrib_bin)
    serve_code = ["-c", "import sys, bench_http; bench_http.serve(int(sys.argv[1]), sys.argv[2])"]
    otel = {
        "OTEL_SERVICE_NAME": "bench-http",
        "OTEL_TRACES_EXPORTER": exporter,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
    }
    scope_off = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "scope_http_clients,scope_handoff"}
    python, ours = envs["scope"]
    found = {
        "uninstrumented": ([sys.executable, *serve_code], dict(ours)),
        "contrib": (
            [os.path.join(contrib_bin, "opentelemetry-instrument"), envs["contrib"][0], *serve_code],
            {**otel, **envs["contrib"][1]},
        ),
        "scope": ([os.path.join(BIN, "scope-otel"), "run", "--", python, *serve_code], {**otel, **scope_off, **ours}),
    }
    if with_functions:
        found["scope+functions"] = (
            [
                os.path.join(BIN, "scope-otel"), "run", "--instrument", "bench_http", "--level", "boundaries",
                "--", python, *serve_code,
            ],
            {**otel, **scope_off, **ours},
        )
    return found


def run_mode(
    args: list[str], extra_env: dict[str, str], requests: int, warmup: int, workdir: str, settle: Callable[[], None]
) -> tuple[list[float], float, str]:
    """Latencies of the measured requests, server CPU seconds per request, and
    the versions the server reported.

    The CPU time is read after ``settle()`` (all spans exported), so it
    includes exporting what the measured requests made, whatever the span
    processor's schedule.
    """
    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SCOPE_OTEL_"))}
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
        found = line.split("READY", 1)[1].strip()
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
        settle()
        times = server.cpu_times()
        return timings, (times.user + times.system - cpu_start) / requests, found
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
        "--instructions", action="store_true",
        help="instead: instructions per request with the WSGI app called directly (callgrind; load-independent)",
    )
    parser.add_argument(
        "--app", choices=("flask", "django", "both"), default="flask",
        help="with --instructions: Flask + SQLAlchemy (default), Django's ORM (contrib: Django + sqlite3), "
             "or both, one after the other in this run",
    )
    parser.add_argument(
        "--exporter", choices=("otlp", "none"), default="otlp",
        help="otlp: every mode exports to the sink; none: spans are made but not exported (instrumentation cost only)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 300, 1
    warmup = max(50, args.requests // 10)
    contrib_bin = ensure_contrib_venv()
    sa_path = ensure_sqlalchemy(contrib_bin)
    if args.in_process or args.instructions:
        workdir = tempfile.mkdtemp(prefix="bench-http-")
        try:
            if args.instructions:
                for app_name in ("flask", "django") if args.app == "both" else (args.app,):
                    run_instructions(200 if args.quick else 600, environments(sa_path, contrib_bin), workdir, app_name)
                    print()
            else:
                run_in_process(300 if args.quick else 1000, environments(sa_path, contrib_bin), workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    sink = Sink()
    table = modes(sink, not args.no_functions, args.exporter, sa_path, contrib_bin)
    # the SDK's BatchSpanProcessor exports a partial batch after 5 s (OTEL_BSP_SCHEDULE_DELAY)
    settle = (lambda: sink.settle(6.0)) if args.exporter == "otlp" else (lambda: None)
    workdir = tempfile.mkdtemp(prefix="bench-http-")
    medians: dict[str, list[float]] = {name: [] for name in table}
    p99s: dict[str, list[float]] = {name: [] for name in table}
    cpus: dict[str, list[float]] = {name: [] for name in table}
    spans: dict[str, int] = {}
    seen: dict[str, str] = {}
    try:
        for round_no in range(args.rounds):
            for name, (cmd, env) in table.items():
                timings, cpu, seen[name] = run_mode(cmd, env, args.requests, warmup, workdir, settle)
                same_versions(seen)
                cpus[name].append(cpu * 1e6)
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

    base = statistics.median(medians["uninstrumented"])
    cpu_base = statistics.median(cpus["uninstrumented"])
    contrib_added = statistics.median(medians["contrib"]) - base
    contrib_cpu = statistics.median(cpus["contrib"]) - cpu_base
    print()
    print(
        f"{args.requests} sequential requests × {args.rounds} round(s) per mode, warm-up {warmup}; "
        f"{seen['scope']}{' (bench/out/sa20)' if sa_path else ''}; exporter {args.exporter}; medians over rounds"
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
