"""What the viewer shows, as plain JSON-ready dicts read from the store.

:func:`load_trace` gathers one trace (every span with its attributes, events
and links, the error path, the links that other traces hold to it, and the
time-travel steps); :func:`load_graph` the service or function call graph;
:func:`trace_rows` the traces list.  Every string is made safe to serialise
(invalid UTF-8 replaced, never dropped): the page shows values as text.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

from scope_otel.store import Store, StoreError, TraceFilter, _check_trace_id
from scope_otel.store.shape import group_repeats, sql_text
from scope_otel.ui.steps import build_steps

_ERROR = ("STATUS_CODE_ERROR", "Error")
#: Edges drawn on one graph; the rest are counted and said to be left out.
GRAPH_MAX_EDGES = 80
#: How long after a trace ends a consumer linking to it is looked for.
_LINK_HORIZON_S = 600


def clean(value: Any) -> Any:
    """``value`` with every string valid Unicode, datetimes as ISO text, maps as dicts."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:  # lone surrogates (surrogateescape'd bytes)
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def trace_rows(store: Store, where: TraceFilter) -> list[dict[str, Any]]:
    rows = store.traces(where)
    return [clean({
        "trace_id": r["TraceId"], "start": r["Start"], "duration_ns": int(r["DurationNs"]),
        "spans": int(r["Spans"]), "errors": int(r["Errors"]), "services": list(r["Services"]),
        "root": r["RootName"], "root_service": r["RootService"], "entry": r["Entry"],
    }) for r in rows]


def load_trace(store: Store, trace_id: str) -> dict[str, Any] | None:
    """One trace as the viewer's bundle, or None when the store does not hold it."""
    _check_trace_id(trace_id)
    db = store.database
    window = store.query(
        f"SELECT min(Start), max(End) FROM `{db}`.otel_traces_trace_id_ts WHERE TraceId = {{tid:String}}",
        {"tid": trace_id}).rows
    params: dict[str, Any] = {"tid": trace_id}
    time_cond = ""
    if window and window[0][0] is not None and window[0][0].year > 1970:
        params["lo"] = window[0][0] - _dt.timedelta(seconds=1)
        params["hi"] = window[0][1] + _dt.timedelta(seconds=2)
        time_cond = " AND Timestamp >= {lo:DateTime} AND Timestamp <= {hi:DateTime}"
    rows = store.query(
        f"""SELECT toUnixTimestamp64Nano(Timestamp) AS T, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName,
                   ResourceAttributes, SpanAttributes, Duration, StatusCode, StatusMessage,
                   arrayMap(x -> toUnixTimestamp64Nano(x), Events.Timestamp) AS EventTs, Events.Name AS EventNames,
                   Events.Attributes AS EventAttrs, Links.TraceId AS LinkTraces, Links.SpanId AS LinkSpans,
                   Links.Attributes AS LinkAttrs
            FROM `{db}`.otel_traces WHERE TraceId = {{tid:String}}{time_cond}
            ORDER BY T, SpanId LIMIT 1 BY SpanId""", params, replace_invalid=True).dicts()
    if not rows:
        return None
    spans = [_span(r) for r in rows]
    _lay_out(spans)
    incoming = _incoming_links(store, trace_id, spans, params if time_cond else None)
    start = min(s["start"] for s in spans)
    end = max(s["start"] + s["dur"] for s in spans)
    for s in spans:
        s["start"] -= start
        for e in s["events"]:
            e["t"] -= start
    steps = build_steps(spans)
    return clean({
        "trace_id": trace_id,
        "start_ns": start,
        "start": _dt.datetime.fromtimestamp(start / 1e9, _dt.timezone.utc).isoformat(),
        "duration_ns": end - start,
        "services": sorted({s["service"] for s in spans}),
        "spans": spans,
        "incoming": incoming,
        "steps": steps,
        "store": store.target.display,
    })


def _span(r: dict[str, Any]) -> dict[str, Any]:
    attrs = dict(r["SpanAttributes"])
    resource = dict(r["ResourceAttributes"])
    events = [{"t": int(t), "name": n, "attrs": dict(a)}
              for t, n, a in zip(r["EventTs"], r["EventNames"], r["EventAttrs"])]
    links = [{"trace_id": t, "span_id": s, "attrs": dict(a)}
             for t, s, a in zip(r["LinkTraces"], r["LinkSpans"], r["LinkAttrs"])]
    process = " ".join(v for v in (resource.get("host.name", ""), resource.get("process.pid", "")) if v)
    return {
        "id": r["SpanId"], "parent": r["ParentSpanId"], "name": r["SpanName"],
        "kind": str(r["SpanKind"]).replace("SPAN_KIND_", "").lower(),
        "service": r["ServiceName"], "instance": resource.get("service.instance.id", ""),
        "process": process, "start": int(r["T"]), "dur": int(r["Duration"]),
        "status": "error" if r["StatusCode"] in _ERROR else ("ok" if r["StatusCode"] in ("STATUS_CODE_OK", "Ok") else ""),
        "status_msg": r["StatusMessage"], "attrs": attrs, "events": events, "links": links,
        "sql": sql_text(attrs), "hlc": attrs.get("scope.hlc", ""),
    }


def _lay_out(spans: list[dict[str, Any]]) -> None:
    """Order ``spans`` depth-first (siblings by start), set depth, error marks and groups, in place."""
    by_id = {s["id"]: s for s in spans}
    children: dict[str, list[dict]] = {}
    roots = []
    for s in spans:  # already sorted by start
        if s["parent"] and s["parent"] in by_id and s["parent"] != s["id"]:
            children.setdefault(s["parent"], []).append(s)
        else:
            roots.append(s)
    ordered: list[dict] = []
    seen: set[str] = set()
    group_no = 0
    stack: list[tuple[dict, int]] = [(r, 0) for r in reversed(roots)]
    while stack:
        span, depth = stack.pop()
        if span["id"] in seen:  # a corrupt parent cycle
            continue
        seen.add(span["id"])
        span["depth"] = depth
        ordered.append(span)
        kids = children.get(span["id"], [])
        rows = group_repeats(kids, key=lambda c: (c["service"], c["name"], c["sql"]))
        for row in rows:
            if len(row) > 1:
                group_no += 1
                for member in row:
                    member["group"] = group_no
        for row in reversed(rows):
            for member in reversed(row):
                stack.append((member, depth + 1))
    for s in spans:  # spans only reachable through a cycle
        if s["id"] not in seen:
            s["depth"] = 0
            ordered.append(s)
    spans[:] = ordered
    for i, s in enumerate(spans):
        s["i"] = i
        s.setdefault("group", 0)
        s["err"] = 0
    for s in spans:  # 2 = the failing span, 1 = on the path from it to the root
        if s["status"] == "error":
            s["err"] = 2
            p = by_id.get(s["parent"])
            hops = 0
            while p is not None and hops < 512:
                if p["err"] == 0:
                    p["err"] = 1
                p = by_id.get(p["parent"])
                hops += 1


def _incoming_links(store: Store, trace_id: str, spans: list[dict], params: dict | None) -> list[dict[str, Any]]:
    """Spans of other traces that link to a span of this one (the consumer side of a message hop)."""
    db = store.database
    cond = ""
    query_params: dict[str, Any] = {"tid": trace_id}
    if params:
        cond = " AND Timestamp >= {lo:DateTime} AND Timestamp <= {far:DateTime}"
        query_params["lo"] = params["lo"]
        query_params["far"] = params["hi"] + _dt.timedelta(seconds=_LINK_HORIZON_S)
    rows = store.query(
        f"""SELECT TraceId, SpanId, SpanName, ServiceName, LinkSpanId, LinkAttrs
            FROM `{db}`.otel_traces
            ARRAY JOIN Links.TraceId AS LinkTraceId, Links.SpanId AS LinkSpanId, Links.Attributes AS LinkAttrs
            WHERE LinkTraceId = {{tid:String}} AND TraceId != {{tid:String}}{cond}
            LIMIT 200""", query_params, replace_invalid=True).dicts()
    return [{"trace_id": r["TraceId"], "span_id": r["SpanId"], "name": r["SpanName"], "service": r["ServiceName"],
             "to_span": r["LinkSpanId"], "attrs": dict(r["LinkAttrs"])} for r in rows]


def load_graph(store: Store, by: str) -> dict[str, Any]:
    """Nodes and edges of the service (``by='service'``) or function call graph, with messages."""
    if by not in ("service", "function"):
        raise StoreError(f"graph by {by!r}: choose service or function")
    edges: list[dict[str, Any]] = []
    if by == "service":
        for e in store.service_edges():
            edges.append(_edge(e["Parent"], e["Child"], e, {"service": e["Child"]}))
    else:
        for e in store.function_edges():
            edges.append(_edge(f'{e["ParentService"]}:{e["Parent"]}', f'{e["ChildService"]}:{e["Child"]}', e,
                               {"service": e["ChildService"], "span": e["Child"]}))
    for m in store.message_edges():
        if by == "service":
            src, dst, match = m["ProducerService"], m["ConsumerService"], {"service": m["ConsumerService"]}
        else:
            src = f'{m["ProducerService"]}:{m["Producer"]}'
            dst = f'{m["ConsumerService"]}:{m["Consumer"]}'
            match = {"span": m["Consumer"]} if m["Consumer"] else {"service": m["ConsumerService"]}
        edges.append({"src": src, "dst": dst, "calls": int(m["Messages"]), "errors": 0, "p50_ns": None,
                      "p99_ns": None, "message": True, "via": m["Via"], "channel": m["Channel"], "match": match})
    edges.sort(key=lambda e: -e["calls"])
    left_out = max(0, len(edges) - GRAPH_MAX_EDGES)
    edges = edges[:GRAPH_MAX_EDGES]
    nodes = sorted({e["src"] for e in edges} | {e["dst"] for e in edges})
    return clean({"by": by, "nodes": nodes, "edges": edges, "left_out": left_out})


def _edge(src: str, dst: str, e: dict[str, Any], match: dict[str, str]) -> dict[str, Any]:
    return {"src": src, "dst": dst, "calls": int(e["Calls"]), "errors": int(e["Errors"]),
            "p50_ns": float(e["P50Ns"]), "p99_ns": float(e["P99Ns"]), "message": False, "match": match}
