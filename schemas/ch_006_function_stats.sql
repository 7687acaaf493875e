-- scope_function_stats: what the program's own functions did, counted in every
-- run under `scope-otel run` whatever the plan recorded in full, so that
-- `scope-otel plan --from-store` plans from real traffic.  One row per
-- instrumented function per process per window (about half a minute, and one
-- at exit or SIGTERM); a function registered but not called in a window has a
-- row with Calls = 0, so a window says which functions it watched.
--
--   WindowStart, Timestamp  the window (Timestamp: its end)
--   ProcessId, HostName     who counted it (gunicorn workers are one row each)
--   Module, Qualname        the function (module:qualname, as a plan names it)
--   Level                   the level it was recorded at (boundaries | full)
--   Records                 calls recorded (spans made)
--   Calls                   calls estimated: Records weighted by the sampling in
--                           force (the plan's rate, the governor's trace ratio)
--   Errors                  recorded calls that raised
--   DurationNs              their summed duration (inclusive of callees)
--   OnRequest               recorded calls made under a framework's or the
--                           program's span (a request, a task, a message)
--   Entries                 of those, calls made right under that span: the first
--                           of the program's recorded functions the request
--                           reached (its handler)
--   ProgramCpuNs            the process' CPU time in the window less what
--                           recording cost it (same value on each of its rows)
--   RecordingCpuNs          what recording cost the process in the window: every
--                           record (function calls and other spans) at the cost
--                           the overhead governor measured per record (the hot
--                           path plus the export workers' CPU), and the CPU of
--                           the store writer the process started (after its
--                           start-up)
--   WindowRecords           records of every function in the window
--   OtherSpans              other spans recorded in the window (requests, SQL,
--                           messages): their cost is the floor of any plan
--
-- Placeholders: see ch_001_traces.sql; ${ttl_events} is '' or a TTL on Timestamp.

CREATE TABLE IF NOT EXISTS ${db}.scope_function_stats ${on_cluster} (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    WindowStart DateTime64(9) CODEC(Delta, ZSTD(1)),
    ServiceName String CODEC(ZSTD(1)),
    HostName String CODEC(ZSTD(1)),
    ProcessId UInt32 CODEC(ZSTD(1)),
    Module String CODEC(ZSTD(1)),
    Qualname String CODEC(ZSTD(1)),
    Level String CODEC(ZSTD(1)),
    Records UInt64 CODEC(ZSTD(1)),
    Calls Float64 CODEC(ZSTD(1)),
    Errors UInt64 CODEC(ZSTD(1)),
    DurationNs UInt64 CODEC(ZSTD(1)),
    OnRequest UInt64 CODEC(ZSTD(1)),
    Entries UInt64 CODEC(ZSTD(1)),
    ProgramCpuNs UInt64 CODEC(ZSTD(1)),
    RecordingCpuNs UInt64 CODEC(ZSTD(1)),
    WindowRecords UInt64 CODEC(ZSTD(1)),
    OtherSpans UInt64 CODEC(ZSTD(1))
) ENGINE = ${engine}
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, Module, Qualname, Timestamp)
${ttl_events}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, min_bytes_for_wide_part = ${wide_part_bytes};
