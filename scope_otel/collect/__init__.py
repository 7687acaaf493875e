"""``scope-otel collect``: an OTLP receiver server writing to ClickHouse.

* ``cli`` — the command line.
* ``collector`` — ``Collector``, wiring ``otlp_grpc`` and ``otlp_http`` to
  ``intake``, the byte-bounded queue in front of the store.
* ``_auth`` — the bearer-token check both protocols share.

Submodules are imported on demand; importing this package costs nothing.
"""
