"""Who owns an embedded store, and how another process asks for it.

chDB lets one process at a time open a data directory.  Ownership is an
``flock`` on ``<store>/scope-owner.lock`` (holding the owner's pid), taken
before the engine opens and held as long as it is open: by the store
writer, by ``scope-otel query|trace|graph``, or by an exporter in
``embedded="inprocess"`` mode.  A process that needs the store while
another owns it drops a ``scope-release-<pid>`` request file next to the
lock and waits; owners look for such files and let go when idle.
"""
from __future__ import annotations

import fcntl
import os
from typing import Any

OWNER_LOCK = "scope-owner.lock"
RELEASE_PREFIX = "scope-release-"


class StoreBusy(RuntimeError):
    """The embedded store is owned by another process (or unusable after fork)."""



def _lock_path(path: str) -> str:
    return os.path.join(path, OWNER_LOCK)



def owner_is_running(path: str) -> bool:
    """True when some process owns the embedded store at ``path``."""
    try:
        fd = os.open(_lock_path(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)



def owner_pid(path: str) -> int | None:
    try:
        with open(_lock_path(path), encoding="ascii", errors="replace") as fh:
            return int(fh.read().strip() or 0) or None
    except (OSError, ValueError):
        return None



def release_requested(path: str) -> bool:
    try:
        return any(n.startswith(RELEASE_PREFIX) for n in os.listdir(path))
    except OSError:
        return False



class _ReleaseRequest:
    """``with _ReleaseRequest(path):`` asks the current owner to let go while we wait."""

    def __init__(self, path: str) -> None:
        self.file = os.path.join(path, f"{RELEASE_PREFIX}{os.getpid()}")

    def __enter__(self) -> "_ReleaseRequest":
        try:
            with open(self.file, "w"):
                pass
        except OSError:
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            os.unlink(self.file)
        except OSError:
            pass



def _take_ownership(path: str) -> int:
    os.makedirs(path, exist_ok=True)
    fd = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreBusy(f"chdb://{path} is owned by process {owner_pid(path) or '?'}") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd
