"""Complexity, state mutation, exception density, the call graph and recursion."""
from __future__ import annotations

from scope_otel.planner.callgraph import static_frequencies

METRICS = """
    CACHE = {}
    SEEN = []
    counter = 0
    LIMIT = 10

    def straight(x):
        return x + 1

    def branchy(x, items):
        if x > 0 and x < 10:
            for item in items:
                while item:
                    item -= 1
        elif x < 0:
            return [i for i in items if i]
        else:
            try:
                return int(x)
            except ValueError:
                raise
            except TypeError:
                return None
        return x if x else 0

    def bump():
        global counter
        counter += 1

    def remember(key, value):
        CACHE[key] = value
        SEEN.append(key)

    def shadowed():
        CACHE = {}
        CACHE["x"] = 1
        return CACHE

    class Account:
        def __init__(self):
            self.balance = 0
            self.history = []

        def deposit(self, amount):
            self.balance += amount
            self.history.append(amount)
            return self.balance

        def read(self):
            return self.balance

        def outer(self):
            def inner():
                return 1
            return inner()
"""


def test_cyclomatic_nesting_loops_and_exception_density_are_measured(analyse_tree):
    a = analyse_tree({"m/metrics.py": METRICS})
    straight = a.functions["m.metrics:straight"].complexity()
    assert (straight["cyclomatic"], straight["max_nesting"], straight["loops"]) == (1, 0, 0)
    c = a.functions["m.metrics:branchy"].complexity()
    # 1 + if + and + for + while + elif + comprehension(for, if) + 2 except + ternary
    assert c["cyclomatic"] == 11
    assert c["max_nesting"] == 3          # if > for > while
    assert c["loops"] == 3                # for, while, list comprehension
    assert c["handlers"] == 2 and c["raises"] == 1
    assert c["exception_density"] > 0


def test_state_mutations_of_self_globals_and_module_containers_are_listed(analyse_tree):
    a = analyse_tree({"m/metrics.py": METRICS})
    fns = a.functions
    assert fns["m.metrics:bump"].body.mutations == ["global counter"]
    assert fns["m.metrics:remember"].body.mutations == ["module CACHE", "module SEEN"]
    assert fns["m.metrics:shadowed"].body.mutations == []   # a local of the same name
    assert fns["m.metrics:Account.deposit"].body.mutations == ["self.balance", "self.history"]
    assert fns["m.metrics:Account.read"].body.mutations == []


def test_parameters_iterated_or_indexed_are_marked_as_collections(analyse_tree):
    a = analyse_tree({"m/metrics.py": METRICS})
    assert "items" in a.functions["m.metrics:branchy"].body.iterated
    assert "x" not in a.functions["m.metrics:branchy"].body.iterated


def test_nested_functions_get_python_qualnames(analyse_tree):
    a = analyse_tree({"m/metrics.py": METRICS})
    assert "m.metrics:Account.outer.<locals>.inner" in a.functions
    outer = a.functions["m.metrics:Account.outer"]
    assert "m.metrics:Account.outer.<locals>.inner" in outer.callees


RECURSION = {
    "calc/core.py": """
        from calc.helpers import normalise

        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)

        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - 1)

        def total(values):
            out = 0
            for v in values:
                out += normalise(v)
            return out

        class Tree:
            def __init__(self, children):
                self.children = children

            def size(self):
                return 1 + sum(child.size() for child in self.children)

            def depth(self):
                return 1 + max([self.depth_of(c) for c in self.children] or [0])

            def depth_of(self, child):
                return child.depth()

            def walk(self):
                return self.visit()

            def visit(self):
                return self.walk()
    """,
    "calc/helpers.py": """
        def normalise(v):
            return abs(v)

        def ping(n):
            from calc import core
            return core.pong(n)
    """,
}


def test_direct_and_mutual_recursion_are_found_through_the_call_graph(analyse_tree):
    a = analyse_tree(RECURSION)
    fns = a.functions
    assert fns["calc.core:fact"].recursion == "direct"
    assert fns["calc.core:is_even"].recursion == "mutual"
    assert fns["calc.core:is_odd"].recursion == "mutual"
    assert fns["calc.core:Tree.walk"].recursion == "mutual"     # self.m() resolved in the class
    assert fns["calc.core:Tree.visit"].recursion == "mutual"
    assert fns["calc.core:total"].recursion == "none"
    assert fns["calc.helpers:normalise"].recursion == "none"


def test_calls_resolve_across_modules_through_imports(analyse_tree):
    a = analyse_tree(RECURSION)
    total = a.functions["calc.core:total"]
    assert total.callees == {"calc.helpers:normalise": 10.0}     # once, inside one loop
    assert "calc.core:total" in a.functions["calc.helpers:normalise"].callers
    assert a.functions["calc.core:total"].complexity()["fan_out"] == 1


def test_static_frequencies_grow_with_loops_and_recursion(analyse_tree):
    a = analyse_tree(RECURSION)
    calls = static_frequencies(a)
    assert calls["calc.core:total"] == 1.0
    assert calls["calc.helpers:normalise"] == 10.0               # called in a loop of a root
    assert calls["calc.core:fact"] > calls["calc.core:total"]    # recursive
    assert all(n >= 1.0 for n in calls.values())


def test_dunder_methods_and_properties_are_assumed_hot_but_module_getattr_is_not(analyse_tree):
    a = analyse_tree({"m/lazy.py": """
        def __getattr__(name):
            return name

        class Box:
            def __eq__(self, other):
                return True

            @property
            def size(self):
                return 1
    """})
    calls = static_frequencies(a)
    assert calls["m.lazy:__getattr__"] == 1.0
    assert calls["m.lazy:Box.__eq__"] > 1.0
    assert calls["m.lazy:Box.size"] > 1.0
