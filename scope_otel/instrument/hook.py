"""The import hook: rewrite planned modules as they are imported.

:func:`install` puts an :class:`ImportHook` at the front of ``sys.meta_path``
(right behind wrapt's post-import finder, so post-import hooks still fire).  Its
``find_spec`` does a name-only check (``plan.wants_module``) and returns
``None`` at once for everything else, so unplanned imports cost one method
call.  For a planned module it asks the other finders where the module is;
if it is ordinary source (a ``SourceFileLoader``), the spec gets a loader
that reads the source as bytes (so ``# -*- coding`` cookies are honoured),
rewrites it (:mod:`scope_otel.instrument.rewrite`), compiles it under the
original filename (tracebacks, ``inspect.getsource`` and coverage point at
the real file) and caches the bytecode (:mod:`scope_otel.instrument.cache`).

Anything else that is planned (extension modules, zip imports, other
loaders) is left to its own loader and wrapped with wrapt right after it
loads (:mod:`scope_otel.instrument.wrap`).

A module that cannot be rewritten is imported exactly as without scope-otel,
and one warning on the ``scope_otel.instrument`` logger names the module and
the reason.  A module with a syntax error fails as it would anyway.
"""
from __future__ import annotations

import ast
import importlib.machinery
import logging
import sys
import threading
from types import CodeType, ModuleType
from typing import Any

from scope_otel.instrument import cache
from scope_otel.instrument.exclusions import never_instrumented
from scope_otel.instrument.rewrite import MARKER, rewrite_module

_log = logging.getLogger("scope_otel.instrument")

class ImportHook:
    """Finder (and loader factory) that rewrites the modules ``plan`` wants."""

    def __init__(self, plan: Any) -> None:
        self.plan = plan
        self.plan_hash = str(getattr(plan, "hash", ""))
        self.rewritten: list[str] = []   # module names, in import order
        self.failed: dict[str, str] = {}  # module name -> reason
        self._busy = threading.local()
        #: write the cache even under sys.dont_write_bytecode (scope-otel compile)
        self.force_write = False

    # -- finder -------------------------------------------------------------

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if never_instrumented(name) or not self._wants(name):
            return None
        busy = self._busy.__dict__.setdefault("names", set())
        if name in busy:
            return None  # another finder called back into the import system
        busy.add(name)
        try:
            spec = self._find_elsewhere(name, path, target)
        finally:
            busy.discard(name)
        if spec is None:
            return None
        loader = spec.loader
        if type(loader) is importlib.machinery.SourceFileLoader and spec.origin and spec.origin.endswith(".py"):
            spec.loader = _RewritingLoader(name, spec.origin, self)
            return spec
        if loader is not None and hasattr(loader, "exec_module"):
            # not source we can rewrite: its own loader, then wrapt
            spec.loader = _WrapAfterLoad(loader, self.plan)
            return spec
        return None

    def _wants(self, name: str) -> bool:
        try:
            return bool(self.plan.wants_module(name))
        except Exception as exc:  # a broken plan must not break imports
            self._fail(name, f"plan.wants_module raised {exc!r}")
            return False

    def _find_elsewhere(self, name: str, path: Any, target: Any) -> Any:
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec") or _is_post_import_finder(finder):
                continue
            try:
                spec = finder.find_spec(name, path, target)
            except Exception:
                continue  # the import system will ask it again and report
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self) -> None:
        pass

    # -- rewriting ------------------------------------------------------------

    def code_for(self, name: str, filename: str, source: bytes) -> CodeType | None:
        """Rewritten code for module ``name``; None means "import it unmodified"."""
        key = cache.cache_key(source, self.plan_hash, name)
        where = cache.cache_path(filename, self.plan_hash)
        code = cache.read(where, key)
        if code is None:
            try:
                tree = ast.parse(source, filename)
            except (SyntaxError, ValueError):
                return None  # the ordinary import reports it, as it would anyway
            try:
                result = rewrite_module(tree, name, self.plan)
                if result.functions:
                    code = compile(tree, filename, "exec", dont_inherit=True)
                else:  # nothing planned here after all: cache the plain code, skip the parse next time
                    code = compile(source, filename, "exec", dont_inherit=True)
            except Exception as exc:
                self._fail(name, f"{type(exc).__name__}: {exc}")
                return None
            cache.write(where, key, code, force=self.force_write, source_path=filename)
        if MARKER in code.co_names:
            self.rewritten.append(name)
        return code

    def _fail(self, name: str, reason: str) -> None:
        if name not in self.failed:
            self.failed[name] = reason
            _log.warning("scope-otel: %s imported without instrumentation: %s", name, reason)


class _RewritingLoader(importlib.machinery.SourceFileLoader):
    """A SourceFileLoader whose code comes from the hook (source APIs unchanged)."""

    def __init__(self, fullname: str, path: str, hook: ImportHook) -> None:
        super().__init__(fullname, path)
        self._hook = hook

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        try:
            source = self.get_data(path)
        except OSError:
            return super().get_code(fullname)
        try:
            code = self._hook.code_for(fullname, path, source)
        except Exception as exc:  # never the application's problem
            self._hook._fail(fullname, f"{type(exc).__name__}: {exc}")
            code = None
        return code if code is not None else super().get_code(fullname)


class _WrapAfterLoad:
    """Delegates to a module's own loader, then wraps the module's planned callables."""

    def __init__(self, loader: Any, plan: Any) -> None:
        self._loader, self._plan = loader, plan

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # the module should see its real loader (pkgutil, inspect, reload)
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        from scope_otel.instrument import wrap

        wrap.wrap_module(module, self._plan)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


_installed: ImportHook | None = None
_lock = threading.Lock()


def install(plan: Any) -> ImportHook:
    """Put the import hook for ``plan`` first on ``sys.meta_path`` (replacing an earlier one)."""
    global _installed
    import scope_otel.capture.runtime  # noqa: F401 - fail here, not in the application's import
    import scope_otel.instrument._support  # noqa: F401
    from scope_otel.instrument.rewrite import install_builtins

    install_builtins()  # what rewritten modules' preludes read (cached code included)

    from scope_otel.instrument import wrap

    wrap.ensure_post_import_finder()
    with _lock:
        if _installed is not None and _installed in sys.meta_path:
            sys.meta_path.remove(_installed)
        _installed = ImportHook(plan)
        # Right behind wrapt's post-import finder: for a module with post-import
        # hooks (ours or another tool's) wrapt asks the import system again,
        # reaches us, and wraps our loader, so the hooks run after the rewrite.
        index = next((i + 1 for i, f in enumerate(sys.meta_path) if _is_post_import_finder(f)), 0)
        sys.meta_path.insert(index, _installed)
        return _installed


def _is_post_import_finder(finder: Any) -> bool:
    import wrapt.importer

    return isinstance(finder, wrapt.importer.ImportHookFinder)


def uninstall() -> None:
    """Remove the import hook; modules already rewritten stay as they are."""
    global _installed
    with _lock:
        if _installed is not None and _installed in sys.meta_path:
            sys.meta_path.remove(_installed)
        _installed = None


def installed() -> ImportHook | None:
    """The hook in force, if any."""
    return _installed


def is_rewritten(module: ModuleType) -> bool:
    """True when ``module`` was loaded through the rewrite."""
    return bool(getattr(module, "__dict__", {}).get(MARKER))
