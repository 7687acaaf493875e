"""Hooks that make plain ``opentelemetry-instrument`` run scope-otel's pipeline.

``opentelemetry-instrument`` loads the ``opentelemetry_distro`` and
``opentelemetry_configurator`` entry points before it loads instrumentors;
scope-otel registers both, so a user who keeps their existing command line
gets scope-otel's processor, exporters, plan and store.
"""
from __future__ import annotations

from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.sdk._configuration import _BaseConfigurator


class ScopeDistro(BaseDistro):
    """The scope-otel distro: configuration is done by :class:`ScopeConfigurator`."""

    def _configure(self, **kwargs) -> None:
        pass


class ScopeConfigurator(_BaseConfigurator):
    """Builds scope-otel's pipeline; opentelemetry-instrument loads the instrumentors."""

    def _configure(self, **kwargs) -> None:
        from scope_otel.launcher.pipeline import initialize

        initialize(load_instrumentors=False)
