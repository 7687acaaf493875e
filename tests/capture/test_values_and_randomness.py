"""The runtime leaves the application's random state alone and never reprs a huge argument whole."""
from __future__ import annotations

import builtins
import random

import pytest

from scope_otel.capture import runtime


def test_recorded_calls_do_not_consume_the_applications_random_state():
    fid = runtime.register("tests.rng", "seeded", __file__, 1, level="full",
                           capture=frozenset({"args", "return"}))
    random.seed(1234)
    expected = [random.random() for _ in range(5)]
    random.seed(1234)
    got = []
    for _ in range(5):
        token = runtime.enter(fid, {"n": 1})
        got.append(random.random())
        runtime.exit(token, None)
    assert got == expected


def test_bounded_repr_matches_repr_for_ordinary_containers():
    nested = {"a": [1, (2,)], "b": {"c": "it's"}, "e": set(), "f": (), "g": frozenset({1})}
    loop: list = [1]
    loop.append(loop)
    for value in (nested, loop, [[]] * 3, (1, 2), {3}):
        assert runtime._bounded_repr(value, 10_000) == repr(value)


def test_bounded_repr_of_deep_nesting_stops_at_a_fixed_depth():
    deep: list = []
    for i in range(100_000):  # a linked list of pairs, as an iterator's state holds it
        deep = [i, deep]
    text = runtime._bounded_repr(deep, 513)
    levels = runtime._MAX_DEPTH
    want = "".join(f"[{99_999 - i}, " for i in range(levels)) + "[...]" + "]" * levels
    assert text == want and len(text) < 513
    shallow = [[[[1, (2, {3: [4]})]]]]  # within the depth: as repr
    assert runtime._bounded_repr(shallow, 513) == repr(shallow)


def test_bounded_repr_of_a_huge_list_is_a_prefix_just_past_the_budget():
    big = list(range(1_000_000))
    text = runtime._bounded_repr(big, 513)
    assert repr(big).startswith(text)
    assert 513 < len(text) < 600  # long enough for correlation to count the truncation


@pytest.mark.parametrize("kind", [bytes, bytearray, str])
def test_a_huge_bytes_or_text_value_is_cut_before_its_repr_is_built(kind, monkeypatch):
    value = kind(b"ab" * 8_000_000) if kind is not str else "ab" * 8_000_000  # 16 MB: more-itertools' sieve
    built = []

    def counting_repr(v):
        built.append(len(v) if isinstance(v, (bytes, bytearray, str)) else 0)
        return builtins.repr(v)

    monkeypatch.setattr(runtime, "repr", counting_repr, raising=False)
    expected = builtins.repr(value[:513])
    if kind is not str:  # a str argument is kept as it is (immutable); the correlator cuts it
        assert runtime._snap(value) == builtins.repr(value[:runtime._keep])[:runtime._keep]
    assert runtime._bounded_repr({"data": value}, 513).startswith("{'data': " + expected[:-1])
    assert built and max(built) <= max(513, runtime._keep)  # the repr of a prefix, never of 16 MB
