"""What the viewer shows, read from the store as JSON-ready data.

:func:`load_trace` gathers one trace (every span with its attributes, events
and links, and the links that other traces hold to it); :func:`load_graph`
the service or function call graph; :func:`trace_rows` the traces list.
Every string is valid Unicode (invalid UTF-8 replaced with U+FFFD, never
dropped): the page shows values as text.
"""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from scope_otel.store import Store, StoreError, TraceFilter, _check_trace_id

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
    """One trace as the viewer's bundle, or None when the store does not hold it.

    ``columns_json`` is the spans as JSON text in columns (:data:`COLUMNS`), written
    by ClickHouse itself (strings made valid UTF-8, times in ns from the trace's
    start; names, kinds, services, statuses, statements and attribute keys each
    written once).  The page lays them out and derives the time-travel steps; Python
    never touches the spans one by one, which keeps a 10,000-span trace's page quick
    (``bench_ui``'s trace: 1.4 MB, where one JSON object per span took 3.7 MB).
    :func:`spans` decodes them for Python callers.
    """
    _check_trace_id(trace_id)
    db = store.database
    params: dict[str, Any] = {"tid": trace_id}
    summary = f"""SELECT min(toUnixTimestamp64Nano(Timestamp)), max(toUnixTimestamp64Nano(Timestamp) + Duration),
                         arraySort(groupUniqArray(toValidUTF8(ServiceName))), uniqExact(SpanId)
                  FROM `{db}`.{{table}} WHERE TraceId = {{{{tid:String}}}} SETTINGS max_threads = 1"""
    # scope_spans_by_trace holds the trace as one primary-key range; otel_traces (found by its
    # trace-id bloom filter) answers for spans that table lacks (written before ch_003 existed)
    head = store.query(summary.format(table="scope_spans_by_trace"), params).rows
    if not head or not head[0][3]:
        head = store.query(summary.format(table="otel_traces"), params).rows
    if not head or not head[0][3]:
        return None
    base, last, services = head[0][:3]
    # the big query reads only the trace's time range (epoch ns: no time zone to disagree on).
    # One thread each: one trace is a few thousand rows, and on a busy machine (the browser
    # drawing beside it) threads handing rows to each other took twice as long (84 against 46 ms)
    params["lo"] = max(0, int(base) - 1_000_000_000)
    params["hi"] = int(last) + 2_000_000_000
    time_cond = (" AND Timestamp >= fromUnixTimestamp64Nano({lo:Int64})"
                 " AND Timestamp <= fromUnixTimestamp64Nano({hi:Int64})")
    params["base"] = int(base)
    error = "('STATUS_CODE_ERROR', 'Error')"
    rows = store.query(
        f"""SELECT formatRowNoNewline('JSONEachRow', count() AS n, groupArray(id) AS id, groupArray(parent) AS parent,
                   {_dictionary('name')}, {_dictionary('kind')}, {_dictionary('service')},
                   {_dictionary('instance')}, {_dictionary('process')},
                   groupArray(start) AS start, groupArray(dur) AS dur, {_dictionary('status')},
                   groupArray(status_msg) AS status_msg, groupArray(length(attrs)) AS attr_n,
                   arrayDistinct(arrayFlatten(groupArray(mapKeys(attrs)))) AS attr_d,
                   arrayMap(x -> x - 1, arrayEnumerateDense(arrayFlatten(groupArray(mapKeys(attrs))))) AS attr_i,
                   arrayFlatten(groupArray(mapValues(attrs))) AS attr_v, groupArray(events) AS events,
                   groupArray(links) AS links, {_dictionary('sql')}, groupArray(hlc) AS hlc)
            FROM (
                SELECT toValidUTF8(SpanId) AS id, toValidUTF8(ParentSpanId) AS parent, toValidUTF8(SpanName) AS name,
                       lower(replaceRegexpOne(toString(SpanKind), '^SPAN_KIND_', '')) AS kind,
                       toValidUTF8(ServiceName) AS service,
                       toValidUTF8(ResourceAttributes['service.instance.id']) AS instance,
                       trimBoth(toValidUTF8(concat(ResourceAttributes['host.name'], ' ',
                                                   ResourceAttributes['process.pid']))) AS process,
                       toInt64(toUnixTimestamp64Nano(Timestamp) - {{base:Int64}}) AS start, Duration AS dur,
                       multiIf(StatusCode IN {error}, 'error', StatusCode IN ('STATUS_CODE_OK', 'Ok'), 'ok', '') AS status,
                       toValidUTF8(StatusMessage) AS status_msg,
                       {_valid_map('SpanAttributes')} AS attrs,
                       arrayMap((t, n, a) -> (toInt64(toUnixTimestamp64Nano(t) - {{base:Int64}}), toValidUTF8(n),
                                              {_valid_map('a')}),
                                Events.Timestamp, Events.Name, Events.Attributes) AS events,
                       arrayMap((t, i, a) -> (toValidUTF8(t), toValidUTF8(i), {_valid_map('a')}),
                                Links.TraceId, Links.SpanId, Links.Attributes) AS links,
                       toValidUTF8(if(SpanAttributes['db.query.text'] != '', SpanAttributes['db.query.text'],
                                      SpanAttributes['db.statement'])) AS sql,
                       toValidUTF8(SpanAttributes['scope.hlc']) AS hlc
                FROM `{db}`.otel_traces WHERE TraceId = {{tid:String}}{time_cond}
                ORDER BY Timestamp, SpanId LIMIT 1 BY SpanId)
            SETTINGS max_threads = 1, output_format_json_quote_64bit_integers = 0,
                     output_format_json_named_tuples_as_objects = 0""",
        params).rows
    incoming = _incoming_links(store, trace_id, params if time_cond else None)
    return {
        "trace_id": trace_id,
        "start_ns": int(base),
        "start": _dt.datetime.fromtimestamp(int(base) / 1e9, _dt.timezone.utc).isoformat(),
        "duration_ns": int(last) - int(base),
        "services": list(services),
        "incoming": incoming,
        "store": store.target.display,
        "columns_json": rows[0][0],
    }


#: The columns of ``columns_json``: each a list with one item per span, in start order.  A
#: dictionary column ``c`` comes as ``c_d`` (its distinct values) and ``c_i`` (each span's
#: index into them); an event is ``[t, name, attrs]``, a link ``[trace_id, span_id, attrs]``.
#: The spans' attributes come flat: ``attr_n`` (how many each span has), ``attr_i`` (each
#: one's key, an index into ``attr_d``) and ``attr_v`` (its value).
COLUMNS = ("id", "parent", "name", "kind", "service", "instance", "process", "start", "dur", "status",
           "status_msg", "attrs", "events", "links", "sql", "hlc")
_DICTIONARY = ("name", "kind", "service", "instance", "process", "status", "sql")


def _dictionary(column: str) -> str:
    """SQL: a column as its distinct values (in order of first use) and each row's index into them."""
    return (f"arrayDistinct(groupArray({column})) AS {column}_d, "
            f"arrayMap(x -> x - 1, arrayEnumerateDense(groupArray({column}))) AS {column}_i")


def has_trace(store: Store, trace_id: str) -> bool:
    """Whether the store holds a span of the trace (a primary-key lookup, then otel_traces' bloom filter)."""
    _check_trace_id(trace_id)
    for table in ("scope_spans_by_trace", "otel_traces"):
        if store.query(f"SELECT 1 FROM `{store.database}`.{table} WHERE TraceId = {{tid:String}} LIMIT 1",
                       {"tid": trace_id}).rows:
            return True
    return False


def trace_json(bundle: dict[str, Any]) -> str:
    """The bundle as JSON text (its span columns spliced in as ClickHouse wrote them)."""
    meta = {k: v for k, v in bundle.items() if k != "columns_json"}
    text = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
    return text[:-1] + ',"columns":' + bundle["columns_json"] + "}"


def spans(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle's spans as Python dicts (one per span, keys :data:`COLUMNS`), in start order."""
    cols = json.loads(bundle["columns_json"])
    for name in _DICTIONARY:
        values = cols[name + "_d"]
        cols[name] = [values[i] for i in cols[name + "_i"]]
    keys, values, at = cols["attr_d"], cols["attr_v"], 0
    cols["attrs"] = []
    for n, count in enumerate(cols["attr_n"]):
        cols["attrs"].append({keys[cols["attr_i"][j]]: values[j] for j in range(at, at + count)})
        at += count
    cols["events"] = [[{"t": t, "name": n, "attrs": a} for t, n, a in es] for es in cols["events"]]
    cols["links"] = [[{"trace_id": t, "span_id": i, "attrs": a} for t, i, a in ls] for ls in cols["links"]]
    return [dict(zip(COLUMNS, values)) for values in zip(*(cols[name] for name in COLUMNS))]


def _valid_map(expr: str) -> str:
    """SQL: the map ``expr`` with keys and values made valid UTF-8 (bad bytes become U+FFFD)."""
    return f"mapApply((k, v) -> (toValidUTF8(k), toValidUTF8(v)), {expr})"


def _incoming_links(store: Store, trace_id: str, params: dict | None) -> list[dict[str, Any]]:
    """Spans of other traces that link to a span of this one (the consumer side of a message hop)."""
    db = store.database
    cond = ""
    query_params: dict[str, Any] = {"tid": trace_id}
    if params:
        cond = (" AND Timestamp >= fromUnixTimestamp64Nano({lo:Int64})"
                " AND Timestamp <= fromUnixTimestamp64Nano({far:Int64})")
        query_params["lo"] = params["lo"]
        query_params["far"] = params["hi"] + _LINK_HORIZON_S * 1_000_000_000
    rows = store.query(
        f"""SELECT toValidUTF8(TraceId) AS TraceId, toValidUTF8(SpanId) AS SpanId, toValidUTF8(SpanName) AS SpanName,
                   toValidUTF8(ServiceName) AS ServiceName, toValidUTF8(LinkSpanId) AS LinkSpanId,
                   {_valid_map('LinkAttrs')} AS LinkAttrs
            FROM `{db}`.otel_traces
            ARRAY JOIN Links.TraceId AS LinkTraceId, Links.SpanId AS LinkSpanId, Links.Attributes AS LinkAttrs
            WHERE LinkTraceId = {{tid:String}} AND TraceId != {{tid:String}}{cond}
            LIMIT 200""", query_params).dicts()
    return [{"trace_id": r["TraceId"], "span_id": r["SpanId"], "name": r["SpanName"], "service": r["ServiceName"],
             "to_span": r["LinkSpanId"], "attrs": dict(r["LinkAttrs"])} for r in rows]


def load_graph(store: Store, by: str, window_s: float | None = None) -> dict[str, Any]:
    """Nodes and edges of the service (``by='service'``) or function call graph, with messages.

    ``window_s``: count only calls and messages of the last that many seconds
    (None: all time).
    """
    if by not in ("service", "function"):
        raise StoreError(f"graph by {by!r}: choose service or function")
    since = None
    if window_s:
        since = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None) - _dt.timedelta(seconds=window_s)
    edges: list[dict[str, Any]] = []
    if by == "service":
        for e in store.service_edges(since):
            edges.append(_edge(e["Parent"], e["Child"], e, {"service": e["Child"]}))
    else:
        for e in store.function_edges(since):
            edges.append(_edge(f'{e["ParentService"]}:{e["Parent"]}', f'{e["ChildService"]}:{e["Child"]}', e,
                               {"service": e["ChildService"], "span": e["Child"]}))
    for m in store.message_edges(since):
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
    return clean({"by": by, "nodes": nodes, "edges": edges, "left_out": left_out, "window_s": window_s})


def _edge(src: str, dst: str, e: dict[str, Any], match: dict[str, str]) -> dict[str, Any]:
    return {"src": src, "dst": dst, "calls": int(e["Calls"]), "errors": int(e["Errors"]),
            "p50_ns": float(e["P50Ns"]), "p99_ns": float(e["P99Ns"]), "message": False, "match": match}
