"""DB-API integration: a CLIENT span per statement run through ``sqlite3``,
``psycopg`` (3) or ``psycopg2``, whoever opened the connection.

Usage::

    from scope_otel.instrumentors.dbapi import ScopeDBAPIInstrumentor
    ScopeDBAPIInstrumentor().instrument()

or the entry point ``scope_dbapi`` under ``scope-otel run`` /
``opentelemetry-instrument`` (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=
scope_dbapi`` turns it off).  Each driver is attached when the program
imports it, never imported for it.

How it attaches
    ``sqlite3``: ``sqlite3.connect`` (also reached as ``sqlite3.dbapi2.
    connect``) opens connections of a traced subclass of the ``factory`` the
    caller asked for (``sqlite3.Connection`` by default), whose cursors are a
    traced subclass of the cursor factory asked for; so Flask's tutorial
    pattern (``sqlite3.connect`` kept on ``g``) and Django's SQLite backend
    are covered.  ``psycopg2``: the same through ``psycopg2.connect``'s
    ``connection_factory`` and ``cursor_factory``.
    ``psycopg`` (3): ``execute`` and ``executemany`` of the ``Cursor``,
    ``ServerCursor``, ``AsyncCursor`` and ``AsyncServerCursor`` classes, and
    ``commit``/``rollback`` of ``Connection`` and ``AsyncConnection``, are
    replaced on the classes: every connection is covered, whenever and by
    whomever it was opened.

Not covered
    A ``sqlite3`` or ``psycopg2`` connection opened before instrumenting
    (or through a ``connect`` imported by name before it) records nothing:
    its class is the driver's C type, which cannot be changed, and the only
    other way, a proxy object (contrib's ``instrument_connection``), is a
    different object the program would have to use instead of its own.
    Under ``scope-otel run`` the integration is attached before the program
    starts, so this concerns ``instrument()`` called late.  Statements of
    such a connection that run through Django or SQLAlchemy are recorded
    by those integrations.

Spans
    The shared SQL span shape (``_sql``): named by ``db.query.summary``
    (``SELECT orders``), with ``db.system.name``, ``db.namespace``,
    ``db.query.text`` (placeholders, never parameter values),
    ``db.operation.name``, ``db.collection.name``, ``server.address``,
    ``server.port``, ``db.response.returned_rows`` (psycopg, for statements
    that return rows), ``error.type`` on failure.  ``commit()`` and
    ``rollback()`` are spans named ``COMMIT`` and ``ROLLBACK``.
    ``executescript`` is one span for the script.

Coexistence
    A statement that the Django or SQLAlchemy integration already records
    (they claim it, see ``_sql.claim``) gets no second span here.  While the
    Django or SQLAlchemy integration records a connection being opened, the
    statements run on it are collected for its one ``connect`` span
    (``_sql.connecting``).
"""
from __future__ import annotations

import weakref
from typing import Any, Callable

from opentelemetry import trace

from scope_otel.instrumentors import _sql
from scope_otel.instrumentors._base import Patch, ScopeInstrumentor
from scope_otel.instrumentors._http import semconv_mode
from scope_otel.instrumentors._report import failed
from scope_otel.version import __version__


class _State:
    def __init__(self, **kwargs: Any) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, kwargs.get("tracer_provider"))
        self.db_mode = semconv_mode("database")
        #: sqlite3's Database per ``connect`` target (a program may connect per request)
        self.sqlite: dict[str, _sql.Database] = {}


_state: _State | None = None


class ScopeDBAPIInstrumentor(ScopeInstrumentor):
    """sqlite3, psycopg 3 and psycopg2: one CLIENT span per statement, commit and rollback."""

    _what = "DB-API"

    def _configure(self, **kwargs: Any) -> _State:
        return _State(**kwargs)

    @property
    def _hooks(self) -> tuple:
        return (
            Patch("sqlite3", "", "connect", _make_connect),
            Patch("sqlite3.dbapi2", "", "connect", _make_connect),
            Patch("psycopg", "Cursor", "execute", _make_pg_execute),
            Patch("psycopg", "Cursor", "executemany", _make_pg_execute),
            Patch("psycopg", "ServerCursor", "execute", _make_pg_execute),
            Patch("psycopg", "AsyncCursor", "execute", _make_pg_execute_async),
            Patch("psycopg", "AsyncCursor", "executemany", _make_pg_execute_async),
            Patch("psycopg", "AsyncServerCursor", "execute", _make_pg_execute_async),
            Patch("psycopg", "Connection", "commit", _make_pg_end),
            Patch("psycopg", "Connection", "rollback", _make_pg_end),
            Patch("psycopg", "AsyncConnection", "commit", _make_pg_end_async),
            Patch("psycopg", "AsyncConnection", "rollback", _make_pg_end_async),
            Patch("psycopg2", "", "connect", _make_pg2_connect),
        )


def _run(database: _sql.Database, text: Any, call: Callable, rowcount: Callable | None = None) -> Any:
    """``call()`` inside the span of statement ``text`` (when not claimed)."""
    state = _state
    claimed = _sql.claimed()
    if claimed:  # recorded by a framework: by its statement's span, or by the set-up of a connection
        return call() if claimed is True else claimed.run(text, call, database)
    if state is None or type(text) is not str:
        return call()
    return _sql.run(state.tracer, database, text, call, rowcount, "dbapi")


# --------------------------------------------------------------------------
# sqlite3: traced subclasses of the caller's factories
# --------------------------------------------------------------------------

# Traced subclass per factory class.  Plain dicts: a subclass holds its base
# (``__bases__``), so the factory lives as long as its entry whatever the map.
_CONNECTIONS: dict[type, type] = {}
_CURSORS: dict[type, type] = {}
_FACTORY_POSITION = 4  # connect(database, timeout, detect_types, isolation_level, check_same_thread, factory, ...)
_UNSET = object()


def _make_connect(original: Callable) -> Callable:
    def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
        state = _state
        if state is None:  # sqlite3 copies dbapi2's connect at import: one of the two may outlive us
            return original(database, *args, **kwargs)
        try:
            if len(args) > _FACTORY_POSITION:
                args = list(args)
                args[_FACTORY_POSITION] = _connection_class(args[_FACTORY_POSITION])
            else:
                factory = kwargs.get("factory")
                kwargs["factory"] = _connection_class(factory) if factory is not None else _default_connection()
        except Exception:
            failed("dbapi.sqlite3.connect")
        connection = original(database, *args, **kwargs)
        if getattr(type(connection), "_scope_otel_traced", False):
            try:
                connection._scope_otel_db = _sqlite_database(state, database)
            except Exception:
                failed("dbapi.sqlite3.database")
        return connection

    connect.__doc__ = original.__doc__
    connect.__name__ = "connect"
    return connect


_DEFAULTS: dict[str, type] = {}  # the traced sqlite3.Connection and sqlite3.Cursor, once made


def _default_connection() -> type:
    found = _DEFAULTS.get("connection")
    if found is None:
        import sqlite3

        found = _DEFAULTS["connection"] = _connection_class(sqlite3.Connection)
    return found


def _default_cursor() -> type:
    found = _DEFAULTS.get("cursor")
    if found is None:
        import sqlite3

        found = _DEFAULTS["cursor"] = _cursor_class(sqlite3.Cursor)
    return found


def _sqlite_database(state: _State, database: Any) -> _sql.Database:
    found = state.sqlite.get(database) if type(database) is str else None
    if found is not None:
        return found
    try:
        import os

        name = os.fsdecode(database) if not isinstance(database, str) else database
        if name.startswith("file:"):
            name = name[5:].split("?", 1)[0]
        found = _sql.database("sqlite", _sql.database_name(name), mode=state.db_mode)
    except Exception:
        found = _sql.database("sqlite", mode=state.db_mode)
    if type(database) is str:
        if len(state.sqlite) >= 256:
            state.sqlite.clear()
        state.sqlite[database] = found
    return found


def _connection_class(factory: type) -> type:
    traced = _CONNECTIONS.get(factory)
    if traced is None:
        if getattr(factory, "_scope_otel_traced", False):
            return factory
        traced = _CONNECTIONS[factory] = type(factory.__name__, (_TracedConnection, factory), {
            "__slots__": ("_scope_otel_db",),
            "__module__": factory.__module__,
            "__qualname__": factory.__qualname__,
        })
    return traced


def _cursor_class(factory: type) -> type:
    traced = _CURSORS.get(factory)
    if traced is None:
        if getattr(factory, "_scope_otel_traced", False):
            return factory
        traced = _CURSORS[factory] = type(factory.__name__, (_TracedCursor, factory), {
            "__slots__": (),
            "__module__": factory.__module__,
            "__qualname__": factory.__qualname__,
        })
    return traced


def _db_of(connection: Any) -> _sql.Database | None:
    try:
        return connection._scope_otel_db
    except AttributeError:
        return None


class _TracedConnection:
    """Mixed in front of the caller's connection factory.

    ``Connection.execute`` and friends are written again as "a cursor, then
    its method" (what CPython does) because CPython's own versions run the
    statement without going through the cursor's Python-level methods.
    """

    __slots__ = ()
    _scope_otel_traced = True

    def cursor(self, factory: Any = _UNSET) -> Any:
        try:
            if factory is _UNSET:
                factory = _default_cursor()
            elif isinstance(factory, type):
                factory = _cursor_class(factory)
        except Exception:
            failed("dbapi.sqlite3.cursor")
        if factory is _UNSET:
            return super().cursor()
        return super().cursor(factory)

    # parameters passed on only when given: a cursor subclass may tell "none"
    # from "empty" (Django's SQLite cursor formats a query only when given some)
    def execute(self, sql: Any, parameters: Any = _UNSET, /) -> Any:
        claimed = _sql.claimed()
        if claimed:  # recorded above (CPython's own execute still makes its cursor with self.cursor())
            if parameters is _UNSET:
                call = lambda: super(_TracedConnection, self).execute(sql)  # noqa: E731
            else:
                call = lambda: super(_TracedConnection, self).execute(sql, parameters)  # noqa: E731
            return call() if claimed is True else claimed.run(sql, call, _db_of(self))
        if parameters is _UNSET:
            return self.cursor().execute(sql)
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: Any, parameters: Any, /) -> Any:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: Any, /) -> Any:
        return self.cursor().executescript(script)

    def commit(self) -> Any:
        db = _db_of(self)
        if db is None or not self.in_transaction:
            return super().commit()
        return _run(db, "COMMIT", super().commit)

    def rollback(self) -> Any:
        db = _db_of(self)
        if db is None or not self.in_transaction:
            return super().rollback()
        return _run(db, "ROLLBACK", super().rollback)


class _TracedCursor:
    __slots__ = ()
    _scope_otel_traced = True

    def execute(self, sql: Any, parameters: Any = _UNSET, /) -> Any:
        state = _state
        claimed = _sql.claimed()
        if state is None or claimed is True or type(sql) is not str or (db := _db_of(self.connection)) is None:
            if parameters is _UNSET:
                return super().execute(sql)
            return super().execute(sql, parameters)
        if parameters is _UNSET:
            call = lambda: super(_TracedCursor, self).execute(sql)  # noqa: E731
        else:
            call = lambda: super(_TracedCursor, self).execute(sql, parameters)  # noqa: E731
        if claimed:  # a connection's set-up
            return claimed.run(sql, call, db)
        return _sql.run(state.tracer, db, sql, call, None, "dbapi")

    def executemany(self, sql: Any, parameters: Any, /) -> Any:
        db = _db_of(self.connection)
        if db is None:
            return super().executemany(sql, parameters)
        return _run(db, sql, lambda: super(_TracedCursor, self).executemany(sql, parameters))

    def executescript(self, script: Any, /) -> Any:
        db = _db_of(self.connection)
        if db is None:
            return super().executescript(script)
        return _run(db, script, lambda: super(_TracedCursor, self).executescript(script))


# --------------------------------------------------------------------------
# psycopg 3: the cursor and connection classes
# --------------------------------------------------------------------------

_PG_DATABASES: "weakref.WeakKeyDictionary[Any, _sql.Database]" = weakref.WeakKeyDictionary()


def _pg_database(connection: Any) -> _sql.Database:
    db = _PG_DATABASES.get(connection)
    if db is None:
        info = connection.info
        host = info.host
        db = _PG_DATABASES[connection] = _sql.database(
            "postgresql", info.dbname, host if host and not host.startswith("/") else None, info.port or None,
            _state.db_mode if _state is not None else None)
    return db


def _pg_database_or_none(connection: Any) -> _sql.Database | None:
    try:
        return _pg_database(connection)
    except Exception:
        failed("dbapi.psycopg.database")
        return None


def _pg_rowcount(cursor: Any) -> Callable[[], int]:
    return lambda: cursor.rowcount


def _make_pg_execute(original: Callable) -> Callable:
    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        claimed = _sql.claimed()
        if claimed:  # recorded by a framework: by its statement's span, or by the set-up of a connection
            call = lambda: original(self, query, *args, **kwargs)  # noqa: E731
            return call() if claimed is True else claimed.run(query, call, _pg_database_or_none(self.connection))
        if _state is None or type(query) is not str:
            return original(self, query, *args, **kwargs)
        try:
            db = _pg_database(self.connection)
        except Exception:
            failed("dbapi.psycopg.database")
            return original(self, query, *args, **kwargs)
        return _run(db, query, lambda: original(self, query, *args, **kwargs), _pg_rowcount(self))

    return execute


def _make_pg_execute_async(original: Callable) -> Callable:
    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        state = _state
        claimed = _sql.claimed()
        if claimed is not False and claimed is not True:  # a connection's set-up
            claimed.add(query, _pg_database_or_none(self.connection))
        if state is None or claimed or type(query) is not str:
            return await original(self, query, *args, **kwargs)
        try:
            span, rows = _sql.start(state.tracer, _pg_database(self.connection), query)
        except Exception:
            failed("dbapi.psycopg.start")
            return await original(self, query, *args, **kwargs)
        token = _sql.claim()
        try:
            result = await original(self, query, *args, **kwargs)
        except BaseException as exc:
            _sql.release(token)
            _sql.end(span, error=exc)
            raise
        _sql.release(token)
        _sql.end(span, self.rowcount if rows else None)
        return result

    return execute


def _pg_in_transaction(connection: Any) -> bool:
    from psycopg.pq import TransactionStatus

    return connection.info.transaction_status != TransactionStatus.IDLE


def _make_pg_end(original: Callable) -> Callable:
    text = "COMMIT" if original.__name__ == "commit" else "ROLLBACK"

    def end(self) -> Any:
        if _state is None or _sql.claimed() is True:
            return original(self)
        db = None
        try:
            if _pg_in_transaction(self):  # else the driver sends nothing
                db = _pg_database(self)
        except Exception:
            failed("dbapi.psycopg.end")
        if db is None:
            return original(self)
        return _run(db, text, lambda: original(self))

    end.__name__ = original.__name__
    return end


def _make_pg_end_async(original: Callable) -> Callable:
    text = "COMMIT" if original.__name__ == "commit" else "ROLLBACK"

    async def end(self) -> Any:
        state = _state
        claimed = _sql.claimed()
        if state is None or claimed is True:
            return await original(self)
        span = None
        try:
            if _pg_in_transaction(self):
                if claimed:  # a connection's set-up
                    claimed.add(text, _pg_database(self))
                else:
                    span, _ = _sql.start(state.tracer, _pg_database(self), text)
        except Exception:
            failed("dbapi.psycopg.end")
        if span is None:
            return await original(self)
        try:
            result = await original(self)
        except BaseException as exc:
            _sql.end(span, error=exc)
            raise
        _sql.end(span)
        return result

    end.__name__ = original.__name__
    return end


# --------------------------------------------------------------------------
# psycopg2: traced subclasses of the caller's factories, as for sqlite3
# --------------------------------------------------------------------------

_PG2_CONNECTIONS: "weakref.WeakKeyDictionary[type, type]" = weakref.WeakKeyDictionary()
_PG2_CURSORS: "weakref.WeakKeyDictionary[type, type]" = weakref.WeakKeyDictionary()


def _make_pg2_connect(original: Callable) -> Callable:
    def connect(*args: Any, **kwargs: Any) -> Any:
        if _state is None:
            return original(*args, **kwargs)
        try:
            import psycopg2.extensions

            factory = kwargs.get("connection_factory") or psycopg2.extensions.connection
            kwargs["connection_factory"] = _subclass(factory, _TracedPg2Connection, _PG2_CONNECTIONS,
                                                     ("_scope_otel_db",))
        except Exception:
            failed("dbapi.psycopg2.connect")
        connection = original(*args, **kwargs)
        if getattr(type(connection), "_scope_otel_traced", False):
            try:
                info = connection.info
                host = info.host
                connection._scope_otel_db = _sql.database(
                    "postgresql", info.dbname, host if host and not host.startswith("/") else None, info.port or None,
                    _state.db_mode if _state is not None else None)
            except Exception:
                failed("dbapi.psycopg2.database")
        return connection

    connect.__doc__ = original.__doc__
    connect.__name__ = "connect"
    return connect


def _subclass(factory: type, mixin: type, cache: Any, slots: tuple) -> type:
    if getattr(factory, "_scope_otel_traced", False):
        return factory
    traced = cache.get(factory)
    if traced is None:
        traced = cache[factory] = type(factory.__name__, (mixin, factory), {
            "__slots__": slots, "__module__": factory.__module__, "__qualname__": factory.__qualname__})
    return traced


class _TracedPg2Connection:
    __slots__ = ()
    _scope_otel_traced = True

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        try:
            import psycopg2.extensions

            factory = kwargs.get("cursor_factory") or self.cursor_factory or psycopg2.extensions.cursor
            kwargs["cursor_factory"] = _subclass(factory, _TracedPg2Cursor, _PG2_CURSORS, ())
        except Exception:
            failed("dbapi.psycopg2.cursor")
        return super().cursor(*args, **kwargs)

    def commit(self) -> Any:
        db = _db_of(self)
        if db is None or self.status != 2:  # STATUS_IN_TRANSACTION / STATUS_BEGIN
            return super().commit()
        return _run(db, "COMMIT", super().commit)

    def rollback(self) -> Any:
        db = _db_of(self)
        if db is None or self.status != 2:
            return super().rollback()
        return _run(db, "ROLLBACK", super().rollback)


class _TracedPg2Cursor:
    __slots__ = ()
    _scope_otel_traced = True

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        db = _db_of(self.connection)
        if db is None:
            return super().execute(query, *args, **kwargs)
        return _run(db, query, lambda: super(_TracedPg2Cursor, self).execute(query, *args, **kwargs),
                    lambda: self.rowcount)

    def executemany(self, query: Any, vars_list: Any) -> Any:
        db = _db_of(self.connection)
        if db is None:
            return super().executemany(query, vars_list)
        return _run(db, query, lambda: super(_TracedPg2Cursor, self).executemany(query, vars_list))
