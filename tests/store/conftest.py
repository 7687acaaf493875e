"""The store tests share the export tests' ClickHouse destinations."""
from tests.export.conftest import ch_target  # noqa: F401  (fixture)
