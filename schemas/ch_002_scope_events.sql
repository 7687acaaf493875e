-- scope_events: what happened inside a function span, one row per fact, keyed
-- by trace and span id so it joins otel_traces.  Exploded by the exporter from
-- the capture contract's span attributes (scope.arg.<name>, scope.return) and
-- span events (exception, scope.state_change, scope.send, scope.recv,
-- scope.suspend, scope.resume).
--
--   Kind   arg | return | exception | state_change | send | recv | suspend | resume
--   Name   argument name | '' | exception type | target | channel
--   Value  repr | repr | exception message | new value | message id
--   Seq    order of the fact inside its span
--   Hlc    the span's scope.hlc (hybrid logical clock), '' when absent
--
-- Placeholders: see ch_001_traces.sql; ${ttl_events} is '' or a TTL on Timestamp.

CREATE TABLE IF NOT EXISTS ${db}.scope_events ${on_cluster} (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Function String CODEC(ZSTD(1)),
    Kind LowCardinality(String) CODEC(ZSTD(1)),
    Name String CODEC(ZSTD(1)),
    Value String CODEC(ZSTD(1)),
    Seq UInt32 CODEC(ZSTD(1)),
    Hlc String CODEC(ZSTD(1)),
    Attributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    INDEX idx_kind Kind TYPE set(16) GRANULARITY 1,
    INDEX idx_name Name TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_value Value TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ${engine}
PARTITION BY toDate(Timestamp)
ORDER BY (TraceId, SpanId, Seq)
${ttl_events}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;
