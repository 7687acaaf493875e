"""A small shop: the example application scope-otel instruments.

It exercises what scope-otel records: HTTP requests into Flask, SQLAlchemy
queries, business logic with loops, recursion and state changes, a background
worker fed by a ``queue.Queue``, and an exception path.  Run it with
``examples/shop_demo.py`` (self-driving) or serve ``shop.web:app`` with gunicorn.
"""
