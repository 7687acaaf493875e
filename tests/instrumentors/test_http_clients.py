"""Outgoing HTTP calls: client spans and W3C context that a real server receives."""
from __future__ import annotations

import asyncio
import json
import urllib.request

import httpx
import pytest
import requests
import urllib3
from opentelemetry import baggage, context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, StatusCode

from scope_otel.instrumentors.flask import ScopeFlaskInstrumentor
from scope_otel.instrumentors.http_clients import ScopeHTTPClientsInstrumentor
from tests.instrumentors.apps import shop
from tests.instrumentors.conftest import instrumented, serve


def _requests(url):
    return requests.get(url, timeout=10).json()


def _urllib3(url):
    return json.loads(urllib3.PoolManager().request("GET", url, headers={"X-Keep": "1"}).data)


def _httpx(url):
    with httpx.Client() as client:
        return client.get(url).json()


def _httpx_async(url):
    async def main():
        async with httpx.AsyncClient() as client:
            return (await client.get(url)).json()

    return asyncio.run(main())


def _urllib(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


CLIENTS = {"requests": _requests, "urllib3": _urllib3, "httpx": _httpx, "httpx-async": _httpx_async, "urllib": _urllib}


@pytest.fixture
def traced(spans):
    with instrumented(ScopeHTTPClientsInstrumentor(), spans), instrumented(ScopeFlaskInstrumentor(), spans):
        with serve(shop.app) as url:
            yield url


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_client_span_is_injected_and_becomes_the_servers_parent(spans, traced, client):
    with spans.tracer.start_as_current_span("caller") as caller:
        seen = CLIENTS[client](f"{traced}/headers?q=1")
    (server,) = spans.named("GET /headers")
    outgoing = [s for s in spans.all() if s.kind is SpanKind.CLIENT]
    assert len(outgoing) == 1, [s.name for s in outgoing]  # requests -> urllib3 is one span, not two
    span = outgoing[0]
    assert span.name == "GET"
    assert span.parent.span_id == caller.get_span_context().span_id
    assert server.parent.span_id == span.context.span_id
    assert seen["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    attrs = dict(span.attributes)
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.full"] == f"{traced}/headers?q=1"
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == int(traced.rsplit(":", 1)[1])
    assert attrs["http.response.status_code"] == 200


def test_baggage_travels_with_the_request(spans, traced):
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        seen = _requests(f"{traced}/headers")
    finally:
        context.detach(token)
    assert seen["baggage"] == "tenant=acme"


def test_server_error_marks_the_client_span(spans, traced):
    assert requests.get(f"{traced}/boom").status_code == 500
    (span,) = [s for s in spans.all() if s.kind is SpanKind.CLIENT]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "500"


def test_connection_error_is_recorded_and_reraised(spans, traced):
    with pytest.raises(requests.ConnectionError):
        requests.get("http://127.0.0.1:9/", timeout=2)
    (span,) = [s for s in spans.all() if s.kind is SpanKind.CLIENT]
    assert span.attributes["error.type"] == "ConnectionError"
    assert span.status.status_code is StatusCode.ERROR


def test_credentials_are_removed_from_url_full(spans, traced):
    requests.get(traced.replace("http://", "http://user:pw@") + "/health")
    (span,) = [s for s in spans.all() if s.kind is SpanKind.CLIENT]
    assert span.attributes["url.full"] == f"{traced}/health"


def test_suppressed_calls_are_not_traced(spans, traced):
    # what an exporter does while sending spans
    with suppress_instrumentation():
        seen = _requests(f"{traced}/headers")
    assert "traceparent" not in seen
    assert [s for s in spans.all() if s.kind is SpanKind.CLIENT] == []


def test_callers_headers_dict_is_not_changed(spans, traced):
    headers = {"X-Mine": "1"}
    urllib3.PoolManager().request("GET", f"{traced}/health", headers=headers)
    assert headers == {"X-Mine": "1"}
