"""The hybrid logical clock: monotonic, causal across skewed nodes, sortable encoding."""
from __future__ import annotations

import threading

import pytest

from scope_otel import config
from scope_otel.causal.hlc import HLCTimestamp, HybridLogicalClock, clock, set_clock


def test_now_is_strictly_increasing_even_when_wall_clock_stands_still(monkeypatch):
    hlc = HybridLogicalClock("n1")
    monkeypatch.setattr(hlc, "wall_ms", lambda: 1_000)
    stamps = [hlc.now() for _ in range(5)]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 5
    assert [s.logical for s in stamps] == [0, 1, 2, 3, 4]


def test_now_never_goes_back_when_wall_clock_jumps_backwards(monkeypatch):
    hlc = HybridLogicalClock("n1")
    wall = iter([5_000, 4_000, 3_000])
    monkeypatch.setattr(hlc, "wall_ms", lambda: next(wall))
    a, b, c = hlc.now(), hlc.now(), hlc.now()
    assert a < b < c
    assert c.physical_ms == 5_000


def test_receive_from_a_node_three_seconds_ahead_orders_after_the_send():
    ahead = HybridLogicalClock("ahead", skew_ms=3_000)
    behind = HybridLogicalClock("behind", skew_ms=-2_000)
    sent = ahead.now()
    received = behind.update(sent)
    later = behind.now()
    assert sent < received < later
    # the reply travels back to the fast node and still orders after
    assert ahead.update(later) > later


def test_merge_rules_pick_the_maximum_and_bump_the_counter(monkeypatch):
    hlc = HybridLogicalClock("me")
    monkeypatch.setattr(hlc, "wall_ms", lambda: 100)
    hlc.now()  # (100, 0)
    # remote ahead of both: take its physical part, counter + 1
    assert hlc.update(HLCTimestamp(200, 7, "peer"))[:2] == (200, 8)
    # remote equal physical: max counter + 1
    assert hlc.update(HLCTimestamp(200, 3, "peer"))[:2] == (200, 9)
    assert hlc.update(HLCTimestamp(200, 20, "peer"))[:2] == (200, 21)
    # remote behind: local counter + 1
    assert hlc.update(HLCTimestamp(50, 99, "peer"))[:2] == (200, 22)
    # wall clock ahead of both: counter resets
    monkeypatch.setattr(hlc, "wall_ms", lambda: 300)
    assert hlc.update(HLCTimestamp(250, 5, "peer"))[:2] == (300, 0)


def test_counter_overflow_carries_into_physical_part_and_stays_monotonic(monkeypatch):
    hlc = HybridLogicalClock("me")
    monkeypatch.setattr(hlc, "wall_ms", lambda: 100)
    top = hlc.update(HLCTimestamp(100, 0xFFFF, "peer"))
    assert top[:2] == (101, 0)
    assert hlc.now() > top


def test_stamp_is_the_encoding_of_the_next_reading_and_shares_its_order(monkeypatch):
    hlc = HybridLogicalClock("n1")
    wall = iter([1_000] * 300 + [999, 1_001, 1_001])
    monkeypatch.setattr(hlc, "wall_ms", lambda: next(wall))
    mixed = []
    for i in range(300):  # past the cached counter texts (256) within one millisecond
        mixed.append(hlc.stamp() if i % 2 else hlc.now().encode())
    mixed += [hlc.stamp(), hlc.stamp(), hlc.now().encode()]  # the wall clock goes back, then on
    readings = [HLCTimestamp.decode(text) for text in mixed]
    assert [r.logical for r in readings[:300]] == list(range(300))
    assert readings[300] == (1_000, 300, "n1")
    assert readings[301:] == [(1_001, 0, "n1"), (1_001, 1, "n1")]
    assert mixed == sorted(mixed) and len(set(mixed)) == len(mixed)
    assert all(text == r.encode() for text, r in zip(mixed, readings))


def test_encoding_round_trips_and_sorts_like_the_timestamps():
    stamps = [
        HLCTimestamp(1, 0, "b"),
        HLCTimestamp(1, 1, "a"),
        HLCTimestamp(1, 0x10, "a"),
        HLCTimestamp(0x1000, 0, "a"),
        HLCTimestamp(0x19A4F1C2E80, 3, "api-7f3a"),
    ]
    encoded = [s.encode() for s in stamps]
    assert [HLCTimestamp.decode(e) for e in encoded] == stamps
    assert sorted(encoded) == [s.encode() for s in sorted(stamps)]


@pytest.mark.parametrize("bad", ["", "xyz", "0192a4f1c2e8000.n", "0192a4f1c2e80003.", "0192A4F1C2E80003.n", 42])
def test_decode_rejects_malformed_text_with_a_clear_error(bad):
    with pytest.raises(ValueError, match="not a scope-otel HLC timestamp"):
        HLCTimestamp.decode(bad)


def test_malformed_or_far_future_remote_is_ignored_and_counted():
    hlc = HybridLogicalClock("me", max_offset_ms=60_000)
    before = hlc.now()
    after_bad = hlc.update("garbage")
    future = HLCTimestamp(hlc.wall_ms() + 3_600_000, 0, "liar")
    after_future = hlc.update(future)
    assert before < after_bad < after_future < future
    assert hlc.stats() == {"merged": 0, "rejected": 2}


def test_concurrent_threads_never_receive_the_same_timestamp():
    hlc = HybridLogicalClock("me")
    seen: list[list[HLCTimestamp]] = [[] for _ in range(4)]

    def work(out):
        for _ in range(2_000):
            out.append(hlc.now())

    threads = [threading.Thread(target=work, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [s for out in seen for s in out]
    assert len(set(everything)) == len(everything)
    for out in seen:  # each thread sees its own readings increase
        assert out == sorted(out)


def test_process_clock_reads_skew_and_node_from_the_environment(monkeypatch):
    monkeypatch.setenv("SCOPE_OTEL_CLOCK_SKEW_MS", "-2000")
    monkeypatch.setenv("SCOPE_OTEL_NODE_ID", "Worker 1")
    config.set_current(config.load())
    set_clock(None)
    try:
        c = clock()
        assert c.skew_ms == -2000
        assert c.node == "worker-1"
        assert clock() is c
    finally:
        monkeypatch.undo()
        config.set_current(config.load())
        set_clock(None)
