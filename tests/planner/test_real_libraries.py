"""The planner on real code installed from PyPI: Flask, SQLAlchemy and Django sources."""
from __future__ import annotations

import importlib.util

import pytest

from scope_otel.planner.analysis import analyse
from scope_otel.planner.callgraph import static_frequencies
from scope_otel.planner.costmodel import CostModel
from scope_otel.planner.orchestrator import build_plan


def package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed")
    return list(spec.submodule_search_locations)[0]


@pytest.fixture(scope="module")
def flask_analysis():
    return analyse([package_dir("flask")])


@pytest.fixture(scope="module")
def sqlalchemy_analysis():
    return analyse([package_dir("sqlalchemy")])


@pytest.fixture(scope="module")
def django_analysis():
    return analyse([package_dir("django")])


def test_flask_wsgi_app_is_found_with_its_exception_handling(flask_analysis):
    info = flask_analysis.functions["flask.app:Flask.wsgi_app"]
    assert info.file.endswith("flask/app.py")
    c = info.complexity()
    assert c["handlers"] >= 2 and c["cyclomatic"] > 1
    assert "flask.app:Flask.full_dispatch_request" in info.callees   # self.m() resolved
    assert flask_analysis.skipped == []


def test_flask_recursive_helpers_are_found_recursive(flask_analysis):
    assert flask_analysis.functions["flask.helpers:_split_blueprint_path"].recursion == "direct"
    assert flask_analysis.functions["flask.json.tag:TaggedJSONSerializer._untag_scan"].recursion == "direct"
    assert flask_analysis.functions["flask.app:Flask.wsgi_app"].recursion == "none"


def test_flask_generators_are_recognised(flask_analysis):
    gens = {k for k, i in flask_analysis.functions.items() if "generator" in i.patterns}
    assert "flask.helpers:stream_with_context.<locals>.generator" in gens


def test_sqlalchemy_source_shows_engine_queue_and_recursion(sqlalchemy_analysis):
    fns = sqlalchemy_analysis.functions
    assert "sqlalchemy.engine.create:create_engine" in fns
    assert fns["sqlalchemy.pool.impl:QueuePool._do_get"].recursion == "direct"
    assert fns["sqlalchemy.sql.coercions:_deep_is_literal"].recursion == "direct"
    assert fns["sqlalchemy.sql.coercions:expect"].recursion == "mutual"
    assert "queue.put" in fns["sqlalchemy.util.queue:AsyncAdaptedQueue.put"].patterns
    assert any("sqlalchemy.engine" in i.patterns for i in fns.values())
    assert sum("coroutine" in i.patterns for i in fns.values()) > 50


def test_django_views_models_middleware_and_receivers_are_recognised(django_analysis):
    fns = django_analysis.functions
    assert "django.model" in fns["django.contrib.auth.base_user:AbstractBaseUser.save"].patterns
    assert "django.middleware" in fns["django.middleware.common:CommonMiddleware.process_request"].patterns
    assert "django.view" in fns["django.contrib.auth.views:LoginView.form_valid"].patterns
    assert "django.view" in fns["django.contrib.auth.views:logout_then_login"].patterns
    receivers = {k for k, i in fns.items() if "django.signal_receiver" in i.patterns}
    assert any(k.startswith("django.test.signals:") for k in receivers)
    assert len(django_analysis.modules) > 800 and django_analysis.skipped == []


def test_a_plan_of_django_stays_within_budget_and_explains_everything(django_analysis):
    model = CostModel(call_us=0.03, stmt_us=0.01, check_us=0.01, boundaries_us=1.0, full_us=1.5,
                      arg_us=0.1, container_us=5.0, sampled_out_us=0.15, state_us=0.3, offpath_us=3.0, source="test")
    doc = build_plan(django_analysis, static_frequencies(django_analysis), model, budget_pct=2)
    assert doc["estimate"]["overhead_pct"] <= 2 + 1e-9
    assert all(f["reason"] for f in doc["functions"].values())
    levels = doc["estimate"]["levels"]
    assert levels["off"] > 0 and levels["boundaries"] + levels["full"] > 0
