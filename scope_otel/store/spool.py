"""An on-disk queue of encoded batches between exporters and the store's owner.

Every batch for an embedded store passes through here (the application
process never opens chDB itself, see ``engine``), and batches for a
server land here while it is unreachable.  Whoever owns the store next
writes them, oldest first, its own and other processes'.

A batch is one file ``<ns>-<pid>-<seq>.batch``: a JSON header line (per
table: name, columns, rows, byte offset and length) followed by the tables'
ClickHouse Native blocks.  One file per batch keeps the exporting side to a
single write and rename.  It is written under a dot-name and renamed into
place, so a reader never sees half a batch.  A reader claims a batch by
renaming it to ``*.claim-<pid>`` and deletes it once written; a claim left
by a dead process, held longer than ``stale_claim_s`` by another one, or
abandoned by an interrupted drain of this one is put back.  A crash between
a write and the delete replays that batch (at-least-once); the views
collapse duplicate spans.

A written batch's file is not deleted but renamed to ``.free-<pid>-<n>``,
and the next batch is written into one of those: renames instead of
creating and deleting a file per batch.  On ext4 without a journal every new
file pays for a scan past the inodes deleted in the last minutes, and the
store's own part files pay it too.  The first ``FREE_KEEP`` free files keep
their blocks and cached pages (overwritten in place); the next ones, up to
``FREE_MAX`` free files in all, are emptied (truncated: a burst's backlog
holds no disk once written); only files beyond those are deleted.  The store
writer empties them once it is idle (``trim_later``, :meth:`Spool.trim`):
during a burst, emptying a file and then filling it again cost both sides
(blocks freed, with the mount's online discard, and allocated again), and
the benchmark's end-to-end rate was 193,602 spans/s with files emptied at
once and 209,539 without (medians of five alternated runs).

The queue is bounded (``max_bytes``, free files not counted); a batch that
does not fit is refused and the caller counts it as dropped.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

_counter = itertools.count()
#: Claims this process holds and is writing (a claim of ours not in here was abandoned).
_in_flight: set[str] = set()
SUFFIX = ".batch"
SCRATCH = ".insert-"
FREE = ".free-"
#: Written batch files kept in the folder for the next batches, with their data (see the module docstring)...
FREE_KEEP = 32
#: ... and in all, the rest emptied: a writer that falls behind by this many batches deletes none
FREE_MAX = 512
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
_REWRITE_FLAGS = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)


@dataclass
class Part:
    """One table's Native blocks inside a batch file."""

    table: str
    columns: list[str]
    rows: int
    path: str
    offset: int
    length: int

    def read_into(self, out: memoryview) -> None:
        """Read the part's bytes into ``out`` (exactly ``length`` bytes long)."""
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self.offset)
            got = 0
            while got < self.length:
                n = fh.readinto(out[got:])
                if not n:
                    raise ValueError(f"{self.path}: truncated batch")
                got += n


def read_parts(parts: Sequence[Part], into: memoryview | None = None) -> bytearray | memoryview:
    """The parts' bytes, one after the other, read straight into one buffer (new, or the start of ``into``)."""
    size = sum(p.length for p in parts)
    data = bytearray(size) if into is None else into[:size]
    view = memoryview(data)
    offset = 0
    for part in parts:
        part.read_into(view[offset:offset + part.length])
        offset += part.length
    view.release()
    return data


class Spool:
    def __init__(self, folder: str, max_bytes: int = 1 << 30, stale_claim_s: float = 600.0) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.stale_claim_s = stale_claim_s
        self._size_checked = 0.0
        self._size = 0
        self._free: list[str] = []  # free files seen at the last listing, not taken yet
        self._free_listed = 0.0
        self._free_kept = FREE_KEEP  # free files in the folder as this process last counted them
        #: True: written batch files are emptied by :meth:`trim`, not as they are freed (the store writer)
        self.trim_later = False

    def put(self, parts: Sequence[tuple[str, list[str], bytes, int]]) -> bool:
        """Queue one batch (``(table, columns, native bytes, rows)`` per table); False if full."""
        total = sum(len(p[2]) for p in parts)
        if self._approx_size() + total > self.max_bytes:
            return False
        header, offset = [], 0
        for table, columns, data, rows in parts:
            header.append({"table": table, "columns": columns, "rows": rows, "offset": offset, "length": len(data)})
            offset += len(data)
        head = json.dumps({"v": 1, "parts": header}, separators=(",", ":")).encode() + b"\n"
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}{SUFFIX}"
        tmp = os.path.join(self.folder, "." + name)
        fd, reused = self._open_batch_file(tmp)
        # one system call for header and blocks, no buffered file object: the
        # spool write is per batch on the application's exporter thread
        try:
            try:
                chunks = [head, *(part[2] for part in parts)]
                written = os.writev(fd, chunks)
                if written != len(head) + total:  # a short write (huge batch, full disk): finish it plainly
                    rest = b"".join(chunks)[written:]
                    while rest:
                        rest = rest[os.write(fd, rest):]
                if reused:  # an earlier, longer batch's tail goes
                    os.ftruncate(fd, len(head) + total)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(self.folder, name))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._size += total
        return True

    def _open_batch_file(self, tmp: str) -> tuple[int, bool]:
        """``tmp`` opened for writing: a free file renamed to it (True), else a new file (False)."""
        if not self._free and time.monotonic() - self._free_listed > 0.05:
            self._free_listed = time.monotonic()
            try:
                self._free = [n for n in os.listdir(self.folder) if n.startswith(FREE)]
            except FileNotFoundError:
                pass
        while self._free:
            try:
                os.rename(os.path.join(self.folder, self._free.pop()), tmp)
            except OSError:
                continue  # another process took it
            try:
                return os.open(tmp, _REWRITE_FLAGS), True
            except OSError:  # not ours to write after all: a new file instead
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                break
        try:
            return os.open(tmp, _WRITE_FLAGS, 0o644), False
        except FileNotFoundError:
            os.makedirs(self.folder, exist_ok=True)
            return os.open(tmp, _WRITE_FLAGS, 0o644), False

    @staticmethod
    def queued_ns(name: str) -> int:
        """When the batch ``name`` (as :meth:`pending` lists it) was queued, in ns; 0 if its name does not say."""
        try:
            return int(name.split("-", 1)[0])
        except ValueError:
            return 0

    def pending(self) -> list[str]:
        """Queued batch names, oldest first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.endswith(SUFFIX) and n[:1].isdigit())

    def claim(self, limit: int | None = None) -> Iterator[tuple[str, list[Part]]]:
        """Yield ``(claimed path, parts)`` for batches this process now owns.

        The caller writes the parts, then calls :meth:`done` (or
        :meth:`release` to give the batch back, :meth:`quarantine` to set a
        rejected one aside).
        """
        self._release_stale()
        for name in self.pending()[:limit]:
            src = os.path.join(self.folder, name)
            claimed = f"{src}.claim-{os.getpid()}"
            _in_flight.add(claimed)  # before the rename: another thread's _release_stale leaves it alone
            try:
                os.rename(src, claimed)
            except OSError:
                _in_flight.discard(claimed)
                continue  # another process claimed it first
            try:
                with open(claimed, "rb") as fh:
                    head = fh.readline()
                meta = json.loads(head)
                base = len(head)
                parts = [Part(p["table"], list(p["columns"]), int(p["rows"]), claimed, base + int(p["offset"]),
                              int(p["length"])) for p in meta["parts"]]
            except (OSError, ValueError, KeyError, TypeError):
                self.quarantine(claimed)
                continue
            yield claimed, parts

    def done(self, claimed: str) -> None:
        """The batch is written: its file leaves the queue (kept as a free file, emptied past ``FREE_KEEP``)."""
        _in_flight.discard(claimed)
        try:
            self._size -= os.path.getsize(claimed)
            if self._free_kept < FREE_MAX:
                if self._free_kept >= FREE_KEEP and not self.trim_later:
                    os.truncate(claimed, 0)
                os.rename(claimed, os.path.join(self.folder, f"{FREE}{os.getpid()}-{next(_counter)}"))
                self._free_kept += 1
            else:
                os.unlink(claimed)
        except OSError:
            pass

    def trim(self) -> int:
        """Empty the free files past the first ``FREE_KEEP`` (see the module docstring); how many were emptied.

        A file an application takes meanwhile is renamed away first, so it is
        never emptied under its writer (and one emptied just before is simply
        written from its start)."""
        try:
            names = sorted(n for n in os.listdir(self.folder) if n.startswith(FREE))
        except FileNotFoundError:
            return 0
        emptied = 0
        for name in names[FREE_KEEP:]:
            path = os.path.join(self.folder, name)
            try:
                if os.path.getsize(path):
                    os.truncate(path, 0)
                    emptied += 1
            except OSError:  # taken by an application meanwhile
                pass
        return emptied

    def release(self, claimed: str) -> None:
        _in_flight.discard(claimed)
        try:
            os.rename(claimed, claimed.rsplit(".claim-", 1)[0])
        except OSError:
            pass

    def scratch_path(self) -> str:
        """A fresh path in the folder for a writer's temporary file (``.insert-<pid>-<n>.native``:
        never taken for a batch, and deleted by :meth:`claim` once its process is gone)."""
        return os.path.join(self.folder, f"{SCRATCH}{os.getpid()}-{next(_counter)}.native")

    def quarantine(self, claimed: str) -> None:
        """Move a batch the store rejects out of the queue (kept for inspection)."""
        _in_flight.discard(claimed)
        bad = os.path.join(self.folder, "rejected")
        os.makedirs(bad, exist_ok=True)
        try:
            os.rename(claimed, os.path.join(bad, os.path.basename(claimed).rsplit(".claim-", 1)[0]))
        except OSError:
            pass

    def _approx_size(self) -> int:
        # Listing the folder on every put would cost more than the put; refresh once a second.
        now = time.monotonic()
        if now - self._size_checked > 1.0:
            self._size_checked = now
            total = 0
            try:
                with os.scandir(self.folder) as entries:
                    for entry in entries:
                        if entry.is_file() and not entry.name.startswith(FREE):
                            try:
                                total += entry.stat().st_size
                            except OSError:
                                pass
            except FileNotFoundError:
                pass
            self._size = total
        return self._size

    def _release_stale(self) -> None:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        now = time.time()
        me = str(os.getpid())
        self._free_kept = sum(1 for name in names if name.startswith(FREE))
        for name in names:
            if name.startswith(SCRATCH):
                if not _alive(name[len(SCRATCH):].split("-", 1)[0]):
                    try:
                        os.unlink(os.path.join(self.folder, name))
                    except OSError:
                        pass
                continue
            if ".claim-" not in name:
                continue
            pid = name.rsplit(".claim-", 1)[1]
            path = os.path.join(self.folder, name)
            if pid == me:
                if path not in _in_flight:  # left by a drain of ours that was interrupted
                    self.release(path)
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            # The claim's age, not the batch's: renaming sets ctime, mtime is when the batch was
            # written (a batch queued long ago while the store was away is claimed young).
            if now - max(st.st_mtime, st.st_ctime) > self.stale_claim_s or not _alive(pid):
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
