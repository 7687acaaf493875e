"""The exit report: what was recorded, and per destination what was delivered and what was not.

Printed to stderr at exit with ``--summary true``::

    scope-otel summary: 20000 spans recorded by 1 process (finished in 10.4 s)
      otlp grpc 127.0.0.1:9: exported 0 of 20000; NOT exported 20000: failed 1024 (UNAVAILABLE: connection refused),
        still queued at exit 18976
      ...

Every figure is the process' own count; nothing is called "exported" that the
backend did not acknowledge (the embedded store's batches are "spooled for
the store writer", which writes them after the program ends).  Whatever
``--summary`` says, a destination that did not get everything gets one line
on stderr (:func:`lost_lines`).

Processes of one ``scope-otel run`` (gunicorn's workers, ``multiprocessing``
children) are summarised once: ``run`` names a folder in
``SCOPE_OTEL_SUMMARY_DIR``; the first process to start claims it, the others
leave their report there when they end, and the first one prints the sum
when it ends (its children have ended by then: servers and pools wait for
theirs).  Without ``scope-otel run`` each process prints its own.  Processes
that started (``multiprocessing`` children, Python programs started from the
run) leave a mark; one that ended without leaving its report (SIGKILL, the
OOM killer, ``os._exit`` in the program) is counted as such, since what it
recorded cannot be known to have been exported.
"""
from __future__ import annotations

import collections
import glob
import json
import os
import shutil
import sys
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor

from scope_otel import notice

DIR_ENV = "SCOPE_OTEL_SUMMARY_DIR"

#: The counts the summary shows besides the per-destination lines, in the order shown: report key ->
#: the words (``{n}`` is the count).  A count is shown when it is not zero; ``scope-otel config``
#: lists them all (:func:`legend`), so this is the one place that says what users are told.
COUNTS: dict[str, str] = {
    "unsampled": "not sampled (never exported, by the sampler's choice): {n}",
    "traces_unsampled": "not recorded: {n} new traces the overhead governor sampled out (to stay within its budget)",
    "calls_unsampled": "not recorded: {n} function calls in traces the overhead governor sampled out",
    "dropped_at_fork": "dropped at fork: {n} spans queued when a process forked without at-fork hooks "
                       "(uWSGI and the like), which cannot be told apart from the parent's",
    "values_truncated": "{n} values truncated (max_value_length)",
    "values_redacted": "{n} values redacted (secrets; the rules: scope-otel config)",
    "internal_errors": "capture errors: {n} (each kind logged once, never raised into the program)",
    "orphan_messages": "messages not linked: {n} sent or received outside any recorded span",
    "handoff_unlinked": "queue puts not linked to their get: {n} (a queue had 10,000 items waiting)",
}

_DROP_REASONS = {
    "dropped_oldest": "queue full, oldest overwritten",
    "dropped_newest": "queue full, new refused",
    "dropped_block_timeout": "queue full, waited block_timeout_ms",
}


class SummaryProcessor(SpanProcessor):
    """Counts finished SDK spans by kind and name for the exit summary."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.traces: set[int] = set()
        self.errors = 0

    def on_start(self, span, parent_context=None) -> None:
        pass

    def on_end(self, span) -> None:
        self.counts[(span.kind.name.lower(), span.name)] += 1
        self.traces.add(span.context.trace_id)
        if span.status.status_code.name == "ERROR":
            self.errors += 1

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# -- one process' report -------------------------------------------------------

def collect(state: dict[str, Any], why: str = "exit", seconds: float = 0.0) -> dict[str, Any]:
    """This process' figures as plain data (summable across processes)."""
    processor = state.get("processor")
    stats: dict[str, Any] = {}
    if processor is not None and callable(getattr(processor, "stats", None)):
        try:
            stats = processor.stats()
        except Exception:  # noqa: BLE001
            stats = {}
    recorded = (stats.get("written", 0) + stats.get("dropped_newest", 0) + stats.get("dropped_block_timeout", 0)
                + stats.get("submitted", 0))  # the governor's own spans go past the ring
    destinations = []
    for dest in state.get("destinations") or []:
        account = dest.account() if callable(getattr(dest, "account", None)) else {}
        if account:
            account.pop("stats", None)
            destinations.append(account)
    counted = state.get("summary")
    report: dict[str, Any] = {
        "pids": [os.getpid()],
        "why": {why: 1},
        "seconds": round(seconds, 2),
        "recorded": recorded,
        "dropped": {label: stats.get(key, 0) for key, label in _DROP_REASONS.items() if stats.get(key, 0)},
        "queued_at_exit": stats.get("queued_at_shutdown", 0),
        "unconverted": stats.get("unconverted", 0),
        "function_spans": stats.get("function_spans", 0),
        "destinations": destinations,
        "governor_changes": stats.get("governor_changes", 0),
        "governor_functions_lowered": stats.get("governor_functions_lowered", 0),
        "governor_budget_pct": stats.get("governor_budget_pct"),
        "governor_peak_cost_pct": stats.get("governor_peak_cost_pct", 0.0),
        "notices": notice.counts(),
        "exporters": list(getattr(state.get("config"), "traces_exporter", ()) or ()),
    }
    # the integrations' own counts (only for integrations the program loaded)
    errors = sys.modules.get("scope_otel.instrumentors._report")
    report["integration_errors"] = dict(errors.stats()) if errors is not None else {}
    handoff = sys.modules.get("scope_otel.instrumentors.handoff")
    report["handoff_unlinked"] = handoff.dropped() if handoff is not None else 0
    main = sys.modules.get("scope_otel.instrument.main")  # what became of the main script's functions
    report["main_script"] = main.status() if main is not None else None
    for key in COUNTS:  # the processor's and runtime's counts the summary tells in words
        report.setdefault(key, stats.get(key, 0))
    if counted is not None:
        report["sdk_spans"] = sum(counted.counts.values())
        report["traces"] = len(counted.traces)
        report["errors"] = counted.errors
        report["top"] = [[kind, name, n] for (kind, name), n in counted.counts.most_common(12)]
    return report


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several processes' reports."""
    out: dict[str, Any] = {"pids": [], "why": collections.Counter(), "seconds": 0.0, "dropped": collections.Counter(),
                           "notices": collections.Counter(), "destinations": {}, "top": collections.Counter(),
                           "integration_errors": collections.Counter()}
    for r in reports:
        out["pids"] += r.get("pids", [])
        out["why"].update(r.get("why", {}))
        out["seconds"] = max(out["seconds"], r.get("seconds", 0.0))
        out["dropped"].update(r.get("dropped", {}))
        out["notices"].update(r.get("notices", {}))
        out["integration_errors"].update(r.get("integration_errors", {}))
        if r.get("governor_budget_pct") is not None:
            out["governor_budget_pct"] = r["governor_budget_pct"]
            out["governor_peak_cost_pct"] = max(out.get("governor_peak_cost_pct", 0.0),
                                                r.get("governor_peak_cost_pct", 0.0))
        for key in ("unreported", "recorded", "queued_at_exit", "unconverted", "function_spans", "governor_changes",
                    "governor_functions_lowered", "sdk_spans", "traces", "errors", *COUNTS):
            if key in r:
                out[key] = out.get(key, 0) + r[key]
        for d in r.get("destinations", []):
            acc = out["destinations"].setdefault(
                d["name"], {"name": d["name"], "word": d["word"], "exported": 0, "failed": collections.Counter(),
                            "queued_at_exit": 0})
            acc["exported"] += d.get("exported", 0)
            acc["failed"].update(d.get("failed", {}))
        for kind, name, n in r.get("top", []):
            out["top"][(kind, name)] += n
        out.setdefault("exporters", r.get("exporters", []))
        if r.get("main_script") and not out.get("main_script"):
            out["main_script"] = r["main_script"]  # the first process' script (children run their own)
    out["destinations"] = list(out["destinations"].values())
    out["top"] = [[k, n_, c] for (k, n_), c in out["top"].most_common(12)]
    return out


def _not_delivered(report: dict[str, Any], dest: dict[str, Any]) -> tuple[int, list[str]]:
    failed = sum(dest.get("failed", {}).values())
    queued = report.get("queued_at_exit", 0)
    dropped = sum(report.get("dropped", {}).values())
    unconverted = report.get("unconverted", 0)
    parts = [f"failed {n} ({reason})" for reason, n in sorted(dest.get("failed", {}).items(), key=lambda x: -x[1])]
    if unconverted:
        parts.append(f"could not be read, converted or redacted {unconverted} (logged)")
    if queued:
        parts.append(f"still queued when the exit deadline passed {queued}")
    if dropped:
        parts.append(f"dropped before export {dropped} ("
                     + ", ".join(f"{label}: {n}" for label, n in report["dropped"].items()) + ")")
    return failed + queued + dropped + unconverted, parts


def lost_lines(report: dict[str, Any]) -> list[str]:
    """One line per destination that did not get everything recorded (empty when all went)."""
    lines = []
    for dest in report.get("destinations", []):
        lost, parts = _not_delivered(report, dest)
        if lost:
            lines.append(f"scope-otel: {lost} of {report.get('recorded', 0)} spans NOT {dest['word']} to "
                         f"{dest['name']}: " + "; ".join(parts))
    return lines


def render(report: dict[str, Any]) -> str:
    """The readable report (see the module docstring)."""
    processes = len(report.get("pids", [])) or 1
    recorded = report.get("recorded", 0)
    why = ", ".join(f"{w}: {n}" if processes > 1 else w for w, n in dict(report.get("why", {})).items())
    lines = [f"scope-otel summary: {recorded} spans recorded by {processes} process"
             f"{'es' if processes > 1 else ''} (ended by {why}; finishing took {report.get('seconds', 0):.1f} s)"]
    if report.get("unreported"):
        lines.append(f"  {report['unreported']} process(es) ended without reporting (SIGKILL, out of memory, or "
                     "os._exit in the program): what they recorded is not counted here, and not known to be exported")
    if not report.get("destinations"):
        lines.append("  destinations: none (traces_exporter = none): nothing was exported")
    for dest in report.get("destinations", []):
        lost, parts = _not_delivered(report, dest)
        line = f"  -> {dest['name']}: {dest['word']} {dest['exported']} of {recorded}"
        if lost:
            line += f"; NOT {dest['word']} {lost}: " + "; ".join(parts)
        lines.append(line)
    drops = report.get("dropped", {})
    lines.append("  capture queue: " + (", ".join(f"{label} {n}" for label, n in drops.items()) or "nothing dropped"))
    if "sdk_spans" in report:
        lines.append(f"  request/SQL/client spans: {report['sdk_spans']} in {report.get('traces', 0)} traces "
                     f"({report.get('errors', 0)} with errors); function spans: {report.get('function_spans', 0)}")
    else:
        lines.append(f"  function spans: {report.get('function_spans', 0)}")
    if report.get("main_script"):
        lines.append("  " + main_script_line(report["main_script"]))
    lines += [f"  {words.format(n=report[key])}" for key, words in COUNTS.items() if report.get(key)]
    if report.get("governor_budget_pct") is not None:
        lines.append(f"  overhead governor: budget {report['governor_budget_pct']:g}% of CPU, peak cost "
                     f"{report.get('governor_peak_cost_pct', 0):g}%, {report.get('governor_changes', 0)} changes, "
                     f"{report.get('governor_functions_lowered', 0)} functions lowered at the end")
    failures = report.get("integration_errors") or {}
    if failures:
        places = ", ".join(f"{where} ×{n}" for where, n in sorted(dict(failures).items()))
        lines.append(f"  integration errors (each logged once, never raised into the program): {places}")
    for kind, name, n in report.get("top", []):
        lines.append(f"  {n:8d}  {kind:8s}  {name}")
    return "\n".join(lines)


def main_script_line(main: dict[str, Any]) -> str:
    """What became of the main script's own functions: how many were instrumented, or why none."""
    if main.get("reason"):
        return f"main script {main['script']}: not instrumented: {main['reason']}"
    n = main.get("functions", 0)
    return f"main script {main['script']} (module {main['module']}): {n} function{'s' if n != 1 else ''} instrumented"


def legend() -> str:
    """What the exit summary counts, in words: for ``scope-otel config``."""
    lines = ["per destination: exported (or spooled for the store writer) of the spans recorded; what was not, "
             "and why: failed (with the exporter's reason), could not be read, converted or redacted, still queued "
             "when the exit deadline passed, dropped before export (" + "; ".join(_DROP_REASONS.values()) + ")"]
    lines += [words.format(n="N") for words in COUNTS.values()]
    lines += ["main script app.py (module app): N functions instrumented, or why not (e.g. the plan does not "
              "include module app)"]
    lines += ["integration errors: N per place (e.g. flask.start), each logged once, never raised into the program",
              "processes of the run that ended without their report (SIGKILL, out of memory, os._exit)"]
    return "\n".join(lines)


# -- once per run ----------------------------------------------------------------

def claim_root(state: dict[str, Any]) -> None:
    """The first process of a ``scope-otel run`` session prints the summary for all."""
    folder = os.environ.get(DIR_ENV)
    if not folder:
        return
    try:
        fd = os.open(os.path.join(folder, "root"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError:
        mark_started()
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    state["summary_root"] = os.getpid()


def mark_started() -> None:
    """Say that this process of the run will report, so a missing report is noticed."""
    folder = os.environ.get(DIR_ENV)
    if folder and os.path.isdir(folder):
        try:
            open(os.path.join(folder, f"{os.getpid()}.started"), "w").close()
        except OSError:
            pass


def _unreported(folder: str, reported: set) -> int:
    """Processes that started, left no report and are gone."""
    count = 0
    for name in os.listdir(folder):
        if not name.endswith(".started"):
            continue
        pid = int(name.split(".")[0])
        if pid in reported:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            count += 1
        except OSError:
            pass  # alive (another user's): still running, not lost
    return count


def publish(state: dict[str, Any], report: dict[str, Any]) -> None:
    """Print the report, or leave it for the session's first process to print with the others'."""
    folder = os.environ.get(DIR_ENV)
    if folder and state.get("summary_root") != os.getpid() and not os.path.isdir(folder):
        # the first process has printed already: helpers that outlive it (multiprocessing's
        # forkserver and resource tracker) recorded nothing worth a second report
        if not report.get("recorded"):
            return
    elif folder and state.get("summary_root") != os.getpid():
        path = os.path.join(folder, f"{os.getpid()}.json")
        try:
            with open(path + ".tmp", "w") as fh:
                json.dump(report, fh)
            os.replace(path + ".tmp", path)
            return
        except OSError:
            pass  # cannot leave it: print it here rather than lose it
    reports = [report]
    if folder and state.get("summary_root") == os.getpid():
        for path in glob.glob(os.path.join(folder, "*.json")):
            try:
                with open(path) as fh:
                    reports.append(json.load(fh))
            except (OSError, ValueError):
                continue
        try:
            lost = _unreported(folder, {pid for r in reports for pid in r.get("pids", [])})
        except OSError:
            lost = 0
        shutil.rmtree(folder, ignore_errors=True)
        if lost:
            report = dict(report, unreported=lost)
            reports[0] = report
    notice.write(render(merge(reports) if len(reports) > 1 else report))
