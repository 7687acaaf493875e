"""The full collection recording brings on: the collector's arithmetic, the trial's reports, the step in the plan."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from scope_otel.planner import gcstep
from scope_otel.planner.callgraph import static_frequencies
from scope_otel.planner.costmodel import CostModel
from scope_otel.planner.gcstep import GcReport, GcStep, from_runs, observed_us, read_reports, triggers_until_full
from scope_otel.planner.orchestrator import build_plan
from scope_otel.planner.trial import _GCWATCH_DIR, _watched_env

pytestmark = pytest.mark.skipif(sys.implementation.name != "cpython" or len(__import__("gc").get_threshold()) != 3,
                                reason="a three-generation collector (CPython 3.10-3.13) is modelled")

# Runs a fresh interpreter: from the counters and thresholds it is given, the collections that
# CPython really starts before its first full one, against what triggers_until_full predicts.
_COLLECTOR_PROBE = textwrap.dedent("""
    import gc, json, sys
    t1, t2 = int(sys.argv[1]), int(sys.argv[2])
    gc.freeze()   # the interpreter's own heap out of the way: a full collection is never put off for it
    gc.collect()
    gc.set_threshold(50, t1, t2)
    seen = []
    def watch(phase, info):
        if phase == "start":
            seen.append(info["generation"])
    start = gc.get_count()
    gc.callbacks.append(watch)
    keep = []
    while 2 not in seen:
        keep.append([])          # tracked and kept: they reach the oldest generation
    gc.callbacks.remove(watch)
    print(json.dumps({"start": list(start), "threshold": [50, t1, t2], "collections": len(seen)}))
""")


@pytest.mark.parametrize("t1,t2", [(10, 10), (3, 5), (0, 0), (7, 2)])
def test_the_collections_before_the_next_full_one_are_what_cpython_does(t1, t2):
    out = subprocess.run([sys.executable, "-c", _COLLECTOR_PROBE, str(t1), str(t2)], capture_output=True,
                         text=True, timeout=60, check=True)
    seen = json.loads(out.stdout)
    assert triggers_until_full(seen["start"], seen["threshold"]) == seen["collections"]


def test_counters_part_way_leave_fewer_collections():
    fresh = triggers_until_full((0, 0, 0), (700, 10, 10))
    assert fresh == 11 * 12 + 1  # 11 middle collections, each after 11 young ones, then the full one
    assert triggers_until_full((150, 5, 8), (700, 10, 10)) == 32  # the example shop without recording
    assert triggers_until_full((0, 0, 11), (700, 10, 10)) == 1
    report = GcReport((109, 10, 1), (14.0,), (350, 5, 8), (700, 10, 10))
    assert report.headroom() == pytest.approx(31.5)
    with pytest.raises(ValueError, match="three-generation"):
        triggers_until_full((0, 0), (700, 10))


def test_the_watcher_reports_each_run_and_still_runs_the_programs_own_sitecustomize(tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nos.environ['OWN_SITECUSTOMIZE'] = 'ran'\n")
    folder = tmp_path / "reports"
    env = _watched_env(dict(os.environ, PYTHONPATH=str(own)), str(folder))
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [_GCWATCH_DIR, str(own)]
    # the program makes one full collection itself, then doubles its heap
    program = ("import gc, os\nkeep = [[] for _ in range(50000)]\ngc.collect()\nmore = [[] for _ in range(60000)]\n"
               "print(os.environ.get('OWN_SITECUSTOMIZE'))\n")
    out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ran"
    reports = read_reports(str(folder))
    assert len(reports) == 1
    report = reports[0]
    assert len(report.collections) == 3 and report.triggers >= 50000 // report.threshold[0] - 1
    assert report.full >= 1 and len(report.full_ms) == report.full
    # the last full collection's cost scaled to the heap at exit: more than it cost then, never run again
    assert report.exit_full_ms > report.full_ms[-1] > 0
    doc = json.loads(next(folder.iterdir()).read_text())
    assert doc["objects_at_exit"] >= doc["full_objects"][-1] + 60000
    assert 0 < report.headroom() <= triggers_until_full((0, 0, 0), report.threshold)


def test_unreadable_reports_are_skipped(tmp_path):
    (tmp_path / "gc-1.json").write_text("{not json")
    (tmp_path / "gc-2.json").write_text(json.dumps({"collections": [1, 0, 0]}))
    (tmp_path / "other.json").write_text("{}")
    assert read_reports(str(tmp_path)) == []
    assert read_reports(str(tmp_path / "missing")) == []


def _report(collections, count, exit_ms=45.0):
    return GcReport(tuple(collections), (), tuple(count), (700, 10, 10), exit_ms)


def test_a_trial_that_crossed_the_step_prices_it_apart_from_its_calls():
    # without recording: 120 collections, 32 left before the next full one; with 1,840 calls recorded,
    # 42 more collections and the full one they brought on
    noplan = [[_report((109, 10, 1), (150, 5, 8))] for _ in range(5)]
    planned = [[_report((146, 14, 2), (80, 3, 0), exit_ms=48.0 + i)] for i in range(5)]
    step, gc_us, why = from_runs(noplan, planned, 1840.0)
    assert why == ""
    assert step.headroom == pytest.approx(32 - 150 / 700)
    assert step.per_call == pytest.approx(42 / 1840)
    assert step.full_us == pytest.approx(50_000.0)
    assert step.cycle == 133.0
    assert gc_us == pytest.approx(50_000.0)
    assert observed_us(noplan, planned) == pytest.approx(50_000.0)
    assert step.extra_full(30.0) == 0 and step.extra_full(32.0) == 1 and step.extra_full(32.0 + 133) == 2
    assert step.cost_us(40.0) == pytest.approx(50_000.0)


def test_a_trial_under_the_step_still_knows_where_it_is():
    noplan = [[_report((109, 10, 1), (150, 5, 8))]] * 3
    planned = [[_report((130, 12, 1), (80, 7, 10))]] * 3
    step, gc_us, _why = from_runs(noplan, planned, 900.0)
    assert gc_us == 0.0
    assert step.per_call == pytest.approx(23 / 900) and step.headroom > 23


def test_no_step_where_the_runs_cannot_show_one():
    one = [[_report((109, 10, 1), (150, 5, 8))]]
    two = [[_report((109, 10, 1), (150, 5, 8)), _report((5, 0, 0), (1, 1, 1))]]
    assert from_runs(one, two, 1000.0)[0] is None
    assert from_runs(one, two, 1000.0)[2] == "more than one process per run"
    assert from_runs([], [], 1000.0)[2] == "no collector reports"
    same = [[_report((109, 10, 1), (150, 5, 8))]]
    assert from_runs(one, same, 1000.0)[2] == "recording brought on no collections"
    # far past the headroom and still no full collection: the collector put it off (few objects waiting)
    put_off = [[_report((200, 18, 1), (10, 1, 20))]]
    assert from_runs(one, put_off, 1000.0)[2] == "no full collection came past the headroom"
    assert observed_us(one, two) == 0.0


MODEL = CostModel(call_us=0.05, stmt_us=0.02, check_us=0.01, boundaries_us=1.0, full_us=2.0, arg_us=0.1,
                  container_us=5.0, sampled_out_us=0.1, state_us=0.3, offpath_us=2.0, source="test",
                  gc_full_factor=1.5, gc_arg_factor=0.5)

APP = {
    "shop/views.py": """
        from flask import Flask
        app = Flask(__name__)

        @app.route("/checkout")
        def checkout(cart):
            total = 0
            for item in cart:
                total += price(item)
            return total

        def price(item):
            if item > 3:
                return item * 2
            return item

        def walk(node, depth):
            if node is None:
                return depth
            return walk(node.next, depth + 1)
    """,
}


@pytest.fixture
def app(analyse_tree):
    analysis = analyse_tree(APP)
    calls = {key: 0.0 for key in analysis.functions}
    calls.update({"shop.views:checkout": 100.0, "shop.views:price": 2000.0, "shop.views:walk": 1000.0})
    return analysis, calls


def _collections(doc, step):
    return sum(step.per_call * f["estimated_calls"] * MODEL.gc_factor(f["level"], 1 if "args" in f["capture"] else 0)
               for f in doc["functions"].values() if f["level"] != "off")


def test_a_budget_that_cannot_pay_for_the_full_collection_keeps_the_plan_under_it(app):
    analysis, calls = app
    # recording every call at boundaries: 3,100 * 0.02 = 62 collections, past a headroom of 20;
    # the budget (10,000 us, 3 us a call) cannot pay for a 9,000 us collection on top
    step = GcStep(headroom=20.0, per_call=0.02, full_us=9000.0, cycle=133.0)
    doc = build_plan(analysis, calls, MODEL, budget_pct=1.0, baseline_us=1e6, frequencies="profile", gc_step=step)
    est = doc["estimate"]
    assert est["gc_us"] == 0.0 and est["gc"]["extra_full"] == 0
    assert est["gc"]["collections"] <= gcstep.SAFETY * step.headroom + 1e-9
    assert est["gc"]["collections"] == pytest.approx(_collections(doc, step), rel=1e-3)
    assert doc["functions"]["shop.views:checkout"]["level"] != "off"  # the entry point is kept
    # it was the step that held the plan back: without it the same budget records past the headroom
    without = build_plan(analysis, calls, MODEL, budget_pct=1.0, baseline_us=1e6, frequencies="profile")
    assert _collections(without, step) > step.headroom > est["gc"]["collections"]


def test_a_budget_that_can_pay_for_it_records_more_and_says_what_it_costs(app):
    analysis, calls = app
    step = GcStep(headroom=20.0, per_call=0.01, full_us=9000.0, cycle=133.0)
    doc = build_plan(analysis, calls, MODEL, budget_pct=5.0, baseline_us=1e6, frequencies="profile", gc_step=step)
    est = doc["estimate"]
    assert est["gc"]["extra_full"] == 1 and est["gc_us"] == 9000.0
    assert est["overhead_us"] == pytest.approx(sum(f["estimated_cost_us"] for f in doc["functions"].values()) + 9000.0,
                                               rel=1e-6)
    assert est["overhead_pct"] <= 5.0 + 1e-9
    assert all(f["level"] != "off" for k, f in doc["functions"].items() if calls[k] > 0)


def test_the_plans_own_runs_rescale_the_collections_it_brings_on():
    from scope_otel.planner.cli import _collector_rescaled
    from scope_otel.planner.trial import Paired

    step = GcStep(headroom=32.0, per_call=0.02, full_us=40_000.0, cycle=133.0)
    noplan = tuple((_report((109, 10, 1), (150, 5, 8)),) for _ in range(3))
    planned = tuple((_report((127, 12, 1), (10, 1, 10)),) for _ in range(3))  # 20 more young collections
    paired = Paired(1.0, 1.05, 40_000.0, 60_000.0, 3, True, noplan, planned)
    assert gcstep.observed_triggers(list(noplan), list(planned)) == 20.0
    estimated = {"estimate": {"gc": {"collections": 10.0}}}
    assert _collector_rescaled(step, estimated, paired).per_call == pytest.approx(0.04)
    close = {"estimate": {"gc": {"collections": 18.0}}}  # within the tolerance: left as it is
    assert _collector_rescaled(step, close, paired) is step
    fewer = {"estimate": {"gc": {"collections": 60.0}}}  # fewer than estimated: never scaled down
    assert _collector_rescaled(step, fewer, paired) is step
    assert _collector_rescaled(None, estimated, paired) is None
    tiny = {"estimate": {"gc": {"collections": 0.5}}}  # a few more than a tiny estimate: jitter, left alone
    few = tuple((_report((112, 10, 1), (10, 8, 8)),) for _ in range(3))
    assert _collector_rescaled(step, tiny, Paired(1.0, 1.0, 0.0, 1.0, 3, True, noplan, few)) is step
    unknown = Paired(1.0, 1.05, 40_000.0, 60_000.0, 3, True, (), ())
    assert _collector_rescaled(step, estimated, unknown) is step
    assert gcstep.observed_triggers([], []) is None
