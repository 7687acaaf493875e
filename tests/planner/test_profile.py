"""``--profile``: real call counts from every process of a command, threads included."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from scope_otel.planner.analysis import analyse
from scope_otel.planner.measure.profile import ProfileError, load_profile, run_profile

MAIN = """
    import subprocess
    import sys
    import threading

    def leaf(x):
        return x * 2

    def hot(n):
        total = 0
        for i in range(n):
            total += leaf(i)
        return total

    def worker():
        hot(100)

    def main():
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        for _ in range(50):
            hot(200)
        subprocess.run([sys.executable, "child.py"], check=True)

    if __name__ == "__main__":
        main()
"""
CHILD = """
    def step():
        return 1

    for _ in range(7):
        step()
"""


@pytest.fixture
def workload(tmp_path, monkeypatch):
    (tmp_path / "work.py").write_text(textwrap.dedent(MAIN))
    (tmp_path / "child.py").write_text(textwrap.dedent(CHILD))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_counts_are_exact_across_threads_and_child_processes(workload):
    profile = run_profile([sys.executable, "work.py"])
    assert profile.returncode == 0
    assert profile.processes == 2
    counts = profile.counts_for(analyse([str(workload)]).functions)
    assert counts["work:leaf"] == 100 + 50 * 200
    assert counts["work:hot"] == 51
    assert counts["work:worker"] == 1          # ran in a thread
    assert counts["work:main"] == 1            # ran as __main__, matched by file
    assert counts["child:step"] == 7           # counted in the child process
    assert profile.wall_s > 0 and profile.cpu_s > 0 and profile.baseline_us > 0


def test_counts_round_trip_through_the_counts_file(workload):
    profile = run_profile([sys.executable, "work.py"])
    path = str(workload / "counts.json")
    profile.save(path)
    again = load_profile(path)
    functions = analyse([str(workload)]).functions
    assert again.counts_for(functions) == profile.counts_for(functions)
    assert again.baseline_us == pytest.approx(profile.baseline_us, rel=1e-3)


def test_a_failing_command_still_yields_counts_and_its_exit_status(workload):
    (workload / "fail.py").write_text("def f():\n    return 1\nf()\nraise SystemExit(3)\n")
    profile = run_profile([sys.executable, "fail.py"])
    assert profile.returncode == 3
    assert profile.counts_for(analyse([str(workload / "fail.py")]).functions) == {"fail:f": 1.0}


def test_a_missing_command_or_counts_file_is_a_clear_error(tmp_path):
    with pytest.raises(ProfileError, match="cannot run"):
        run_profile([str(tmp_path / "no-such-program")])
    with pytest.raises(ProfileError, match="needs a command"):
        run_profile([])
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(ProfileError, match="not a scope-otel counts file"):
        load_profile(str(bad))


def test_an_existing_sitecustomize_still_runs_under_the_counter(workload, monkeypatch):
    site = workload / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['SITE_RAN'] = '1'\n")
    (workload / "check.py").write_text("import os, sys\nsys.exit(0 if os.environ.get('SITE_RAN') else 5)\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    assert run_profile([sys.executable, "check.py"], env=env).returncode == 0


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_the_counter_counts_exactly_on_other_pythons(workload, version):
    import glob
    import shutil

    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
    python = found[-1] if found else shutil.which(f"python{version}")
    if python is None:
        pytest.skip(f"python{version} is not installed here")
    probe = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"python{version} does not run here: {probe.stderr.strip()[:200]}")
    (workload / "child.py").write_text("")
    profile = run_profile([python, "work.py"])
    assert profile.returncode == 0
    counts = profile.counts_for(analyse([str(workload / "work.py")]).functions)
    assert counts["work:leaf"] == 100 + 50 * 200
    assert counts["work:worker"] == 1


def test_the_baseline_comes_from_a_plain_run_unless_the_command_must_run_once(workload):
    twice = run_profile([sys.executable, "work.py"])
    assert twice.plain_cpu_s > 0 and twice.baseline_us == twice.plain_cpu_s * 1e6
    once = run_profile([sys.executable, "work.py"], baseline_run=False)
    assert once.plain_cpu_s == 0
    assert 0 < once.baseline_us <= once.cpu_s * 1e6


def test_multiprocessing_children_started_by_fork_report_their_counts(workload):
    (workload / "pool.py").write_text(textwrap.dedent("""
        import multiprocessing

        def square(x):
            return x * x

        def child():
            for i in range(5):
                square(i)

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            p = ctx.Process(target=child)
            p.start()
            p.join()
            square(1)
    """))
    profile = run_profile([sys.executable, "pool.py"], baseline_run=False)
    assert profile.returncode == 0
    counts = profile.counts_for(analyse([str(workload / "pool.py")]).functions)
    assert counts["pool:child"] == 1
    assert counts["pool:square"] == 6
    assert profile.processes == 2


@pytest.mark.parametrize("version", ["3.11", "3.12"])
def test_the_cost_of_capturing_arguments_is_sampled_for_the_analysed_files(workload, version):
    import glob

    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
    python = sys.executable if version == "3.11" and sys.version_info[:2] == (3, 11) else (found[-1] if found else None)
    if python is None:
        pytest.skip(f"python{version} is not installed here")
    (workload / "args.py").write_text(textwrap.dedent("""
        BIG = [(i, "x" * 20) for i in range(2000)]

        def heavy(rows, flag):
            return len(rows)

        def light(n, name):
            return n

        class Box:
            def put(self, item):
                return item

        for _ in range(64):
            heavy(BIG, True)
            light(1, "a")
            Box().put(3)
    """))
    path = str(workload / "args.py")
    profile = run_profile([python, "args.py"], baseline_run=False, files=[path])
    cost = profile.arg_cost_for(analyse([path]).functions)
    assert cost["args:heavy"] > 10 * max(cost.get("args:light", 0.0), 0.01)   # a 2000-item repr
    assert cost.get("args:light", 0.0) == 0.0        # ints and strs are kept as they are
    assert cost.get("args:Box.put", 0.0) == 0.0      # self is never captured
    saved = str(workload / "counts.json")
    profile.save(saved)
    assert load_profile(saved).arg_cost_for(analyse([path]).functions) == pytest.approx(cost)
