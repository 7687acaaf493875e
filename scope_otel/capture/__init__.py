"""The capture layer: the hot path of scope-otel.

* :class:`RingBufferSpanProcessor` - the SDK span processor that replaces
  ``BatchSpanProcessor`` (``processor.py``);
* :mod:`scope_otel.capture.runtime` - what instrumented code calls
  (``register``, ``enter``, ``exit``, ...);
* :class:`~scope_otel.capture.ring.Ring` - the bounded ring buffer both use.

The hot path is C (``_speedups.c``) where it was built, else its pure-Python
twin; ``SCOPE_OTEL_PURE_PYTHON=1`` forces the latter.
"""
from scope_otel.capture.processor import RingBufferSpanProcessor

__all__ = ["RingBufferSpanProcessor"]
