"""Entry points, version checks, the disable switch and failure accounting."""
from __future__ import annotations

import logging
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from opentelemetry.instrumentation.dependencies import DependencyConflictError
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from scope_otel.instrumentors import _base, _report
from tests.support.procs import clean_env, tool

NAMES = {"scope_flask", "scope_django", "scope_sqlalchemy", "scope_dbapi", "scope_http_clients", "scope_handoff",
         "scope_redis", "scope_pika"}


def test_every_integration_is_an_opentelemetry_instrumentor_entry_point():
    ours = {ep.name: ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.value.startswith("scope_otel.")}
    assert NAMES <= set(ours)
    for name in NAMES:
        cls = ours[name].load()
        assert issubclass(cls, BaseInstrumentor)
        assert cls.__module__ and cls.__doc__
        assert sys.modules[cls.__module__].__doc__.count("\n") > 10  # the module docstring is the manual
    deps = {name: tuple(ours[name].load()().instrumentation_dependencies()) for name in NAMES}
    assert deps["scope_flask"] == ("flask >= 3.0",)
    assert deps["scope_sqlalchemy"] == ("sqlalchemy >= 2.0, < 2.2",)


class _Missing(_base.ScopeInstrumentor):
    _requires = ("no-such-library-xyz >= 1",)
    _what = "Missing"

    def _instrument(self, **kwargs):
        raise AssertionError("must not run")

    def _uninstrument(self, **kwargs):
        pass


class _TooOld(_base.ScopeInstrumentor):
    _requires = ("flask >= 99",)
    _what = "TooOld"

    def _instrument(self, **kwargs):
        raise AssertionError("must not run")

    def _uninstrument(self, **kwargs):
        pass


def test_missing_library_is_reported_once_and_the_integration_stays_off(caplog):
    caplog.set_level(logging.INFO, logger="scope_otel.instrumentors")
    assert _Missing().instrument() is None
    assert _Missing().instrument() is None
    assert not _Missing().is_instrumented_by_opentelemetry
    messages = [r.getMessage() for r in caplog.records if "Missing" in r.getMessage()]
    assert messages == ["scope-otel Missing integration is off: no-such-library-xyz >= 1 is not installed"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_too_old_library_is_a_warning_naming_the_found_version(caplog):
    caplog.set_level(logging.INFO, logger="scope_otel.instrumentors")
    _TooOld().instrument()
    (record,) = [r for r in caplog.records if "TooOld" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "needs flask >= 99, found flask" in record.getMessage()


def test_auto_instrumentation_path_gets_the_conflict_as_an_exception():
    # opentelemetry-instrument calls instrument(raise_exception_on_conflict=True)
    with pytest.raises(DependencyConflictError):
        _Missing().instrument(raise_exception_on_conflict=True)


def test_internal_failure_is_counted_and_logged_once(caplog):
    before = _report.stats().get("tests.place", 0)
    for _ in range(3):
        try:
            raise ValueError("internal")
        except ValueError:
            _report.failed("tests.place")
    assert _report.stats()["tests.place"] == before + 3
    assert len([r for r in caplog.records if "tests.place" in r.getMessage()]) <= 1


def test_disabled_instrumentations_are_honoured_by_entry_point_name(tmp_path):
    program = (
        "from scope_otel.launcher import pipeline; import sys;"
        "print(','.join(sorted(pipeline._state.get('instrumentors', []))))"
    )
    env = clean_env(OTEL_TRACES_EXPORTER="none", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="scope_flask,scope_handoff")
    result = subprocess.run(
        [tool("scope-otel"), "run", "--", sys.executable, "-c", program],
        env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.strip().splitlines()[-1].split(","))
    assert {"scope_django", "scope_sqlalchemy", "scope_http_clients"} <= loaded
    assert not loaded & {"scope_flask", "scope_handoff", "flask", "sqlalchemy", "django"}


def test_skip_dep_check_from_opentelemetry_instrument_does_not_force_a_too_old_library():
    # opentelemetry-instrument's loader passes skip_dep_check=True for every entry point
    assert _TooOld().instrument(skip_dep_check=True) is None
    assert not _TooOld().is_instrumented_by_opentelemetry
