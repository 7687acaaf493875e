"""Measurement for the planner: what recording costs on this machine, and what the program calls.

* :mod:`.calibrate` times the capture runtime, the span conversion and the
  exporter's encoding (the prices :class:`~scope_otel.planner.costmodel.CostModel`
  caches);
* :mod:`.profile` runs the program under a call counter for
  ``scope-otel plan --profile``; the counter is ``bootstrap/sitecustomize.py``,
  put first on ``PYTHONPATH`` so that every Python process the command starts
  counts its own calls.
"""
