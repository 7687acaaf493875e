-- Correlation views over otel_traces, scope_spans_by_trace and scope_events.  Repeatable: scope-otel
-- re-creates them whenever this file changes (see scope_schema_versions).
-- Views named with a {trace_id:String} parameter are parameterised views:
--     SELECT * FROM otel.scope_call_tree(trace_id = '...') ORDER BY Path
-- Error status is matched in both spellings the Collector has used
-- ('STATUS_CODE_ERROR' from traceutil, 'Error' from pdata's String()).

-- The call tree of one trace: every span with its depth and a Path of
-- (start ns, span id) pairs from the root, so ORDER BY Path prints the tree
-- depth-first with siblings in start order.  Spans whose parent is missing
-- from the trace become roots.  Duplicate rows (a spool replayed twice) are
-- collapsed; depth is capped so a corrupt parent cycle cannot loop.  Reads
-- scope_spans_by_trace (ordered by trace id); join otel_traces on SpanId
-- for attributes and events.
CREATE OR REPLACE VIEW ${db}.scope_call_tree ${on_cluster} AS
WITH RECURSIVE
    spans AS (
        SELECT SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Timestamp, Duration, StatusCode
        FROM ${db}.scope_spans_by_trace
        WHERE TraceId = {trace_id:String}
        LIMIT 1 BY SpanId
    ),
    tree AS (
        SELECT SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Timestamp, Duration, StatusCode,
               toUInt32(0) AS Depth,
               [(toUnixTimestamp64Nano(Timestamp), SpanId)] AS Path
        FROM spans
        WHERE ParentSpanId = '' OR ParentSpanId NOT IN (SELECT SpanId FROM spans)
        UNION ALL
        SELECT s.SpanId, s.ParentSpanId, s.SpanName, s.SpanKind, s.ServiceName, s.Timestamp, s.Duration,
               s.StatusCode,
               tree.Depth + 1,
               arrayPushBack(tree.Path, (toUnixTimestamp64Nano(s.Timestamp), s.SpanId))
        FROM spans AS s
        INNER JOIN tree ON s.ParentSpanId = tree.SpanId
        WHERE tree.Depth < 512
    )
SELECT * FROM tree;

-- From every failing span of one trace up to its root: one row per hop,
-- Hops = 0 at the failing span.  ExceptionType / Exception come from the
-- first exception recorded on that hop's span (scope_events).
CREATE OR REPLACE VIEW ${db}.scope_error_path ${on_cluster} AS
WITH RECURSIVE
    spans AS (
        SELECT SpanId, ParentSpanId, SpanName, ServiceName, Timestamp, Duration, StatusCode, StatusMessage
        FROM ${db}.scope_spans_by_trace
        WHERE TraceId = {trace_id:String}
        LIMIT 1 BY SpanId
    ),
    up AS (
        SELECT SpanId AS ErrorSpanId, SpanId, ParentSpanId, SpanName, ServiceName, Timestamp, Duration,
               StatusCode, StatusMessage, toUInt32(0) AS Hops
        FROM spans
        WHERE StatusCode IN ('STATUS_CODE_ERROR', 'Error')
        UNION ALL
        SELECT up.ErrorSpanId, s.SpanId, s.ParentSpanId, s.SpanName, s.ServiceName, s.Timestamp, s.Duration,
               s.StatusCode, s.StatusMessage, up.Hops + 1
        FROM spans AS s
        INNER JOIN up ON s.SpanId = up.ParentSpanId
        WHERE up.Hops < 512
    )
SELECT up.*, e.ExceptionType AS ExceptionType, e.Exception AS Exception
FROM up
LEFT JOIN (
    SELECT SpanId, argMin(Name, Seq) AS ExceptionType, argMin(Value, Seq) AS Exception
    FROM ${db}.scope_events
    WHERE TraceId = {trace_id:String} AND Kind = 'exception'
    GROUP BY SpanId
) AS e ON e.SpanId = up.SpanId
SETTINGS join_use_nulls = 0;

-- Everything recorded for one trace (spans and scope_events) with OrderKey,
-- the causal sort key: the scope.hlc hybrid logical clock when the span has
-- one, else the wall-clock millisecond in the same hex encoding, so stamped
-- and unstamped rows interleave sensibly.  ORDER BY OrderKey, Timestamp, Seq.
CREATE OR REPLACE VIEW ${db}.scope_causal_order ${on_cluster} AS
SELECT
    if(Hlc != '', substring(Hlc, 1, 16),
       concat(leftPad(lower(hex(toUInt64(toUnixTimestamp64Milli(Timestamp)))), 12, '0'), '0000')) AS OrderKey,
    Timestamp, Seq, What, SpanId, ServiceName, Name, Value, Hlc
FROM (
    SELECT min(Timestamp) AS Timestamp, toUInt32(0) AS Seq, 'span' AS What, SpanId,
           any(ServiceName) AS ServiceName, any(SpanName) AS Name, any(StatusCode) AS Value, any(Hlc) AS Hlc
    FROM ${db}.scope_spans_by_trace
    WHERE TraceId = {trace_id:String}
    GROUP BY SpanId
    UNION ALL
    SELECT Timestamp, Seq + 1 AS Seq, Kind AS What, SpanId, ServiceName, Name, Value, Hlc
    FROM ${db}.scope_events
    WHERE TraceId = {trace_id:String}
);

-- One row per trace: start, duration, span and error counts, and its root.
CREATE OR REPLACE VIEW ${db}.scope_traces ${on_cluster} AS
SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(toUnixTimestamp64Nano(Timestamp) + Duration) - min(toUnixTimestamp64Nano(Timestamp)) AS DurationNs,
    count() AS Spans,
    countIf(StatusCode IN ('STATUS_CODE_ERROR', 'Error')) AS Errors,
    argMinIf(ServiceName, Timestamp, ParentSpanId = '') AS RootService,
    argMinIf(SpanName, Timestamp, ParentSpanId = '') AS RootName
FROM ${db}.scope_spans_by_trace
WHERE TraceId != ''
GROUP BY TraceId;

-- Calls between services: an entry span (SERVER or CONSUMER kind) whose
-- parent, a CLIENT or PRODUCER span, belongs to another service.  Like
-- Jaeger's dependency graph (an entry span parented directly by an INTERNAL
-- span of another service is not counted).  Latency quantiles are the entry
-- spans' durations (bfloat16 estimates, within 0.4 %).  Read from the calls
-- counted as spans arrive (ch_007_edges_and_search.sql, ch_008): scope_edges_rollup's
-- hourly rows for the hours wholly inside the window, its per-minute rows for the
-- rest, so a graph over all time costs about what one over the last hour does.
-- ``_between(since, until)`` counts calls whose child started in the minutes
-- from since's to until's (a partial first minute counts whole); the plain
-- view spans all time.  Both halves are ranges of the table's key (the minute
-- rows before the first whole hour and from the last partial hour on), so an
-- all-time graph reads no minute rows.
CREATE OR REPLACE VIEW ${db}.scope_edges_between ${on_cluster} AS
SELECT At, ParentService, Parent, ParentKind, ChildService, Child, ChildKind, Calls, Errors, Durations
FROM ${db}.scope_edges_rollup
WHERE Grain = 'h'
  AND At >= toStartOfHour(toStartOfMinute({since:DateTime64(9)}) + INTERVAL 59 MINUTE)
  AND At < toStartOfHour({until:DateTime64(9)})
UNION ALL
SELECT At, ParentService, Parent, ParentKind, ChildService, Child, ChildKind, Calls, Errors, Durations
FROM ${db}.scope_edges_rollup
WHERE Grain = 'm'
  AND At >= toStartOfMinute({since:DateTime64(9)}) AND At <= {until:DateTime64(9)}
  AND (At < toStartOfHour(toStartOfMinute({since:DateTime64(9)}) + INTERVAL 59 MINUTE)
       OR At >= toStartOfHour({until:DateTime64(9)}));

CREATE OR REPLACE VIEW ${db}.scope_service_edges_between ${on_cluster} AS
SELECT
    ParentService AS Parent,
    ChildService AS Child,
    sum(Calls) AS Calls,
    sum(Errors) AS Errors,
    quantilesBFloat16Merge(0.5, 0.95, 0.99)(Durations) AS Q,
    Q[1] AS P50Ns,
    Q[2] AS P95Ns,
    Q[3] AS P99Ns
FROM ${db}.scope_edges_between(since = {since:DateTime64(9)}, until = {until:DateTime64(9)})
WHERE ChildKind IN ('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER', 'Server', 'Consumer')
  AND ParentKind IN ('SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER', 'Client', 'Producer')
  AND ParentService != ChildService
GROUP BY Parent, Child;

-- All time: every call is in the hourly rows (a parameterized view inside another took
-- twice as long to answer on 5 M spans).
CREATE OR REPLACE VIEW ${db}.scope_service_edges ${on_cluster} AS
SELECT
    ParentService AS Parent,
    ChildService AS Child,
    sum(Calls) AS Calls,
    sum(Errors) AS Errors,
    quantilesBFloat16Merge(0.5, 0.95, 0.99)(Durations) AS Q,
    Q[1] AS P50Ns,
    Q[2] AS P95Ns,
    Q[3] AS P99Ns
FROM ${db}.scope_edges_rollup
WHERE Grain = 'h'
  AND ChildKind IN ('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER', 'Server', 'Consumer')
  AND ParentKind IN ('SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER', 'Client', 'Producer')
  AND ParentService != ChildService
GROUP BY Parent, Child;

-- Calls between functions (span names) inside and across services: every
-- parent/child pair, with counts, errors and latency quantiles of the child.
-- From the counted calls as above; ``_between(since, until)`` as above.
CREATE OR REPLACE VIEW ${db}.scope_function_edges_between ${on_cluster} AS
SELECT
    ParentService,
    Parent,
    ChildService,
    Child,
    sum(Calls) AS Calls,
    sum(Errors) AS Errors,
    quantilesBFloat16Merge(0.5, 0.95, 0.99)(Durations) AS Q,
    Q[1] AS P50Ns,
    Q[2] AS P95Ns,
    Q[3] AS P99Ns
FROM ${db}.scope_edges_between(since = {since:DateTime64(9)}, until = {until:DateTime64(9)})
GROUP BY ParentService, Parent, ChildService, Child;

CREATE OR REPLACE VIEW ${db}.scope_function_edges ${on_cluster} AS
SELECT
    ParentService,
    Parent,
    ChildService,
    Child,
    sum(Calls) AS Calls,
    sum(Errors) AS Errors,
    quantilesBFloat16Merge(0.5, 0.95, 0.99)(Durations) AS Q,
    Q[1] AS P50Ns,
    Q[2] AS P95Ns,
    Q[3] AS P99Ns
FROM ${db}.scope_edges_rollup
WHERE Grain = 'h'
GROUP BY ParentService, Parent, ChildService, Child;

-- Messages between producers and consumers, from two sources:
--   Via = 'link':    a consumer span's span links to its producer span;
--   Via = 'message': scope.send / scope.recv events with the same channel and
--                    message id (the capture runtime's hand-off records).
-- LagNs is consumer start minus producer start (link) or recv minus send.
-- ``_between(since, until)``: consumers started in that window, producers up
-- to an hour before it.  The producer side is first narrowed to the linked
-- traces (TraceId IN ..., which otel_traces' trace-id bloom filter skips
-- granules by) before spans are hashed and their attributes read (a further
-- Key IN ... test read the linked spans a third time for little: dropped).
-- scope_linked_spans: the spans
-- holding links in a window, one row per link; granules without a linked span
-- are skipped by otel_traces' idx_links (ch_008: the most links a span of the
-- granule has), spelled as the index is, length(Links.SpanId) (all time over
-- 5 M spans without a link: 0.8-1.2 s unfolding every span's links, 0.03-0.14 s
-- reading the array sizes, 4 ms with the index).
CREATE OR REPLACE VIEW ${db}.scope_linked_spans ${on_cluster} AS
SELECT ServiceName, SpanName, Timestamp, LinkTraceId, LinkSpanId
FROM (
    SELECT ServiceName, SpanName, Timestamp, Links.TraceId AS LinkTraceIds, Links.SpanId AS LinkSpanIds
    FROM ${db}.otel_traces
    WHERE length(Links.SpanId) > 0 AND Timestamp >= {since:DateTime64(9)} AND Timestamp <= {until:DateTime64(9)}
)
ARRAY JOIN LinkTraceIds AS LinkTraceId, LinkSpanIds AS LinkSpanId
WHERE LinkSpanId != '';

CREATE OR REPLACE VIEW ${db}.scope_message_edges_between ${on_cluster} AS
SELECT
    'link' AS Via,
    p.Channel AS Channel,
    p.ServiceName AS ProducerService,
    p.SpanName AS Producer,
    c.ServiceName AS ConsumerService,
    c.SpanName AS Consumer,
    count() AS Messages,
    avg(toUnixTimestamp64Nano(c.Timestamp) - toUnixTimestamp64Nano(p.Produced)) AS AvgLagNs
FROM (
    SELECT cityHash64(LinkTraceId, LinkSpanId) AS ProducerKey, ServiceName, SpanName, Timestamp
    FROM ${db}.scope_linked_spans(since = {since:DateTime64(9)}, until = {until:DateTime64(9)})
) AS c
INNER JOIN (
    SELECT cityHash64(TraceId, SpanId) AS Key, any(ServiceName) AS ServiceName, any(SpanName) AS SpanName,
           any(Timestamp) AS Produced, any(SpanAttributes['messaging.destination.name']) AS Channel
    FROM ${db}.otel_traces
    WHERE Timestamp >= {since:DateTime64(9)} - INTERVAL 1 HOUR AND Timestamp <= {until:DateTime64(9)}
      AND TraceId IN (
        SELECT LinkTraceId FROM ${db}.scope_linked_spans(since = {since:DateTime64(9)}, until = {until:DateTime64(9)})
    )
    GROUP BY Key
) AS p ON c.ProducerKey = p.Key
GROUP BY Channel, ProducerService, Producer, ConsumerService, Consumer
UNION ALL
SELECT
    'message' AS Via,
    s.Name AS Channel,
    s.ServiceName AS ProducerService,
    s.Function AS Producer,
    r.ServiceName AS ConsumerService,
    r.Function AS Consumer,
    count() AS Messages,
    avg(toUnixTimestamp64Nano(r.Timestamp) - toUnixTimestamp64Nano(s.Timestamp)) AS AvgLagNs
FROM (SELECT Name, Value, ServiceName, Function, Timestamp FROM ${db}.scope_events
      WHERE Kind = 'recv' AND Timestamp >= {since:DateTime64(9)} AND Timestamp <= {until:DateTime64(9)}) AS r
INNER JOIN (SELECT Name, Value, ServiceName, Function, Timestamp FROM ${db}.scope_events
            WHERE Kind = 'send' AND Timestamp >= {since:DateTime64(9)} - INTERVAL 1 HOUR
              AND Timestamp <= {until:DateTime64(9)}) AS s
    ON r.Name = s.Name AND r.Value = s.Value
GROUP BY Channel, ProducerService, Producer, ConsumerService, Consumer;

CREATE OR REPLACE VIEW ${db}.scope_message_edges ${on_cluster} AS
SELECT * FROM ${db}.scope_message_edges_between(since = '1970-01-01 01:00:00', until = '2262-01-01 00:00:00');
