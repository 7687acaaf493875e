"""The base of every integration: a declared hook table, applied when each
hooked library is imported and undone, all of it, on ``uninstrument()``.

An integration module is its manual (the docstring) and a subclass of
:class:`ScopeInstrumentor` that declares:

* ``_requires``: pip requirement strings (a missing or too old library is
  reported once, in plain words, and the integration stays off);
* ``_what``: the short human name used in messages;
* ``_hooks``: a tuple of :class:`Patch`, :class:`Receiver`,
  :class:`Listener` and :class:`Call` entries, each naming the module it
  needs: one that, once imported, holds everything the hook touches (a
  submodule can finish importing while its package is still half
  imported, so ``django.db.models`` rather than ``django.db.models.
  signals``: connecting to a model signal imports the rest of the models
  package).  A hook is applied once the program imports that module (at once
  if it is imported already; the library is never imported for the program,
  see ``_deferred``) and undone on ``uninstrument()``;
* ``_configure(**kwargs)``: the integration's state (tracer, options), built
  at ``instrument()`` and kept in the module's ``_state`` global, which the
  hooks read; ``None`` again after ``uninstrument()``.

Hooks attach to *classes* (``Flask.__call__``, ``BaseHandler``, the
``Engine`` class), so objects created before instrumenting are covered and
import order does not matter.
"""
from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Collection

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from scope_otel.instrumentors._deferred import when_imported
from scope_otel.instrumentors._report import failed, say_once

# --------------------------------------------------------------------------
# patching attributes of classes (and modules)
# --------------------------------------------------------------------------

_ORIGINALS: dict[tuple[int, str], tuple[Any, str, Any]] = {}
_MARK = "__scope_otel_original__"
_MISSING = object()


def patch(owner: Any, name: str, make: Callable[[Callable], Callable]) -> None:
    """Replace ``owner.name`` by ``make(original)``; idempotent.

    The replacement carries the original as ``__scope_otel_original__``
    (a second ``patch`` sees it and does nothing); :func:`unpatch` restores
    what the owner itself had, or removes the attribute if it was inherited.
    """
    current = owner.__dict__.get(name)
    if current is None:
        current = getattr(owner, name)
    if getattr(current, _MARK, None) is not None:
        return
    replacement = make(current)
    try:
        setattr(replacement, _MARK, current)
    except AttributeError:  # pragma: no cover - a builtin replacement
        pass
    _ORIGINALS[(id(owner), name)] = (owner, name, owner.__dict__.get(name, _MISSING))
    setattr(owner, name, replacement)


def unpatch(owner: Any, name: str) -> None:
    """Undo :func:`patch` for ``owner.name`` (no-op when not patched)."""
    entry = _ORIGINALS.pop((id(owner), name), None)
    if entry is None:
        return
    _, _, saved = entry
    if saved is _MISSING:
        try:
            delattr(owner, name)
        except AttributeError:  # pragma: no cover
            pass
    else:
        setattr(owner, name, saved)


def _resolve(module: ModuleType, path: str) -> Any:
    target: Any = module
    for part in filter(None, path.split(".")):
        target = getattr(target, part)
    return target


# --------------------------------------------------------------------------
# the hook kinds
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Patch:
    """``module.owner.name`` replaced by ``make(original)`` (``owner`` "" for the module itself).

    ``when(state)``: apply only if true; ``optional``: skip quietly when the
    attribute does not exist in this version of the library.
    """

    module: str
    owner: str
    name: str
    make: Callable[[Callable], Callable]
    when: Callable[[Any], bool] | None = None
    optional: bool = False

    def apply(self, module: ModuleType) -> Callable[[], None] | None:
        owner = _resolve(module, self.owner)
        if self.optional and not hasattr(owner, self.name):
            return None
        patch(owner, self.name, self.make)
        return lambda: unpatch(owner, self.name)


@dataclass(frozen=True)
class Receiver:
    """``receiver`` connected (strongly) to the signal ``module.signal`` (blinker's or Django's)."""

    module: str
    signal: str
    receiver: Callable
    when: Callable[[Any], bool] | None = None

    def apply(self, module: ModuleType) -> Callable[[], None]:
        signal = _resolve(module, self.signal)
        if hasattr(signal, "sender_receivers_cache"):  # Django: receivers are told apart by dispatch_uid
            uid = f"{self.receiver.__module__}.{self.receiver.__qualname__}"
            signal.connect(self.receiver, weak=False, dispatch_uid=uid)
            return lambda: signal.disconnect(self.receiver, dispatch_uid=uid)
        signal.connect(self.receiver, weak=False)
        return lambda: signal.disconnect(self.receiver)


@dataclass(frozen=True)
class Listener:
    """SQLAlchemy's ``event.listen(module.owner, name, fn, **kw)``."""

    module: str
    owner: str
    name: str
    fn: Callable
    retval: bool = False
    when: Callable[[Any], bool] | None = None

    def apply(self, module: ModuleType) -> Callable[[], None]:
        from sqlalchemy import event

        owner = _resolve(module, self.owner)
        if not event.contains(owner, self.name, self.fn):
            kw = {"retval": True} if self.retval else {}
            event.listen(owner, self.name, self.fn, **kw)

        def undo() -> None:
            if event.contains(owner, self.name, self.fn):
                event.remove(owner, self.name, self.fn)

        return undo


@dataclass(frozen=True)
class Call:
    """``attach(module)`` once the module is imported, ``detach(module)`` on uninstrument."""

    module: str
    attach: Callable[[ModuleType], None]
    detach: Callable[[ModuleType], None]
    when: Callable[[Any], bool] | None = None

    def apply(self, module: ModuleType) -> Callable[[], None]:
        self.attach(module)
        return lambda: self.detach(module)


Hook = Patch | Receiver | Listener | Call


# --------------------------------------------------------------------------
# the instrumentor
# --------------------------------------------------------------------------

class ScopeInstrumentor(BaseInstrumentor):
    """``BaseInstrumentor`` that applies a declared hook table lazily, undoes
    it whole, and says once why it stays off."""

    _requires: tuple[str, ...] = ()
    _what = "integration"
    _hooks: tuple[Hook, ...] = ()

    def _configure(self, **kwargs: Any) -> Any:
        """The integration's state for this ``instrument()`` (module global ``_state``)."""
        return None

    def _instrument(self, **kwargs: Any) -> None:
        state = self._configure(**kwargs)
        self._set_state(state)
        self._undo: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        by_module: dict[str, list[Hook]] = {}
        for hook in self._hooks:
            if hook.when is None or hook.when(state):
                by_module.setdefault(hook.module, []).append(hook)
        self._pending = [
            when_imported(name, lambda module, hooks=hooks: self._apply(module, hooks), f"{self._what}.attach")
            for name, hooks in by_module.items()
        ]

    def _apply(self, module: ModuleType, hooks: list[Hook]) -> None:
        for hook in hooks:
            try:
                undo = hook.apply(module)
            except Exception:
                failed(f"{self._what}.attach {module.__name__}")
                continue
            if undo is not None:
                with self._lock:
                    self._undo.append(undo)

    def _uninstrument(self, **kwargs: Any) -> None:
        for pending in getattr(self, "_pending", ()):
            pending.cancel()
        with self._lock:
            undo, self._undo = self._undo, []
        for step in reversed(undo):
            try:
                step()
            except Exception:
                failed(f"{self._what}.detach")
        self._set_state(None)

    def _set_state(self, state: Any) -> None:
        module = sys.modules.get(type(self).__module__)
        if module is not None and "_state" in module.__dict__:
            module._state = state

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._requires

    def instrument(self, **kwargs: Any) -> Any:
        """As ``BaseInstrumentor.instrument``, but a missing or too old
        library is reported once by :meth:`_check_dependency_conflicts`
        instead of as an error on every call.

        ``skip_dep_check`` is ignored: ``opentelemetry-instrument`` passes it
        after checking only the distribution's own requirements, which say
        nothing about Flask or SQLAlchemy versions.  ``force=True`` skips the
        check for real.
        """
        kwargs.pop("skip_dep_check", None)
        if not kwargs.pop("force", False) and not self.is_instrumented_by_opentelemetry:
            conflict = self._check_dependency_conflicts()
            if conflict is not None:
                if kwargs.get("raise_exception_on_conflict"):
                    from opentelemetry.instrumentation.dependencies import DependencyConflictError

                    raise DependencyConflictError(conflict)
                return None
        kwargs.pop("raise_exception_on_conflict", None)
        return super().instrument(skip_dep_check=True, **kwargs)

    def _check_dependency_conflicts(self):  # noqa: D401 - BaseInstrumentor hook
        conflict = get_dependency_conflicts(self._requires)
        if conflict is not None:
            found = getattr(conflict, "found", None)
            if found:
                say_once(
                    f"off:{self._what}",
                    f"scope-otel {self._what} integration is off: needs {conflict.required}, found {found}",
                    logging.WARNING,
                )
            else:
                say_once(
                    f"off:{self._what}",
                    f"scope-otel {self._what} integration is off: {conflict.required} is not installed",
                )
        return conflict
