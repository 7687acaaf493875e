-- A projection of scope_spans_by_trace ordered by start time, holding only
-- what the call-graph edge views read, so a graph over a time window (the
-- viewer asks for the last hour first) reads that window's rows instead of
-- scanning the day partitions of a table ordered by trace id.  ClickHouse
-- picks it by itself for queries that filter on Timestamp; answers are the
-- same with or without it.  Existing parts are rewritten with the projection
-- in the background (a mutation); until then they are read as before.
--
-- Placeholders: see ch_001_traces.sql.

ALTER TABLE ${db}.scope_spans_by_trace ${on_cluster} ADD PROJECTION IF NOT EXISTS by_time (
    SELECT Timestamp, SpanKey, ParentKey, ServiceName, SpanName, SpanKind, StatusCode, Duration
    ORDER BY Timestamp
);
ALTER TABLE ${db}.scope_spans_by_trace ${on_cluster} MATERIALIZE PROJECTION by_time;
