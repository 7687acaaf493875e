"""Measured call counts: ``scope-otel plan --profile -- CMD ...``.

:func:`run_profile` runs ``CMD`` with a call counter injected through
``PYTHONPATH`` (``bootstrap/sitecustomize.py``; ``sys.monitoring`` on 3.12+,
``sys.setprofile`` before), so every Python process the command starts
counts its function calls and writes them out at exit, keyed by real file
path and qualname (so a script run as ``__main__`` matches its module).
For the analysed files it also samples what capturing each function's
arguments costs (``repr`` of every non-plain argument, one call in 16):
:meth:`Profile.arg_cost_for` feeds the cost of level ``full``.  Those reprs
run the program's own ``__repr__`` methods, as capture at ``full`` would; a
repr with side effects (a lazy query set) has them during profiling too.  The counts of all
processes are summed into one :class:`Profile`, which is saved as JSON
(``--counts-out``, by default next to the plan) and can be reused with
``--counts FILE`` without running the command again.

The run time the budget is measured against is the CPU time of the
command's processes (user + system, all threads; ``RUSAGE_CHILDREN``) in a
first run without the counter (its output is discarded).  With
``--no-baseline-run`` (a command that must not run twice) it is the counted
run's CPU time minus the counter's estimated cost, which tends to leave
part of the counter in.  CPU time, not wall time: it does not grow when
other programs share the machine, and for a program that mostly waits it
makes the budget stricter, never looser.
"""
from __future__ import annotations

import glob
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

#: Put first on ``PYTHONPATH`` of the profiled command: its ``sitecustomize`` is the call counter.
_COUNTER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")


@dataclass
class Profile:
    by_file: dict = field(default_factory=dict)  # real file path -> {qualname: calls}
    wall_s: float = 0.0
    cpu_s: float = 0.0
    counter_s: float = 0.0
    plain_cpu_s: float = 0.0   # CPU of a run without the counter, when one was made
    arg_us: dict = field(default_factory=dict)   # real path -> {qualname: [samples, total µs]}
    processes: int = 0
    returncode: int = 0
    command: list = field(default_factory=list)

    @property
    def baseline_us(self) -> float:
        """The command's own CPU time (µs): measured plain, else counter cost removed."""
        if self.plain_cpu_s > 0:
            return self.plain_cpu_s * 1e6
        spent = self.cpu_s or self.wall_s
        return max(spent - self.counter_s, spent * 0.1) * 1e6

    def counts_for(self, functions: dict) -> dict[str, float]:
        """Calls of each analysed function (``key -> FunctionInfo``), 0 if never seen."""
        resolved: dict = {}
        out = {}
        for key, info in functions.items():
            path = resolved.get(info.file)
            if path is None:
                path = resolved[info.file] = os.path.realpath(info.file)
            per_file = self.by_file.get(path, {})
            n = per_file.get(info.qualname)
            if n is None:  # counted on Python 3.10: keyed by first line and name
                n = per_file.get(_key310(info), 0)
            out[key] = float(n)
        return out

    def arg_cost_for(self, functions: dict) -> dict[str, float]:
        """Measured µs per call to repr the arguments, for sampled analysed functions."""
        out = {}
        for key, info in functions.items():
            per_file = self.arg_us.get(os.path.realpath(info.file), {})
            sampled = per_file.get(info.qualname) or per_file.get(_key310(info))
            if sampled and sampled[0] > 0:
                out[key] = float(sampled[1]) / float(sampled[0])
        return out

    def meta(self) -> dict:
        return {"command": self.command, "wall_s": round(self.wall_s, 6), "cpu_s": round(self.cpu_s, 6),
                "plain_cpu_s": round(self.plain_cpu_s, 6),
                "counter_s": round(self.counter_s, 4), "processes": self.processes,
                "returncode": self.returncode,
                "functions_seen": sum(len(v) for v in self.by_file.values())}

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"profile": self.meta(), "by_file": self.by_file, "arg_us": self.arg_us},
                      fh, indent=0, sort_keys=True)


class ProfileError(Exception):
    """The counts file is unreadable or the command could not run."""


def load_profile(path: str) -> Profile:
    """Read counts saved by :meth:`Profile.save`."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        meta = doc.get("profile", {})
        by_file = {str(path): {str(q): float(n) for q, n in per_file.items()}
                   for path, per_file in doc["by_file"].items()}
        arg_us = {str(path): {str(q): [float(v[0]), float(v[1])] for q, v in per_file.items()}
                  for path, per_file in doc.get("arg_us", {}).items()}
        return Profile(by_file=by_file, arg_us=arg_us, wall_s=float(meta.get("wall_s", 0.0)),
                       cpu_s=float(meta.get("cpu_s", 0.0)),
                       plain_cpu_s=float(meta.get("plain_cpu_s", 0.0)),
                       counter_s=float(meta.get("counter_s", 0.0)),
                       processes=int(meta.get("processes", 0)),
                       returncode=int(meta.get("returncode", 0)),
                       command=list(meta.get("command", [])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProfileError(f"{path}: not a scope-otel counts file ({exc})") from None


def _put_first_on_path(env: dict, folder: str) -> None:
    """Put ``folder`` (a start-up folder with a ``sitecustomize``) first on ``env``'s ``PYTHONPATH``, once."""
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != folder]
    env["PYTHONPATH"] = os.pathsep.join([folder] + rest)


def _cpu_of(run) -> tuple[float, object]:
    """(CPU seconds of the child processes ``run()`` waited for, what it returned)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), result


def run_profile(command: list[str], *, env: dict | None = None, cwd: str | None = None,
                timeout: float | None = None, baseline_run: bool = True,
                files: list[str] | None = None) -> Profile:
    """Run ``command`` under the call counter and gather the counts of every process.

    With ``baseline_run`` the command first runs once without the counter,
    and the CPU time of that run is the baseline.  Calls of functions defined in ``files`` also get the cost of
    capturing their arguments sampled.
    """
    if not command:
        raise ProfileError("--profile needs a command after '--'")
    plain_cpu = 0.0
    if baseline_run:
        try:
            plain_cpu = _cpu_of(lambda: subprocess.run(command, env=env, cwd=cwd, timeout=timeout,
                                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))[0]
        except (OSError, subprocess.SubprocessError) as exc:
            raise ProfileError(f"cannot run {command[0]!r}: {exc}") from None
    out_dir = tempfile.mkdtemp(prefix="scope-otel-profile-")
    child_env = dict(os.environ if env is None else env)
    child_env["SCOPE_OTEL_PROFILE_DIR"] = out_dir
    if files:
        listing = os.path.join(out_dir, "files.txt")
        with open(listing, "w", encoding="utf-8") as fh:
            fh.writelines(os.path.realpath(f) + "\n" for f in files)
        child_env["SCOPE_OTEL_PROFILE_FILES"] = listing
    _put_first_on_path(child_env, _COUNTER_DIR)
    started = time.perf_counter()
    try:
        cpu, proc = _cpu_of(lambda: subprocess.run(command, env=child_env, cwd=cwd, timeout=timeout))
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProfileError(f"cannot run {command[0]!r}: {exc}") from None
    wall = time.perf_counter() - started
    profile = Profile(wall_s=wall, cpu_s=cpu, plain_cpu_s=plain_cpu, returncode=proc.returncode,
                      command=list(command))
    for path in sorted(glob.glob(os.path.join(out_dir, "counts-*.json"))):
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
            os.unlink(path)
        except (OSError, ValueError):
            continue
        profile.processes += 1
        if "counter_s" in doc:  # per callback, C calls included
            profile.counter_s += doc["counter_s"]
        else:
            profile.counter_s += doc.get("total_calls", 0) * doc.get("counter_us_per_call", 0.0) / 1e6
        for path, per_file in doc.get("by_file", {}).items():
            merged = profile.by_file.setdefault(path, {})
            for qualname, n in per_file.items():
                merged[qualname] = merged.get(qualname, 0) + n
        for path, per_file in doc.get("arg_us", {}).items():
            merged = profile.arg_us.setdefault(path, {})
            for qualname, (samples, total) in per_file.items():
                old = merged.get(qualname, [0, 0.0])
                merged[qualname] = [old[0] + samples, old[1] + total]
    shutil.rmtree(out_dir, ignore_errors=True)
    return profile


def _key310(info) -> str:
    """How the counter names a function on Python 3.10, which has no ``co_qualname``."""
    return f"@{info.first_line}:{info.name}"

