"""The trace page of two viewers, page loads alternating: this tree against an older one, same minutes.

    git archive 1dd9eb8 | (mkdir -p /tmp/old && tar -x -C /tmp/old)
    .venv/bin/python bench/ab_ui_trace.py /tmp/old [--loads 11] [--pause 3]

On a shared machine the load moves between two bench runs minutes apart by more
than the difference measured; here both viewers (each its own process and
embedded store holding the same 10,000-span trace of ``bench_ui.make_big_trace``)
are opened in turn, the order swapped every round, so both see the same load.
Rounds are ``--pause`` seconds apart, as a person clicks from page to page.

Times per load, all by the page's own clock (ms from navigation start),
measured the same way for both trees by a script the harness adds to the page:

- *shell*: the page's HTML has arrived; *asked*: the page asks for the trace's data
  (``/api/trace/<id>``); *answered*: its first byte arrives; *data*: all of it has;
- *ready*: the page says its waterfall is drawn and its handlers attached
  (``body[data-ready]``, the old bench's measure);
- *painted*: the first frame after that has been painted and the page's main
  thread is free again (a ``requestAnimationFrame`` and then a task after it);
- *key*: a → key pressed as soon as the page is painted has been handled
  (time travel shows its first step).  This is the target's "interactive".

Prints each side's medians, the paired differences, every load's numbers, the CPU each
load cost the viewer's process (from /proc: the load moves it less than the times) and
how long the page's main thread spent in tasks (Chromium's ``TaskDuration``: wall time
inside tasks, so the load still stretches it).
The first round is a warm-up.  Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

#: What is timed on each load, in the order it happens (the docstring says what each is).
STAGES = ("shell", "asked", "answered", "data", "ready", "painted", "key")
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
#: Added to every page before its own scripts: the same clock for both trees.
WATCH = """
(() => {
  // promises the harness awaits (no polling on the page's main thread while it works)
  const t = window.__scope_bench = {}, done = {};
  t.paintedP = new Promise(r => { done.painted = r; });
  t.keyP = new Promise(r => { done.key = r; });
  new MutationObserver(() => {
    const body = document.body;
    if (body && body.dataset.ready === "1" && t.ready === undefined) {
      t.ready = performance.now();
      requestAnimationFrame(() => setTimeout(() => { t.painted = performance.now(); done.painted(); }, 0));
    }
    const step = document.getElementById("tt-step");
    if (step && t.key === undefined && /^ ?step 1 \\//.test(step.textContent)) { t.key = performance.now(); done.key(); }
  }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
})();
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="an older tree of this repository (git archive COMMIT | tar -x -C DIR)")
    parser.add_argument("--loads", type=int, default=11, help="rounds (each loads both pages once)")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between rounds")
    args = parser.parse_args()
    old = os.path.abspath(args.old)
    link = os.path.join(old, "scope_otel", "schemas")  # its own schema files, not this tree's
    if not os.path.exists(link):
        os.symlink(os.path.join(old, "schemas"), link)
    for folder, _, files in os.walk(os.path.join(HERE, "scope_otel")):  # git archive has no built extensions
        for name in files:
            if name.endswith(".so"):
                target = os.path.join(old, os.path.relpath(os.path.join(folder, name), HERE))
                if not os.path.exists(target) and os.path.isdir(os.path.dirname(target)):
                    shutil.copy2(os.path.join(folder, name), target)
    sys.path.insert(0, os.path.join(HERE, "bench"))
    from bench_ui import ARGS, BIG_TRACE, CHROMIUM
    from playwright.sync_api import sync_playwright

    tmp = tempfile.mkdtemp(prefix="ab-ui-")
    trees = {"old": old, "new": HERE}
    procs = {name: subprocess.Popen([sys.executable, "-c", SERVE, root, os.path.join(tmp, name)], cwd=root)
             for name, root in trees.items()}
    ports: dict[str, int] = {}
    times: dict[str, dict[str, list[float]]] = {name: {k: [] for k in STAGES} for name in trees}
    cpu: dict[str, dict[str, list[float]]] = {name: {"server": [], "page": []} for name in trees}
    load_before = open("/proc/loadavg").read().split()[0]
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
                    time.sleep(args.pause)
                    context = browser.new_context(viewport={"width": 1400, "height": 900})
                    context.add_init_script(WATCH)
                    page = context.new_page()
                    cdp = context.new_cdp_session(page)
                    cdp.send("Performance.enable")
                    cpu0 = _cpu_ms(procs[name].pid)
                    errors: list[str] = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.goto(f"http://127.0.0.1:{ports[name]}/trace/{BIG_TRACE}", wait_until="commit")
                    page.evaluate("() => window.__scope_bench.paintedP.then(() => true)")
                    page.keyboard.press("ArrowRight")
                    page.evaluate("() => window.__scope_bench.keyP.then(() => true)")
                    t = page.evaluate("""() => {
                        const api = performance.getEntriesByType("resource").filter(e => e.name.includes("/api/trace/"))[0];
                        const t = window.__scope_bench;
                        return Object.assign({ ready: t.ready, painted: t.painted, key: t.key }, {
                            shell: performance.getEntriesByType("navigation")[0].responseEnd,
                            asked: api.startTime, answered: api.responseStart, data: api.responseEnd });
                    }""")
                    server_cpu = _cpu_ms(procs[name].pid) - cpu0
                    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                    context.close()
                    if errors:
                        raise RuntimeError(f"{name}: {errors}")
                    if i:
                        for k in STAGES:
                            times[name][k].append(float(t[k]))
                        cpu[name]["server"].append(server_cpu)
                        cpu[name]["page"].append(metrics["TaskDuration"] * 1000)
            browser.close()
    finally:
        for proc in procs.values():
            proc.terminate()
    load_after = open("/proc/loadavg").read().split()[0]
    print(f"load average {load_before} before, {load_after} after; {args.loads - 1} paired loads, "
          f"{args.pause:g} s apart")
    for name, by in times.items():
        print(f"{name} ({trees[name]}): " + ", ".join(
            f"{k} median {statistics.median(v):.0f} ms (min {min(v):.0f}, max {max(v):.0f})" for k, v in by.items()))
    for k in STAGES:
        diffs = [n - o for n, o in zip(times["new"][k], times["old"][k])]
        print(f"paired new - old, {k}: median {statistics.median(diffs):+.0f} ms, new faster in "
              f"{sum(d < 0 for d in diffs)} of {len(diffs)}")
    for name, by in times.items():
        print(f"{name} key, each load: " + " ".join(f"{v:.0f}" for v in by["key"]))
    for name, by in cpu.items():
        print(f"{name} per load: viewer process CPU median {statistics.median(by['server']):.0f} ms, "
              f"page's main thread in tasks (to the key handled) median {statistics.median(by['page']):.0f} ms")
    return 0


def _cpu_ms(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in ms."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
