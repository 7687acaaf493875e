"""Budgeted choice of levels: within budget, monotone in budget, overrides, reasons."""
from __future__ import annotations

import pytest

from scope_otel.planner.callgraph import static_frequencies
from scope_otel.planner.costmodel import CostModel
from scope_otel.planner.orchestrator import Overrides, build_plan

#: Fixed costs so the tests do not depend on this machine's speed.
MODEL = CostModel(call_us=0.05, stmt_us=0.02, check_us=0.01, boundaries_us=1.0, full_us=2.0,
                  arg_us=0.1, container_us=5.0, sampled_out_us=0.1, state_us=0.3, offpath_us=2.0, source="test")

APP = {
    "shop/views.py": """
        import requests
        from flask import Flask
        app = Flask(__name__)
        TOTALS = {}

        @app.route("/checkout")
        def checkout(cart):
            total = 0
            for item in cart:
                total += price(item)
            TOTALS["last"] = total
            notify(total)
            return total

        def price(item):
            return item * 2

        def notify(total):
            try:
                requests.post("http://x", json={"t": total})
            except OSError:
                return False
            return True

        def fmt(x):
            return str(x)

        class Cart:
            def __init__(self):
                self.items = []

            def add(self, item):
                self.items.append(item)

            def __len__(self):
                return len(self.items)
    """,
}


@pytest.fixture
def app(analyse_tree):
    analysis = analyse_tree(APP)
    return analysis, static_frequencies(analysis)


def levels(doc):
    return {k: f["level"] for k, f in doc["functions"].items()}


@pytest.mark.parametrize("budget", [0.5, 2, 5, 20, 100])
def test_the_estimated_overhead_stays_within_the_budget(app, budget):
    analysis, calls = app
    doc = build_plan(analysis, calls, MODEL, budget_pct=budget)
    assert doc["estimate"]["overhead_pct"] <= budget + 1e-9
    assert doc["estimate"]["over_budget_by_overrides"] is False


def test_a_larger_budget_records_at_least_as_much(app):
    analysis, calls = app
    rank = {"off": 0, "boundaries": 1, "full": 2}
    previous = None
    for budget in (0, 0.1, 1, 5, 50, 1000):
        doc = build_plan(analysis, calls, MODEL, budget_pct=budget)
        total = sum(rank[level] for level in levels(doc).values())
        if previous is not None:
            assert total >= previous
        previous = total
    assert set(levels(build_plan(analysis, calls, MODEL, budget_pct=1000)).values()) == {"full"}
    assert set(levels(build_plan(analysis, calls, MODEL, budget_pct=0)).values()) == {"off"}


def test_entry_points_and_boundaries_are_chosen_before_hot_trivial_helpers(app):
    analysis, calls = app
    doc = build_plan(analysis, calls, MODEL, budget_pct=3)
    chosen = levels(doc)
    assert chosen["shop.views:checkout"] != "off"
    assert chosen["shop.views:notify"] != "off"
    assert chosen["shop.views:price"] == "off"            # called 10x per request, trivial
    assert "would cost" in doc["functions"]["shop.views:price"]["reason"]


def test_every_function_has_a_reason_and_full_captures_what_it_has(app):
    analysis, calls = app
    doc = build_plan(analysis, calls, MODEL, budget_pct=1000)
    for key, entry in doc["functions"].items():
        assert entry["reason"].startswith(entry["level"]), key
    assert doc["functions"]["shop.views:checkout"]["capture"] == ["args", "exceptions", "return", "state"]
    assert doc["functions"]["shop.views:fmt"]["capture"] == ["args", "exceptions", "return"]
    assert "state" in doc["functions"]["shop.views:Cart.add"]["capture"]


def test_overrides_take_precedence_pin_then_exclude_then_include(app):
    analysis, calls = app
    overrides = Overrides(
        include=["shop.views:price", "shop.views:fmt"],
        exclude=["shop.views:check*", "shop.views:fmt"],
        pin={"shop.views:Cart.*": "full", "shop.views:check*": "boundaries"},
    )
    doc = build_plan(analysis, calls, MODEL, budget_pct=0, overrides=overrides)
    chosen = levels(doc)
    assert chosen["shop.views:checkout"] == "boundaries"   # pin beats exclude
    assert chosen["shop.views:fmt"] == "off"               # exclude beats include
    assert chosen["shop.views:price"] == "boundaries"      # include beats the optimiser
    assert chosen["shop.views:Cart.add"] == "full"
    assert "pinned by --pin shop.views:Cart.*=full" in doc["functions"]["shop.views:Cart.add"]["reason"]
    assert "excluded by --exclude shop.views:fmt" in doc["functions"]["shop.views:fmt"]["reason"]
    assert doc["estimate"]["over_budget_by_overrides"] is True
    assert doc["overrides"]["pin"] == {"shop.views:Cart.*": "full", "shop.views:check*": "boundaries"}


def test_included_functions_may_still_be_upgraded_to_full_when_it_fits(app):
    analysis, calls = app
    doc = build_plan(analysis, calls, MODEL, budget_pct=1000, overrides=Overrides(include=["shop.views:fmt"]))
    assert levels(doc)["shop.views:fmt"] == "full"
    assert "included by --include shop.views:fmt" in doc["functions"]["shop.views:fmt"]["reason"]


def test_a_valuable_but_hot_entry_point_is_sampled_instead_of_dropped(analyse_tree):
    analysis = analyse_tree({"svc/api.py": """
        import requests
        from flask import Flask
        app = Flask(__name__)

        @app.route("/ping")
        def ping():
            return requests.get("http://backend/ping").text

        def work():
            x = 0
            for i in range(100):
                x += i
            return x
    """})
    calls = {"svc.api:ping": 1_000_000.0, "svc.api:work": 1000.0}
    doc = build_plan(analysis, calls, MODEL, budget_pct=0.2)
    ping = doc["functions"]["svc.api:ping"]
    assert ping["level"] == "boundaries" and 0 < ping["sampling"] < 1
    assert "sampled at" in ping["reason"]
    assert doc["estimate"]["overhead_pct"] <= 0.2 + 1e-9


def test_measured_counts_and_run_time_drive_the_choice(app):
    analysis, _ = app
    never = {key: 0.0 for key in analysis.functions}
    doc = build_plan(analysis, never, MODEL, budget_pct=1, frequencies="profile", baseline_us=1000.0)
    assert set(levels(doc).values()) == {"full"}            # nothing runs: recording is free
    assert doc["estimate"]["frequencies"] == "profile"
    assert doc["estimate"]["baseline_us"] == 1000.0
    hot = dict(never, **{"shop.views:price": 1e6})
    doc = build_plan(analysis, hot, MODEL, budget_pct=1, frequencies="profile", baseline_us=1e6)
    assert levels(doc)["shop.views:price"] == "off"


def test_the_plan_document_is_hashed_and_loadable(app, tmp_path):
    import json

    from scope_otel.plan import content_hash, load_plan

    analysis, calls = app
    doc = build_plan(analysis, calls, MODEL, budget_pct=5)
    assert doc["hash"] == content_hash(doc)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    plan = load_plan(str(path))
    assert plan.hash == doc["hash"]
    assert plan.for_function("shop.views", "checkout").level == doc["functions"]["shop.views:checkout"]["level"]


def test_a_fixed_start_up_cost_is_charged_once_and_only_when_something_is_recorded(app):
    analysis, calls = app
    doc = build_plan(analysis, calls, MODEL, budget_pct=50, baseline_us=1000.0, fixed_us=100.0,
                     frequencies="profile")
    assert doc["estimate"]["fixed_us"] == 100.0
    assert doc["estimate"]["overhead_us"] >= 100.0
    assert doc["estimate"]["overhead_pct"] <= 50 + 1e-9
    too_dear = build_plan(analysis, calls, MODEL, budget_pct=5, baseline_us=1000.0, fixed_us=100.0,
                          frequencies="profile")
    assert set(levels(too_dear).values()) == {"off"}
    assert too_dear["estimate"]["overhead_us"] == 0.0
    assert "start-up alone (10% of run time) exceeds the budget" in too_dear["functions"]["shop.views:checkout"]["reason"]
