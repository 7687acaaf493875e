"""Value snapshots run none of the program's code, and still show what a value holds."""
from __future__ import annotations

import collections
import datetime
import functools
import weakref
import decimal
import enum
import fractions
import pathlib
import re
import uuid

import pytest

from scope_otel import config
from scope_otel.capture import runtime, snapshot as snapshot_module
from scope_otel.capture.snapshot import snapshot


class Tripwire(Exception):
    pass


def _trip(*_a, **_k):
    raise Tripwire("the program's code ran")


class Hostile:
    """Every hook the snapshot must never call raises."""

    __repr__ = __str__ = __len__ = __iter__ = __eq__ = __hash__ = __getattr__ = __format__ = _trip
    __bool__ = __getstate__ = __reduce__ = __reduce_ex__ = __sizeof__ = __dir__ = _trip

    def __init__(self):
        self.a = 1
        self.b = [2, "three"]

    @property
    def lazy(self):
        raise Tripwire("a property ran")


class HostileList(list):
    __repr__ = __iter__ = __len__ = __getitem__ = _trip


class HostileDict(dict):
    __repr__ = __iter__ = __len__ = __getitem__ = items = keys = values = _trip


class HostileStr(str):
    __repr__ = __str__ = __getitem__ = __len__ = _trip


class Meta(type):
    __repr__ = _trip


class WithMeta(metaclass=Meta):
    pass


class Slotted:
    __slots__ = ("x", "y", "__weakref__")
    __getattribute__ = _trip

    def __init__(self):
        object.__setattr__(self, "x", 3)


class Color(enum.Enum):
    RED = 1

    def __repr__(self):
        raise Tripwire("enum repr ran")


class Pair(collections.namedtuple("Pair", "left right")):
    __repr__ = _trip


class SneakyUUID(uuid.UUID):
    def __str__(self):
        raise Tripwire("a stdlib repr written in Python calls an overridden __str__")


def test_objects_of_user_types_show_their_type_identity_and_stored_fields_and_nothing_runs():
    h = Hostile()
    assert snapshot(h, 500) == f"<{__name__}.Hostile at {id(h):#x}: a=1, b=[2, 'three']>"
    s = Slotted()
    assert snapshot(s, 500) == f"<{__name__}.Slotted at {id(s):#x}: x=3>"
    assert snapshot(Color.RED, 500) == f"<{__name__}.Color.RED: 1>"
    assert snapshot(Pair(1, h), 500) == f"{__name__}.Pair(left=1, right=<{__name__}.Hostile at {id(h):#x}: a=1, b=[2, 'three']>)"
    assert snapshot(WithMeta, 500) == f"<class '{__name__}.WithMeta'>"


def test_subclasses_of_builtins_are_read_from_the_builtin_storage():
    assert snapshot(HostileList([1, 2]), 500) == f"{__name__}.HostileList([1, 2])"
    assert snapshot(HostileDict(k="v"), 500) == f"{__name__}.HostileDict({{'k': 'v'}})"
    assert snapshot(HostileStr("text"), 500) == f"{__name__}.HostileStr('text')"
    assert snapshot({HostileStr("k"): [HostileList()]}, 500) == \
        f"{{{__name__}.HostileStr('k'): [{__name__}.HostileList([])]}}"


def test_nested_user_objects_below_the_field_depth_show_type_and_identity_only():
    inner = Hostile()
    outer = Hostile()
    outer.child = inner
    inner.child = Hostile()
    text = snapshot(outer, 2000)
    assert f"child=<{__name__}.Hostile at {id(inner):#x}: a=1, b=[2, 'three'], child=<{__name__}.Hostile at {id(inner.child):#x}>>" in text


def test_an_object_that_refers_to_itself_is_shown_once():
    h = Hostile()
    h.me = h
    assert snapshot(h, 500) == f"<{__name__}.Hostile at {id(h):#x}: a=1, b=[2, 'three'], me=<{__name__}.Hostile at {id(h):#x}>>"


@pytest.mark.parametrize("value", [
    datetime.datetime(2024, 5, 6, 7, 8, 9), datetime.date(2024, 1, 2), datetime.timedelta(seconds=5),
    decimal.Decimal("1.50"), fractions.Fraction(1, 3), uuid.UUID(int=5), pathlib.PurePosixPath("/a/b"),
    datetime.timezone.utc, 10 ** 30, -0.0, b"\x00\xff",
])
def test_standard_library_values_of_exact_types_look_as_repr_shows_them(value):
    assert snapshot(value, 500) == repr(value)


def test_a_stdlib_subclass_whose_repr_would_call_its_overrides_is_shown_as_an_object():
    u = SneakyUUID(int=5)
    text = snapshot(u, 500)
    assert text.startswith(f"<{__name__}.SneakyUUID at {id(u):#x}")
    # a C repr reads the stored value only: used for subclasses too
    d = type("MyDate", (datetime.date,), {"__repr__": _trip, "isoformat": _trip})(2024, 1, 2)
    assert snapshot(d, 500) == "MyDate(2024, 1, 2)"
    f = type("MyFloat", (float,), {"__repr__": _trip})(1.5)
    assert snapshot(f, 500) == f"{__name__}.MyFloat(1.5)"


def test_a_huge_int_is_described_not_converted():
    assert snapshot(1 << 100_000, 500) == "<int of 100001 bits>"


def test_value_repr_opts_types_in_to_repr_knowingly(monkeypatch):
    class Mine:
        def __repr__(self):
            return "Mine!"

    cfg = config.load(env={"SCOPE_OTEL_VALUE_REPR": f"{__name__}.*Mine"})
    assert cfg.value_repr == (f"{__name__}.*Mine",)
    try:
        runtime.configure(cfg)
        assert snapshot([Mine()], 500) == "[Mine!]"
        assert snapshot(Hostile(), 500).startswith("<")  # other types: still never repr()
    finally:
        snapshot_module.set_repr_types(())
    assert snapshot(Mine(), 500).startswith(f"<{__name__}.")


def test_orm_instances_show_loaded_fields_and_never_load_anything():
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy import event
    from sqlalchemy.orm import Session, declarative_base, deferred

    Base = declarative_base()

    class Item(Base):
        __tablename__ = "items"
        id = sqlalchemy.Column(sqlalchemy.Integer, primary_key=True)
        name = sqlalchemy.Column(sqlalchemy.String)
        notes = deferred(sqlalchemy.Column(sqlalchemy.String))

        def __repr__(self):
            return f"Item({self.notes})"  # would load the deferred column

    engine = sqlalchemy.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Item(id=1, name="a", notes="n"))
        session.commit()
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with Session(engine) as session:
        item = session.get(Item, 1)
        before = list(statements)
        text = snapshot(item, 500)
        assert statements == before  # no query
        assert "id=1" in text and "name='a'" in text and "notes" not in text


def _corpus():
    h = Hostile()
    h.me = h
    loop: list = [1]
    loop.append(loop)
    deep: list = []
    for i in range(30):
        deep = [i, deep]
    d = {"k": [1, (2,), {3}], 4: frozenset(), "s": set(), (): (1,), "t": ()}
    values = [
        h, Hostile(), Slotted(), Color.RED, Pair(1, h), WithMeta, HostileList([1, h]), HostileDict(a=h),
        HostileStr("x" * 50), loop, deep, d, [d, d], "ab" * 40, b"x" * 99, bytearray(b"y" * 70), 1 << 9000,
        -5, 2.5, 1j, None, True, range(4), ..., NotImplemented, object, len, _trip, datetime.date(2020, 1, 1),
        collections.deque([1, 2]), collections.OrderedDict(a=1), collections.Counter("aab"),
        type("F", (float,), {})(2.5), type("I", (int,), {"__repr__": _trip})(7), KeyError("k", h),
        SneakyUUID(int=1), [Hostile() for _ in range(20)], {Slotted(): 1}, memoryview(b"ab"),
        type("B", (bytes,), {})(b"zz" * 30), type("S", (set,), {})({1, 2}), type("FS", (frozenset,), {})(),
        ["it's", 'say "x"', "tab\there", "back\\slash", "\x7f", "\x00", "é", "日本", ""],
        [0, -1, 2 ** 63 - 1, -2 ** 63, 2 ** 63, -2 ** 64, 10 ** 100],
        (x for x in ()), h.__init__, [].append, functools.partial(len), iter([]), property(), staticmethod(len),
        collections.namedtuple("NT", "a b")(1, [2]), _trip.__get__(h), Pair.__repr__, weakref.ref(Hostile),
        uuid.UUID(int=5), fractions.Fraction(1, 3), pathlib.PurePosixPath("/a"), re.compile("a+"),
        decimal.Decimal("1.5"), datetime.datetime(2020, 1, 2, 3, 4), object(), [re.compile("x"), uuid.UUID(int=1)],
    ]
    inner = Hostile()
    inner.child = Hostile()
    outer = Hostile()
    outer.child = inner
    values.append(outer)
    return values


@pytest.mark.parametrize("limit", [1, 5, 17, 40, 120, 513, 100_000])
def test_the_c_snapshot_writes_the_same_text_as_the_python_one(limit):
    native = pytest.importorskip("scope_otel.capture._speedups")
    for value in _corpus():
        assert native.snapshot(value, limit) == snapshot(value, limit), value.__class__


def test_the_c_snapshot_sends_opted_in_types_to_the_python_walk():
    native = pytest.importorskip("scope_otel.capture._speedups")

    class Mine:
        def __repr__(self):
            return "Mine!"

    snapshot_module.set_repr_types([f"{__name__}.*Mine"])
    try:
        assert native.snapshot([Mine(), 1], 100) == snapshot([Mine(), 1], 100) == "[Mine!, 1]"
    finally:
        snapshot_module.set_repr_types(())
    assert native.snapshot(Mine(), 100).startswith("<")


def test_int_enums_and_slotted_subclasses_look_the_same_from_c_and_python():
    native = pytest.importorskip("scope_otel.capture._speedups")

    class Level(enum.IntEnum):
        LOW = 1

    class Flags(enum.Flag):
        A = 1
        B = 2

    class Base:
        __slots__ = ("a",)

    class Derived(Base):
        __slots__ = ("b", "__dict__")

        def __init__(self):
            self.a, self.b, self.c = 1, [2], "three"

    for value in (Level.LOW, Flags.A | Flags.B, Derived(), [Derived()], {"k": Level.LOW}):
        for limit in (3, 30, 500):
            assert native.snapshot(value, limit) == snapshot(value, limit)
    assert snapshot(Level.LOW, 500) == f"<{__name__}.{Level.__qualname__}.LOW: 1>"


def test_slots_read_through_the_c_cache_follow_classes_that_come_and_go():
    # The C walk remembers each class's slots by the class's address and version tag: classes
    # freed and created again (often at the same address), with other slots, must still be read
    # as they are now, and the cache must not keep a class alive.
    native = pytest.importorskip("scope_otel.capture._speedups")
    import gc

    for i in range(200):
        names = tuple(f"s{i}_{k}" for k in range(i % 5 + 1))
        cls = type(f"Shape{i}", (), {"__slots__": names})
        obj = cls()
        for k, name in enumerate(names[:-1]):  # the last slot stays empty
            setattr(obj, name, k)
        assert native.snapshot(obj, 513) == snapshot(obj, 513)
        alive = weakref.ref(cls)
        del cls, obj
        gc.collect()
        assert alive() is None
    base = type("Base", (), {"__slots__": ("a",)})
    obj = type("Leaf", (base,), {"__slots__": ("b",)})()
    obj.a, obj.b = 1, 2
    first = native.snapshot(obj, 513)
    obj.a = [3]
    assert native.snapshot(obj, 513) == snapshot(obj, 513) != first


def _raised(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - any exception, as the hot path sees it
        return exc
    raise AssertionError("did not raise")


def _deep(n):
    if n == 0:
        raise ValueError("bottom", n)
    _deep(n - 1)


class _Grammar:
    def __init__(self):
        self.name, self.items = "expr", [1, 2]


class _ParseError(Exception):
    def __init__(self, text, loc, elem):
        super().__init__(text, loc, "Expected " + elem.name)
        self.elem = elem


def _chained():
    try:
        try:
            {}["k"]
        except KeyError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError:
        raise OSError(2, "No such file")  # context: RuntimeError, its cause: KeyError


def _cycle():
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    raise a


def _suppressed():
    try:
        raise KeyError(1)
    except KeyError:
        raise TypeError("plain") from None


def _exception_cases():
    yield _raised(lambda: _deep(3))
    yield _raised(lambda: _deep(100))  # head 16 + tail 48, 37 left out
    yield _raised(lambda: _deep(63))   # exactly 64 frames: none left out
    yield _raised(_chained)
    yield _raised(_cycle)
    yield _raised(_suppressed)
    yield _raised(lambda: exec("raise _ParseError('x' * 2000, 7, _Grammar())", {"_ParseError": _ParseError,
                                                                                "_Grammar": _Grammar}))
    yield _raised(lambda: 1 / 0)
    yield _raised(lambda: {}[("a", 1)])
    yield _ParseError("t", 0, _Grammar())  # never raised
    yield KeyboardInterrupt()  # never raised: no traceback
    yield Exception()
    yield Exception(_Grammar())
    yield _raised(lambda: __import__("json").loads("{"))  # a C-raised exception of a Python class


@pytest.mark.parametrize("limit", [5, 64, 513])
def test_the_c_exception_summary_is_the_python_one(limit):
    native = pytest.importorskip("scope_otel.capture._speedups")
    for _ in range(3):  # the second and third time through the C frame cache
        for exc in _exception_cases():
            assert native.exception_summary(exc, limit) == snapshot_module.exception_summary(exc, limit), exc


def test_the_c_exception_summary_cache_follows_code_that_comes_and_goes():
    # Frames are cached by their code object's address and offset: code compiled again (often at
    # the same address) with the same names but other lines must show its own lines, and the cache
    # must keep no code object alive.
    native = pytest.importorskip("scope_otel.capture._speedups")
    import gc

    for i in range(100):
        ns: dict = {}
        exec(compile("\n" * (i % 7) + "def f():\n    raise ValueError(1)\n", "same.py", "exec"), ns)
        exc = _raised(ns["f"])
        assert native.exception_summary(exc, 100) == snapshot_module.exception_summary(exc, 100)
        assert native.exception_summary(exc, 100)[3][-1] == ("same.py", 2 + i % 7, "f")
        alive = weakref.ref(ns["f"].__code__)
        del ns, exc
        gc.collect()
        assert alive() is None
