"""The circuit breaker: degrade function capture when the ring keeps dropping.

Fed by the processor's worker (off the hot path) with the ring's cumulative
``written`` and ``dropped`` counters.  When, over a window of at least
``window`` seconds, drops exceed ``threshold`` of what was offered, the level
cap goes down one step (full -> boundaries -> off); after ``cooldown`` seconds
without drops it goes back up one step.  Every trip and recovery is counted
and told on stderr (once per process and kind, :mod:`scope_otel.notice`), and
:meth:`stats` reports the current cap.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from scope_otel import notice


class CircuitBreaker:
    """Decides the level cap (2 full, 1 boundaries, 0 off) from drop rates."""

    def __init__(
        self,
        apply: Callable[[int], None],
        threshold: float = 0.01,
        window: float = 1.0,
        cooldown: float = 30.0,
    ) -> None:
        self._apply = apply
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self.cap = 2
        self.trips = 0
        self.recoveries = 0
        self._lock = threading.Lock()
        self._mark: tuple[float, int, int] | None = None
        self._last_drop = 0.0

    def observe(self, written: int, dropped: int, now: float | None = None) -> None:
        """Feed cumulative counters; may change the cap."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._mark is None:
                self._mark = (now, written, dropped)
                return
            t0, w0, d0 = self._mark
            if now - t0 < self.window:
                return
            self._mark = (now, written, dropped)
            new_drops = dropped - d0
            offered = (written - w0) + new_drops
            if new_drops > 0:
                self._last_drop = now
                if offered and new_drops / offered > self.threshold and self.cap > 0:
                    self.cap -= 1
                    self.trips += 1
                    notice.tell("breaker-trip", f"{new_drops} of {offered} records dropped in {now - t0:.1f}s; "
                                f"function capture degraded to level cap {self.cap} (2 full, 1 boundaries, 0 off)")
                    self._apply(self.cap)
            elif self.cap < 2 and now - self._last_drop >= self.cooldown:
                self.cap += 1
                self.recoveries += 1
                notice.tell("breaker-recovery", f"no drops for {self.cooldown:.0f}s; function capture "
                            f"level cap back to {self.cap}")
                self._apply(self.cap)

    def reset(self) -> None:
        with self._lock:
            self._mark = None
            if self.cap != 2:
                self.cap = 2
                self._apply(2)

    def stats(self) -> dict[str, int]:
        return {"breaker_cap": self.cap, "breaker_trips": self.trips, "breaker_recoveries": self.recoveries}
