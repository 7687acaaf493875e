"""The program's own code: which modules and scripts are the program's, not the interpreter's installation.

What ``scope-otel run`` and ``scope-otel compile`` record when no plan says what to (the
zero-configuration default), and how a script is named the way ``scope-otel plan`` names its file.
"""
from __future__ import annotations

import os
import sys

__all__ = ["module_name", "is_the_programs", "own_code_globs"]

#: folders of a project that are not the program
NOT_THE_PROGRAM = frozenset({"tests", "test", "docs", "doc", "build", "dist", "venv", ".venv", "env",
                             "node_modules", "migrations", "scope_otel", "examples", "bench", "benchmarks"})


def module_name(path: str) -> str:
    """The module name of the file at ``path`` as ``scope-otel plan`` and ``import`` name it: its stem,
    after the dotted names of the packages (folders with ``__init__.py``) it sits in."""
    path = os.path.abspath(path)
    directory, base = os.path.split(path)
    stem = base.rsplit(".", 1)[0] if base.endswith((".py", ".pyc")) else base
    parts = [] if stem == "__init__" else [stem]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        if not package:  # the filesystem's root
            break
        parts.insert(0, package)
    return ".".join(parts) or stem


def _system() -> list[str]:
    return [os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix} if p]


def is_the_programs(path: str) -> bool:
    """False for files of the interpreter's installation (the standard library, site-packages, console
    scripts such as ``gunicorn``'s): they are not the program's own code."""
    real = os.path.realpath(path)
    return "site-packages" not in real and not any(real == p or real.startswith(p + os.sep) for p in _system())


def own_code_globs(command: list[str], cwd: str) -> list[str]:
    """Module globs of the program's own code for ``command`` (``python app.py``, ``python -m pkg``,
    ``gunicorn app:wsgi``; empty for just the working directory): the main script itself, its
    folder's modules and packages, the ``-m`` module's top package, and the working directory's
    packages and modules; never anything under the interpreter's prefixes.  Sorted, so that
    ``run`` and ``compile`` of the same code agree (the rewrite cache is keyed by the plan)."""
    folders = [cwd]
    names: list[str] = []
    # `python app.py ...`, or `./app.py ...` run through its #! line
    start = 0 if command and command[0].endswith(".py") else 1
    for i, arg in enumerate(command[start:], start):
        if arg == "-m" and i + 1 < len(command):
            top = command[i + 1].split(".")[0]
            if os.path.isdir(os.path.join(cwd, top)) or os.path.isfile(os.path.join(cwd, top + ".py")):
                names.append(top)  # the project's, not an installed one
            break
        path = os.path.join(cwd, arg)
        if arg.endswith(".py") and os.path.isfile(path):
            folders.insert(0, os.path.dirname(os.path.abspath(path)))
            if is_the_programs(path):
                names.append(module_name(path))  # the script itself, whatever its name
            break
    for folder in dict.fromkeys(os.path.realpath(f) for f in folders):
        if not is_the_programs(folder):
            continue
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(folder, entry)
            stem = entry[:-3] if entry.endswith(".py") else entry
            if not stem.isidentifier() or stem in NOT_THE_PROGRAM or stem.startswith(("test_", "_")):
                continue
            if entry.endswith(".py") and os.path.isfile(path) and stem not in ("setup", "conftest", "noxfile"):
                names.append(stem)
            elif os.path.isfile(os.path.join(path, "__init__.py")):
                names.append(stem)
    globs: list[str] = []
    for name in sorted(set(names)):
        globs += [name, f"{name}.*"]
    return globs
