"""Pure-Python twin of the C ring buffer (``_speedups.Ring``).

A bounded, preallocated circular array of Python object references.  Producers
call :meth:`Ring.put` from any thread; consumers call :meth:`Ring.take`.  Both
C and Python versions expose the same methods and the same counters, and
:mod:`scope_otel.capture.ring` picks one.  The pure version serialises with a
short lock (CPython may switch threads between any two bytecodes); the C
version needs none because a C function holding the GIL is never interrupted.

``block`` is handled one level up (``ring.Ring``) because waiting must release
the GIL; here a full ring in ``block`` mode simply refuses the item
(``put`` returns -1) and counts nothing, so the caller can wait and retry.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

OVERFLOWS = ("drop_oldest", "drop_newest", "block")


class Ring:
    """Bounded FIFO of object references with drop counters."""

    def __init__(self, capacity: int, overflow: str = "drop_oldest") -> None:
        if capacity < 1:
            raise ValueError("capacity must be a positive integer")
        if overflow not in OVERFLOWS:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOWS)}")
        self.capacity = capacity
        self.overflow = overflow
        self._mode = OVERFLOWS.index(overflow)
        self._slots: list[Any] = [None] * capacity
        self._head = 0  # index of the oldest item (monotonic)
        self._tail = 0  # index one past the newest item (monotonic)
        self._lock = threading.Lock()
        self._dropped_oldest = 0
        self._dropped_newest = 0
        self._high_water = 0
        self._wake_at = 0
        self._wake: Callable[[], None] | None = None
        self.put = self._make_put()

    def _make_put(self) -> Callable[[Any], int]:
        # A closure keeps the hot path to local and cell lookups.
        lock = self._lock
        slots = self._slots
        cap = self.capacity
        mode = self._mode
        ring = self

        def put(item: Any) -> int:
            """Store ``item``; return the new size, or -1 if it was not stored."""
            wake = False
            with lock:
                size = ring._tail - ring._head
                if size >= cap:
                    if mode == 0:
                        slots[ring._head % cap] = None
                        ring._head += 1
                        ring._dropped_oldest += 1
                        wake = ring._dropped_oldest & 1023 == 1
                        size -= 1
                    else:
                        if mode == 1:
                            ring._dropped_newest += 1
                            wake = ring._dropped_newest & 1023 == 1
                        size = -1
                if size >= 0:
                    slots[ring._tail % cap] = item
                    ring._tail += 1
                    size += 1
                    if size > ring._high_water:
                        ring._high_water = size
            if (wake or size == ring._wake_at) and ring._wake is not None:
                ring._wake()
            return size

        return put

    def take(self, limit: int) -> list:
        """Remove and return up to ``limit`` of the oldest items, oldest first."""
        with self._lock:
            head = self._head
            n = min(limit, self._tail - head)
            out = []
            slots, cap = self._slots, self.capacity
            for i in range(head, head + n):
                j = i % cap
                out.append(slots[j])
                slots[j] = None
            self._head = head + n
        return out

    def set_wake(self, callback: Callable[[], None] | None, at_size: int) -> None:
        """Call ``callback()`` (outside any lock) when a put makes the size
        ``at_size``, and on the 1st, 1025th, ... drop (a consumer that never
        drains, e.g. in a fork child without at-fork hooks, still hears)."""
        self._wake_at = at_size
        self._wake = callback

    def __len__(self) -> int:
        return self._tail - self._head

    def counters(self) -> dict[str, int]:
        """written, read, dropped_oldest, dropped_newest, high_water, size, capacity."""
        with self._lock:
            return {
                "written": self._tail,
                "read": self._head - self._dropped_oldest,
                "dropped_oldest": self._dropped_oldest,
                "dropped_newest": self._dropped_newest,
                "high_water": self._high_water,
                "size": self._tail - self._head,
                "capacity": self.capacity,
            }
