"""The tagged bytecode cache of rewritten modules.

Rewritten code lives beside the ordinary ``.pyc`` under its own tag, one
file per plan::

    __pycache__/orders.cpython-311.scope-otel-1f0c9a2b7d3e.pyc

so that running the same code with and without scope-otel, or under
different plans one after the other, never makes any of them recompile (one
file for every plan made them take turns: the plan benchmark, running two
plans alternately, recompiled the shop's modules on every run, ~15 ms, about
1 % of the run, charged to each plan).  A module keeps the entries of its
:data:`KEEP` most recently written plans.  The file is ``MAGIC (4) + b"SOTL" + key (32) +
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


#: Entries kept per module: the plans most recently written.
KEEP = 8


def _stem(source_path: str) -> str | None:
    try:
        plain = importlib.util.cache_from_source(source_path)
    except (NotImplementedError, ValueError):  # no cache_tag, odd path
        return None
    return plain[: -len(".pyc")] + ".scope-otel-"


def cache_path(source_path: str, plan_hash: str = "") -> str | None:
    """Where the rewritten bytecode of ``source_path`` under the plan ``plan_hash`` is cached, or None."""
    stem = _stem(source_path)
    if stem is None:
        return None
    return stem + hashlib.sha256(plan_hash.encode("utf-8", "surrogateescape")).hexdigest()[:12] + ".pyc"


def entries(source_path: str) -> list[str]:
    """The cached entries of ``source_path``, one per plan, most recently written first."""
    stem = _stem(source_path)
    if stem is None:
        return []
    folder, prefix = os.path.split(stem)
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".pyc")]
    except OSError:
        return []
    paths = [os.path.join(folder, n) for n in names]

    def written(path: str) -> int:
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return 0
    return sorted(paths, key=written, reverse=True)


def _prune(source_path: str) -> None:
    """Drop all but the :data:`KEEP` newest entries of ``source_path`` (best effort)."""
    for old in entries(source_path)[KEEP:]:
        try:
            os.unlink(old)
        except OSError:
            pass


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


def write(path: str | None, key: bytes, code: CodeType, *, force: bool = False,
          source_path: str | None = None) -> bool:
    """Store ``code`` atomically; False (and no error) when that is not possible.

    ``force`` ignores ``sys.dont_write_bytecode`` (``scope-otel compile``,
    like ``compileall``, is asked to write).  With ``source_path``, the
    module's entries beyond :data:`KEEP` are dropped.
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
        if source_path is not None:
            _prune(source_path)
        return True
    except OSError:  # read-only tree, full disk, races: run without a cache
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
