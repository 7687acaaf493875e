"""``scope_otel.instrument.apply`` as the launcher uses it, and ``scope-otel compile`` through the CLI."""
from __future__ import annotations

import os
import subprocess
import sys

from scope_otel.instrument import cache

PROGRAM = "import runpkg.m as m; print(m.f(20), '_@scope_rewritten' in vars(m))"


def _package(tmp_path):
    package = tmp_path / "runpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "m.py").write_text("def f(x):\n    return x * 2 + 2\n")
    return package


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOPE_OTEL_", "OTEL_"))}
    env.update(PYTHONPATH=str(tmp_path), OTEL_TRACES_EXPORTER="none", **extra)
    return env


def test_scope_otel_run_with_instrument_globs_rewrites_the_program(tmp_path):
    _package(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "scope_otel.launcher.cli", "run", "--instrument", "runpkg.*", "--level", "full",
         "--", sys.executable, "-c", PROGRAM],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42", "True"]


def test_the_same_program_without_scope_otel_is_untouched(tmp_path):
    _package(tmp_path)
    out = subprocess.run([sys.executable, "-c", PROGRAM], cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["42", "False"]


def test_scope_otel_compile_is_dispatched_by_the_cli(tmp_path):
    package = _package(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "scope_otel.launcher.cli", "compile", "--instrument", "runpkg.*", str(package)],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "compiled runpkg.m" in out.stdout
    assert len(cache.entries(str(package / "m.py"))) == 1
