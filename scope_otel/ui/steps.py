"""Time-travel steps: everything a trace recorded, one fact per step, in causal order.

A step is a call entering, an argument bound, a state change, a message sent
or received, an exception, a return value, or a call leaving.  The order
follows the call tree, not the clocks: a call's entry and arguments come
before anything inside it, its return and exit after everything inside it,
and each child call is one unbroken block among its parent's own facts.
Clocks only order siblings and a span's own facts: siblings by their hybrid
logical clock (``scope.hlc``) when every one of them carries it, which stays
right across nodes whose wall clocks disagree, else by start time.  Function
spans and framework spans are timed by different clocks that can disagree by
microseconds, so the tree keeps a SELECT's end from landing inside the next
call; concurrent children (threads) are shown one after the other.
"""
from __future__ import annotations

from typing import Any, Iterator

#: Step kinds, as the page names them.
KINDS = ("enter", "arg", "state", "send", "recv", "exception", "event", "return", "exit")


def build_steps(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps for ``spans`` (each with ``i``, ``id``, ``parent``, ``start``, ``dur``, ``attrs``,
    ``events`` whose ``t`` is on the same base as ``start``, and ``hlc``)."""
    by_id = {s["id"]: s for s in spans}
    children: dict[str, list[dict]] = {}
    roots = []
    for s in spans:
        if s["parent"] in by_id and s["parent"] != s["id"]:
            children.setdefault(s["parent"], []).append(s)
        else:
            roots.append(s)
    steps: list[dict[str, Any]] = []
    seen: set[str] = set()
    for root in _ordered(roots):
        if root["id"] in seen:
            continue
        stack: list[tuple[dict, Iterator]] = [(root, _open(root, children, steps, seen))]
        while stack:
            span, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                _close(span, steps)
            elif "events" in item:  # a child span
                if item["id"] not in seen:
                    stack.append((item, _open(item, children, steps, seen)))
            else:
                steps.append(item)
    return steps


def _ordered(siblings: list[dict]) -> list[dict]:
    if siblings and all(s.get("hlc") for s in siblings):
        return sorted(siblings, key=lambda s: (s["hlc"], s["start"]))
    return sorted(siblings, key=lambda s: s["start"])


def _open(span: dict, children: dict[str, list[dict]], steps: list[dict], seen: set[str]) -> Iterator[dict]:
    seen.add(span["id"])
    i = span["i"]
    steps.append({"k": "enter", "s": i, "n": span["name"], "v": "", "t": span["start"]})
    for key, value in span["attrs"].items():
        if key.startswith("scope.arg."):
            steps.append({"k": "arg", "s": i, "n": key[10:], "v": value, "t": span["start"]})
    facts = []
    for e in sorted(span["events"], key=lambda e: e["t"]):
        kind, name, value = event_fact(e)
        facts.append({"k": kind, "s": i, "n": name, "v": value, "t": e["t"]})
    kids = _ordered(children.get(span["id"], []))
    return _merge(facts, kids)


def _merge(facts: list[dict], kids: list[dict]) -> Iterator[dict]:
    f = k = 0
    while f < len(facts) or k < len(kids):
        if k >= len(kids) or (f < len(facts) and facts[f]["t"] <= kids[k]["start"]):
            yield facts[f]
            f += 1
        else:
            yield kids[k]
            k += 1


def _close(span: dict, steps: list[dict]) -> None:
    end = span["start"] + span["dur"]
    if "scope.return" in span["attrs"]:
        steps.append({"k": "return", "s": span["i"], "n": "", "v": span["attrs"]["scope.return"], "t": end})
    steps.append({"k": "exit", "s": span["i"], "n": span["name"], "v": span["status"], "t": end})


def event_fact(event: dict[str, Any]) -> tuple[str, str, str]:
    name, attrs = event["name"], event["attrs"]
    if name == "exception":
        return "exception", attrs.get("exception.type", ""), attrs.get("exception.message", "")
    if name == "scope.state_change":
        return "state", attrs.get("scope.target", ""), attrs.get("scope.value", "")
    if name in ("scope.send", "scope.recv"):
        return name[6:], attrs.get("messaging.destination.name", ""), attrs.get("messaging.message.id", "")
    return "event", name, ", ".join(f"{k}={v}" for k, v in attrs.items())
