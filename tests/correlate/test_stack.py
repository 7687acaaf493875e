"""exception.stacktrace text: Python's own layout, without the ^^^ marker lines."""
from __future__ import annotations

import re
import sys
import traceback

import pytest

from scope_otel.correlate.stack import StackFormatter, stacktrace

_MARKERS = re.compile(r"^\s*[\^~]+\s*$")


def _python_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "".join(line for line in text.splitlines(keepends=True) if not _MARKERS.match(line))


def _caught(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the point is to keep it
        return exc
    raise AssertionError("did not raise")


def _deep(n):
    if n == 0:
        return {}["missing"]
    return _deep(n - 1) + 1


def _cause():
    try:
        1 / 0
    except ZeroDivisionError as exc:
        raise ValueError("bad input") from exc


def _context():
    try:
        int("x")
    except ValueError:
        raise KeyError("during handling")


def _suppressed():
    try:
        int("x")
    except ValueError:
        raise KeyError("no context shown") from None


def _no_source():
    namespace: dict = {}
    exec("def g():\n    raise RuntimeError('from exec')\n", namespace)
    namespace["g"]()


def _multiline_message():
    raise RuntimeError("line one\nline two, with 'quotes' and \x00 NUL")


@pytest.mark.parametrize("fn", [lambda: _deep(12), _cause, _context,
                                _suppressed, _no_source, _multiline_message],
                         ids=["recursion", "cause", "context", "suppressed", "no-source", "multiline"])
def test_same_text_as_python_without_the_marker_lines(fn):
    exc = _caught(fn)
    assert stacktrace(exc) == _python_text(exc)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are 3.11+")
def test_exception_groups_are_left_to_the_traceback_module():
    exc = _caught(lambda: (_ for _ in ()).throw(ExceptionGroup("two", [ValueError("a"), KeyError("b")])))
    assert stacktrace(exc) == "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def test_an_exception_passing_through_several_functions_is_formatted_once():
    fmt = StackFormatter()
    exc = _caught(_cause)
    first = fmt(exc)
    exc.__traceback__ = None  # were it formatted again, the text would change
    assert fmt(exc) is first
    other = _caught(_context)
    assert fmt(other) != first
