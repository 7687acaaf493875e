"""Set up scope-otel inside the instrumented program.

Called once per process: by the ``sitecustomize`` bootstrap that ``scope-otel
run`` puts on ``PYTHONPATH``, or by :class:`ScopeConfigurator` when plain
``opentelemetry-instrument`` runs with scope-otel installed.  It builds the
tracer provider (resource, sampler, span processor, exporters), starts the
capture runtime, applies the instrumentation plan and loads the framework
instrumentors, in that order: the import hook must be in place before
frameworks import application modules.  How the process ends (exit, SIGTERM,
``multiprocessing`` children) is :mod:`scope_otel.launcher.ending`'s part.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from scope_otel import config as _config
from scope_otel.version import __version__

logger = logging.getLogger("scope_otel")

_lock = threading.Lock()
_state: dict[str, Any] = {}

#: Contrib instrumentors that scope-otel's own integrations replace.  When
#: scope-otel loads instrumentors it skips these so nothing is recorded twice.
SUPERSEDED = frozenset(
    {"flask", "django", "sqlalchemy", "requests", "urllib", "urllib3", "httpx", "threading", "pika", "sqlite3",
     "psycopg"}
)


def initialize(config: _config.Config | None = None, *, load_instrumentors: bool = True) -> bool:
    """Build the pipeline from ``config`` (default: files and environment).

    Returns False when the SDK is disabled or scope-otel was already set up in
    this process.  Raises on failure; the bootstrap turns that into a single
    warning and lets the program run uninstrumented.
    """
    with _lock:
        if _state.get("initialized"):
            return False
        config = config or _config.load()
        _config.set_current(config)
        _setup_logging(config)
        if config.sdk_disabled:
            logger.debug("scope-otel: OTEL_SDK_DISABLED is set; not instrumenting")
            return False
        provider = build_tracer_provider(config)
        from opentelemetry import trace

        trace.set_tracer_provider(provider)
        _state.update(initialized=True, provider=provider, config=config)
        _set_propagators(config)
        _start_capture(config, provider)
        _apply_plan(config)
        if load_instrumentors:
            load_instrumentor_entry_points(config)
        _config.install_sighup_reload()
        from scope_otel.launcher import ending, summary

        if config.summary:
            summary.claim_root(_state)
        from scope_otel.launcher import observe

        observe.install(_state)  # per-function statistics into the store, for `plan --from-store`
        ending.install(_state, config)
        return True


def build_tracer_provider(config: _config.Config):
    """TracerProvider with scope-otel's resource, sampler and span processor."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from scope_otel.export.factory import FanOutExporter, build_exporters
    from scope_otel.launcher.summary import SummaryProcessor

    attributes = dict(config.resource_attributes)
    attributes["service.name"] = config.service_name or attributes.get("service.name") or _program_name()
    attributes["telemetry.distro.name"] = "scope-otel"
    attributes["telemetry.distro.version"] = __version__
    provider = TracerProvider(
        resource=Resource.create(attributes), sampler=_governed(_sampler(config)), shutdown_on_exit=False
    )
    from scope_otel.causal.processor import HLCSpanProcessor

    provider.add_span_processor(HLCSpanProcessor())
    if config.summary:
        summary = SummaryProcessor()
        provider.add_span_processor(summary)
        _state["summary"] = summary
    exporters = _without_signals(build_exporters, config)
    _state["destinations"] = exporters
    if exporters:
        exporter = exporters[0] if len(exporters) == 1 else FanOutExporter(exporters)
        processor = _span_processor(config, exporter)
        provider.add_span_processor(processor)
        _state["processor"] = processor
    return provider


def _without_signals(build, *args):
    """Call ``build`` with SIGTERM/SIGINT blocked, so threads it starts (gRPC's) never take them.

    Python runs signal handlers in the main thread only; a signal the kernel hands
    to a library thread leaves a main thread blocked in C unaware of it.
    """
    import signal

    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    except (AttributeError, OSError, ValueError):
        return build(*args)
    try:
        return build(*args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _span_processor(config: _config.Config, exporter):
    """The ring-buffered processor, carrying function-call records too: the correlation layer, which
    turns them into spans, is handed in here because capture sits below it."""
    from scope_otel.capture import RingBufferSpanProcessor
    from scope_otel.correlate.spans import Correlator

    return RingBufferSpanProcessor(exporter, overflow=config.overflow, block_timeout_millis=config.block_timeout_ms,
                                   correlator=Correlator)


def _governed(sampler):
    """The sampler, with the overhead governor's share of new traces applied first, so that a
    request is recorded whole or not at all, in every process it reaches."""
    from scope_otel.capture.governor import GovernedSampler

    return GovernedSampler(sampler)


def _sampler(config: _config.Config):
    from opentelemetry.sdk.trace import sampling

    name, arg = config.traces_sampler, config.traces_sampler_arg
    ratio = float(arg) if arg is not None else 1.0
    return {
        "always_on": lambda: sampling.ALWAYS_ON,
        "always_off": lambda: sampling.ALWAYS_OFF,
        "traceidratio": lambda: sampling.TraceIdRatioBased(ratio),
        "parentbased_always_on": lambda: sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": lambda: sampling.ParentBased(sampling.TraceIdRatioBased(ratio)),
    }[name]()


def _set_propagators(config: _config.Config) -> None:
    from importlib.metadata import entry_points

    from opentelemetry import propagate
    from opentelemetry.propagators.composite import CompositePropagator

    names = list(config.propagators)
    available = {ep.name: ep for ep in entry_points(group="opentelemetry_propagator")}
    if config.source("propagators") == "default" and "scope_hlc" in available:
        names.append("scope_hlc")  # causal order across hops, on unless the user chose propagators
    if names == ["none"]:
        propagate.set_global_textmap(CompositePropagator([]))
        return
    propagate.set_global_textmap(CompositePropagator([available[n].load()() for n in names if n in available]))


def _start_capture(config: _config.Config, provider) -> None:
    from scope_otel.capture import runtime

    # function spans that end before any SDK span still get the provider's resource
    runtime.configure(config, processor=_state.get("processor"), resource=provider.resource)
    runtime.governor.on_change(_governor_span(provider))


def _governor_span(provider):
    """Each change of the governor becomes a span in the store: a trace's ``scope.sampling.ratio``
    says which sampling applied to it, these say when and why it changed.  They are made by a
    provider of their own and handed to the processor past its ring (``submit``): a change is made
    when the ring is full, and its record must not be the one dropped."""
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

    from scope_otel.capture import governor as _governor

    tracer = TracerProvider(resource=provider.resource).get_tracer("scope_otel.governor", __version__)

    def record(change: dict) -> None:
        processor = _state.get("processor")
        if processor is None or not hasattr(processor, "submit"):
            return
        span = tracer.start_span(_governor.GOVERNOR_SPAN, context=Context(), attributes=change)
        span.end()
        processor.submit(span)

    return record


def _apply_plan(config: _config.Config) -> None:
    if not (config.plan or config.instrument) or (config.level == "off" and not config.plan):
        return
    from scope_otel.plan import Plan, load_plan

    plan = load_plan(config.plan) if config.plan else Plan.from_globs(list(config.instrument), config.level)
    if plan.budget_pct is not None and config.source("budget") == "default":
        from scope_otel.capture import runtime

        runtime.governor.configure(plan.budget_pct)  # the governor holds the plan to its own budget
    if plan.empty:  # an all-off plan: installing the hook would cost start-up time for nothing
        return
    import scope_otel.instrument as instrument

    instrument.apply(plan)
    _state["plan"] = plan


def load_instrumentor_entry_points(config: _config.Config) -> list[str]:
    """Instrument every ``opentelemetry_instrumentor`` that applies; return their names.

    ``disabled_instrumentations`` (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``)
    is honoured, ``*`` disables all.  Contrib instrumentors that a scope-otel
    integration replaces are skipped when that integration is installed.
    """
    from importlib.metadata import entry_points

    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    disabled = set(config.disabled_instrumentations)
    if "*" in disabled:
        return []
    eps = list(entry_points(group="opentelemetry_instrumentor"))
    ours = {ep.name for ep in eps if ep.value.startswith("scope_otel.")}
    loaded = []
    for ep in eps:
        if ep.name in disabled:
            continue
        if not ep.value.startswith("scope_otel.") and ep.name in SUPERSEDED and ours:
            logger.debug("scope-otel: %s is covered by scope-otel's own integration; skipped", ep.name)
            continue
        try:
            if ep.dist is not None:
                conflict = get_dist_dependency_conflicts(ep.dist)
                if conflict:
                    logger.debug("scope-otel: %s not loaded: %s", ep.name, conflict)
                    continue
            instrumentor = ep.load()()
            instrumentor.instrument(skip_dep_check=not ep.value.startswith("scope_otel."))
            loaded.append(ep.name)
        except ImportError as exc:
            logger.debug("scope-otel: %s not loaded: %s", ep.name, exc)
        except Exception:
            logger.warning("scope-otel: instrumentation %s failed and stays off", ep.name, exc_info=True)
    _state["instrumentors"] = loaded
    return loaded


def shutdown() -> None:
    """Flush and stop the pipeline now, within the exit bound (also run at exit and on SIGTERM)."""
    if _state.get("provider") is None:
        return
    from scope_otel.launcher import ending

    ending.finish(_state, why="shutdown()")


def _setup_logging(config: _config.Config) -> None:
    logger.setLevel(config.log_level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _program_name() -> str:
    """The default service name: the script or ``-m`` module being run.

    ``sys.argv`` is still partial while sitecustomize runs (``['-m']``), so
    read ``sys.orig_argv``.
    """
    args = list(getattr(sys, "orig_argv", sys.argv))[1:]
    while args:
        arg = args.pop(0)
        if arg == "-m" and args:
            return args[0]
        if arg == "-c":
            return "python"
        if arg in ("-W", "-X") and args:
            args.pop(0)  # the option's own argument
            continue
        if arg.startswith("-"):
            continue
        name = os.path.basename(arg)
        return name[:-3] if name.endswith(".py") else name
    return "python"
