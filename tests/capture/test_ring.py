"""The ring buffer: overflow strategies, ordering and counters under concurrent producers."""
from __future__ import annotations

import threading

import pytest

from scope_otel.capture import _accel
from scope_otel.capture.ring import Ring

PRODUCERS = 4
PER_PRODUCER = 5000


@pytest.fixture(params=["c", "python"])
def ring_impl(request):
    impl = _accel.load(pure=request.param == "python")
    if impl.name != request.param:
        pytest.skip("C accelerator not built; pure-Python path only")
    return impl


def _produce(ring: Ring, consumer_batches: list | None = None) -> None:
    start = threading.Barrier(PRODUCERS)

    def producer(p: int) -> None:
        start.wait()
        for i in range(PER_PRODUCER):
            ring.put((p, i))

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(PRODUCERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _assert_per_producer_fifo(items: list) -> None:
    last = {}
    for p, i in items:
        assert i > last.get(p, -1), f"producer {p}: {i} after {last.get(p)}"
        last[p] = i


def test_drop_oldest_keeps_the_newest_in_order_and_counts_every_drop(ring_impl):
    ring = Ring(1000, "drop_oldest", impl=ring_impl)
    _produce(ring)
    items = ring.take(10_000)
    c = ring.counters()
    total = PRODUCERS * PER_PRODUCER
    assert len(items) == 1000
    _assert_per_producer_fifo(items)
    # the survivors are each producer's last items
    for p in range(PRODUCERS):
        mine = [i for q, i in items if q == p]
        assert mine == list(range(PER_PRODUCER - len(mine), PER_PRODUCER))
    assert c["written"] == total
    assert c["dropped_oldest"] == total - 1000
    assert c["read"] == 1000
    assert c["dropped_newest"] == 0 and c["size"] == 0 and c["high_water"] == 1000


def test_drop_newest_keeps_the_oldest_and_counts_refusals(ring_impl):
    ring = Ring(1000, "drop_newest", impl=ring_impl)
    _produce(ring)
    items = ring.take(10_000)
    c = ring.counters()
    assert len(items) == 1000
    _assert_per_producer_fifo(items)
    for p in range(PRODUCERS):
        mine = [i for q, i in items if q == p]
        assert mine == list(range(len(mine)))
    assert c["written"] == 1000
    assert c["dropped_newest"] == PRODUCERS * PER_PRODUCER - 1000
    assert c["dropped_oldest"] == 0 and c["dropped"] == c["dropped_newest"]


def test_block_loses_nothing_while_a_consumer_drains(ring_impl):
    ring = Ring(64, "block", block_timeout=30.0, impl=ring_impl)
    got: list = []
    done = threading.Event()

    def consumer():
        while not done.is_set() or len(ring):
            got.extend(ring.take(16))

    t = threading.Thread(target=consumer)
    t.start()
    _produce(ring)
    done.set()
    t.join()
    c = ring.counters()
    assert len(got) == PRODUCERS * PER_PRODUCER
    _assert_per_producer_fifo(got)
    assert c["dropped"] == 0 and c["written"] == c["read"] == len(got)
    assert c["high_water"] <= 64


def test_block_gives_up_after_its_timeout_and_counts_it(ring_impl):
    ring = Ring(4, "block", block_timeout=0.01, impl=ring_impl)
    results = [ring.put(i) for i in range(6)]
    assert results[:4] == [1, 2, 3, 4]
    assert results[4:] == [-1, -1]
    c = ring.counters()
    assert c["dropped_block_timeout"] == 2 and c["dropped"] == 2
    assert ring.take(10) == [0, 1, 2, 3]


def test_block_after_one_timeout_drops_at_once_until_the_consumer_takes_again(ring_impl):
    # a hung exporter takes nothing: the application must pay one wait, not one per record
    ring = Ring(2, "block", block_timeout=0.01, impl=ring_impl)
    assert [ring.put(i) for i in range(3)] == [1, 2, -1]  # the third waited 10 ms, then dropped
    ring.block_timeout = 3600.0  # were later puts to wait again, they would not be done in a minute
    results: list = []
    putter = threading.Thread(target=lambda: results.extend(ring.put(i) for i in range(3, 100)), daemon=True)
    putter.start()
    putter.join(60)
    assert not putter.is_alive(), "later puts waited for room although the consumer is stuck"
    assert results == [-1] * 97
    assert ring.counters()["dropped_block_timeout"] == 98
    assert ring.take(1) == [0]  # the consumer is back: waiting for room is worth it again
    assert ring.put(100) == 2
    got = []
    consumer = threading.Timer(0.05, lambda: got.extend(ring.take(10)))
    consumer.start()
    assert ring.put(101) == 1  # waited for the consumer's take, not dropped
    consumer.join()
    assert got == [1, 100] and ring.take(10) == [101]


def test_many_consumers_each_item_is_taken_once(ring_impl):
    ring = Ring(100_000, "drop_newest", impl=ring_impl)
    _produce(ring)
    seen: list = []
    lock = threading.Lock()

    def consumer():
        while True:
            batch = ring.take(7)
            if not batch:
                return
            with lock:
                seen.extend(batch)

    threads = [threading.Thread(target=consumer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == len(set(seen)) == PRODUCERS * PER_PRODUCER


def test_wake_fires_when_a_batch_is_waiting_and_on_drops(ring_impl):
    ring = Ring(8, "drop_oldest", impl=ring_impl)
    calls = []
    ring.set_wake(lambda: calls.append(len(ring)), 3)
    for i in range(3):
        ring.put(i)
    assert calls == [3]
    for i in range(6):  # fills to 8, then the first drop wakes again
        ring.put(i)
    assert calls == [3, 8]


def test_bad_arguments_are_refused_with_a_clear_message(ring_impl):
    with pytest.raises(ValueError, match="overflow"):
        Ring(8, "sometimes", impl=ring_impl)
    with pytest.raises(ValueError, match="capacity"):
        Ring(0, impl=ring_impl)
