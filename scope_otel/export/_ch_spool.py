"""An on-disk spool of batches that could not be written yet.

A batch lands here when the server is unreachable or when the embedded store
is held by another process (chDB opens a data directory in one process at a
time).  Whichever process next gets the store replays every spooled batch,
its own and other processes', oldest first.

Files are ``<ns>-<pid>-<seq>.json``, written to a temporary name and renamed,
so a reader never sees half a file.  A reader claims a file by renaming it to
``*.claim-<pid>`` before inserting it and deletes it afterwards; a claim left
by a process that died is released after ``stale_claim_s``.  A crash between
insert and delete replays that batch twice (at-least-once); the views
collapse duplicate spans.

The spool is bounded (``max_bytes``); a batch that does not fit is dropped and
counted by the caller.
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Iterator

_SUFFIX = ".json"
_counter = itertools.count()


class Spool:
    def __init__(self, folder: str, max_bytes: int = 256 << 20, stale_claim_s: float = 300.0) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.stale_claim_s = stale_claim_s

    def put(self, payload: str) -> bool:
        """Store one batch; False when the spool is full or unwritable."""
        data = payload.encode("utf-8", "surrogatepass")
        if self.size() + len(data) > self.max_bytes:
            return False
        os.makedirs(self.folder, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}{_SUFFIX}"
        tmp = os.path.join(self.folder, "." + name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, os.path.join(self.folder, name))
        return True

    def pending(self) -> list[str]:
        """Spooled batch files, oldest first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.endswith(_SUFFIX) and not n.startswith("."))

    def size(self) -> int:
        total = 0
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    try:
                        total += entry.stat().st_size
                    except OSError:
                        pass
        except FileNotFoundError:
            pass
        return total

    def claim(self, limit: int | None = None) -> Iterator[tuple[str, str]]:
        """Yield ``(claimed path, payload)`` for batches this process now owns.

        The caller inserts the payload, then calls :meth:`done` (or
        :meth:`release` to put it back).
        """
        self._release_stale()
        for name in self.pending()[:limit]:
            src = os.path.join(self.folder, name)
            claimed = f"{src}.claim-{os.getpid()}"
            try:
                os.rename(src, claimed)
            except OSError:
                continue  # another process claimed it first
            try:
                with open(claimed, "rb") as fh:
                    payload = fh.read().decode("utf-8", "surrogatepass")
            except OSError:
                continue
            yield claimed, payload

    def done(self, claimed: str) -> None:
        try:
            os.unlink(claimed)
        except OSError:
            pass

    def release(self, claimed: str) -> None:
        """Put a claimed batch back for a later attempt."""
        try:
            os.rename(claimed, claimed.rsplit(".claim-", 1)[0])
        except OSError:
            pass

    def quarantine(self, claimed: str) -> None:
        """Move a batch the store rejects out of the way (kept for inspection)."""
        bad = os.path.join(self.folder, "rejected")
        os.makedirs(bad, exist_ok=True)
        try:
            os.rename(claimed, os.path.join(bad, os.path.basename(claimed).rsplit(".claim-", 1)[0]))
        except OSError:
            pass

    def _release_stale(self) -> None:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        now = time.time()
        for name in names:
            if ".claim-" not in name:
                continue
            path = os.path.join(self.folder, name)
            pid = name.rsplit(".claim-", 1)[1]
            try:
                old = now - os.stat(path).st_mtime > self.stale_claim_s
            except OSError:
                continue
            if old or not _alive(pid):
                self.release(path)


def _alive(pid_text: str) -> bool:
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
