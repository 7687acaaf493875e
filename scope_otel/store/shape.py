"""How a trace is laid out for reading: repeated siblings grouped, SQL text found.

Shared by ``scope-otel trace`` and the viewer (:mod:`scope_otel.ui`), so both
group the same spans the same way.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")

#: Siblings repeated this many times or more are shown as one group.
GROUP_MIN = 3

#: Span attributes that hold a statement's text (new and old semantic conventions).
SQL_KEYS = ("db.query.text", "db.statement")


def sql_text(attributes: Mapping[str, Any]) -> str:
    """The statement a database span ran, or ''."""
    for key in SQL_KEYS:
        value = attributes.get(key)
        if value:
            return str(value)
    return ""


def group_repeats(children: Sequence[T], key: Callable[[T], Any], min_count: int = GROUP_MIN) -> list[list[T]]:
    """Siblings in order, those sharing ``key`` ``min_count`` times or more gathered into one list.

    A group stands where its first member stood; members keep their order.
    Every other sibling is a list of one.  Repeated siblings need not be
    adjacent: an N+1 loop often interleaves its SELECTs with other calls.
    """
    counts: dict[Any, int] = {}
    for child in children:
        k = key(child)
        counts[k] = counts.get(k, 0) + 1
    out: list[list[T]] = []
    groups: dict[Any, list[T]] = {}
    for child in children:
        k = key(child)
        if counts[k] >= min_count:
            if k not in groups:
                groups[k] = []
                out.append(groups[k])
            groups[k].append(child)
        else:
            out.append([child])
    return out
