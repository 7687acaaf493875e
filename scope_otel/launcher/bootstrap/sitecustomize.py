"""scope-otel's start-up hook, imported by Python because ``scope-otel run``
put this folder first on ``PYTHONPATH``.

It sets up the pipeline, arranges for the main script's planned functions to
be instrumented when Python runs it (:mod:`scope_otel.instrument.main`), then
runs the ``sitecustomize`` that this one hides (the user's or the
environment's own), so nothing the program relied on is lost.  If set-up fails, the program runs uninstrumented with one warning: a
broken tracer must never stop the application.
"""


def _scope_otel_start():
    try:
        from scope_otel.launcher.pipeline import initialize

        initialize()
        import scope_otel.instrument as instrument

        hook = instrument.installed()
        if hook is not None:
            from scope_otel.instrument.main import watch

            watch(hook.plan)  # the script itself runs past the import hook
    except Exception as exc:  # noqa: BLE001 - any failure means: run uninstrumented
        import sys

        sys.stderr.write(
            f"scope-otel: WARNING: instrumentation disabled, the program runs uninstrumented: "
            f"{type(exc).__name__}: {exc}\n"
        )


def _scope_otel_chain():
    """Import the next ``sitecustomize`` on the path, the one this file shadows."""
    import os
    import sys

    try:
        from scope_otel._sitechain import import_next_sitecustomize
    except Exception as exc:  # noqa: BLE001 - a broken install: say so, run the program
        sys.stderr.write(f"scope-otel: WARNING: the program's own sitecustomize was not run: {exc!r}\n")
        return
    import_next_sitecustomize(os.path.dirname(os.path.abspath(__file__)))


_scope_otel_start()
_scope_otel_chain()
