"""``scope-otel collect``: receive OTLP traces and write them into ClickHouse.

::

    scope-otel collect                       # gRPC 127.0.0.1:4317, HTTP :4318, store .scope-otel
    scope-otel collect --store http://default:@ch:8123 --host 0.0.0.0
    SCOPE_OTEL_COLLECT_TOKEN=s3cret scope-otel collect   # require Authorization: Bearer s3cret

Point applications at it with ``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317``
(or ``:4318`` with ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``).  It runs
until SIGINT/SIGTERM, then writes what it accepted and prints its counters.
The embedded store (chDB) belongs to one process at a time: stop the
collector before ``scope-otel query``/``trace`` on the same path.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading

TOKEN_ENV = "SCOPE_OTEL_COLLECT_TOKEN"


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = units.get(text[-1:], 1)
    try:
        value = int(float(text[:-1] if text[-1:] in units else text) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 4MiB, 512k, 1000000)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a size must be positive")
    return value


def _port(text: str) -> int | None:
    if text.strip().lower() in ("off", "none", "-"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (or 'off')") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range 0-65535")
    return value


def _without_password(url: str) -> str:
    """The store URL fit for a log line (a server URL may carry a password)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", url, flags=re.I)


def _parser() -> argparse.ArgumentParser:
    from scope_otel import config

    current = config.current()
    p = argparse.ArgumentParser(
        prog="scope-otel collect",
        description="OTLP trace receiver (gRPC and HTTP) that writes into the scope-otel ClickHouse store.",
    )
    p.add_argument("--store", default=current.store,
                   help="a path or chdb:///path (embedded chDB) or http(s)://user:pass@host:port (default: %(default)s)")
    p.add_argument("--database", default=current.database, help="ClickHouse database (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--grpc-port", type=_port, default=4317, help="OTLP/gRPC port, 0 for any, 'off' (default: 4317)")
    p.add_argument("--http-port", type=_port, default=4318, help="OTLP/HTTP port, 0 for any, 'off' (default: 4318)")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None,
                   help=f"require 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV}; prefer the variable)")
    p.add_argument("--max-request-size", type=_size, default=4 << 20, help="largest HTTP body (default 4MiB)")
    p.add_argument("--max-decompressed-size", type=_size, default=16 << 20,
                   help="largest request after decompression, gRPC message limit (default 16MiB)")
    p.add_argument("--max-queue-size", type=_size, default=64 << 20,
                   help="accepted but unwritten requests before clients are told to retry (default 64MiB)")
    p.add_argument("--max-connections", type=int, default=64,
                   help="HTTP connections served at once; more wait in the listen backlog (default 64)")
    p.add_argument("--retry-after", type=int, default=1, help="seconds clients are told to wait (default 1)")
    p.add_argument("--ready-file", help="write the listening endpoints as JSON to this file once serving")
    return p


def main(argv: list[str]) -> int:
    """Run the collector until interrupted; exit code 0, or 2 for unusable arguments."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from scope_otel.collect.collector import Collector

    try:
        from scope_otel.export import ClickHouseSpanExporter
    except ImportError as exc:
        print(f"scope-otel collect: the ClickHouse exporter is not available ({exc})", file=sys.stderr)
        return 2
    try:
        sink = ClickHouseSpanExporter(args.store, database=args.database)
    except Exception as exc:  # the exporter names what is wrong with the store
        print(f"scope-otel collect: cannot open store {args.store!r}: {exc}", file=sys.stderr)
        return 2
    try:
        collector = Collector(
            sink, host=args.host, grpc_port=args.grpc_port, http_port=args.http_port, token=args.token,
            max_request_bytes=args.max_request_size, max_decompressed_bytes=args.max_decompressed_size,
            max_queue_bytes=args.max_queue_size, max_http_connections=args.max_connections,
            retry_after_s=args.retry_after,
        ).start()
    except (OSError, ValueError) as exc:
        sink.shutdown()
        print(f"scope-otel collect: {exc}", file=sys.stderr)
        return 2
    return _serve(collector, sink, args)


def _serve(collector, sink, args) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    endpoints = {"grpc": collector.grpc_endpoint, "http": collector.http_endpoint,
                 "store": _without_password(args.store), "auth": bool(args.token)}
    print("scope-otel collect: listening " + json.dumps(endpoints), flush=True)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(endpoints, fh)
        os.replace(tmp, args.ready_file)
    while not stop.wait(0.5):
        pass
    complete = collector.stop()
    try:
        sink.shutdown()
    finally:
        stats = collector.stats()
        print("scope-otel collect: stopped " + json.dumps(stats), flush=True)
    return 0 if complete else 1
