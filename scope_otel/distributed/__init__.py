"""Causal order across processes and nodes.

* ``hlc`` — the hybrid logical clock each process keeps (``clock()``).
* ``propagator`` — ``scope_hlc``, carrying the clock in W3C ``tracestate``.
* ``processor`` — ``HLCSpanProcessor``, stamping ``scope.hlc`` on every span.
* ``carrier`` — ``inject``/``extract`` for transports without an integration.
* ``cli`` — ``scope-otel collect``, an OTLP receiver writing to ClickHouse:
  ``collector`` (``Collector``) wires ``otlp_grpc`` and ``otlp_http`` to
  ``intake``, the byte-bounded queue in front of the store.

Submodules are imported on demand; importing this package costs nothing.
"""
