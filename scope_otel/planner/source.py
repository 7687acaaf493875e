"""Find the Python modules under the paths given to ``scope-otel plan`` and parse them.

A path may be a file, a package directory or a directory holding packages
(``src/``).  A file's module name comes from climbing directories that hold
an ``__init__.py``, as ``import`` would see it when the top directory is on
``sys.path``.  Hidden directories, ``__pycache__``, virtual environments and
``site-packages`` below the given paths are not entered (a given path is
always taken, so planning an installed library works).

Nothing is imported.  A file that cannot be read, is not valid text in its
declared encoding, does not parse, or is too large to be hand-written
(generated tables, vendored bundles) is reported as a :class:`Skipped` and
the rest goes on.
"""
from __future__ import annotations

import ast
import io
import os
import tokenize
import warnings
from dataclasses import dataclass

from scope_otel.instrument.own import module_name  # the one rule: plans name modules as the import hook sees them

#: Files larger than this are treated as generated and skipped.
MAX_FILE_BYTES = 2_000_000
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "dist-packages",
                        ".venv", "venv", ".tox", ".nox", ".git"})


@dataclass(frozen=True)
class SourceFile:
    path: str
    module: str


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Parsed:
    path: str
    module: str
    tree: ast.Module


def discover(paths: list[str]) -> tuple[list[SourceFile], list[Skipped]]:
    """Every ``.py`` file under ``paths`` with its module name, sorted, deduplicated."""
    found: dict[str, SourceFile] = {}
    skipped: list[Skipped] = []
    for root in paths:
        if os.path.isfile(root):
            if root.endswith(".py"):
                real = os.path.realpath(root)
                found.setdefault(real, SourceFile(root, module_name(root)))
            else:
                skipped.append(Skipped(root, "not a .py file"))
            continue
        if not os.path.isdir(root):
            skipped.append(Skipped(root, "no such file or directory"))
            continue
        if not os.access(root, os.R_OK | os.X_OK):
            skipped.append(Skipped(root, "directory not readable"))
            continue

        def onerror(exc: OSError) -> None:
            skipped.append(Skipped(exc.filename or root, f"unreadable: {exc.strerror or exc}"))

        for directory, dirnames, filenames in os.walk(root, onerror=onerror):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    found.setdefault(os.path.realpath(path), SourceFile(path, module_name(path)))
    files = sorted(found.values(), key=lambda f: f.module)
    return files, skipped


def parse(source: SourceFile) -> Parsed | Skipped:
    """Read, decode and parse one file, or say why it was skipped."""
    try:
        size = os.path.getsize(source.path)
        if size > MAX_FILE_BYTES:
            return Skipped(source.path, f"too large ({size} bytes > {MAX_FILE_BYTES}; generated?)")
        with open(source.path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        return Skipped(source.path, f"unreadable: {exc.strerror or exc}")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        text = raw.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        return Skipped(source.path, f"cannot decode: {exc}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences etc. are not our business
            tree = ast.parse(text, filename=source.path)
    except SyntaxError as exc:
        return Skipped(source.path, f"syntax error at line {exc.lineno}: {exc.msg}")
    except (ValueError, RecursionError, MemoryError) as exc:
        return Skipped(source.path, f"cannot parse: {type(exc).__name__}: {exc}")
    return Parsed(source.path, source.module, tree)
