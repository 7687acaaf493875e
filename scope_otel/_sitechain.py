"""Run the ``sitecustomize`` that one of scope-otel's start-up folders shadows.

scope-otel starts inside a program by putting a folder with a
``sitecustomize.py`` on ``PYTHONPATH`` (the launcher's bootstrap, the
planner's call counter).  Python imports only the
first ``sitecustomize`` on the path, so each of ours imports the next one
after its own folder: the program's own, or the environment's, still runs.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def import_next_sitecustomize(here: str) -> None:
    """Import the ``sitecustomize`` found on ``sys.path`` after the folder ``here`` (if any).

    Errors in it are written to stderr, as Python itself does for a failing
    ``sitecustomize``, never raised.
    """
    here = os.path.abspath(here)
    entries = [os.path.abspath(p or os.curdir) for p in sys.path]
    after = sys.path[entries.index(here) + 1:] if here in entries else [
        p for p, e in zip(sys.path, entries) if e != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", after)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    ours = sys.modules.get("sitecustomize")
    sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - Python itself only warns for sitecustomize errors
        sys.stderr.write(f"Error in sitecustomize ({spec.origin}): {type(exc).__name__}: {exc}\n")
    finally:
        sys.modules["sitecustomize"] = ours
