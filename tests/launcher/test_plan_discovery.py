"""The plan is used without naming it again: ``run``, ``compile`` and ``config`` find ``scope-otel.plan.json``."""
from __future__ import annotations

import json
import os
import sys

import pytest

from scope_otel import config as _config
from tests.support.procs import clean_env, run, tool

LIB = "def work(x):\n    return x * 2\n"
APP = "from lib import work\n\nprint(sum(work(i) for i in range(5)))\n"


def _plan(folder, qualname="work", module="lib"):
    """A plan with one function at full, written by ``scope-otel plan`` itself."""
    from scope_otel.planner.cli import main

    assert main([str(folder / f"{module}.py"), "-q", "--pin", f"{module}:{qualname}=full",
                 "-o", str(folder / "scope-otel.plan.json")]) == 0
    return folder / "scope-otel.plan.json"


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "lib.py").write_text(LIB)
    return tmp_path


def test_config_finds_the_plan_in_the_working_directory(project):
    plan = _plan(project)
    cfg = _config.load(env={}, cwd=str(project))
    assert cfg.plan == str(plan) and cfg.source("plan") == "found in the working directory"
    assert "found in the working directory" in cfg.describe()


def test_config_finds_the_plan_in_the_project_root_from_a_subfolder(project):
    plan = _plan(project)
    (project / "src" / "deep").mkdir(parents=True)
    cfg = _config.load(env={}, cwd=str(project / "src" / "deep"))
    assert cfg.plan == str(plan) and cfg.source("plan") == f"found in the project root {project}"


def test_no_plan_outside_the_project(project, tmp_path_factory):
    _plan(project)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / ".git").mkdir()  # another project, without a plan
    assert _config.load(env={}, cwd=str(elsewhere)).plan is None


@pytest.mark.parametrize("flags, env", [
    ({"plan": "none"}, {}),
    ({"plan": ""}, {}),
    ({}, {"SCOPE_OTEL_PLAN": "none"}),
    ({"level": "off"}, {}),
    ({}, {"SCOPE_OTEL_LEVEL": "off"}),
    ({"instrument": "lib"}, {}),
])
def test_an_explicit_empty_plan_level_off_or_instrument_globs_turn_finding_off(project, flags, env):
    _plan(project)
    assert _config.load(flags=flags, env=env, cwd=str(project)).plan is None


def test_an_explicit_plan_wins(project):
    _plan(project)
    other = project / "other.plan.json"
    other.write_text((project / "scope-otel.plan.json").read_text())
    cfg = _config.load(flags={"plan": str(other)}, env={}, cwd=str(project))
    assert cfg.plan == str(other) and cfg.source("plan") == "flag --plan"


def test_run_records_the_found_plan_and_names_it_at_start(project, otlp_receiver):
    _plan(project)
    result = run([tool("scope-otel"), "run", "--log_level", "info", "--", sys.executable, "app.py"],
                 clean_env(**otlp_receiver.env("grpc")), cwd=str(project))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "20"
    assert "scope-otel run: plan scope-otel.plan.json (found in the working directory)" in result.stderr
    spans = otlp_receiver.wait_for(5)
    assert [s["name"] for s in spans].count("work") == 5


def test_run_with_level_off_records_no_function_and_says_so(project, otlp_receiver):
    _plan(project)
    result = run([tool("scope-otel"), "run", "--log_level", "info", "--level", "off", "--", sys.executable,
                  "app.py"],
                 clean_env(**otlp_receiver.env("grpc")), cwd=str(project))
    assert result.returncode == 0, result.stderr
    assert "no plan" in result.stderr
    assert not [s for s in otlp_receiver.spans if s["name"] == "work"]


def test_compile_uses_the_found_plan(project):
    _plan(project)
    result = run([tool("scope-otel"), "compile", "lib.py"], clean_env(XDG_CACHE_HOME=str(project / "cache")),
                 cwd=str(project))
    assert result.returncode == 0, result.stderr
    assert "compiled lib" in result.stdout
    assert "found in the working directory" in result.stderr
