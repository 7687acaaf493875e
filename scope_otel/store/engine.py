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
import errno
import logging
import os
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable, TypeVar

from scope_otel.store.quiet import quiet_clickhouse_connect
from scope_otel.store.migrations import EMBEDDED_WIDE_PART_BYTES, SchemaOptions, ensure_schema
from scope_otel.store.ownership import (StoreBusy, _ReleaseRequest, _take_ownership, owner_is_running,
                                        release_requested)
from scope_otel.store.sortkeys import _sorting_keys
from scope_otel.store.staging import _MEMFD, _merged, _Scratch, _StagedFile
from scope_otel.store.spool import Part, Spool
from scope_otel.store.target import Target

_log = logging.getLogger("scope_otel.export.clickhouse")
T = TypeVar("T")

#: Servers get many small batches from many processes: let them buffer and
#: merge (async insert), but only answer once the data is durable.
SERVER_INSERT_SETTINGS = {"async_insert": 1, "wait_for_async_insert": 1}
SPOOL_DIR = "scope-spool"
#: The embedded engine's periodic housekeeping, which a server needs and a store writer beside an
#: application does not: the memory worker re-reading the cgroup's memory every 100 ms and the
#: asynchronous metrics every second cost an idle engine ~1.6 ms of CPU a second (0.04 without).
CHDB_ENGINE_OPTIONS = {"memory_worker_period_ms": 60000, "asynchronous_metrics_update_period_s": 600}
#: A process that wants the queue written now (flushing, ending, writing its last statistics) says so
#: with an empty ``scope-flush-<pid>`` file in the store's folder: the writer, which otherwise gathers
#: a thin stream for seconds, writes what is queued at once and removes the file.
FLUSH_PREFIX = "scope-flush-"
#: the store writer's running totals, in the store's folder: ``PID CPU_SECONDS SPANS_WRITTEN``
#: (``store.writer``), read by the overhead governor of every process exporting to the store
WRITER_COST_FILE = "scope-writer-cost"


class StoreUnavailable(RuntimeError):
    """The server cannot be reached right now."""


class StoreRetry(RuntimeError):
    """The store cannot take batches right now (a full disk, a timeout, a busy or half-created
    store): they stay queued in the spool, to be written on a later try."""


# -- ownership of an embedded store ----------------------------------------------


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
                                                   settings={"use_query_condition_cache": 0},
                                                   chdb_options=CHDB_ENGINE_OPTIONS)
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

    The keeper writes whatever is queued within 50 ms.  Beside the writer's loop it would
    write batches before the loop's rule for gathering them (``writer.gathered``) applies,
    as many small INSERTs, each a part chDB has to merge again."""
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
        #: why the last write of the queue stopped with batches left for a later try (StoreRetry), else None
        self.retry_pending: StoreRetry | None = None
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
        self._totals_told = False
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
        if not self._totals_told:  # whoever starts the writer, this process pays its spans' part of it
            self._totals_told = True
            from scope_otel.capture import governor

            governor.store_writer_totals(os.path.join(self.target.path, WRITER_COST_FILE))
        if force:
            self._ask_for_write()
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
            from scope_otel.capture import governor  # what it spends is recording's cost too

            governor.helper_process(self._drainer.pid)
        except (OSError, ValueError) as exc:
            self._warn_once("spawn", "scope-otel: cannot start the store writer process: %s", exc)

    def _ask_for_write(self) -> None:
        """Ask the store's writer to write the queue now (see :data:`FLUSH_PREFIX`)."""
        try:
            os.close(os.open(os.path.join(self.target.path, f"{FLUSH_PREFIX}{os.getpid()}"),
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except OSError:  # asked already (not written yet), or no store folder yet: the writer starts with it
            pass

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
            try:
                self._drain(client)
            except StoreRetry as exc:  # the queue stays for a later try; the caller's work goes on
                self.retry_pending = exc
            else:
                self.retry_pending = None

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
            if _retryable(exc):  # the data is fine, the store cannot take it now: all stay queued
                self._give_back_claims(drain.claimed)
                drain.claimed = []
                raise StoreRetry(self.target.scrub(_reason(exc))) from exc
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
                if _retryable(one):
                    self._give_back_claims(claimed[i:])
                    raise StoreRetry(self.target.scrub(_reason(one))) from one
                spans = sum(p.rows for p in parts if p.table == "otel_traces")
                _log.warning("scope-otel: %s refused a batch of %d spans as invalid; it is kept in %s/rejected/%s: %s",
                             self.target.display, spans, self.spool.folder,
                             os.path.basename(dir_).rsplit(".claim-", 1)[0], self.target.scrub(_reason(one)))
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


#: Failures that say nothing about the data: the batch stays queued and is tried again.
_RETRYABLE_TEXT = (
    "NOT_ENOUGH_SPACE", "No space left", "Disk quota exceeded", "CANNOT_WRITE_TO_FILE_DESCRIPTOR",
    "TIMEOUT_EXCEEDED", "SOCKET_TIMEOUT", "timed out", "Timeout", "TOO_MANY_PARTS", "TOO_MANY_SIMULTANEOUS_QUERIES",
    "TABLE_IS_READ_ONLY", "TABLE_IS_DROPPED", "UNKNOWN_TABLE", "UNKNOWN_DATABASE", "MEMORY_LIMIT_EXCEEDED",
    "CANNOT_ALLOCATE_MEMORY", "QUERY_WAS_CANCELLED", "ABORTED", "Cannot lock", "Resource temporarily unavailable",
    "Too many open files",
)
_RETRYABLE_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EAGAIN", "EBUSY", "ETIMEDOUT", "EINTR", "EMFILE", "ENFILE", "ENOMEM") if hasattr(errno, name))


def _retryable(exc: BaseException) -> bool:
    """Whether the store failed for a reason of its own (space, time, load, a store still being
    created by another process) rather than because the batch is invalid."""
    if isinstance(exc, (StoreBusy, StoreRetry, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _RETRYABLE_ERRNOS:
        return True
    text = str(exc)
    return any(mark in text for mark in _RETRYABLE_TEXT)


def _reason(exc: BaseException) -> str:
    """One readable line: the exception's first line, without ClickHouse's stack trace."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()
    return text if len(text) <= 300 else text[:297] + "..."


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 300 else text[:297] + "..."
