"""How an instrumented process ends: every way out flushes, within a bound, and says what it lost.

Three ways out are covered, each running :func:`finish` once per process:

- a normal exit (``atexit``);
- ``SIGTERM`` (``docker stop``, ``kill``, ``Pool.terminate()``) when the program
  has no handler of its own: Python's default is to die at once, losing
  everything queued.  scope-otel's handler flushes (in a helper thread it waits
  for at most the bound below: the signal may have interrupted a step holding a
  lock the flush needs), then restores the default and sends the signal again,
  so the process still dies *by* SIGTERM (same exit status, same behaviour for
  whoever waits on it).  A SIGTERM the main thread missed (it landed elsewhere,
  or just before a blocking call) is delivered to it again by a watcher thread.
  A program that installs its own handler replaces this one and is left alone;
  an ignored SIGTERM stays ignored;
- the end of a ``multiprocessing`` child (fork, spawn or forkserver; ``Process``,
  ``Pool``, ``ProcessPoolExecutor``), which leaves through ``os._exit`` and never
  runs ``atexit``: a ``multiprocessing.util.Finalize`` registered in each child
  flushes it.

The flush takes at most the export timeout (``exporter_otlp_timeout``, 10 s by
default) plus about 2 s, whatever is queued and however dead the backend:
the span processor aborts the exporter when the time is up.  What was not
exported is then said in one line on stderr (how many, why).  A SIGKILL
cannot be caught: what it loses is never reported as exported.
"""
from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from typing import Any

from scope_otel import notice

#: Time beyond the export timeout that finishing may take (worker abort grace,
#: exporter close, summary), the promise documented in the README.
SLACK_S = 2.0

_finishing_pid = 0  # the process running (or done with) finish()
_finished_pid = 0  # the process done with finish()
_sigterm_pending = False  # SIGTERM came while finish() ran: re-raise it when done
_finish_lock = threading.RLock()  # re-entered by the SIGTERM handler interrupting finish()


def install(state: dict[str, Any], config: Any) -> None:
    """Hook :func:`finish` into every way this process (and its children) can end."""
    state["exit_budget_s"] = config.exporter_otlp_timeout / 1000.0
    atexit.register(finish, state)
    _install_sigterm(state)
    _install_multiprocessing(state)


def finish(state: dict[str, Any], why: str = "exit") -> None:
    """Flush and stop the pipeline within the exit budget, then report; once per process."""
    if not _claim():
        return
    try:
        _finish(state, why)
    finally:
        _done()


def _claim() -> bool:
    """True for the one caller per process that is to run :func:`_finish`."""
    global _finishing_pid, _sigterm_pending
    with _finish_lock:
        if _finishing_pid == os.getpid():
            return False
        _finishing_pid = os.getpid()
        _sigterm_pending = False
    return True


def _done() -> None:
    global _finished_pid
    _finished_pid = os.getpid()
    if _sigterm_pending:  # a SIGTERM came meanwhile: the process ends by it now
        if threading.current_thread() is threading.main_thread():
            _die_by_sigterm()
        else:  # only the main thread may restore the default: its handler sees we are done
            os.kill(os.getpid(), signal.SIGTERM)


def _finish(state: dict[str, Any], why: str) -> None:
    from scope_otel.launcher import summary

    started = time.monotonic()
    budget = float(state.get("exit_budget_s", 10.0))
    processor = state.get("processor")
    if processor is not None:
        try:
            processor.shutdown(int(budget * 1000))
        except Exception as exc:  # noqa: BLE001 - the program is ending: say it, do not raise
            notice.write(f"scope-otel: flushing at {why} failed: {type(exc).__name__}: {exc}")
    from scope_otel.launcher import observe

    observe.flush(state)  # the last window of per-function statistics: the processor has drained
    provider = state.get("provider")
    if provider is not None:
        try:
            provider.shutdown()  # the other processors; ours is already stopped
        except Exception:  # noqa: BLE001
            pass
    report = summary.collect(state, why=why, seconds=time.monotonic() - started)
    _say_what_was_lost(report)
    if state.get("summary") is not None:
        summary.publish(state, report)


def _say_what_was_lost(report: dict[str, Any]) -> None:
    """One line per destination that did not get everything (how many, why)."""
    from scope_otel.launcher.summary import lost_lines

    for line in lost_lines(report):
        notice.write(line)


# -- SIGTERM -------------------------------------------------------------------

def _install_sigterm(state: dict[str, Any]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the program's (or its parent's SIG_IGN): left alone
        signal.signal(signal.SIGTERM, _make_sigterm_handler(state))
    except (ValueError, OSError):
        return
    if hasattr(os, "register_at_fork") and hasattr(signal, "pthread_sigmask"):
        # Threads that libraries start inside fork() (gRPC's at-fork handlers start
        # its event-engine threads in the child) must not take the child's SIGTERM:
        # Python runs the handler in the main thread only, so a SIGTERM landing on
        # them would leave a main thread blocked in C (a Pool worker's sem_wait) hung.
        os.register_at_fork(before=_mask_around_fork, after_in_parent=_unmask_after_fork,
                            after_in_child=_after_fork_watch)
    _watch_signals()


def _after_fork_watch() -> None:
    _unmask_after_fork()
    _watch_signals(forked=True)


_watch_fds: tuple[int, int] | None = None


def _watch_signals(forked: bool = False) -> None:
    """Re-deliver a SIGTERM that the main thread missed.

    Python's C-level handler only sets a flag; a SIGTERM arriving just before
    the main thread blocks in C (a Pool worker entering ``sem_wait``) is never
    acted on.  The handler also writes the signal number to the wakeup fd: a
    watcher thread reading it sends SIGTERM to the main thread again if
    scope-otel's handler has not started within half a second, which
    interrupts the blocking call.  Only when the program has no wakeup fd of
    its own (asyncio sets one and takes over).
    """
    global _watch_fds
    try:
        if forked and _watch_fds is not None:
            for fd in _watch_fds:
                os.close(fd)  # the parent's pipe: its watcher is not in this process
            _watch_fds = None
            signal.set_wakeup_fd(-1)
        r, w = os.pipe()
        os.set_blocking(w, False)
        old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        if old != -1:
            signal.set_wakeup_fd(old)  # the program's: left alone
            os.close(r)
            os.close(w)
            return
        _watch_fds = (r, w)
    except (ValueError, OSError, AttributeError):
        return
    threading.Thread(target=_watch, args=(r,), name="scope-otel-signals", daemon=True).start()


def _rearm_watch() -> None:
    """Point the wakeup fd at the watcher again if something reset it since the fork.

    A forkserver child is forked by a server that then clears the wakeup fd
    (``multiprocessing.forkserver._serve_one``) before running the target: the
    watcher started at fork would never hear of a SIGTERM, and a Pool worker
    that took one just before blocking on the task queue's lock (which
    ``Pool.terminate()`` keeps for good) would wait there forever.  A wakeup fd
    the program set in the meantime is left alone.
    """
    if _watch_fds is None or threading.current_thread() is not threading.main_thread():
        return
    try:
        old = signal.set_wakeup_fd(_watch_fds[1], warn_on_full_buffer=False)
        if old not in (-1, _watch_fds[1]):
            signal.set_wakeup_fd(old)  # the program's: left alone
    except (ValueError, OSError):
        pass


def _watch(r: int) -> None:
    try:
        mask_signals()
    except (OSError, ValueError):
        pass
    main = threading.main_thread().ident
    while True:
        try:
            data = os.read(r, 64)
        except OSError:
            return
        if not data:
            return
        if signal.SIGTERM in data:
            time.sleep(0.5)
            if _finishing_pid != os.getpid() and main is not None:
                try:
                    signal.pthread_kill(main, signal.SIGTERM)
                except (OSError, ValueError):
                    return


_fork_masks = threading.local()


def mask_signals() -> Any:
    """Block SIGTERM/SIGINT in this thread (threads it starts inherit it); returns the old mask."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def _mask_around_fork() -> None:
    try:
        _fork_masks.old = mask_signals()
    except (OSError, ValueError):
        _fork_masks.old = None


def _unmask_after_fork() -> None:
    old = getattr(_fork_masks, "old", None)
    if old is not None:
        _fork_masks.old = None
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _make_sigterm_handler(state: dict[str, Any]):
    def _scope_otel_sigterm(signum: int, frame: Any) -> None:
        global _sigterm_pending
        if _finished_pid == os.getpid():
            _die_by_sigterm()  # flushed already (a child past its finalizer): nothing to wait for
        if _finishing_pid == os.getpid():
            # finish() is running (this handler interrupted it: a multiprocessing
            # child ending as Pool.terminate() signals it, or a second SIGTERM):
            # let it complete, then die
            _sigterm_pending = True
            return
        if not _claim():
            _sigterm_pending = True  # finish() began meanwhile (another thread): it ends the process
            return
        try:
            _finish_within_bound(state)
        finally:
            _die_by_sigterm()

    return _scope_otel_sigterm


def _finish_within_bound(state: dict[str, Any]) -> None:
    """Run the flush in a helper thread and wait for it at most the exit bound.

    The handler runs in the main thread wherever the signal found it, possibly
    inside a lock the flush needs (a notice being counted, the span processor's
    own, as a Python handler can run between any two bytecodes): flushing right
    there would wait for itself forever, where the program without scope-otel
    would have died at once.  Past the bound the process dies anyway, and says so.
    """
    bound = float(state.get("exit_budget_s", 10.0)) + SLACK_S

    def run(helping: bool = True) -> None:
        global _finished_pid
        if helping:
            try:
                mask_signals()  # a second SIGTERM is for the main thread's handler
            except (OSError, ValueError):
                pass
        try:
            _finish(state, "SIGTERM")
        finally:
            _finished_pid = os.getpid()

    helper = threading.Thread(target=run, name="scope-otel-sigterm", daemon=True)
    try:
        helper.start()
    except RuntimeError:  # the interpreter is ending (3.12.0-1 start no thread then): flush here
        run(helping=False)
        return
    helper.join(bound)
    if helper.is_alive():
        notice.write(f"scope-otel: the flush at SIGTERM did not end within {bound:g} s (the signal interrupted "
                     "a step holding a lock the flush needs); spans it had not exported are lost")


def _die_by_sigterm() -> None:
    """End the way the program would have without scope-otel: killed by SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def is_ours(handler: Any) -> bool:
    """True when ``handler`` is scope-otel's SIGTERM handler."""
    return getattr(handler, "__name__", "") == "_scope_otel_sigterm"


# -- multiprocessing children --------------------------------------------------

def _after_fork_in_child() -> None:
    global _finish_lock, _sigterm_pending
    _finish_lock = threading.RLock()  # another thread may have held it at fork time
    _sigterm_pending = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _ChildHook:
    """Registered with ``multiprocessing.util.register_after_fork`` (kept alive here).

    ``Process._bootstrap`` clears the finalizers a child inherited, then runs
    the after-fork hooks, then the target, then the finalizers, then
    ``os._exit``: so each child registers its own finalizer from here.
    """

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def __call__(self, _obj: Any) -> None:
        from multiprocessing import util

        from scope_otel.launcher import summary

        if self.state.get("summary") is not None:
            summary.mark_started()
        _rearm_watch()
        # low priority: after the program's own finalizers (a Pool's, a Queue's feeder)
        util.Finalize(None, finish, args=(self.state,), kwargs={"why": "child exit"}, exitpriority=-100)


_child_hook: _ChildHook | None = None


def _install_multiprocessing(state: dict[str, Any]) -> None:
    global _child_hook
    from multiprocessing import util

    _child_hook = _ChildHook(state)
    util.register_after_fork(_child_hook, _child_hook)
