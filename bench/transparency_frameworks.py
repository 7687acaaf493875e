"""Framework transparency: Flask's, Django's and SQLAlchemy's own test suites,
run plainly and under ``scope-otel run``, compared test by test.

    .venv/bin/python bench/transparency_frameworks.py [--quick] [--only flask,django,...] [--workdir DIR]

The suites come from the sdists of the installed versions (``pip download
--no-binary <name> --no-deps``), unpacked under ``bench/out/suites``:

* ``flask``: a subset of Flask's ``tests/`` (basic, blueprints, signals,
  templating, reqctx, testing, views, json) and the tutorial app
  (``examples/tutorial``: register, login, blog over ``sqlite3``);
* ``django``: ``tests/runtests.py`` for delete, delete_regress,
  transactions, defer, update_only_fields, signals, test_client,
  middleware and backends, on SQLite (``django``), again with the test apps' own modules
  recorded at level ``full`` (``django-full``), and on PostgreSQL at
  127.0.0.1:5432 (``django-pg``, skipped when unreachable);
* ``sqlalchemy``: engine, ORM events, base events and pool tests on SQLite.

Each suite runs twice with the same interpreter: ``plain`` (nothing of
scope-otel), and ``scoped`` (``scope-otel run``, every integration loaded,
spans exported over OTLP/HTTP to a receiver in this process; the overhead
governor at its highest budget, ``SCOPE_OTEL_BUDGET=1000``, so that it does
not sample traces away on a loaded machine).  Outcomes are
read per test (pytest's JUnit XML; Django's runner at ``-v 2``) and must be
the same test by test.  A difference is accepted only when listed in
:data:`EXPECTED` with its reason (a test that inspects the framework's own
registry of receivers or listeners and finds scope-otel's there); any other
fails the run (exit 1).  The receiver counts the spans each scoped run
exported, SERVER and SQL (CLIENT with ``db.system.name``) by integration, so
a run that recorded nothing is shown as such: a suite whose scoped run
exported no span from its framework's integration also fails.

``--quick`` (for CI, about 3 minutes): Flask's subset and tutorial, Django's
``delete``, ``update_only_fields`` and ``backends.base`` on SQLite, plainly
and at ``full``.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
SUITES = os.path.join(HERE, "out", "suites")
PG = {"host": "127.0.0.1", "port": 5432}
sys.path.insert(0, REPO)

#: (suite, test id) -> why the scoped run may differ: each a test that inspects
#: the framework's own registry of listeners and finds scope-otel's there.
EXPECTED: dict[tuple[str, str], str] = {
    ("sqlalchemy", "test.engine.test_execute.EngineEventsTest::test_add_event_after_connect"):
        "asserts a new engine has no event listeners (engine._has_events); scope-otel listens on the Engine class",
    **{(suite, "signals.tests.SignalTests.test_disconnect_in_dispatch.test_disconnect_in_dispatch"):
       "asserts post_save has no receivers left (signals.post_save.receivers == []); scope-otel's post_save "
       "receiver records model saves" for suite in ("django", "django-full", "django-pg")},
}


@dataclass
class Suite:
    name: str
    dist: str  # distribution whose sdist holds the tests
    cwd: str  # relative to the unpacked sdist
    argv: list[str]
    kind: str = "pytest"  # or "django"
    env: dict[str, str] = field(default_factory=dict)
    integration: str = ""  # instrumentation scope whose spans prove the integration was active
    needs_pg: bool = False
    quick: bool = False
    scope_args: list[str] = field(default_factory=list)  # extra ``scope-otel run`` options for the scoped run


DJANGO_APPS = ["delete", "delete_regress", "transactions", "defer", "update_only_fields", "signals", "test_client",
               "middleware", "backends"]
FLASK_TESTS = ["tests/test_basic.py", "tests/test_blueprints.py", "tests/test_signals.py", "tests/test_templating.py",
               "tests/test_reqctx.py", "tests/test_testing.py", "tests/test_views.py", "tests/test_json.py"]


def suites(quick: bool) -> list[Suite]:
    # backends.base: ExecuteWrapperTests asserts connection.execute_wrappers holds only the test's own
    django_apps = ["delete", "update_only_fields", "backends.base"] if quick else DJANGO_APPS
    found = [
        Suite("flask", "flask", ".", ["-m", "pytest", *FLASK_TESTS], integration="scope_otel.instrumentors.flask",
              quick=True),
        Suite("flask-tutorial", "flask", "examples/tutorial", ["-m", "pytest", "tests"],
              env={"PYTHONPATH": "."}, integration="scope_otel.instrumentors.dbapi", quick=True),
        Suite("django", "django", "tests", ["runtests.py", "--parallel=1", "-v", "2", *django_apps],
              kind="django", integration="scope_otel.instrumentors.django", quick=True),
        # the test apps' own modules (models, tests) recorded at level full: state capture
        # must read only loaded fields (update_only_fields, defer) and nothing after a delete
        Suite("django-full", "django", "tests", ["runtests.py", "--parallel=1", "-v", "2", *django_apps],
              kind="django", integration="scope_otel.instrumentors.django", quick=True,
              scope_args=["--level", "full", "--instrument", ",".join(f"{app}.*" for app in django_apps)]),
        Suite("django-pg", "django", "tests",
              ["runtests.py", "--parallel=1", "-v", "2", "--settings=scope_pg_settings", *django_apps],
              kind="django", integration="scope_otel.instrumentors.django", needs_pg=True),
        Suite("sqlalchemy", "sqlalchemy", ".",
              ["-m", "pytest", "test/engine/test_execute.py", "test/engine/test_pool.py", "test/orm/test_events.py",
               "test/base/test_events.py", "--dburi", "sqlite://", "-p", "no:randomly"],
              integration="scope_otel.instrumentors.sqlalchemy"),
    ]
    return [s for s in found if s.quick or not quick]


# --------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------

def source(dist: str) -> str:
    """The unpacked sdist of the installed version of ``dist``."""
    wanted = version(dist)
    folder = os.path.join(SUITES, f"{dist}-{wanted}")
    if os.path.isdir(folder):
        return folder
    os.makedirs(SUITES, exist_ok=True)
    archive = os.path.join(SUITES, f"{dist}-{wanted}.tar.gz")
    if not os.path.exists(archive):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", dist, "--no-deps",
                        "-d", SUITES, f"{dist}=={wanted}"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(SUITES, filter="data") if sys.version_info >= (3, 12) else tar.extractall(SUITES)
    return folder


PG_SETTINGS = '''DATABASES = {
    "default": {"ENGINE": "django.db.backends.postgresql", "NAME": "test", "USER": "postgres",
                "HOST": "127.0.0.1", "PORT": "5432"},
    "other": {"ENGINE": "django.db.backends.postgresql", "NAME": "other", "USER": "postgres",
              "HOST": "127.0.0.1", "PORT": "5432"},
}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
'''


def pg_reachable() -> bool:
    try:
        import psycopg

        psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=3).close()
        return True
    except Exception:
        return False


# --------------------------------------------------------------------------
# running and reading outcomes
# --------------------------------------------------------------------------

#: ``test_x (app.tests.Class.test_x) ... ok``; a test with a docstring has its first
#: line on the next line, before the outcome (a quarter of Django's tests were read as
#: missing in both runs before this was allowed for); never another test's line
_DJANGO_LINE = re.compile(r"^(\w+) \(([\w.]+)\)(?: \S[^\n]*)?(?:\n(?!\w+ \([\w.]+\))[^\n]*?)??"
                          r" \.\.\. (ok|FAIL|ERROR|skipped|expected failure|unexpected success)", re.M)


def run(suite: Suite, folder: str, scoped: bool, receiver_env: dict[str, str], out: str) -> dict[str, str]:
    cwd = os.path.join(folder, suite.cwd)
    xml = os.path.join(out, f"{suite.name}-{'scoped' if scoped else 'plain'}.xml")
    log = xml[:-4] + ".log"
    argv = list(suite.argv)
    if suite.kind == "pytest":
        argv += ["-q", "-p", "no:cacheprovider", "-p", "scope_bench_compat", f"--junitxml={xml}"]
    cmd = [sys.executable, *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SCOPE_OTEL_"))}
    env.update(suite.env)
    paths = [os.path.join(cwd, p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*paths, out])  # out: the compatibility plugin
    env["SCOPE_BENCH_REQUESTS"] = xml[:-4] + ".requests"
    if scoped:
        env.update(receiver_env)
        env["OTEL_SERVICE_NAME"] = suite.name
        # the overhead governor's highest budget: on a loaded machine (a test suite is all
        # start-up and SQL) it otherwise samples whole traces away, and the harness checks
        # that every request and statement was recorded
        env["SCOPE_OTEL_BUDGET"] = "1000"
        cmd = [os.path.join(BIN, "scope-otel"), "run", *suite.scope_args, "--", *cmd]
    with open(log, "w") as fh:
        subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=3600)
    if suite.kind == "django":
        with open(log) as fh:
            # scope-otel's own lines (the overhead governor's changes, written to fd 2 in one write)
            # can land between a test's name and its outcome on the shared output
            text = re.sub(r"scope-otel\[\d+\]: [^\n]*\n", "", fh.read())
        return {f"{where}.{name}": status for name, where, status in _DJANGO_LINE.findall(text)}
    return read_junit(xml) if os.path.exists(xml) else {}


COMPAT = '''"""Lets older framework test suites run on the installed pytest, in both runs alike:
Flask 3.1's conftest reads ``_pytest.monkeypatch.notset``, renamed ``NOTSET``."""
import _pytest.monkeypatch as _mp

if not hasattr(_mp, "notset") and hasattr(_mp, "NOTSET"):
    _mp.notset = _mp.NOTSET

# how many requests the test client made (both runs): each must have its SERVER span
import os as _os

_REQUESTS = [0]


def pytest_configure(config):
    try:
        from werkzeug.test import Client
    except ImportError:
        return
    run_wsgi_app = Client.run_wsgi_app

    def counted(self, *args, **kwargs):
        _REQUESTS[0] += 1
        return run_wsgi_app(self, *args, **kwargs)

    Client.run_wsgi_app = counted


def pytest_unconfigure(config):
    where = _os.environ.get("SCOPE_BENCH_REQUESTS")
    if where:
        with open(where, "w") as fh:
            fh.write(str(_REQUESTS[0]))
'''


def read_junit(path: str) -> dict[str, str]:
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = child.tag
        outcomes[name] = status
    return outcomes


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI subset (about 3 minutes)")
    parser.add_argument("--only", help="comma-separated suite names")
    parser.add_argument("--workdir", default=os.path.join(HERE, "out", "transparency-frameworks"))
    args = parser.parse_args(argv)
    from tests.support.otlp_receiver import OTLPReceiver

    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "scope_bench_compat.py"), "w") as fh:
        fh.write(COMPAT)
    receiver = OTLPReceiver().start()
    receiver_env = receiver.env("http/protobuf")
    chosen = suites(args.quick)
    if args.only:
        names = set(args.only.split(","))
        chosen = [s for s in chosen if s.name in names]
    failed = False
    rows = []
    for suite in chosen:
        if suite.needs_pg and not pg_reachable():
            print(f"{suite.name}: skipped, PostgreSQL not reachable at 127.0.0.1:5432")
            continue
        folder = source(suite.dist)
        if suite.needs_pg:
            with open(os.path.join(folder, "tests", "scope_pg_settings.py"), "w") as fh:
                fh.write(PG_SETTINGS)
        started = time.monotonic()
        plain = run(suite, folder, False, receiver_env, args.workdir)
        receiver.clear()
        scoped = run(suite, folder, True, receiver_env, args.workdir)
        time.sleep(2)  # the last batch
        spans = list(receiver.spans)
        receiver.clear()
        by_scope = Counter((s.get("scope") or s.get("instrumentation_scope") or "?", s["kind"]) for s in spans)
        servers = sum(1 for s in spans if s["kind"] == "SERVER")
        sql = sum(1 for s in spans if s["kind"] == "CLIENT" and "db.system.name" in s["attributes"])
        active = any(suite.integration in str(k) for k in by_scope) if by_scope else False
        requests = _read_int(os.path.join(args.workdir, f"{suite.name}-scoped.requests"))
        diffs = sorted(t for t in set(plain) | set(scoped) if plain.get(t) != scoped.get(t))
        unexplained = [t for t in diffs if (suite.name, t) not in EXPECTED]
        print(f"\n{suite.name}: {len(plain)} tests plain ({dict(Counter(plain.values()))}), "
              f"{len(scoped)} scoped ({dict(Counter(scoped.values()))}); {len(diffs)} differ, "
              f"{len(unexplained)} unexplained; test-client requests {requests}; "
              f"spans exported: {len(spans)} ({servers} SERVER, {sql} SQL); "
              f"integration active: {active}; {time.monotonic() - started:.0f} s")
        for test in diffs:
            reason = EXPECTED.get((suite.name, test), "UNEXPLAINED")
            print(f"  {test}: plain {plain.get(test)} / scoped {scoped.get(test)}  {reason}")
        if not plain:
            print("  no outcomes read from the plain run: see", os.path.join(args.workdir, f"{suite.name}-plain.log"))
        ok = bool(plain) and not unexplained and (active or not spans and not suite.integration)
        if not active:
            print(f"  no span from {suite.integration}: the run proves nothing")
        failed |= not ok
        if requests is not None and servers < requests:
            print(f"  {requests - servers} test-client requests without a SERVER span")
            failed = True
        rows.append((suite.name, len(plain), len(diffs), len(unexplained), requests, servers, sql, active))
    receiver.stop()
    print("\n| suite | tests | differ | unexplained | test-client requests | SERVER spans | SQL spans | integration active |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
