"""The store tests share the export tests' ClickHouse destinations."""
from tests.export.conftest import ch_target, store_path  # noqa: F401  (fixtures)
