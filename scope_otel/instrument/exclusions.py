"""The modules scope-otel never instruments, listed once.

Neither the import hook (rewriting) nor the wrapper (already-imported
modules) nor ``scope-otel compile`` touches them: scope-otel itself and what
its capture and export path runs on (instrumenting them would record the
recorder, or recurse), the import machinery and start-up hooks, and the
standard library.
"""
from __future__ import annotations

import sys

__all__ = ["NEVER_INSTRUMENTED", "never_instrumented"]

#: Top-level package names; a module is excluded when its first dotted part is here.
NEVER_INSTRUMENTED = frozenset({
    "scope_otel", "opentelemetry", "wrapt", "google", "grpc", "importlib", "encodings",
    "sitecustomize", "usercustomize", "site",
}) | sys.stdlib_module_names


def never_instrumented(name: str) -> bool:
    """True for modules scope-otel must neither rewrite nor wrap."""
    return name.partition(".")[0] in NEVER_INSTRUMENTED
