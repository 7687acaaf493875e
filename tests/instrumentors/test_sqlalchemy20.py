"""The SQLAlchemy integration's tests again, on SQLAlchemy 2.0 (the main run has 2.1).

SQLAlchemy 2.0 is installed with pip into a directory of its own (reused
between runs) and put first on ``PYTHONPATH`` for a child pytest, so the
same test module runs against both supported release lines.  Skipped, with
the reason, where the package registry cannot be reached.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET = os.path.join(tempfile.gettempdir(), "scope-otel-tests-sqlalchemy20")
REQUIREMENT = "sqlalchemy>=2.0.40,<2.1"
_CHILD = "SCOPE_OTEL_TEST_SQLALCHEMY20_CHILD"


def _installed() -> str | None:
    probe = subprocess.run([sys.executable, "-c", "import sqlalchemy; print(sqlalchemy.__version__)"],
                           env=dict(os.environ, PYTHONPATH=TARGET), capture_output=True, text=True)
    version = probe.stdout.strip()
    return version if probe.returncode == 0 and version.startswith("2.0.") else None


@pytest.fixture(scope="module")
def sqlalchemy20() -> str:
    version = _installed()
    if version is None:
        # --no-deps: greenlet and typing-extensions come from the main environment
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade",
                              "--target", TARGET, REQUIREMENT], capture_output=True, text=True, timeout=300)
        version = _installed()
        if version is None:
            pytest.skip(f"could not install {REQUIREMENT} into {TARGET}: {pip.stderr.strip()[-300:]}")
    return version


@pytest.mark.skipif(os.environ.get(_CHILD) == "1", reason="already the SQLAlchemy 2.0 run")
def test_sqlalchemy_integration_suite_passes_on_sqlalchemy_2_0(sqlalchemy20):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TARGET, ROOT]), **{_CHILD: "1"})
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", os.path.join(HERE, "test_sqlalchemy.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout
    print(run.stdout[-1500:])  # shown with -s: what ran and what was skipped on 2.0
    version = subprocess.run([sys.executable, "-c", "import sqlalchemy; print(sqlalchemy.__version__)"],
                             env=env, capture_output=True, text=True).stdout.strip()
    assert version == sqlalchemy20 and version.startswith("2.0.")
