"""Attach an integration when its library is imported, not before.

Importing a library only to patch it costs the program its import time even
when it never uses the library: Django, redis and pika together added about
a second of CPU to the start of a Flask app that imports none of them.  An
integration's hooks each name their module (``_base``, which calls
:func:`when_imported` once per module): ``attach`` runs at once if
the module is already imported, else right after the program imports it
(``wrapt``'s post-import hooks, the same hooks ``wrapt`` users rely on), so
classes are still patched before the program can use them, and apps, engines
and handlers made later are covered as before.

``attach`` failing is reported once (:func:`failed`) and never reaches the
program's ``import`` statement.  :meth:`Pending.cancel` makes a hook that has
not fired yet do nothing when it does, for ``uninstrument()``.
"""
from __future__ import annotations

import sys
import threading
from types import ModuleType
from typing import Callable

import wrapt

from scope_otel.instrumentors._report import failed


class Pending:
    """One deferred attach: fired (``attached``) or still waiting, unless cancelled."""

    def __init__(self, module: str, attach: Callable[[ModuleType], None], where: str) -> None:
        self.module = module
        self.attached = False
        self._attach = attach
        self._where = where
        self._cancelled = False
        self._lock = threading.Lock()

    def fire(self, module: ModuleType) -> None:
        with self._lock:
            if self._cancelled or self.attached:
                return
            self.attached = True
        try:
            self._attach(module)
        except Exception:
            failed(self._where)

    def cancel(self) -> bool:
        """Stop a hook that has not fired; True when it had attached (there is something to undo)."""
        with self._lock:
            self._cancelled = True
            return self.attached


def when_imported(module: str, attach: Callable[[ModuleType], None], where: str) -> Pending:
    """Run ``attach(module)`` now if ``module`` is imported, else once the program imports it."""
    pending = Pending(module, attach, where)
    loaded = sys.modules.get(module)
    if loaded is not None:
        pending.fire(loaded)
    else:
        wrapt.register_post_import_hook(pending.fire, module)
    return pending
