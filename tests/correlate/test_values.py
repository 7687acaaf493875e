"""Captured values: truncated to max_value_length and redacted (scope_otel.redact), both counted."""
from __future__ import annotations

from scope_otel import redact
from scope_otel.capture import runtime
from scope_otel.correlate.values import ELLIPSIS, REDACTED, ValuePolicy


def test_secret_argument_names_are_redacted_and_counted(pipeline, fn):
    fid = fn("login", level="full")
    before = redact.count()
    runtime.exit(runtime.enter(fid, {"user": "ann", "password": "hunter2", "api_token": "t0k"}))
    (span,) = pipeline.spans()
    assert span.attributes["scope.arg.user"] == "ann"
    assert span.attributes["scope.arg.password"] == REDACTED
    assert span.attributes["scope.arg.api_token"] == REDACTED
    assert "hunter2" not in str(span.attributes)
    assert pipeline.processor.stats()["values_redacted"] - before == 2


def test_secrets_inside_a_repr_are_redacted(pipeline, fn):
    fid = fn("connect", level="full")
    headers = {"Authorization": "Bearer abc", "Accept": "json"}
    runtime.exit(runtime.enter(fid, {"headers": headers}), "dsn user=x password=s3cret host=db")
    (span,) = pipeline.spans()
    assert "abc" not in span.attributes["scope.arg.headers"]
    assert "'Accept': 'json'" in span.attributes["scope.arg.headers"]
    assert "s3cret" not in span.attributes["scope.return"]
    assert "host=db" in span.attributes["scope.return"]


def test_secret_state_targets_are_redacted(pipeline, fn):
    fid = fn("rotate", level="full")
    token = runtime.enter(fid)
    runtime.state_change(token, "self.session_key", "abcdef")
    runtime.exit(token)
    (span,) = pipeline.spans()
    (event,) = span.events
    assert event.attributes["scope.value"] == REDACTED


def test_long_values_are_truncated_and_counted(pipeline, fn):
    fid = fn("bulk", level="full")
    runtime.exit(runtime.enter(fid, {"rows": list(range(1000))}), "x" * 10_000)
    (span,) = pipeline.spans()
    limit = pipeline.processor._correlator.policy.max_value_length
    assert len(span.attributes["scope.arg.rows"]) == limit + 1
    assert span.attributes["scope.return"].endswith(ELLIPSIS)
    assert pipeline.processor.stats()["values_truncated"] == 2


def test_policy_uses_configured_length_and_patterns():
    before = redact.count()
    policy = ValuePolicy(max_value_length=16, redactor=redact.Redactor(["pin"], shapes=False))
    assert policy.format("pin_code", 1234) == REDACTED
    assert policy.format("password", "shown") == "shown"  # only the patterns given
    assert policy.format("text", "a" * 40) == "a" * 16 + ELLIPSIS
    assert (redact.count() - before, policy.truncated) == (1, 1)


def test_a_secret_held_under_a_secret_name_is_hidden_elsewhere_in_the_call(pipeline, fn):
    fid = fn("Client.set_password", level="full")
    token = runtime.enter(fid, {"value": "Hunter2-value"})
    runtime.state_change(token, "self.password", "Hunter2-value")
    runtime.exit(token, "stored Hunter2-value")
    (span,) = pipeline.spans()
    assert "Hunter2-value" not in str(span.attributes) + str([e.attributes for e in span.events])
    assert span.attributes["scope.arg.value"] == REDACTED
