"""Exit time with a dead OTLP backend, and spans kept when a process is ended early.

    .venv/bin/python bench/bench_exit.py [--spans 20000] [--timeout-ms 10000]

Part 1, dead backend: a program makes N spans as fast as it can and returns,
exporting over OTLP to (a) a closed port (connection refused) and (b) a socket
that accepts and never answers.  Measured: the time from the program's last
line to the process having exited, under ``scope-otel run`` and under
the stock TracerProvider, BatchSpanProcessor and OTLP exporter
set up by the program itself (the peer), same endpoint, same timeout.  scope-otel's promise is at most the
export timeout + 2 s.

Part 2, ending early: spans stored in the embedded store (a) by a plain script
killed by SIGTERM while it sleeps, (b) by ``multiprocessing`` Pool(4) workers
making 4,000 spans, for fork, spawn and forkserver.  The peer: what the same
program stores with scope-otel's SIGTERM and child handling switched off is
not measurable any more, so the "before" figures come from the commit message
of this change (0 and 3,409 of 4,000).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.support import dead_ports  # noqa: E402 - the repository's own fault helpers
import urllib.request

BIN = os.path.dirname(sys.executable)

PROGRAM = textwrap.dedent(
    """
    import os, sys, time
    from opentelemetry import trace
    if "--stock" in sys.argv:  # the peer: the stock SDK pipeline, set up as its docs show
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        if os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("bench")
    for i in range(int(sys.argv[1])):
        with tracer.start_as_current_span("work"):
            pass
    print(repr(time.time()), flush=True)
    """
)

POOL = textwrap.dedent(
    """
    import multiprocessing as mp, sys
    from opentelemetry import trace
    def work(i):
        with trace.get_tracer("w").start_as_current_span("task"):
            pass
        return i
    if __name__ == "__main__":
        with mp.get_context(sys.argv[1]).Pool(4) as pool:
            pool.map(work, range(4000))
    """
)

SLEEPER = textwrap.dedent(
    """
    import time
    from opentelemetry import trace
    for i in range(10):
        with trace.get_tracer("t").start_as_current_span("before-sigterm"):
            pass
    print("ready", flush=True)
    time.sleep(120)
    """
)


DJANGO = textwrap.dedent(
    """
    import sys
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import path

    def hello(request, name):
        return HttpResponse(f"hello {name}")

    urlpatterns = [path("hello/<str:name>", hello)]
    settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="bench",
                       MIDDLEWARE=[], INSTALLED_APPS=[], DATABASES={})
    if __name__ == "__main__":
        from django.core.management import execute_from_command_line
        execute_from_command_line(sys.argv)
    """
)


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SCOPE_OTEL_"))}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def exit_seconds(cmd: list[str], env: dict, cwd: str) -> tuple[float, str]:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    _out, err = proc.communicate(timeout=600)
    ended = time.time()
    return ended - float(first), err


def part1(spans: int, timeout_ms: int, work: str) -> None:
    script = os.path.join(work, "program.py")
    with open(script, "w") as fh:
        fh.write(PROGRAM)
    with dead_ports.silent_port() as silent:
        _part1(spans, timeout_ms, work, script, {"refused": dead_ports.closed_port(), "silent": silent})


def _part1(spans: int, timeout_ms: int, work: str, script: str, targets: dict) -> None:
    print(f"\nexit time after the program's last line, {spans} spans, export timeout {timeout_ms} ms "
          f"(scope-otel's bound: {timeout_ms / 1000 + 2:.0f} s)")
    print(f"{'endpoint':9s} {'protocol':14s} {'scope-otel':>11s} {'peer (stock)':>13s} {'ratio':>6s}  stderr lines (ours / peer)")
    for name, port in targets.items():
        for protocol in ("grpc", "http/protobuf"):
            otel = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
            ours, err = exit_seconds(
                [os.path.join(BIN, "scope-otel"), "run", "--exporter_otlp_timeout", str(timeout_ms), "--",
                 sys.executable, script, str(spans)], _env(**otel), work)
            # the stock SDK reads OTEL_EXPORTER_OTLP_TIMEOUT in seconds
            peer, perr = exit_seconds([sys.executable, script, str(spans), "--stock"],
                                      _env(**otel, OTEL_EXPORTER_OTLP_TIMEOUT=str(timeout_ms // 1000)), work)
            print(f"{name:9s} {protocol:14s} {ours:10.1f}s {peer:12.1f}s {ours / peer:6.2f}  "
                  f"{len(err.splitlines())} / {len(perr.splitlines())}")
            for line in err.splitlines():
                print(f"      ours: {line[:220]}")


def _stored(store: str, where: str) -> int:
    deadline = time.monotonic() + 60
    count = -1
    while time.monotonic() < deadline:
        out = subprocess.run([os.path.join(BIN, "scope-otel"), "query", "--store", store, "--format", "csv",
                              f"SELECT count() FROM otel.otel_traces WHERE {where}"],
                             capture_output=True, text=True)
        try:
            count = int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            count = -1
        if count > 0 and count == getattr(_stored, "last", None):
            return count
        _stored.last = count
        time.sleep(2)
    return count


def _fresh_store(work: str, name: str) -> str:
    store = os.path.join(work, name)
    subprocess.run([os.path.join(BIN, "scope-otel"), "run", "--store", store, "--", sys.executable, "-c", "pass"],
                   env=_env(), cwd=work, check=True, capture_output=True)
    return store


def part2(work: str) -> None:
    print("\nspans stored in the embedded store")
    sleeper = os.path.join(work, "sleeper.py")
    with open(sleeper, "w") as fh:
        fh.write(SLEEPER)
    store = _fresh_store(work, "sigterm")
    proc = subprocess.Popen([os.path.join(BIN, "scope-otel"), "run", "--store", store, "--", sys.executable, sleeper],
                            env=_env(), cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    kept = _stored(store, "SpanName = 'before-sigterm'")
    print(f"  plain script, SIGTERM while sleeping: {kept} of 10 "
          f"(exit status {proc.returncode}, as without scope-otel: -15)")
    manage = os.path.join(work, "manage.py")
    with open(manage, "w") as fh:
        fh.write(DJANGO)
    store = _fresh_store(work, "runserver")
    port = dead_ports.closed_port()
    proc = subprocess.Popen([os.path.join(BIN, "scope-otel"), "run", "--store", store, "--", sys.executable, manage,
                             "runserver", "--noreload", f"127.0.0.1:{port}"],
                            env=_env(), cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    served = 0
    deadline = time.monotonic() + 60
    while served < 10 and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello/{served}", timeout=2) as resp:
                resp.read()
            served += 1
        except OSError:
            time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    stored = _stored(store, "SpanKind = 'SPAN_KIND_SERVER'")
    print(f"  Django runserver --noreload, {served} requests, then SIGTERM: {stored} of {served} request spans "
          f"(exit status {proc.returncode})")
    pool = os.path.join(work, "pool.py")
    with open(pool, "w") as fh:
        fh.write(POOL)
    for method in ("fork", "spawn", "forkserver"):
        store = _fresh_store(work, f"pool-{method}")
        subprocess.run([os.path.join(BIN, "scope-otel"), "run", "--store", store, "--", sys.executable, pool, method],
                       env=_env(), cwd=work, check=True, capture_output=True, timeout=300)
        kept = _stored(store, "SpanName = 'task'")
        print(f"  Pool(4) {method:10s}: {kept} of 4000")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--timeout-ms", type=int, default=10000)
    parser.add_argument("--part", choices=("1", "2", "all"), default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-exit-") as work:
        if args.part in ("1", "all"):
            part1(args.spans, args.timeout_ms, work)
        if args.part in ("2", "all"):
            part2(work)


if __name__ == "__main__":
    main()
