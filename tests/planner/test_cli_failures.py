"""``scope-otel plan`` fails honestly: one line, a non-zero status, and an existing plan left as it was."""
from __future__ import annotations

import json
import sys

import pytest

from scope_otel.planner.cli import main

OLD_PLAN = '{"version": 1, "kept": "the plan of an earlier, good run"}\n'

JOB = "def step(i):\n    return i + 1\n\ndef run():\n    return [step(i) for i in range(300)]\n\n"


@pytest.fixture
def workdir(tmp_path, cost_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scope-otel.plan.json").write_text(OLD_PLAN)
    return tmp_path


def _failed(capsys, workdir, status, *words):
    assert status != 0
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("scope-otel plan: profiling")]  # the progress line of --profile
    assert len(err) == 1, err
    assert err[0].startswith("scope-otel plan: error: "), err
    for word in words:
        assert word in err[0], err
    assert (workdir / "scope-otel.plan.json").read_text() == OLD_PLAN
    assert not (workdir / "scope-otel.plan.counts.json").exists()


def test_a_failing_profiled_command_writes_no_plan(workdir, capsys):
    (workdir / "job.py").write_text(JOB + "run()\nraise SystemExit(3)\n")
    status = main(["--profile", "--", sys.executable, "job.py"])
    _failed(capsys, workdir, status, "exited with status 3")


def test_a_command_that_cannot_start_writes_no_plan(workdir, capsys):
    (workdir / "job.py").write_text(JOB + "run()\n")
    status = main([str(workdir / "job.py"), "--profile", "--", sys.executable, "nonexistent.py"])
    _failed(capsys, workdir, status, "exited with status 2")


def test_a_missing_directory_is_an_error(workdir, capsys):
    status = main(["nonexistent_dir"])
    _failed(capsys, workdir, status, "nonexistent_dir", "not found")


def test_a_tree_without_python_source_is_an_error(workdir, capsys):
    (workdir / "empty").mkdir()
    (workdir / "empty" / "notes.txt").write_text("no code here")
    status = main([str(workdir / "empty")])
    _failed(capsys, workdir, status, "no Python functions")


def test_a_profile_that_calls_none_of_the_analysed_functions_is_an_error(workdir, capsys):
    (workdir / "job.py").write_text(JOB)  # defines, never calls
    status = main([str(workdir / "job.py"), "--profile", "--no-baseline-run", "--", sys.executable, "job.py"])
    _failed(capsys, workdir, status, "no calls")


def test_a_server_stopped_by_sigterm_keeps_its_counts(workdir, capsys):
    # a server's usual end: SIGTERM with Python's default handler, so atexit never runs
    (workdir / "job.py").write_text(JOB + "import os, signal\nrun()\nos.kill(os.getpid(), signal.SIGTERM)\n")
    status = main(["-q", "--profile", "--no-baseline-run", "--", sys.executable, "job.py"])
    assert status == 0, capsys.readouterr().err
    doc = json.loads((workdir / "scope-otel.plan.json").read_text())
    assert doc["functions"]["job:step"]["estimated_calls"] == 300


def test_a_program_with_its_own_sigterm_handler_keeps_it(workdir, capsys):
    (workdir / "job.py").write_text(
        JOB + "import os, signal, sys\n"
        "def bye(signum, frame):\n    open('handled', 'w').close()\n    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nrun()\nos.kill(os.getpid(), signal.SIGTERM)\n")
    status = main(["-q", "--profile", "--no-baseline-run", "--", sys.executable, "job.py"])
    assert status == 0, capsys.readouterr().err
    assert (workdir / "handled").exists()  # the program's handler ran, not the counter's
    doc = json.loads((workdir / "scope-otel.plan.json").read_text())
    assert doc["functions"]["job:step"]["estimated_calls"] == 300
