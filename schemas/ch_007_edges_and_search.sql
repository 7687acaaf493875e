-- Call-graph edges aggregated as spans arrive, so a graph reads a few
-- thousand pre-counted rows instead of joining every parent and child span
-- (seconds on a store of millions of spans); and, at the end, a skip index
-- for the traces list's text search in SQL.
--
-- scope_edges: per minute (of the child's start), per (parent service, name,
-- kind) -> (child service, name, kind): calls, errors and a quantile state of
-- the child's duration; scope_edges_hourly: the same per hour (a view on
-- scope_edges keeps it), so a graph over days merges a row per edge and hour.
-- The views scope_service_edges[_between] and scope_function_edges[_between]
-- (ch_R_views.sql) read whole hours from the one and the rest from the other.
-- Quantiles are quantilesBFloat16: a state is a count per duration rounded to
-- a bfloat16 (8 significant bits, within 0.4 %), so merged states give exactly
-- what one pass over the same spans gives, and merging them is cheap (the
-- reservoir states of quantiles() took 0.3-0.5 s to merge over a day).
--
-- How a call is found, whichever of its two spans arrives first (spans of one
-- trace arrive in any order: a child ends, and is exported, before its parent):
--   * scope_edge_children_mv: for each child in an inserted block of
--     scope_spans_by_trace, its parent is looked up in the block and in that
--     table (only the block's traces are read, a primary-key range each).
--     Found: the call is counted.  Not found: the child waits in
--     scope_edge_pending (ordered by parent key).
--   * scope_edge_parents_mv: for each span in an inserted block, the children
--     waiting for it in scope_edge_pending are counted.
-- Both write one row per call into scope_edge_calls (a Null table, nothing is
-- kept), whose two views aggregate matched calls into scope_edges and keep the
-- unmatched ones in scope_edge_pending.  So each call is counted once, when the
-- second of its two spans arrives.  Limits: a span written twice (a batch
-- replayed) is counted twice, as the join over spans counted repeated child
-- rows; on a server with several writers, two spans of one call written at the
-- same instant by two writers can miss each other (not counted), and so can
-- two spans of one call in two blocks of one INSERT (over about a million
-- rows: the store writer's drains are one block each); a child whose parent
-- arrives more than two days later is not counted (pending rows expire).
--
-- Inside a materialized view every mention of its source table reads the
-- inserted block; scope_spans_lookup, a plain view of the same table, reads
-- the rows stored before it (whether the block itself is visible there is not
-- certain, so a child's parent is looked for in the block and the table).
--
-- An existing store's spans are counted once when this migration runs (the
-- backfill below, before the views exist: one join over every span, about
-- 50 s for 5 M spans on a busy two-core machine); in the embedded store
-- nothing is written meanwhile, on a server spans inserted in that instant
-- are not counted.
--
-- Placeholders: see ch_001_traces.sql; ${aggregating_engine} is
-- AggregatingMergeTree() or ReplicatedAggregatingMergeTree().

CREATE VIEW IF NOT EXISTS ${db}.scope_spans_lookup ${on_cluster} AS
SELECT TraceId, SpanKey, ServiceName, SpanName, SpanKind
FROM ${db}.scope_spans_by_trace;

CREATE TABLE IF NOT EXISTS ${db}.scope_edge_calls ${on_cluster} (
    Timestamp DateTime64(9),
    TraceId String,
    ParentKey UInt64,
    Matched UInt8,
    ParentService LowCardinality(String),
    Parent LowCardinality(String),
    ParentKind LowCardinality(String),
    ChildService LowCardinality(String),
    Child LowCardinality(String),
    ChildKind LowCardinality(String),
    StatusCode LowCardinality(String),
    Duration UInt64
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS ${db}.scope_edges ${on_cluster} (
    Minute DateTime CODEC(Delta, ZSTD(1)),
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
PARTITION BY toDate(Minute)
ORDER BY (Minute, ParentService, Parent, ParentKind, ChildService, Child, ChildKind)
${ttl_edges}
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS ${db}.scope_edges_hourly ${on_cluster} (
    Hour DateTime CODEC(Delta, ZSTD(1)),
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
PARTITION BY toYYYYMM(Hour)
ORDER BY (Hour, ParentService, Parent, ParentKind, ChildService, Child, ChildKind)
${ttl_edges_hourly}
SETTINGS ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.scope_edges_hourly_mv ${on_cluster}
TO ${db}.scope_edges_hourly
AS SELECT
    toStartOfHour(Minute) AS Hour,
    ParentService, Parent, ParentKind, ChildService, Child, ChildKind,
    sum(Calls) AS Calls,
    sum(Errors) AS Errors,
    quantilesBFloat16MergeState(0.5, 0.95, 0.99)(Durations) AS Durations
FROM ${db}.scope_edges
GROUP BY Hour, ParentService, Parent, ParentKind, ChildService, Child, ChildKind;

CREATE TABLE IF NOT EXISTS ${db}.scope_edge_pending ${on_cluster} (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    ParentKey UInt64 CODEC(ZSTD(1)),
    ChildService LowCardinality(String) CODEC(ZSTD(1)),
    Child LowCardinality(String) CODEC(ZSTD(1)),
    ChildKind LowCardinality(String) CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1))
) ENGINE = ${engine}
PARTITION BY toDate(Timestamp)
ORDER BY ParentKey
TTL toDateTime(Timestamp) + toIntervalDay(2)
SETTINGS index_granularity = 1024, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.scope_edges_mv ${on_cluster}
TO ${db}.scope_edges
AS SELECT
    toStartOfMinute(Timestamp) AS Minute,
    ParentService, Parent, ParentKind, ChildService, Child, ChildKind,
    count() AS Calls,
    countIf(StatusCode IN ('STATUS_CODE_ERROR', 'Error')) AS Errors,
    quantilesBFloat16State(0.5, 0.95, 0.99)(Duration) AS Durations
FROM ${db}.scope_edge_calls
WHERE Matched
GROUP BY Minute, ParentService, Parent, ParentKind, ChildService, Child, ChildKind;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.scope_edge_pending_mv ${on_cluster}
TO ${db}.scope_edge_pending
AS SELECT Timestamp, TraceId, ParentKey, ChildService, Child, ChildKind, StatusCode, Duration
FROM ${db}.scope_edge_calls
WHERE NOT Matched;

INSERT INTO ${db}.scope_edge_calls
SELECT c.Timestamp, c.TraceId, c.ParentKey, p.SpanKey != 0 AS Matched,
       p.ServiceName, p.SpanName, p.SpanKind, c.ServiceName, c.SpanName, c.SpanKind, c.StatusCode, c.Duration
FROM ${db}.scope_spans_by_trace AS c
LEFT JOIN (
    SELECT SpanKey, any(ServiceName) AS ServiceName, any(SpanName) AS SpanName, any(SpanKind) AS SpanKind
    FROM ${db}.scope_spans_by_trace
    GROUP BY SpanKey
) AS p ON c.ParentKey = p.SpanKey
WHERE c.ParentKey != 0
  AND (SELECT count() FROM ${db}.scope_edges) = 0 AND (SELECT count() FROM ${db}.scope_edge_pending) = 0
SETTINGS join_use_nulls = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.scope_edge_children_mv ${on_cluster}
TO ${db}.scope_edge_calls
AS SELECT c.Timestamp AS Timestamp, c.TraceId AS TraceId, c.ParentKey AS ParentKey, p.SpanKey != 0 AS Matched,
          p.ServiceName AS ParentService, p.SpanName AS Parent, p.SpanKind AS ParentKind,
          c.ServiceName AS ChildService, c.SpanName AS Child, c.SpanKind AS ChildKind,
          c.StatusCode AS StatusCode, c.Duration AS Duration
FROM ${db}.scope_spans_by_trace AS c
LEFT JOIN (
    SELECT SpanKey, any(ServiceName) AS ServiceName, any(SpanName) AS SpanName, any(SpanKind) AS SpanKind
    FROM (
        SELECT SpanKey, ServiceName, SpanName, SpanKind FROM ${db}.scope_spans_by_trace
        UNION ALL
        SELECT SpanKey, ServiceName, SpanName, SpanKind
        FROM ${db}.scope_spans_lookup
        WHERE TraceId IN (SELECT TraceId FROM ${db}.scope_spans_by_trace WHERE ParentKey != 0)
          AND SpanKey IN (SELECT ParentKey FROM ${db}.scope_spans_by_trace)
    )
    GROUP BY SpanKey
) AS p ON c.ParentKey = p.SpanKey
WHERE c.ParentKey != 0
SETTINGS join_use_nulls = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.scope_edge_parents_mv ${on_cluster}
TO ${db}.scope_edge_calls
AS SELECT c.Timestamp AS Timestamp, c.TraceId AS TraceId, c.ParentKey AS ParentKey, toUInt8(1) AS Matched,
          p.ServiceName AS ParentService, p.SpanName AS Parent, p.SpanKind AS ParentKind,
          c.ChildService AS ChildService, c.Child AS Child, c.ChildKind AS ChildKind,
          c.StatusCode AS StatusCode, c.Duration AS Duration
FROM (
    SELECT SpanKey, any(ServiceName) AS ServiceName, any(SpanName) AS SpanName, any(SpanKind) AS SpanKind
    FROM ${db}.scope_spans_by_trace
    GROUP BY SpanKey
) AS p
INNER JOIN (
    SELECT Timestamp, TraceId, ParentKey, ChildService, Child, ChildKind, StatusCode, Duration
    FROM ${db}.scope_edge_pending
    WHERE ParentKey IN (SELECT SpanKey FROM ${db}.scope_spans_by_trace)
) AS c ON c.ParentKey = p.SpanKey;

-- The by-time projection of scope_spans_by_trace (ch_005_spans_by_time.sql) served the
-- edge views' joins over a window; nothing reads it any more, and every insert wrote it.
ALTER TABLE ${db}.scope_spans_by_trace ${on_cluster} DROP PROJECTION IF EXISTS by_time;

-- Text search in SQL (the traces list's "text" filter): an n-gram bloom filter of each
-- client span's statement, lower-cased, so a search skips the granules whose statements
-- cannot hold the text instead of reading every span's attribute map (the statement is
-- one entry of it).  Both spellings are indexed as one text (db.query.text, a newline,
-- db.statement); the list's query spells the same expression.  Existing parts gain the
-- index in the background (a mutation); until then they are read as before.
ALTER TABLE ${db}.otel_traces ${on_cluster} ADD INDEX IF NOT EXISTS idx_sql_text
    lowerUTF8(concat(SpanAttributes['db.query.text'], '\n', SpanAttributes['db.statement']))
    TYPE ngrambf_v1(3, 8192, 2, 0) GRANULARITY 1;
ALTER TABLE ${db}.otel_traces ${on_cluster} MATERIALIZE INDEX idx_sql_text;
