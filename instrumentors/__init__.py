"""Framework integrations (Flask, Django, SQLAlchemy, HTTP clients, hand-off).

Each module is an OpenTelemetry ``BaseInstrumentor`` registered as an
``opentelemetry_instrumentor`` entry point; it ships as
``scope_otel.instrumentors``.
"""
