"""The cost model: calibrated on this machine, cached, and ordered sensibly."""
from __future__ import annotations

import dataclasses
import json

import pytest

from scope_otel.planner import costmodel


def test_calibration_measures_positive_costs_and_is_cached(cost_cache):
    first = costmodel.calibrate(iterations=2000)
    assert not first.cached
    assert first.boundaries_us > 0 and first.full_us > 0 and first.call_us >= 0
    assert first.source.startswith("scope_otel.capture.runtime")
    assert cost_cache.exists()
    entries = json.loads(cost_cache.read_text())
    assert first.key in entries
    second = costmodel.calibrate(iterations=2000)
    assert second.cached and second.boundaries_us == first.boundaries_us
    third = costmodel.calibrate(refresh=True, iterations=2000)
    assert not third.cached


def test_a_corrupt_cache_is_replaced_by_a_fresh_measurement(cost_cache):
    cost_cache.parent.mkdir(parents=True)
    cost_cache.write_text("{ not json")
    model = costmodel.calibrate(iterations=2000)
    assert not model.cached
    assert model.key in json.loads(cost_cache.read_text())


def test_recording_more_costs_more():
    model = costmodel.CostModel(call_us=0.05, stmt_us=0.02, check_us=0.01, boundaries_us=1.0,
                                full_us=2.0, arg_us=0.1, container_us=5.0, sampled_out_us=0.1, state_us=0.3,
                                offpath_us=2.0, source="test")
    off = model.call_cost("off")
    boundaries = model.call_cost("boundaries")
    full = model.call_cost("full", nargs=3, mutations=2)
    assert off < boundaries < full
    assert model.call_cost("boundaries", sampling=0.1) < boundaries
    assert model.call_cost("full", nargs=5) > model.call_cost("full", nargs=1)
    assert model.call_cost("full", nargs=1, containers=1) > model.call_cost("full", nargs=1)


@pytest.mark.parametrize("exporter", ["otlp", "clickhouse"])
def test_the_exporter_in_use_is_priced_per_span(cost_cache, exporter):
    none = costmodel.calibrate(iterations=2000, exporter="none")
    priced = costmodel.calibrate(iterations=2000, exporter=exporter)
    assert none.export_us == 0.0 and none.exporter == "none"
    assert priced.export_us > 0 and priced.exporter == exporter
    assert priced.key != none.key                       # cached separately
    # every recorded call carries the exporter's price (compared within one model: two
    # calibrations differ by more than the price from noise alone)
    unexported = dataclasses.replace(priced, export_us=0.0)
    assert priced.call_cost("boundaries") == pytest.approx(unexported.call_cost("boundaries") + priced.export_us)


def test_a_cache_entry_missing_a_measurement_is_measured_again(cost_cache):
    first = costmodel.calibrate(iterations=2000, exporter="none")
    entries = json.loads(cost_cache.read_text())
    del entries[first.key]["startup_us"]
    cost_cache.write_text(json.dumps(entries))
    again = costmodel.calibrate(iterations=2000, exporter="none")
    assert not again.cached
