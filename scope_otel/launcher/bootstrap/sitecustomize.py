"""scope-otel's start-up hook, imported by Python because ``scope-otel run``
put this folder first on ``PYTHONPATH``.

It sets up the pipeline, then runs the ``sitecustomize`` that this one hides
(the user's or the environment's own), so nothing the program relied on is
lost.  If set-up fails, the program runs uninstrumented with one warning: a
broken tracer must never stop the application.
"""


def _scope_otel_start():
    try:
        from scope_otel.launcher.pipeline import initialize

        initialize()
    except Exception as exc:  # noqa: BLE001 - any failure means: run uninstrumented
        import sys

        sys.stderr.write(
            f"scope-otel: WARNING: instrumentation disabled, the program runs uninstrumented: "
            f"{type(exc).__name__}: {exc}\n"
        )


def _scope_otel_chain():
    """Import the next ``sitecustomize`` on the path, the one this file shadows."""
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
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


_scope_otel_start()
_scope_otel_chain()
