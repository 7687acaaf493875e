"""Tell the user what scope-otel lost or changed: one line on stderr per event kind per process.

    from scope_otel import notice
    notice.tell("otlp-failed", "3 spans not exported to otlp localhost:4317: connection refused")

Drops, the overhead governor's changes and export failures must reach a person even when
the application reconfigures or silences :mod:`logging` (test runners, frameworks
and ``logging.basicConfig(force=True)`` all do), so the line is written to file
descriptor 2 directly, not through a logger or ``sys.stderr`` (which may be
replaced, or already closed at interpreter exit or in a signal handler).

Each ``key`` is written the first time it is told in a process (a forked child
starts afresh, so every process says it once); every call is counted, and
:func:`counts` gives the totals, which the exit summary shows.
"""
from __future__ import annotations

import os
import threading

__all__ = ["tell", "counts", "write"]

_lock = threading.Lock()
_seen: set[str] = set()
_counts: dict[str, int] = {}
_pid = os.getpid()


def _this_process() -> None:
    """Forget what the parent said: a child says everything once itself."""
    global _pid
    if _pid != os.getpid():
        _pid = os.getpid()
        _seen.clear()
        _counts.clear()


def tell(key: str, text: str, count: int = 1) -> bool:
    """Count ``count`` events of ``key``; on the first, write ``scope-otel: <text>`` to stderr.

    Returns True when the line was written.  Never raises.
    """
    with _lock:
        _this_process()
        _counts[key] = _counts.get(key, 0) + count
        if key in _seen:
            return False
        _seen.add(key)
    return write(" ".join(text.splitlines()))


def write(text: str) -> bool:
    """Write ``text`` (prefixed ``scope-otel: `` unless it starts so) to stderr now, whatever logging does."""
    line = text if text.startswith("scope-otel") else f"scope-otel: {text}"
    data = (line.rstrip("\n") + "\n").encode("utf-8", "backslashreplace")
    try:
        while data:
            data = data[os.write(2, data):]
        return True
    except OSError:  # stderr closed: nothing else can be done
        return False


def counts() -> dict[str, int]:
    """How many events of each key this process told.

    Read without the lock: the exit report reads it after a SIGTERM that may
    have interrupted a :func:`tell` holding it (a dict is copied in one step).
    """
    if _pid != os.getpid():
        return {}  # the parent's, not told here
    return dict(_counts)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at fork time
    _this_process()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
