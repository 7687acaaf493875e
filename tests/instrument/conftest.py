"""Fixtures for the instrumentation tests: throwaway packages and the records they produce.

``load(source)`` writes ``source`` as module ``m`` of a fresh package on a
temporary ``sys.path`` entry and imports it through the real import hook
(or, with ``via="wrapt"``, imports it plainly and wraps it).  ``recorded``
binds a private ring to the real capture runtime and decodes what reached
it, so the tests see exactly what the runtime was told.  Every test runs
against the C hot path and against its pure-Python twin (``hot_path``).
"""
from __future__ import annotations

import importlib
import itertools
import sys
import textwrap
from dataclasses import dataclass, field

import pytest

from scope_otel.capture import _accel
from scope_otel.capture import records as R
from scope_otel.capture import runtime
from scope_otel.capture.ring import Ring
from scope_otel.instrument import hook, wrap
from scope_otel.plan import Plan

_counter = itertools.count()
_C_BUILT = _accel.load(pure=False).name == "c"


@pytest.fixture(autouse=True, params=["c", "python"])
def hot_path(request):
    """Both hot-path implementations; modules loaded in the test bind the selected one."""
    if request.param == "c" and not _C_BUILT:
        pytest.skip("C accelerator not built (no compiler); pure-Python path only")
    name = runtime.use_implementation(pure=request.param == "python")
    try:
        yield name
    finally:
        runtime.use_implementation(pure=None)


@dataclass
class Call:
    qualname: str
    status: str  # "returned" | "raised"
    args: dict | None
    value: object
    events: list[str]
    span_id: int
    parent_id: int
    changes: list = field(default_factory=list)  # (target, value as recorded) per state change
    dropped: int = 0  # events past the per-call limit, as the last event counted them


class Recorded:
    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.calls: list[Call] = []

    def take(self) -> list[Call]:
        """Calls finished since the last take, in the order they ended."""
        out = []
        for token in self.ring.take(self.ring.capacity):
            status, value = token[R.STATUS], token[R.VALUE]
            _module, qualname, _f, _l = runtime.function_info(token[R.FID])
            events = [name for name, _t, _a in (token[R.EVENTS] or [])]
            changes = [(dict(a)["scope.target"], dict(a)["scope.value"]) for name, _t, a in (token[R.EVENTS] or [])
                       if name == "scope.state_change"]
            dropped = sum(dict(a)["scope.dropped"] for name, _t, a in (token[R.EVENTS] or [])
                          if name == runtime.EVENTS_DROPPED)
            out.append(Call(qualname, "raised" if status == R.RAISED else "returned", token[R.ARGS],
                            value, events, token[R.SPAN_ID], token[R.PARENT_ID], changes, dropped))
        self.calls.extend(out)
        return out

    def names(self) -> list[str]:
        return [c.qualname for c in self.take()]


@pytest.fixture
def recorded():
    ring = Ring(1 << 14)
    runtime.bind_ring(ring)
    ring.take(ring.capacity)  # whatever other tests left behind
    try:
        yield Recorded(ring)
    finally:
        runtime.unbind_ring(ring)


@dataclass
class Loaded:
    package: str
    directory: str


@pytest.fixture
def load(tmp_path, monkeypatch, recorded):
    """``load(source, level="full", via="hook", plan=None, name="m")`` -> the imported module.

    Calls made while the module is imported are drained from ``recorded``.
    """
    created: list[str] = []
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def _load(source: str, level: str = "full", via: str = "hook", plan=None, name: str = "m",
              files: dict[str, str] | None = None):
        package = f"scopetest{next(_counter)}"
        root = tmp_path / f"root_{package}"
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        for extra, text in (files or {}).items():
            (root / package / extra).write_text(textwrap.dedent(text))
        (root / package / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        created.append(package)
        plan = plan if plan is not None else Plan.from_globs([f"{package}.*"], level)
        modname = f"{package}.{name}"
        if via == "hook":
            hook.install(plan)
            try:
                module = importlib.import_module(modname)
            finally:
                hook.uninstall()
        elif via == "wrapt":
            module = importlib.import_module(modname)
            wrap.wrap_module(module, plan)
        elif via == "plain":
            module = importlib.import_module(modname)
        else:
            raise ValueError(via)
        recorded.take()
        recorded.calls.clear()
        return module

    yield _load
    hook.uninstall()
    for name in list(sys.modules):
        if name.partition(".")[0] in created:
            del sys.modules[name]


@pytest.fixture(params=["boundaries", "full"])
def level(request) -> str:
    return request.param


def deeply_nested(depth: int | None = None) -> str:
    """A module whose ``deep()`` nests ``depth`` for-loops; by default as many as Python compiles
    (20 up to 3.12, 21 on 3.13), so that the rewrite's ``try`` is one block too many."""
    if depth is None:
        depth = 1
        while _compiles(deeply_nested(depth + 1)):
            depth += 1
    lines = ["def deep():", "    total = 0"]
    for i in range(depth):
        lines.append("    " * (i + 1) + f"for i{i} in range(1):")
    lines.append("    " * (depth + 1) + "total += 1")
    lines += ["    return total", "", "def shallow():", "    return 'ok'", ""]
    return "\n".join(lines)


def _compiles(source: str) -> bool:
    try:
        compile(source, "<nested>", "exec")
    except SyntaxError:
        return False
    return True

