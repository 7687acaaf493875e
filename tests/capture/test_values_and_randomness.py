"""The runtime leaves the application's random state alone and never reprs a huge argument whole."""
from __future__ import annotations

import random

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
