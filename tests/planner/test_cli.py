"""``scope-otel plan`` end to end: the file it writes, --explain, overrides, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from scope_otel.planner.cli import main
from scope_otel.plan import load_plan

from tests.planner.conftest import write_tree

SCHEMA = os.path.join(os.path.dirname(__file__), "..", "..", "schemas", "plan.schema.json")

APP = {
    "shop/__init__.py": "",
    "shop/views.py": """
        from flask import Flask
        app = Flask(__name__)

        @app.route("/")
        def index():
            return helper(1)

        def helper(x):
            return x + 1
    """,
}


@pytest.fixture
def tree(tmp_path, cost_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_tree(tmp_path / "src", APP)


def validate(doc):
    jsonschema = pytest.importorskip("jsonschema")
    with open(SCHEMA, encoding="utf-8") as fh:
        jsonschema.validate(doc, json.load(fh))


def test_plan_writes_a_schema_valid_plan_that_load_plan_reads(tree, tmp_path, capsys):
    out = tmp_path / "scope-otel.plan.json"
    assert main([tree, "--budget", "5", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    validate(doc)
    plan = load_plan(str(out))
    assert set(plan.functions) == {"shop.views:index", "shop.views:helper"}
    assert plan.hash == doc["hash"]
    assert doc["budget_pct"] == 5.0
    assert "wrote" in capsys.readouterr().err


def test_the_default_output_is_scope_otel_plan_json_in_the_current_directory(tree, tmp_path):
    assert main([tree, "-q"]) == 0
    assert (tmp_path / "scope-otel.plan.json").exists()


def test_explain_prints_a_row_per_function_with_level_and_reason(tree, capsys):
    assert main([tree, "--explain", "-q", "-o", "-", "--pin", "shop.views:helper=full"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)                       # the plan went to stdout ...
    table = captured.err                           # ... so the table went to stderr
    header = table.splitlines()[0].split()
    assert header == ["function", "patterns", "complexity", "calls", "level", "reason"]
    row = next(line for line in table.splitlines() if line.startswith("shop.views:index"))
    assert "flask.route" in row and "cc=1" in row
    helper = next(line for line in table.splitlines() if line.startswith("shop.views:helper"))
    assert "full" in helper and "pinned by --pin shop.views:helper=full" in helper
    assert "estimated overhead" in table


def test_include_exclude_and_pin_are_recorded_in_the_plan(tree, tmp_path):
    out = tmp_path / "p.json"
    assert main([tree, "-q", "-o", str(out), "--budget", "0", "--include", "shop.*",
                 "--exclude", "shop.views:index", "--pin", "shop.views:helper=full"]) == 0
    doc = json.loads(out.read_text())
    assert doc["overrides"] == {"include": ["shop.*"], "exclude": ["shop.views:index"],
                                "pin": {"shop.views:helper": "full"}}
    assert doc["functions"]["shop.views:index"]["level"] == "off"
    assert doc["functions"]["shop.views:helper"]["level"] == "full"


@pytest.mark.parametrize("argv, message", [
    (["--pin", "shop.*"], "expected GLOB=LEVEL"),
    (["--pin", "shop.*=loud"], "expected GLOB=LEVEL"),
    (["--budget", "-1"], "--budget must be >= 0"),
    (["--profile"], "--profile needs a command"),
    (["--", "python", "x.py"], "only used with --profile"),
])
def test_bad_arguments_exit_2_with_a_message(tree, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main([tree] + argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_files_are_reported_and_the_plan_is_still_written(tree, tmp_path, capsys):
    (tmp_path / "src" / "shop" / "broken.py").write_text("def (:\n")
    (tmp_path / "src" / "shop" / "bytes.py").write_bytes(b"\xff\xfe\x00garbage")
    out = tmp_path / "p.json"
    assert main([tree, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.py" in err and "bytes.py" in err
    doc = json.loads(out.read_text())
    assert "shop.views:index" in doc["functions"]
    assert {os.path.basename(s["path"]) for s in doc["estimate"]["skipped"]} == {"broken.py", "bytes.py"}


def test_profile_runs_the_command_and_plans_with_real_counts(tmp_path, cost_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.py").write_text(
        "def step(i):\n    return i + 1\n\ndef run():\n    return [step(i) for i in range(300)]\n\nrun()\n")
    out = tmp_path / "plan.json"
    assert main(["-q", "-o", str(out), "--profile", "--", sys.executable, "job.py"]) == 0
    doc = json.loads(out.read_text())
    validate(doc)
    assert doc["estimate"]["frequencies"] == "profile"
    assert doc["functions"]["job:step"]["estimated_calls"] == 300
    assert doc["functions"]["job:run"]["estimated_calls"] == 1
    counts = tmp_path / "plan.counts.json"
    assert counts.exists()
    # the saved counts plan the same tree again without running anything
    again = tmp_path / "again.json"
    assert main([str(tmp_path / "job.py"), "-q", "-o", str(again), "--counts", str(counts)]) == 0
    assert json.loads(again.read_text())["functions"]["job:step"]["estimated_calls"] == 300


def test_scope_otel_plan_is_reachable_through_the_main_command(tree, tmp_path):
    out = tmp_path / "via-cli.json"
    proc = subprocess.run([sys.executable, "-m", "scope_otel.launcher.cli", "plan", tree, "-q", "-o", str(out)],
                          capture_output=True, text=True, env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "c")))
    assert proc.returncode == 0, proc.stderr
    assert load_plan(str(out)).functions


def test_progress_is_a_plain_periodic_line_when_stderr_is_not_a_terminal():
    import io

    from scope_otel.planner.progress import Progress

    stream = io.StringIO()
    progress = Progress(stream, min_files=1)
    for done in range(1, 101):
        progress(done, 100, f"f{done}.py")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("scope-otel plan: 100/100 files analysed")
    assert "\r" not in stream.getvalue()
    assert 1 <= len(lines) <= 3


def test_progress_is_a_bar_redrawn_in_place_on_a_terminal():
    import io

    from scope_otel.planner.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(stream, min_files=1)
    progress(1, 10, "a.py")
    progress(10, 10, "j.py")
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\rscope-otel plan: [") and "10/10 files" in text
    assert text.endswith("\n") and text.count("\n") == 1


def test_small_trees_show_no_progress():
    import io

    from scope_otel.planner.progress import Progress

    stream = io.StringIO()
    progress = Progress(stream)          # default: only from 50 files
    progress(3, 3, "c.py")
    progress.close()
    assert stream.getvalue() == ""


def test_an_unwritable_output_is_a_clear_error(tree, tmp_path, capsys):
    assert main([tree, "-q", "-o", str(tmp_path / "no-such-dir" / "plan.json")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_profiled_plans_price_full_capture_by_the_arguments_really_passed(tmp_path, cost_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.py").write_text(
        "ROWS = [(i, 'row') for i in range(3000)]\n\n"
        "def heavy(rows):\n    return len(rows)\n\n"
        "def light(n):\n    return n\n\n"
        "for _ in range(200):\n    heavy(ROWS)\n    light(1)\n")
    out = tmp_path / "plan.json"
    assert main(["-q", "-o", str(out), "--pin", "job:*=full", "--exporter", "none",
                 "--profile", "--", sys.executable, "job.py"]) == 0
    functions = json.loads(out.read_text())["functions"]
    heavy, light = functions["job:heavy"], functions["job:light"]
    assert heavy["estimated_calls"] == light["estimated_calls"] == 200
    assert heavy["estimated_cost_us"] > 5 * light["estimated_cost_us"]
