"""A small Django catalogue for ``bench/bench_services.py``: views over the ORM (SQLite) with business
logic of its own (``pricing``), served by gunicorn."""
