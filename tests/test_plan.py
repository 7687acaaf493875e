"""The Plan contract: loading, validation errors that name the field, queries, hash."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from scope_otel.plan import FunctionPlan, Plan, PlanError, content_hash, load_plan

SCHEMA = os.path.join(os.path.dirname(__file__), "..", "schemas", "plan.schema.json")

GOOD = {
    "version": 1,
    "scope_otel_version": "0.1.0",
    "budget_pct": 5,
    "defaults": {"level": "off", "capture": [], "sampling": 1.0},
    "functions": {
        "shop.views:checkout": {"level": "full", "capture": ["args", "return", "state"],
                                "sampling": 1.0, "reason": "entry point"},
        "shop.views:Cart.total": {"level": "boundaries", "sampling": 0.25, "reason": "hot"},
        "shop.util:fmt": {"level": "off", "reason": "trivial"},
    },
    "overrides": {"include": [], "exclude": ["shop.util:*"], "pin": {"shop.admin.*": "boundaries"}},
    "estimate": {"overhead_pct": 1.5},
}


def write(tmp_path, doc, name="plan.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_a_valid_plan_loads_with_modules_functions_and_levels(tmp_path):
    plan = load_plan(write(tmp_path, GOOD))
    assert plan.modules == frozenset({"shop.views"})      # shop.util has only 'off'
    assert plan.functions["shop.views:checkout"] == FunctionPlan(
        "full", frozenset({"args", "return", "state"}), 1.0, "entry point")
    cart = plan.for_function("shop.views", "Cart.total")
    assert cart.level == "boundaries" and cart.sampling == 0.25
    assert cart.capture == frozenset({"exceptions"})       # the level's default capture
    assert plan.for_function("shop.util", "fmt").level == "off"
    assert plan.for_function("shop.views", "missing") is None
    assert plan.budget_pct == 5.0


def test_a_plan_with_every_function_off_is_empty(tmp_path):
    off = {"version": 1, "functions": {"a:f": {"level": "off"}}, "overrides": {"pin": {"b.*": "off"}}}
    assert load_plan(write(tmp_path, off)).empty
    assert not load_plan(write(tmp_path, GOOD, "good.json")).empty
    assert not Plan.from_globs(["x.*"], "boundaries").empty


def test_pins_in_the_file_cover_functions_and_modules_the_analysis_never_saw(tmp_path):
    plan = load_plan(write(tmp_path, GOOD))
    assert plan.wants_module("shop.admin.forms")
    assert plan.wants_module("shop.admin")                  # 'pkg.*' covers the package too
    assert not plan.wants_module("shop.adminx")
    assert plan.for_function("shop.admin.forms", "clean").level == "boundaries"


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d.pop("version"), "$.version"),
    (lambda d: d.update(version=2), "$.version"),
    (lambda d: d.pop("functions"), "$.functions"),
    (lambda d: d.update(functions=[]), "$.functions"),
    (lambda d: d["functions"]["shop.views:checkout"].update(level="everything"),
     '$.functions["shop.views:checkout"].level'),
    (lambda d: d["functions"]["shop.views:checkout"].update(capture=["args", "secrets"]),
     '$.functions["shop.views:checkout"].capture[1]'),
    (lambda d: d["functions"]["shop.views:Cart.total"].update(sampling=1.5),
     '$.functions["shop.views:Cart.total"].sampling'),
    (lambda d: d["functions"]["shop.views:Cart.total"].update(sampling="often"),
     '$.functions["shop.views:Cart.total"].sampling'),
    (lambda d: d["functions"].update({"no_colon": {"level": "full"}}), '$.functions["no_colon"]'),
    (lambda d: d["overrides"]["pin"].update({"x.*": "max"}), '$.overrides.pin["x.*"]'),
    (lambda d: d["overrides"].update(exclude="x.*"), "$.overrides.exclude"),
    (lambda d: d.update(budget_pct=-1), "$.budget_pct"),
    (lambda d: d.update(defaults={"level": "loud"}), "$.defaults.level"),
])
def test_a_malformed_plan_fails_naming_the_file_and_the_field(tmp_path, mutate, where):
    doc = json.loads(json.dumps(GOOD))
    mutate(doc)
    path = write(tmp_path, doc)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    message = str(info.value)
    assert message.startswith(path + ": ")
    assert where in message


def test_unreadable_or_non_json_plans_fail_with_the_file_name(tmp_path):
    with pytest.raises(PlanError, match="cannot read plan file"):
        load_plan(str(tmp_path / "absent.json"))
    with pytest.raises(PlanError, match=r"not valid JSON \(line 1"):
        load_plan(write(tmp_path, "{not json"))
    assert issubclass(PlanError, ValueError)


def test_hash_follows_what_is_instrumented_not_the_explanations(tmp_path):
    plan = load_plan(write(tmp_path, GOOD))
    assert plan.hash == content_hash(GOOD) and plan.hash.startswith("sha256:")
    explained = json.loads(json.dumps(GOOD))
    explained["functions"]["shop.views:checkout"]["reason"] = "a different story"
    explained["estimate"] = {"overhead_pct": 9.0}
    assert load_plan(write(tmp_path, explained, "explained.json")).hash == plan.hash
    spelled_out = json.loads(json.dumps(GOOD))
    spelled_out["functions"]["shop.views:Cart.total"]["capture"] = ["exceptions"]  # the default
    assert load_plan(write(tmp_path, spelled_out, "spelled.json")).hash == plan.hash
    resampled = json.loads(json.dumps(GOOD))
    resampled["functions"]["shop.views:Cart.total"]["sampling"] = 0.5
    assert load_plan(write(tmp_path, resampled, "resampled.json")).hash != plan.hash
    # The stored hash is not trusted: an edited plan gets the hash of what it says.
    edited = json.loads(json.dumps(GOOD))
    edited["hash"] = plan.hash
    edited["functions"]["shop.views:checkout"]["level"] = "boundaries"
    assert load_plan(write(tmp_path, edited, "edited.json")).hash != plan.hash
    same = dict(GOOD, hash="sha256:" + "0" * 64)
    assert load_plan(write(tmp_path, same, "same.json")).hash == plan.hash


def test_from_globs_instruments_every_function_of_matching_modules():
    plan = Plan.from_globs(["shop.*", "billing"], "full")
    assert plan.wants_module("shop") and plan.wants_module("shop.views.cart")
    assert plan.wants_module("billing") and not plan.wants_module("billing2")
    fp = plan.for_function("shop.views", "Cart.total")
    assert fp.level == "full" and fp.capture == frozenset({"args", "return", "exceptions", "state"})
    assert plan.for_function("other", "f") is None
    assert Plan.from_globs(["shop.*"], "full").hash == plan.from_globs(["shop.*"], "full").hash
    assert Plan.from_globs(["shop.*"], "boundaries").hash != Plan.from_globs(["shop.*"], "full").hash
    with pytest.raises(PlanError):
        Plan.from_globs(["x"], "loud")


def test_loading_a_plan_imports_nothing_heavy(tmp_path):
    path = write(tmp_path, GOOD)
    code = (
        "import sys\n"
        "from scope_otel.plan import load_plan\n"
        f"load_plan({path!r})\n"
        "heavy = [m for m in ('ast', 'opentelemetry', 'jsonschema', 'dataclasses', 'inspect',"
        " 'scope_otel.planner.analysis', 'scope_otel.config') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_schema_accepts_the_example_and_rejects_what_load_plan_rejects(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    with open(SCHEMA, encoding="utf-8") as fh:
        schema = json.load(fh)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(GOOD)) == []
    bad = json.loads(json.dumps(GOOD))
    bad["functions"]["shop.views:checkout"]["level"] = "everything"
    assert list(validator.iter_errors(bad))
