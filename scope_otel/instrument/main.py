"""Instrument the main script: ``python app.py``'s own functions, recorded like an imported module's.

Python reads, compiles and runs the main script itself, past the import hook
(``python -m pkg.mod`` goes through the import system and the hook; nothing
here is needed for it).  :func:`watch` adds an audit hook that sees
``cpython.run_file`` (the script's path) and then ``exec`` (its compiled
code, the moment before Python runs it, called from C with no Python frame
of the program's on the stack).  There it rewrites the script's source for
the plan, as the import hook would, under the script's module name as
``scope-otel plan`` names it (``app``; ``pkg.cli`` for a script inside a
package), runs the rewritten prelude (the probes) in ``__main__``'s
namespace, and puts the rewritten code of each top-level function and class
body into the constants of the code Python is about to run.  Python then runs
its own ``__main__`` as always, and every function the script defines is
created from rewritten code from the start.  Replacing a constant is a
pointer write into the code's ``co_consts`` tuple (CPython's layout, checked
on that live tuple first; reference counts kept), the one place scope-otel
writes into an object Python treats as immutable, done before anything has
read it; the script's own ``<module>`` code object then shows the rewritten
functions in its ``co_consts``.

Why this way: a runner that executes the script in a ``__main__`` of its own
(coverage.py's way) adds its frames to every traceback and has to imitate
what Python does with an uncaught exception (the excepthook, ``sys.last_*``,
``KeyboardInterrupt``'s death by SIGINT, ``-i``); swapping each function's
``__code__`` after its ``def`` needs a trace function over the script's top
level, which slows every import made there (measured: +0.7 s for Flask,
SQLAlchemy and Django on this machine) and shows in ``sys.gettrace()``.
Here Python itself runs the script: ``sys.argv``, ``sys.path[0]``, the
``__main__`` module and its ``__file__``/``__spec__``/``__loader__``,
tracebacks, exit status, ``atexit``, threads at exit and ``-i`` are Python's
own.  What differs is what differs for every rewritten module: the probes in
the namespace (``_@scope_p*``, names no source can spell) and the functions'
code objects.  The code Python runs is compared first with the script
compiled again from its file; if they differ (the file changed, or the
constants cannot be replaced), the script runs unmodified and one line says
so.

The copy of the script that ``multiprocessing``'s spawn and forkserver
children run as ``__mp_main__`` (``runpy.run_path``) is instrumented the same
way (fork children inherit the instrumented functions).  Not covered: a
script that is not Python source (``.pyc``, a directory or zip run through
``__main__``), ``-c`` and standard input.
"""
from __future__ import annotations

import os
import sys
import threading
from types import CodeType
from typing import Any

from scope_otel.instrument.own import is_the_programs, module_name

__all__ = ["watch", "status"]

#: what happened to this process' main script, for the exit summary (None: nothing to say)
_status: dict[str, Any] | None = None
_lock = threading.Lock()


def status() -> dict[str, Any] | None:
    """What happened to this process' main script: ``script``, ``module``, ``functions`` (how many
    were instrumented) and ``reason`` (why not), or None when there is nothing to say."""
    return _status


def watch(plan: Any) -> None:
    """Instrument the functions of the main script that ``plan`` covers, when Python runs it.

    Called once, by the launcher's start-up hook, after the import hook is installed.
    """
    state = {"path": None, "done": False}

    def audit(event: str, args: tuple) -> None:
        # called for every audited event for the rest of the process: one check when done
        if state["done"]:
            return
        if event == "cpython.run_file":
            state["path"] = os.path.abspath(os.fsdecode(args[0]))
            if state["path"].endswith(".pyc"):  # compiled code: run without an exec event, and no source
                state["done"] = True
                _instrument(None, plan, state["path"])
        elif event == "exec" and isinstance(args[0], CodeType) and args[0].co_name == "<module>":
            code = args[0]
            if state["path"] is not None:
                # the script's code (not another thread's exec meanwhile): compiled by Python under its path
                if os.path.abspath(code.co_filename) == state["path"]:
                    state["done"] = True  # first: the prelude's own exec comes through here too
                    _instrument(code, plan, state["path"])
                return
            # a multiprocessing spawn or forkserver child runs the parent's script as __mp_main__
            # (runpy.run_path, whose module is in sys.modules while its code runs)
            mp_main = sys.modules.get("__mp_main__")
            namespace = getattr(mp_main, "__dict__", None) or {}
            if namespace.get("__name__") == "__mp_main__" and namespace.get("__file__") == code.co_filename:
                state["done"] = True
                _instrument(code, plan, os.path.abspath(code.co_filename), namespace)
        elif event in ("cpython.run_stdin", "cpython.run_interactivehook"):
            state["done"] = True  # no script (or past it): nothing to watch for

    sys.addaudithook(audit)


def _tell(script: str, module: str, reason: str, *, loud: bool) -> None:
    global _status
    _status = {"script": script, "module": module, "functions": 0, "reason": reason}
    if loud:  # a case that could not be made transparent: said now, whatever the summary setting
        from scope_otel import notice

        notice.tell("main_script", f"the main script {script} runs uninstrumented: {reason}")


def _instrument(code: CodeType | None, plan: Any, path: str, namespace: dict | None = None) -> None:
    """Rewrite the planned functions of the script at ``path`` into ``code``, the code Python is about
    to run for it in ``namespace`` (``__main__``'s); never raises."""
    global _status
    script = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    if not is_the_programs(path):
        return  # a console script of an installed package: not the program's code, nothing to say
    module = module_name(path)
    try:
        wanted = bool(plan.wants_module(module))
    except Exception as exc:  # noqa: BLE001 - a broken plan must not break the program
        return _tell(script, module, f"the plan could not be asked about module {module} ({exc!r})", loud=True)
    if not wanted:
        return _tell(script, module, f"the plan does not include module {module}", loud=False)
    if code is None:
        return _tell(script, module, "it is compiled code (.pyc), not source", loud=True)
    try:
        with open(path, "rb") as fh:
            source = fh.read()
        plain = compile(source, path, "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError) as exc:
        return _tell(script, module, f"its source could not be read again ({type(exc).__name__}: {exc})", loud=True)
    if plain != code:
        return _tell(script, module, "the code Python runs differs from the file's source (changed since it "
                     "was read?)", loud=True)
    try:
        import ast

        from scope_otel.instrument.rewrite import rewrite_module

        tree = ast.parse(source, path)
        result = rewrite_module(tree, module, plan, separate_prelude=True)
        if not result.functions:
            return _tell(script, module, "the plan has no function of it above level off", loud=False)
        rewritten = compile(tree, path, "exec", dont_inherit=True)
        prelude = compile(ast.Module(body=result.prelude, type_ignores=[]), path, "exec", dont_inherit=True)
        replacements = _replacements(code, rewritten)
        if not _consts_replaceable(code.co_consts):
            return _tell(script, module, "this Python's code constants cannot be replaced", loud=True)
        if namespace is None:
            namespace = sys.modules["__main__"].__dict__
        exec(prelude, namespace)  # the probes, before any of the script's code runs
        for index, new in replacements:
            _replace_const(code.co_consts, index, new)
    except Exception as exc:  # noqa: BLE001 - the script then runs unmodified, as it would anyway
        return _tell(script, module, f"rewriting failed ({type(exc).__name__}: {exc})", loud=True)
    _status = {"script": script, "module": module, "functions": len(result.functions), "reason": None}


def _replacements(code: CodeType, rewritten: CodeType) -> list[tuple[int, CodeType]]:
    """``(index in code.co_consts, rewritten code)`` for each top-level function or class body that
    the rewrite changed, matched by name and first line (nested functions come with their parent)."""
    new_by_key: dict[tuple, CodeType | None] = {}
    for const in rewritten.co_consts:
        if isinstance(const, CodeType):
            key = (const.co_name, const.co_firstlineno)
            new_by_key[key] = None if key in new_by_key else const  # two of a kind (lambdas): neither
    out = []
    for index, const in enumerate(code.co_consts):
        if isinstance(const, CodeType):
            new = new_by_key.get((const.co_name, const.co_firstlineno))
            if new is not None and new != const:
                if new.co_freevars != const.co_freevars:
                    raise ValueError(f"{const.co_name} at line {const.co_firstlineno}: closure differs")
                out.append((index, new))
    return out


def _consts_replaceable(consts: tuple) -> bool:
    """A tuple's items sit right after its header (CPython's layout, checked here on a live tuple)."""
    try:
        import ctypes
    except ImportError:
        return False
    if sys.implementation.name != "cpython" or not consts:
        return False
    return ctypes.c_void_p.from_address(id(consts) + tuple.__basicsize__).value == id(consts[0])


def _replace_const(consts: tuple, index: int, value: CodeType) -> None:
    """Put ``value`` at ``consts[index]``, in place.  Only for the main script's code constants, before
    Python runs them: nothing else holds that tuple yet, and ``MAKE_FUNCTION`` reads it when the
    ``def`` runs, so the function is created from ``value``."""
    import ctypes

    with _lock:
        slot = ctypes.c_void_p.from_address(id(consts) + tuple.__basicsize__ + index * ctypes.sizeof(ctypes.c_void_p))
        old = consts[index]
        if slot.value != id(old):
            raise RuntimeError("unexpected tuple layout")
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(value))
        slot.value = id(value)
        ctypes.pythonapi.Py_DecRef(ctypes.py_object(old))  # `old` is still referenced here: never freed mid-call
        if consts[index] is not value:
            raise RuntimeError("the constant was not replaced")
