"""``exception.stacktrace`` text from a recorded exception summary, in Python's own layout.

A record keeps no exception object (its traceback would keep every frame and
local alive): the hot path keeps a summary of immutable values
(``scope_otel.capture.snapshot.exception_summary``: type, message, the
``(file, line, function)`` frames from the recorded call down to where it
was raised, and the chained cause or context).  :func:`stacktrace` writes it
as Python prints a traceback, without the ``^^^`` marker lines: ``File ...,
line ..., in ...`` lines, source lines (read here, in the worker, through
``linecache``), ``[Previous line repeated N more times]``, chained causes
and contexts, and the final ``Type: message``.  Frames left out of a very
deep traceback show as one ``[... N frames not recorded ...]`` line.
"""
from __future__ import annotations

import linecache
from collections import OrderedDict

_RECURSIVE_CUTOFF = 3  # as in traceback.py: identical frames shown before "repeated"
_CACHE_SIZE = 32

# summary layout (capture/snapshot.py)
_QUALNAME, _MODULE, _MESSAGE, _FRAMES, _OMITTED, _CAUSE, _CONTEXT = range(7)


class StackFormatter:
    """Formats summaries; remembers the last few (a loop raising the same way formats once)."""

    def __init__(self) -> None:
        self._recent: OrderedDict[tuple, str] = OrderedDict()

    def __call__(self, summary: tuple) -> str:
        hit = self._recent.get(summary)
        if hit is not None:
            return hit
        text = stacktrace(summary)
        self._recent[summary] = text
        if len(self._recent) > _CACHE_SIZE:
            self._recent.popitem(last=False)
        return text

    def clear(self) -> None:
        self._recent.clear()


def type_name(summary: tuple) -> str:
    """The exception's type as Python's traceback names it (``module.Qual`` outside builtins)."""
    module = summary[_MODULE]
    if module in ("builtins", "__main__", ""):
        return summary[_QUALNAME]
    return f"{module}.{summary[_QUALNAME]}"


def stacktrace(summary: tuple) -> str:
    """The traceback of a recorded exception as Python prints it, without the ``^^^`` lines."""
    lines: list[str] = []
    _chain(summary, lines)
    return "".join(lines)


def _chain(summary: tuple, out: list[str]) -> None:
    if summary[_CAUSE] is not None:
        _chain(summary[_CAUSE], out)
        out.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif summary[_CONTEXT] is not None:
        _chain(summary[_CONTEXT], out)
        out.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if summary[_FRAMES]:
        out.append("Traceback (most recent call last):\n")
        _frames(summary[_FRAMES], summary[_OMITTED], out)
    message = summary[_MESSAGE]
    out.append(f"{type_name(summary)}: {message}\n" if message else f"{type_name(summary)}\n")


def _frames(frames: tuple, omitted: int, out: list[str]) -> None:
    from scope_otel.capture.snapshot import MAX_FRAMES_HEAD

    last = None
    repeats = 0
    for i, here in enumerate(frames):
        if omitted and i == MAX_FRAMES_HEAD:
            _repeated(repeats, out)
            last, repeats = None, 0
            out.append(f"  [... {omitted} frames not recorded ...]\n")
        filename, lineno, name = here
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
