"""The one SQL span shape, shared by every SQL source (SQLAlchemy, Django,
the DB-API drivers), so they cannot drift apart.

* :func:`database` gives the :class:`Database` of a connection target: what its spans share
  (``db.system.name``, ``db.namespace``, ``server.address``,
  ``server.port``) and, per statement text, the span name and attributes:
  ``db.query.text`` (the text as the caller wrote it, with string and
  numeric literals replaced by ``?``; parameters are never recorded),
  ``db.operation.name``, ``db.query.summary`` (the operation and the tables
  it names, e.g. ``SELECT orders customers``), ``db.collection.name`` when
  the statement names one table.  The span is named by its summary, as the
  database semantic conventions ask.  ``OTEL_SEMCONV_STABILITY_OPT_IN`` =
  ``database/dup`` adds the old names, ``database/old`` uses only them.
* :func:`start` / :func:`end`: one CLIENT span per statement, with
  ``db.response.returned_rows`` when the driver reports it and
  ``error.type`` plus an ``exception`` event on failure.
* :func:`claim` / :func:`claimed`: a framework's hook (Django, SQLAlchemy)
  claims the statement it is about to run, so the driver underneath it
  (``sqlite3``, ``psycopg``) makes no second span for it.
* :func:`connecting` / :func:`connected`: while a framework opens a
  connection (Django's ``DatabaseWrapper.connect``, SQLAlchemy's pool), the
  statements run on it (the backend's set-up such as SQLite's ``PRAGMA
  foreign_keys = ON``, PostgreSQL's ``SET TIME ZONE``, a dialect's first-connect
  queries, ``connection_created`` receivers' and ``connect`` listeners') are
  one CLIENT span named ``connect``: ``db.query.text`` holds their texts
  joined by ``"; "`` (as the conventions join a batch's), and
  ``scope.db.setup_statements`` their number.  The set-up runs on every new
  connection (per request with Django's default ``CONN_MAX_AGE=0``); one span
  for it keeps every statement's text at the cost of one span, not one each.
* :func:`track` / :func:`report`: a server span carries how many statements
  its request ran (``scope.db.statements``) and how many of them repeated a
  text already run in that request (``scope.db.repeated_statements``): an
  N+1 pattern shows on the request span itself.
"""
from __future__ import annotations

import os
import re
from contextvars import ContextVar
from functools import partial
from time import time_ns
from types import MappingProxyType
from typing import Any, Callable, Mapping

from opentelemetry import trace
from opentelemetry.context import Context, create_key, get_current, set_value
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from scope_otel.instrumentors._http import OLD, STABLE, semconv_mode
from scope_otel.instrumentors._report import failed

#: stable ``db.system.name`` and old ``db.system`` per driver or dialect name
SYSTEMS = {
    "postgresql": ("postgresql", "postgresql"),
    "sqlite": ("sqlite", "sqlite"),
    "mysql": ("mysql", "mysql"),
    "mariadb": ("mariadb", "mariadb"),
    "mssql": ("microsoft.sql_server", "mssql"),
    "microsoft": ("microsoft.sql_server", "mssql"),
    "oracle": ("oracle.db", "oracle"),
}

#: statements remembered per database: frameworks send the same text for
#: each execution of a statement, so a span's name and attributes are one
#: dict lookup.  Texts with inlined literals are all different: the cache
#: then starts over rather than grow, and huge texts are never kept.
_STATEMENTS_MAX = 1024
_STATEMENT_MAX = 4096
_SUMMARY_MAX = 255
_SETUPS_MAX = 64


class Database:
    """What the SQL spans of one connection target share."""

    __slots__ = ("system", "namespace", "mode", "constant", "statements", "setups")

    def __init__(self, system: str, namespace: str | None = None, host: str | None = None,
                 port: int | None = None, mode: str | None = None) -> None:
        mode = semconv_mode("database") if mode is None else mode
        stable, old = SYSTEMS.get(system, (system, system))
        attrs: dict[str, Any] = {}
        if mode != OLD:
            attrs["db.system.name"] = stable
            if namespace:
                attrs["db.namespace"] = namespace
            if host:
                attrs["server.address"] = host
            if port:
                attrs["server.port"] = port
        if mode != STABLE:
            attrs["db.system"] = old
            if namespace:
                attrs["db.name"] = namespace
            if host:
                attrs["net.peer.name"] = host
            if port:
                attrs["net.peer.port"] = port
        self.system = stable
        self.namespace = namespace or None
        self.mode = mode
        self.constant = attrs
        self.statements: dict[str, tuple[str, Mapping[str, Any], bool]] = {}
        self.setups: dict[tuple[str, ...], Mapping[str, Any]] = {}

    def statement(self, text: str) -> tuple[str, Mapping[str, Any], bool]:
        """(span name, attributes, returns rows) of statement ``text``."""
        found = self.statements.get(text)
        if found is None:
            found = self._describe(text)
        return found

    def _describe(self, text: str) -> tuple[str, Mapping[str, Any], bool]:
        operation, tables = _parse(text)
        summary = " ".join((operation, *tables))[:_SUMMARY_MAX] if operation else None
        attrs = dict(self.constant)
        query = _LITERALS.sub("?", text)
        if self.mode != OLD:
            attrs["db.query.text"] = query
            if operation:
                attrs["db.operation.name"] = operation
                attrs["db.query.summary"] = summary
            if len(tables) == 1:
                attrs["db.collection.name"] = tables[0]
        if self.mode != STABLE:
            attrs["db.statement"] = query
            if operation:
                attrs["db.operation"] = operation
            if len(tables) == 1:
                attrs["db.sql.table"] = tables[0]
        # read-only: samplers see the shared map and must not change it for the next statement
        found = (summary or self.system, MappingProxyType(attrs), operation in _ROWS)
        if len(text) <= _STATEMENT_MAX:
            statements = self.statements
            if len(statements) >= _STATEMENTS_MAX:
                statements.clear()
            statements[text] = found
        return found

    def setup(self, texts: tuple[str, ...]) -> Mapping[str, Any]:
        """Attributes of the ``connect`` span of a connection whose set-up ran ``texts``."""
        found = self.setups.get(texts)
        if found is None:
            queries = "; ".join(self.statement(text)[1].get("db.query.text" if self.mode != OLD else "db.statement")
                                for text in texts)
            attrs = dict(self.constant)
            if self.mode != OLD:
                attrs["db.query.text"] = queries
            if self.mode != STABLE:
                attrs["db.statement"] = queries
            attrs["scope.db.setup_statements"] = len(texts)
            found = MappingProxyType(attrs)
            if len(self.setups) >= _SETUPS_MAX:
                self.setups.clear()
            self.setups[texts] = found
        return found


_DATABASES: dict[tuple, Database] = {}
_DATABASES_MAX = 256


def database(system: str, namespace: str | None = None, host: str | None = None, port: int | None = None,
             mode: str | None = None) -> Database:
    """The :class:`Database` of a connection target, shared by all its connections
    (so a connection opened per request still finds its statements described).
    ``mode``: the semantic-convention mode an integration read when instrumented
    (default: read ``OTEL_SEMCONV_STABILITY_OPT_IN`` now)."""
    if mode is None:
        mode = semconv_mode("database")
    key = (system, namespace, host, port, mode)
    found = _DATABASES.get(key)
    if found is None:
        if len(_DATABASES) >= _DATABASES_MAX:
            _DATABASES.clear()
        found = _DATABASES[key] = Database(system, namespace, host, port, mode)
    return found


# --------------------------------------------------------------------------
# reading a statement: operation, tables, literals
# --------------------------------------------------------------------------

_ROWS = frozenset(("SELECT", "WITH", "VALUES", "SHOW", "PRAGMA", "EXPLAIN", "TABLE"))
#: string literals ('it''s', E'..', X'..') and numbers standing alone
_LITERALS = re.compile(r"(?<![\w$])[eEbBxXnN]?'(?:[^']|'')*'|(?<![\w$.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_TOKENS = re.compile(r"""--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[\w$.]+|\(|\)|;|,""", re.S)
_BEFORE_TABLE = frozenset(("FROM", "JOIN", "INTO", "UPDATE", "TABLE"))
_KINDS = frozenset(("CREATE", "DROP", "ALTER"))
_NOT_TABLES = frozenset(("SELECT", "IF", "NOT", "EXISTS", "ONLY", "LATERAL", "IGNORE", "OR", "REPLACE",
                         "ABORT", "FAIL", "ROLLBACK", "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "UNNEST",
                         "VALUES", "TEMPORARY", "TEMP"))
_NAME = re.compile(r"[A-Za-z_]")


def _parse(text: str) -> tuple[str, tuple[str, ...]]:
    """(operation keyword, tables named after FROM/JOIN/INTO/UPDATE/TABLE)."""
    operation = ""
    tables: list[str] = []
    expect = False
    for match in _TOKENS.finditer(text, 0, 4096):
        token = match.group()
        first = token[0]
        if first == "-" or first == "/":
            continue
        upper = token.upper()
        if not operation:
            if first == "(":
                continue
            if not _NAME.match(token):
                break
            operation = upper
            expect = upper == "UPDATE"
            continue
        if operation in _KINDS and " " not in operation:  # CREATE TABLE x, DROP INDEX y
            if _NAME.match(token) and upper not in ("OR", "TEMPORARY", "TEMP", "UNIQUE", "REPLACE"):
                operation = f"{operation} {upper}"
                expect = upper in ("TABLE", "VIEW")
                continue
            if upper in ("OR", "REPLACE", "TEMPORARY", "TEMP", "UNIQUE"):
                continue
        if expect:
            expect = False
            if first in "\"`[":
                name = token[1:-1]
            elif _NAME.match(token) and upper not in _NOT_TABLES:
                name = token
            else:
                if upper in ("IF", "NOT", "EXISTS", "ONLY", "OR", "REPLACE", "TEMPORARY", "TEMP", "IGNORE"):
                    expect = True  # CREATE TABLE IF NOT EXISTS x, INSERT OR REPLACE INTO x
                continue
            if name not in tables:
                tables.append(name)
        elif upper in _BEFORE_TABLE:
            expect = True
    return operation, tuple(tables)


# --------------------------------------------------------------------------
# spans
# --------------------------------------------------------------------------

_CLAIMED: ContextVar[bool] = ContextVar("scope_otel.sql.claimed", default=False)
_REQUEST = create_key("scope_otel.sql.request")


# The three are the context variable's own methods (C calls, no Python frame:
# every statement through a traced driver asks ``claimed()``).
#: ``claim()``: mark the statement about to run as recorded (a token for :func:`release`)
claim = partial(_CLAIMED.set, True)
#: ``release(token)``: undo :func:`claim`
release = _CLAIMED.reset
#: ``claimed()``: is a framework hook already recording the statement being run?  False, True,
#: or, while a framework opens a connection, the :class:`Setup` collecting its statements
claimed = _CLAIMED.get


class Setup:
    """The statements run while a framework opens a connection (see :func:`connecting`)."""

    __slots__ = ("texts", "error", "started", "token", "database")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.error: BaseException | None = None
        self.started = time_ns()
        self.token: Any = None
        self.database: Database | None = None  # of the first statement, when the framework does not say

    def add(self, text: Any, database: Database | None = None) -> None:
        """Collect statement ``text``, run on ``database``."""
        if type(text) is str:
            self.texts.append(text)
            if self.database is None:
                self.database = database

    def run(self, text: Any, call: Callable[[], Any], database: Database | None = None) -> Any:
        """``call()``, statement ``text`` of the set-up: collected, and claimed so no layer below records it."""
        self.add(text, database)
        token = _CLAIMED.set(True)
        try:
            return call()
        except BaseException as exc:
            if self.error is None:
                self.error = exc
            raise
        finally:
            _CLAIMED.reset(token)


def connecting() -> Setup:
    """Start collecting the statements of a connection being opened (end with :func:`connected`)."""
    setup = Setup()
    setup.token = _CLAIMED.set(setup)
    return setup


def connected(tracer: trace.Tracer, setup: Setup, database: Database | None = None) -> None:
    """Stop collecting; the statements collected, if any, become one ``connect`` span
    (from :func:`connecting` to now) and count in the request's statements.
    ``database``: the connection's (default: that of the layer that ran the first statement)."""
    _CLAIMED.reset(setup.token)
    texts = setup.texts
    if not texts:
        return
    database = database or setup.database or _database_of_unknown()
    ctx = get_current()
    counter = ctx.get(_REQUEST)
    if counter is not None:
        for text in texts:
            counter.add(text)
    span = tracer.start_span("connect", context=ctx, kind=SpanKind.CLIENT, attributes=database.setup(tuple(texts)),
                             start_time=setup.started)
    end(span, error=setup.error)


def opening(tracer: trace.Tracer, open_: Callable[[], Any], where: str,
            database: Callable[[], Database] | None = None) -> Any:
    """Run a framework's opening of a connection (``open_``): the statements it runs become one
    ``connect`` span (:func:`connecting`, :func:`connected`); ``database`` names the connection's when
    the framework knows it.  A failure of ours is reported as ``where``, never raised."""
    setup = connecting()
    try:
        return open_()
    finally:
        try:
            connected(tracer, setup, database() if database is not None and setup.texts else None)
        except Exception:
            failed(where)


def _database_of_unknown() -> Database:
    return database("other_sql")


def start(tracer: trace.Tracer, database: Database, text: str) -> tuple[Span, bool]:
    """Start the CLIENT span of one statement in the current context: (span, returns rows)."""
    found = database.statements.get(text)
    name, attrs, rows = found if found is not None else database._describe(text)
    # the current context read once: the SDK would read it three times (parent, sampler, trace state)
    ctx = get_current()
    counter = ctx.get(_REQUEST)
    if counter is not None:
        counter.add(text)
    return tracer.start_span(name, context=ctx, kind=SpanKind.CLIENT, attributes=attrs), rows


def end(span: Span, rowcount: int | None = None, error: BaseException | None = None) -> None:
    """End a statement's span; ``rowcount`` (when >= 0) becomes ``db.response.returned_rows``."""
    if span.is_recording():
        if error is not None:
            span.record_exception(error)
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        elif rowcount is not None and rowcount >= 0:
            span.set_attribute("db.response.returned_rows", rowcount)
    span.end()


class _Counter:
    __slots__ = ("statements", "seen", "repeated")

    def __init__(self) -> None:
        self.statements = 0
        self.repeated = 0
        self.seen: set[int] = set()

    def add(self, text: str) -> None:
        self.statements += 1
        key = hash(text)
        if key in self.seen:
            self.repeated += 1
        else:
            self.seen.add(key)


def run(tracer: trace.Tracer, database: Database, text: str, call: Callable[[], Any],
        rowcount: Callable[[], int | None] | None, where: str) -> Any:
    """``call()`` inside the SQL span of ``text``, claimed so that a driver below records no second
    span; a failure of ours is reported under ``where`` and never reaches the program."""
    try:
        span, rows = start(tracer, database, text)
    except Exception:
        failed(where + ".start")
        return call()
    token = claim()
    try:
        result = call()
    except BaseException as exc:
        release(token)
        end(span, error=exc)
        raise
    release(token)
    try:
        end(span, rowcount() if rows and rowcount is not None else None)
    except Exception:
        failed(where + ".end")
        span.end()
    return result


def track(ctx: Context) -> Context:
    """``ctx`` with a fresh per-request statement counter in it."""
    return set_value(_REQUEST, _Counter(), ctx)


def report(span: Span, ctx: Context) -> None:
    """Put the request's statement counts on its server span (before it ends)."""
    counter = ctx.get(_REQUEST)
    if counter is not None and span.is_recording():
        span.set_attributes({"scope.db.statements": counter.statements,
                             "scope.db.repeated_statements": counter.repeated})


def database_name(path: str | None) -> str | None:
    """SQLite's namespace: the file's name, not its full path (``:memory:`` as is)."""
    if not path:
        return None
    return os.path.basename(path) if path != ":memory:" else path
