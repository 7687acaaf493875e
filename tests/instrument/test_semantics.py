"""Instrumented code means what it meant: each semantic corner, at both levels.

Tests parametrised over ``via`` run the same module through the import hook
and through wrapt; the rest are about things only the rewrite can reach
(nested functions, frames, line numbers, recursion depth).
"""
from __future__ import annotations

import asyncio
import dis
import inspect
import sys
import traceback

import pytest

from scope_otel.capture import runtime


@pytest.fixture(params=["hook", "wrapt"])
def via(request) -> str:
    return request.param


BASICS = """
    import functools

    def add(a, b=2, *rest, scale=1, **extra):
        return (a + b + sum(rest)) * scale

    def fail(message):
        raise ValueError(message)

    def logged(func):
        @functools.wraps(func)
        def inner(*args, **kwargs):
            return ("logged", func(*args, **kwargs))
        return inner

    @logged
    def decorated(x):
        "decorated doc"
        return x * 10

    class Account:
        "an account"
        kind = "basic"
        count = 0

        def __init__(self, owner, balance=0):
            self.owner = owner
            self.balance = balance

        def deposit(self, amount):
            self.balance += amount
            return self.balance

        @classmethod
        def create(cls, owner):
            cls.count += 1
            return cls(owner)

        @staticmethod
        def fee(amount):
            return amount // 100

        @property
        def label(self):
            return f"{self.owner}:{self.balance}"

        @label.setter
        def label(self, value):
            self.owner = value.split(":")[0]
"""


def test_results_arguments_and_returns_are_unchanged_and_recorded_by_level(load, recorded, level, via):
    m = load(BASICS, level, via)
    assert m.add(1, 2, 3, 4, scale=2, tag="x") == 20
    (call,) = recorded.take()
    assert call.qualname == "add" and call.status == "returned"
    if level == "full":
        assert call.args == {"a": 1, "b": 2, "rest": "(3, 4)", "scale": 2, "extra": "{'tag': 'x'}"}
        assert call.value == 20
    else:
        assert call.args is None and call.value is None


def test_exceptions_propagate_unchanged_and_are_recorded(load, recorded, level, via):
    m = load(BASICS, level, via)
    with pytest.raises(ValueError, match="boom") as info:
        m.fail("boom")
    (call,) = recorded.take()
    assert (call.qualname, call.status) == ("fail", "raised")
    # a summary of immutable values, never the exception (its traceback holds frames and locals)
    qualname, module, message, frames, omitted, cause, context = call.value
    assert (qualname, module, message, omitted, cause, context) == ("ValueError", "builtins", "boom", 0, None, None)
    assert frames[-1][2] == "fail" and all(type(f) is tuple for f in frames)
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert last.name == "fail" and last.line == "raise ValueError(message)"


def test_methods_classmethods_staticmethods_and_properties_keep_descriptor_behaviour(load, recorded, level, via):
    m = load(BASICS, level, via)
    account = m.Account.create("ann")
    assert isinstance(account, m.Account) and m.Account.count == 1
    assert account.deposit(250) == 250 and account.balance == 250
    assert m.Account.fee(250) == 2 and account.fee(300) == 3
    assert account.label == "ann:250"
    account.label = "bob:1"
    assert account.owner == "bob"
    assert isinstance(inspect.getattr_static(m.Account, "create"), (classmethod, object))
    names = recorded.names()
    assert {"Account.create", "Account.__init__", "Account.deposit", "Account.fee", "Account.label"} <= set(names)
    assert names.count("Account.fee") == 2 and names.count("Account.label") == 2


def test_signatures_names_and_docs_survive(load, via):
    m = load(BASICS, "full", via)
    plain = load(BASICS, via="plain")
    for name in ("add", "fail", "decorated"):
        assert inspect.signature(getattr(m, name)) == inspect.signature(getattr(plain, name))
        assert getattr(m, name).__name__ == getattr(plain, name).__name__
        assert getattr(m, name).__qualname__ == getattr(plain, name).__qualname__
    assert inspect.signature(m.Account.deposit) == inspect.signature(plain.Account.deposit)
    assert inspect.signature(m.Account.create) == inspect.signature(plain.Account.create)
    assert m.decorated.__doc__ == "decorated doc" and m.Account.__doc__ == "an account"


def test_decorated_functions_are_recorded_inside_their_decorator(load, recorded, level):
    m = load(BASICS, level)
    assert m.decorated(4) == ("logged", 40)
    calls = recorded.take()
    assert [c.qualname for c in calls] == ["decorated", "logged.<locals>.inner"]
    inner, outer = calls[1], calls[0]
    assert outer.parent_id == inner.span_id


def test_state_changes_of_self_attributes_and_globals_are_recorded_at_full_only(load, recorded, level, via):
    m = load("""
        total = 0

        class Counter:
            def __init__(self):
                self.n = 0

            def bump(self, k):
                global total
                self.n += k
                total = total + k
                return self.n
    """, level, via)
    c = m.Counter()
    assert c.bump(5) == 5 and c.bump(2) == 7 and m.total == 7
    calls = recorded.take()
    bumps = [x for x in calls if x.qualname == "Counter.bump"]
    if via == "wrapt" or level == "boundaries":
        assert all("scope.state_change" not in x.events for x in calls)
    else:
        assert bumps[0].events == ["scope.state_change", "scope.state_change"]


def test_chained_and_unpacking_assignments_keep_their_meaning(load, recorded, level):
    m = load("""
        seen = None

        class Pair:
            def set(self, a, b):
                global seen
                self.left = seen = local = a
                self.x, self.y = a, b
                (self.z), seen = b, (local, b)
                return self.left, self.x, self.y, self.z
    """, level)
    assert m.Pair().set(1, 2) == (1, 1, 2, 2) and m.seen == (1, 2)
    (call,) = recorded.take()
    if level == "full":
        assert [t for t, _v in call.changes] == ["self.left", "global seen", "self.x", "self.y", "self.z",
                                                 "global seen"]
    else:
        assert call.changes == []


def test_unpacked_attributes_are_recorded_in_store_order_with_every_side_effect_where_it_was(load, recorded,
                                                                                              level):
    source = """
        log = []

        def key(k):
            log.append(("key", k))
            return k

        class Box:
            def __init__(self):
                self.items = {}

            @property
            def head(self):
                log.append("read head")
                return self._head

            @head.setter
            def head(self, v):
                log.append(("set head", v))
                self._head = v

            def fill(self, values):
                self.head, (self.items[key(self.head)], *self.rest), self.n = values
                first = self.pair = self.a, [self.b, *self.c] = second = (1, [2, 3, 4])
                return first, second, self.head, self.items, self.rest, self.n, self.a, self.b, self.c, self.pair

            def fill_from(self, it):
                self.head, self.tail = it  # an iterator: unpacked once, whole, before any store
                return self.head, self.tail
    """
    got, want = load(source, level), load(source, via="plain")
    for mod in (got, want):
        box = mod.Box()
        mod.result = box.fill(("h", ("x", "y", "z"), 3))
        with pytest.raises(ValueError, match="too many values"):
            box.fill_from(iter([1, 2, 3]))
        assert box.fill_from(iter([5, 6])) == (5, 6)
    assert got.result == want.result == (
        (1, [2, 3, 4]), (1, [2, 3, 4]), "h", {"h": "x"}, ["y", "z"], 3, 1, 2, [3, 4], (1, [2, 3, 4]))
    assert got.log == want.log
    # the first store, then the next target's own expressions (which read it back), then its store
    assert want.log[:3] == [("set head", "h"), "read head", ("key", "h")]
    fills = [c for c in recorded.take() if c.qualname == "Box.fill"]
    if level == "full":
        assert [t for t, _v in fills[0].changes] == ["self.head", "self.rest", "self.n", "self.pair", "self.a",
                                                     "self.b", "self.c"]
        assert [v for _t, v in fills[0].changes][:3] == ["h", "['y', 'z']", 3]  # as the runtime snaps them
    else:
        assert fills[0].changes == []


def test_state_change_hands_over_the_assigned_value_without_reading_the_attribute_back(load, recorded):
    m = load("""
        class Lazy:
            reads = 0

            @property
            def value(self):
                type(self).reads += 1
                return 1

            @value.setter
            def value(self, v):
                pass

            def set(self):
                self.value = 42
                self.value += 1
    """)
    lazy = m.Lazy()
    lazy.set()
    assert m.Lazy.reads == 1  # only the += reads it, as it would anyway


def test_generators_yield_receive_and_return_the_same_and_report_suspend_resume(load, recorded, level, via):
    m = load("""
        def echo(n):
            total = 0
            for i in range(n):
                got = yield i
                total += got or 0
            return total
    """, level, via)
    gen = m.echo(3)
    assert next(gen) == 0 and gen.send(10) == 1 and gen.send(20) == 2
    with pytest.raises(StopIteration) as stop:
        gen.send(5)
    assert stop.value.value == 35
    (call,) = recorded.take()
    assert call.qualname == "echo" and call.status == "returned"
    assert call.events == ["scope.suspend", "scope.resume"] * 3
    assert call.value == (35 if level == "full" else None)


def test_a_long_generator_keeps_the_first_events_and_counts_the_rest(load, recorded, level, via, request):
    request.addfinalizer(lambda kept=runtime._max_events: runtime.set_max_events(kept))
    runtime.set_max_events(10)
    m = load("""
        class Counter:
            def __init__(self):
                self.seen = 0

            def steps(self, n):
                for i in range(n):
                    self.seen = i
                    yield i
    """, level, via)
    assert sum(m.Counter().steps(1000)) == sum(range(1000))
    call = [c for c in recorded.take() if c.qualname == "Counter.steps"][0]
    per_step = 3 if level == "full" and via == "hook" else 2  # a state change (rewritten at full), suspend, resume
    step = ["scope.state_change", "scope.suspend", "scope.resume"][3 - per_step:]
    assert call.events[:10] == (step * 10)[:10]  # the first ten, in order
    assert len(call.events) == 11 and call.events[-1] == runtime.EVENTS_DROPPED
    assert call.dropped == per_step * 1000 - 10


def test_generator_close_is_an_exit_and_throw_reaches_the_generator(load, recorded, level, via):
    m = load("""
        def worker():
            while True:
                try:
                    yield "ready"
                except KeyError:
                    yield "handled"
    """, level, via)
    gen = m.worker()
    assert next(gen) == "ready"
    assert gen.throw(KeyError("k")) == "handled"
    gen.close()
    (call,) = recorded.take()
    assert call.status == "returned"
    assert call.events == ["scope.suspend", "scope.resume"] * 2


def test_yield_inside_expressions_and_yield_from_keep_their_values(load, recorded, level):
    m = load("""
        def inner():
            x = yield 1
            return x * 2

        def outer():
            result = yield from inner()
            pair = (yield "a"), (yield "b")
            yield from [result, pair]
            return (yield from inner())
    """, level)
    gen = m.outer()
    assert next(gen) == 1
    assert gen.send(21) == "a" and gen.send("A") == "b" and gen.send("B") == 42
    assert next(gen) == ("A", "B")
    assert next(gen) == 1
    with pytest.raises(StopIteration) as stop:
        gen.send(4)
    assert stop.value.value == 8
    calls = recorded.take()
    assert [c.qualname for c in calls] == ["inner", "inner", "outer"]
    assert all(c.status == "returned" for c in calls)


def test_throw_into_a_yield_nested_in_an_expression_resumes_first(load, recorded, level):
    m = load("""
        def pairs():
            while True:
                try:
                    got = [(yield "ask"), "tail"]
                except KeyError:
                    got = ["thrown"]
                yield got
    """, level)
    gen = m.pairs()
    assert next(gen) == "ask" and gen.throw(KeyError("k")) == ["thrown"]
    assert next(gen) == "ask" and gen.send("x") == ["x", "tail"]
    gen.close()
    (call,) = recorded.take()
    assert call.status == "returned"
    assert call.events == ["scope.suspend", "scope.resume"] * 4


DELEGATION = """
    def walk(tree):
        yield tree["name"]
        for child in tree.get("children", ()):
            yield from walk(child)

    def echo_then_return():
        try:
            got = yield "first"
            while got != "stop":
                got = yield got
        except KeyError:
            got = yield "caught"
        finally:
            cleanup.append("sub closed")
        return "sub result"

    cleanup = []

    def outer():
        result = yield from echo_then_return()
        yield result
        return (yield from iter(["plain iterator"]))

    def depth(n):
        if n:
            yield from depth(n - 1)
        else:
            yield "bottom"
"""


def test_yield_from_delegation_passes_send_throw_close_and_return_values(load, level):
    m = load(DELEGATION, level)
    plain = load(DELEGATION, via="plain")
    for mod in (m, plain):
        gen = mod.outer()
        assert next(gen) == "first" and gen.send("a") == "a" and gen.throw(KeyError("k")) == "caught"
        assert gen.send(None) == "sub result" and next(gen) == "plain iterator"
        with pytest.raises(StopIteration) as stop:
            next(gen)
        assert stop.value.value is None
        gen = mod.outer()
        next(gen)
        gen.close()
        assert mod.cleanup == ["sub closed", "sub closed"]
        gen = mod.outer()
        next(gen)
        gen.send("stop")
        with pytest.raises(ValueError):  # a plain iterator has no throw(): raised in the delegator
            gen.throw(ValueError("no throw"))


def test_yield_from_runs_the_sub_generator_under_the_delegating_one(load, recorded, level):
    m = load(DELEGATION, level)
    tree = {"name": "root", "children": [{"name": "a", "children": [{"name": "a1"}]}, {"name": "b"}]}
    assert list(m.walk(tree)) == ["root", "a", "a1", "b"]
    calls = {c.span_id: c for c in recorded.take()}
    by_name = {}
    for c in calls.values():
        by_name.setdefault(c.qualname, []).append(c)
    walks = by_name["walk"]
    roots = [c for c in walks if c.parent_id not in calls]
    assert len(walks) == 4 and len(roots) == 1
    children = [c for c in walks if c.parent_id == roots[0].span_id]
    assert len(children) == 2  # a and b, under root; a1 under a
    assert all(c.events.count("scope.suspend") == c.events.count("scope.resume") for c in walks)


def test_tracebacks_through_yield_from_match_the_source(load, level, hot_path):
    if hot_path == "python":
        pytest.skip("the pure-Python twin's yield from delegate is a Python class: its frames show")
    source = """
        def sub():
            yield 1
            raise LookupError("in sub")

        def delegator():
            got = yield from sub()
            return got
    """
    m = load(source, level)
    plain = load(source, via="plain")
    frames = []
    for mod in (m, plain):
        gen = mod.delegator()
        next(gen)
        with pytest.raises(LookupError) as info:
            next(gen)
        frames.append([(f.name, f.lineno) for f in traceback.extract_tb(info.value.__traceback__)[1:]])
    assert frames[0] == frames[1] == [("delegator", 7), ("sub", 4)]


@pytest.mark.xfail((3, 12) <= sys.version_info < (3, 12, 2), strict=True,
                   reason="CPython 3.12.0-3.12.1 cap C recursion at 1500 whatever the recursion limit (a frame "
                          "entered from C counts two): the rewrite's next()/send() hand-over is a C call, yield from "
                          "is not, so ~740 levels instead of ~965; 3.12.2 raised the cap to 8000 (gh-112215)")
def test_recursive_delegation_reaches_the_same_depth(load, level, hot_path):
    if hot_path == "python":
        pytest.skip("the pure-Python twin's yield from delegate is a Python class: a frame per level")
    m = load(DELEGATION, level)
    plain = load(DELEGATION, via="plain")

    def deepest(mod) -> int:
        low, high = 1, 5000
        while low < high:
            mid = (low + high + 1) // 2
            try:
                list(mod.depth(mid))
                low = mid
            except RecursionError:
                high = mid - 1
        return low

    # No frame per level (one would halve the depth); at the very bottom the
    # capture runtime's own calls need a few frames of headroom.
    assert deepest(plain) - 5 <= deepest(m) <= deepest(plain)


def test_generator_state_introspection_is_unchanged(load, level):
    m = load("""
        def g():
            yield 1
    """, level)
    gen = m.g()
    assert inspect.getgeneratorstate(gen) == "GEN_CREATED"
    next(gen)
    assert inspect.getgeneratorstate(gen) == "GEN_SUSPENDED"
    assert gen.gi_code.co_name == "g" and inspect.isgeneratorfunction(m.g)


def test_async_generators_asend_athrow_and_aclose(load, recorded, level, via):
    m = load("""
        import asyncio

        async def ticks(n):
            for i in range(n):
                await asyncio.sleep(0)
                try:
                    got = yield i
                except LookupError:
                    got = "thrown"
                yield got
    """, level, via)

    async def drive():
        agen = m.ticks(2)
        out = [await agen.asend(None), await agen.asend("x"), await agen.asend(None)]
        out.append(await agen.athrow(KeyError("k")))
        await agen.aclose()
        return out

    assert asyncio.run(drive()) == [0, "x", 1, "thrown"]
    (call,) = recorded.take()
    assert call.qualname == "ticks" and call.status == "returned"
    assert call.events == ["scope.suspend", "scope.resume"] * 4


def test_coroutines_await_with_async_for_and_nest_per_task(load, recorded, level, via):
    m = load("""
        import asyncio
        import contextlib

        @contextlib.asynccontextmanager
        async def opened(log):
            log.append("open")
            yield log
            log.append("close")

        async def numbers():
            for i in range(3):
                await asyncio.sleep(0)
                yield i

        async def leaf(i):
            await asyncio.sleep(0.001 * (3 - i))
            return i

        async def handler(i):
            async with opened([]) as log:
                async for n in numbers():
                    log.append(n)
            return log, await leaf(i)
    """, level, via)

    async def main():
        return await asyncio.gather(*(m.handler(i) for i in range(3)))

    results = asyncio.run(main())
    assert results == [(["open", 0, 1, 2, "close"], i) for i in range(3)]
    calls = recorded.take()
    handlers = {c.span_id: c for c in calls if c.qualname == "handler"}
    leaves = [c for c in calls if c.qualname == "leaf"]
    assert len(handlers) == 3 and len(leaves) == 3
    # each leaf is the child of its own task's handler, though the tasks interleave
    assert {c.parent_id for c in leaves} == set(handlers)


def test_closures_and_nonlocal(load, recorded, level):
    m = load("""
        def make_counter():
            count = 0
            def increment(by=1):
                nonlocal count
                count += by
                return count
            return increment
    """, level)
    inc = m.make_counter()
    assert inc() == 1 and inc(5) == 6
    assert inc.__closure__[0].cell_contents == 6
    names = recorded.names()
    assert names == ["make_counter", "make_counter.<locals>.increment", "make_counter.<locals>.increment"]


def test_zero_argument_super_and_class_cell(load, level, via):
    m = load("""
        class Base:
            def greet(self):
                return "base"

        class Child(Base):
            def greet(self):
                return "child+" + super().greet()

            def klass(self):
                return __class__
    """, level, via)
    assert m.Child().greet() == "child+base"
    assert m.Child().klass() is m.Child


def test_names_line_numbers_and_code_attributes_match_the_source(load, level):
    source = """
        import sys

        def compute(x):
            y = x + 1
            z = y * 2
            return z

        class K:
            @staticmethod
            def where():
                return sys._getframe().f_lineno
    """
    m = load(source, level)
    plain = load(source, via="plain")
    for a, b in ((m.compute, plain.compute), (m.K.where, plain.K.where)):
        assert a.__code__.co_name == b.__code__.co_name
        if sys.version_info >= (3, 11):  # co_qualname came with 3.11
            assert a.__code__.co_qualname == b.__code__.co_qualname
        assert a.__code__.co_firstlineno == b.__code__.co_firstlineno
        assert a.__code__.co_filename.endswith("m.py")
        first = b.__code__.co_firstlineno
        # None: from 3.13 the cleanup code the compiler adds for the rewrite's try has no line
        lines_a = {line for _o, line in dis.findlinestarts(a.__code__)} - {first, None}
        lines_b = {line for _o, line in dis.findlinestarts(b.__code__)} - {first, None}
        assert lines_a == lines_b
    assert m.K.where() == plain.K.where()
    assert inspect.getsource(m.compute) == inspect.getsource(plain.compute)


def test_tracebacks_point_at_the_original_lines(load, level):
    source = """
        def outer(x):
            return inner(x)

        def inner(x):
            value = {}[x]
            return value
    """
    m = load(source, level)
    plain = load(source, via="plain")
    frames = []
    for mod in (m, plain):
        with pytest.raises(KeyError) as info:
            mod.outer("k")
        frames.append([(f.name, f.lineno, f.line) for f in traceback.extract_tb(info.value.__traceback__)[1:]])
    assert frames[0] == frames[1] == [("outer", 3, "return inner(x)"), ("inner", 6, "value = {}[x]")]


def test_return_inside_finally_swallows_the_exception_as_before(load, recorded, level):
    m = load("""
        def swallow():
            try:
                raise RuntimeError("lost")
            finally:
                return "finally wins"

        def override():
            try:
                return "try"
            finally:
                return "finally"
    """, level)
    assert m.swallow() == "finally wins" and m.override() == "finally"
    calls = recorded.take()
    assert [c.status for c in calls] == ["returned", "returned"]
    if level == "full":
        assert [c.value for c in calls] == ["finally wins", "finally"]


def test_every_way_out_of_a_plain_function_ends_its_call_once(load, recorded, level):
    m = load("""
        def early(x):
            if x > 1:
                return "big"
            elif x == 1:
                return
            print_nothing = x
        def raises_in_return(x):
            return 1 // x
        def last_is_if(x):
            if x:
                return "yes"
            else:
                return "no"
    """, level)
    assert [m.early(2), m.early(1), m.early(0), m.last_is_if(0), m.last_is_if(1)] == ["big", None, None, "no", "yes"]
    with pytest.raises(ZeroDivisionError):
        m.raises_in_return(0)
    calls = recorded.take()
    assert [(c.qualname, c.status) for c in calls] == [
        ("early", "returned"), ("early", "returned"), ("early", "returned"),
        ("last_is_if", "returned"), ("last_is_if", "returned"), ("raises_in_return", "raised")]
    if level == "full":
        assert [c.value for c in calls[:5]] == ["big", None, None, "no", "yes"]


def test_code_that_runs_after_a_return_runs_inside_the_call(load, recorded, level):
    # a with block's exit and a loop's abandoned generator belong to the
    # function that returned, before it ends
    m = load("""
        def cleanup():
            return "clean"

        class Guard:
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                cleanup()
                return False

        def items():
            try:
                yield 1
                yield 2
            finally:
                cleanup()

        def guarded():
            with Guard():
                return "guarded"

        def first():
            for item in items():
                return item
    """, level)
    assert m.guarded() == "guarded" and m.first() == 1
    calls = recorded.take()
    names = [c.qualname for c in calls]
    assert names == ["Guard.__enter__", "cleanup", "Guard.__exit__", "guarded", "cleanup", "items", "first"]
    by_name = {}
    for c in calls:
        by_name.setdefault(c.qualname, []).append(c)
    assert by_name["Guard.__exit__"][0].parent_id == by_name["guarded"][0].span_id
    assert by_name["items"][0].parent_id == by_name["first"][0].span_id


def test_recursion_depth_is_unchanged(load, level, hot_path):
    if hot_path == "python":
        pytest.skip("the pure-Python twin's enter is a Python call: at the limit it needs frames of its own")
    source = """
        def depth(n=0):
            try:
                return depth(n + 1)
            except RecursionError:
                return n
    """
    m = load(source, level)
    plain = load(source, via="plain")
    if sys.version_info >= (3, 11):
        assert m.depth() == plain.depth()
    else:  # 3.10 counts a call into C against the limit: the probe's enter needs one level at the bottom
        assert plain.depth() - 1 <= m.depth() <= plain.depth()


def test_frame_inspection_sees_the_users_locals(load, level):
    m = load("""
        import sys

        def snapshot(a, b=2):
            c = a + b
            frame_locals = dict(sys._getframe().f_locals)
            return locals(), vars(), frame_locals, "{a}-{b}-{c}".format(**locals())
    """, level)
    loc, var, frame_locals, text = m.snapshot(1)
    assert set(loc) == set(var) == {"a", "b", "c", "frame_locals"}
    assert {k: frame_locals[k] for k in ("a", "b", "c")} == {"a": 1, "b": 2, "c": 3}
    assert not any(k.isidentifier() and k.startswith("_@") for k in frame_locals)  # ours are not identifiers
    assert text == "1-2-3"


def test_lambdas_are_left_alone_and_class_bodies_run_once(load, recorded, level):
    m = load("""
        ran = []

        class Config:
            ran.append("body")
            square = staticmethod(lambda x: x * x)
            items = [i for i in range(3)]

            class Inner:
                def method(self):
                    return "inner"
    """, level)
    assert m.ran == ["body"] and m.Config.items == [0, 1, 2]
    assert m.Config.square(4) == 16
    assert not any(n.startswith("_@") for n in m.Config.square.__code__.co_varnames)
    assert m.Config.Inner().method() == "inner"
    assert recorded.names() == ["Config.Inner.method"]


def test_nested_functions_are_recorded_with_their_caller_as_parent(load, recorded, level):
    m = load("""
        def outer(n):
            def helper(i):
                return i * i
            return [helper(i) for i in range(n)]
    """, level)
    assert m.outer(3) == [0, 1, 4]
    calls = recorded.take()
    outer = calls[-1]
    assert outer.qualname == "outer"
    helpers = [c for c in calls if c.qualname == "outer.<locals>.helper"]
    assert len(helpers) == 3 and all(h.parent_id == outer.span_id for h in helpers)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* is Python 3.11+")
def test_except_star_handles_exception_groups(load, recorded, level):
    m = load("""
        def split():
            seen = []
            try:
                raise ExceptionGroup("many", [ValueError(1), TypeError(2)])
            except* ValueError as group:
                seen.append(("value", len(group.exceptions)))
            except* TypeError as group:
                seen.append(("type", len(group.exceptions)))
            return seen

        def leak():
            try:
                raise ExceptionGroup("many", [ValueError(1), KeyError(2)])
            except* ValueError:
                pass
    """, level)
    assert m.split() == [("value", 1), ("type", 1)]
    with pytest.raises(ExceptionGroup) as info:
        m.leak()
    assert [type(e) for e in info.value.exceptions] == [KeyError]
    assert [c.status for c in recorded.take()] == ["returned", "raised"]


def test_module_level_names_do_not_leak_through_star_import(load, tmp_path):
    m = load("def f():\n    return 1\n")
    namespace: dict = {}
    exec(f"from {m.__name__} import *", namespace)
    assert {k for k in namespace if k != "__builtins__"} == {"f"}


def test_a_rewritten_module_gains_no_callable(load):
    # code that lists a module's callables (toolz's curried-namespace test
    # does) must find the same ones: injected names hold modules, data, probes
    source = "def f(x):\n    return x\n\nclass C:\n    def m(self):\n        return 1\n"
    m = load(source)
    plain = load(source, via="plain")
    callables = lambda mod: {k for k, v in vars(mod).items() if callable(v)}  # noqa: E731
    assert callables(m) == callables(plain) == {"f", "C"}
    assert m.f(2) == 2 and m.C().m() == 1
