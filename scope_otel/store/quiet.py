"""Keep clickhouse-connect's own error logging out of the application's logs.

clickhouse-connect (and urllib3 under it) log errors and retries that
scope-otel handles itself: a string it cannot encode (we escape and retry),
a server that is down (we spool).  Inside :func:`quiet_clickhouse_connect`
those records are dropped, on that thread only, so an application that
uses clickhouse-connect itself keeps all of its logs.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Iterator

_LOGGERS = (
    "clickhouse_connect.driver.transform",
    "clickhouse_connect.driver._backend.http_sync",
    "clickhouse_connect.driver._backend.chdb_backend",
    "clickhouse_connect.driver.client",
    "urllib3.connectionpool",
)
_state = threading.local()
_installed = False


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_state, "depth", 0)


@contextlib.contextmanager
def quiet_clickhouse_connect() -> Iterator[None]:
    """Drop those libraries' log records emitted by this thread inside the block."""
    global _installed
    if not _installed:
        _installed = True
        for name in _LOGGERS:
            logging.getLogger(name).addFilter(_QuietFilter())
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
