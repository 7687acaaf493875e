"""Causal order across processes and nodes.

* ``hlc`` — the hybrid logical clock each process keeps (``clock()``).
* ``propagator`` — ``scope_hlc``, carrying the clock in W3C ``tracestate``.
* ``processor`` — ``HLCSpanProcessor``, stamping ``scope.hlc`` on every span.
* ``carrier`` — ``inject``/``extract`` for transports without an integration.

Submodules are imported on demand; importing this package costs nothing.
"""
