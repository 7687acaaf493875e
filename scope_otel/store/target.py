"""Where ClickHouse data goes: parse and validate a store URL, keep secrets out of logs.

Accepted spellings::

    .scope-otel                         a path: embedded chDB there
    chdb:///abs/path                    embedded chDB at /abs/path
    http://host:8123  https://host:8443 a ClickHouse server (25.8 or newer)
    http://user:pass@host:8123/db       credentials and database in the URL

Credentials not in the URL come from ``SCOPE_OTEL_CLICKHOUSE_USER`` /
``SCOPE_OTEL_CLICKHOUSE_PASSWORD`` (or ``CLICKHOUSE_USER`` /
``CLICKHOUSE_PASSWORD``).  :attr:`Target.display` is the only form ever logged
or printed: the password is replaced by ``***``.

Database and table names are checked against ``[A-Za-z_][A-Za-z0-9_]*`` (at
most 64 characters) because they end up in DDL; nothing user-supplied is
interpolated into SQL raw.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_CLUSTER = re.compile(r"[A-Za-z0-9_.\-{}]{1,128}")


class TargetError(ValueError):
    """A store URL, database or table name is unusable; the message says why."""


def check_name(name: str, what: str = "database") -> str:
    """Return ``name`` if it is a safe ClickHouse identifier, else raise TargetError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TargetError(
            f"{what} name {name!r} is not allowed: use letters, digits and _, "
            f"starting with a letter or _, at most 64 characters"
        )
    return name


def check_cluster(name: str | None) -> str | None:
    if name is None or name == "":
        return None
    if not _CLUSTER.fullmatch(name):
        raise TargetError(f"cluster name {name!r} is not allowed (letters, digits, _ . - {{ }})")
    return name


@dataclass(frozen=True)
class Target:
    """A parsed destination.  ``kind`` is ``"chdb"`` or ``"http"``."""

    kind: str
    database: str
    path: str = ""  # chdb: absolute data directory
    host: str = ""
    port: int = 0
    secure: bool = False
    username: str = "default"
    password: str = field(default="", repr=False)

    @property
    def display(self) -> str:
        """The URL without its password: safe for logs and messages."""
        if self.kind == "chdb":
            return f"chdb://{self.path}"
        scheme = "https" if self.secure else "http"
        user = f"{self.username}:***@" if self.password else (f"{self.username}@" if self.username != "default" else "")
        return f"{scheme}://{user}{self.host}:{self.port}/{self.database}"

    @property
    def key(self) -> str:
        """Identity of the destination (no secrets), e.g. for a spool folder name."""
        if self.kind == "chdb":
            return f"chdb:{self.path}:{self.database}"
        return f"http:{self.host}:{self.port}:{self.database}"

    def scrub(self, text: str) -> str:
        """``text`` with the password removed (error messages may echo URLs)."""
        if self.password and self.password in text:
            text = text.replace(self.password, "***")
        return text


def parse(url: str, database: str | None = None, env: dict | None = None) -> Target:
    """Parse ``url`` (see the module docstring) into a :class:`Target`."""
    env = os.environ if env is None else env
    if not isinstance(url, str) or not url.strip():
        raise TargetError("store URL is empty: give a path, chdb:///path or http(s)://host:port")
    url = url.strip()
    if "://" not in url:
        path = os.path.abspath(os.path.expanduser(url))
        return Target("chdb", check_name("otel" if database is None else database), path=path)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "chdb":
        raw = unquote(parts.netloc + parts.path) if parts.netloc else unquote(parts.path)
        if not raw or raw in ("memory", ":memory:"):
            raise TargetError(f"store {url!r}: an on-disk path is needed (chdb:///abs/path)")
        return Target("chdb", check_name("otel" if database is None else database),
                      path=os.path.abspath(os.path.expanduser(raw)))
    if scheme not in ("http", "https", "clickhouse"):
        raise TargetError(f"store {_shown(url)!r}: scheme {scheme!r} is not supported (use chdb, http or https)")
    secure = scheme == "https"
    try:
        port = parts.port or (8443 if secure else 8123)
    except ValueError:
        raise TargetError(f"store {_shown(url)!r}: the port is not a number") from None
    if not parts.hostname:
        raise TargetError(f"store {_shown(url)!r}: no host name")
    url_db = unquote(parts.path.strip("/").split("/")[0]) if parts.path.strip("/") else ""
    db = database if database is not None else (url_db or "otel")
    username = unquote(parts.username) if parts.username else (
        env.get("SCOPE_OTEL_CLICKHOUSE_USER") or env.get("CLICKHOUSE_USER") or "default"
    )
    password = unquote(parts.password) if parts.password is not None else (
        env.get("SCOPE_OTEL_CLICKHOUSE_PASSWORD") or env.get("CLICKHOUSE_PASSWORD") or ""
    )
    return Target(
        "http", check_name(db), host=parts.hostname, port=port, secure=secure,
        username=username, password=password,
    )


def _shown(url: str) -> str:
    """A URL as it may appear in an error message: password masked."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(":" + parts.password + "@", ":***@")
    return url
