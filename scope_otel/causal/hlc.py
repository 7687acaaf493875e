"""Hybrid logical clock: causal order that survives clock skew.

Each process keeps one :class:`HybridLogicalClock` (``clock()``).  A timestamp
is ``(physical ms, logical counter, node id)``: the physical part follows the
wall clock when it moves forward, the counter orders events inside one
millisecond or while the wall clock lags behind a timestamp received from a
faster node.  The rules (Kulkarni et al., "Logical Physical Clocks", 2014):

* ``now()`` (a local or send event) never returns a timestamp lower than any
  earlier one of this clock;
* ``update(remote)`` (a receive event) returns a timestamp above both the
  remote one and every earlier local one.

So if event *a* happened before *b* (same process, or *a* sent a message that
led to *b*), ``hlc(a) < hlc(b)`` even when the nodes' wall clocks disagree.

Timestamps encode to a compact string that sorts like the timestamp::

    0192a4f1c2e80003.api-7f3a
    └ ms, 12 hex ┘└ctr┘ └ node

That string is what travels in ``tracestate`` (see ``propagator.py``) and what
spans carry as ``scope.hlc`` (see ``processor.py``), so ``ORDER BY`` on the
column is causal order.

Configuration (keys ``clock_skew_ms``, ``node_id`` and ``hlc_max_offset_ms`` of
:mod:`scope_otel.config`: environment, config file or launcher flag, read
when the process clock is first used):

``SCOPE_OTEL_CLOCK_SKEW_MS``
    artificial skew added to this process' wall clock, for tests and demos of
    skewed nodes (e.g. ``-2000``); span timestamps move with it.
``SCOPE_OTEL_NODE_ID``
    node id in timestamps (default: derived from host name and pid).
``SCOPE_OTEL_HLC_MAX_OFFSET_MS``
    a received timestamp further than this ahead of the local wall clock is
    ignored (counted in ``stats()``), so one broken peer cannot drag every
    clock into the future (default 300000, five minutes).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
from typing import NamedTuple

_log = logging.getLogger(__name__)

SKEW_ENV = "SCOPE_OTEL_CLOCK_SKEW_MS"
NODE_ENV = "SCOPE_OTEL_NODE_ID"
MAX_OFFSET_ENV = "SCOPE_OTEL_HLC_MAX_OFFSET_MS"

_PHYS_DIGITS = 12  # hex ms: enough until the year 10889
_LOGICAL_DIGITS = 4
_LOGICAL_MAX = (1 << (4 * _LOGICAL_DIGITS)) - 1
_PHYS_FORMAT = "%%0%dx" % _PHYS_DIGITS
_LOGICAL_FORMAT = "%%0%dx" % _LOGICAL_DIGITS
_FORMAT = _PHYS_FORMAT + _LOGICAL_FORMAT + ".%s"  # what stamp() writes in pieces
_NODE_OK = re.compile(r"[a-z0-9_\-]{1,32}")
_ENCODED = re.compile(r"([0-9a-f]{%d})([0-9a-f]{%d})\.([a-z0-9_\-]{1,32})" % (_PHYS_DIGITS, _LOGICAL_DIGITS))


class HLCTimestamp(NamedTuple):
    """One reading of a hybrid logical clock; tuples compare causally."""

    physical_ms: int
    logical: int
    node: str

    def encode(self) -> str:
        """The compact, sortable text form (valid as a W3C tracestate value)."""
        return _FORMAT % self  # %-formatting: a third of an f-string with nested specs

    @classmethod
    def decode(cls, text: str) -> "HLCTimestamp":
        """Parse :meth:`encode` output; ``ValueError`` names what is wrong."""
        match = _ENCODED.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"not a scope-otel HLC timestamp: {text!r}")
        return cls(int(match.group(1), 16), int(match.group(2), 16), match.group(3))


_new_timestamp = tuple.__new__
_LOGICAL_CACHED = 256  # within one millisecond the counter rarely goes past a few
_LOGICAL_TEXT = tuple(_LOGICAL_FORMAT % i for i in range(_LOGICAL_CACHED))


def node_id(name: str | None = None) -> str:
    """A tracestate-safe node id: *name* cleaned up, or one unique to this process."""
    if name:
        cleaned = re.sub(r"[^a-z0-9_\-]+", "-", name.lower()).strip("-")[:32]
        if cleaned:
            return cleaned
    seed = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}".encode()
    return hashlib.blake2b(seed, digest_size=4).hexdigest()


class HybridLogicalClock:
    """A thread-safe hybrid logical clock.

    *skew_ms* shifts the wall clock this clock reads (simulated skew);
    *max_offset_ms* bounds how far ahead a remote timestamp may be.
    """

    def __init__(self, node: str | None = None, *, skew_ms: int = 0, max_offset_ms: int = 300_000) -> None:
        self.node = node_id(node)
        if not _NODE_OK.fullmatch(self.node):  # pragma: no cover - node_id guarantees it
            raise ValueError(f"bad HLC node id {self.node!r}")
        self.skew_ms = int(skew_ms)
        self.max_offset_ms = int(max_offset_ms)
        self._lock = threading.Lock()
        self._physical = 0
        self._logical = 0
        self._rejected = 0
        self._merged = 0
        self._text_ms, self._text = -1, ""  # the physical part's text, for stamp()
        self._tail = "." + self.node

    def wall_ms(self) -> int:
        """The (possibly skewed) wall clock, in ms since the epoch."""
        return time.time_ns() // 1_000_000 + self.skew_ms

    def now(self) -> HLCTimestamp:
        """Timestamp a local or send event."""
        wall = self.wall_ms()
        with self._lock:
            self._advance(wall)
            # tuple.__new__ skips the NamedTuple's Python-level __new__: this runs for every span
            return _new_timestamp(HLCTimestamp, (self._physical, self._logical, self.node))

    def stamp(self) -> str:
        """``now().encode()``, cheaper: the text of the millisecond is kept while it lasts.

        This is the reading every span and event carries.
        """
        wall = self.wall_ms()
        with self._lock:
            self._advance(wall)
            physical, logical = self._physical, self._logical
            if physical != self._text_ms:
                self._text_ms, self._text = physical, _PHYS_FORMAT % physical
            head = self._text
        return head + (_LOGICAL_TEXT[logical] if logical < _LOGICAL_CACHED else _LOGICAL_FORMAT % logical) + self._tail

    def update(self, remote: HLCTimestamp | str) -> HLCTimestamp:
        """Timestamp a receive event carrying *remote* (a timestamp or its encoding).

        A malformed or implausibly future *remote* is ignored (counted) and
        the result is an ordinary :meth:`now`.
        """
        if isinstance(remote, str):
            try:
                remote = HLCTimestamp.decode(remote)
            except ValueError:
                return self._reject(remote, "malformed")
        wall = self.wall_ms()
        if remote.physical_ms - wall > self.max_offset_ms:
            return self._reject(remote, f"{remote.physical_ms - wall} ms ahead of the local clock")
        with self._lock:
            self._merged += 1
            local_p, local_l = self._physical, self._logical
            top = max(local_p, remote.physical_ms, wall)
            if top == local_p and top == remote.physical_ms:
                self._physical, self._logical = top, max(local_l, remote.logical)
                self._tick()
            elif top == local_p:
                self._tick()
            elif top == remote.physical_ms:
                self._physical, self._logical = top, remote.logical
                self._tick()
            else:
                self._physical, self._logical = top, 0
            return HLCTimestamp(self._physical, self._logical, self.node)

    def stats(self) -> dict[str, int]:
        """Counters: ``merged`` remote timestamps and ``rejected`` ones."""
        with self._lock:
            return {"merged": self._merged, "rejected": self._rejected}

    def _advance(self, wall: int) -> None:
        # a local event (the caller holds the lock): the wall clock if it moved on, else one tick
        if wall > self._physical:
            self._physical, self._logical = wall, 0
        else:
            self._tick()

    def _tick(self) -> None:
        # The counter has a fixed width so the encoding stays sortable; on the
        # (rare) overflow the physical part carries, which keeps monotonicity
        # at the cost of running one ms ahead of the wall clock.
        if self._logical >= _LOGICAL_MAX:
            self._physical, self._logical = self._physical + 1, 0
        else:
            self._logical += 1

    def _reject(self, remote: object, why: str) -> HLCTimestamp:
        with self._lock:
            self._rejected += 1
            first = self._rejected == 1
        if first:
            _log.warning("scope-otel: ignoring remote HLC timestamp %r (%s); further ones are only counted", remote, why)
        return self.now()

    def _after_fork(self) -> None:
        # A fork while another thread held the lock would leave the child's
        # copy locked forever.
        self._lock = threading.Lock()


_clock: HybridLogicalClock | None = None
_clock_lock = threading.Lock()


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(float(raw))
    except ValueError:
        _log.warning("scope-otel: %s=%r is not a number of milliseconds; using %d", name, raw, default)
        return default


def _settings() -> tuple[str | None, int, int]:
    """(node id, skew, max offset) from the configuration; from the raw environment if it is unreadable."""
    try:
        from scope_otel import config

        cfg = config.current()
        return cfg.node_id, cfg.clock_skew_ms, cfg.hlc_max_offset_ms
    except Exception:  # a bad config is reported by the launcher; the clock must still work
        return os.environ.get(NODE_ENV) or None, _int_env(SKEW_ENV, 0), _int_env(MAX_OFFSET_ENV, 300_000)


def clock() -> HybridLogicalClock:
    """This process' clock, created from the environment on first use."""
    global _clock
    if _clock is None:
        with _clock_lock:
            if _clock is None:
                node, skew_ms, max_offset_ms = _settings()
                _clock = HybridLogicalClock(node, skew_ms=skew_ms, max_offset_ms=max_offset_ms)
    return _clock


def set_clock(new: HybridLogicalClock | None) -> None:
    """Replace the process clock (``None``: rebuild from the environment on next use)."""
    global _clock
    with _clock_lock:
        _clock = new


def _reinit_after_fork() -> None:
    global _clock_lock
    _clock_lock = threading.Lock()
    if _clock is not None:
        _clock._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
