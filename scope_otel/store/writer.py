"""The store writer: a short-lived process that owns an embedded store and writes its spool.

Started by ``ClickHouseSpanExporter`` (see ``engine``) as
``python -I -m scope_otel.store.writer STORE DATABASE --spool DIR``:
isolated mode, so the launcher's ``sitecustomize`` on ``PYTHONPATH`` does
not instrument it, and ``OTEL_SDK_DISABLED=true`` for good measure.

It takes ownership (exits at once if another process owns the store),
writes queued batches as they arrive, a burst's together (many per INSERT,
see ``gathered``), and exits after
``--idle`` seconds without work (30: an application exporting every few
seconds keeps one writer instead of starting one per batch) or as soon as
another process asks for the store (a ``scope-release-<pid>`` file), leaving
the rest of the queue to that process.  It runs at a lower CPU priority
(nice 5): the application comes first.
Problems go to ``<store>/scope-drainer.log``.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import sys
import time

from scope_otel.store.engine import Backend, StoreBusy, release_requested, write_spools_from_own_loop
from scope_otel.store.migrations import SchemaOptions
from scope_otel.store.spool import Spool
from scope_otel.store.target import parse


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
    target = parse("chdb://" + args.store, args.database)
    backend = Backend(target, schema=SchemaOptions(ttl_days=args.ttl_days), spool_dir=args.spool,
                      idle_close_s=3600.0, reuse_buffers=True)
    backend.spool.trim_later = True  # written batch files are emptied below, once the writer is idle
    try:
        backend.run(lambda client: None)  # own the store, create the schema, write what is queued
        # What start-up made (chDB, clickhouse-connect, pyarrow: ~100k objects) stays: the collector's
        # full passes no longer walk it on every few drains.
        gc.collect()
        gc.freeze()
        last_work = time.monotonic()
        trimmed = False
        while not release_requested(target.path):
            queued = backend.spool.pending()
            if queued and gathered(queued, time.time_ns()):
                backend.run(lambda client: None)
                last_work = time.monotonic()
                trimmed = False
                continue
            idle_s = time.monotonic() - last_work
            if not queued and idle_s >= args.idle:
                break
            if not queued and not trimmed and idle_s >= IDLE_TRIM_S:
                backend.spool.trim()
                trimmed = True
            else:
                # every look lists the spool folder (~0.25 ms, 1.2 % of a core at 50 a second while
                # idle): every 20 ms while batches gather or just after work, every 100 ms after a
                # second of none (a new burst or a request for the store waits that much longer)
                time.sleep(0.02 if queued or idle_s < 1.0 else IDLE_LOOK_S)
    except StoreBusy:
        return 0  # another process owns the store: it writes the spool
    finally:
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
#: longer than the gap of a steady stream, so that one is gathered: 50 ms wrote a stream of a batch
#: every 100 ms batch by batch.  Nobody waits for it: a query asks the writer to let go and
#: writes the queue itself),
GATHER_QUIET_S = 0.25
#: or when the oldest has waited this long (a steady stream is written once a second),
GATHER_MAX_S = 1.0
#: or when at least this many are queued and they came at a full gather's pace or faster
#: (GATHER_BATCHES in GATHER_MAX_S): a burst the writer may not keep up with.  Waiting for the
#: rest would leave it idle while the queue grows (benchmark: the first of 391 batches written
#: after 0.5 s, 122k spans/s end to end against 151k writing early); after a drain, what came
#: during it is written at once when it came that fast, so the drains grow with the backlog.
GATHER_MIN_BURST = 8
#: How often an idle writer looks for batches and for requests to let go of the store.
IDLE_LOOK_S = 0.1
#: After this long without work the writer empties the spool's spare batch files (``Spool.trim``).
IDLE_TRIM_S = 1.0


def gathered(queued: list[str], now_ns: int) -> bool:
    """Whether to write the queue now (``queued``: batch names, oldest first, as ``Spool.pending``)."""
    if len(queued) >= GATHER_BATCHES:
        return True
    # a name that does not say when it was queued counts as queued at 0: written at once
    oldest, newest = Spool.queued_ns(queued[0]), Spool.queued_ns(queued[-1])
    waited_s = (now_ns - oldest) / 1e9
    if now_ns - newest >= GATHER_QUIET_S * 1e9 or waited_s >= GATHER_MAX_S:
        return True
    return len(queued) >= GATHER_MIN_BURST and len(queued) >= GATHER_BATCHES * waited_s / GATHER_MAX_S


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
