"""The layout of what the hot path writes, shared by C, Python and correlation.

A recorded call is a *token* created by ``enter`` and returned to the
instrumented code, which hands it back to ``exit`` or ``exception``.  When the
call ends, the token itself, completed with ``END_NS``, ``STATUS`` and
``VALUE``, is the *record* put into the ring: no second allocation.

``STATUS`` is :data:`RETURNED` (``VALUE`` is the snapshot of the return value,
or ``None`` when not captured) or :data:`RAISED` (``VALUE`` is the exception).
The pure-Python hot path uses a ``list``; the C one a ``_speedups.Call`` that
is indexed the same way (numbers stay C integers until read).  The indices
below are the contract between ``_speedups.c``, ``_pyhot.py`` and
``scope_otel.correlate``.
"""
SPAN_ID = 0      # int, 64-bit span id (per-process random prefix | counter)
TRACE_ID = 1     # int, 128-bit trace id inherited from the parent
PARENT_ID = 2    # int, parent span id (function or SDK span), 0 for a root
FID = 3          # int, function id from runtime.register
START_NS = 4     # int, time.time_ns() at enter
OTEL_CTX = 5     # the OpenTelemetry Context current at enter (identity marks "innermost")
PREV = 6         # the token that was current before this one (the caller), or None
ARGS = 7         # None or dict name -> snapshot of the value
EVENTS = 8       # None or list of (name, time_ns, attributes dict)
OVERLAY = 9      # None or the Context materialised for SDK spans started inside
LEVEL = 10       # int, level code at enter (1 boundaries, 2 full)
FLAGS = 11       # int, capture bits at enter (see below)
END_NS = 12      # int, time.time_ns() at exit/exception (0 while running)
STATUS = 13      # RETURNED or RAISED
VALUE = 14       # return value snapshot, or the exception
TOKEN_LEN = 15

# FLAGS bits
CAP_ARGS = 1
CAP_RETURN = 2
CAP_STATE = 4
CAP_EXCEPTIONS = 8

# status
RETURNED = 0
RAISED = 1
