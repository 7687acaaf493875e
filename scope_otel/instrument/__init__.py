"""Make planned code call the capture runtime: an import hook, and wrapt for the rest.

The launcher's bootstrap does this for you; by hand::

    from scope_otel.plan import Plan, load_plan
    import scope_otel.instrument as instrument

    instrument.apply(load_plan("scope-otel.plan.json"))
    # or, without a plan file (scope-otel run --instrument 'shop.*' --level full):
    instrument.apply(Plan.from_globs(["shop.*"], "full"))

:func:`apply` installs the import hook (:mod:`.hook`), which rewrites each
planned module's AST as it is imported (:mod:`.rewrite`; what the rewritten
code looks like is described there) and caches the bytecode (:mod:`.cache`,
``scope-otel compile`` fills it ahead of time, see :mod:`.cli`).  Planned
modules that are already imported, or that are not Python source, are
instrumented with wrapt instead (:mod:`.wrap`).  Both feed
``scope_otel.capture.runtime``; the level of each function can change at run
time (``scope_otel.config.update(level=...)``) without re-import.

scope-otel never rewrites itself, OpenTelemetry, wrapt or the standard
library.  A module that cannot be rewritten is imported unmodified with one
warning on the ``scope_otel.instrument`` logger.
"""
from __future__ import annotations

from typing import Any

from scope_otel.instrument.hook import ImportHook, install, installed, uninstall

__all__ = ["apply", "install", "uninstall", "installed", "ImportHook"]


def apply(plan: Any, *, already_imported: bool = True) -> ImportHook | None:
    """Install the import hook for ``plan``; wrap planned modules already imported.

    ``plan`` is a :class:`scope_otel.plan.Plan` (anything with
    ``wants_module``, ``for_function`` and ``hash`` will do).  Returns the
    hook, or None when instrumentation could not be set up at all (logged
    once; the program then runs uninstrumented).
    """
    import logging
    import sys

    try:
        from scope_otel.instrument import wrap

        hook = install(plan)
        if already_imported:
            wrap.wrap_imported(plan)
        for name in sorted(set(getattr(plan, "modules", ()) or ()) - set(sys.modules)):
            # modules other import hooks load (not through ours) still get wrapt;
            # rewritten ones are recognised and left alone
            wrap.wrap_after_import(name, plan)
        return hook
    except Exception:
        logging.getLogger("scope_otel.instrument").warning(
            "scope-otel: instrumentation could not be set up; running uninstrumented", exc_info=True)
        return None
