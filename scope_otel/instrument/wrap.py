"""wrapt instrumentation for what the import hook cannot rewrite.

Modules imported before the hook was installed, extension (C) modules,
modules loaded by other loaders and callables named explicitly in the plan
(third-party functions referenced from a planned module) are instrumented by
replacing the planned attributes with ``wrapt.FunctionWrapper`` objects that
call the same capture runtime as rewritten code.  wrapt keeps what a wrapper
usually breaks: methods bind, ``classmethod``/``staticmethod`` keep their
descriptor behaviour, ``inspect.signature`` and ``__wrapped__`` work.
Properties are rebuilt with wrapped accessors.  Generator, coroutine and
async-generator functions get wrappers of the same kind, so the recorded
call spans the whole iteration or ``await`` and reports suspend/resume at
each ``yield``.

Only references looked up after wrapping see the wrapper (``from m import
f`` taken earlier keeps the original); that is the price of not rewriting.
"""
from __future__ import annotations

import inspect
import logging
import sys
from types import FunctionType, ModuleType
from typing import Any, Callable

import wrapt

from scope_otel.capture import runtime as _rt
from scope_otel.instrument.exclusions import never_instrumented

_log = logging.getLogger("scope_otel.instrument")

class _ScopeWrapper(wrapt.FunctionWrapper):
    """Marks callables scope-otel wrapped (never wrapped twice)."""


def wrap_module(module: ModuleType, plan: Any) -> int:
    """Wrap the planned callables of an already-imported ``module``; returns how many."""
    from scope_otel.instrument.hook import is_rewritten

    name = getattr(module, "__name__", None)
    if not isinstance(name, str) or never_instrumented(name) or is_rewritten(module):
        return 0
    count = 0
    try:
        seen: set[int] = set()
        for attr, obj in list(vars(module).items()):
            if inspect.isclass(obj) and obj.__module__ == name:
                count += _wrap_class(obj, name, attr, plan, seen)
            elif _is_plain_callable(obj) and getattr(obj, "__module__", name) in (name, None):
                count += _wrap_attr(module, attr, obj, name, attr, plan, "function")
        count += _wrap_named(module, name, plan)
    except Exception as exc:  # partial wrapping is fine; failing the app is not
        _log.warning("scope-otel: %s only partly instrumented: %r", name, exc)
    return count


def wrap_after_import(name: str, plan: Any) -> None:
    """Wrap module ``name`` with :func:`wrap_module` as soon as it is imported."""
    wrapt.register_post_import_hook(lambda module: wrap_module(module, plan), name)


def ensure_post_import_finder() -> None:
    """Install wrapt's post-import finder now, so the import hook can sit in front of it.

    wrapt inserts its finder on first registration; registering a hook for a
    module that is already imported does that and runs the no-op hook at once.
    """
    wrapt.register_post_import_hook(lambda module: None, __name__)


# --------------------------------------------------------------------------
# walking classes and plan entries
# --------------------------------------------------------------------------

def _is_plain_callable(obj: Any) -> bool:
    return isinstance(obj, FunctionType) or inspect.isbuiltin(obj)


def _wrap_class(cls: type, module: str, path: str, plan: Any, seen: set[int]) -> int:
    if id(cls) in seen:
        return 0
    seen.add(id(cls))
    count = 0
    for attr, obj in list(vars(cls).items()):
        qualname = f"{path}.{attr}"
        if isinstance(obj, staticmethod):
            count += _wrap_attr(cls, attr, obj, module, qualname, plan, "static")
        elif isinstance(obj, classmethod):
            count += _wrap_attr(cls, attr, obj, module, qualname, plan, "class")
        elif isinstance(obj, property):
            count += _wrap_property(cls, attr, obj, module, qualname, plan)
        elif isinstance(obj, FunctionType):
            count += _wrap_attr(cls, attr, obj, module, qualname, plan, "method")
        elif inspect.isclass(obj) and obj.__module__ == module:
            count += _wrap_class(obj, module, qualname, plan, seen)
    return count


def _wrap_named(module: ModuleType, name: str, plan: Any) -> int:
    """Plan entries naming attributes the walk did not reach (imported callables, C functions)."""
    count = 0
    prefix = f"{name}:"
    for key in list(getattr(plan, "functions", {}) or {}):
        if not key.startswith(prefix):
            continue
        qualname = key[len(prefix):]
        if "<locals>" in qualname:
            continue  # only the import hook reaches nested functions
        *owners, attr = qualname.split(".")
        owner: Any = module
        for part in owners:
            owner = getattr(owner, part, None)
        target = inspect.getattr_static(owner, attr, None) if owner is not None else None
        if target is None or isinstance(target, _ScopeWrapper):
            continue
        if isinstance(target, property):
            count += _wrap_property(owner, attr, target, name, qualname, plan)
        elif callable(target) or isinstance(target, (staticmethod, classmethod)):
            kind = ("static" if isinstance(target, staticmethod) else "class" if isinstance(target, classmethod)
                    else "method" if inspect.isclass(owner) and isinstance(target, FunctionType) else "function")
            count += _wrap_attr(owner, attr, target, name, qualname, plan, kind)
    return count


def _planned(plan: Any, module: str, qualname: str) -> Any:
    fp = plan.for_function(module, qualname)
    return fp if fp is not None and fp.level != "off" else None


def _wrap_attr(owner: Any, attr: str, obj: Any, module: str, qualname: str, plan: Any, kind: str) -> int:
    if isinstance(obj, _ScopeWrapper):
        return 0
    fp = _planned(plan, module, qualname)
    if fp is None:
        return 0
    try:
        setattr(owner, attr, instrumented(obj, module, qualname, fp, kind))
    except (AttributeError, TypeError):  # read-only (C types): leave it
        return 0
    return 1


def _wrap_property(owner: type, attr: str, prop: property, module: str, qualname: str, plan: Any) -> int:
    fp = _planned(plan, module, qualname)
    if fp is None or isinstance(prop.fget, _ScopeWrapper) or isinstance(prop.fset, _ScopeWrapper):
        return 0
    parts = [instrumented(f, module, qualname, fp, "method") if f is not None else None
             for f in (prop.fget, prop.fset, prop.fdel)]
    setattr(owner, attr, type(prop)(*parts, prop.__doc__))
    return 1


# --------------------------------------------------------------------------
# the wrappers
# --------------------------------------------------------------------------

def instrumented(obj: Any, module: str, qualname: str, fp: Any, kind: str = "function") -> Any:
    """``obj`` wrapped so that each call is recorded as ``module:qualname`` at ``fp``'s level.

    ``kind`` is ``function``, ``method``, ``class`` (classmethod) or
    ``static`` (staticmethod): it decides which leading argument is the
    receiver and left out of the recorded arguments.
    """
    func = getattr(obj, "__func__", obj)
    code = getattr(func, "__code__", None)
    fid = _rt.register(module, qualname, getattr(code, "co_filename", "") if code else "",
                       getattr(code, "co_firstlineno", 0) if code else 0,
                       fp.level, frozenset(fp.capture), float(fp.sampling))
    args_of = _ArgBinder(func, kind)
    if inspect.isasyncgenfunction(func):
        wrapper = _asyncgen_wrapper(fid, args_of)
    elif inspect.iscoroutinefunction(func):
        wrapper = _coroutine_wrapper(fid, args_of)
    elif inspect.isgeneratorfunction(func):
        wrapper = _generator_wrapper(fid, args_of)
    else:
        wrapper = _call_wrapper(fid, args_of)
    return _ScopeWrapper(obj, wrapper)


class _ArgBinder:
    """Turns a call's ``(instance, args, kwargs)`` into ``{parameter: value}`` (at full only)."""

    def __init__(self, func: Callable, kind: str) -> None:
        self.func, self.kind = func, kind
        self.sig: Any = False  # computed on first use: most calls never need it

    def __call__(self, instance: Any, args: tuple, kwargs: dict) -> dict:
        if self.sig is False:
            try:
                self.sig = inspect.signature(self.func)
            except (TypeError, ValueError):
                self.sig = None
        if self.sig is None:
            return {"args": args, "kwargs": kwargs}
        receiver = self.kind in ("method", "class") and instance is not None
        try:
            bound = self.sig.bind(*((instance,) if receiver else ()), *args, **kwargs)
        except TypeError:
            return {"args": args, "kwargs": kwargs}
        out = dict(bound.arguments)
        if self.kind in ("method", "class") and out:
            out.pop(next(iter(self.sig.parameters)), None)
        return out


_LEVELS = _rt.LEVELS


def _call_wrapper(fid: int, args_of: _ArgBinder) -> Callable:
    def wrapper(wrapped, instance, args, kwargs):
        level = _LEVELS[fid]
        if not level:
            return wrapped(*args, **kwargs)
        token = _rt.enter(fid, args_of(instance, args, kwargs) if level > 1 else None)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _rt.exception(token, exc)
            raise
        _rt.exit(token, result)
        return result

    return wrapper


def _coroutine_wrapper(fid: int, args_of: _ArgBinder) -> Callable:
    async def wrapper(wrapped, instance, args, kwargs):
        level = _LEVELS[fid]
        if not level:
            return await wrapped(*args, **kwargs)
        token = _rt.enter(fid, args_of(instance, args, kwargs) if level > 1 else None)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            _rt.exception(token, exc)
            raise
        _rt.exit(token, result)
        return result

    return wrapper


def _generator_wrapper(fid: int, args_of: _ArgBinder) -> Callable:
    def wrapper(wrapped, instance, args, kwargs):
        gen = wrapped(*args, **kwargs)
        level = _LEVELS[fid]
        if not level:
            return gen
        return _drive(fid, gen, args_of(instance, args, kwargs) if level > 1 else None)

    return wrapper


def _drive(fid: int, gen: Any, call_args: dict | None) -> Any:
    """``yield from gen``, spelled out so each hand-over is reported (PEP 380)."""
    token = _rt.enter(fid, call_args)
    try:
        try:
            item = gen.send(None)
        except StopIteration as stop:
            _rt.exit(token, stop.value)
            return stop.value
        while True:
            _rt.suspend(token)
            try:
                sent = yield item
            except GeneratorExit:
                _rt.resume(token)
                gen.close()
                _rt.exit(token, None)
                token = None
                raise
            except BaseException as exc:
                _rt.resume(token)
                try:
                    item = gen.throw(exc)
                except StopIteration as stop:
                    _rt.exit(token, stop.value)
                    return stop.value
            else:
                _rt.resume(token)
                try:
                    item = gen.send(sent)
                except StopIteration as stop:
                    _rt.exit(token, stop.value)
                    return stop.value
    except BaseException as exc:
        if token is not None:
            _rt.exception(token, exc)
        raise


def _asyncgen_wrapper(fid: int, args_of: _ArgBinder) -> Callable:
    def wrapper(wrapped, instance, args, kwargs):
        agen = wrapped(*args, **kwargs)
        level = _LEVELS[fid]
        if not level:
            return agen
        return _adrive(fid, agen, args_of(instance, args, kwargs) if level > 1 else None)

    return wrapper


async def _adrive(fid: int, agen: Any, call_args: dict | None) -> Any:
    """The async twin of :func:`_drive` (async generators cannot ``yield from``)."""
    token = _rt.enter(fid, call_args)
    try:
        try:
            item = await agen.asend(None)
        except StopAsyncIteration:
            _rt.exit(token, None)
            return
        while True:
            _rt.suspend(token)
            try:
                sent = yield item
            except GeneratorExit:
                _rt.resume(token)
                await agen.aclose()
                _rt.exit(token, None)
                token = None
                raise
            except BaseException as exc:
                _rt.resume(token)
                try:
                    item = await agen.athrow(exc)
                except StopAsyncIteration:
                    _rt.exit(token, None)
                    return
            else:
                _rt.resume(token)
                try:
                    item = await agen.asend(sent)
                except StopAsyncIteration:
                    _rt.exit(token, None)
                    return
    except BaseException as exc:
        if token is not None:
            _rt.exception(token, exc)
        raise


def wrap_imported(plan: Any, modules: dict[str, ModuleType] | None = None) -> int:
    """Wrap every planned module already in ``sys.modules``; returns the callables wrapped."""
    total = 0
    for name, module in list((modules if modules is not None else sys.modules).items()):
        if not isinstance(module, ModuleType) or never_instrumented(name):
            continue
        try:
            wanted = plan.wants_module(name)
        except Exception:
            wanted = False
        if wanted:
            total += wrap_module(module, plan)
    return total
