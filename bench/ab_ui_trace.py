"""The trace page of two viewers, page loads alternating: this tree against an older one, same minutes.

    git archive e648b8e | (mkdir -p /tmp/old && tar -x -C /tmp/old)
    .venv/bin/python bench/ab_ui_trace.py /tmp/old [--loads 11]

On a shared machine the load moves between two bench runs minutes apart by more
than the difference measured; here both viewers (each its own process and
embedded store holding the same 10,000-span trace of ``bench_ui.make_big_trace``)
are opened in turn, the order swapped every round, so both see the same load.
Prints each side's median time from navigation to the page reporting ready, and
the paired difference.  The first round is a warm-up.  Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVE = """
import sys, tempfile
root, portfile = sys.argv[1], sys.argv[2]
sys.path[:0] = [root, root + "/bench"]
from bench_ui import make_big_trace
from scope_otel.store import open_store
from scope_otel.ui.server import ViewerServer
store = open_store("chdb://" + tempfile.mkdtemp() + "/s", "otel", wait_s=60)
make_big_trace(store, 10000)
server = ViewerServer(store, port=0)
open(portfile, "w").write(str(server.server_address[1]))
server.serve_forever()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="an older tree of this repository (git archive COMMIT | tar -x -C DIR)")
    parser.add_argument("--loads", type=int, default=11, help="rounds (each loads both pages once)")
    args = parser.parse_args()
    old = os.path.abspath(args.old)
    link = os.path.join(old, "scope_otel", "schemas")  # its own schema files, not this tree's
    if not os.path.exists(link):
        os.symlink(os.path.join(old, "schemas"), link)
    sys.path.insert(0, os.path.join(HERE, "bench"))
    from bench_ui import ARGS, BIG_TRACE, CHROMIUM
    from playwright.sync_api import sync_playwright

    tmp = tempfile.mkdtemp(prefix="ab-ui-")
    trees = {"old": old, "new": HERE}
    procs = {name: subprocess.Popen([sys.executable, "-c", SERVE, root, os.path.join(tmp, name)], cwd=root)
             for name, root in trees.items()}
    ports: dict[str, int] = {}
    ready: dict[str, list[float]] = {name: [] for name in trees}
    try:
        for name in trees:
            path = os.path.join(tmp, name)
            while not (os.path.exists(path) and open(path).read()):
                time.sleep(0.5)
            ports[name] = int(open(path).read())
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for i in range(args.loads):
                for name in (("old", "new") if i % 2 == 0 else ("new", "old")):
                    context = browser.new_context(viewport={"width": 1400, "height": 900})
                    page = context.new_page()
                    page.goto(f"http://127.0.0.1:{ports[name]}/trace/{BIG_TRACE}", wait_until="commit")
                    page.wait_for_selector("body[data-ready='1']", timeout=120_000)
                    if i:
                        ready[name].append(float(page.evaluate("() => Number(document.body.dataset.readyMs)")))
                    context.close()
            browser.close()
    finally:
        for proc in procs.values():
            proc.terminate()
    load = open("/proc/loadavg").read().split()[0]
    for name, times in ready.items():
        print(f"{name} ({trees[name]}): median {statistics.median(times):.0f} ms, "
              f"min {min(times):.0f}, max {max(times):.0f}, n={len(times)}, load {load}")
    diffs = [n - o for n, o in zip(ready["new"], ready["old"])]
    print(f"paired new - old: median {statistics.median(diffs):+.0f} ms, new faster in "
          f"{sum(d < 0 for d in diffs)} of {len(diffs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
