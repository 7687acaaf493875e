"""What every integration shares that is not HTTP: patching, failure
accounting, the "library missing or too old" message, and redacted values.

* :func:`patch` / :func:`unpatch_all` replace attributes on *classes* (so
  objects created before instrumenting are covered) and put the originals
  back on uninstrument.
* :func:`failed` is the one way an integration reports an internal error on
  the hot path: counted, logged once per place, never raised into the
  application.  :func:`stats` exposes the counts.
* :class:`ScopeInstrumentor` is the ``BaseInstrumentor`` base of every
  integration: it says once, in plain words, why an integration stays off.
* :func:`add_event` puts an event on the current span, also inside functions
  recorded by the capture runtime; :func:`redacted_repr` formats captured
  values with secrets redacted.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, Callable, Collection

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.trace import get_current_span as _get_current_span
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from scope_otel import redact

_LOG = logging.getLogger("scope_otel.instrumentors")
_FAILURES: Counter = Counter()
_LOGGED: set[str] = set()
_SAID: set[str] = set()
_LOCK = threading.Lock()


def failed(where: str) -> None:
    """Count an internal failure at ``where``; log it (with traceback) once.

    Call from an ``except Exception`` block.  Never raises.
    """
    try:
        _FAILURES[where] += 1
        if where not in _LOGGED:
            _LOGGED.add(where)
            _LOG.warning("scope-otel integration error in %s (logged once, counted)", where, exc_info=True)
    except Exception:  # pragma: no cover - logging itself broke
        pass


def stats() -> dict[str, int]:
    """Internal failures per place since start, e.g. ``{"flask.start": 2}``."""
    return dict(_FAILURES)


def say_once(key: str, message: str, level: int = logging.INFO) -> None:
    """Log ``message`` the first time ``key`` is seen."""
    with _LOCK:
        if key in _SAID:
            return
        _SAID.add(key)
    _LOG.log(level, message)


# --------------------------------------------------------------------------
# patching classes
# --------------------------------------------------------------------------

_ORIGINALS: dict[tuple[int, str], tuple[type, str, Any]] = {}
_MARK = "__scope_otel_original__"
_MISSING = object()


def patch(owner: type, name: str, make: Callable[[Callable], Callable]) -> None:
    """Replace ``owner.name`` by ``make(original)``; idempotent.

    The replacement carries the original as ``__scope_otel_original__``
    (a second ``patch`` sees it and does nothing); :func:`unpatch` restores
    what the class itself had, or removes the attribute if it was inherited.
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


def unpatch(owner: type, name: str) -> None:
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


# --------------------------------------------------------------------------
# the instrumentor base
# --------------------------------------------------------------------------

class ScopeInstrumentor(BaseInstrumentor):
    """``BaseInstrumentor`` that says once why it stays off.

    Subclasses set ``_requires`` (pip requirement strings) and ``_what``
    (a short human name used in messages).
    """

    _requires: tuple[str, ...] = ()
    _what = "integration"
    #: The library's module.  When set, the subclass writes ``_attach`` and
    #: ``_detach`` instead of ``_instrument``/``_uninstrument``: ``_attach``
    #: runs once the program imports the library, never importing it for the
    #: program (see ``_deferred``).
    _library: str | None = None

    def _instrument(self, **kwargs: Any) -> None:
        from scope_otel.instrumentors._deferred import when_imported

        self._pending = when_imported(self._library, lambda _module: self._attach(**kwargs),
                                      f"{self._library}.attach")

    def _uninstrument(self, **kwargs: Any) -> None:
        pending = getattr(self, "_pending", None)
        if pending is not None and pending.cancel():  # attached: undo it
            self._detach(**kwargs)

    def _attach(self, **kwargs: Any) -> None:
        raise NotImplementedError

    def _detach(self, **kwargs: Any) -> None:
        raise NotImplementedError

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


def level() -> str:
    """The current capture level (``off``, ``boundaries`` or ``full``)."""
    try:
        from scope_otel import config

        return config.current().level
    except Exception:
        return "boundaries"


def redacted_repr(values: dict[str, Any]) -> str:
    """``{key: repr(value)}`` redacted by :mod:`scope_otel.redact` (counted), length-capped
    to ``max_value_length``."""
    redactor = redact.current()
    try:
        from scope_otel import config

        limit = config.current().max_value_length
    except Exception:
        limit = 512
    text = "{" + ", ".join(f"{key}={redactor.value(key, _short_repr(value))}" for key, value in values.items()) + "}"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= 120 else text[:117] + "..."


def add_event(tracer: Any, name: str, attributes: dict[str, Any], carrier: bool = True, span: Any = None) -> None:
    """Put an event on the current span (or ``span``, when the caller has
    just looked it up), wherever the code is.

    Inside a function recorded by the capture runtime the current span is
    that function's (a ``NonRecordingSpan``: its real span is made later, off
    the hot path) and cannot take events.  Then, with ``carrier``, a
    zero-length INTERNAL span named ``name`` — a child of the function —
    carries the event instead, so state changes stay attached to the call
    that made them.  Without a current span the event is dropped.
    """
    if span is None:
        span = _get_current_span()
    if span.is_recording():
        span.add_event(name, attributes)
    elif carrier and span.get_span_context().is_valid:
        child = tracer.start_span(name, attributes={"scope.kind": "event"})
        child.add_event(name, attributes)
        child.end()


def capture_runtime():
    """``scope_otel.capture.runtime`` if it is importable, else None."""
    try:
        from scope_otel.capture import runtime
    except Exception:
        return None
    return runtime
