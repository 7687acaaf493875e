"""The integration base: every declared hook is applied when its module is
imported and undone on uninstrument, for every integration."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.instrumentors.apps.djangoapp.settings")

from scope_otel.instrumentors import _base  # noqa: E402
from scope_otel.instrumentors.dbapi import ScopeDBAPIInstrumentor  # noqa: E402
from scope_otel.instrumentors.django import ScopeDjangoInstrumentor  # noqa: E402
from scope_otel.instrumentors.flask import ScopeFlaskInstrumentor  # noqa: E402
from scope_otel.instrumentors.handoff import ScopeHandoffInstrumentor  # noqa: E402
from scope_otel.instrumentors.http_clients import ScopeHTTPClientsInstrumentor  # noqa: E402
from scope_otel.instrumentors.pika import ScopePikaInstrumentor  # noqa: E402
from scope_otel.instrumentors.redis import ScopeRedisInstrumentor  # noqa: E402
from scope_otel.instrumentors.sqlalchemy import ScopeSQLAlchemyInstrumentor  # noqa: E402

ALL = [ScopeFlaskInstrumentor, ScopeDjangoInstrumentor, ScopeSQLAlchemyInstrumentor, ScopeDBAPIInstrumentor,
       ScopeHTTPClientsInstrumentor, ScopeHandoffInstrumentor, ScopeRedisInstrumentor, ScopePikaInstrumentor]


def _snapshot(hooks):
    """What each hook touches, as the program sees it now."""
    seen = []
    for hook in hooks:
        module = importlib.import_module(hook.module)
        if isinstance(hook, _base.Patch):
            owner = _base._resolve(module, hook.owner)
            seen.append((hook, owner.__dict__.get(hook.name)))
        elif isinstance(hook, _base.Receiver):
            signal = _base._resolve(module, hook.signal)
            seen.append((hook, len(signal.receivers)))
        elif isinstance(hook, _base.Listener):
            from sqlalchemy import event

            seen.append((hook, event.contains(_base._resolve(module, hook.owner), hook.name, hook.fn)))
    return seen


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_hook_is_applied_and_all_are_undone(cls):
    pytest.importorskip({"ScopeRedisInstrumentor": "redis", "ScopePikaInstrumentor": "pika"}.get(cls.__name__, "os"))
    instrumentor = cls()
    hooks = [h for h in instrumentor._hooks if h.when is None and importlib.util.find_spec(h.module.split(".")[0])]
    before = _snapshot(hooks)  # imports each hooked module first: the hooks fire at instrument()
    instrumentor.instrument(lists=True) if cls is ScopeRedisInstrumentor else instrumentor.instrument()
    try:
        during = _snapshot(hooks)
        changed = [h for (h, a), (_, b) in zip(before, during) if a != b]
        touched = [h for h in hooks if not isinstance(h, _base.Call)]
        assert changed == touched  # every Patch, Receiver and Listener took effect
        assert sys.modules[cls.__module__]._state is not None
    finally:
        instrumentor.uninstrument()
    assert _snapshot(hooks) == before  # all undone: the same objects and receivers as before
    assert sys.modules[cls.__module__]._state is None


def test_a_failing_hook_is_counted_and_the_others_still_apply():
    from scope_otel.instrumentors import _report

    class Owner:
        def method(self):
            return "original"

    sys.modules["tests_base_fake"] = type(sys)("tests_base_fake")
    sys.modules["tests_base_fake"].Owner = Owner

    class Broken(_base.ScopeInstrumentor):
        _what = "broken-test"
        _hooks = (
            _base.Patch("tests_base_fake", "Missing", "method", lambda f: f),
            _base.Patch("tests_base_fake", "Owner", "method", lambda f: lambda self: "patched"),
        )

    before = _report.stats().get("broken-test.attach tests_base_fake", 0)
    Broken().instrument()
    try:
        assert Owner().method() == "patched"
        assert _report.stats()["broken-test.attach tests_base_fake"] == before + 1
    finally:
        Broken().uninstrument()
        del sys.modules["tests_base_fake"]
    assert Owner().method() == "original"


def test_the_exit_summary_shows_integration_errors_in_words():
    from scope_otel.instrumentors import _report
    from scope_otel.launcher import summary

    try:
        raise ValueError("a broken hook")
    except ValueError:
        _report.failed("tests.summary")
    text = summary.render(summary.collect({}))
    assert "integration errors (each logged once, never raised into the program):" in text
    assert "tests.summary ×" in text
