"""A trace as Chrome Trace Event JSON, which Perfetto and chrome://tracing open.

Each process (service instance) is a ``pid`` named after its service; spans
are complete events (``ph: "X"``) with their arguments, return value, SQL and
status in ``args``; exceptions, state changes and messages are instant events
(``ph: "i"``).  Complete events on one ``tid`` must nest, so spans are packed
into lanes where they do (a child stays on its parent's lane when it fits
inside it); timestamps are microseconds from the trace's start.
"""
from __future__ import annotations

from typing import Any

from scope_otel.ui.model import spans as _spans


def chrome_trace(bundle: dict[str, Any]) -> dict[str, Any]:
    spans = _spans(bundle)
    pids: dict[tuple[str, str], int] = {}
    lanes: dict[int, list[list[int]]] = {}  # pid -> lanes, each a stack of open end times (ns)
    events: list[dict[str, Any]] = []
    for s in sorted(spans, key=lambda s: (s["start"], -s["dur"])):
        key = (s["service"], s["instance"])
        if key not in pids:
            pids[key] = len(pids) + 1
            label = s["service"] + (f" ({s['process'] or s['instance'][:8]})" if s["instance"] or s["process"] else "")
            events.append({"name": "process_name", "ph": "M", "pid": pids[key], "tid": 0, "args": {"name": label}})
        pid = pids[key]
        end = s["start"] + s["dur"]
        tid = _lane(lanes.setdefault(pid, []), s["start"], end)
        args: dict[str, Any] = {k[10:]: v for k, v in s["attrs"].items() if k.startswith("scope.arg.")}
        if "scope.return" in s["attrs"]:
            args["return"] = s["attrs"]["scope.return"]
        if s["sql"]:
            args["sql"] = s["sql"]
        if s["status"]:
            args["status"] = s["status"] + (f": {s['status_msg']}" if s["status_msg"] else "")
        args["span_id"] = s["id"]
        events.append({"name": s["name"], "cat": s["kind"] or "span", "ph": "X", "ts": s["start"] / 1000,
                       "dur": s["dur"] / 1000, "pid": pid, "tid": tid, "args": args})
        for e in s["events"]:
            kind, name, value = event_fact(e)
            events.append({"name": f"{kind} {name}".strip(), "cat": kind, "ph": "i", "s": "t",
                           "ts": e["t"] / 1000, "pid": pid, "tid": tid, "args": {"value": value}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"trace_id": bundle["trace_id"], "start": bundle["start"], "source": "scope-otel"}}


def _lane(lanes: list[list[int]], start: int, end: int) -> int:
    for n, stack in enumerate(lanes):
        while stack and stack[-1] <= start:
            stack.pop()
        if not stack or stack[-1] >= end:
            stack.append(end)
            return n + 1
    lanes.append([end])
    return len(lanes)


def event_fact(event: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, name, value) of a span event, as the viewer's time travel names them."""
    name, attrs = event["name"], event["attrs"]
    if name == "exception":
        return "exception", attrs.get("exception.type", ""), attrs.get("exception.message", "")
    if name == "scope.state_change":
        return "state", attrs.get("scope.target", ""), attrs.get("scope.value", "")
    if name in ("scope.send", "scope.recv"):
        return name[6:], attrs.get("messaging.destination.name", ""), attrs.get("messaging.message.id", "")
    return "event", name, ", ".join(f"{k}={v}" for k, v in attrs.items())
