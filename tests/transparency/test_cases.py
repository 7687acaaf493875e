"""Instrumenting a module changes nothing its program prints: each case under ``cases/`` runs
plainly and under ``scope-otel run --instrument 'tcase*'`` at ``full`` and at ``boundaries``, and
the outputs must be the same.

The cases isolate the ways capture used to change programs (issue 22): a snapshot running
``__repr__``/``__str__`` or properties (an iterator drained, a coroutine never awaited, an object
simplified, a slow call), a recorded exception keeping its frames alive, records leaving
garbage-collector-tracked objects, the rewritten module importing scope-otel in its globals, and
instrumented functions no longer pickling by value (cloudpickle); plus an argument kept alive, a
lazy attribute computed, and whole modules pickled by value (dataclasses, generators, local
classes, lambdas).
"""
from __future__ import annotations

import os
import shutil
import sys

import pytest

from tests.support.procs import clean_env, run, tool

CASES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
CASES = sorted(f for f in os.listdir(CASES_DIR) if f.startswith("case_") and f.endswith(".py"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    pytest.importorskip("cloudpickle")
    where = tmp_path_factory.mktemp("transparency")
    shutil.copytree(CASES_DIR, where, dirs_exist_ok=True)
    return str(where)


def _output(result) -> str:
    return (result.stdout + result.stderr).strip()


@pytest.fixture(scope="module")
def plain(workdir):
    out = {}
    for case in CASES:
        out[case] = _output(run([sys.executable, case], clean_env(), cwd=workdir))
    return out


@pytest.mark.parametrize("level", ["full", "boundaries"])
@pytest.mark.parametrize("case", CASES)
def test_an_instrumented_case_prints_what_it_prints_plainly(workdir, plain, case, level):
    assert plain[case] and "Traceback" not in plain[case], plain[case]
    result = run([tool("scope-otel"), "run", "--instrument", "tcase*", "--level", level,
                  "--traces_exporter", "none", "--", sys.executable, case], clean_env(), cwd=workdir)
    assert _output(result) == plain[case]


def test_the_cases_do_instrument_their_module(workdir):
    """A vacuous 'same' (nothing rewritten) would show here."""
    probe = ("import tcase.shapes as s, scope_otel.instrument.hook as h; "
             "print(h.is_rewritten(s), any(k.startswith('_@scope_p') for k in vars(s)))")
    result = run([tool("scope-otel"), "run", "--instrument", "tcase*", "--traces_exporter", "none", "--",
                  sys.executable, "-c", probe], clean_env(), cwd=workdir)
    assert _output(result) == "True True"
