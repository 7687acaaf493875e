"""An on-disk queue of encoded batches between exporters and the store's owner.

Every batch for an embedded store passes through here (the application
process never opens chDB itself, see ``_ch_backend``), and batches for a
server land here while it is unreachable.  Whoever owns the store next
writes them, oldest first, its own and other processes'.

A batch is a folder ``<ns>-<pid>-<seq>/`` holding one ClickHouse Native file
per table and ``meta.json`` (table, columns, rows).  It is built under a
dot-name and renamed into place, so a reader never sees half a batch.  A
reader claims a batch by renaming it to ``*.claim-<pid>``, deletes each
table file once written and the folder at the end; a claim left by a dead
process is put back.  A crash between a write and its delete replays that
table's rows (at-least-once); the views collapse duplicate spans.

The queue is bounded (``max_bytes``); a batch that does not fit is refused
and the caller counts it as dropped.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

_counter = itertools.count()
_META = "meta.json"


@dataclass
class Part:
    table: str
    columns: list[str]
    path: str
    rows: int


class Spool:
    def __init__(self, folder: str, max_bytes: int = 1 << 30, stale_claim_s: float = 600.0) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.stale_claim_s = stale_claim_s
        self._size_checked = 0.0
        self._size = 0

    def put(self, parts: Sequence[tuple[str, list[str], bytes, int]]) -> bool:
        """Queue one batch (``(table, columns, native bytes, rows)`` per table); False if full."""
        total = sum(len(p[2]) for p in parts)
        if self._approx_size() + total > self.max_bytes:
            return False
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}"
        tmp = os.path.join(self.folder, "." + name)
        os.makedirs(tmp)
        meta = []
        for table, columns, data, rows in parts:
            with open(os.path.join(tmp, table + ".native"), "wb") as fh:
                fh.write(data)
            meta.append({"table": table, "columns": columns, "file": table + ".native", "rows": rows})
        with open(os.path.join(tmp, _META), "w", encoding="utf-8") as fh:
            json.dump({"v": 1, "parts": meta}, fh)
        os.rename(tmp, os.path.join(self.folder, name))
        self._size += total
        return True

    def pending(self) -> list[str]:
        """Queued batch names, oldest first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n[:1].isdigit() and ".claim-" not in n)

    def claim(self, limit: int | None = None) -> Iterator[tuple[str, list[Part]]]:
        """Yield ``(claimed folder, parts)`` for batches this process now owns.

        The caller writes each part, calls :meth:`part_done` after each, then
        :meth:`done` (or :meth:`release` to give the batch back).
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
                with open(os.path.join(claimed, _META), encoding="utf-8") as fh:
                    meta = json.load(fh)
                parts = [Part(p["table"], list(p["columns"]), os.path.join(claimed, p["file"]), int(p["rows"]))
                         for p in meta["parts"]]
            except (OSError, ValueError, KeyError, TypeError):
                self.quarantine(claimed)
                continue
            yield claimed, [p for p in parts if os.path.exists(p.path)]

    def part_done(self, part: Part) -> None:
        try:
            self._size -= os.path.getsize(part.path)
            os.unlink(part.path)
        except OSError:
            pass

    def done(self, claimed: str) -> None:
        shutil.rmtree(claimed, ignore_errors=True)

    def release(self, claimed: str) -> None:
        try:
            os.rename(claimed, claimed.rsplit(".claim-", 1)[0])
        except OSError:
            pass

    def quarantine(self, claimed: str) -> None:
        """Move a batch the store rejects out of the queue (kept for inspection)."""
        bad = os.path.join(self.folder, "rejected")
        os.makedirs(bad, exist_ok=True)
        try:
            os.rename(claimed, os.path.join(bad, os.path.basename(claimed).rsplit(".claim-", 1)[0]))
        except OSError:
            shutil.rmtree(claimed, ignore_errors=True)

    def _approx_size(self) -> int:
        # Walking the folder on every put would cost more than the put; refresh once a second.
        now = time.monotonic()
        if now - self._size_checked > 1.0:
            self._size_checked = now
            self._size = _tree_size(self.folder)
        return self._size

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
            try:
                old = now - os.stat(path).st_mtime > self.stale_claim_s
            except OSError:
                continue
            if old or not _alive(name.rsplit(".claim-", 1)[1]):
                self.release(path)


def _tree_size(folder: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


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
