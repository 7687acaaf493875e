"""The capture ring buffer: bounded, preallocated, never blocks unless asked.

``Ring(capacity, overflow="drop_oldest", block_timeout=1.0)``:

* ``put(item) -> int`` stores a reference and returns the new size, or -1 when
  the item was dropped.  ``drop_oldest`` overwrites the oldest item,
  ``drop_newest`` refuses the new one, ``block`` waits up to ``block_timeout``
  seconds for room and then drops the new item (counted as
  ``dropped_block_timeout``).  Once a wait has timed out, the consumer is
  taken to be stuck (a hung exporter): later puts into the full ring drop at
  once, without waiting, until the consumer takes again, so a dead backend
  costs the application one ``block_timeout``, not one per record.
* ``take(limit) -> list`` removes up to ``limit`` of the oldest items, oldest
  first.  Any number of producer and consumer threads may call these.
* ``counters()`` gives ``written`` (accepted), ``read``, ``dropped_oldest``,
  ``dropped_newest``, ``dropped_block_timeout``, ``high_water``, ``size`` and
  ``capacity``.
* ``set_wake(callback, at_size)`` calls ``callback()`` whenever a put brings the
  size to exactly ``at_size`` (how a sleeping consumer learns a batch is ready
  without a notification per item), and on the 1st, 1025th, ... drop (so a
  consumer that is stuck or gone, e.g. after a fork, still hears about it).

The storage is the C ``_speedups.Ring`` or its pure-Python twin (see
``_accel``); this wrapper only adds the waiting of ``block`` mode, which has
to release the GIL.
"""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, Callable

from scope_otel.capture import _accel

OVERFLOWS = ("drop_oldest", "drop_newest", "block")


class Ring:
    """A bounded ring of object references (see the module docstring)."""

    def __init__(
        self,
        capacity: int,
        overflow: str = "drop_oldest",
        block_timeout: float = 1.0,
        impl: SimpleNamespace | None = None,
    ) -> None:
        if overflow not in OVERFLOWS:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOWS)}, not {overflow!r}")
        raw = (impl or _accel.IMPL).Ring(int(capacity), overflow)
        self.capacity = int(capacity)
        self.overflow = overflow
        self.block_timeout = float(block_timeout)
        self._raw = raw
        self._timeouts = 0
        self._stalled = False  # a wait timed out and the consumer has not taken since
        self.set_wake = raw.set_wake
        if overflow == "block":
            self._cond = threading.Condition(threading.Lock())
            self.put = self._blocking_put
            self.take = self._take_and_notify
            self.sink: Any = self._blocking_put
        else:
            self.put: Callable[[Any], int] = raw.put
            self.take: Callable[[int], list] = raw.take
            self.sink = raw  # what HotPath writes into (C writes into a C ring directly)

    def __len__(self) -> int:
        return len(self._raw)

    def _blocking_put(self, item: Any) -> int:
        size = self._raw.put(item)
        if size >= 0:
            return size
        deadline = time.monotonic() + self.block_timeout
        with self._cond:
            while True:
                size = self._raw.put(item)
                if size >= 0:
                    return size
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stalled:
                    self._stalled = True
                    self._timeouts += 1
                    return -1
                self._cond.wait(remaining)

    def _take_and_notify(self, limit: int) -> list:
        items = self._raw.take(limit)
        if items:
            with self._cond:
                self._stalled = False
                self._cond.notify_all()
        return items

    def counters(self) -> dict[str, int]:
        out = self._raw.counters()
        out["dropped_block_timeout"] = self._timeouts
        out["dropped"] = out["dropped_oldest"] + out["dropped_newest"] + self._timeouts
        return out
