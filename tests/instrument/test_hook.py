"""The import hook: what it rewrites, what it refuses, and how it fails."""
from __future__ import annotations

import importlib
import logging
import sys

import pytest

from scope_otel import config
from scope_otel.capture import runtime
from scope_otel.instrument import hook
from scope_otel.instrument.exclusions import never_instrumented
from scope_otel.instrument.rewrite import MARKER
from scope_otel.plan import Plan, plan_from_document
from tests.instrument.conftest import deeply_nested


def test_only_planned_functions_are_instrumented(load, recorded):
    source = """
        def wanted():
            return 1

        def ignored():
            return 2
    """
    document = {"version": 1, "functions": {}}
    m = load(source, plan=_ExplicitPlan(document, "wanted"))
    assert m.wanted() == 1 and m.ignored() == 2
    assert recorded.names() == ["wanted"]
    assert not any(n.startswith("_@") for n in m.ignored.__code__.co_varnames)


class _ExplicitPlan:
    """A real Plan whose single entry names the module once it is known."""

    def __init__(self, document: dict, qualname: str) -> None:
        self.document, self.qualname, self.plan = document, qualname, None
        self.hash = "explicit"

    def wants_module(self, name: str) -> bool:
        if self.plan is None and name.endswith(".m"):
            doc = dict(self.document, functions={f"{name}:{self.qualname}": {"level": "full"}})
            self.plan = plan_from_document(doc)
        return self.plan is not None and self.plan.wants_module(name)

    def for_function(self, module: str, qualname: str):
        return self.plan.for_function(module, qualname)


def test_levels_switch_at_run_time_without_reimport(load, recorded, tmp_path):
    m = load("def f(x):\n    return x\n", "full")
    saved = config.current()
    config.set_current(config.load(env={}, cwd=str(tmp_path)))
    try:
        config.update(level="off")
        assert m.f(1) == 1 and recorded.take() == []
        config.update(level="boundaries")
        assert m.f(2) == 2
        (call,) = recorded.take()
        assert call.args is None
        config.update(function_levels={f"{m.__name__}:f": "full"})
        assert m.f(3) == 3
        (call,) = recorded.take()
        assert call.args == {"x": 3} and call.value == 3
    finally:
        config.set_current(saved)
        runtime._recompute(saved)


def test_a_function_planned_at_boundaries_records_arguments_once_switched_to_full(load, recorded, tmp_path):
    m = load("def f(x, *rest, key=None):\n    return x\n", "boundaries")
    assert m.f(1) == 1
    (call,) = recorded.take()
    assert call.args is None and call.value is None
    saved = config.current()
    config.set_current(config.load(env={}, cwd=str(tmp_path)))
    try:
        config.update(function_levels={f"{m.__name__}:f": "full"})
        assert m.f(2, 3, key="k") == 2
        (call,) = recorded.take()
        assert call.args == {"x": 2, "rest": "(3,)", "key": "k"} and call.value == 2
    finally:
        config.set_current(saved)
        runtime._recompute(saved)


def test_a_module_that_cannot_be_rewritten_is_imported_unmodified_with_one_warning(load, recorded, caplog):
    # as many nested blocks as Python allows; the rewrite's try would be one more
    with caplog.at_level(logging.WARNING, logger="scope_otel.instrument"):
        m = load(deeply_nested())
    assert m.deep() == 1 and m.shallow() == "ok"
    assert MARKER not in vars(m)
    warnings = [r for r in caplog.records if r.name == "scope_otel.instrument"]
    assert len(warnings) == 1
    assert m.__name__ in warnings[0].getMessage() and "nested blocks" in warnings[0].getMessage()
    assert recorded.take() == []


def test_a_broken_plan_never_breaks_the_import(load, caplog):
    class Broken(Plan):
        def for_function(self, module, qualname):
            raise RuntimeError("plan exploded")

    base = Plan.from_globs(["scopetest*"], "full")
    broken = Broken({}, hash="broken", rules=base._rules)
    with caplog.at_level(logging.WARNING, logger="scope_otel.instrument"):
        m = load("def f():\n    return 5\n", plan=broken)
    assert m.f() == 5
    assert any("plan exploded" in r.getMessage() for r in caplog.records)


def test_syntax_errors_surface_exactly_as_without_scope_otel(load):
    with pytest.raises(SyntaxError) as info:
        load("def broken(:\n    pass\n")
    assert info.value.filename.endswith("m.py") and info.value.lineno == 1


def test_coding_cookies_are_honoured(load, tmp_path, recorded):
    text = "# -*- coding: latin-1 -*-\ndef word():\n    return 'caf\xe9'\n"
    m = load("", name="empty")
    path = tmp_path / f"root_{m.__name__.split('.')[0]}" / m.__name__.split(".")[0] / "latin.py"
    path.write_bytes(text.encode("latin-1"))
    hook.install(Plan.from_globs([m.__name__.split(".")[0] + ".*"], "full"))
    try:
        latin = importlib.import_module(m.__name__.split(".")[0] + ".latin")
    finally:
        hook.uninstall()
    assert latin.word() == "café"
    assert recorded.names() == ["word"]


def test_scope_otel_its_dependencies_and_the_standard_library_are_never_rewritten():
    finder = hook.ImportHook(Plan.from_globs(["*"], "full"))
    for name in ("scope_otel.version", "opentelemetry.trace", "wrapt", "json", "asyncio.tasks"):
        assert never_instrumented(name)
        assert finder.find_spec(name) is None


def test_unplanned_imports_pass_straight_through():
    finder = hook.ImportHook(Plan.from_globs(["nothing_like_this.*"], "full"))
    assert finder.find_spec("email.mime") is None
    assert finder.find_spec("some_package") is None


def test_install_replaces_an_earlier_hook_and_uninstall_removes_it():
    first = hook.install(Plan.from_globs(["a.*"], "full"))
    second = hook.install(Plan.from_globs(["b.*"], "full"))
    try:
        assert first not in sys.meta_path and second in sys.meta_path
        # ahead of the ordinary path finder, behind wrapt's post-import finder
        assert sys.meta_path.index(second) < sys.meta_path.index(importlib.machinery.PathFinder)
        assert hook.installed() is second
    finally:
        hook.uninstall()
    assert second not in sys.meta_path and hook.installed() is None


def test_other_tools_post_import_hooks_still_run_after_the_rewrite(load, recorded):
    import wrapt

    anchor = load("", name="anchor", via="plain")
    package = anchor.__name__.split(".")[0]
    with open(anchor.__file__.replace("anchor.py", "hooked.py"), "w") as fh:
        fh.write("def f():\n    return 1\n")
    seen = []
    wrapt.register_post_import_hook(lambda module: seen.append(vars(module).get(MARKER)), f"{package}.hooked")
    hook.install(Plan.from_globs([f"{package}.*"], "full"))
    try:
        hooked = importlib.import_module(f"{package}.hooked")
    finally:
        hook.uninstall()
    assert seen == [True] and hooked.f() == 1 and recorded.names() == ["f"]


def test_rewritten_modules_keep_their_source_loader_apis(load):
    m = load("def f():\n    return 1\n")
    assert m.__spec__.origin.endswith("m.py") and m.__file__ == m.__spec__.origin
    assert "def f" in m.__loader__.get_source(m.__name__)
    assert isinstance(m.__loader__, importlib.machinery.SourceFileLoader)


def test_module_docstring_and_future_imports_stay_first(load):
    m = load('''
        """The module's own docstring."""
        from __future__ import annotations

        def f(x: NotDefinedAnywhere) -> int:
            return 1
    ''')
    assert m.__doc__ == "The module's own docstring."
    assert m.f.__annotations__ == {"x": "NotDefinedAnywhere", "return": "int"}


def test_reload_rewrites_again(load, recorded):
    m = load("def f():\n    return 1\n")
    hook.install(Plan.from_globs([m.__name__.split(".")[0] + ".*"], "full"))
    try:
        again = importlib.reload(m)
    finally:
        hook.uninstall()
    assert again is m and vars(m).get(MARKER) and m.f() == 1
    assert recorded.names() == ["f"]
