"""With no plan, ``scope-otel run`` records the program's own code, within the default budget."""
from __future__ import annotations

import os
import sys

from scope_otel import config as _config
from scope_otel.launcher.run import _zero_configuration
from tests.support.procs import EXAMPLES, clean_env, run, tool


def test_the_example_shop_records_its_own_functions_with_no_plan(otlp_receiver):
    demo = os.path.join(EXAMPLES, "shop_demo.py")
    result = run([tool("scope-otel"), "run", "--service_name", "shop", "--log_level", "info", "--", sys.executable,
                  demo],
                 clean_env(**otlp_receiver.env("grpc")), cwd=EXAMPLES)
    assert result.returncode == 0, result.stderr
    assert "no plan: recording the program's own code (shop, shop_demo) at boundaries within the 1000% budget" \
        in result.stderr
    spans = otlp_receiver.wait_for(20, timeout=30)
    functions = {s["name"] for s in spans if s["attributes"].get("scope.kind") == "function"}
    assert {"place_order", "Cart.add", "main"} <= functions, functions  # main(): the script's own
    assert all(s["attributes"]["code.namespace"].startswith("shop") for s in spans
               if s["attributes"].get("scope.kind") == "function")


def test_level_off_or_instrument_globs_leave_the_default_alone(tmp_path):
    (tmp_path / "app.py").write_text("import lib\n")
    (tmp_path / "lib.py").write_text("def f():\n    return 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("")
    (tmp_path / "test_app.py").write_text("")
    command = ["python", str(tmp_path / "app.py")]
    os.chdir(tmp_path)
    try:
        cfg = _config.load(env={}, cwd=str(tmp_path))
        assert _zero_configuration(cfg, command) == ["app", "app.*", "lib", "lib.*", "pkg", "pkg.*"]
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "tool.py").write_text("")
        assert _zero_configuration(cfg, [str(tmp_path / "bin" / "tool.py")])[:2] == ["app", "app.*"]
        assert "tool" in _zero_configuration(cfg, [str(tmp_path / "bin" / "tool.py")])  # run by its #! line
        assert _zero_configuration(_config.load(flags={"level": "off"}, env={}), command) == []
        assert _zero_configuration(_config.load(flags={"instrument": "lib"}, env={}), command) == []
        assert _zero_configuration(_config.load(flags={"plan": "none"}, env={}), command) == []
    finally:
        os.chdir(os.path.dirname(EXAMPLES))


def test_the_standard_library_and_site_packages_are_never_the_program():
    import json

    folder = os.path.dirname(json.__file__)  # the standard library's folder
    cfg = _config.load(env={})
    saved = os.getcwd()
    os.chdir(folder)
    try:
        assert _zero_configuration(cfg, ["python", os.path.join(folder, "__init__.py")]) == []
    finally:
        os.chdir(saved)


def test_an_installed_module_run_with_dash_m_is_not_the_program(tmp_path):
    (tmp_path / "mysite").mkdir()
    (tmp_path / "mysite" / "__init__.py").write_text("")
    saved = os.getcwd()
    os.chdir(tmp_path)
    try:
        cfg = _config.load(env={}, cwd=str(tmp_path))
        # python -m django runserver: Django is installed, the project's package is the program
        assert _zero_configuration(cfg, ["python", "-m", "django", "runserver"]) == ["mysite", "mysite.*"]
        assert _zero_configuration(cfg, ["python", "-m", "mysite.main"]) == ["mysite", "mysite.*"]
    finally:
        os.chdir(saved)


def test_compile_with_no_plan_builds_what_run_with_no_plan_reads(tmp_path):
    from scope_otel.instrument.own import own_code_globs
    from scope_otel.plan import Plan

    (tmp_path / "app.py").write_text("import lib\n")
    (tmp_path / "lib.py").write_text("def f():\n    return 1\n")
    result = run([tool("scope-otel"), "compile"], clean_env(), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "no plan: the program's own code (app, lib) at boundaries" in result.stderr
    # the cache is keyed by the plan: run's default for `python app.py` here is the same plan
    from scope_otel.instrument import cache

    ran = Plan.from_globs(own_code_globs(["python", "app.py"], str(tmp_path)), "boundaries")
    assert f"compiled lib -> {cache.cache_path(str(tmp_path / 'lib.py'), ran.hash)}" in result.stdout, result.stdout


def test_config_shows_the_zero_configuration_default(tmp_path):
    (tmp_path / "lib.py").write_text("def f():\n    return 1\n")
    shown = run([tool("scope-otel"), "config"], clean_env(), cwd=str(tmp_path))
    assert "no plan, so the zero-configuration default: the program's own code at boundaries within the 1000% " \
           "budget" in shown.stdout
    assert "working directory's (lib)" in shown.stdout
    off = run([tool("scope-otel"), "config"], clean_env(SCOPE_OTEL_LEVEL="off"), cwd=str(tmp_path))
    assert "what `scope-otel run` records: requests and SQL only (level = off)" in off.stdout
