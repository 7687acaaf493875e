"""Create and migrate scope-otel's ClickHouse schema.

The DDL lives in ``schemas/ch_*.sql`` (shipped as ``scope_otel.schemas``):

* ``ch_NNN_*.sql`` are versioned migrations, applied once each, in order;
* ``ch_R_*.sql`` are repeatable (views): re-applied whenever their text changes.

What was applied is recorded in ``<db>.scope_schema_versions`` (version,
name, checksum, time).  Files use ``${name}`` placeholders filled from
:class:`SchemaOptions` (engine, ON CLUSTER, TTL, part format) and the validated database
name; statements are separated by ``;`` at the end of a line.

Applying is idempotent (``IF NOT EXISTS`` / ``OR REPLACE``), so two processes
racing to create the schema of a fresh server both succeed.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from string import Template
from typing import Any

from scope_otel.store.target import check_cluster, check_name

SCHEMA_VERSION_TABLE = "scope_schema_versions"
_VERSIONED = re.compile(r"ch_(\d{3})_[a-z0-9_]+\.sql")
_REPEATABLE = re.compile(r"ch_R_[a-z0-9_]+\.sql")
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
SERVER_WIDE_PART_BYTES = 10 << 20  # ClickHouse's own default for min_bytes_for_wide_part
EMBEDDED_WIDE_PART_BYTES = 256 << 20  # see schemas/ch_004_part_format.sql


class SchemaError(RuntimeError):
    """A schema file could not be applied; the message names the file and ClickHouse's reason."""


@dataclass(frozen=True)
class SchemaOptions:
    """How tables are created: retention, part format and, on servers, replication."""

    ttl_days: int = 0
    cluster: str | None = None
    replicated: bool = False
    wide_part_bytes: int = SERVER_WIDE_PART_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.ttl_days, int) or self.ttl_days < 0:
            raise ValueError(f"ttl_days must be a non-negative integer, not {self.ttl_days!r}")
        check_cluster(self.cluster)
        if not isinstance(self.wide_part_bytes, int) or self.wide_part_bytes < 0:
            raise ValueError(f"wide_part_bytes must be a non-negative integer, not {self.wide_part_bytes!r}")


def schema_dir() -> str:
    """Folder holding the ``ch_*.sql`` files (source tree or installed package)."""
    try:
        from scope_otel import schemas  # installed: mapped into the package

        return os.path.dirname(os.path.abspath(schemas.__file__))
    except ImportError:
        here = os.path.dirname(os.path.abspath(__file__))
        return os.path.join(os.path.dirname(os.path.dirname(here)), "schemas")


def migration_files(folder: str | None = None) -> list[tuple[str, str]]:
    """``(version, filename)`` pairs: versioned ones ascending, then repeatables (version ``R``)."""
    folder = folder or schema_dir()
    names = sorted(os.listdir(folder))
    versioned = [(m.group(1), n) for n in names if (m := _VERSIONED.fullmatch(n))]
    repeatable = [("R", n) for n in names if _REPEATABLE.fullmatch(n)]
    return versioned + repeatable


def render(text: str, database: str, options: SchemaOptions = SchemaOptions()) -> list[str]:
    """The statements of one schema file, placeholders filled."""
    db = check_name(database)
    cluster = check_cluster(options.cluster)
    engine = "ReplicatedMergeTree()" if options.replicated else "MergeTree()"
    aggregating = "ReplicatedAggregatingMergeTree()" if options.replicated else "AggregatingMergeTree()"

    def ttl(column: str) -> str:
        return f"TTL toDateTime({column}) + toIntervalDay({options.ttl_days})" if options.ttl_days else ""

    values = {
        "db": f"`{db}`",
        "on_cluster": f"ON CLUSTER `{cluster}`" if cluster else "",
        "engine": engine,
        "aggregating_engine": aggregating,
        "ttl_traces": ttl("Timestamp"),
        "ttl_lookup": ttl("Start"),
        "ttl_events": ttl("Timestamp"),
        "ttl_edges": ttl("Minute"),
        "ttl_edges_hourly": ttl("Hour"),
        "ttl_edges_rollup": ttl("At"),
        "wide_part_bytes": str(options.wide_part_bytes),
    }
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    filled = Template(body).substitute(values)
    return [s.strip() for s in _STATEMENT_END.split(filled) if s.strip()]


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_schema(client: Any, database: str, options: SchemaOptions = SchemaOptions()) -> list[str]:
    """Bring ``database`` up to date on ``client``; return the files applied now."""
    db = check_name(database)
    on_cluster = f" ON CLUSTER `{options.cluster}`" if options.cluster else ""
    engine = "ReplicatedMergeTree()" if options.replicated else "MergeTree()"
    client.command(f"CREATE DATABASE IF NOT EXISTS `{db}`{on_cluster}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS `{db}`.{SCHEMA_VERSION_TABLE}{on_cluster} "
        "(Version String, Name String, Checksum String, AppliedAt DateTime64(3) DEFAULT now64(3)) "
        f"ENGINE = {engine} ORDER BY (Version, AppliedAt)"
    )
    done = {
        (row[0], row[1]): row[2]
        for row in client.query(
            f"SELECT Version, Name, argMax(Checksum, AppliedAt) FROM `{db}`.{SCHEMA_VERSION_TABLE} "
            "GROUP BY Version, Name"
        ).result_rows
    }
    folder = schema_dir()
    applied = []
    for version, name in migration_files(folder):
        with open(os.path.join(folder, name), encoding="utf-8") as fh:
            text = fh.read()
        digest = checksum(text)
        previous = done.get((version, name))
        if previous is not None and (version != "R" or previous == digest):
            continue
        for statement in render(text, db, options):
            try:
                client.command(statement)
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]
                raise SchemaError(f"applying {name} to database {db} failed: {reason}") from exc
        client.insert(
            f"{SCHEMA_VERSION_TABLE}", [[version, name, digest]],
            column_names=["Version", "Name", "Checksum"], database=db,
        )
        applied.append(name)
    return applied
