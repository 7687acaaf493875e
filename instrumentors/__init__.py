"""Framework integrations (Flask, Django, SQLAlchemy, DB-API drivers, HTTP
clients, hand-off, Redis and RabbitMQ messaging).

Each module is an OpenTelemetry ``BaseInstrumentor`` registered as an
``opentelemetry_instrumentor`` entry point; it ships as
``scope_otel.instrumentors``.

======================  =============================================  ==================
entry point             class                                          needs
======================  =============================================  ==================
``scope_flask``         ``flask.ScopeFlaskInstrumentor``               flask >= 3.0
``scope_django``        ``django.ScopeDjangoInstrumentor``             django >= 4.2
``scope_sqlalchemy``    ``sqlalchemy.ScopeSQLAlchemyInstrumentor``     sqlalchemy 2.0–2.1
``scope_dbapi``         ``dbapi.ScopeDBAPIInstrumentor``               (sqlite3 always;
                                                                       psycopg 3, psycopg2)
``scope_http_clients``  ``http_clients.ScopeHTTPClientsInstrumentor``  (any of requests,
                                                                       urllib3, httpx;
                                                                       urllib always)
``scope_handoff``       ``handoff.ScopeHandoffInstrumentor``           (standard library)
``scope_redis``         ``redis.ScopeRedisInstrumentor``               redis >= 4.0
``scope_pika``          ``pika.ScopePikaInstrumentor``                 pika >= 1.0
======================  =============================================  ==================

``scope-otel run`` and ``opentelemetry-instrument`` load them all; turn one
off by its entry-point name with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
(e.g. ``scope_handoff``).  Each module's docstring is its manual.

Shared rules: every integration is a ``_base.ScopeInstrumentor`` with a
declared hook table, applied when each hooked library is imported (never
importing it for the program) and undone, all of it, on ``uninstrument()``;
hooks are attached to *classes* (``Flask.__call__``, ``BaseHandler``, the
``Engine``/``Pool``/``Session`` classes, psycopg's cursors, ``Thread``,
``Queue``), so objects created before instrumenting are covered and import
order does not matter; if the contrib instrumentation for the same library
is active on an object, scope-otel stays out of the way (no duplicate spans);
a missing or too old library is reported once and the integration stays off;
an internal error is counted (:func:`_report.stats`) and logged once, never
raised into the application.  Helpers, each written once: ``_http`` (HTTP
semantic conventions, excluded URLs, header capture), ``_sql`` (the SQL span
shape and per-request statement counts), ``_broker`` (messaging),
``_record`` (events on the current span), ``_report`` (failures),
``_deferred`` (attach on import), ``_support`` (redacted values).
"""
