"""What ch_007's materialized views cost an INSERT: the same spans into a store of an older tree and of this one.

    git archive e648b8e | (mkdir -p /tmp/old && tar -x -C /tmp/old)
    .venv/bin/python bench/bench_ui_inserts.py /tmp/old [--spans 1000000] [--rounds 2]

Each round writes ``--spans`` spans of ``bench_ui.make_big_store`` (this tree's
generator, in INSERTs of 100,000) into a fresh embedded store with the older
tree's schema, then into one with this tree's, each in its own process, and
prints the seconds.  Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITE = """
import sys, tempfile, time
root, generator, spans = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, root)
from scope_otel.store import open_store, migrations  # the tree's own package, before the generator runs
import importlib.util
spec = importlib.util.spec_from_file_location("generator", generator)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert migrations.schema_dir().startswith(root), migrations.schema_dir()
store = open_store("chdb://" + tempfile.mkdtemp() + "/s", "otel", wait_s=60)
store.query("SELECT 1")
t0 = time.perf_counter()
module.make_big_store(store, spans, per_insert=100_000)
print(f"{time.perf_counter() - t0:.1f}")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="an older tree of this repository (git archive COMMIT | tar -x -C DIR)")
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    old = os.path.abspath(args.old)
    link = os.path.join(old, "scope_otel", "schemas")  # its own schema files, not this tree's
    if not os.path.exists(link):
        os.symlink(os.path.join(old, "schemas"), link)
    generator = os.path.join(HERE, "bench", "bench_ui.py")
    for rnd in range(args.rounds):
        for name, root in (("old", old), ("new", HERE)):
            out = subprocess.run([sys.executable, "-c", WRITE, root, generator, str(args.spans)],
                                 capture_output=True, text=True, cwd=root)
            took = out.stdout.strip() or ("failed: " + out.stderr.strip()[-300:])
            print(f"round {rnd} {name} ({root}): {args.spans:,} spans in {took} s, "
                  f"load {open('/proc/loadavg').read().split()[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
