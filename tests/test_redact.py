"""One redaction for every value scope-otel stores: user patterns extend the
built-in rules, replacing them is its own key, every spelling is caught, and
each redaction is counted."""
from __future__ import annotations

import base64

import pytest

from scope_otel import config, redact
from scope_otel.capture import runtime
from scope_otel.redact import REDACTED, Redactor
from tests.capture.conftest import Pipeline, impl  # noqa: F401  (fixture)
from tests.support.procs import clean_env, run, tool


@pytest.fixture
def configured():
    """Install a configuration built from environment variables; restore after."""
    saved = config.current()

    def install(**env: str) -> None:
        config.set_current(config.load(env=env))

    yield install
    config.set_current(saved)


def _login_span(impl_name: str):
    pipeline = Pipeline()
    try:
        fid = runtime.register("tests.sample", "login", __file__, 1, level="full")
        runtime.exit(runtime.enter(fid, {"user": "ann", "password": "hunter2-pw", "x_api_key": "k-123456"}))
        (span,) = pipeline.spans()
        return span
    finally:
        pipeline.processor.shutdown(timeout_millis=5000)


def test_a_user_pattern_extends_the_defaults(configured, impl):
    configured(SCOPE_OTEL_REDACT="x-api-key,pin")
    span = _login_span(impl)
    assert span.attributes["scope.arg.password"] == REDACTED  # the built-in name still applies
    assert span.attributes["scope.arg.x_api_key"] == REDACTED
    assert span.attributes["scope.arg.user"] == "ann"
    assert redact.current().secret_name("pin_code")


def test_replacing_the_defaults_is_its_own_explicit_key(configured, impl):
    configured(SCOPE_OTEL_REDACT="pin", SCOPE_OTEL_REDACT_DEFAULTS="false")
    span = _login_span(impl)
    assert span.attributes["scope.arg.password"] == "hunter2-pw"
    assert redact.current().secret_name("pin_code")
    assert not redact.current().secret_name("password")


BASIC = base64.b64encode(b"deploy:pa55word").decode()


@pytest.mark.parametrize(
    "text, secret",
    [
        ("{'X-Api-Key': 'k9x8c7v6'}", "k9x8c7v6"),
        ("{'x-api-key': 'k9x8c7v6', 'X-API-Key': 'j1h2g3f4'}", "j1h2g3f4"),
        ("{'x-api-key': 'k9x8c7v6', 'X-API-Key': 'j1h2g3f4'}", "k9x8c7v6"),
        ("[('Accept', 'json'), ('Authorization', 'Bearer tok-abcdef12')]", "tok-abcdef12"),
        ("[('Proxy-Authorization', 'Digest response=ab12cd34')]", "ab12cd34"),
        ("postgres://u:PASSw0rd1@db:5432/app", "PASSw0rd1"),
        ("connect to https://bot:s3cr3tpw@git.example.com/r.git now", "s3cr3tpw"),
        ("redis://:s3cr3tpw@cache:6379/0", "s3cr3tpw"),
        ("sent bearer abcdefgh12345 upstream", "abcdefgh12345"),
        (f"header Basic {BASIC}", BASIC),
        ("{'passphrase': 'open sesame'}", "open sesame"),
        ("passphrase=opensesame", "opensesame"),
        ("{'refresh_token': 'r-1234', 'id_token': 'i-5678'}", "i-5678"),
        ("Cookie: theme=dark; sessionid=abc123xyz", "abc123xyz"),
        ("Set-Cookie: csrftoken=abc123xyz; Path=/", "abc123xyz"),
        ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIabc123\n-----END EC PRIVATE KEY-----", "MHcCAQEEIabc123"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN (cut", "MIIEvQIBADAN"),
        ("/login?next=%2F&api_key=abc%2F123", "abc%2F123"),
        ("/cb?note=Bearer+abcdefgh12345", "abcdefgh12345"),
        ("{'dsn': 'host=db password=pw-in-dsn-1 dbname=x'}", "pw-in-dsn-1"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "dozjgNryP4J3jVmNHl0w5N"),
        ("push with ghp_16C7e42F292c6912E7710c838347Ae178B4a", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
        ("key AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ],
)
def test_defaults_catch_every_spelling_and_shape(text, secret):
    before = redact.count()
    shown = Redactor().text(text)
    assert secret not in shown and REDACTED in shown, shown
    assert redact.count() > before


@pytest.mark.parametrize(
    "text",
    [
        "basic information about the author",
        "the bearer of good news",
        "session_factory=make_session",
        "http://localhost:8080/items?page=2&sort=name",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "{'user': 'ann', 'count': 3}",
    ],
)
def test_ordinary_text_is_left_alone_and_not_counted(text):
    before = redact.count()
    assert Redactor().text(text) == text
    assert redact.count() == before


def test_names_match_in_every_spelling():
    r = Redactor()
    for name in ("X-API-Key", "x_api_key", "apiKey", "API Key", "Proxy-Authorization", "set-cookie",
                 "self.db_password", "http.request.header.x-api-key", "client_secret", "PASSPHRASE"):
        assert r.secret_name(name), name
    for name in ("author", "session_factory", "user", "http.request.header.accept"):
        assert not r.secret_name(name), name


def test_config_command_shows_the_effective_redaction_list(tmp_path):
    env = clean_env(SCOPE_OTEL_REDACT="pin_code")
    shown = run([tool("scope-otel"), "config"], env, cwd=str(tmp_path))
    assert shown.returncode == 0, shown.stderr
    names = next(line for line in shown.stdout.splitlines() if line.strip().startswith("names:"))
    assert "password" in names and "api_key" in names and "pin_code" in names
    assert "Bearer" in shown.stdout and "PRIVATE KEY" in shown.stdout
    replaced = run([tool("scope-otel"), "config"], clean_env(SCOPE_OTEL_REDACT="pin_code", SCOPE_OTEL_REDACT_DEFAULTS="false"),
                   cwd=str(tmp_path))
    names = next(line for line in replaced.stdout.splitlines() if line.strip().startswith("names:"))
    assert names.split() == ["names:", "pin_code"]


def test_the_c_batch_check_picks_the_same_spans_as_the_python_one():
    from opentelemetry.sdk.trace import TracerProvider

    c_check = redact._c_needs_look()
    if c_check is None:
        pytest.skip("the C twin (scope_otel/_redactc.c) is not built, or SCOPE_OTEL_PURE_PYTHON is set")
    tracer = TracerProvider().get_tracer("twin")
    r = Redactor()
    known = []
    for i in range(10):  # what the rules have seen: these keys and values
        with tracer.start_as_current_span("seen", attributes={"http.route": "/items/<id>", "n": i}) as span:
            pass
        known.append(span)
    redact.scrub_spans(known, r)
    shapes = [
        {"http.route": "/items/<id>", "n": 1},                # all seen: no look
        {"http.route": "/items/<id>", "other.key": 2},        # a new key
        {"http.route": "/orders/<id>/lines"},                 # a new text
        {"http.route": "/items/<id>", "tags": ("a", "b")},    # a sequence
        {"http.route": "/items/<id>", "n": 3, "x": "abc"},    # a new key with a short text
    ]
    spans = []
    for attrs in shapes:
        with tracer.start_as_current_span("s", attributes=attrs) as span:
            pass
        spans.append(span)
    with tracer.start_as_current_span("e", attributes={"n": 1}) as span:
        span.add_event("an event")
    spans.append(span)
    python = redact._py_needs_look(spans, r)
    assert c_check(spans, r._plain_keys, r._clean) == python
    assert [spans.index(s) for s in python] == [1, 2, 3, 4, 5]


def test_the_c_batch_check_agrees_when_known_keys_and_texts_repeat_across_many_spans():
    # the C check remembers, within one call, the key and text objects it found
    # known: more of them than it remembers, repeated, then new ones mixed in
    from opentelemetry.sdk.trace import TracerProvider

    c_check = redact._c_needs_look()
    if c_check is None:
        pytest.skip("the C twin (scope_otel/_redactc.c) is not built, or SCOPE_OTEL_PURE_PYTHON is set")
    tracer = TracerProvider().get_tracer("twin")
    r = Redactor()
    keys = [f"attr.k{i}" for i in range(40)]
    texts = [f"/route/{i}/x" for i in range(40)]

    def span(attrs):
        s = tracer.start_span("s", attributes=attrs)
        s.end()
        return s

    redact.scrub_spans([span({k: t}) for k, t in zip(keys, texts)], r)  # all seen once
    batch = [span({keys[i % 40]: texts[(i * 7) % 40], keys[(i + 3) % 40]: i}) for i in range(120)]
    batch[50] = span({keys[1]: "/never/seen/before"})
    batch[90] = span({"attr.new": 1, keys[2]: texts[2]})
    batch[110] = span({keys[3]: "/route/3/" + "x"})  # equal to a known text, another object
    python = redact._py_needs_look(batch, r)
    assert c_check(batch, r._plain_keys, r._clean) == python
    assert [batch.index(s) for s in python] == [50, 90]
