"""The tagged bytecode cache and ``scope-otel compile``."""
from __future__ import annotations

import importlib
import os
import re
import sys

import pytest

from scope_otel.instrument import cache, cli, hook
from scope_otel.instrument.rewrite import MARKER
from scope_otel.plan import Plan
from tests.instrument.conftest import deeply_nested

SOURCE = "def f(x):\n    return x + 1\n"


def _reimport(module_name: str, plan) -> object:
    for name in [n for n in sys.modules if n == module_name]:
        del sys.modules[name]
    importlib.invalidate_caches()
    hook.install(plan)
    try:
        return importlib.import_module(module_name)
    finally:
        hook.uninstall()


@pytest.fixture
def no_rewrite(monkeypatch):
    """Make any fresh rewrite fail, so only a cache hit can instrument."""
    def refuse(*_a, **_k):
        raise RuntimeError("rewrite was attempted")

    def arm():
        monkeypatch.setattr(hook, "rewrite_module", refuse)

    return arm


def _plan_for(module) -> Plan:
    return Plan.from_globs([module.__name__.split(".")[0] + ".*"], "full")


def test_warm_cache_is_used_and_carries_its_own_tag(load, monkeypatch, no_rewrite):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    m = load(SOURCE)
    where = cache.cache_path(m.__file__, _plan_for(m).hash)
    assert re.search(r"\.scope-otel-[0-9a-f]{12}\.pyc$", where) and os.path.exists(where)
    assert cache.entries(m.__file__) == [where]
    assert not os.path.exists(re.sub(r"\.scope-otel-[0-9a-f]{12}\.pyc$", ".pyc", where))
    assert not [n for n in os.listdir(os.path.dirname(where)) if n.endswith(".tmp")]
    no_rewrite()
    again = _reimport(m.__name__, _plan_for(m))
    assert vars(again).get(MARKER) and again.f(1) == 2


def test_a_different_plan_or_source_misses_the_cache(load, monkeypatch, no_rewrite, caplog):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    m = load(SOURCE)
    no_rewrite()
    other_plan = Plan.from_globs([m.__name__.split(".")[0] + ".*"], "boundaries")
    again = _reimport(m.__name__, other_plan)
    assert MARKER not in vars(again) and "rewrite was attempted" in caplog.text
    with open(m.__file__, "a") as fh:
        fh.write("\ndef g():\n    return 0\n")
    caplog.clear()
    edited = _reimport(m.__name__, _plan_for(m))
    assert MARKER not in vars(edited) and edited.g() == 0 and "rewrite was attempted" in caplog.text


def test_plans_taking_turns_each_keep_their_entry(load, monkeypatch, no_rewrite):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    m = load(SOURCE)  # written under the full plan
    other_plan = Plan.from_globs([m.__name__.split(".")[0] + ".*"], "boundaries")
    _reimport(m.__name__, other_plan)  # written under the second plan beside it
    assert len(cache.entries(m.__file__)) == 2
    no_rewrite()  # both read back, neither rebuilt
    assert vars(_reimport(m.__name__, _plan_for(m))).get(MARKER)
    assert vars(_reimport(m.__name__, other_plan)).get(MARKER)


def test_a_module_keeps_the_entries_of_its_most_recent_plans(load, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    m = load(SOURCE)
    globs = [m.__name__.split(".")[0] + ".*"]
    plans = [Plan.from_globs(globs + [f"other{i}.*"], "full") for i in range(cache.KEEP + 3)]
    assert len({p.hash for p in plans}) == len(plans)
    for plan in plans:
        _reimport(m.__name__, plan)
    kept = cache.entries(m.__file__)
    assert len(kept) == cache.KEEP
    assert cache.cache_path(m.__file__, plans[-1].hash) in kept
    assert cache.cache_path(m.__file__, _plan_for(m).hash) not in kept


def test_corrupt_cache_entries_are_rebuilt(load, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    m = load(SOURCE)
    where = cache.cache_path(m.__file__, _plan_for(m).hash)
    with open(where, "r+b") as fh:
        data = fh.read()
        fh.seek(0)
        fh.write(data[: len(data) // 2])
        fh.truncate()
    again = _reimport(m.__name__, _plan_for(m))
    assert vars(again).get(MARKER) and again.f(2) == 3
    with open(where, "rb") as fh:
        assert len(fh.read()) == len(data)


def test_dont_write_bytecode_is_honoured(load):
    m = load(SOURCE)  # the fixture sets sys.dont_write_bytecode
    assert vars(m).get(MARKER)
    assert cache.entries(m.__file__) == []


def test_pycache_prefix_is_honoured(load, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "prefix"))
    m = load(SOURCE)
    where = cache.cache_path(m.__file__, _plan_for(m).hash)
    assert where.startswith(str(tmp_path / "prefix")) and os.path.exists(where)
    assert not os.path.exists(os.path.join(os.path.dirname(m.__file__), "__pycache__"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_locations_mean_no_cache_not_an_error(load, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    m = load("", name="first")
    package_dir = os.path.dirname(m.__file__)
    with open(os.path.join(package_dir, "ro.py"), "w") as fh:
        fh.write(SOURCE)
    os.chmod(package_dir, 0o555)
    try:
        ro = _reimport(m.__name__.rsplit(".", 1)[0] + ".ro", _plan_for(m))
        assert vars(ro).get(MARKER) and ro.f(1) == 2
        assert cache.entries(ro.__file__) == []
    finally:
        os.chmod(package_dir, 0o755)


def test_read_only_cache_writes_fail_quietly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = compile("x = 1", "x.py", "exec")
    assert cache.write(str(blocker / "sub" / "x.pyc"), b"k" * 32, code) is False


def test_compile_command_builds_the_cache_the_hook_reads(load, monkeypatch, no_rewrite, capsys):
    m = load("", name="anchor", via="plain")
    package = m.__name__.split(".")[0]
    package_dir = os.path.dirname(m.__file__)
    for name, text in (("a.py", SOURCE), ("b.py", "class K:\n    def m(self):\n        return 'k'\n")):
        with open(os.path.join(package_dir, name), "w") as fh:
            fh.write(text)
    # sys.dont_write_bytecode is set by the fixture: compile writes anyway, like compileall
    assert cli.main(["--instrument", f"{package}.*", "--level", "full", package_dir]) == 0
    out = capsys.readouterr().out
    assert f"compiled {package}.a" in out and f"compiled {package}.b" in out
    no_rewrite()
    plan = Plan.from_globs([f"{package}.*"], "full")
    a = _reimport(f"{package}.a", plan)
    b = _reimport(f"{package}.b", plan)
    assert vars(a).get(MARKER) and vars(b).get(MARKER) and b.K().m() == "k"


def test_compile_command_reports_modules_it_cannot_rewrite(load, capsys):
    m = load("", name="anchor", via="plain")
    package = m.__name__.split(".")[0]
    path = os.path.join(os.path.dirname(m.__file__), "deep.py")
    with open(path, "w") as fh:
        fh.write(deeply_nested())
    assert cli.main(["-q", "--instrument", f"{package}.*", path]) == 1
    assert f"FAILED {package}.deep" in capsys.readouterr().err


def test_compile_command_names_an_unreadable_plan(capsys):
    assert cli.main(["--plan", "/nonexistent/plan.json", "."]) == 2
    assert "/nonexistent/plan.json" in capsys.readouterr().err


def test_an_unwritable_cache_location_still_imports_instrumented(load, monkeypatch, tmp_path):
    # works as root too: nobody can create a directory under a regular file
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", str(blocker))
    m = load(SOURCE)
    assert vars(m).get(MARKER) and m.f(1) == 2


def test_compile_command_reads_a_plan_file(load, tmp_path, capsys):
    import json

    m = load("", name="anchor", via="plain")
    package = m.__name__.split(".")[0]
    path = os.path.join(os.path.dirname(m.__file__), "planned.py")
    with open(path, "w") as fh:
        fh.write("def wanted():\n    return 1\n\ndef other():\n    return 2\n")
    plan_file = tmp_path / "scope-otel.plan.json"
    plan_file.write_text(json.dumps({"version": 1, "functions": {f"{package}.planned:wanted": {"level": "full"}}}))
    assert cli.main(["--plan", str(plan_file), os.path.dirname(path)]) == 0
    assert f"compiled {package}.planned" in capsys.readouterr().out
    [entry] = cache.entries(path)
    with open(entry, "rb") as fh:
        assert b"wanted" in fh.read()
