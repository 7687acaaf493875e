"""``scope-otel ui``: a local web viewer over what scope-otel recorded.

::

    scope-otel ui                                  # http://127.0.0.1:8700/ over .scope-otel
    scope-otel ui --store http://ch:8123 --port 0 --open
    scope-otel ui --host 0.0.0.0 --token s3cret    # reachable from elsewhere, token required
    scope-otel trace TRACE_ID --html trace.html    # one trace as a self-contained page
    scope-otel export --format chrome-trace TRACE_ID -o trace.json   # for Perfetto / chrome://tracing

Pages:

* ``/``: traces, newest first, refreshed while the page is open; filters for
  service, root name or route, errors, minimum duration, time range and text
  in captured values or SQL.
* ``/trace/<id>``: a waterfall of every span across services and processes,
  the error path from each failing span to the root marked, repeated siblings
  grouped (``SELECT … ×143`` with an N+1 hint), SQL text; a selected span
  shows its arguments, return value, exception and frames, state changes,
  events and links (a link opens the span on the other side of a message
  hop).  Time travel: ←/→ step through every recorded fact in causal order
  showing the call stack and the values known at that moment.  "Save" writes
  the page as one HTML file that works offline.
* ``/graph``: service and function call graphs with calls, error rates and
  p50/p99 on the edges; a click lists the matching traces.

The server is the standard library's; the page is one script and one
stylesheet shipped in this package (no CDN, no build step).  Every recorded
value is shown as text.
"""
