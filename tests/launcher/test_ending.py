"""How instrumented processes end: SIGTERM, multiprocessing children, dead backends, the exit report.

Real signals, real child processes, real dead ports (a closed one, and a socket
that accepts and never answers) and a real OTLP receiver.  Subprocess timeouts
here are hang detectors (minutes against the few seconds expected), not timing
assertions.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.launcher.test_run import DJANGO_MANAGE, WSGI_APP, _free_port, _get
from tests.support import dead_ports
from tests.support.procs import clean_env, tool

SLEEPER = textwrap.dedent(
    """
    import signal, sys, time
    from opentelemetry import trace
    if "--own-handler" in sys.argv:
        def own(signum, frame):
            print("own handler ran", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, own)
    for i in range(10):
        with trace.get_tracer("t").start_as_current_span("before-sigterm"):
            pass
    print("ready", flush=True)
    time.sleep(120)
    """
)


def _start(args, env, cwd=None):
    return subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sleeper(tmp_path, *extra):
    path = tmp_path / "sleeper.py"
    path.write_text(SLEEPER)
    return [tool("scope-otel"), "run", "--", sys.executable, str(path), *extra]


# ---------------------------------------------------------------------------
# SIGTERM
# ---------------------------------------------------------------------------

def test_sigterm_to_a_program_without_a_handler_exports_then_dies_by_sigterm(otlp_receiver, tmp_path):
    proc = _start(_sleeper(tmp_path), clean_env(**otlp_receiver.env("grpc")))
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM, err  # as without scope-otel
    spans = otlp_receiver.wait_for(10, timeout=10)
    assert len(spans) == 10, err


def test_a_programs_own_sigterm_handler_is_left_alone(otlp_receiver, tmp_path):
    proc = _start(_sleeper(tmp_path, "--own-handler"), clean_env(**otlp_receiver.env("grpc")))
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert out.strip() == "own handler ran"
    assert proc.returncode == 3, err
    # its sys.exit ran atexit (its handler, a function of the script, is recorded too, with no plan)
    assert len(otlp_receiver.wait_for(10, timeout=10, where=lambda s: s["name"] == "before-sigterm")) == 10


def test_sigterm_to_django_runserver_keeps_the_requests_it_served(otlp_receiver, tmp_path):
    (tmp_path / "manage.py").write_text(DJANGO_MANAGE)
    port = _free_port()
    proc = _start([tool("scope-otel"), "run", "--", sys.executable, "manage.py", "runserver", "--noreload",
                   f"127.0.0.1:{port}"], clean_env(**otlp_receiver.env("grpc")), cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 60
        while _get(f"http://127.0.0.1:{port}/hello/first") is None and time.monotonic() < deadline:
            time.sleep(0.2)
        for i in range(9):
            assert _get(f"http://127.0.0.1:{port}/hello/n{i}") == f"hello n{i}"
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM, err
    servers = otlp_receiver.wait_for(10, timeout=10, where=lambda s: s["kind"] == "SERVER")
    assert len(servers) == 10, err[-2000:]


HELD = textwrap.dedent(
    """
    import os, signal, sys, time
    from opentelemetry import trace
    from scope_otel import notice
    from scope_otel.launcher import pipeline

    for i in range(10):
        with trace.get_tracer("t").start_as_current_span("before-sigterm"):
            pass
    # Python runs a handler between any two bytecodes: here, while the main thread is inside
    # scope-otel holding a lock the flush needs (counting a notice, the processor's own lock)
    lock = notice._lock if sys.argv[1] == "notice" else pipeline._state["processor"]._flush_lock
    with lock:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(120)
    """
)


@pytest.mark.parametrize("held", ["notice", "processor"])
def test_sigterm_while_the_main_thread_holds_a_lock_the_flush_needs_still_ends_the_process(
        otlp_receiver, tmp_path, held):
    """Before, the handler flushed in the interrupted main thread and waited for its own lock forever."""
    script = tmp_path / "held.py"
    script.write_text(HELD)
    proc = _start([tool("scope-otel"), "run", "--exporter_otlp_timeout", "2000", "--", sys.executable, str(script),
                   held], clean_env(**otlp_receiver.env("grpc")))
    try:
        _out, err = proc.communicate(timeout=90)  # a hang detector: the bound here is 2 s + 2 s
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"still running 90 s after SIGTERM: {err[-2000:]}")
    assert proc.returncode == -signal.SIGTERM, err
    if held == "notice":  # counting notices does not stop the flush: all stored, nothing said lost
        assert len(otlp_receiver.wait_for(10, timeout=10)) == 10, err
        assert "did not end" not in err, err
    else:  # the flush cannot finish; the process still dies by SIGTERM within the bound, and says so
        assert "the flush at SIGTERM did not end within 4 s" in err, err


# ---------------------------------------------------------------------------
# multiprocessing children end with os._exit: each must export what it recorded
# ---------------------------------------------------------------------------

CHILDREN = textwrap.dedent(
    """
    import multiprocessing as mp, sys
    from concurrent.futures import ProcessPoolExecutor
    from opentelemetry import trace

    def work(i):
        with trace.get_tracer("w").start_as_current_span("task"):
            pass
        return i

    def many(n):
        for i in range(n):
            work(i)

    if __name__ == "__main__":
        method, how = sys.argv[1], sys.argv[2]
        ctx = mp.get_context(method)
        if how == "Pool":
            with ctx.Pool(4) as pool:  # __exit__ is terminate(): SIGTERM to the workers
                assert sum(pool.map(work, range(400))) == sum(range(400))
        elif how == "Process":
            children = [ctx.Process(target=many, args=(100,)) for _ in range(2)]
            for c in children:
                c.start()
            for c in children:
                c.join()
                assert c.exitcode == 0
        else:
            with ProcessPoolExecutor(2, mp_context=ctx) as pool:
                assert sum(pool.map(work, range(200))) == sum(range(200))
        print("done", flush=True)
    """
)


@pytest.mark.parametrize("how,expected", [("Pool", 400), ("Process", 200), ("ProcessPoolExecutor", 200)])
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_children_export_what_they_recorded(otlp_receiver, tmp_path, method, how, expected):
    script = tmp_path / "children.py"
    script.write_text(CHILDREN)
    result = subprocess.run([tool("scope-otel"), "run", "--", sys.executable, str(script), method, how],
                            env=clean_env(**otlp_receiver.env("grpc")), cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr
    spans = otlp_receiver.wait_for(expected, timeout=15, where=lambda s: s["name"] == "task")
    assert len(spans) == expected, result.stderr[-3000:]


STUCK_CHILD = textwrap.dedent(
    """
    import multiprocessing as mp, signal, sys, threading, time
    from opentelemetry import trace

    def stuck(lock):
        for i in range(50):
            with trace.get_tracer("w").start_as_current_span("task"):
                pass
        def elsewhere():
            time.sleep(0.2)  # the main thread is in sem_wait by now
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        threading.Thread(target=elsewhere).start()
        lock.acquire()  # held by the parent for good, as Pool.terminate() holds the task queue's lock

    if __name__ == "__main__":
        ctx = mp.get_context(sys.argv[1])
        lock = ctx.Lock()
        lock.acquire()
        child = ctx.Process(target=stuck, args=(lock,))
        child.start()
        child.join(60)  # a hang detector: the child ends within a second or two
        print(child.exitcode, flush=True)
        if child.exitcode is None:
            child.kill()
    """
)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_child_blocked_in_c_when_sigterm_lands_elsewhere_still_flushes_and_dies(otlp_receiver, tmp_path, method):
    """A SIGTERM handled by another thread only sets Python's flag; the main thread, blocked in
    ``sem_wait``, never runs the handler unless it is woken, and without scope-otel the process would
    have died at once (the same happens when SIGTERM lands on the main thread just before it blocks,
    a Pool worker during ``terminate()``).  Before, forkserver children were never woken: the server
    clears the wakeup fd after forking them."""
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_CHILD)
    result = subprocess.run([tool("scope-otel"), "run", "--", sys.executable, str(script), method],
                            env=clean_env(**otlp_receiver.env("grpc")), cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=180)
    assert result.stdout.strip() == str(-signal.SIGTERM), result.stderr[-3000:]
    spans = otlp_receiver.wait_for(50, timeout=15, where=lambda s: s["name"] == "task")
    assert len(spans) == 50, result.stderr[-3000:]


# ---------------------------------------------------------------------------
# dead backends: bounded exit, one line saying what was lost and why
# ---------------------------------------------------------------------------

MAKER = textwrap.dedent(
    """
    import logging, sys
    from opentelemetry import trace
    # an application that takes logging over: scope-otel's notices must not depend on it
    logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    logging.disable(logging.CRITICAL)
    tracer = trace.get_tracer("maker")
    for i in range(int(sys.argv[1])):
        with tracer.start_as_current_span("made"):
            pass
    print("made", flush=True)
    """
)


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers."""
    with dead_ports.silent_port() as port:
        yield port


def _otlp_args(protocol, port, *extra):
    return [tool("scope-otel"), "run", "--traces_exporter", "otlp", "--exporter_otlp_protocol", protocol,
            "--exporter_otlp_endpoint", f"http://127.0.0.1:{port}", *extra]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("endpoint", ["refused", "silent"])
def test_a_dead_endpoint_holds_exit_only_for_the_export_timeout_and_says_what_was_lost(
        tmp_path, silent_port, protocol, endpoint):
    script = tmp_path / "maker.py"
    script.write_text(MAKER)
    port = silent_port if endpoint == "silent" else dead_ports.closed_port()
    # 2000 ms: before, this flag reached the SDK as OTEL_EXPORTER_OTLP_TIMEOUT=2000, read as seconds
    args = _otlp_args(protocol, port, "--exporter_otlp_timeout", "2000", "--", sys.executable, str(script), "20000")
    result = subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=90)
    assert result.returncode == 0 and result.stdout.strip() == "made", result.stderr
    lost = [line for line in result.stderr.splitlines() if " spans NOT exported to otlp" in line]
    assert len(lost) == 1, result.stderr
    # the governor may sample whole traces out once the ring overflows (they are never recorded);
    # every span that was recorded is lost here, and the line says so
    counts = re.match(r"scope-otel: (\d+) of (\d+) spans NOT exported to otlp", lost[0])
    assert counts and counts.group(1) == counts.group(2) and int(counts.group(2)) > 0, lost[0]
    reason = "connection refused" if endpoint == "refused" else "no answer within the 2 s export timeout"
    assert reason in result.stderr, result.stderr
    # the SDK's per-retry lines are replaced by the counted notices
    assert "Transient error" not in result.stderr and "Failed to export" not in result.stderr, result.stderr
    assert all(line.startswith(("scope-otel: ", "scope-otel[")) for line in result.stderr.splitlines()), result.stderr


def test_overflow_block_waits_at_most_block_timeout_then_drops_and_counts(tmp_path, silent_port):
    script = tmp_path / "maker.py"
    script.write_text(MAKER)
    # before: each record waited the 30 s export timeout for room (a 2,000-span program: hours)
    args = _otlp_args("grpc", silent_port, "--overflow", "block", "--block_timeout_ms", "200", "--ring_size", "64",
                      "--summary", "true", "--", sys.executable, str(script), "2000")
    result = subprocess.run(args, env=clean_env(OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16",
                                                OTEL_EXPORTER_OTLP_TIMEOUT="1000"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "records that waited 200 ms for room are dropped" in result.stderr
    summary = result.stderr[result.stderr.index("scope-otel summary:"):]
    assert "queue full, waited block_timeout_ms" in summary, summary
    # the governor samples whole traces out once the ring overflows (never recorded, but counted:
    # the summary says how many) and records its changes past the ring; every span recorded is
    # accounted for as not exported, those dropped for want of room among them
    counts = re.search(r"exported 0 of (\d+); NOT exported (\d+).*queue full, waited block_timeout_ms: (\d+)",
                       summary)
    assert counts and counts.group(1) == counts.group(2) and int(counts.group(3)) > 0, summary
    sampled_out = re.search(r"not recorded: (\d+) new traces the overhead governor sampled out", summary)
    assert int(counts.group(1)) + (int(sampled_out.group(1)) if sampled_out else 0) >= 2000, summary


# ---------------------------------------------------------------------------
# the summary tells the truth, once per run
# ---------------------------------------------------------------------------

def test_summary_says_exported_only_for_what_the_backend_acknowledged(tmp_path, otlp_receiver):
    script = tmp_path / "maker.py"
    script.write_text(MAKER)
    dead = dead_ports.closed_port()
    args = [tool("scope-otel"), "run", "--summary", "true", "--exporter_otlp_timeout", "1000", "--",
            sys.executable, str(script), "300"]
    ok = subprocess.run(args, env=clean_env(**otlp_receiver.env("grpc")), capture_output=True, text=True, timeout=90)
    assert "-> otlp grpc" in ok.stderr and "exported 300 of 300" in ok.stderr, ok.stderr
    assert "NOT" not in ok.stderr, ok.stderr
    env = clean_env(**otlp_receiver.env("grpc"))
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{dead}"
    bad = subprocess.run(args, env=env, capture_output=True, text=True, timeout=90)
    summary = bad.stderr[bad.stderr.index("scope-otel summary:"):]
    assert summary.startswith("scope-otel summary: 300 spans recorded by 1 process"), summary
    # gRPC's reconnect backoff can outlast the 1 s exit bound: then the refusal is never heard, and the
    # batch is reported cancelled at the deadline instead; either way not one span is called exported
    assert re.search(r"exported 0 of 300; NOT exported 300: failed 300 \((UNAVAILABLE: connection refused|"
                     r"cancelled: the exit deadline passed)\)", summary), summary


def test_gunicorn_workers_are_summarised_once(otlp_receiver, tmp_path):
    (tmp_path / "wsgiapp.py").write_text(WSGI_APP)
    port = _free_port()
    proc = _start([tool("scope-otel"), "run", "--summary", "true", "--", tool("gunicorn"), "-w", "2",
                   "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "wsgiapp:app"],
                  clean_env(**otlp_receiver.env("grpc")), cwd=str(tmp_path))
    try:
        pids: set[str] = set()
        served = 0
        deadline = time.monotonic() + 60
        while (len(pids) < 2 or served < 10) and time.monotonic() < deadline:
            answer = _get(f"http://127.0.0.1:{port}/")
            if answer:
                pids.add(answer)
                served += 1
            else:
                time.sleep(0.1)
        assert len(pids) == 2, "gunicorn did not serve from two workers"
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    assert err.count("scope-otel summary:") == 1, err
    summary = err[err.index("scope-otel summary:"):]
    assert "spans recorded by 3 processes" in summary, summary
    # the zero-configuration default also records the app's own functions: count the requests
    assert f"request/SQL/client spans: {served} in {served} traces" in summary, summary
    assert f"exported {2 * served} of {2 * served}" in summary, summary  # each request and its function span


KILLED_CHILD = textwrap.dedent(
    """
    import multiprocessing as mp, os, signal
    from opentelemetry import trace

    def doomed():
        for i in range(100):
            with trace.get_tracer("w").start_as_current_span("lost"):
                pass
        os.kill(os.getpid(), signal.SIGKILL)  # nothing can flush this

    if __name__ == "__main__":
        child = mp.get_context("spawn").Process(target=doomed)
        child.start()
        child.join()
        print(child.exitcode, flush=True)
    """
)


def test_a_sigkilled_child_is_counted_and_never_reported_as_exported(otlp_receiver, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_CHILD)
    result = subprocess.run([tool("scope-otel"), "run", "--summary", "true", "--", sys.executable, str(script)],
                            env=clean_env(**otlp_receiver.env("grpc")), capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == str(-signal.SIGKILL), result.stderr
    summary = result.stderr[result.stderr.index("scope-otel summary:"):]
    assert "1 process(es) ended without reporting" in summary, summary
    assert "exported 100" not in summary and "recorded by 1 process" in summary, summary
