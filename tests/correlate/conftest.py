"""The correlation tests reuse the capture fixtures (both implementations)."""
from tests.capture.conftest import fn, impl, pipeline  # noqa: F401
