"""One app's WSGI callable driven in this process, request after request (no server, no sockets).

    python bench/services_app/drive.py APP REQUESTS        (plain, or under ``scope-otel run``)

APP is ``shop`` or ``django`` (``CATALOG_DB`` names the catalogue's SQLite file); the requests are
``bench_services.py``'s mix, 50 of them first as a warm-up.  Prints one JSON line: CPU time of the
process and of the request thread per counted request, the store writer's CPU (when this process
started one) and the share of traces in force.  Environment:

* ``SCOPE_BENCH_RATIO=R``: the overhead governor's thread stopped and the share of traces held at R
  (``0.0009765625``: every request sampled out, the floor; ``1``: every request recorded);
* ``SCOPE_BENCH_CALLGRIND=1``: under ``valgrind --tool=callgrind --instr-atstart=no
  --separate-threads=yes``, instructions are counted for the measured requests only (and the export
  of their records); the load-independent figure of ``bench/RESULTS.md``;
* ``SCOPE_BENCH_PROFILE=REGEX``: cProfile of the measured requests, the functions matching REGEX
  (``SCOPE_BENCH_SORT``, ``SCOPE_BENCH_TOP``; ``SCOPE_BENCH_CALLERS=REGEX``: their callers);
* ``SCOPE_BENCH_ROOTS=1``: what the governor measured a recorded request to cost its thread;
* ``REQUESTS`` 0: the process idles ``SCOPE_BENCH_IDLE_S`` seconds instead (the background's cost).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from bench_services import _script  # noqa: E402


def _app(name: str):
    if name == "shop":
        sys.path.insert(0, os.path.join(REPO, "examples"))
        from shop.web import create_app

        return create_app()
    sys.path.insert(0, HERE)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalog.settings")
    import catalog.setup_db  # noqa: F401  (creates and seeds the database when run as main)
    from catalog.wsgi import application

    return application


def call(app, method: str, path: str, body) -> None:
    data = json.dumps(body).encode() if body is not None else b""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "bench", "SERVER_PORT": "80", "HTTP_HOST": "bench:80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(data)),
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(data), "wsgi.errors": sys.stderr,
    }
    body_iter = app(environ, lambda status, headers, exc_info=None: None)
    b"".join(body_iter)
    getattr(body_iter, "close", lambda: None)()


def _writer_cpu(governor) -> float:
    """CPU seconds of the store writers this process started (from /proc)."""
    total = 0.0
    for pid in list(getattr(governor, "_helpers", {})):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def main() -> None:
    name, n = sys.argv[1], int(sys.argv[2])
    app = _app(name)
    ratio = os.environ.get("SCOPE_BENCH_RATIO")
    gov = None
    _g = None
    if "scope_otel.launcher.pipeline" in sys.modules and sys.modules["scope_otel.launcher.pipeline"]._state:
        from scope_otel.capture import governor as _g, runtime

        gov = runtime.governor
        if ratio is not None:
            gov.stop()
            time.sleep(0.6)
            _g._set_ratio(float(ratio))
    script = _script(name, n)
    for method, path, body in _script(name, 50):
        call(app, method, path, body)
    helpers0 = _writer_cpu(_g)
    counting = os.environ.get("SCOPE_BENCH_CALLGRIND") == "1"
    if counting:  # under valgrind --tool=callgrind --instr-atstart=no: count the requests only
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True, check=True)
    profile = None
    if os.environ.get("SCOPE_BENCH_PROFILE"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    cpu0, thr0, t0 = time.process_time(), time.thread_time(), time.monotonic()
    for method, path, body in script:
        call(app, method, path, body)
    if not script:  # the background's cost alone: what a process idles at
        time.sleep(float(os.environ.get("SCOPE_BENCH_IDLE_S", "10")))
    if profile is not None:
        profile.disable()
        import pstats

        stats = pstats.Stats(profile, stream=sys.stderr).sort_stats(os.environ.get("SCOPE_BENCH_SORT", "tottime"))
        if os.environ.get("SCOPE_BENCH_CALLERS"):
            stats.print_callers(os.environ["SCOPE_BENCH_CALLERS"])
        else:
            stats.print_stats(os.environ["SCOPE_BENCH_PROFILE"], int(os.environ.get("SCOPE_BENCH_TOP", "40")))
    cpu1, thr1, t1 = time.process_time(), time.thread_time(), time.monotonic()
    if _g is not None:  # the records of these requests turned into spans and handed to the exporter
        from scope_otel.launcher import pipeline

        processor = pipeline._state.get("processor")
        if processor is not None:
            processor.force_flush()
    if counting:
        subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True, check=True)
    time.sleep(2.0)  # the export of the last records
    cpu2 = time.process_time()
    helpers = _writer_cpu(_g) - helpers0
    per = max(n, 1)
    if _g is not None and os.environ.get("SCOPE_BENCH_ROOTS"):
        from opentelemetry.trace import SpanKind

        for kind in SpanKind:
            k, o = (len(_g._roots.samples.get((kind, r), ())) for r in (True, False))
            if k or o:
                print(f"roots {kind.name}: {k} recorded, {o} not; extra {_g._roots.extra_ns(kind)} ns", file=sys.stderr)
    print(json.dumps({"app": name, "requests": n, "cpu_us": (cpu2 - cpu0) / per * 1e6,
                      "cpu_during_us": (cpu1 - cpu0) / per * 1e6, "thread_us": (thr1 - thr0) / per * 1e6,
                      "writer_us": helpers / per * 1e6, "wall_s": t1 - t0,
                      "ratio": _g._bound / 2 ** 64 if _g is not None else None,
                      "changes": gov.changes if gov is not None else None}), flush=True)


if __name__ == "__main__":
    main()
