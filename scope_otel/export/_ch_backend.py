"""One connection to a ClickHouse store, safe across threads, processes and forks.

Used by the exporter (writes) and by :mod:`scope_otel.store` (queries).
:meth:`Backend.run` opens lazily, creates or migrates the schema once, first
replays the spool (batches other attempts or other processes left behind),
then calls the given function with a clickhouse-connect client.

Servers (``http(s)://``) are plain: a client per backend, reconnected after a
fork.  Connection failures raise :class:`StoreUnavailable`.

Embedded chDB has three hard rules, all verified against chdb 4.x:

1. **One process per data directory.**  A second process fails to open it
   (``Cannot lock file .../status``), and chDB prints that to stderr.  We try
   the same ``flock`` on ``status`` first, so a held store raises
   :class:`StoreBusy` quietly; the caller spools.  The holder lets go after
   ``idle_close_s`` without use (a keeper thread closes it), so short-lived
   commands (``scope-otel query``) and sibling workers get their turn.
2. **One engine per process.**  All chDB backends of a process share one
   client; opening another path closes the current one.
3. **No chDB after fork.**  A child forked while the engine is open hangs at
   exit, and a child of any process that ever opened chDB hangs when it
   opens chDB itself.  So the engine is closed just before ``fork()``
   (``os.register_at_fork``) and a child of a chDB-using parent never opens
   chDB: its batches go to the spool, replayed by the next process that may.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, TypeVar

from scope_otel.export._ch_schema import SchemaOptions, ensure_schema
from scope_otel.export._ch_spool import Spool
from scope_otel.export._ch_target import Target

_log = logging.getLogger("scope_otel.export.clickhouse")
T = TypeVar("T")
_quiet = threading.local()


class _QuietFilter(logging.Filter):
    """Silence clickhouse-connect's own error logs for calls we make and handle.

    Only records emitted on a thread inside :meth:`Backend.run` are dropped,
    so an application using clickhouse-connect itself still sees its logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_quiet, "on", False)


for _name in ("clickhouse_connect.driver.transform", "clickhouse_connect.driver._backend.http_sync",
              "clickhouse_connect.driver._backend.chdb_backend", "clickhouse_connect.driver.client"):
    logging.getLogger(_name).addFilter(_QuietFilter())


class StoreBusy(RuntimeError):
    """The embedded store is held by another process (or unusable after fork)."""


class StoreUnavailable(RuntimeError):
    """The server cannot be reached right now."""


# -- the process' single chDB engine -----------------------------------------

class _Engine:
    lock = threading.Lock()
    client: Any = None
    path: str | None = None
    last_use = 0.0
    used = False  # this process (or its parent, before fork) opened chDB
    forbidden = False  # we are a forked child of a chDB user
    keeper_pid = 0
    backends: "weakref.WeakSet[Backend]" = weakref.WeakSet()
    orphans: list = []  # clients inherited over fork: never touched, never collected


def _before_fork() -> None:
    acquired = _Engine.lock.acquire(timeout=5.0)
    _Engine.fork_locked = acquired  # type: ignore[attr-defined]
    if acquired and _Engine.client is not None:
        _close_engine()


def _after_fork_parent() -> None:
    if getattr(_Engine, "fork_locked", False):
        _Engine.lock.release()


def _after_fork_child() -> None:
    _Engine.lock = threading.Lock()
    if _Engine.client is not None:  # close timed out in the parent: never touch it
        _Engine.orphans.append(_Engine.client)
        _Engine.client = None
    _Engine.forbidden = _Engine.used
    _Engine.keeper_pid = 0


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)


def _close_engine() -> None:
    client, _Engine.client, _Engine.path = _Engine.client, None, None
    if client is not None:
        try:
            client.close()
        except Exception:  # closing is best effort; the engine goes with the process anyway
            _log.debug("closing chDB failed", exc_info=True)


def holder_pid(path: str) -> int | None:
    """PID of the process holding the chDB store at ``path``, if it says so."""
    try:
        with open(os.path.join(path, "status"), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("PID:"):
                    return int(line.split(":", 1)[1])
    except (OSError, ValueError):
        return None
    return None


def _store_is_free(path: str) -> bool:
    """Try chDB's own lock on ``<path>/status`` without keeping it."""
    status = os.path.join(path, "status")
    try:
        fd = os.open(status, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return True  # let chDB decide and report
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _open_engine(path: str) -> Any:
    if _Engine.forbidden:
        raise StoreBusy("this process was forked from one that used chDB; chDB cannot be used here")
    if _Engine.client is not None and _Engine.path == path:
        return _Engine.client
    if _Engine.client is not None:
        _close_engine()
    os.makedirs(path, exist_ok=True)
    if not _store_is_free(path):
        raise StoreBusy(f"chdb://{path} is held by process {holder_pid(path) or '?'}")
    import clickhouse_connect  # deferred: importing chdb costs ~0.3 s

    try:
        client = clickhouse_connect.get_client(interface="chdb", path=path)
    except Exception as exc:
        if "lock" in str(exc).lower() or "EmbeddedServer" in str(exc):
            raise StoreBusy(f"chdb://{path} is held by another process") from None
        raise
    _Engine.client, _Engine.path, _Engine.used = client, path, True
    _start_keeper()
    return client


def _start_keeper() -> None:
    if _Engine.keeper_pid == os.getpid():
        return
    _Engine.keeper_pid = os.getpid()
    threading.Thread(target=_keeper, name="scope-otel-chdb-keeper", daemon=True).start()


def _keeper() -> None:
    """Close the engine when idle; replay spools other processes left."""
    me = os.getpid()
    while _Engine.keeper_pid == me:
        backends = list(_Engine.backends)
        idle = min((b.idle_close_s for b in backends), default=2.0)
        time.sleep(max(0.05, idle / 4))
        now = time.monotonic()
        if _Engine.client is not None and now - _Engine.last_use >= idle:
            if _Engine.lock.acquire(timeout=0.1):
                try:
                    if _Engine.client is not None and time.monotonic() - _Engine.last_use >= idle:
                        _close_engine()
                finally:
                    _Engine.lock.release()
        for backend in backends:
            if backend.target.kind == "chdb" and backend.drain_interval_s and \
                    now - backend._last_drain_check >= backend.drain_interval_s:
                backend._last_drain_check = now
                if backend.spool.pending():
                    try:
                        backend.run(lambda client: None)
                    except Exception:
                        pass  # busy or failing: the next export will try again


# -- the backend ----------------------------------------------------------------

class Backend:
    """Runs functions against one store; see the module docstring."""

    def __init__(
        self,
        target: Target,
        schema: SchemaOptions = SchemaOptions(),
        spool_dir: str | None = None,
        spool_max_bytes: int = 256 << 20,
        idle_close_s: float = 2.0,
        drain_interval_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 30.0,
        on_replay: Callable[[Any, str], int] | None = None,
    ) -> None:
        self.target = target
        self.schema = schema
        self.idle_close_s = idle_close_s
        self.drain_interval_s = drain_interval_s
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.on_replay = on_replay
        self.spool = Spool(spool_dir or default_spool_dir(target), max_bytes=spool_max_bytes)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._http: Any = None
        self._schema_ready: set[tuple[int, str | None]] = set()
        self._last_drain_check = 0.0
        if target.kind == "chdb":
            _Engine.backends.add(self)

    # -- public ------------------------------------------------------------

    def run(self, fn: Callable[[Any], T], wait_s: float = 0.0) -> T:
        """``fn(client)`` with the store open and its schema current.

        ``wait_s`` > 0 retries a busy embedded store for that long (commands
        that must read it); 0 raises :class:`StoreBusy` at once (exporters,
        which spool instead).
        """
        deadline = time.monotonic() + wait_s
        _quiet.on = True
        try:
            while True:
                try:
                    if self.target.kind == "chdb":
                        return self._run_chdb(fn)
                    return self._run_http(fn)
                except StoreBusy:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.1)
        finally:
            _quiet.on = False

    def close(self) -> None:
        if self.target.kind == "chdb":
            with _Engine.lock:
                if _Engine.path == self.target.path:
                    _close_engine()
            _Engine.backends.discard(self)
        else:
            with self._lock:
                self._drop_http()

    # -- chDB ----------------------------------------------------------------

    def _run_chdb(self, fn: Callable[[Any], T]) -> T:
        with _Engine.lock:
            client = _open_engine(self.target.path)
            _Engine.last_use = time.monotonic()
            try:
                self._prepare(client, id(client))
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
                    self._http = self._connect_http()
                self._prepare(self._http, id(self._http))
                return fn(self._http)
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
            connect_timeout=self.connect_timeout_s, send_receive_timeout=self.timeout_s,
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

    def _prepare(self, client: Any, client_id: int) -> None:
        key = (client_id, self.target.database)
        if key not in self._schema_ready:
            applied = ensure_schema(client, self.target.database, self.schema)
            if applied:
                _log.info("scope-otel: applied %s to %s", ", ".join(applied), self.target.display)
            self._schema_ready.add(key)
        if self.on_replay is not None and self.spool.pending():
            self._drain(client)

    def _drain(self, client: Any) -> None:
        for claimed, payload in self.spool.claim(limit=200):
            try:
                self.on_replay(client, payload)
            except Exception as exc:
                if _is_connection_error(exc):
                    self.spool.release(claimed)
                    raise
                _log.warning("scope-otel: spooled batch rejected by %s, kept in %s/rejected: %s",
                             self.target.display, self.spool.folder, self.target.scrub(_short(exc)))
                self.spool.quarantine(claimed)
            else:
                self.spool.done(claimed)


def default_spool_dir(target: Target) -> str:
    """``<store>/scope-spool`` for chDB; a per-server folder in the user cache for HTTP."""
    if target.kind == "chdb":
        return os.path.join(target.path, "scope-spool")
    import hashlib

    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(target.key.encode()).hexdigest()[:16]
    return os.path.join(cache, "scope-otel", "spool", digest)


def _is_connection_error(exc: BaseException) -> bool:
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, (OperationalError, ConnectionError, TimeoutError, StoreUnavailable)):
        return True
    text = str(exc)
    return any(s in text for s in ("Connection refused", "Max retries exceeded", "timed out", "Name or service"))


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 300 else text[:297] + "..."
