"""Create or migrate scope-otel's ClickHouse schema ahead of time.

::

    scope-otel schema --store http://clickhouse:8123 --database otel \\
        [--cluster NAME --replicated] [--ttl-days 30]

Exporters create the schema on first use, but with defaults (single node,
MergeTree, no TTL).  Run this once against a server (or a cluster) to choose
retention and replication, and before an OpenTelemetry Collector writes into
the same tables with ``create_schema: false``.  Prints the files applied.
"""
from __future__ import annotations

import argparse
import sys

from scope_otel.store.engine import Backend
from scope_otel.store.migrations import SchemaOptions
from scope_otel.store.target import TargetError, parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scope-otel schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=None, help="path or http(s)://host:port (default: config 'store')")
    parser.add_argument("--database", default=None, help="database (default: config 'database')")
    parser.add_argument("--cluster", default=None, help="create tables ON CLUSTER this cluster")
    parser.add_argument("--replicated", action="store_true", help="ReplicatedMergeTree instead of MergeTree")
    parser.add_argument("--ttl-days", type=int, default=0, help="drop data older than this many days (0: keep)")
    args = parser.parse_args(argv)
    if args.store is None or args.database is None:
        from scope_otel.config import current

        args.store = args.store or current().store
        args.database = args.database or current().database
    try:
        target = parse(args.store, args.database)
        options = SchemaOptions(ttl_days=args.ttl_days, cluster=args.cluster, replicated=args.replicated)
    except (TargetError, ValueError) as exc:
        print(f"scope-otel: {exc}", file=sys.stderr)
        return 2
    backend = Backend(target, schema=options)
    try:
        applied = backend.run(lambda client: backend.last_applied, wait_s=15.0)
    except Exception as exc:
        print(f"scope-otel: cannot apply the schema: {target.scrub(str(exc))[:500]}",
              file=sys.stderr)
        return 1
    finally:
        backend.close()
    print(f"{target.display}: schema current" + (f" (applied {', '.join(applied)})" if applied else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
