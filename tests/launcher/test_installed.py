"""scope-otel installed the way users install it: a wheel and an sdist, not editable.

Each test builds the distribution from this checkout, installs it without its
dependencies into a fresh virtual environment outside the source tree, lends
that environment the dependencies already installed for the test run (a
``.pth`` line: the folder joins ``sys.path``, but its own ``.pth`` files, among
them the editable install's finder, are not processed), and runs
``scope-otel run`` from there into the embedded store.  An editable install
hides files that are missing from the distribution; this does not.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from tests.support.procs import REPO, clean_env

APP = textwrap.dedent(
    """
    from opentelemetry import trace
    tracer = trace.get_tracer("installed")
    with tracer.start_as_current_span("installed-outer"):
        with tracer.start_as_current_span("installed-inner"):
            pass
    print("app ran")
    """
)


def _build(kind: str, out: str, source: str = REPO) -> str:
    """Build a wheel or an sdist of ``source`` into ``out``; return its path."""
    if kind == "wheel":
        args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, source]
    else:
        args = [sys.executable, "-m", "build", "--sdist", "-o", out, source]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    suffix = ".whl" if kind == "wheel" else ".tar.gz"
    (name,) = [f for f in os.listdir(out) if f.endswith(suffix)]
    return os.path.join(out, name)


def _fresh_venv(path: str) -> str:
    subprocess.run([sys.executable, "-m", "venv", path], check=True, timeout=120)
    python = os.path.join(path, "bin", "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "zz_test_dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_non_editable_install_records_into_the_store(tmp_path, kind):
    if kind == "sdist":
        pytest.importorskip("build", reason="the sdist check needs the 'build' package (in the test extra)")
    dist = _build(kind, str(tmp_path / "dist"))
    if kind == "sdist":  # what pip does with an sdist: build a wheel from the unpacked archive
        dist = _build("wheel", str(tmp_path / "dist-from-sdist"), source=dist)
    python = _fresh_venv(str(tmp_path / "venv"))
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", dist],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]

    work = tmp_path / "work"
    work.mkdir()
    (work / "app.py").write_text(APP)
    env = clean_env()
    env["PATH"] = os.path.dirname(python) + os.pathsep + env["PATH"]
    located = subprocess.run([python, "-c", "import scope_otel; print(scope_otel.__file__)"],
                             capture_output=True, text=True, cwd=str(work), env=env)
    assert located.stdout.startswith(str(tmp_path / "venv")), located.stdout + located.stderr
    if shutil.which("cc") or shutil.which("gcc"):  # the accelerators are optional: a failed build is silent
        built = subprocess.run([python, "-c", "import scope_otel.capture._speedups, scope_otel.export._otlpenc, "
                                "scope_otel.store._chnative"], capture_output=True, text=True, cwd=str(work), env=env)
        assert built.returncode == 0, f"C accelerators missing from the {kind} install: {built.stderr[-2000:]}"

    scope = os.path.join(os.path.dirname(python), "scope-otel")
    ran = subprocess.run([scope, "run", "--service_name", "installed", "--", python, "app.py"],
                         capture_output=True, text=True, cwd=str(work), env=env, timeout=180)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "app ran" in ran.stdout
    shown = subprocess.run([scope, "query", "--format", "csv",
                            "SELECT SpanName FROM otel.otel_traces WHERE ServiceName = 'installed' ORDER BY SpanName"],
                           capture_output=True, text=True, cwd=str(work), env=env, timeout=180)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.split() == ["SpanName", "installed-inner", "installed-outer"], shown.stdout + shown.stderr

    # the planner's call counter is a bare sitecustomize.py in a start-up folder: package data, not a module
    (work / "planned.py").write_text("def f():\n    return 1\n\nfor _ in range(3):\n    f()\n")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    planned = subprocess.run([scope, "plan", "planned.py", "-q", "-o", "plan.json", "--profile", "--no-baseline-run",
                              "--", python, "planned.py"], capture_output=True, text=True, cwd=str(work), env=env,
                             timeout=300)
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert json.loads((work / "plan.json").read_text())["functions"]["planned:f"]["estimated_calls"] == 3


def test_run_refuses_an_install_without_its_bootstrap(tmp_path, monkeypatch):
    from scope_otel import config
    from scope_otel.launcher import run

    monkeypatch.setattr(run, "BOOTSTRAP_DIR", str(tmp_path / "missing"))
    with pytest.raises(config.ConfigError, match="incomplete"):
        run.prepare(["--", sys.executable, "-c", "pass"], environ=clean_env())
