"""The main script's own functions are recorded (``python app.py``), and the script behaves exactly as it
does without scope-otel: each case runs the same script plainly and under ``scope-otel run`` and compares
what a user sees (stdout, stderr, exit status)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from scope_otel.plan import PLAN_VERSION
from tests.support.procs import clean_env, tool

APP = '''\
"""The app's docstring."""
import atexit
import inspect
import pickle
import sys
import threading
import warnings


class Cart:
    def add(self, x):
        return x + 1


def work(x):
    return Cart().add(x) * 2


def describe():
    main = sys.modules["__main__"]
    names = sorted(k for k in globals() if not k.startswith("_@scope_"))
    print("argv", sys.argv, "path0", sys.path[0], "orig_argv", sys.orig_argv[1:])
    print("main", main.__dict__ is globals(), __name__, __file__, __spec__, __builtins__, __doc__)
    print("loader", type(__loader__).__name__, __loader__.name, __loader__.path, globals().get("__cached__", "-"))
    print("names", names)
    print("pickle", pickle.loads(pickle.dumps(work)) is work, type(pickle.loads(pickle.dumps(Cart()))) is Cart)
    print("names of code", work.__module__, work.__qualname__, Cart.add.__qualname__, work.__code__.co_firstlineno)
    print("source", inspect.getsource(work), inspect.getsourcelines(Cart.add)[1])
    print("locals", sorted(locals()))


def warn():
    warnings.warn("careful", UserWarning)


def fail(kind):
    if kind == "raise":
        raise ValueError("the app failed")
    if kind == "exit3":
        sys.exit(3)
    if kind == "exitmsg":
        sys.exit("goodbye")
    if kind == "interrupt":
        raise KeyboardInterrupt


def late():
    print("atexit ran", work(1))


def background():
    import time

    time.sleep(0.2)
    print("thread finished", work(2))


atexit.register(late)

if __name__ == "__main__":
    describe()
    warn()
    threading.Thread(target=background).start()
    print("result", work(3))
    if len(sys.argv) > 1:
        fail(sys.argv[1])
'''


@pytest.fixture
def app(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def _split(stderr: str) -> tuple[str, str]:
    """The program's own stderr, and scope-otel's summary printed after it at exit."""
    head, sep, tail = stderr.partition("scope-otel summary:")
    return head, sep + tail


def _both(folder, args: list[str], scope: list[str] | None = None, stdin: str | None = None):
    """The script run plainly, then under ``scope-otel run`` (into an embedded store in ``folder``)."""
    env = clean_env()
    plain = subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True,
                           input=stdin, timeout=60)
    scoped = subprocess.run([tool("scope-otel"), "run", "--store", str(folder / "store"), "--summary", "true",
                             *(scope or []), "--", sys.executable, *args],
                            cwd=folder, env=env, capture_output=True, text=True, input=stdin, timeout=90)
    return plain, scoped


def _spans(folder, module: str = "app") -> dict[str, int]:
    """Function spans of ``module`` in the store, by name."""
    sql = (f"SELECT SpanName, count() AS n FROM otel_traces WHERE SpanAttributes['code.namespace'] = '{module}' "
           "GROUP BY SpanName")
    out = subprocess.run([tool("scope-otel"), "query", "--store", str(folder / "store"), "--format", "json", sql],
                         capture_output=True, text=True, timeout=120, env=clean_env())
    assert out.returncode == 0, out.stderr
    return {r["SpanName"]: int(r["n"]) for r in map(json.loads, out.stdout.splitlines())}


def _same(plain, scoped) -> str:
    """Compare what the user sees; return scope-otel's summary."""
    own_stderr, summary = _split(scoped.stderr)
    assert scoped.stdout == plain.stdout
    assert own_stderr == plain.stderr
    assert scoped.returncode == plain.returncode
    return summary


def test_the_main_scripts_functions_are_recorded_and_everything_it_shows_is_unchanged(app):
    # the namespace's one difference, as for every rewritten module: the probes, named `_@scope_*` (which no
    # source can spell); the script prints its names without them
    plain, scoped = _both(app, ["app.py"], ["--instrument", "app", "--level", "full"])
    summary = _same(plain, scoped)
    assert plain.returncode == 0 and "thread finished 6" in plain.stdout and "atexit ran 4" in plain.stdout
    assert "pickle True True" in plain.stdout and "app.py:33: UserWarning: careful" in plain.stderr
    assert "main script app.py (module app): 7 functions instrumented" in summary, summary
    spans = _spans(app)
    # describe, warn, work x3 (main, thread, atexit), Cart.add x3, background, late
    assert spans == {"describe": 1, "warn": 1, "work": 3, "Cart.add": 3, "background": 1, "late": 1}, spans


@pytest.mark.parametrize("kind", ["raise", "exit3", "exitmsg", "interrupt"])
def test_an_uncaught_exception_or_exit_ends_the_script_as_it_would(app, kind):
    # the embedded store's exit path turns an uncaught KeyboardInterrupt's death by SIGINT into exit
    # status 1, whatever is instrumented (the xfail below says why); without a destination the script's own is seen
    extra = ["--traces_exporter", "none"] if kind == "interrupt" else []
    plain, scoped = _both(app, ["app.py", kind], ["--instrument", "app", *extra])
    summary = _same(plain, scoped)
    expected = {"raise": 1, "exit3": 3, "exitmsg": 1, "interrupt": -signal.SIGINT}[kind]
    assert plain.returncode == expected
    if kind in ("raise", "interrupt"):
        assert plain.stderr.count('File "') >= 2 and "scope_otel" not in scoped.stderr.split("scope-otel summary")[0]
    assert "main script app.py (module app): 7 functions instrumented" in summary, summary


def test_an_uncaught_keyboard_interrupt_ends_by_sigint_with_the_embedded_store(app):
    # scope-otel's exit work must run no exec(): CPython's PyRun_String forgets the unhandled
    # KeyboardInterrupt (a plain program doing exec('x = 1') in an atexit handler exits 1 too)
    plain, scoped = _both(app, ["app.py", "interrupt"], ["--level", "off"])
    assert scoped.returncode == plain.returncode == -signal.SIGINT


def test_python_dash_i_runs_the_instrumented_script_then_the_prompt(app):
    plain, scoped = _both(app, ["-i", "app.py"], ["--instrument", "app"], stdin="print('typed', work(10))\n")
    assert "typed 22" in plain.stdout
    assert scoped.stdout == plain.stdout and scoped.returncode == plain.returncode == 0
    assert "main script app.py (module app): 7 functions instrumented" in scoped.stderr


def test_zero_configuration_records_the_main_script(app):
    result = subprocess.run([tool("scope-otel"), "run", "--store", str(app / "store"), "--summary", "true",
                             "--log_level", "info", "--", sys.executable, "app.py"],
                            cwd=app, env=clean_env(), capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert "no plan: recording the program's own code (app) at boundaries" in result.stderr
    assert _spans(app)["work"] == 3


def test_a_script_inside_a_package_is_named_as_the_planner_names_it(tmp_path):
    from scope_otel.instrument.own import module_name

    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "cli.py").write_text("")
    assert module_name(str(tmp_path / "shop" / "cli.py")) == "shop.cli"
    assert module_name(str(tmp_path / "app.py")) == "app"


def test_the_summary_says_why_the_named_script_recorded_nothing(app):
    (app / "lib.py").write_text("def f():\n    return 1\n")
    plain, scoped = _both(app, ["app.py"], ["--instrument", "lib"])
    summary = _same(plain, scoped)
    assert "function spans: 0" in summary
    assert "main script app.py: not instrumented: the plan does not include module app" in summary, summary


def test_a_compiled_main_script_runs_uninstrumented_and_says_so(app):
    import py_compile

    py_compile.compile(str(app / "app.py"), str(app / "app.pyc"), doraise=True)
    plain, scoped = _both(app, ["app.pyc"], ["--instrument", "app"])
    own_stderr, summary = _split(scoped.stderr)
    assert scoped.stdout == plain.stdout and scoped.returncode == plain.returncode == 0
    assert own_stderr == "scope-otel: the main script app.pyc runs uninstrumented: it is compiled code (.pyc), not source\n" \
        + plain.stderr
    assert "main script app.pyc: not instrumented: it is compiled code (.pyc), not source" in summary


def test_level_off_or_an_empty_plan_leaves_the_script_alone(app):
    (app / "empty.plan.json").write_text(json.dumps({"version": PLAN_VERSION, "functions": {}}))
    for flags in (["--level", "off"], ["--plan", "empty.plan.json"]):
        plain, scoped = _both(app, ["app.py"], flags)
        summary = _same(plain, scoped)
        assert "function spans: 0" in summary and "main script" not in summary, summary


def test_a_module_run_with_dash_m_is_recorded(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text(APP)
    plain, scoped = _both(tmp_path, ["-m", "pkg.mod"], ["--instrument", "pkg.*"])
    # known, as for every module the import hook rewrites: __spec__.loader and __loader__ are its loader
    for result in (plain, scoped):
        result.stdout = "".join(line for line in result.stdout.splitlines(True)
                                if not line.startswith(("main ", "loader ")))
    _same(plain, scoped)
    assert plain.returncode == 0, plain.stderr
    assert _spans(tmp_path, "pkg.mod")["work"] == 3


def test_a_script_without_the_py_suffix_is_recorded_when_named(app):
    (app / "tool").write_text(APP)
    plain, scoped = _both(app, ["tool"], ["--instrument", "tool"])
    summary = _same(plain, scoped)
    assert "main script tool (module tool): 7 functions instrumented" in summary, summary


POOL = '''\
import multiprocessing as mp
import sys


def square(x):
    return x * x


if __name__ == "__main__":
    mp.set_start_method(sys.argv[1])
    with mp.Pool(2) as pool:
        print(sum(pool.map(square, range(8))))
'''


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_the_scripts_functions_run_by_multiprocessing_children_are_recorded(tmp_path, method):
    # spawn and forkserver children run the script again as __mp_main__; fork children inherit it
    (tmp_path / "app.py").write_text(POOL)
    plain, scoped = _both(tmp_path, ["app.py", method], ["--instrument", "app"])
    _same(plain, scoped)
    assert plain.stdout == "140\n"
    assert _spans(tmp_path) == {"square": 8}
