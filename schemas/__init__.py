"""Schema files (JSON Schema for plans, ClickHouse DDL) shipped as package data."""
import os

SCHEMA_DIR = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
    """Absolute path of a schema file shipped with scope-otel."""
    return os.path.join(SCHEMA_DIR, name)
