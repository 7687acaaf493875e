"""``exception.stacktrace`` text, cheaply, in Python's own traceback layout.

``traceback.format_exception`` costs 200-300 µs for a dozen frames on
CPython 3.11 (a ``FrameSummary`` per frame, a ``stat`` per file, and an
``ast.parse`` per frame for the ``^^^^`` markers).  An application that
raises and catches often pays that for every recorded exception, on its own
cores.  :func:`stacktrace` writes the same text without the marker lines
(the ``File ..., line ..., in ...`` lines, source lines, ``[Previous line
repeated N more times]``, chained causes and contexts, the final
``Type: message``) at a few µs per frame, and formats an exception once
however many recorded functions it passed through.  Exception groups, rare
and nested, go to ``traceback`` itself.
"""
from __future__ import annotations

import builtins
import linecache
import traceback
from collections import OrderedDict
from typing import Any

_RECURSIVE_CUTOFF = 3  # as in traceback.py: identical frames shown before "repeated"
_CACHE_SIZE = 32


class StackFormatter:
    """Formats exceptions; remembers the last few, so a shared exception is formatted once.

    What it remembers keeps those exceptions alive, with their tracebacks,
    frames and every local of those frames: its owner calls :meth:`clear`
    after each batch of records.
    """

    def __init__(self) -> None:
        self._recent: OrderedDict[int, tuple[BaseException, str]] = OrderedDict()

    def __call__(self, exc: BaseException) -> str:
        key = id(exc)
        hit = self._recent.get(key)
        if hit is not None and hit[0] is exc:
            return hit[1]
        text = stacktrace(exc)
        self._recent[key] = (exc, text)
        if len(self._recent) > _CACHE_SIZE:
            self._recent.popitem(last=False)
        return text

    def clear(self) -> None:
        self._recent.clear()


def stacktrace(exc: BaseException) -> str:
    """The traceback of ``exc`` as Python prints it, without the ``^^^`` marker lines."""
    if _has_group(exc, set()):
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    lines: list[str] = []
    _chain(exc, lines, set())
    return "".join(lines)


#: exception groups came with Python 3.11
_GROUP = getattr(builtins, "BaseExceptionGroup", None)


def _has_group(exc: Any, seen: set) -> bool:
    if _GROUP is None:
        return False
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _GROUP):
            return True
        if exc.__cause__ is not None and _has_group(exc.__cause__, seen):
            return True
        exc = exc.__context__
    return False


def _chain(exc: BaseException, out: list[str], seen: set) -> None:
    seen.add(id(exc))
    cause, context = exc.__cause__, exc.__context__
    if cause is not None and id(cause) not in seen:
        _chain(cause, out, seen)
        out.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif context is not None and not exc.__suppress_context__ and id(context) not in seen:
        _chain(context, out, seen)
        out.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if exc.__traceback__ is not None:
        out.append("Traceback (most recent call last):\n")
        _frames(exc.__traceback__, out)
    out.extend(traceback.format_exception_only(type(exc), exc))


def _frames(tb: Any, out: list[str]) -> None:
    last = None
    repeats = 0
    while tb is not None:
        code = tb.tb_frame.f_code
        filename, lineno, name = code.co_filename, tb.tb_lineno, code.co_name
        tb = tb.tb_next
        here = (filename, lineno, name)
        if here == last:
            repeats += 1
            if repeats > _RECURSIVE_CUTOFF:
                continue
        else:
            _repeated(repeats, out)
            last, repeats = here, 1
        out.append(f'  File "{filename}", line {lineno}, in {name}\n')
        line = linecache.getline(filename, lineno) if lineno is not None else ""
        if line.strip():
            out.append(f"    {line.strip()}\n")
    _repeated(repeats, out)


def _repeated(count: int, out: list[str]) -> None:
    more = count - _RECURSIVE_CUTOFF
    if more > 0:
        out.append(f"  [Previous line repeated {more} more time{'s' if more > 1 else ''}]\n")
