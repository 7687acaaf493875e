"""gunicorn config: instrument each worker after the fork (``post_fork``).

With ``--preload`` the app, its SQLAlchemy engine and Django's middleware
chain were all built in the master *before* this runs, which is the case
class-level hooks exist for.  Spans go by OTLP/HTTP to ``HOOK_OTLP``.
"""
import os


def post_fork(server, worker):
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from scope_otel.instrumentors.django import ScopeDjangoInstrumentor
    from scope_otel.instrumentors.flask import ScopeFlaskInstrumentor
    from scope_otel.instrumentors.sqlalchemy import ScopeSQLAlchemyInstrumentor

    provider = TracerProvider(resource=Resource.create({"service.name": "hooked"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=os.environ["HOOK_OTLP"] + "/v1/traces")))
    trace.set_tracer_provider(provider)
    for instrumentor in (ScopeFlaskInstrumentor, ScopeSQLAlchemyInstrumentor, ScopeDjangoInstrumentor):
        instrumentor().instrument()
