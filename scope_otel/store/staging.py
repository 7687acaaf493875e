"""Where a drain's merged blocks wait for chDB's ``INSERT ... FROM INFILE``.

The parts of a drain are merged (:func:`_merged`: one block per table,
LowCardinality columns written as such, rows in the table's sorting-key
order where the C merger is built) and staged for chDB to read:

* a store writer stages in memory it keeps from drain to drain
  (:class:`_Scratch`: one private mapping the batches are read into, and a
  ``memfd`` per table, :class:`_Stage`, that the merger writes into and chDB
  reads as ``/proc/self/fd/N``).  Fresh memory would cost a page fault and
  zeroing for every page of every drain, and a staging file in the spool
  folder a copy through the page cache plus a create and delete that slows
  every later file creation in that folder (ext4 without a journal scans
  past deleted inodes).  Linux only (``memfd_create``);
* an application in ``inprocess`` mode stages in a hidden file in the spool
  folder (:class:`_StagedFile`), deleted after the INSERT.
"""
from __future__ import annotations

import mmap
import os
from typing import Any, Callable

from scope_otel.accelerators import pure_python_requested
from scope_otel.store.sortkeys import _table_types
from scope_otel.store.spool import Part, Spool, read_parts


class _StagedFile:
    """Merged blocks where chDB, in this process, reads them with ``INSERT ... FROM INFILE``:
    a hidden file in the spool folder, deleted after the INSERT (one a dead process left is
    deleted by the next claim).  What an application in ``inprocess`` mode stages; a store
    writer stages in the memory it keeps (:class:`_Scratch`)."""

    def __init__(self, spool: Spool, data: bytes | bytearray | memoryview) -> None:
        self.path = spool.scratch_path()
        self._open = True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                os.unlink(self.path)
            except OSError:
                pass



def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    finally:
        view.release()



def _merged(parts: list[Part], order: tuple[tuple[bytes, int], ...] | None = None,
            read_into: memoryview | None = None, out: memoryview | None = None) -> bytes | bytearray | memoryview:
    """The parts' Native blocks as one byte string: merged into one block where the accelerator can,
    with the columns the tables declare LowCardinality(String) written as such (the exporter's C
    encoder writes them as String) and, given the table's sorting key (``order``, from
    :func:`_sorting_keys`), the rows in that order.  All three save chDB work on insert: one
    block pays chDB's fixed per-block cost once, and a MergeTree sorts an unsorted block and
    writes every column through that permutation.  The parts are read into ``read_into`` when given (their total length), and
    merged into ``out`` when given and large enough (a view of it is returned); else fresh memory."""
    data = read_parts(parts, into=read_into)
    merge = _block_merger()
    if merge is not None:
        try:
            if out is None:
                return merge(data, _table_types(), None, order)
            try:
                return out[:merge(data, _table_types(), out, order)]
            except BufferError:  # larger than the room: fresh memory
                return merge(data, _table_types(), None, order)
        except ValueError:  # not data the merger understands: ClickHouse reads the blocks as they are
            pass
    return data



_MEMFD = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")



class _Scratch:
    """The memory a store writer stages in and keeps from drain to drain: one private mapping the
    batches are read into, and in-memory files (:class:`_Stage`) the merger writes each table's
    block into and chDB reads it from (``INSERT ... FROM INFILE '/proc/self/fd/N'``).

    Kept memory saves a page fault and zeroing for every page of every drain; a memfd saves
    the copy through the page cache and the file create/delete that a staging file in the
    spool folder costs (see the module docstring).  A table keeps its own memfd: its blocks
    are about the size they were last drain, so its pages are neither cut nor faulted in again.
    The read mapping is populated in one call when made (the batches fill it).  Linux only
    (``memfd_create``); elsewhere a writer stages like an application.  Used under the engine
    lock, one drain at a time."""

    def __init__(self) -> None:
        self._read: mmap.mmap | None = None
        self._free: dict[str, list[_Stage]] = {}  # per table, stages not in use, kept for the next drain
        self.closed = False

    def read_view(self, size: int) -> memoryview:
        """``size`` bytes to read batches into (valid until the next call)."""
        if self._read is None or len(self._read) < size:  # a larger one (the old one goes with its last view)
            self._read = mmap.mmap(-1, max(size, 1 << 20), flags=mmap.MAP_PRIVATE | _POPULATE)
        return memoryview(self._read)[:size]

    def stage(self, parts: list[Part], order: tuple[tuple[bytes, int], ...] | None) -> _Stage:
        """The parts merged (:func:`_merged`) into a stage of their own, until its ``close()``."""
        size = sum(p.length for p in parts)
        free = self._free.get(parts[0].table)  # a table's blocks are about the size they were last time
        stage = free.pop() if free else _Stage(self, parts[0].table)
        try:
            merged = _merged(parts, order, self.read_view(size), stage.room(_room_for(size)))
            if isinstance(merged, memoryview) and stage.holds(merged):
                stage.seal(len(merged))
            else:  # the merger needed more room, or left the blocks as they are
                stage.fill(merged)
        except BaseException:
            stage.discard()
            raise
        return stage

    def discard(self) -> None:
        """Free everything (the writer is done); stages in use are freed when closed."""
        self.closed = True
        for free in self._free.values():
            while free:
                free.pop().discard()
        self._read = None



_POPULATE = getattr(mmap, "MAP_POPULATE", 0)



def _room_for(size: int) -> int:
    """Room for the merged block of ``size`` bytes of batches: LowCardinality data is rarely larger
    than its Strings, so twice as much (untouched pages of the room cost nothing)."""
    return 2 * size + (1 << 20)



class _Stage:
    """One in-memory file (``memfd``) chDB reads a merged block from, and a shared mapping of it
    the merger writes into.  The file is grown to the room asked for, then cut to what was
    written (chDB reads to its end); the pages below the cut stay for the next drain."""

    def __init__(self, scratch: _Scratch, table: str) -> None:
        self._scratch, self.table = scratch, table
        self.fd = os.memfd_create("scope-otel-stage", os.MFD_CLOEXEC)
        self.path = f"/proc/self/fd/{self.fd}"
        self._map: mmap.mmap | None = None

    def room(self, size: int) -> memoryview:
        """``size`` writable bytes at the start of the file (valid until :meth:`seal` or :meth:`fill`)."""
        os.ftruncate(self.fd, size)
        if self._map is None or len(self._map) < size:  # a larger one (the old one goes with its last view)
            self._map = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED)
        return memoryview(self._map)[:size]

    def holds(self, view: memoryview) -> bool:
        return view.obj is self._map

    def seal(self, size: int) -> None:
        """The file is the first ``size`` bytes written (nothing past them is touched again)."""
        os.ftruncate(self.fd, size)

    def fill(self, data: bytes | bytearray | memoryview) -> None:
        room = self.room(len(data))
        try:
            room[:] = data
        finally:
            room.release()

    def close(self) -> None:
        """The INSERT read it: kept for the next drain."""
        if self._scratch.closed:
            self.discard()
        else:
            self._scratch._free.setdefault(self.table, []).append(self)

    def discard(self) -> None:
        self._map = None  # unmapped with its last view
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1



def _block_merger() -> Callable[..., Any] | None:
    if pure_python_requested():
        return None
    try:
        from scope_otel.store._chnative import merge_blocks
    except ImportError:
        return None
    return merge_blocks
