-- scope_spans_by_trace: a slim copy of otel_traces ordered by trace id, kept
-- by a materialized view, so everything that walks one trace (call tree,
-- error path, causal order) reads a primary-key range instead of scanning
-- otel_traces, whose order (service, span name, time) suits analytics.
-- SpanKey / ParentKey (cityHash64 of trace id and span / parent id, 0 for
-- none) let the edge views join on integers instead of hashing strings at
-- query time.
-- It fills from every insert into otel_traces, the Collector's included.
-- Rows already in otel_traces are copied once when this migration runs
-- (spans inserted in the instant between that copy and the view's creation
-- stay in otel_traces only).
--
-- Placeholders: see ch_001_traces.sql.

CREATE TABLE IF NOT EXISTS ${db}.scope_spans_by_trace ${on_cluster} (
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Hlc String CODEC(ZSTD(1)),
    SpanKey UInt64 CODEC(ZSTD(1)),
    ParentKey UInt64 CODEC(ZSTD(1))
) ENGINE = ${engine}
PARTITION BY toDate(Timestamp)
ORDER BY (TraceId, SpanId)
${ttl_traces}
SETTINGS index_granularity = 2048, ttl_only_drop_parts = 1;

INSERT INTO ${db}.scope_spans_by_trace
SELECT
    TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Timestamp, Duration, StatusCode,
    StatusMessage, SpanAttributes['scope.hlc'] AS Hlc,
    cityHash64(TraceId, SpanId) AS SpanKey,
    if(ParentSpanId = '', 0, cityHash64(TraceId, ParentSpanId)) AS ParentKey
FROM ${db}.otel_traces
WHERE (SELECT count() FROM ${db}.scope_spans_by_trace) = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.scope_spans_by_trace_mv ${on_cluster}
TO ${db}.scope_spans_by_trace
AS SELECT
    TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Timestamp, Duration, StatusCode,
    StatusMessage, SpanAttributes['scope.hlc'] AS Hlc,
    cityHash64(TraceId, SpanId) AS SpanKey,
    if(ParentSpanId = '', 0, cityHash64(TraceId, ParentSpanId)) AS ParentKey
FROM ${db}.otel_traces;
