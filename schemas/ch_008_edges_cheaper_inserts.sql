-- The call-graph edges of ch_007_edges_and_search.sql, at a lower cost per INSERT.
--
-- What an INSERT into otel_traces paid for ch_007 (measured per INSERT in the
-- embedded store, CPU): about 10 ms for every table its views write a part to
-- (scope_edges and scope_edges_hourly, on every INSERT), 10-15 ms for the two
-- joins, and, on a big store, reading scope_spans_by_trace for every trace of
-- the block (random trace ids: most granules of the table) to find parents
-- that were almost always in the block itself.  The store writer's INSERTs
-- are drains of a few thousand to a few hundred thousand spans, so the fixed
-- part weighed most.  Here:
--
-- * scope_edges_rollup replaces scope_edges and scope_edges_hourly: one
--   table, one part per INSERT, holding both grains (Grain 'm': per minute of
--   the child's start; 'h': per hour), each call aggregated into one row of
--   each.  The views (ch_R_views.sql) read whole hours at grain 'h' and the
--   rest at grain 'm', as before.  The existing counts are copied over;
--   scope_edges and scope_edges_hourly are no longer written and are kept
--   (dropping them here would fail a second process migrating the same
--   fresh server at the same time, whose copy would find them gone).
-- * scope_edge_children_mv looks a child's parent up in the table only for
--   the children whose parent is not in the block (the trace ids of those
--   children alone), and joins with ANY (one parent per child) instead of
--   grouping every span of the block by key first.
-- * scope_edge_parents_mv groups only the block's spans that some waiting
--   child names (usually none) instead of every span of the block.
--
-- What is counted is unchanged (see ch_007: each call once, when the second
-- of its two spans arrives; the same limits).  On a server, calls counted in
-- the instant between dropping the old views and creating these (spans
-- inserted while this migration runs) are not counted; the embedded store
-- writes nothing meanwhile.

DROP VIEW IF EXISTS ${db}.scope_edges_hourly_mv ${on_cluster};
DROP VIEW IF EXISTS ${db}.scope_edges_mv ${on_cluster};

CREATE TABLE IF NOT EXISTS ${db}.scope_edges_rollup ${on_cluster} (
    Grain LowCardinality(String) CODEC(ZSTD(1)),
    At DateTime CODEC(Delta, ZSTD(1)),
    ParentService LowCardinality(String) CODEC(ZSTD(1)),
    Parent LowCardinality(String) CODEC(ZSTD(1)),
    ParentKind LowCardinality(String) CODEC(ZSTD(1)),
    ChildService LowCardinality(String) CODEC(ZSTD(1)),
    Child LowCardinality(String) CODEC(ZSTD(1)),
    ChildKind LowCardinality(String) CODEC(ZSTD(1)),
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    Durations AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), UInt64)
) ENGINE = ${aggregating_engine}
PARTITION BY toDate(At)
ORDER BY (Grain, At, ParentService, Parent, ParentKind, ChildService, Child, ChildKind)
${ttl_edges_rollup}
SETTINGS ttl_only_drop_parts = 1;

INSERT INTO ${db}.scope_edges_rollup
SELECT 'm', Minute, ParentService, Parent, ParentKind, ChildService, Child, ChildKind, Calls, Errors, Durations
FROM ${db}.scope_edges
WHERE (SELECT count() FROM ${db}.scope_edges_rollup) = 0;

INSERT INTO ${db}.scope_edges_rollup
SELECT 'h', Hour, ParentService, Parent, ParentKind, ChildService, Child, ChildKind, Calls, Errors, Durations
FROM ${db}.scope_edges_hourly
WHERE (SELECT count() FROM ${db}.scope_edges_rollup WHERE Grain = 'h') = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.scope_edges_rollup_mv ${on_cluster}
TO ${db}.scope_edges_rollup
AS SELECT
    Grain, At, ParentService, Parent, ParentKind, ChildService, Child, ChildKind,
    count() AS Calls,
    countIf(StatusCode IN ('STATUS_CODE_ERROR', 'Error')) AS Errors,
    quantilesBFloat16State(0.5, 0.95, 0.99)(Duration) AS Durations
FROM ${db}.scope_edge_calls
ARRAY JOIN ['m', 'h'] AS Grain, [toStartOfMinute(Timestamp), toStartOfHour(Timestamp)] AS At
WHERE Matched
GROUP BY Grain, At, ParentService, Parent, ParentKind, ChildService, Child, ChildKind;

DROP VIEW IF EXISTS ${db}.scope_edge_children_mv ${on_cluster};
CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.scope_edge_children_mv ${on_cluster}
TO ${db}.scope_edge_calls
AS SELECT c.Timestamp AS Timestamp, c.TraceId AS TraceId, c.ParentKey AS ParentKey, p.SpanKey != 0 AS Matched,
          p.ServiceName AS ParentService, p.SpanName AS Parent, p.SpanKind AS ParentKind,
          c.ServiceName AS ChildService, c.SpanName AS Child, c.SpanKind AS ChildKind,
          c.StatusCode AS StatusCode, c.Duration AS Duration
FROM ${db}.scope_spans_by_trace AS c
ANY LEFT JOIN (
    SELECT SpanKey, ServiceName, SpanName, SpanKind FROM ${db}.scope_spans_by_trace
    UNION ALL
    SELECT SpanKey, ServiceName, SpanName, SpanKind
    FROM ${db}.scope_spans_lookup
    WHERE TraceId IN (
        SELECT TraceId FROM ${db}.scope_spans_by_trace
        WHERE ParentKey != 0 AND ParentKey NOT IN (SELECT SpanKey FROM ${db}.scope_spans_by_trace))
      AND SpanKey IN (SELECT ParentKey FROM ${db}.scope_spans_by_trace)
) AS p ON c.ParentKey = p.SpanKey
WHERE c.ParentKey != 0
SETTINGS join_use_nulls = 0;

DROP VIEW IF EXISTS ${db}.scope_edge_parents_mv ${on_cluster};
CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.scope_edge_parents_mv ${on_cluster}
TO ${db}.scope_edge_calls
AS SELECT c.Timestamp AS Timestamp, c.TraceId AS TraceId, c.ParentKey AS ParentKey, toUInt8(1) AS Matched,
          p.ServiceName AS ParentService, p.SpanName AS Parent, p.SpanKind AS ParentKind,
          c.ChildService AS ChildService, c.Child AS Child, c.ChildKind AS ChildKind,
          c.StatusCode AS StatusCode, c.Duration AS Duration
FROM (
    SELECT SpanKey, any(ServiceName) AS ServiceName, any(SpanName) AS SpanName, any(SpanKind) AS SpanKind
    FROM ${db}.scope_spans_by_trace
    WHERE SpanKey IN (SELECT ParentKey FROM ${db}.scope_edge_pending
                      WHERE ParentKey IN (SELECT SpanKey FROM ${db}.scope_spans_by_trace))
    GROUP BY SpanKey
) AS p
INNER JOIN (
    SELECT Timestamp, TraceId, ParentKey, ChildService, Child, ChildKind, StatusCode, Duration
    FROM ${db}.scope_edge_pending
    WHERE ParentKey IN (SELECT SpanKey FROM ${db}.scope_spans_by_trace)
) AS c ON c.ParentKey = p.SpanKey;

-- The message edges' linked spans (scope_linked_spans in ch_R_views.sql): a span with links is
-- rare, so a granule whose spans have none is skipped by the most links one of them has, instead
-- of reading the lengths of every span's links (all time over 5 M spans: 4 ms against 30-140 ms).
-- Existing parts gain the index in the background (a mutation); until then they are read as before.
ALTER TABLE ${db}.otel_traces ${on_cluster} ADD INDEX IF NOT EXISTS idx_links length(Links.SpanId)
    TYPE minmax GRANULARITY 1;
ALTER TABLE ${db}.otel_traces ${on_cluster} MATERIALIZE INDEX idx_links;
