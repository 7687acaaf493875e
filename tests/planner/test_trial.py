"""`scope-otel plan --profile --trial`: recording priced on the program itself."""
from __future__ import annotations

import dataclasses
import json
import math
import sys

import pytest

from scope_otel.planner.cli import main
from scope_otel.planner.costmodel import calibrate
from scope_otel.plan import plan_from_document
from scope_otel.planner.trial import Trial, calibrated


def _per_command(fake):
    """A stand-in for ``trial._cpu_s`` from one that prices a single command (every run exits 0)."""
    return lambda commands, env, cwd, timeout, together: [(fake(c, env, cwd, timeout), 0) for c in commands]


def _job(steps: int) -> str:
    return f"""
def step(i):
    return {{"i": i, "label": "item-%d" % i}}

def run():
    return [step(i) for i in range({steps})]

run()
"""


def test_a_trial_run_prices_a_recorded_call_and_the_plan_records_it(tmp_path, cost_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    (tmp_path / "job.py").write_text(_job(3000))
    out = tmp_path / "plan.json"
    assert main(["-q", "-o", str(out), "--budget", "50", "--profile", "--trial", "--", sys.executable, "job.py"]) == 0
    doc = json.loads(out.read_text())
    assert plan_from_document(doc).functions  # a valid plan
    trial = doc["estimate"]["profile"]["trial"]
    assert trial["recorded_calls"] == 3001  # step 3000 times, run once
    assert trial["per_call_us"] >= 0 and trial["model_per_call_us"] > 0
    assert trial["plan_cpu_s"] > 0 and trial["noplan_cpu_s"] > 0
    assert "trial run" in doc["estimate"]["cost_model"]["source"]


def test_the_trial_records_every_called_function_and_prices_what_the_model_missed(
        tmp_path, cost_cache, monkeypatch):
    """The trial records every called function at boundaries; what it measured beyond the model's own
    estimate for those calls is the per-call cost the model missed."""
    from scope_otel.planner import trial

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    (tmp_path / "job.py").write_text(_job(3000))
    seen = []

    def fake_paired(command, document, **kw):
        seen.append(document)
        if len(seen) == 1:  # the trial: 3001 recorded calls cost 30 ms more than the model says
            return trial.Paired(1.0, 1.0 + (trial.variable_us(document) + 30000.0) / 1e6, 0.0, 0.0)
        return trial.Paired(1.0, 1.0, -1e9, 1e9)  # the plan's own run: cannot tell, keeps the plan

    monkeypatch.setattr(trial, "paired_cpu_s", fake_paired)
    out = tmp_path / "plan.json"
    assert main(["-q", "-o", str(out), "--budget", "50", "--exporter", "none", "--profile", "--trial", "--",
                 sys.executable, "job.py"]) == 0
    assert {k: e["level"] for k, e in seen[0]["functions"].items() if e["level"] != "off"} == {
        "job:step": "boundaries", "job:run": "boundaries"}
    got = json.loads(out.read_text())["estimate"]["profile"]["trial"]
    startup_us = calibrate(exporter="none").startup_us
    assert got["per_call_us"] - got["model_per_call_us"] == pytest.approx((30000.0 - startup_us) / 3001, abs=0.01)


def test_trial_needs_profile(tmp_path, cost_cache, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["-q", "-o", str(tmp_path / "p.json"), "--trial", str(tmp_path)])
    assert exc.value.code == 2
    assert "--trial needs --profile" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["-q", "-o", str(tmp_path / "p.json"), "--sequential-trial", str(tmp_path)])
    assert exc.value.code == 2
    assert "--sequential-trial is an option of --trial" in capsys.readouterr().err


def test_the_trial_only_ever_raises_the_price(cost_cache):
    model = calibrate(exporter="none")
    dearer = Trial(1000, 1.0, 1.1, model.call_cost("boundaries") + 40.0, model.call_cost("boundaries"))
    cheaper = Trial(1000, 1.0, 1.0, 0.0, model.call_cost("boundaries"))
    assert calibrated(model, dearer).call_cost("boundaries") == pytest.approx(model.call_cost("boundaries") + 40.0)
    assert calibrated(model, dearer).call_cost("full", nargs=1) == pytest.approx(model.call_cost("full", nargs=1) + 40.0)
    assert calibrated(model, cheaper).call_cost("boundaries") == pytest.approx(model.call_cost("boundaries"))
    assert dataclasses.replace(calibrated(model, cheaper), source=model.source) == model


def test_a_plan_that_cost_more_or_less_than_estimated_reprices_per_call_costs(cost_cache):
    from scope_otel.planner.trial import RESCALE_LIMITS, Paired, rescaled

    model = calibrate(exporter="none")
    document = {"estimate": {"overhead_us": 1100.0, "fixed_us": 100.0}}
    def exactly(us):  # runs that all measured the same
        return Paired(1.0, 1.0 + us / 1e6, us, us)

    dearer, factor = rescaled(model, document, exactly(3100.0))  # variable part 1000 -> 3000
    assert factor == pytest.approx(3.0)
    assert dearer.full_us == pytest.approx(model.full_us * 3) and dearer.offpath_us == pytest.approx(model.offpath_us * 3)
    assert dearer.startup_us == model.startup_us  # start-up is measured on its own
    cheaper, factor = rescaled(model, document, exactly(500.0))  # variable part 1000 -> 400
    assert factor == pytest.approx(0.4)
    assert cheaper.offpath_us == pytest.approx(model.offpath_us * 0.4) and cheaper.startup_us == model.startup_us
    same, factor = rescaled(model, document, exactly(1150.0))  # within the tolerance: no second plan
    assert factor == 1.0 and same is model
    noisy = Paired(1.0, 1.0031, low_us=900.0, high_us=4000.0)  # 3100 us measured, but 1100 is within the spread
    assert rescaled(model, document, noisy) == (model, 1.0)
    clear = Paired(1.0, 1.0031, low_us=2800.0, high_us=3300.0)
    assert rescaled(model, document, clear)[1] == pytest.approx(3.0)
    assert rescaled(model, document, exactly(1e9))[1] == RESCALE_LIMITS[1]
    assert rescaled(model, document, exactly(0.0))[1] == RESCALE_LIMITS[0]


def test_a_plan_measured_over_its_budget_is_repriced_even_within_the_noise(cost_cache):
    """The runs cannot tell 1,600 us from the 1,100 estimated, but their median is over a 1,400 us
    budget: prices go up by what the median says (and never down on that ground)."""
    from scope_otel.planner.trial import Paired, rescaled

    model = calibrate(exporter="none")
    document = {"estimate": {"overhead_us": 1100.0, "fixed_us": 100.0}}
    noisy = Paired(1.0, 1.0016, low_us=700.0, high_us=2500.0)
    assert noisy.agrees_with(1100.0) and rescaled(model, document, noisy) == (model, 1.0)
    dearer, factor = rescaled(model, document, noisy, over_budget=True)
    assert factor == pytest.approx(1.5) and dearer.full_us == pytest.approx(model.full_us * 1.5)
    cheap = Paired(1.0, 1.0009, low_us=700.0, high_us=2500.0)  # a median under the estimate: nothing
    assert rescaled(model, document, cheap, over_budget=True) == (model, 1.0)


def test_the_trial_runs_in_pairs_and_keeps_the_median_pair(monkeypatch):
    """Pairs alternate which run goes first; the pair with the median difference is kept, so one
    pair a burst of other work landed in (either way) does not move the price."""
    from scope_otel.planner import trial

    seen = []
    # (noplan, planned) per pair: a burst inflates pair 0's planned run and pair 2's noplan run
    pairs = [(1.0, 9.0), (1.0, 1.5), (5.0, 1.2)]

    def fake_cpu_s(command, env, cwd, timeout):
        i = len(seen) // 2
        planned = "--plan" in command
        seen.append("plan" if planned else "noplan")
        return pairs[i][1] if planned else pairs[i][0]

    monkeypatch.setattr(trial, "_cpu_s", _per_command(fake_cpu_s))
    paired = trial.paired_cpu_s(["prog"], {"functions": {}}, repeat=3)
    assert seen == ["noplan", "plan", "plan", "noplan", "noplan", "plan"]
    assert (paired.noplan_s, paired.planned_s) == (1.0, 1.5)
    assert paired.cost_us == pytest.approx(0.5e6)
    # with three pairs the middle half is all of them: from the burst in a noplan run to the one in a planned run
    assert (paired.low_us, paired.high_us) == (pytest.approx(-3.8e6), pytest.approx(8.0e6))
    assert paired.agrees_with(0.0) and not paired.agrees_with(9e6)


@pytest.mark.parametrize("larger_plan", ["fits", "over", "straddles"])
def test_cheaper_than_estimated_plans_again_and_keeps_the_larger_plan_only_within_budget(
        tmp_path, cost_cache, monkeypatch, larger_plan):
    """The trial of every function prices `step` at twice the budget; the plan without it then
    measures cheaper than estimated, so prices come down 4x and `step` fits: that plan is run
    too, and kept only if its runs put it within the budget (a median under the budget whose
    interval reaches over it is not enough)."""
    larger_plan_fits = larger_plan == "fits"
    from scope_otel.planner import trial

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    (tmp_path / "job.py").write_text(_job(30000))
    budget = {}

    def fake_measure(command, every_called, calls, model, processes, **kw):
        est = every_called["estimate"]
        budget["us"] = est["baseline_us"] * 100.0  # --budget 10000: so that the price asked is above the model's
        per_call = 2 * (budget["us"] - est["fixed_us"]) / 30001
        assert per_call > model.call_cost("boundaries")
        return Trial(30001, 1.0, 2.0, per_call, model.call_cost("boundaries"))

    runs = []

    def fake_paired(command, document, **kw):
        runs.append(sorted(k for k, e in document["functions"].items() if e["level"] != "off"))
        if len(runs) == 1:
            return trial.Paired(1.0, 1.0, 0.0, 0.0)  # the first plan cost nothing measurable: prices x0.25
        over = {"fits": 0.5, "over": 2.0, "straddles": 0.5}[larger_plan]
        cost_us = over * budget["us"]
        high_us = 1.5 * budget["us"] if larger_plan == "straddles" else cost_us
        return trial.Paired(1.0, 1.0 + cost_us / 1e6, cost_us * 0.6, high_us)

    monkeypatch.setattr(trial, "measure", fake_measure)
    monkeypatch.setattr(trial, "paired_cpu_s", fake_paired)
    out = tmp_path / "plan.json"
    assert main(["-q", "-o", str(out), "--budget", "10000", "--exporter", "none", "--profile", "--trial", "--",
                 sys.executable, "job.py"]) == 0
    doc = json.loads(out.read_text())
    assert len(runs) == 2 and "job:step" not in runs[0] and "job:step" in runs[1]
    recorded = {k for k, e in doc["functions"].items() if e["level"] != "off"}
    assert ("job:step" in recorded) is larger_plan_fits
    assert ("first_plan" in doc["estimate"]["profile"]["trial"]) is larger_plan_fits
    assert ("second_plan" in doc["estimate"]["profile"]["trial"]) is larger_plan_fits


def test_one_factor_is_fitted_to_several_runs_and_a_refitted_planrecords_no_more():
    from scope_otel.planner.trial import RESCALE_LIMITS, fitted_factor, records_no_more

    # a small plan measured at 2x its estimate, a large one at 3x: the large one weighs most
    assert fitted_factor([(100.0, 200.0), (1000.0, 3000.0)]) == pytest.approx((2e4 + 3e6) / (1e4 + 1e6))
    assert fitted_factor([(1000.0, -50.0)]) == RESCALE_LIMITS[0]  # measured nothing: as low as one trial may go
    assert fitted_factor([]) == 1.0

    def plan(**levels):
        return {"functions": {f"m:{k}": {"level": v} for k, v in levels.items()}}

    measured = plan(a="full", b="boundaries", c="off")
    assert records_no_more(plan(a="boundaries", b="boundaries"), measured)
    assert records_no_more(plan(a="full"), measured)
    assert not records_no_more(plan(b="full"), measured)  # deeper than what was measured
    assert not records_no_more(plan(c="boundaries"), measured)  # a function the measured plan left off


def test_the_interval_around_the_median_pair_narrows_with_more_pairs():
    from scope_otel.planner.trial import COVERAGE, median_interval

    def coverage(n, k):  # P(the k-th smallest <= median <= the k-th largest), binomial(n, 1/2) samples below it
        return sum(math.comb(n, i) for i in range(k + 1, n - k)) / 2 ** n

    assert [median_interval(n) for n in (3, 5, 9, 15)] == [0, 1, 2, 5]
    for n in range(3, 31):  # fewer samples than 3 cannot hold the median that surely
        k = median_interval(n)
        assert coverage(n, k) >= COVERAGE
        assert k == (n - 1) // 2 or coverage(n, k + 1) < COVERAGE  # as narrow as the coverage allows


def test_a_plans_trial_adds_pairs_until_its_runs_can_tell_the_cost_from_the_estimate(monkeypatch):
    """Five pairs spread over 40..300 ms around an estimate of 100 ms cannot tell a plan that costs
    100 ms from one that costs 150; pairs are added two at a time until the interval is clear of it."""
    from scope_otel.planner import trial

    diffs = [0.04, 0.30, 0.08, 0.25, 0.20] + [0.20] * 20  # the plan costs 200 ms: twice its estimate
    runs = []

    def fake_cpu_s(command, env, cwd, timeout):
        runs.append("--plan" in command)
        pair = (len(runs) - 1) // 2
        return 1.0 + diffs[pair] if "--plan" in command else 1.0

    monkeypatch.setattr(trial, "_cpu_s", _per_command(fake_cpu_s))
    estimate_us = 100_000.0
    five = trial.paired_cpu_s(["prog"], {"functions": {}})
    assert five.pairs == 5 and five.agrees_with(estimate_us)  # the old rule kept this plan

    runs.clear()
    paired = trial.paired_cpu_s(["prog"], {"functions": {}}, until=trial.settled(estimate_us))
    assert paired.pairs == 9 and len(runs) == 18  # 7 pairs: 80..250 ms; 9: the 3rd and 7th, both 200 ms
    assert not paired.agrees_with(estimate_us) and paired.cost_us == pytest.approx(200_000.0)
    assert not trial.settled(estimate_us)(five) and trial.settled(estimate_us)(paired)

    runs.clear()
    diffs[5:] = [0.04, 0.30] * 10  # never clear: stops at the cap
    capped = trial.paired_cpu_s(["prog"], {"functions": {}}, until=trial.settled(estimate_us), max_pairs=11)
    assert capped.pairs == 11 and len(runs) == 22

    close = trial.Paired(1.0, 1.1, 80_000.0, 140_000.0, 9)  # within 1.5x of the estimate both ways: agreed
    assert trial.settled(estimate_us)(close) and close.agrees_with(estimate_us)


def test_after_a_first_pair_the_two_runs_of_a_pair_start_together(monkeypatch):
    """Side by side, the machine's drifting speed moves both runs of a pair; which starts first alternates."""
    from scope_otel.planner import trial

    calls = []

    def fake_cpu_s(commands, env, cwd, timeout, together):
        calls.append((["plan" if "--plan" in c else "noplan" for c in commands], together))
        return [(1.2 if "--plan" in c else 1.0, 0) for c in commands]

    monkeypatch.setattr(trial, "_cpu_s", fake_cpu_s)
    monkeypatch.setattr(trial.os, "cpu_count", lambda: 2)
    paired = trial.paired_cpu_s(["prog"], {"functions": {}}, repeat=4)
    assert calls == [(["noplan", "plan"], False), (["plan", "noplan"], True),
                     (["noplan", "plan"], True), (["plan", "noplan"], True)]
    assert paired.side_by_side and paired.pairs == 4 and paired.cost_us == pytest.approx(0.2e6)

    calls.clear()
    alone = trial.paired_cpu_s(["prog"], {"functions": {}}, repeat=3, side_by_side=False)
    assert [together for _order, together in calls] == [False] * 3 and not alone.side_by_side
    calls.clear()
    monkeypatch.setattr(trial.os, "cpu_count", lambda: 1)  # one CPU: two runs at once only take turns
    assert not trial.paired_cpu_s(["prog"], {"functions": {}}, repeat=3).side_by_side
    assert [together for _order, together in calls] == [False] * 3


def test_a_command_that_cannot_run_twice_at_once_falls_back_to_one_at_a_time(monkeypatch):
    """A pair run side by side that exits otherwise than the first pair (the second run found the port
    taken) is dropped, and every later pair runs one after the other."""
    from scope_otel.planner import trial

    calls = []

    def fake_cpu_s(commands, env, cwd, timeout, together):
        calls.append(together)
        if together:  # the second one to start fails at once
            return [(1.0, 0), (0.05, 1)]
        return [(1.2 if "--plan" in c else 1.0, 0) for c in commands]

    monkeypatch.setattr(trial, "_cpu_s", fake_cpu_s)
    monkeypatch.setattr(trial.os, "cpu_count", lambda: 2)
    paired = trial.paired_cpu_s(["prog"], {"functions": {}}, repeat=3)
    assert calls == [False, True, False, False]
    assert paired.pairs == 3 and not paired.side_by_side and paired.cost_us == pytest.approx(0.2e6)


def test_runs_side_by_side_are_each_charged_their_own_cpu_and_exit_code():
    """Real processes: one burns CPU, one sleeps and fails; each run gets its own time and status."""
    import subprocess
    import time

    from scope_otel.planner.profile import cpu_each

    burn = [sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"]
    idle = [sys.executable, "-c", "import sys, time; time.sleep(0.4); sys.exit(3)"]
    for together in (True, False):
        (burn_cpu, burn_code), (idle_cpu, idle_code) = cpu_each([burn, idle], together=together)
        assert burn_cpu >= 0.4 and idle_cpu < 0.3
        assert (burn_code, idle_code) == (0, 3)
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        cpu_each([[sys.executable, "-c", "import time; time.sleep(30)"], idle], together=True, timeout=0.5)
    assert time.monotonic() - started < 10  # both killed, not waited for


def test_a_plan_that_costs_more_than_estimated_is_repriced_run_again_and_repriced_again(
        tmp_path, cost_cache, monkeypatch):
    """Every plan here costs three times its estimate: each plan made with higher prices records
    less and is run in turn, up to MAX_REPRICES runs; the last plan is made with every factor."""
    from scope_otel.planner import trial

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    (tmp_path / "job.py").write_text(
        "def a(i):\n    return i + 1\n\ndef b(i):\n    return i * 2\n\ndef c(i):\n    return -i\n\n"
        "def run():\n    return [a(i) for i in range(3000)] + [b(i) for i in range(1000)] + [c(i) for i in range(300)]\n\n"
        "run()\n")
    budget = {}

    def fake_measure(command, every_called, calls, model, processes, **kw):
        est = every_called["estimate"]
        budget["us"] = est["baseline_us"] * 100.0  # --budget 10000
        per_call = 2 * (budget["us"] - est["fixed_us"]) / 4301  # recording every call: twice the budget
        return Trial(4301, 1.0, 2.0, per_call, model.call_cost("boundaries"))

    runs = []

    def fake_paired(command, document, **kw):
        runs.append(document)
        est = document["estimate"]
        cost_us = est["fixed_us"] + 3 * trial.variable_us(document)
        return trial.Paired(1.0, 1.0 + cost_us / 1e6, cost_us, cost_us)

    monkeypatch.setattr(trial, "measure", fake_measure)
    monkeypatch.setattr(trial, "paired_cpu_s", fake_paired)
    out = tmp_path / "plan.json"
    assert main(["-q", "-o", str(out), "--budget", "10000", "--exporter", "none", "--profile", "--trial", "--",
                 sys.executable, "job.py"]) == 0
    doc = json.loads(out.read_text())
    assert 2 <= len(runs) <= trial.MAX_REPRICES
    for before, after in zip(runs, runs[1:]):  # each plan run records less than the one run before it
        assert trial.records_no_more(after, before) and trial.recorded(after) != trial.recorded(before)
    assert trial.records_no_more(doc, runs[-1])
    plans = doc["estimate"]["profile"]["trial"]["plans"]
    assert [p["factor"] for p in plans] == [pytest.approx(3.0, rel=0.01)] * len(runs)
    assert doc["estimate"]["cost_model"]["source"].count("from the plan's trial run") == len(runs)
