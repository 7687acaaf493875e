"""Call counter injected by ``scope-otel plan --profile`` (PYTHONPATH bootstrap).

Counts how many times each Python function starts, in this process and in
its threads, and at exit writes ``{"counts": {"module:qualname": n}, ...}``
into ``$SCOPE_OTEL_PROFILE_DIR/counts-<pid>.json``, keyed by real file path
and ``co_qualname`` (a script run as ``__main__`` still matches its file).  Uses ``sys.monitoring``
``PY_START`` on Python 3.12+, else ``sys.setprofile``/``threading.setprofile``.
It also times its own cost per call, so the planner can subtract it from
the measured run time.  Children made by ``fork`` (``multiprocessing``
included) count their own calls and write their own file.  Before 3.12 a generator or coroutine is counted
each time it resumes (an upper bound, so never an underestimate of cost).  Any site ``sitecustomize`` it shadows still runs.
"""
import atexit
import json
import os
import sys
import threading
import time

_OUT = os.environ.get("SCOPE_OTEL_PROFILE_DIR")
_counts = {}
# Callbacks run, counted because sys.setprofile also fires for C calls and
# returns: the counter's own cost is per callback, not per Python call.
_events = [0]
_EVENTS_PER_CALL = 1 if sys.version_info >= (3, 12) else 2  # PY_START | call + return


def _chain_original():
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    mod = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401  the one we shadow, if any
    except ImportError:
        pass
    except Exception as exc:  # the shadowed one failing is not the counter's business
        print(f"scope-otel plan --profile: sitecustomize failed: {exc!r}", file=sys.stderr)
    finally:
        sys.path[:] = saved
        if mod is not None:
            sys.modules["sitecustomize"] = mod


def _install():
    counts = _counts
    if sys.version_info >= (3, 12):
        mon = sys.monitoring
        tool = mon.PROFILER_ID
        try:
            mon.use_tool_id(tool, "scope-otel-plan")
        except ValueError:
            tool = 5
            mon.use_tool_id(tool, "scope-otel-plan")

        def on_start(code, offset):
            try:
                counts[code] += 1
            except KeyError:
                counts[code] = 1

        mon.register_callback(tool, mon.events.PY_START, on_start)
        mon.set_events(tool, mon.events.PY_START)

        def uninstall():
            mon.set_events(tool, 0)
        return uninstall

    events = _events

    def on_event(frame, event, arg):
        events[0] += 1
        if event == "call":
            code = frame.f_code
            try:
                counts[code] += 1
            except KeyError:
                counts[code] = 1

    sys.setprofile(on_event)
    threading.setprofile(on_event)

    def uninstall():
        sys.setprofile(None)
        threading.setprofile(None)
    return uninstall


def _probe(n=20000):
    def f():
        return None
    t0 = time.perf_counter_ns()
    for _ in range(n):
        f()
    return time.perf_counter_ns() - t0


def _write(uninstall, per_call_us, started):
    uninstall()
    try:
        by_file = {}
        total = 0
        per_event_us = per_call_us / _EVENTS_PER_CALL
        for code, n in list(_counts.items()):
            total += n
            if not code.co_filename or code.co_filename.startswith("<"):
                continue
            path = os.path.realpath(code.co_filename)
            # Python 3.10 has no co_qualname: the first line (decorators
            # included) identifies the function instead.
            qualname = getattr(code, "co_qualname", None) or f"@{code.co_firstlineno}"
            per_file = by_file.setdefault(path, {})
            per_file[qualname] = per_file.get(qualname, 0) + n
        events = _events[0] if _EVENTS_PER_CALL == 2 else total
        doc = {"pid": os.getpid(), "argv": sys.argv, "total_calls": total, "events": events,
               "counter_us_per_call": per_call_us, "counter_s": events * per_event_us / 1e6,
               "seconds": time.perf_counter() - started,
               "python": sys.version.split()[0], "by_file": by_file}
        path = os.path.join(_OUT, f"counts-{os.getpid()}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(path + ".tmp", path)
    except Exception as exc:
        print(f"scope-otel plan --profile: cannot write counts: {exc!r}", file=sys.stderr)


def _start():
    started = time.perf_counter()
    bare = min(_probe() for _ in range(3))
    uninstall = _install()
    counted = min(_probe() for _ in range(3))
    per_call_us = max(counted - bare, 0) / 20000 / 1000.0
    _counts.clear()
    atexit.register(_write, uninstall, per_call_us, started)

    def after_fork_in_child():
        # The child counts only its own calls.  A forked child usually leaves
        # through os._exit (multiprocessing does), which skips atexit: in the
        # child only, and only under --profile, os._exit writes the counts first.
        _counts.clear()
        _events[0] = 0
        forked_at = time.perf_counter()
        real_exit = os._exit

        def _exit(code):
            _write(uninstall, per_call_us, forked_at)
            real_exit(code)

        os._exit = _exit

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=after_fork_in_child)


_chain_original()
if _OUT:
    _start()
