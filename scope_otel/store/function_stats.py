"""The ``scope_function_stats`` table: per-function statistics of every run, written and read.

Each process run under ``scope-otel run`` writes, about every half minute and
when it ends, one row per instrumented function of the program's own code
(``schemas/ch_006_function_stats.sql`` says what each column means).
:func:`encode` turns those rows into a Native block for the spool, the way
span batches travel (so a gunicorn worker never opens chDB); :func:`observed`
sums them per function for ``scope-otel plan --from-store``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Sequence


TABLE = "scope_function_stats"
COLUMNS: tuple[tuple[str, str], ...] = (
    ("Timestamp", "DateTime64(9)"),
    ("WindowStart", "DateTime64(9)"),
    ("ServiceName", "String"),
    ("HostName", "String"),
    ("ProcessId", "UInt32"),
    ("Module", "String"),
    ("Qualname", "String"),
    ("Level", "String"),
    ("Records", "UInt64"),
    ("Calls", "Float64"),
    ("Errors", "UInt64"),
    ("DurationNs", "UInt64"),
    ("OnRequest", "UInt64"),
    ("Entries", "UInt64"),
    ("ProgramCpuNs", "UInt64"),
    ("RecordingCpuNs", "UInt64"),
    ("WindowRecords", "UInt64"),
    ("OtherSpans", "UInt64"),
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode("utf-8", "backslashreplace")
    return _varint(len(data)) + data


_FIXED = {"DateTime64(9)": "<q", "UInt32": "<I", "UInt64": "<Q", "Float64": "<d"}


def encode(rows: Sequence[tuple]) -> list[tuple[str, list[str], bytes, int]]:
    """``rows`` (tuples in :data:`COLUMNS` order; times as ns since the epoch) as spool parts.

    A ClickHouse Native block written here, without clickhouse-connect: a process writes its last
    statistics as it ends (a gunicorn worker within its graceful timeout), when importing that
    library could take longer than the rest of the exit."""
    if not rows:
        return []
    out = [_varint(len(COLUMNS)), _varint(len(rows))]
    for i, (name, kind) in enumerate(COLUMNS):
        out.append(_string(name) + _string(kind))
        values = [row[i] for row in rows]
        fmt = _FIXED.get(kind)
        if fmt is not None:
            out.append(struct.pack(f"<{len(values)}{fmt[1]}", *values))
        else:  # String
            out.extend(_string(str(v)) for v in values)
    return [(TABLE, [name for name, _ in COLUMNS], b"".join(out), len(rows))]


@dataclass
class Observed:
    """What the store holds about one function over the windows asked for."""

    key: str                 # module:qualname
    calls: float             # estimated calls (sampling weighed in)
    records: int             # calls recorded
    errors: int
    duration_ns: int         # summed duration of the recorded calls
    on_request: int          # recorded calls under a request (or another span)
    entries: int             # of those, right under the span: the request's handler
    program_cpu_ns: int      # the program's CPU time in the windows that watched this function
    windows: int             # windows (process x half minute) that watched it
    processes: int
    level: str               # the level it was last recorded at

    @property
    def calls_per_cpu_s(self) -> float:
        """Calls per second of the program's CPU time: what a plan's cost is priced on."""
        return self.calls / (self.program_cpu_ns / 1e9) if self.program_cpu_ns > 0 else 0.0

    @property
    def mean_us(self) -> float:
        return self.duration_ns / self.records / 1000.0 if self.records else 0.0


@dataclass
class Totals:
    """The windows themselves: the program's CPU time and what recording cost it."""

    program_cpu_ns: int
    recording_cpu_ns: int
    records: int             # function records
    other_spans: int         # requests, SQL, ...: recorded whatever the plan
    windows: int
    processes: int
    first: Any
    last: Any
    services: list


def _where(since_s: float | None, service: str | None) -> tuple[str, dict]:
    clauses, params = [], {}
    if since_s is not None:
        clauses.append("Timestamp >= now64(9) - toIntervalMillisecond({since_ms:UInt64})")
        params["since_ms"] = int(since_s * 1000)
    if service:
        clauses.append("ServiceName = {service:String}")
        params["service"] = service
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def observed(store: Any, since_s: float | None = None, service: str | None = None) -> tuple[list[Observed], Totals]:
    """Per-function sums over the windows of the last ``since_s`` seconds (all when None) of
    ``service`` (all when None), from a :class:`scope_otel.store.Store`."""
    where, params = _where(since_s, service)
    per_function = store.query(
        f"SELECT Module, Qualname, sum(Calls), sum(Records), sum(Errors), sum(DurationNs), sum(OnRequest), sum(Entries), "
        f"sum(ProgramCpuNs), count(), uniqExact(HostName, ProcessId), argMax(Level, Timestamp) "
        f"FROM {TABLE}{where} GROUP BY Module, Qualname ORDER BY Module, Qualname", params).rows
    functions = [Observed(f"{m}:{q}", float(c), int(r), int(e), int(d), int(o), int(en), int(p), int(w), int(n), lvl)
                 for m, q, c, r, e, d, o, en, p, w, n, lvl in per_function]
    # one row per window: a window repeats its totals on each of its functions' rows
    windows = store.query(
        f"SELECT sum(p), sum(rc), sum(wr), sum(os), count(), uniqExact(h, pid), min(ws), max(ts), "
        f"groupUniqArray(s) FROM (SELECT HostName AS h, ProcessId AS pid, WindowStart AS ws, any(Timestamp) AS ts, "
        f"any(ProgramCpuNs) AS p, any(RecordingCpuNs) AS rc, any(WindowRecords) AS wr, any(OtherSpans) AS os, "
        f"any(ServiceName) AS s FROM {TABLE}{where} GROUP BY h, pid, ws)", params).rows
    p, rc, wr, os_, n, procs, first, last, services = windows[0] if windows else (0,) * 8 + ([],)
    totals = Totals(int(p or 0), int(rc or 0), int(wr or 0), int(os_ or 0), int(n or 0), int(procs or 0), first,
                    last, sorted(services or []))
    return functions, totals
