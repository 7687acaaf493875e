"""Call counter injected by ``scope-otel plan --profile`` (PYTHONPATH bootstrap).

Counts how many times each Python function starts, in this process and in
its threads, and at exit writes ``{"by_file": {path: {qualname: n}}, ...}``
into ``$SCOPE_OTEL_PROFILE_DIR/counts-<pid>.json``, keyed by real file path
and ``co_qualname`` (a script run as ``__main__`` still matches its file).
Uses ``sys.monitoring`` ``PY_START`` on Python 3.12+, else
``sys.setprofile``/``threading.setprofile``.

For functions of the files listed in ``$SCOPE_OTEL_PROFILE_FILES`` (the
analysed tree) one call in 16 also times ``repr()`` of its arguments, which
is what capturing them at level ``full`` costs (``"arg_us"``).  It times its
own cost per callback, so the planner can tell it from the program's.
Children made by ``fork`` (``multiprocessing`` included) count their own
calls and write their own file.  Before 3.12 a generator or coroutine is
counted each time it resumes (an upper bound, never an underestimate of
cost).  Any site ``sitecustomize`` it shadows still runs.
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
# Functions of the analysed files get the cost of capturing their arguments
# sampled (1 call in _SAMPLE_EVERY): the repr the capture runtime would
# build at level full.  code -> [samples, total ns]
_SAMPLE_EVERY = 16
_argcost = {}
_watched = {}   # code -> bool, decided once per code object


def _watched_files():
    listing = os.environ.get("SCOPE_OTEL_PROFILE_FILES")
    if not listing:
        return frozenset()
    try:
        with open(listing, encoding="utf-8") as fh:
            return frozenset(line.rstrip("\n") for line in fh if line.strip())
    except OSError:
        return frozenset()


_FILES = _watched_files()
_PLAIN = (int, str, float, bool, type(None))


def _sample_args(code, frame):
    """Time repr() of the arguments the capture runtime would repr (not self/cls)."""
    watched = _watched.get(code)
    if watched is None:
        watched = _watched[code] = bool(_FILES) and os.path.realpath(code.co_filename) in _FILES
    if not watched or frame is None:
        return
    flags = code.co_flags
    n = code.co_argcount + code.co_kwonlyargcount + bool(flags & 4) + bool(flags & 8)
    names = code.co_varnames[:n]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    spent = 0
    values = frame.f_locals
    clock = time.perf_counter_ns
    for name in names:
        value = values.get(name)
        if type(value) in _PLAIN:
            continue
        t0 = clock()
        try:
            repr(value)
        except Exception:
            pass
        spent += clock() - t0
    record = _argcost.get(code)
    if record is None:
        _argcost[code] = [1, spent]
    else:
        record[0] += 1
        record[1] += spent


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

        getframe = sys._getframe

        def on_start(code, offset):
            n = counts.get(code, 0) + 1
            counts[code] = n
            if n % _SAMPLE_EVERY == 1 and _FILES:
                _sample_args(code, getframe(1))

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
            n = counts.get(code, 0) + 1
            counts[code] = n
            if n % _SAMPLE_EVERY == 1 and _FILES:
                _sample_args(code, frame)

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
        arg_us = {}
        total = 0
        per_event_us = per_call_us / _EVENTS_PER_CALL
        for code, n in list(_counts.items()):
            total += n
            if not code.co_filename or code.co_filename.startswith("<"):
                continue
            path = os.path.realpath(code.co_filename)
            # Python 3.10 has no co_qualname: the first line (decorators
            # included) and the name identify the function instead (the line
            # alone is shared with the module's code, or a lambda on the def line)
            qualname = getattr(code, "co_qualname", None) or f"@{code.co_firstlineno}:{code.co_name}"
            per_file = by_file.setdefault(path, {})
            per_file[qualname] = per_file.get(qualname, 0) + n
            sampled = _argcost.get(code)
            if sampled:
                arg_us.setdefault(path, {})[qualname] = [sampled[0], sampled[1] / 1000.0]
        events = _events[0] if _EVENTS_PER_CALL == 2 else total
        doc = {"pid": os.getpid(), "argv": sys.argv, "total_calls": total, "events": events,
               "counter_us_per_call": per_call_us, "counter_s": events * per_event_us / 1e6,
               "seconds": time.perf_counter() - started,
               "python": sys.version.split()[0], "by_file": by_file, "arg_us": arg_us}
        path = os.path.join(_OUT, f"counts-{os.getpid()}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(path + ".tmp", path)
    except Exception as exc:
        print(f"scope-otel plan --profile: cannot write counts: {exc!r}", file=sys.stderr)


def _write_on_sigterm(uninstall, per_call_us, started):
    """A server is usually stopped with SIGTERM, whose default action skips atexit: while the
    program keeps that default, the counts are written first and the signal then acts as it would."""
    import signal

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_term(signum, frame):
        if signal.getsignal(signal.SIGTERM) is on_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _write(uninstall, per_call_us, started)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):  # not the main thread, or no signals here
        pass


def _start():
    started = time.perf_counter()
    bare = min(_probe() for _ in range(3))
    uninstall = _install()
    counted = min(_probe() for _ in range(3))
    per_call_us = max(counted - bare, 0) / 20000 / 1000.0
    _counts.clear()
    atexit.register(_write, uninstall, per_call_us, started)
    _write_on_sigterm(uninstall, per_call_us, started)

    def after_fork_in_child():
        # The child counts only its own calls.  A forked child usually leaves
        # through os._exit (multiprocessing does), which skips atexit: in the
        # child only, and only under --profile, os._exit writes the counts first.
        _counts.clear()
        _argcost.clear()
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
