"""The runtime leaves the application's random state alone and never copies a huge argument whole."""
from __future__ import annotations

import collections
import random

import pytest

from scope_otel.capture import runtime
from scope_otel.capture.snapshot import MAX_DEPTH, snapshot


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


def test_snapshot_matches_repr_for_ordinary_containers():
    nested = {"a": [1, (2,)], "b": {"c": "it's"}, "e": set(), "f": (), "g": frozenset({1}), "h": b"x\x00",
              "i": 1.5, "j": None, "k": True, "l": -3j, "m": range(3)}
    loop: list = [1]
    loop.append(loop)
    for value in (nested, loop, [[]] * 3, (1, 2), {3}, collections.deque([1, 2])):
        assert snapshot(value, 10_000) == repr(value)


def test_snapshot_of_deep_nesting_stops_at_a_fixed_depth():
    deep: list = []
    for i in range(100_000):  # a linked list of pairs, as an iterator's state holds it
        deep = [i, deep]
    text = snapshot(deep, 513)
    levels = MAX_DEPTH
    want = "".join(f"[{99_999 - i}, " for i in range(levels)) + "[...]" + "]" * levels
    assert text == want and len(text) < 513
    shallow = [[[[1, (2, {3: [4]})]]]]  # within the depth: as repr
    assert snapshot(shallow, 513) == repr(shallow)


def test_snapshot_of_a_huge_list_is_the_prefix_of_its_repr_cut_at_the_limit():
    big = list(range(1_000_000))
    text = snapshot(big, 513)
    assert repr(big).startswith(text) and len(text) == 513  # long enough for correlation to see the cut


@pytest.mark.parametrize("kind", [bytes, bytearray, str])
def test_a_huge_bytes_or_text_value_is_cut_before_its_repr_is_built(kind):
    import tracemalloc

    value = kind(b"ab" * 8_000_000) if kind is not str else "ab" * 8_000_000  # 16 MB: more-itertools' sieve
    tracemalloc.start()
    try:
        if kind is not str:  # a str argument is kept as it is (immutable); the correlator cuts it
            assert runtime._snap(value) == repr(value[:runtime._keep])[:runtime._keep]
        text = snapshot({"data": value}, 513)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert text == repr({"data": value[:600]})[:513]
    assert peak < 1_000_000  # the repr of a prefix, never of 16 MB
