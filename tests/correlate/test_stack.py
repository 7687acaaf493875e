"""exception.stacktrace text, from the summary a record keeps: Python's own layout, without the ^^^ marker lines."""
from __future__ import annotations

import re
import sys
import traceback

import pytest

from scope_otel.capture.snapshot import MAX_FRAMES_HEAD, MAX_FRAMES_TAIL, exception_summary
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


def _summary(exc):
    return exception_summary(exc, 1 << 20)


@pytest.mark.parametrize("fn", [lambda: _deep(12), _cause, _context,
                                _suppressed, _no_source, _multiline_message],
                         ids=["recursion", "cause", "context", "suppressed", "no-source", "multiline"])
def test_same_text_as_python_without_the_marker_lines(fn):
    exc = _caught(fn)
    assert stacktrace(_summary(exc)) == _python_text(exc)


def test_a_summary_holds_no_reference_to_the_exception_its_traceback_or_frames():
    import gc

    exc = _caught(_cause)
    summary = _summary(exc)
    kept = set()

    def walk(v):
        kept.add(type(v))
        if isinstance(v, tuple):
            for item in v:
                walk(item)

    walk(summary)
    assert kept <= {tuple, str, int, type(None)}, kept
    assert not any(r is summary for r in gc.get_referrers(exc))


def test_a_very_deep_traceback_keeps_its_first_and_last_frames_and_says_how_many_are_left_out():
    exc = _caught(lambda: _deep(200))  # frames: _caught, the lambda, 201 of _deep
    summary = _summary(exc)
    assert len(summary[3]) == MAX_FRAMES_HEAD + MAX_FRAMES_TAIL
    assert summary[4] == 203 - MAX_FRAMES_HEAD - MAX_FRAMES_TAIL
    text = stacktrace(summary)
    assert f"[... {summary[4]} frames not recorded ...]" in text
    assert text.endswith("KeyError: 'missing'\n")


def test_the_message_of_a_user_exception_never_runs_its_str():
    ran = []

    class Loud(Exception):
        def __str__(self):
            ran.append(1)
            return "from __str__"

    class Arg:
        def __repr__(self):
            ran.append(2)
            return "Arg!"

    summary = _summary(_caught(lambda: (_ for _ in ()).throw(Loud("plain message"))))
    assert summary[2] == "plain message" and summary[0].endswith("Loud")
    summary = _summary(_caught(lambda: (_ for _ in ()).throw(ValueError(Arg()))))
    assert summary[2].startswith("<") and "Arg at 0x" in summary[2]
    assert ran == []


def test_a_loop_raising_the_same_way_is_formatted_once():
    fmt = StackFormatter()
    first = fmt(_summary(_caught(_cause)))
    assert fmt(_summary(_caught(_cause))) is first
    other = _summary(_caught(_context))
    assert fmt(other) != first
