"""``scope-otel plan --from-store``: runs under ``scope-otel run`` leave per-function statistics in the
real embedded store, and the plan is made from them (a gunicorn service with two workers stopped by
SIGTERM, a restart that runs the plan the store made, and the failures that leave a plan alone)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from scope_otel.store import open_store
from tests.support.procs import clean_env, run, tool

SERVICE = textwrap.dedent(
    """
    import os

    from flask import Flask, jsonify

    from svc import pricing

    app = Flask(__name__)


    @app.route("/quote/<int:n>")
    def quote(n):
        if n == 0:
            raise ValueError("nothing to quote")
        return jsonify(pid=os.getpid(), total=pricing.total(n))
    """
)
PRICING = textwrap.dedent(
    """
    def unit(i):
        return i % 7


    def total(n):
        return sum(unit(i) for i in range(n))
    """
)


def _service(tmp_path) -> str:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "__init__.py").write_text("")
    (tmp_path / "svc" / "pricing.py").write_text(PRICING)
    (tmp_path / "svc" / "web.py").write_text(SERVICE)
    return str(tmp_path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def _env(tmp_path, **extra):
    # one calibration of the cost model for the whole module, not one per test
    cache = os.path.join(os.path.dirname(str(tmp_path)), "scope-otel-cost-cache")
    return clean_env(XDG_CACHE_HOME=cache, SCOPE_OTEL_STORE=str(tmp_path / "store"), **extra)


def _stats(store_path: str, sql: str) -> list[tuple]:
    store = open_store(store_path, "otel")
    try:
        return store.query(sql).rows
    finally:
        store.close()


def _wait_for_writer(store_path: str) -> None:
    """The store writer the runs started has written the spool (a query takes the store over)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        spool = os.path.join(store_path, "scope-spool")
        if not any(n.endswith(".batch") for n in os.listdir(spool)) if os.path.isdir(spool) else True:
            return
        time.sleep(0.2)


def test_a_gunicorn_service_stopped_by_sigterm_leaves_both_workers_counts_and_plans_from_them(tmp_path):
    cwd = _service(tmp_path)
    store = str(tmp_path / "store")
    port = _free_port()
    proc = subprocess.Popen([tool("scope-otel"), "run", "--service_name", "quotes", "--", tool("gunicorn"), "-w", "2",
                             "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "svc.web:app"],
                            env=_env(tmp_path), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 60
        served = 0
        while (len(pids) < 2 or served < 40) and time.monotonic() < deadline:
            answer = _get(f"http://127.0.0.1:{port}/quote/20")
            if answer:
                pids[answer["pid"]] = pids.get(answer["pid"], 0) + 1
                served += 1
            else:
                time.sleep(0.1)
        assert len(pids) == 2, "gunicorn did not serve from two workers"
        assert _get(f"http://127.0.0.1:{port}/quote/0") is None  # a 500: the handler raised
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, -signal.SIGTERM), err
    _wait_for_writer(store)

    rows = _stats(store, "SELECT ProcessId, Qualname, sum(Records), sum(Calls), sum(Errors), sum(OnRequest), "
                         "sum(Entries) FROM scope_function_stats WHERE Module = 'svc.web' GROUP BY ProcessId, Qualname")
    by_pid = {pid: (records, calls, errors, under, entries)
              for pid, qualname, records, calls, errors, under, entries in rows if qualname == "quote"}
    # every request's handler, counted by the worker that served it, written when SIGTERM stopped it
    assert sum(int(v[0]) for v in by_pid.values()) == served + 1, (rows, pids, err)  # the 500 too
    assert all(int(by_pid[pid][0]) in (n, n + 1) for pid, n in pids.items()), (rows, pids)
    assert sum(int(v[2]) for v in by_pid.values()) == 1  # the request that raised
    assert all(v[3] == v[0] == v[4] for v in by_pid.values())  # each right under its request's span
    units, entries = _stats(store, "SELECT sum(Records), sum(Entries) FROM scope_function_stats "
                                   "WHERE Qualname = 'unit'")[0]
    assert units == 20 * served and entries == 0  # called by the handler, not by the framework

    plan = tmp_path / "scope-otel.plan.json"
    result = run([tool("scope-otel"), "plan", "--from-store", "--store", store, "--budget", "20", "--explain",
                  "-o", str(plan), "svc"], _env(tmp_path), cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    document = json.loads(plan.read_text())
    quote = document["functions"]["svc.web:quote"]
    assert quote["observed"]["records"] == served + 1 and quote["observed"]["processes"] == 2
    assert quote["observed"]["errors"] == 1 and quote["observed"]["on_request"] == served + 1
    assert document["functions"]["svc.pricing:unit"]["observed"]["calls"] == 20 * served
    assert document["estimate"]["frequencies"] == "store"
    assert f"observed {served + 1:,} calls" in result.stdout  # --explain cites the observations
    assert "1 raised" in result.stdout
    assert document["budget_pct"] == 20
    assert quote["level"] != "off" and "a request's handler" in quote["reason"]
    assert document["estimate"]["store"]["handlers"] == ["svc.web:quote"]

    # at a budget the other spans already spend, the handler is still recorded in every request recorded
    result = run([tool("scope-otel"), "plan", "--from-store", "--store", store, "--budget", "0", "-o", str(plan),
                  "svc"], _env(tmp_path), cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    levels = {key: f["level"] for key, f in json.loads(plan.read_text())["functions"].items()}
    assert levels == {"svc.web:quote": "boundaries", "svc.pricing:unit": "off", "svc.pricing:total": "off"}, levels


APP = textwrap.dedent(
    """
    import sys

    from work import jobs

    for i in range(int(sys.argv[1])):
        jobs.handle(i)
    """
)
JOBS = textwrap.dedent(
    """
    def tiny(x):
        return x + 1


    def handle(i):
        total = sum(j * j for j in range(20000))  # the work a request does
        for j in range(100):
            total = tiny(total)
        return total
    """
)


def test_a_restart_runs_the_plan_the_store_made_and_keeps_improving_it(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "__init__.py").write_text("")
    (tmp_path / "work" / "jobs.py").write_text(JOBS)
    (tmp_path / "app.py").write_text(APP)
    store = str(tmp_path / "store")
    env = _env(tmp_path)
    # a ring that holds the whole run: the counts below are exact whatever the machine's load
    command = [tool("scope-otel"), "run", "--service_name", "jobs", "--ring_size", "131072", "--", sys.executable,
               "app.py", "100"]

    # 1. no plan: the program's own code at boundaries, every call counted
    first = run(command, env, cwd=str(tmp_path), timeout=120)
    assert first.returncode == 0, first.stderr
    _wait_for_writer(store)
    recorded = dict(_stats(store, "SELECT SpanName, count() FROM otel_traces WHERE SpanName != 'scope-otel.governor' GROUP BY SpanName"))
    assert recorded == {"handle": 100, "tiny": 100 * 100}, recorded

    # 2. the plan from what was observed: tiny is called 100 times per handle for nothing worth seeing
    planned = run([tool("scope-otel"), "plan", "--from-store", "--store", store, "--budget", "5", "work"], env,
                  cwd=str(tmp_path), timeout=300)
    assert planned.returncode == 0, planned.stderr
    document = json.loads((tmp_path / "scope-otel.plan.json").read_text())
    assert document["functions"]["work.jobs:tiny"]["level"] == "off"
    assert document["functions"]["work.jobs:handle"]["level"] != "off"
    assert document["functions"]["work.jobs:tiny"]["observed"]["calls"] == 100 * 100

    # 3. the restart finds the plan in the working directory and records what it chose
    second = run(command, env, cwd=str(tmp_path), timeout=120)
    assert second.returncode == 0, second.stderr
    _wait_for_writer(store)
    recorded = dict(_stats(store, "SELECT SpanName, count() FROM otel_traces WHERE SpanName != 'scope-otel.governor' GROUP BY SpanName"))
    assert recorded == {"handle": 200, "tiny": 100 * 100}, recorded  # the second run: handle only

    # 4. planned again: handle's calls from both runs, tiny's from the run that still watched it
    again = run([tool("scope-otel"), "plan", "--from-store", "--store", store, "--budget", "5", "--explain", "work"],
                env, cwd=str(tmp_path), timeout=300)
    assert again.returncode == 0, again.stderr
    document = json.loads((tmp_path / "scope-otel.plan.json").read_text())
    assert document["functions"]["work.jobs:handle"]["observed"]["calls"] == 200
    assert document["functions"]["work.jobs:handle"]["observed"]["processes"] == 2
    assert document["functions"]["work.jobs:tiny"]["observed"]["calls"] == 100 * 100
    assert document["functions"]["work.jobs:tiny"]["observed"]["processes"] == 1
    assert document["functions"]["work.jobs:tiny"]["level"] == "off"


def test_no_observations_fail_in_one_line_and_leave_the_plan_alone(tmp_path):
    plan = tmp_path / "kept.plan.json"
    plan.write_text('{"version": 1, "functions": {}}\n')
    before = plan.read_text()
    env = _env(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "lib.py").write_text("def f():\n    return 1\n")
    (project / "main.py").write_text("import lib\nlib.f()\n")
    store = str(tmp_path / "store")

    def plan_from_store(*extra):
        return run([tool("scope-otel"), "plan", "--from-store", "-o", str(plan), *extra], env, cwd=str(project))

    missing = plan_from_store("--store", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "no store at" in missing.stderr

    # a store with a run, but none in the window asked for, then none of that service
    assert run([tool("scope-otel"), "run", "--service_name", "one", "--", sys.executable, "main.py"], env,
               cwd=str(project)).returncode == 0
    _wait_for_writer(store)
    for extra in (["--service", "other"], ["--since", "0s"]):
        result = plan_from_store("--store", store, *extra)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "no observed calls in" in result.stderr, result.stderr
    bad = plan_from_store("--since", "soon")
    assert bad.returncode == 2 and "--since 'soon' is not a duration" in bad.stderr
    assert plan.read_text() == before
    # the same store, as it is: a plan
    assert plan_from_store("--store", store).returncode == 0
    assert json.loads(plan.read_text())["functions"]["lib:f"]["observed"]["calls"] == 1


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800), ("45", 45),
                                           ("1.5h", 5400)])
def test_durations(text, seconds):
    from scope_otel.planner.observed import parse_duration

    assert parse_duration(text) == seconds
