"""The exit summary and ``scope-otel config`` tell every count users should see, in words."""
from __future__ import annotations

import subprocess
import sys

from scope_otel.launcher import summary


class _Processor:
    """A processor whose stats hold every count the capture layer keeps, each non-zero."""

    def __init__(self, **stats):
        self._stats = stats

    def stats(self):
        return dict(self._stats)


class _Destination:
    def account(self):
        return {"name": "otlp grpc 127.0.0.1:4317", "word": "exported", "exported": 90, "failed": {}}


def test_every_count_of_the_processor_and_runtime_is_told_in_words_not_as_a_dict():
    counts = dict(written=100, unsampled=3, calls_unsampled=4, dropped_at_fork=5, unconverted=10,
                  values_truncated=6, values_redacted=7, internal_errors=8, orphan_messages=9)
    text = summary.render(summary.collect({"processor": _Processor(**counts), "destinations": [_Destination()]}))
    assert "could not be read, converted or redacted 10" in text  # part of what the destination did not get
    assert "NOT exported 10" in text
    for key, words in summary.COUNTS.items():
        if key in counts:
            assert "  " + words.format(n=counts[key]) in text, (key, text)
    assert "{" not in text and "}" not in text


def test_the_integrations_counts_are_in_the_summary(monkeypatch):
    from scope_otel.instrumentors import _report, handoff

    monkeypatch.setattr(handoff, "_DROPPED", [12])
    monkeypatch.setattr(_report, "_FAILURES", _report.Counter({"flask.start": 2}))
    text = summary.render(summary.collect({}))
    assert "queue puts not linked to their get: 12" in text
    assert "integration errors (each logged once, never raised into the program): flask.start ×2" in text


def test_scope_otel_config_lists_every_count_the_summary_can_show(tmp_path):
    out = subprocess.run([sys.executable, "-m", "scope_otel.launcher.cli", "config"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    legend = out.stdout[out.stdout.index("counted, and shown at exit"):]
    for words in summary.COUNTS.values():
        assert words.format(n="N") in legend
    assert "could not be read, converted or redacted" in legend and "integration errors" in legend
