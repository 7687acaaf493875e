"""wrapt instrumentation: modules imported before the hook, C functions, non-source modules."""
from __future__ import annotations

import importlib
import inspect
import os
import py_compile
import sys

import wrapt

import scope_otel.instrument as instrument
from scope_otel.instrument import hook, wrap
from scope_otel.instrument.rewrite import MARKER
from scope_otel.plan import Plan, plan_from_document

SOURCE = """
    from math import sqrt

    def area(w, h):
        return w * h

    class Shape:
        def __init__(self, side):
            self.side = side

        def scaled(self, k):
            return Shape(self.side * k)

        @classmethod
        def unit(cls):
            return cls(1)

        @staticmethod
        def sides():
            return 4

        @property
        def perimeter(self):
            return self.side * 4

        def walk(self):
            yield from range(self.side)
"""


def test_apply_wraps_planned_modules_imported_before_the_hook(load, recorded):
    m = load(SOURCE, via="plain")
    plan = Plan.from_globs([m.__name__.split(".")[0] + ".*"], "full")
    try:
        instrument.apply(plan)
    finally:
        hook.uninstall()
    assert isinstance(m.area, wrapt.FunctionWrapper) and MARKER not in vars(m)
    shape = m.Shape.unit().scaled(3)
    assert (m.area(2, 3), shape.side, m.Shape.sides(), shape.perimeter, list(shape.walk())) == (6, 3, 4, 12, [0, 1, 2])
    calls = recorded.take()
    assert [c.qualname for c in calls] == [
        "Shape.__init__", "Shape.unit", "Shape.__init__", "Shape.scaled", "area", "Shape.sides",
        "Shape.perimeter", "Shape.walk",
    ]
    by_name = {c.qualname: c for c in calls}
    assert by_name["area"].args == {"w": 2, "h": 3} and by_name["area"].value == 6
    assert by_name["Shape.scaled"].args == {"k": 3}  # the receiver is not an argument
    assert by_name["Shape.walk"].events == ["scope.suspend", "scope.resume"] * 3


def test_wrapped_callables_keep_signatures_and_descriptors(load):
    m = load(SOURCE, via="wrapt")
    plain = load(SOURCE, via="plain")
    assert inspect.signature(m.area) == inspect.signature(plain.area)
    assert inspect.signature(m.Shape.scaled) == inspect.signature(plain.Shape.scaled)
    assert inspect.signature(m.Shape(1).scaled) == inspect.signature(plain.Shape(1).scaled)
    assert isinstance(inspect.getattr_static(m.Shape, "perimeter"), property)
    assert m.area.__wrapped__.__code__ is not None and m.area.__name__ == "area"


def test_wrapping_twice_changes_nothing(load):
    m = load(SOURCE, via="wrapt")
    first = m.area
    assert wrap.wrap_module(m, Plan.from_globs([m.__name__.split(".")[0] + ".*"], "full")) == 0
    assert m.area is first


def test_c_functions_named_in_the_plan_are_wrapped(load, recorded):
    m = load(SOURCE, via="plain")
    plan = plan_from_document({"version": 1, "functions": {f"{m.__name__}:sqrt": {"level": "full"}}})
    assert wrap.wrap_module(m, plan) == 1
    assert m.sqrt(16.0) == 4.0
    (call,) = recorded.take()
    assert call.qualname == "sqrt" and call.args == {"x": 16.0} and call.value == 4.0


def test_modules_that_are_not_source_are_wrapped_after_import(load, recorded):
    anchor = load("", name="anchor", via="plain")
    package = anchor.__name__.split(".")[0]
    directory = os.path.dirname(anchor.__file__)
    source = os.path.join(directory, "compiled.py")
    with open(source, "w") as fh:
        fh.write("def f(x):\n    return x * 2\n")
    py_compile.compile(source, cfile=os.path.join(directory, "compiled.pyc"), doraise=True)
    os.remove(source)  # only bytecode remains: SourcelessFileLoader, nothing to rewrite
    importlib.invalidate_caches()
    try:
        instrument.apply(Plan.from_globs([f"{package}.*"], "full"), already_imported=False)
        compiled = importlib.import_module(f"{package}.compiled")
    finally:
        hook.uninstall()
    assert MARKER not in vars(compiled) and isinstance(compiled.f, wrapt.FunctionWrapper)
    assert compiled.f(4) == 8
    assert recorded.names() == ["f"]


def test_modules_rewritten_by_the_hook_are_not_wrapped_as_well(load, recorded):
    anchor = load("", name="anchor", via="plain")
    package = anchor.__name__.split(".")[0]
    with open(os.path.join(os.path.dirname(anchor.__file__), "later.py"), "w") as fh:
        fh.write("def f():\n    return 1\n")
    plan = plan_from_document({"version": 1, "functions": {f"{package}.later:f": {"level": "full"}}})
    try:
        instrument.apply(plan)
        later = importlib.import_module(f"{package}.later")
    finally:
        hook.uninstall()
    assert vars(later).get(MARKER) and not isinstance(later.f, wrapt.FunctionWrapper)
    assert later.f() == 1 and recorded.names() == ["f"]


def test_the_capture_path_itself_is_never_wrapped():
    plan = Plan.from_globs(["*"], "full")
    for name in ("scope_otel.capture.runtime", "opentelemetry.context", "threading", "random"):
        assert wrap.wrap_module(sys.modules.get(name) or importlib.import_module(name), plan) == 0


def test_what_the_import_hook_never_rewrites_is_never_wrapped_either():
    """One list rules both ways in: a standard-library module the hook leaves
    alone is not wrapped when it was imported first."""
    plan = Plan.from_globs(["*"], "full")
    colorsys = importlib.import_module("colorsys")
    assert wrap.wrap_module(colorsys, plan) == 0
    assert wrap.wrap_imported(plan, {"colorsys": colorsys}) == 0
    assert not isinstance(colorsys.rgb_to_hsv, wrapt.FunctionWrapper)
