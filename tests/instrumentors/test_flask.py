"""Flask integration over real HTTP (werkzeug's server on loopback)."""
from __future__ import annotations

import flask
import pytest
import requests
from opentelemetry.trace import SpanKind, StatusCode

from scope_otel.instrumentors import _report
from scope_otel.instrumentors.flask import ScopeFlaskInstrumentor
from scope_otel.instrumentors.sqlalchemy import ScopeSQLAlchemyInstrumentor
from tests.instrumentors.apps import shop
from tests.instrumentors.conftest import instrumented, serve

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@pytest.fixture(scope="module", autouse=True)
def shop_db():
    shop.reset_db()


def server_span(spans, name):
    found = spans.named(name)
    assert found, f"no span {name!r}; got {[s.name for s in spans.all()]}"
    return found[0]


def test_app_created_before_instrumenting_gets_server_span_with_sql_children(spans):
    # shop.app and shop.engine were created at import, before instrumenting
    with instrumented(ScopeFlaskInstrumentor(), spans), instrumented(ScopeSQLAlchemyInstrumentor(), spans):
        with serve(shop.app) as url:
            response = requests.get(f"{url}/items/1?full=1", headers={"User-Agent": "tests/1"})
        assert response.json() == {"id": 1, "name": "apple"}
        span = server_span(spans, "GET /items/<int:item_id>")
    assert span.kind is SpanKind.SERVER
    assert span.parent is None
    attrs = dict(span.attributes)
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.route"] == "/items/<int:item_id>"
    assert attrs["url.path"] == "/items/1"
    assert attrs["url.query"] == "full=1"
    assert attrs["url.scheme"] == "http"
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["client.address"] == "127.0.0.1"
    assert attrs["user_agent.original"] == "tests/1"
    assert "http.method" not in attrs  # stable conventions by default
    sql = [s for s in spans.children(span) if s.kind is SpanKind.CLIENT]
    assert [s.attributes["db.operation.name"] for s in sql] == ["SELECT"]
    assert sql[0].attributes["db.system.name"] == "sqlite"


def test_incoming_traceparent_becomes_the_parent(spans):
    with instrumented(ScopeFlaskInstrumentor(), spans), serve(shop.app) as url:
        requests.get(f"{url}/health", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        span = server_span(spans, "GET /health")
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote


def test_incoming_baggage_is_current_in_the_view(spans):
    from opentelemetry import baggage

    app = flask.Flask("baggage")
    app.get("/b")(lambda: {"user": baggage.get_baggage("user")})
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "baggage": "user=alice"}
    with instrumented(ScopeFlaskInstrumentor(), spans), serve(app) as url:
        assert requests.get(f"{url}/b", headers=headers).json() == {"user": "alice"}
        span = server_span(spans, "GET /b")
    assert format(span.parent.span_id, "016x") == PARENT_ID


def test_view_exception_is_recorded_with_error_type_and_500(spans):
    with instrumented(ScopeFlaskInstrumentor(), spans), serve(shop.app) as url:
        assert requests.get(f"{url}/boom").status_code == 500
        span = server_span(spans, "GET /boom")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ZeroDivisionError"
    assert span.attributes["http.response.status_code"] == 500
    events = [e for e in span.events if e.name == "exception"]
    assert len(events) == 1
    assert events[0].attributes["exception.type"] == "ZeroDivisionError"


def test_not_found_is_not_an_error(spans):
    with instrumented(ScopeFlaskInstrumentor(), spans), serve(shop.app) as url:
        assert requests.get(f"{url}/items/999").status_code == 404
        span = server_span(spans, "GET /items/<int:item_id>")
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes["http.response.status_code"] == 404


def test_excluded_urls_get_no_span(spans, monkeypatch):
    monkeypatch.setenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "/health,/page")
    with instrumented(ScopeFlaskInstrumentor(), spans), serve(shop.app) as url:
        requests.get(f"{url}/health")
        requests.get(f"{url}/items/2")
        spans.named("GET /items/<int:item_id>")
    assert [s.name for s in spans.all() if s.kind is SpanKind.SERVER] == ["GET /items/<int:item_id>"]


def test_captured_headers_are_recorded_and_secrets_sanitised(spans, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-tenant,authorization,x-custom-.*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "content-type")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "x-custom-pin")
    with instrumented(ScopeFlaskInstrumentor(), spans), serve(shop.app) as url:
        requests.get(
            f"{url}/health",
            headers={"X-Tenant": "acme", "Authorization": "Bearer abc", "X-Custom-Pin": "1234", "X-Other": "no"},
        )
        attrs = dict(server_span(spans, "GET /health").attributes)
    assert attrs["http.request.header.x-tenant"] == ("acme",)
    assert attrs["http.request.header.authorization"] == ("[REDACTED]",)
    assert attrs["http.request.header.x-custom-pin"] == ("[REDACTED]",)
    assert "http.request.header.x-other" not in attrs
    assert attrs["http.response.header.content-type"][0].startswith("text/html")


def test_semconv_opt_in_dup_sets_old_and_stable_names(spans, monkeypatch):
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    with instrumented(ScopeFlaskInstrumentor(), spans), serve(shop.app) as url:
        requests.get(f"{url}/health")
        attrs = dict(server_span(spans, "GET /health").attributes)
    assert attrs["http.request.method"] == attrs["http.method"] == "GET"
    assert attrs["http.response.status_code"] == attrs["http.status_code"] == 200
    assert attrs["http.target"] == "/health"


def test_request_and_response_hooks_see_the_span(spans):
    seen = []

    def request_hook(span, environ):
        span.set_attribute("hook.path", environ["PATH_INFO"])

    def response_hook(span, status, headers):
        seen.append(status)
        span.set_attribute("hook.status", status)

    with instrumented(ScopeFlaskInstrumentor(), spans, request_hook=request_hook, response_hook=response_hook):
        with serve(shop.app) as url:
            requests.get(f"{url}/health")
            attrs = dict(server_span(spans, "GET /health").attributes)
    assert attrs["hook.path"] == "/health"
    assert attrs["hook.status"] == "200 OK"
    assert seen == ["200 OK"]


def test_failing_hook_does_not_change_the_response(spans):
    def request_hook(span, environ):
        raise RuntimeError("broken hook")

    with instrumented(ScopeFlaskInstrumentor(), spans, request_hook=request_hook), serve(shop.app) as url:
        response = requests.get(f"{url}/items/2")
        assert server_span(spans, "GET /items/<int:item_id>")
    assert response.status_code == 200
    assert response.json()["name"] == "pear"
    assert _report.stats()["flask.request_hook"] >= 1  # counted, not raised


def test_template_rendering_is_a_child_span(spans):
    with instrumented(ScopeFlaskInstrumentor(), spans), serve(shop.app) as url:
        assert requests.get(f"{url}/page").text == "<p>3</p>"
        request = server_span(spans, "GET /page")
    renders = [s for s in spans.children(request) if s.name.startswith("render ")]
    assert len(renders) == 1 and renders[0].kind is SpanKind.INTERNAL


def test_app_instrumented_by_contrib_gets_no_second_span(spans):
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = flask.Flask("contrib_app")
    app.get("/x")(lambda: "x")
    FlaskInstrumentor().instrument_app(app, tracer_provider=spans.provider)
    try:
        with instrumented(ScopeFlaskInstrumentor(), spans), serve(app) as url:
            requests.get(f"{url}/x")
            spans.wait(1, lambda s: s.kind is SpanKind.SERVER)
            spans.wait(2, lambda s: s.kind is SpanKind.SERVER, timeout=0.3)  # a duplicate would show up here
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    server = [s for s in spans.all() if s.kind is SpanKind.SERVER]
    assert len(server) == 1
    assert server[0].instrumentation_scope.name.startswith("opentelemetry.instrumentation.flask")


def test_mounted_flask_app_gets_one_span(spans):
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    outer = flask.Flask("outer")
    outer.get("/")(lambda: "outer")
    outer.wsgi_app = DispatcherMiddleware(outer.wsgi_app, {"/shop": shop.app})
    with instrumented(ScopeFlaskInstrumentor(), spans), serve(outer) as url:
        assert requests.get(f"{url}/shop/health").text == "ok"
        spans.wait(1, lambda s: s.kind is SpanKind.SERVER)
        spans.wait(2, lambda s: s.kind is SpanKind.SERVER, timeout=0.3)
    assert len([s for s in spans.all() if s.kind is SpanKind.SERVER]) == 1


def test_uninstrument_puts_flask_back(spans):
    original = flask.Flask.__call__
    with instrumented(ScopeFlaskInstrumentor(), spans):
        assert flask.Flask.__call__ is not original
    assert flask.Flask.__call__ is original
    with serve(shop.app) as url:
        requests.get(f"{url}/health")
    assert spans.all() == []


def test_status_is_the_one_sent_when_middleware_changes_it(spans):
    app = flask.Flask("rewritten")
    app.get("/x")(lambda: "x")
    inner = app.wsgi_app

    def teapot(environ, start_response):  # WSGI middleware inside Flask.__call__
        return inner(environ, lambda status, headers, *exc: start_response("418 I'M A TEAPOT", headers, *exc))

    app.wsgi_app = teapot
    with instrumented(ScopeFlaskInstrumentor(), spans), serve(app) as url:
        assert requests.get(f"{url}/x").status_code == 418
        span = server_span(spans, "GET /x")
    assert span.attributes["http.response.status_code"] == 418


class _Stop(BaseException):
    """Not an Exception: Flask sends no got_request_exception for it."""


@pytest.mark.parametrize("error, propagate", [
    pytest.param(ZeroDivisionError, True, id="propagated: the signal, then leaving the app"),
    pytest.param(_Stop, False, id="a BaseException: no signal, only leaving the app"),
])
def test_an_exception_leaving_the_view_is_recorded_once(spans, error, propagate):
    app = flask.Flask("raising")
    app.config["PROPAGATE_EXCEPTIONS"] = propagate

    @app.get("/raise")
    def view():
        raise error("raised")

    with instrumented(ScopeFlaskInstrumentor(), spans):
        with pytest.raises(error):
            app.test_client().get("/raise")
        span = server_span(spans, "GET /raise")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == error.__name__
    assert len([e for e in span.events if e.name == "exception"]) == 1


def test_spans_are_freed_without_the_cycle_collector(spans):
    import gc
    import weakref

    from opentelemetry.sdk.trace import SpanProcessor

    from scope_otel.causal.processor import HLCSpanProcessor

    class Watch(SpanProcessor):
        refs: list = []

        def on_start(self, span, parent_context=None):
            self.refs.append(weakref.ref(span))

    spans.provider.add_span_processor(HLCSpanProcessor())
    spans.provider.add_span_processor(Watch())
    gc.collect()
    gc.disable()
    try:
        with instrumented(ScopeFlaskInstrumentor(), spans), instrumented(ScopeSQLAlchemyInstrumentor(), spans):
            assert shop.app.test_client().get("/items/1").status_code == 200
        assert len(Watch.refs) >= 2 and all("scope.hlc" in s.attributes for s in spans.all())
        spans.clear()
        assert [r() for r in Watch.refs if r() is not None] == []
    finally:
        gc.enable()




def test_error_while_streaming_with_context_is_recorded_once(spans):
    app = flask.Flask("streaming")

    @app.get("/stream")
    def stream():
        def chunks():
            yield "first"
            raise ValueError("mid-stream")

        return flask.Response(flask.stream_with_context(chunks()))

    with instrumented(ScopeFlaskInstrumentor(), spans):
        response = app.test_client().get("/stream", buffered=False)
        with pytest.raises(ValueError):
            b"".join(response.response)
        response.close()
        span = server_span(spans, "GET /stream")
    assert span.attributes["error.type"] == "ValueError"
    assert len([e for e in span.events if e.name == "exception"]) == 1


def _parent_of_request(spans, headers=None):
    """Parent of the server span of one request made while a span is current."""
    spans.clear()
    app = flask.Flask("parented")
    app.get("/p")(lambda: "p")
    with instrumented(ScopeFlaskInstrumentor(), spans):
        with spans.tracer.start_as_current_span("ambient") as ambient:
            app.test_client().get("/p", headers=headers or {}).close()  # the span ends with the response
        span = server_span(spans, "GET /p")
    return span.parent, ambient.get_span_context()


@pytest.fixture
def textmap():
    """Set the global propagators for one test, as OTEL_PROPAGATORS would."""
    from opentelemetry import propagate

    saved = propagate.get_global_textmap()
    yield propagate.set_global_textmap
    propagate.set_global_textmap(saved)


def test_request_without_trace_headers_is_a_root_span_with_default_propagators(spans):
    parent, _ = _parent_of_request(spans)
    assert parent is None  # what the tracecontext propagator yields: not the ambient span


def test_baggage_first_propagators_keep_the_ambient_parent_without_headers(spans, textmap):
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    textmap(CompositePropagator([W3CBaggagePropagator(), TraceContextTextMapPropagator()]))
    parent, ambient = _parent_of_request(spans)
    assert parent.span_id == ambient.span_id  # baggage extraction starts from the current context
    parent, _ = _parent_of_request(spans, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert format(parent.span_id, "016x") == PARENT_ID and parent.is_remote


def test_custom_propagator_still_extracts_its_own_header(spans, textmap):
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    class XTrace(TextMapPropagator):  # reads a header that is not in its fields
        def extract(self, carrier, context=None, getter=None):
            value = getter.get(carrier, "x-trace")
            if not value:
                return context
            span = NonRecordingSpan(SpanContext(int(TRACE_ID, 16), int(value[0], 16), True, TraceFlags(1)))
            return set_span_in_context(span, context)

        def inject(self, carrier, context=None, setter=None):
            pass

        @property
        def fields(self):
            return set()

    textmap(CompositePropagator([TraceContextTextMapPropagator(), XTrace()]))
    parent, _ = _parent_of_request(spans, {"x-trace": PARENT_ID})
    assert format(parent.span_id, "016x") == PARENT_ID


class _EndCount:
    """Counts each span's ends and the SDK's "already ended" warnings."""

    def __init__(self, spans, caplog):
        from opentelemetry.sdk.trace import SpanProcessor

        ends: dict[int, int] = {}

        class Count(SpanProcessor):
            def on_end(self, span):
                ends[span.context.span_id] = ends.get(span.context.span_id, 0) + 1

        spans.provider.add_span_processor(Count())
        self.ends = ends
        self.caplog = caplog

    def check_each_once(self, spans):
        assert all(n == 1 for n in self.ends.values()), self.ends
        assert not [r for r in self.caplog.records if "already ended" in r.getMessage() or "ended span" in r.getMessage()]


def _stream_app():
    app = flask.Flask("unclosed")

    @app.get("/plain")
    def plain():
        return "plain"

    @app.get("/json")
    def json():
        return {"a": 1}

    @app.get("/stream")
    def stream():
        return flask.Response(iter(["a", "b", "c"]))

    @app.get("/template")
    def template():
        return flask.render_template_string("<p>{{ n }}</p>", n=1)

    return app


def test_unclosed_test_client_responses_each_get_their_server_span(spans, caplog):
    # Werkzeug's test client closes a response only when the test does
    count = _EndCount(spans, caplog)
    app = _stream_app()
    with instrumented(ScopeFlaskInstrumentor(), spans):
        client = app.test_client()
        kept = [client.get("/plain"), client.get("/json"), client.get("/template"), client.get("/stream")]
        assert [r.status_code for r in kept] == [200] * 4
        names = sorted(s.name for s in spans.all() if s.kind is SpanKind.SERVER)
        assert names == ["GET /json", "GET /plain", "GET /template"]  # the stream is still open
        assert kept[3].get_data() == b"abc"  # read to its end: finished
        names = sorted(s.name for s in spans.all() if s.kind is SpanKind.SERVER)
    assert names == ["GET /json", "GET /plain", "GET /stream", "GET /template"]
    (render,) = [s for s in spans.all() if s.name.startswith("render")]
    (page,) = [s for s in spans.all() if s.name == "GET /template"]
    assert render.parent.span_id == page.context.span_id
    for response in kept:
        response.close()  # closing later ends nothing a second time
    count.check_each_once(spans)


def test_streamed_response_span_ends_when_exhausted_without_close(spans, caplog):
    count = _EndCount(spans, caplog)
    app = _stream_app()
    with instrumented(ScopeFlaskInstrumentor(), spans):
        response = app.test_client().get("/stream", buffered=False)
        assert not [s for s in spans.all() if s.kind is SpanKind.SERVER]  # still streaming
        assert b"".join(response.response) == b"abc"
        (span,) = [s for s in spans.all() if s.kind is SpanKind.SERVER]
        response.close()
    assert span.name == "GET /stream" and span.attributes["http.response.status_code"] == 200
    count.check_each_once(spans)


def test_streamed_response_never_read_nor_closed_ends_when_released(spans, caplog):
    import gc

    count = _EndCount(spans, caplog)
    app = _stream_app()
    with instrumented(ScopeFlaskInstrumentor(), spans):
        response = app.test_client().get("/stream", buffered=False)
        assert not [s for s in spans.all() if s.kind is SpanKind.SERVER]
        del response
        gc.collect()
        (span,) = [s for s in spans.all() if s.kind is SpanKind.SERVER]
    assert span.name == "GET /stream"
    count.check_each_once(spans)
