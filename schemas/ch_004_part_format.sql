-- Which parts are written in the compact format (all columns in one file)
-- rather than the wide one (two files per column and substream: otel_traces
-- makes ~130 files per part).
--
-- ${wide_part_bytes} is ClickHouse's own default (10 MiB) on servers, and
-- 256 MiB in the embedded store, where every INSERT of the store writer
-- (up to 64 MiB of rows) and every merge of them stays compact: on ext4
-- without a journal, allocating inodes next to recently deleted ones (parts
-- replaced by merges) cost the writer about a quarter of its CPU time
-- (bench/results/clickhouse.md).  Merged parts above the limit are wide.
--
-- Placeholders: see ch_001_traces.sql.

ALTER TABLE ${db}.otel_traces ${on_cluster} MODIFY SETTING min_bytes_for_wide_part = ${wide_part_bytes};
ALTER TABLE ${db}.otel_traces_trace_id_ts ${on_cluster} MODIFY SETTING min_bytes_for_wide_part = ${wide_part_bytes};
ALTER TABLE ${db}.scope_events ${on_cluster} MODIFY SETTING min_bytes_for_wide_part = ${wide_part_bytes};
ALTER TABLE ${db}.scope_spans_by_trace ${on_cluster} MODIFY SETTING min_bytes_for_wide_part = ${wide_part_bytes};
