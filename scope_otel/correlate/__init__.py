"""The correlation layer: capture records become OpenTelemetry spans.

* :mod:`scope_otel.correlate.spans` - ``Correlator.to_span(record)``: a
  function-call record (``scope_otel.capture.records``) becomes a
  ``ReadableSpan`` parented to its caller function or SDK span, with the
  attributes and events of the capture contract;
* :mod:`scope_otel.correlate.values` - ``ValuePolicy``: captured values
  truncated to ``max_value_length`` and redacted (:mod:`scope_otel.redact`), counted.

It runs in ``RingBufferSpanProcessor``'s worker thread, never on the
application's.
"""
