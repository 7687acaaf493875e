"""A small, real two-service trace for ClickHouse tests, built with the OTel SDK.

``record(exporter)`` runs it through real TracerProviders (one per service,
``SimpleSpanProcessor``) and returns the ids needed for assertions.

Shape (service in brackets; ✗ = error status)::

    [shop] GET /checkout            SERVER
      [shop] shop.cart:total        INTERNAL  function span: args, state change, return
      [shop] POST /pay              CLIENT
        [pay] POST /pay             SERVER
          [pay] pay.card:charge  ✗  INTERNAL  function span: arg, exception
      [shop] publish orders         PRODUCER  scope.send orders #m-1
    [worker] process orders         CONSUMER  (own trace, span link to the producer, scope.recv)

``scope.hlc`` stamps deliberately disagree with wall-clock order for the two
children of the root: the HLC says ``POST /pay`` happened before
``shop.cart:total`` although it started later.
"""
from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


@dataclass
class Ids:
    trace_id: str
    consumer_trace_id: str
    root: str
    cart: str
    pay_client: str
    pay_server: str
    charge: str
    publish: str
    consume: str


def _tracer(service: str, exporter) -> tuple[TracerProvider, trace.Tracer]:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, provider.get_tracer("tests.scenario", "1.0")


def _function_attrs(module: str, qualname: str, **extra: str) -> dict:
    attrs = {
        "scope.kind": "function", "scope.level": "full",
        "code.function.name": qualname, "code.namespace": module,
        "code.file.path": f"/app/{module.replace('.', '/')}.py", "code.line.number": 10,
    }
    attrs.update(extra)
    return attrs


def _hex(n: int, width: int) -> str:
    return f"{n:0{width}x}"


def record(exporter) -> Ids:
    providers = []
    shop_p, shop = _tracer("shop", exporter)
    pay_p, pay = _tracer("pay", exporter)
    worker_p, worker = _tracer("worker", exporter)
    providers += [shop_p, pay_p, worker_p]
    with shop.start_as_current_span("GET /checkout", kind=SpanKind.SERVER,
                                    attributes={"scope.hlc": "0190000000000000.shop"}) as root:
        with shop.start_as_current_span(
            "shop.cart:total", attributes=_function_attrs(
                "shop.cart", "total", **{"scope.arg.items": "[1, 2]", "scope.return": "3",
                                         "scope.hlc": "0190000000050000.shop"})
        ) as cart:
            cart.add_event("scope.state_change", {"scope.target": "self.total", "scope.value": "3"})
        with shop.start_as_current_span("POST /pay", kind=SpanKind.CLIENT,
                                        attributes={"scope.hlc": "0190000000010000.shop"}) as pay_client:
            with pay.start_as_current_span("POST /pay", kind=SpanKind.SERVER,
                                           attributes={"scope.hlc": "0190000000020000.pay"}) as pay_server:
                with pay.start_as_current_span(
                    "pay.card:charge", attributes=_function_attrs(
                        "pay.card", "charge", **{"scope.arg.amount": "3", "scope.hlc": "0190000000030000.pay"})
                ) as charge:
                    try:
                        raise ValueError("card declined")
                    except ValueError as exc:
                        charge.record_exception(exc)
                        charge.set_status(Status(StatusCode.ERROR, "card declined"))
                pay_server.set_status(Status(StatusCode.ERROR))
        with shop.start_as_current_span("publish orders", kind=SpanKind.PRODUCER,
                                        attributes={"messaging.destination.name": "orders"}) as publish:
            publish.add_event("scope.send", {"messaging.destination.name": "orders", "messaging.message.id": "m-1"})
    producer_ctx = publish.get_span_context()
    with worker.start_as_current_span("process orders", kind=SpanKind.CONSUMER, context=trace.set_span_in_context(trace.INVALID_SPAN),
                                      links=[Link(producer_ctx)],
                                      attributes=_function_attrs("worker.jobs", "process")) as consume:
        consume.add_event("scope.recv", {"messaging.destination.name": "orders", "messaging.message.id": "m-1"})
    for p in providers:
        p.force_flush()
    span_hex = lambda s: _hex(s.get_span_context().span_id, 16)  # noqa: E731
    return Ids(
        trace_id=_hex(root.get_span_context().trace_id, 32),
        consumer_trace_id=_hex(consume.get_span_context().trace_id, 32),
        root=span_hex(root), cart=span_hex(cart), pay_client=span_hex(pay_client),
        pay_server=span_hex(pay_server), charge=span_hex(charge), publish=span_hex(publish),
        consume=span_hex(consume),
    )
