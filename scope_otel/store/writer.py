"""The store writer: a short-lived process that owns an embedded store and writes its spool.

Started by ``ClickHouseSpanExporter`` (see ``engine``) as
``python -I -m scope_otel.store.writer STORE DATABASE --spool DIR``:
isolated mode, so the launcher's ``sitecustomize`` on ``PYTHONPATH`` does
not instrument it, and ``OTEL_SDK_DISABLED=true`` for good measure.

It takes ownership (exits at once if another process owns the store),
writes queued batches a burst's or a few seconds' together (many per INSERT,
see ``gathered``), at once when a process asks (a ``scope-flush-<pid>`` file:
one flushing or ending), and exits after
``--idle`` seconds without work (30: an application exporting every few
seconds keeps one writer instead of starting one per batch), after as long
in which the store took nothing (a full disk: the queue waits for the next
writer, see ``_Retry``), or as soon as another process asks for the store (a ``scope-release-<pid>`` file), leaving
the rest of the queue to that process.  It runs at a lower CPU priority
(nice 5): the application comes first.
Problems go to ``<store>/scope-drainer.log``.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import gc
import logging
import os
import select
import struct
import sys
import time

from scope_otel.store.engine import (FLUSH_PREFIX, WRITER_COST_FILE, Backend, StoreBusy, StoreRetry, _reason, _retryable,
                                     release_requested, write_spools_from_own_loop)
from scope_otel.store.ownership import RELEASE_PREFIX
from scope_otel.store.migrations import SchemaOptions
from scope_otel.store.spool import Spool
from scope_otel.store.target import parse

_log = logging.getLogger("scope_otel.export.clickhouse")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scope-otel store writer")
    parser.add_argument("store")
    parser.add_argument("database")
    parser.add_argument("--spool", required=True)
    parser.add_argument("--ttl-days", type=int, default=0)
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args(argv)
    try:
        os.nice(5)  # a background writer: the application comes first
    except OSError:
        pass
    _keep_freed_memory()
    write_spools_from_own_loop()  # the loop below decides when to write
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s scope-otel drainer %(process)d: %(message)s")
    # a line that cannot be written (the log is on the full disk it reports) is lost, not
    # replaced by logging's "--- Logging error ---" and a traceback, which lands once there is room
    logging.raiseExceptions = False
    target = parse("chdb://" + args.store, args.database)
    backend = Backend(target, schema=SchemaOptions(ttl_days=args.ttl_days), spool_dir=args.spool,
                      idle_close_s=3600.0, reuse_buffers=True)
    backend.spool.trim_later = True  # written batch files are emptied below, once the writer is idle
    retry = _Retry(backend)
    wake = _Wakeup(backend.spool.folder, target.path)
    totals = _Totals(target.path, backend)
    try:
        retry.write()  # own the store, create the schema, write what is queued
        # What start-up made (chDB, clickhouse-connect, pyarrow: ~100k objects) stays: the collector's
        # full passes no longer walk it on every few drains.
        gc.collect()
        gc.freeze()
        totals.publish()  # start-up done: what the writer spends from here on is its batches'
        last_work = time.monotonic()
        trimmed = False
        while not wake.released():
            queued = backend.spool.pending()
            asked = wake.asked()
            if queued and retry.due() and (asked or gathered(queued, time.time_ns())):
                _answered(target.path)  # before writing: a request made during the write is for another
                retry.write()
                if retry.failing_since is None:
                    last_work = time.monotonic()
                totals.publish()
                trimmed = False
                continue
            if asked:
                _answered(target.path)  # nothing queued (or the store failing): nothing to write now
            idle_s = time.monotonic() - last_work
            if idle_s >= args.idle and (not queued or retry.failing_since is not None):
                # nothing to do, or a store that has taken nothing for that long: the queue stays
                # for the next writer (the next export or query starts one)
                break
            if not queued and not trimmed and idle_s >= IDLE_TRIM_S:
                backend.spool.trim()
                trimmed = True
            elif wake.watching:
                # woken by a batch or a request for the store, else when the queue is due to be
                # written (or the spool trimmed, or the writer to leave); looks at most every 20 ms
                time.sleep(LOOK_S)
                wake.wait(_next_look(queued, retry, idle_s, trimmed, args.idle, time.time_ns()) - LOOK_S)
            else:
                # every look lists the spool folder (~0.25 ms, 1.2 % of a core at 50 a second while
                # idle): every 20 ms while batches gather or just after work, every 100 ms after a
                # second of none (a new burst or a request for the store waits that much longer)
                time.sleep(LOOK_S if (queued and retry.due()) or idle_s < 1.0 else IDLE_LOOK_S)
    except StoreBusy:
        return 0  # another process owns the store: it writes the spool
    finally:
        wake.close()
        totals.remove()
        backend.close()  # the store, and the writer's staging memory
        backend.spool.trim()  # after letting go of the store: a query waiting for it need not wait for this
    return 0


#: A writer waits for a burst's batches to gather before it writes them: every INSERT makes a part
#: that chDB merges again later (200k spans written as 8 INSERTs took 5.4-6.8 us of the writer's
#: CPU per span, as 1: 3.6-4.8).  Until 2026-12-06 the engine's keeper thread also ran in the
#: writer and wrote whatever was queued within 50 ms, so these rules hardly applied; the
#: measurements of them before that date were of the keeper.  It writes when this many are queued,
GATHER_BATCHES = 128
#: or when no batch came for this long (the burst is over: a lone batch waits no longer than this;
#: longer than the gap of a steady stream, so that one is gathered),
GATHER_QUIET_S = 0.25
#: or when the oldest has waited this long (a steady stream is written once a second);
GATHER_MAX_S = 1.0
#: but fewer than this many queued are a thin stream (a service recording a few traces a second),
#: gathered until no batch came for THIN_QUIET_S or the oldest waited THIN_MAX_S.  An INSERT has a
#: fixed cost of its own, whatever it
#: holds (the parts of the table and of its materialized views): 55-130 ms of the writer's CPU for
#: 10 spans (2026-12-07), so a service's thin stream written once a second cost the writer about a
#: third of what the program itself used.  The shop under gunicorn at a 2 % budget (a few traces a
#: second): the writer spent 35 ms of CPU a second gathering for 5 s, 13 ms for 15 s.  Nobody waits
#: for it: a query asks the writer to let go and writes the queue itself, and the spool is on disk.
GATHER_THIN_BATCHES = 16
THIN_QUIET_S = 5.0
THIN_MAX_S = 15.0
#: or when at least GATHER_MIN_BURST are queued and they came at GATHER_BURST_RATE a second or
#: faster (a full gather's pace when GATHER_MAX_S was 1 s): a burst the writer may not keep up with.  Waiting for the
#: rest would leave it idle while the queue grows (benchmark: the first of 391 batches written
#: after 0.5 s, 122k spans/s end to end against 151k writing early); after a drain, what came
#: during it is written at once when it came that fast, so the drains grow with the backlog.
GATHER_MIN_BURST = 8
GATHER_BURST_RATE = 128.0
#: How often a writer without inotify looks for batches and for requests to let go of the store,
#: idle; the shortest wait between two looks of any writer.
IDLE_LOOK_S = 0.1
LOOK_S = 0.02
#: After this long without work the writer empties the spool's spare batch files (``Spool.trim``).
IDLE_TRIM_S = 1.0


class _Retry:
    """Writes the queue; when the store cannot take it (``StoreRetry``: a full disk, a
    timeout, a busy store) the batches stay queued and the next try waits, doubling
    from ``RETRY_FIRST_S`` to ``RETRY_MAX_S``.  One log line when that starts, one when
    writing works again."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.wait_s = 0.0
        self.next_try = 0.0
        self.failing_since: float | None = None

    def due(self) -> bool:
        return time.monotonic() >= self.next_try

    def write(self) -> None:
        self.backend.retry_pending = None
        try:
            self.backend.run(lambda client: None)
            exc = self.backend.retry_pending
        except StoreBusy:
            raise
        except Exception as error:  # e.g. the schema cannot be created on a full disk
            if not _retryable(error):
                raise
            exc = StoreRetry(_reason(error))
        if exc is not None:
            self.wait_s = min(max(RETRY_FIRST_S, self.wait_s * 2), RETRY_MAX_S)
            self.next_try = time.monotonic() + self.wait_s
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                _log.warning("scope-otel: the store cannot take batches now (%s); %d wait in the spool, "
                             "tried again every %g-%g s", exc, len(self.backend.spool.pending()),
                             RETRY_FIRST_S, RETRY_MAX_S)
            return
        if self.failing_since is not None:
            _log.warning("scope-otel: the store takes batches again after %.0f s; the queue was written",
                         time.monotonic() - self.failing_since)
        self.wait_s, self.next_try, self.failing_since = 0.0, 0.0, None


#: Waits between tries while the store cannot take batches (full disk, timeouts).
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0


def gathered(queued: list[str], now_ns: int) -> bool:
    """Whether to write the queue now (``queued``: batch names, oldest first, as ``Spool.pending``)."""
    if len(queued) >= GATHER_BATCHES:
        return True
    # a name that does not say when it was queued counts as queued at 0: written at once
    oldest, newest = Spool.queued_ns(queued[0]), Spool.queued_ns(queued[-1])
    waited_s = (now_ns - oldest) / 1e9
    quiet_s, max_s = _gather_limits(queued)
    if now_ns - newest >= quiet_s * 1e9 or waited_s >= max_s:
        return True
    return len(queued) >= GATHER_MIN_BURST and len(queued) >= GATHER_BURST_RATE * waited_s


def _gather_limits(queued: list[str]) -> tuple[float, float]:
    """(quiet, longest wait) before ``queued`` is written: a thin stream waits longer."""
    if len(queued) < GATHER_THIN_BATCHES:
        return THIN_QUIET_S, THIN_MAX_S
    return GATHER_QUIET_S, GATHER_MAX_S


def _next_look(queued: list[str], retry: "_Retry", idle_s: float, trimmed: bool, idle_exit_s: float,
               now_ns: int) -> float:
    """Seconds until the loop has something to do without being woken: the queue gathered enough
    (:func:`gathered`'s deadlines), the next try after a failure, the spool's trim, or leaving."""
    if queued:
        if not retry.due():
            return max(retry.next_try - time.monotonic(), 0.0)
        oldest, newest = Spool.queued_ns(queued[0]), Spool.queued_ns(queued[-1])
        quiet_s, max_s = _gather_limits(queued)
        return max(min(oldest + max_s * 1e9, newest + quiet_s * 1e9) - now_ns, 0.0) / 1e9
    if not trimmed:
        return max(IDLE_TRIM_S - idle_s, 0.0)
    return max(idle_exit_s - idle_s, 0.0)


def _asked(store: str) -> bool:
    """Whether a process asked for the queue to be written now (a ``FLUSH_PREFIX`` file)."""
    try:
        return any(n.startswith(FLUSH_PREFIX) for n in os.listdir(store))
    except OSError:
        return False


def _answered(store: str) -> None:
    try:
        for name in os.listdir(store):
            if name.startswith(FLUSH_PREFIX):
                try:
                    os.unlink(os.path.join(store, name))
                except OSError:
                    pass
    except OSError:
        pass


class _Wakeup:
    """Waits for a batch in the spool folder or a request for the store (inotify, Linux): an idle
    writer spends nothing, where one looking every 100 ms spent ~2.5 ms of CPU a second.  Where
    inotify is missing, ``watching`` is False, :meth:`released` and :meth:`asked` look in the folder
    at each call, and the loop looks on a timer as before."""

    _EVENT = struct.Struct("iIII")
    _IN_CREATE, _IN_MOVED_TO, _IN_NONBLOCK, _IN_CLOEXEC = 0x100, 0x80, 0o4000, 0o2000000

    def __init__(self, spool: str, store: str) -> None:
        self.fd = -1
        self._store = store
        self._store_wd = -1
        self._released = False
        self._asked = False
        try:
            os.makedirs(spool, exist_ok=True)
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(self._IN_NONBLOCK | self._IN_CLOEXEC)
            if fd < 0:
                return
            mask = self._IN_CREATE | self._IN_MOVED_TO
            spool_wd = libc.inotify_add_watch(fd, os.fsencode(spool), mask)
            store_wd = libc.inotify_add_watch(fd, os.fsencode(store), mask)
            if spool_wd < 0 or store_wd < 0:
                os.close(fd)
                return
        except (OSError, AttributeError):
            return
        self.fd, self._store_wd = fd, store_wd
        # requests made before the watch began
        self._released = release_requested(store)
        self._asked = _asked(store)

    @property
    def watching(self) -> bool:
        return self.fd >= 0

    def released(self) -> bool:
        """Whether a request for the store has come."""
        if not self.watching:
            return release_requested(self._store)
        self._drain()
        return self._released

    def asked(self) -> bool:
        """Whether a process asked for the queue to be written now, since the last call."""
        if not self.watching:
            return _asked(self._store)
        self._drain()
        asked, self._asked = self._asked, False
        return asked

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a change in either folder; whether one came."""
        try:
            return bool(select.select([self.fd], [], [], max(timeout_s, 0.0))[0])
        except InterruptedError:
            return False

    def _drain(self) -> None:
        if self.fd < 0:
            return
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return
            at = 0
            while at + self._EVENT.size <= len(data):
                wd, _mask, _cookie, length = self._EVENT.unpack_from(data, at)
                name = data[at + self._EVENT.size:at + self._EVENT.size + length].rstrip(b"\0")
                at += self._EVENT.size + length
                if wd == self._store_wd and name.startswith(RELEASE_PREFIX.encode()):
                    self._released = True
                elif wd == self._store_wd and name.startswith(FLUSH_PREFIX.encode()):
                    self._asked = True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Totals:
    """The writer's running totals in ``<store>/scope-writer-cost`` (``PID CPU_SECONDS SPANS``): each
    process exporting to the store charges its overhead governor for its own spans' share of the
    writer's CPU (see ``capture.governor``), whichever process started the writer."""

    def __init__(self, store: str, backend: Backend) -> None:
        self.path = os.path.join(store, WRITER_COST_FILE)
        self.backend = backend

    def publish(self) -> None:
        tmp = f"{self.path}.{os.getpid()}"
        try:
            with open(tmp, "w") as fh:
                fh.write(f"{os.getpid()} {time.process_time():.6f} {self.backend.rows_written['otel_traces']}\n")
            os.replace(tmp, self.path)
        except OSError:
            pass

    def remove(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                mine = fh.read(32).split(b" ", 1)[0] == str(os.getpid()).encode()
            if mine:
                os.unlink(self.path)
        except OSError:
            pass


def _keep_freed_memory() -> None:
    """Have glibc keep the memory a drain frees for the next drain instead of returning it.

    Each drain's merge allocates ~160 bytes per row of sort keys and
    permutations and frees them; glibc gave the heap's top back past 2x its
    largest freed chunk, so every drain faulted ~10 MB in again per 64k spans
    (2,534 faults; staging 0.60 -> 0.53 us per span without them).  A
    dedicated process: what it keeps is the size of its largest drain.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest; bigger blocks are mapped and unmapped
    except (OSError, AttributeError):  # not glibc
        pass


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


if __name__ == "__main__":
    sys.exit(main())
