"""The tagged bytecode cache of rewritten modules.

Rewritten code lives beside the ordinary ``.pyc`` under its own tag::

    __pycache__/orders.cpython-311.scope-otel.pyc

so that running the same code with and without scope-otel never makes
either side recompile.  The file is ``MAGIC (4) + b"SOTL" + key (32) +
marshal(code)``; the key is a sha256 over the source bytes, the plan hash,
the module name, the scope-otel version, the rewrite version and the
optimisation level, so a stale entry is never used, whatever changed.
``sys.pycache_prefix`` is honoured (through ``cache_from_source``), nothing
is written when ``sys.dont_write_bytecode`` is set, writes are atomic
(temporary file, then ``os.replace``) and a read-only location just means
no cache.
"""
from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import sys
import threading
from types import CodeType

from scope_otel.instrument.rewrite import REWRITE_VERSION
from scope_otel.version import __version__

_TAG = b"SOTL"
_HEADER = len(importlib.util.MAGIC_NUMBER) + len(_TAG) + 32


def cache_path(source_path: str) -> str | None:
    """Where the rewritten bytecode of ``source_path`` is cached, or None."""
    try:
        plain = importlib.util.cache_from_source(source_path)
    except (NotImplementedError, ValueError):  # no cache_tag, odd path
        return None
    return plain[: -len(".pyc")] + ".scope-otel.pyc"


def cache_key(source: bytes, plan_hash: str, module: str) -> bytes:
    """What a cached entry must match to be used."""
    h = hashlib.sha256(source)
    for part in (plan_hash, module, __version__, str(REWRITE_VERSION), str(sys.flags.optimize)):
        h.update(b"\0" + part.encode("utf-8", "surrogateescape"))
    return h.digest()


def read(path: str | None, key: bytes) -> CodeType | None:
    """The cached code at ``path`` if it carries ``key``; None otherwise."""
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if data[:_HEADER] != importlib.util.MAGIC_NUMBER + _TAG + key:
        return None
    try:
        code = marshal.loads(data[_HEADER:])
    except (EOFError, ValueError, TypeError):
        return None  # truncated or corrupt: rebuild
    return code if isinstance(code, CodeType) else None


def write(path: str | None, key: bytes, code: CodeType, *, force: bool = False) -> bool:
    """Store ``code`` atomically; False (and no error) when that is not possible.

    ``force`` ignores ``sys.dont_write_bytecode`` (``scope-otel compile``,
    like ``compileall``, is asked to write).
    """
    if path is None or (sys.dont_write_bytecode and not force):
        return False
    data = importlib.util.MAGIC_NUMBER + _TAG + key + marshal.dumps(code)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"  # unique per writer
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return True
    except OSError:  # read-only tree, full disk, races: run without a cache
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
