"""A full disk loses nothing that is already queued: the store on a real 20 MB
tmpfs fills up, batches wait in the spool instead of being set aside as
rejected, and once there is room again they are written.

The fault is real: a tmpfs mounted for the test (the test is skipped, with
the reason, where mounting is not permitted).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.procs import clean_env, run, tool

GEN = """
import sys
from opentelemetry import trace
tracer = trace.get_tracer("gen")
n = int(sys.argv[1])
for i in range(n):
    with tracer.start_as_current_span("op", attributes={"i": i, "payload": "x" * 64}):
        pass
print("made", n)
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs: grow it with ``mount -o remount,size=...``."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _grow(disk, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def _count(store: str, cwd: str, full: bool = False) -> int:
    shown = subprocess.run([tool("scope-otel"), "query", "--store", store, "--format", "csv",
                            "SELECT count() FROM otel.otel_traces"],
                           capture_output=True, text=True, cwd=cwd, env=clean_env(), timeout=300)
    if full and shown.returncode != 0:
        # a store the full disk did not even let the writer create cannot answer: it says so in one line
        assert "NOT_ENOUGH_SPACE" in shown.stderr and len(shown.stderr.strip().splitlines()) == 1, shown.stderr
        return 0
    assert shown.returncode == 0, shown.stderr[-3000:]
    return int(shown.stdout.split()[-1])


def _queued(spool: str) -> int:
    return len([n for n in os.listdir(spool) if n.endswith(".batch")]) if os.path.isdir(spool) else 0


def test_batches_wait_on_a_full_disk_and_are_written_once_there_is_room(small_disk, tmp_path):
    (tmp_path / "gen.py").write_text(GEN)
    store = str(small_disk / "store")
    spool = os.path.join(store, "scope-spool")
    made = 200_000
    result = run([tool("scope-otel"), "run", "--store", store, "--", sys.executable, "gen.py", str(made)],
                 clean_env(), cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]

    # the store refused for want of space: nothing is set aside as invalid
    rejected = os.path.join(spool, "rejected")
    assert not os.path.isdir(rejected) or not os.listdir(rejected), sorted(os.listdir(rejected))[:5]
    log = os.path.join(store, "scope-drainer.log")
    text = open(log, encoding="utf-8", errors="replace").read() if os.path.exists(log) else ""
    assert "--- Logging error ---" not in text, text[-3000:]
    waiting = _queued(spool)
    assert waiting > 0  # kept for later

    before = _count(store, str(tmp_path), full=True)  # still full: what fitted is there, the rest waits
    assert _queued(spool) > 0
    _grow(small_disk, "400m")
    after = _count(store, str(tmp_path))  # opening the store writes the queue
    assert _queued(spool) == 0
    assert not os.path.isdir(rejected) or not os.listdir(rejected)
    recovered = after - before
    print(f"\nfull disk: {made} spans made, {before} stored while full, {recovered} recovered after the "
          f"disk was freed ({after} in all, {made - after} dropped and counted)")
    assert recovered > 0
