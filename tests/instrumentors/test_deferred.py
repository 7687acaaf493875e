"""Integrations attach when the program imports their library, never import it themselves."""
from __future__ import annotations

import json
import subprocess
import sys
import types

from scope_otel.instrumentors import _deferred, _report
from tests.support.procs import clean_env, tool

LIBRARIES = ("django", "flask", "sqlalchemy", "redis", "pika", "requests", "httpx", "urllib3")

_PROGRAM = r"""
import json, sys
before = {name: name in sys.modules for name in %r}
import requests.sessions, redis.client, flask, sqlalchemy
from django.core.handlers.base import BaseHandler
from sqlalchemy import event
from sqlalchemy.engine import Engine
print(json.dumps({
    "before": before,
    "requests_patched": hasattr(requests.sessions.Session.send, "__scope_otel_original__"),
    "redis_patched": hasattr(redis.client.Redis.xadd, "__scope_otel_original__"),
    "django_patched": hasattr(BaseHandler.get_response, "__scope_otel_original__"),
    "flask_patched": hasattr(flask.Flask.__call__, "__scope_otel_original__"),
    "sqlalchemy_listening": event.contains(Engine, "before_cursor_execute",
                                           __import__("scope_otel.instrumentors.sqlalchemy", fromlist=["x"])._before_cursor_execute),
}))
"""


def test_a_program_that_never_imports_a_library_does_not_pay_for_it_and_one_that_does_is_patched():
    result = subprocess.run(
        [tool("scope-otel"), "run", "--", sys.executable, "-c", _PROGRAM % (LIBRARIES,)],
        env=clean_env(OTEL_TRACES_EXPORTER="none"), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["before"] == {name: False for name in LIBRARIES}
    assert seen["requests_patched"] and seen["redis_patched"] and seen["django_patched"]
    assert seen["flask_patched"] and seen["sqlalchemy_listening"]


def test_attach_runs_at_once_for_an_imported_module_and_a_failure_never_reaches_the_import():
    calls = []
    pending = _deferred.when_imported("json", calls.append, "test.attach")
    assert calls == [sys.modules["json"]] and pending.attached

    def broken(module):
        raise RuntimeError("attach bug")

    before = _report.stats().get("test.broken", 0)
    name = "scope_otel_test_deferred_target"
    pending = _deferred.when_imported(name, broken, "test.broken")
    assert not pending.attached
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        pending.fire(module)  # what the post-import hook does: swallows and counts the error
    finally:
        del sys.modules[name]
    assert pending.attached
    assert _report.stats()["test.broken"] == before + 1


def test_a_cancelled_hook_does_nothing_when_the_library_arrives_later():
    calls = []
    pending = _deferred.when_imported("scope_otel_test_never_imported", calls.append, "test.cancel")
    assert pending.cancel() is False  # nothing attached, nothing to undo
    pending.fire(types.ModuleType("scope_otel_test_never_imported"))
    assert calls == []
