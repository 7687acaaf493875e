"""Who may open a ClickHouse store, and how spooled batches reach it.

Servers (``http(s)://``) are simple: each process keeps its own
clickhouse-connect HTTP client (a new one after fork), writes directly, and
spools while the server is unreachable.

Embedded chDB has hard rules, all verified on chdb 4.x here:

1. **One process per data directory.**  A second process fails to open it
   (``Cannot lock file .../status``) and chDB prints that on stderr.
2. **One engine per process**, and opening it costs ~0.5 s and ~20 threads.
3. **Forking after chDB is unsafe.**  A child forked from a process that has
   run chDB queries can crash (SIGSEGV in chDB's C++ exit handlers) or hang
   when it exits, and hangs if it opens chDB itself, even when the parent
   closed the engine before ``fork()``.  Gunicorn workers, forked from a
   master, are exactly that.

So an instrumented application never opens chDB.  Its exporter encodes
batches (ClickHouse Native, no chDB needed) into the spool under the store
(``<store>/scope-spool``) and makes sure a **store owner** runs: a small
separate process (``python -I -m scope_otel.store.writer``, started
with ``exec``, never forked from the app) that opens chDB, writes every
queued batch with ``INSERT ... FROM INFILE ... FORMAT Native``, and exits
after a few idle seconds.

Ownership is an ``flock`` on ``<store>/scope-owner.lock`` held as long as
the engine is open, by the drainer, by ``scope-otel query|trace|graph``
(:mod:`scope_otel.store`), or by an exporter created with
``embedded="inprocess"`` (``scope-otel collect``, benchmarks).  Anyone who
needs the store while another process owns it drops a
``scope-release-<pid>`` request file; owners let go within ~0.1 s when idle.
Whoever owns the store writes the spool before anything else, so a query
sees every batch exported so far.  In-process owners still close the engine
before ``fork()`` and a forked child never opens chDB (rule 3).
"""
from __future__ import annotations

import dataclasses
import fcntl
import logging
import mmap
import os
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable, TypeVar

from scope_otel.accelerators import pure_python_requested
from scope_otel.store.quiet import quiet_clickhouse_connect
from scope_otel.store.migrations import EMBEDDED_WIDE_PART_BYTES, SchemaOptions, ensure_schema
from scope_otel.store.spool import Part, Spool, read_parts
from scope_otel.store.target import Target

_log = logging.getLogger("scope_otel.export.clickhouse")
T = TypeVar("T")

OWNER_LOCK = "scope-owner.lock"
#: Servers get many small batches from many processes: let them buffer and
#: merge (async insert), but only answer once the data is durable.
SERVER_INSERT_SETTINGS = {"async_insert": 1, "wait_for_async_insert": 1}
RELEASE_PREFIX = "scope-release-"
SPOOL_DIR = "scope-spool"


class StoreBusy(RuntimeError):
    """The embedded store is owned by another process (or unusable after fork)."""


class StoreUnavailable(RuntimeError):
    """The server cannot be reached right now."""


# -- ownership of an embedded store ----------------------------------------------

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


class _Engine:
    """The process' single chDB engine and the ownership lock that goes with it."""

    lock = threading.Lock()
    client: Any = None
    path: str | None = None
    lock_fd: int | None = None
    last_use = 0.0
    used = False        # this process ran chDB (inherited by forked children)
    forbidden = False   # we are a forked child of a chDB user: never open chDB
    keeper_pid = 0
    generation = 0      # bumped on every open: schema checks are per open engine
    backends: "weakref.WeakSet[Backend]" = weakref.WeakSet()
    orphans: list = []  # clients inherited over fork: never touched, never collected
    fork_locked = False


def _before_fork() -> None:
    _Engine.fork_locked = _Engine.lock.acquire(timeout=5.0)
    if _Engine.fork_locked and _Engine.client is not None:
        _close_engine()


def _after_fork_parent() -> None:
    if _Engine.fork_locked:
        _Engine.lock.release()


def _after_fork_child() -> None:
    _Engine.lock = threading.Lock()
    if _Engine.client is not None:  # the parent could not close it in time: never touch it
        _Engine.orphans.append(_Engine.client)
        _Engine.client = None
    if _Engine.lock_fd is not None:  # the flock is shared with the parent's fd: drop ours
        try:
            os.close(_Engine.lock_fd)
        except OSError:
            pass
        _Engine.lock_fd = None
    _Engine.forbidden = _Engine.used
    _Engine.keeper_pid = 0


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)


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


def _open_engine(path: str) -> Any:
    if _Engine.forbidden:
        raise StoreBusy("this process was forked from one that ran chDB; chDB cannot be used here")
    if _Engine.client is not None and _Engine.path == path:
        return _Engine.client
    if _Engine.client is not None:
        _close_engine()
    fd = _take_ownership(path)
    try:
        import clickhouse_connect  # deferred: importing and starting chDB costs ~0.5 s

        with quiet_clickhouse_connect():
            # The query condition cache is process-wide in chDB and outlives an
            # engine close/reopen; after a reopen it served stale "no match"
            # answers for new parts here (chdb 4.4 / ClickHouse 26.9), so it is off.
            client = clickhouse_connect.get_client(interface="chdb", path=path,
                                                   settings={"use_query_condition_cache": 0})
    except BaseException as exc:
        os.close(fd)
        if "lock" in str(exc).lower() or "EmbeddedServer" in str(exc):
            raise StoreBusy(f"chdb://{path} is held by a process outside scope-otel") from None
        raise
    _Engine.client, _Engine.path, _Engine.lock_fd, _Engine.used = client, path, fd, True
    _Engine.generation += 1
    _start_keeper()
    return client


def _close_engine() -> None:
    client, _Engine.client, _Engine.path = _Engine.client, None, None
    if client is not None:
        try:
            client.close()
        except Exception:  # best effort: the engine goes with the process anyway
            _log.debug("closing chDB failed", exc_info=True)
    fd, _Engine.lock_fd = _Engine.lock_fd, None
    if fd is not None:
        try:
            os.close(fd)  # releases the ownership flock
        except OSError:
            pass


def close_engine(path: str | None = None) -> None:
    """Close this process' chDB engine (if it is open on ``path``, when given)."""
    with _Engine.lock:
        if _Engine.client is not None and (path is None or _Engine.path == path):
            _close_engine()


def write_spools_from_own_loop() -> None:
    """This process writes its spools from a loop of its own (the store writer's): no keeper thread.

    The keeper writes whatever is queued within 50 ms.  In the store writer it ran beside the
    writer's loop and wrote batches before the loop's rule for gathering them
    (``writer.gathered``) could apply: 30 batches sent one every 100 ms went in as 18-23
    INSERTs, each a part for chDB to merge again; written by the loop alone, as 3."""
    _Engine.keeper_pid = os.getpid()


def _start_keeper() -> None:
    if _Engine.keeper_pid == os.getpid():
        return
    _Engine.keeper_pid = os.getpid()
    threading.Thread(target=_keeper, name="scope-otel-store-keeper", daemon=True).start()


def _keeper() -> None:
    """Close the engine when idle or asked to; write spools that arrive meanwhile."""
    me = os.getpid()
    while _Engine.keeper_pid == me:
        time.sleep(0.05)
        path = _Engine.path
        if _Engine.client is None or path is None:
            continue
        idle = min((b.idle_close_s for b in list(_Engine.backends) if b.target.path == path), default=2.0)
        limit = 0.05 if release_requested(path) else idle
        if time.monotonic() - _Engine.last_use >= limit and _Engine.lock.acquire(timeout=0.05):
            try:
                if _Engine.client is not None and time.monotonic() - _Engine.last_use >= limit:
                    _close_engine()
                    continue
            finally:
                _Engine.lock.release()
        for backend in list(_Engine.backends):
            if backend.target.path == path and backend.spool.pending():
                try:
                    backend.run(lambda client: None)
                except Exception:
                    pass  # busy or failing: the next use tries again


# -- the backend -------------------------------------------------------------------

class Backend:
    """Runs functions against one store with its schema current and its spool written."""

    def __init__(
        self,
        target: Target,
        schema: SchemaOptions = SchemaOptions(),
        spool_dir: str | None = None,
        spool_max_bytes: int = 1 << 30,
        idle_close_s: float = 2.0,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 30.0,
        reuse_buffers: bool = False,
    ) -> None:
        self.target = target
        if target.kind == "chdb":  # compact parts: far fewer files per INSERT (schemas/ch_004_part_format.sql)
            schema = dataclasses.replace(schema, wide_part_bytes=EMBEDDED_WIDE_PART_BYTES)
        self.schema = schema
        self.idle_close_s = idle_close_s
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.spool = Spool(spool_dir or default_spool_dir(target), max_bytes=spool_max_bytes)
        self.rows_written = {"otel_traces": 0, "scope_events": 0}  # from the spool, by this process
        self.batches_replayed = 0
        self.last_applied: list[str] = []  # schema files the last connect applied
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._http: Any = None
        self._http_generation = 0
        self._schema_ready: set[int] = set()
        self._orders: dict[str, tuple[tuple[bytes, int], ...]] = {}  # table -> its sorting key, for merging
        self._last_spawn = 0.0
        self._drainer: subprocess.Popen | None = None
        self._warned: set[str] = set()
        # the store writer keeps its staging memory from drain to drain; an application does not
        self._scratch = _Scratch() if reuse_buffers and target.kind == "chdb" and _MEMFD else None
        if target.kind == "chdb":
            _Engine.backends.add(self)

    # -- public ------------------------------------------------------------

    def run(self, fn: Callable[[Any], T], wait_s: float = 0.0) -> T:
        """``fn(client)`` with the store open (in this process), schema current, spool written.

        For chDB, ``wait_s`` > 0 asks the current owner to let go and waits
        that long; 0 raises :class:`StoreBusy` at once.
        """
        if self.target.kind == "http":
            with quiet_clickhouse_connect():
                return self._run_http(fn)
        deadline = time.monotonic() + wait_s
        request = _ReleaseRequest(self.target.path) if wait_s > 0 else None
        try:
            while True:
                try:
                    with quiet_clickhouse_connect():
                        return self._run_chdb(fn)
                except StoreBusy:
                    if time.monotonic() >= deadline or _Engine.forbidden:
                        raise
                    if request is not None and not os.path.exists(request.file):
                        request.__enter__()
                    time.sleep(0.05)
        finally:
            if request is not None:
                request.__exit__()

    def ensure_owner(self, force: bool = False) -> None:
        """Start a store-writer process unless an owner runs (cheap: checked twice a second)."""
        now = time.monotonic()
        if self._drainer is not None and self._drainer.poll() is not None:
            if self._drainer.returncode != 0:
                self._warn_once("drainer", "scope-otel: the store writer process exited with status %s; see %s",
                                self._drainer.returncode, os.path.join(self.target.path, "scope-drainer.log"))
            self._drainer = None  # reaped
        if self._drainer is not None or (not force and now - self._last_spawn < 0.5):
            return
        self._last_spawn = now
        path = self.target.path
        if owner_is_running(path) or release_requested(path):
            return  # the owner (or the process that asked for the store) writes the spool
        # numpy comes in with chDB (through pyarrow); one BLAS thread, not one per core spinning at start-up
        env = dict(os.environ, OTEL_SDK_DISABLED="true", SCOPE_OTEL_DRAINER="1", OPENBLAS_NUM_THREADS="1")
        args = [sys.executable, "-I", "-m", "scope_otel.store.writer", path, self.target.database,
                "--spool", self.spool.folder, "--ttl-days", str(self.schema.ttl_days)]
        try:
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "scope-drainer.log"), "ab") as log:
                self._drainer = subprocess.Popen(
                    args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                    close_fds=True, start_new_session=True, cwd=path,
                )
        except (OSError, ValueError) as exc:
            self._warn_once("spawn", "scope-otel: cannot start the store writer process: %s", exc)

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            _log.warning(message, *args)

    def engine_open(self) -> bool:
        """True when this process has the embedded store open (its keeper writes the spool)."""
        return _Engine.client is not None and _Engine.path == self.target.path

    def close(self) -> None:
        if self.target.kind == "chdb":
            close_engine(self.target.path)
            _Engine.backends.discard(self)
            if self._scratch is not None:
                self._scratch.discard()
        else:
            with self._lock:
                self._drop_http()

    # -- chDB ----------------------------------------------------------------

    def _run_chdb(self, fn: Callable[[Any], T]) -> T:
        with _Engine.lock:
            client = _open_engine(self.target.path)
            _Engine.last_use = time.monotonic()
            try:
                self._prepare(client, _Engine.generation)
                return fn(client)
            finally:
                _Engine.last_use = time.monotonic()

    # -- HTTP ------------------------------------------------------------------

    def _run_http(self, fn: Callable[[Any], T]) -> T:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's sockets are not ours
                self._http, self._pid = None, os.getpid()
                self._schema_ready.clear()
            try:
                if self._http is None:
                    try:
                        self._http = self._connect_http()
                        self._http_generation += 1
                    except Exception as exc:  # refused, DNS, TLS, auth: nothing to write to yet
                        raise StoreUnavailable(self.target.scrub(f"{self.target.display}: {_short(exc)}")) from None
                self._prepare(self._http, self._http_generation)
                return fn(self._http)
            except StoreUnavailable:
                raise
            except Exception as exc:
                if _is_connection_error(exc):
                    self._drop_http()
                    raise StoreUnavailable(self.target.scrub(f"{self.target.display}: {_short(exc)}")) from None
                raise

    def _connect_http(self) -> Any:
        import clickhouse_connect

        return clickhouse_connect.get_client(
            host=self.target.host, port=self.target.port, username=self.target.username,
            password=self.target.password, secure=self.target.secure,
            connect_timeout=max(1, round(self.connect_timeout_s)),
            send_receive_timeout=max(1, round(self.timeout_s)),
            compress=False, autogenerate_session_id=False,
        )

    def _drop_http(self) -> None:
        client, self._http = self._http, None
        self._schema_ready.clear()
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    # -- shared ------------------------------------------------------------------

    def _prepare(self, client: Any, generation: int) -> None:
        if generation not in self._schema_ready:
            applied = self.last_applied = ensure_schema(client, self.target.database, self.schema)
            if applied:
                _log.info("scope-otel: applied %s to %s", ", ".join(applied), self.target.display)
            if self.target.kind == "chdb":
                self._orders = _sorting_keys(client, self.target.database)
            self._schema_ready.add(generation)
        if self.spool.pending():
            self._drain(client)

    def _drain(self, client: Any, max_batches: int = 512, max_bytes: int = 64 << 20) -> None:
        """Write queued batches, many per INSERT; isolate and quarantine a batch the store rejects.

        One INSERT per drain instead of one per batch is what lets chDB keep
        up (each INSERT makes a part, runs the materialized views and builds
        the skip indexes: ~10 ms of fixed cost, and the part is merged again
        later).  After a drain short of the limits it returns: what arrives
        meanwhile waits for the next look and goes in as few INSERTs as it can.
        Serial on purpose: a writer that claimed and merged drain k+1 in a
        helper thread while chDB inserted drain k ingested no more on 2 cores
        and spent ~1 us more CPU per span (bench/results/clickhouse.md).
        """
        while True:
            drain = self._stage_drain(max_batches, max_bytes)
            if drain is None:
                return
            try:
                self._insert_drain(client, drain)
            except BaseException:
                self._give_back_claims(drain.claimed)  # those not written, quarantined or given back yet
                drain.claimed = []
                raise
            self._finish(drain)
            if not drain.full:
                return

    def _stage_drain(self, max_batches: int, max_bytes: int) -> _Drain | None:
        """Claim the oldest queued batches (up to the limits) and stage their INSERTs."""
        claimed: list[tuple[str, list[Part]]] = []
        size = 0
        try:
            for item in self.spool.claim(limit=max_batches):
                claimed.append(item)
                size += sum(p.length for p in item[1])
                if size >= max_bytes:
                    break
        except BaseException:
            for dir_, _parts in claimed:
                self.spool.release(dir_)
            raise
        if not claimed:
            return None
        drain = _Drain(claimed, full=len(claimed) >= max_batches or size >= max_bytes)
        try:
            drain.inserts = self._stage(claimed)
        except Exception as exc:  # a batch we cannot read or merge: found and set aside one at a time
            drain.error = exc
        return drain

    def _stage(self, claimed: list[tuple[str, list[Part]]]) -> list[_Insert]:
        """The batches' parts, one merged INSERT per table (and column list)."""
        groups: dict[tuple[str, tuple[str, ...]], list[Part]] = {}
        for _dir, parts in claimed:
            for part in parts:
                groups.setdefault((part.table, tuple(part.columns)), []).append(part)
        inserts: list[_Insert] = []
        try:
            for parts in groups.values():
                inserts.append(self._stage_group(parts))
        except BaseException:
            for insert in inserts:
                insert.close()
            raise
        return inserts

    def _stage_group(self, parts: list[Part]) -> _Insert:
        rows = sum(p.rows for p in parts)
        if self.target.kind != "chdb":  # a server's async inserts are merged there: sorting here buys nothing
            return _Insert(parts, rows, data=_merged(parts))
        order = self._orders.get(parts[0].table)
        if self._scratch is not None:
            return _Insert(parts, rows, staged=self._scratch.stage(parts, order))
        return _Insert(parts, rows, staged=_StagedFile(self.spool, _merged(parts, order)))

    def _insert(self, client: Any, insert: _Insert) -> None:
        cols = ", ".join(f"`{c}`" for c in insert.columns)
        if insert.staged is not None:
            client.command(f"INSERT INTO `{self.target.database}`.`{insert.table}` ({cols}) "
                           f"FROM INFILE {_sql_string(insert.staged.path)} FORMAT Native")
        else:
            client.raw_insert(f"{self.target.database}.{insert.table}", insert.columns,
                              insert_block=bytes(insert.data), fmt="Native", settings=SERVER_INSERT_SETTINGS)
        self.rows_written[insert.table] = self.rows_written.get(insert.table, 0) + insert.rows

    def _insert_drain(self, client: Any, drain: _Drain) -> None:
        """Insert a staged drain (its claims stay for :meth:`_finish`); on a rejection, batch by batch
        (only the parts of each batch not written yet: another table's INSERT may have succeeded)."""
        written: set[int] = set()
        try:
            if drain.error is not None:
                raise drain.error
            for insert in drain.inserts:
                self._insert(client, insert)
                written.update(id(part) for part in insert.parts)
            return
        except Exception as exc:
            if _is_connection_error(exc):
                self._give_back_claims(drain.claimed)
                drain.claimed = []
                raise
        finally:
            drain.close()
        claimed, drain.claimed = drain.claimed, []
        for i, (dir_, parts) in enumerate(claimed):  # one at a time, to find the bad one
            try:
                self._write_claimed(client, [(dir_, [p for p in parts if id(p) not in written])])
            except Exception as one:
                if _is_connection_error(one):
                    self._give_back_claims(claimed[i:])
                    raise
                _log.warning("scope-otel: a spooled batch was rejected by %s and moved to %s/rejected: %s",
                             self.target.display, self.spool.folder, self.target.scrub(_short(one)))
                self.spool.quarantine(dir_)

    def _write_claimed(self, client: Any, claimed: list[tuple[str, list[Part]]]) -> None:
        inserts = self._stage(claimed)
        try:
            for insert in inserts:
                self._insert(client, insert)
        finally:
            for insert in inserts:
                insert.close()
        for dir_, _parts in claimed:
            self.spool.done(dir_)
            self.batches_replayed += 1

    def _finish(self, drain: _Drain) -> None:
        """The drain is in the store: its batches leave the queue."""
        for dir_, _parts in drain.claimed:
            self.spool.done(dir_)
            self.batches_replayed += 1
        drain.claimed = []

    def _give_back_claims(self, claimed: list[tuple[str, list[Part]]]) -> None:
        for dir_, _parts in claimed:
            self.spool.release(dir_)


class _Insert:
    """One table's parts, merged and staged for one INSERT: a file chDB reads, or bytes for a server."""

    def __init__(self, parts: list[Part], rows: int, staged: _StagedFile | None = None,
                 data: bytes | bytearray = b"") -> None:
        self.parts, self.rows, self.staged, self.data = parts, rows, staged, data
        self.table, self.columns = parts[0].table, parts[0].columns

    def close(self) -> None:
        if self.staged is not None:
            self.staged.close()
            self.staged = None
        self.data = b""


class _Drain:
    """Batches one writer claimed, and their staged INSERTs (or why staging failed)."""

    def __init__(self, claimed: list[tuple[str, list[Part]]], full: bool = False) -> None:
        self.claimed, self.full = claimed, full
        self.inserts: list[_Insert] = []
        self.error: Exception | None = None

    def close(self) -> None:
        for insert in self.inserts:
            insert.close()
        self.inserts = []


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
    :func:`_sorting_keys`), the rows in that order.  All three save chDB work on insert (measured,
    bench/results): a MergeTree sorts an unsorted block and writes every column through that
    permutation.  The parts are read into ``read_into`` when given (their total length), and
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

    Measured on the benchmark's spans: fresh memory cost a page fault and zeroing for every 4 KiB
    of every drain (staging 1.47 -> 0.91 us of CPU per span once kept).  Writing the merged block
    to a file in the spool folder instead cost a copy through the page cache (staging a 64k-span
    drain: 0.68 us per span with a file, 0.58 merged straight into the memfd), and creating and
    deleting that file made every later file in the folder's inode group, chDB's part files
    among them, scan past the deleted inode (ext4 without a journal: 13 % of the writer's CPU
    after a few bursts).  A table keeps its own memfd: its blocks are about the size they were
    last drain (swapped between tables, the pages were cut and faulted in again every drain).
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


_TABLE_TYPES: dict[bytes, bytes] = {}


def _table_types() -> dict[bytes, bytes]:
    if not _TABLE_TYPES:
        from scope_otel.store.rows import EVENT_COLUMNS, TRACE_COLUMNS

        # the two tables agree on the types of the column names they share
        _TABLE_TYPES.update((n.encode(), t.encode()) for n, t in TRACE_COLUMNS + EVENT_COLUMNS)
    return _TABLE_TYPES


def sort_order(sorting_key: str) -> tuple[tuple[bytes, int], ...] | None:
    """A table's sorting key (``system.tables.sorting_key``) as ``merge_blocks`` takes it, or None
    when it is more than plain columns and ``toDateTime`` of a DateTime64(9) column."""
    order = []
    for term in (t.strip() for t in sorting_key.split(",")):
        divisor = 0
        if term.startswith("toDateTime(") and term.endswith(")"):
            term, divisor = term[len("toDateTime("):-1].strip(), 10 ** 9
        name = term[1:-1] if len(term) > 1 and term[0] == term[-1] == "`" else term
        if not name or not all(ch.isalnum() or ch in "_." for ch in name):
            return None
        column_type = _table_types().get(name.encode())
        if column_type is None or (divisor and column_type != b"DateTime64(9)"):
            return None
        order.append((name.encode(), divisor))
    return tuple(order) or None


def _sorting_keys(client: Any, database: str) -> dict[str, tuple[tuple[bytes, int], ...]]:
    """The sorting key of each of the database's tables the writer can sort its rows by."""
    try:
        rows = client.query("SELECT name, sorting_key FROM system.tables WHERE database = {db:String}",
                            parameters={"db": database}).result_rows
    except Exception as exc:  # the rows still go in, unsorted: ClickHouse sorts them
        _log.warning("scope-otel: could not read the tables' sorting keys (%s); rows go in unsorted", _short(exc))
        return {}
    return {name: order for name, key in rows if (order := sort_order(key)) is not None}


def _block_merger() -> Callable[..., Any] | None:
    if pure_python_requested():
        return None
    try:
        from scope_otel.store._chnative import merge_blocks
    except ImportError:
        return None
    return merge_blocks


def default_spool_dir(target: Target) -> str:
    """``<store>/scope-spool`` for chDB (``scope-spool-<database>`` for a database other
    than ``otel``: spooled blocks do not name their database, so each database of a
    store has its own queue); a per-server folder in the user cache for HTTP."""
    if target.kind == "chdb":
        folder = SPOOL_DIR if target.database == "otel" else f"{SPOOL_DIR}-{target.database}"
        return os.path.join(target.path, folder)
    import hashlib

    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(target.key.encode()).hexdigest()[:16]
    return os.path.join(cache, "scope-otel", "spool", digest)


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, StoreUnavailable)):
        return True
    try:
        from clickhouse_connect.driver.exceptions import OperationalError
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, OperationalError):
        return True
    text = str(exc)
    return any(s in text for s in ("Connection refused", "Max retries exceeded", "timed out", "Name or service"))


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 300 else text[:297] + "..."
