"""Transparency harness: real libraries' own test suites, instrumented at ``full`` vs not.

    .venv/bin/python bench/transparency.py [--quick] [--workdir DIR] [--only NAME]

For each library below, the sdist is fetched from PyPI (``pip download
--no-binary :all: --no-deps``) into a throwaway directory and unpacked; its
test suite runs twice from the unpacked source, with the same pytest:

* ``plain``: nothing of scope-otel loaded;
* ``full``: a pytest plugin (``-p``, so before any test or library module is
  imported) calls ``scope_otel.instrument.apply(Plan.from_globs(GLOBS,
  "full"))`` for the library's own modules (its test modules are left to
  pytest's assertion rewriter).

Each test's outcome is read from pytest's JUnit XML; the runs must agree test
by test (pass/fail/error/skip), not only in the totals.  A library may list
tests that measure the recording itself rather than the library (more-itertools:
one that bounds the process's allocations); such a test failing at full is
printed with its reason and the table says "yes, N explained"; any other
difference, or one of those differing otherwise, fails the run.  The plugin also
reports how many modules were rewritten, how many functions registered and
how many calls reached the capture ring, so a vacuous "identical" (nothing
instrumented) shows.  ``--quick`` skips the slowest suite (more-itertools).
Exit status 1 when any library's outcomes differ.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Library:
    name: str
    version: str
    globs: tuple[str, ...]        # the library's modules (what gets instrumented)
    pytest_args: tuple[str, ...]  # run from the unpacked sdist
    slow: bool = False
    #: tests that measure the recording itself, not the library: test id -> why it differs at full
    #: (reported beside the table, never silently; any other difference fails the run)
    explained: tuple[tuple[str, str], ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


LIBRARIES = (
    Library("toolz", "1.2.0", ("toolz", "toolz.*"), ("toolz/tests",)),
    Library("six", "1.17.0", ("six",), ("test_six.py",)),
    # test_idna_properties needs hypothesis, which scope-otel does not depend on
    Library("idna", "3.20", ("idna", "idna.*"), ("tests", "--ignore", "tests/test_idna_properties.py")),
    Library("more-itertools", "11.2.1", ("more_itertools", "more_itertools.*"), ("tests",), slow=True, explained=(
        ("tests.test_more.SeekableTest::test_repeated_zero_cache_peek_has_bounded_memory",
         "asserts that 20,000 calls leave < 256 KB allocated (tracemalloc); at full the capture ring holds "
         "the last 4,096 recorded calls until an exporter drains them (1.5 MB here, bounded by ring_size)"),
    )),
)

PLUGIN = '''
"""Loaded with -p before anything else: instrument the library under test at full."""
import atexit
import json
import os

from scope_otel.plan import Plan
import scope_otel.instrument as instrument
from scope_otel.instrument import hook


class _LibraryOnly:
    """The glob plan, minus test modules (pytest rewrites those for its asserts)."""

    def __init__(self, plan):
        self.plan, self.hash = plan, plan.hash

    def wants_module(self, name):
        return ".tests" not in name and not name.startswith("test") and self.plan.wants_module(name)

    def for_function(self, module, qualname):
        return self.plan.for_function(module, qualname)


_hook = instrument.apply(_LibraryOnly(Plan.from_globs(os.environ["SCOPE_TRANSPARENCY_GLOBS"].split(","), "full")))


def _report():
    from scope_otel.capture import runtime

    stats = runtime.stats()
    with open(os.environ["SCOPE_TRANSPARENCY_STATS"], "w") as fh:
        json.dump({
            "rewritten": sorted(set(_hook.rewritten)),
            "failed": _hook.failed,
            "functions": stats.get("functions_registered"),
            "internal_errors": stats.get("internal_errors"),
            "calls": runtime.current_ring().counters()["written"],
        }, fh)


atexit.register(_report)
'''


def fetch(lib: Library, workdir: str) -> str:
    """Download and unpack ``lib``'s sdist under ``workdir``; returns the source directory."""
    sdists = os.path.join(workdir, "sdists")
    os.makedirs(sdists, exist_ok=True)
    def matching() -> list[str]:
        prefix = f"{lib.name}_{lib.version}.".lower().replace("-", "_")
        return [f for f in os.listdir(sdists) if f.lower().replace("-", "_").startswith(prefix) and f.endswith(".tar.gz")]

    if not matching():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                        "-d", sdists, lib.requirement], check=True)
    archive = os.path.join(sdists, matching()[0])
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        target = os.path.join(workdir, "src")
        if not os.path.isdir(os.path.join(target, top)):
            tar.extractall(target, filter="data")
    return os.path.join(workdir, "src", top)


def run_suite(lib: Library, source: str, workdir: str, instrumented: bool) -> dict:
    tag = "full" if instrumented else "plain"
    xml_path = os.path.join(workdir, f"{lib.name}-{tag}.xml")
    stats_path = os.path.join(workdir, f"{lib.name}-{tag}.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOPE_OTEL_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([source, workdir])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # both runs compile from source: a fair comparison
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml_path}", *lib.pytest_args]
    if instrumented:
        env["SCOPE_TRANSPARENCY_GLOBS"] = ",".join(lib.globs)
        env["SCOPE_TRANSPARENCY_STATS"] = stats_path
        cmd[3:3] = ["-p", "scope_transparency_plugin"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=source, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    outcomes = read_junit(xml_path) if os.path.exists(xml_path) else {}
    stats = {}
    if instrumented and os.path.exists(stats_path):
        with open(stats_path) as fh:
            stats = json.load(fh)
    return {"outcomes": outcomes, "seconds": elapsed, "returncode": proc.returncode, "stats": stats,
            "tail": proc.stdout.strip().splitlines()[-1:] + proc.stderr.strip().splitlines()[-3:]}


def read_junit(path: str) -> dict[str, str]:
    """``{test id: passed|failed|error|skipped}`` from a JUnit XML report."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = ("failed" if "failure" in kinds else "error" if "error" in kinds
                   else "skipped" if "skipped" in kinds else "passed")
        out[test_id] = outcome
    return out


def counts(outcomes: dict[str, str]) -> str:
    values = list(outcomes.values())
    return "/".join(str(values.count(k)) for k in ("passed", "failed", "error", "skipped"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the slowest suite")
    parser.add_argument("--workdir", help="where sdists are fetched and unpacked (default: a temp dir)")
    parser.add_argument("--only", action="append", help="run only this library (repeatable)")
    args = parser.parse_args(argv)
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="scope-otel-transparency-"))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "scope_transparency_plugin.py"), "w") as fh:
        fh.write(PLUGIN)
    libraries = [lib for lib in LIBRARIES
                 if (not args.quick or not lib.slow) and (not args.only or lib.name in args.only)]

    header = ("library", "tests", "plain p/f/e/s", "full p/f/e/s", "identical", "modules rewritten",
              "functions", "calls recorded", "plain s", "full s", "ratio")
    rows, differ = [], False
    for lib in libraries:
        source = fetch(lib, workdir)
        plain = run_suite(lib, source, workdir, instrumented=False)
        full = run_suite(lib, source, workdir, instrumented=True)
        diffs = {t for t in set(plain["outcomes"]) | set(full["outcomes"])
                 if plain["outcomes"].get(t) != full["outcomes"].get(t)}
        explained = {t: why for t, why in lib.explained
                     if t in diffs and plain["outcomes"][t] == "passed" and full["outcomes"].get(t) == "failed"}
        same = bool(plain["outcomes"]) and not diffs - set(explained)
        differ |= not same
        stats = full["stats"]
        rows.append((
            lib.requirement, str(len(plain["outcomes"])), counts(plain["outcomes"]), counts(full["outcomes"]),
            ("yes" if not explained else f"yes, {len(explained)} explained") if same else "NO",
            str(len(stats.get("rewritten", []))), str(stats.get("functions", "?")),
            str(stats.get("calls", "?")), f"{plain['seconds']:.1f}", f"{full['seconds']:.1f}",
            f"{full['seconds'] / plain['seconds']:.2f}x",
        ))
        for test_id, why in sorted(explained.items()):
            print(f"  {lib.name}: {test_id}: plain=passed full=failed, explained: {why}", file=sys.stderr)
        if not same:
            for test_id in sorted(diffs - set(explained)):
                a, b = plain["outcomes"].get(test_id), full["outcomes"].get(test_id)
                print(f"  {lib.name}: {test_id}: plain={a} full={b}", file=sys.stderr)
            print(f"  {lib.name} full run: {full['tail']}", file=sys.stderr)
        if stats.get("failed"):
            print(f"  {lib.name}: not rewritten: {stats['failed']}", file=sys.stderr)

    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    print(f"\nworkdir: {workdir}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
