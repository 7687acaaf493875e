"""How an integration reports a problem: counted, logged once, never raised.

* :func:`failed` is the one way an integration reports an internal error on
  the hot path: counted per place, logged (with its traceback) the first
  time, never raised into the application.  :func:`stats` gives the counts.
* :func:`say_once` tells the user something once (an integration that stays
  off, and why).
"""
from __future__ import annotations

import logging
import threading
from collections import Counter

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
