"""One typed configuration for scope-otel.

Sources, lowest to highest precedence::

    defaults < [tool.scope-otel] in pyproject.toml, or scope-otel.toml
             < SCOPE_OTEL_* and the standard OTEL_* variables
             < command-line flags

Every value remembers where it came from (``scope-otel config`` prints it) and
every bad value raises :class:`ConfigError` naming the key, the source and
what is allowed.  A few keys (see ``RUNTIME_KEYS``) may change while the
application runs, through :func:`update` or by editing the config file and
sending ``SIGHUP`` (see :func:`reload`); all others are fixed at start.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from scope_otel.plan import LEVELS

try:  # Python 3.11+
    import tomllib as _toml
except ImportError:  # pragma: no cover - 3.10
    import tomli as _toml  # type: ignore[no-redef]

EXPORTERS = ("otlp", "console", "none", "clickhouse")
PROTOCOLS = ("grpc", "http/protobuf")
OVERFLOWS = ("drop_oldest", "drop_newest", "block")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
#: Keys that may change while the application runs.
RUNTIME_KEYS = frozenset({"sampling_rate", "function_levels", "level"})


class ConfigError(ValueError):
    """A configuration value is wrong; the message names key, source and fix."""


# --------------------------------------------------------------------------
# parsers: text (env, flags) or native (TOML) -> typed value, or ValueError
# --------------------------------------------------------------------------

def _choice(allowed: Iterable[str]) -> Callable[[Any], str]:
    allowed = tuple(allowed)

    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


def _str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw.strip()


def _opt_str(raw: Any) -> str | None:
    value = _str(raw)
    return value or None


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError("expected an integer")
        try:
            value = int(str(raw).strip(), 0) if not isinstance(raw, int) else raw
        except ValueError:
            raise ValueError(f"expected an integer from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}")
        return value

    return parse


def _rate(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number from 0.0 to 1.0")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError("expected a number from 0.0 to 1.0") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError("expected a number from 0.0 to 1.0")
    return value


def _percent(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a percentage from 0 to 1000")
    try:
        value = float(str(raw).strip().rstrip("%"))
    except ValueError:
        raise ValueError("expected a percentage from 0 to 1000") from None
    if not 0.0 <= value <= 1000.0:
        raise ValueError("expected a percentage from 0 to 1000")
    return value


def _list(item: Callable[[Any], str] | None = None) -> Callable[[Any], tuple]:
    def parse(raw: Any) -> tuple:
        items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
        out = []
        for piece in items:
            piece = str(piece).strip()
            if piece:
                out.append(item(piece) if item else piece)
        return tuple(out)

    if item is not None and hasattr(item, "allowed"):
        parse.allowed = item.allowed  # type: ignore[attr-defined]
    return parse


def _pairs(raw: Any, what: str, value_parser: Callable[[str], str] | None = None) -> dict:
    """``k=v,k2=v2`` (env, flags) or a TOML table -> dict."""
    if isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items()]
    else:
        items = []
        for piece in str(raw).split(","):
            piece = piece.strip()
            if not piece:
                continue
            if "=" not in piece:
                raise ValueError(f"{piece!r} is not {what} (expected key=value, comma-separated)")
            k, v = piece.split("=", 1)
            items.append((k.strip(), v.strip()))
    out = {}
    for k, v in items:
        if not k:
            raise ValueError(f"empty key in {what} (expected key=value, comma-separated)")
        out[k] = value_parser(v) if value_parser else str(v)
    return out


def _plan(raw: Any) -> str | None:
    """A plan file, or None for an explicit "no plan" (``''`` or ``none``): that turns off finding one."""
    value = _opt_str(raw)
    return None if value is None or value.lower() == "none" else value


def _function_levels(raw: Any) -> dict:
    return _pairs(raw, "a function level", _choice(LEVELS))


def _resource_attributes(raw: Any) -> dict:
    return _pairs(raw, "a resource attribute")


def _headers(raw: Any) -> dict:
    return _pairs(raw, "a header")


def _propagators(raw: Any) -> tuple:
    names = _list()(raw)
    known = _known_propagators()
    for name in names:
        if name != "none" and known and name not in known:
            raise ValueError(f"unknown propagator {name!r}; installed: {', '.join(sorted(known))}")
    return names


def _known_propagators() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="opentelemetry_propagator")}


# --------------------------------------------------------------------------
# the settings table
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    key: str
    parse: Callable[[Any], Any]
    default: Any
    envs: tuple[str, ...]
    doc: str
    #: OTEL_* settings are also read by the OpenTelemetry SDK itself; the
    #: launcher exports flag values to the first env name so the SDK sees them.
    flag: str | None = None

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.key

    @property
    def allowed(self) -> tuple[str, ...] | None:
        return getattr(self.parse, "allowed", None)


SETTINGS: tuple[Setting, ...] = (
    Setting("service_name", _opt_str, None, ("OTEL_SERVICE_NAME",),
            "service.name of every span (default: the program name)"),
    Setting("traces_exporter", _list(_choice(EXPORTERS)), ("clickhouse",), ("OTEL_TRACES_EXPORTER",),
            "where spans go: clickhouse (embedded chDB or a server, see store), otlp, console, none; comma-separated"),
    Setting("exporter_otlp_protocol", _choice(PROTOCOLS), "grpc",
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
            "OTLP transport: grpc or http/protobuf"),
    Setting("exporter_otlp_endpoint", _opt_str, None,
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
            "OTLP endpoint (default localhost:4317 for grpc, :4318 for http)"),
    Setting("exporter_otlp_headers", _headers, {},
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
            "extra OTLP headers, key=value,..."),
    Setting("exporter_otlp_compression", _choice(("none", "gzip", "deflate")), "none",
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"),
            "OTLP compression"),
    Setting("exporter_otlp_timeout", _int_range(1, 3_600_000), 10_000,
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
            "OTLP export timeout in milliseconds"),
    Setting("resource_attributes", _resource_attributes, {}, ("OTEL_RESOURCE_ATTRIBUTES",),
            "extra resource attributes, key=value,..."),
    Setting("traces_sampler", _choice(SAMPLERS), "parentbased_always_on", ("OTEL_TRACES_SAMPLER",),
            "head sampler of SDK spans"),
    Setting("traces_sampler_arg", _opt_str, None, ("OTEL_TRACES_SAMPLER_ARG",),
            "sampler argument (ratio for *traceidratio)"),
    Setting("propagators", _propagators, ("tracecontext", "baggage"), ("OTEL_PROPAGATORS",),
            "context propagators, comma-separated"),
    Setting("sdk_disabled", _bool, False, ("OTEL_SDK_DISABLED",),
            "true: run the program without any instrumentation"),
    Setting("disabled_instrumentations", _list(), (), ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",),
            "instrumentor entry-point names to skip, comma-separated"),
    # scope-otel's own keys
    Setting("level", _choice(LEVELS), "boundaries", ("SCOPE_OTEL_LEVEL",),
            "default depth of function capture: off, boundaries, full"),
    Setting("function_levels", _function_levels, {}, ("SCOPE_OTEL_FUNCTION_LEVELS",),
            "per-function level overrides, 'module:qualname-glob=level,...'"),
    Setting("sampling_rate", _rate, 1.0, ("SCOPE_OTEL_SAMPLING_RATE",),
            "share of function calls recorded, 0.0 to 1.0"),
    Setting("plan", _plan, None, ("SCOPE_OTEL_PLAN",),
            "instrumentation plan file (default: scope-otel.plan.json in the working directory or the project "
            "root; 'none' for no plan)"),
    Setting("budget", _percent, 5.0, ("SCOPE_OTEL_BUDGET",),
            "what recording may cost, in percent of the program's CPU time; each process samples whole "
            "traces, then lowers the busiest functions, to stay within it (default: the plan's budget, else 5)"),
    Setting("instrument", _list(), (), ("SCOPE_OTEL_INSTRUMENT",),
            "module globs to instrument without a plan, comma-separated (flag repeatable)"),
    Setting("store", _str, ".scope-otel", ("SCOPE_OTEL_STORE",),
            "ClickHouse destination: a path or chdb:///path (embedded) or http(s)://host:port"),
    Setting("database", _str, "otel", ("SCOPE_OTEL_DATABASE",),
            "ClickHouse database name"),
    Setting("spool_max_mb", _int_range(1, 1 << 20), 1024, ("SCOPE_OTEL_SPOOL_MAX_MB",),
            "largest on-disk queue of batches waiting for the store, in MB; when full the oldest are dropped and counted"),
    Setting("overflow", _choice(OVERFLOWS), "drop_oldest", ("SCOPE_OTEL_OVERFLOW",),
            "what a full ring buffer does: drop_oldest, drop_newest, block"),
    Setting("block_timeout_ms", _int_range(0, 3_600_000), 1000, ("SCOPE_OTEL_BLOCK_TIMEOUT_MS",),
            "with overflow = block: how long a record waits for room before it is dropped and counted"),
    # 8192: a stalled exporter holding a full ring of SDK spans (~3 KB each)
    # stays within ~25 MB (bench/bench_stalled_exporter.py).
    Setting("ring_size", _int_range(64, 1 << 26), 8192, ("SCOPE_OTEL_RING_SIZE",),
            "capacity of the capture ring buffer, in records"),
    Setting("max_value_length", _int_range(16, 1 << 20), 512, ("SCOPE_OTEL_MAX_VALUE_LENGTH",),
            "captured argument/return values are truncated to this many characters"),
    Setting("max_events", _int_range(0, 1 << 20), 128, ("SCOPE_OTEL_MAX_EVENTS", "OTEL_SPAN_EVENT_COUNT_LIMIT"),
            "events kept per function call (state changes, suspends and resumes); later ones are counted"),
    Setting("value_repr", _list(), (), ("SCOPE_OTEL_VALUE_REPR",),
            "globs on 'module.Qualname' of types whose captured values may be shown with repr(), which "
            "runs their code inside the call (default: none; values are read without running any code)"),
    Setting("redact", _list(), (), ("SCOPE_OTEL_REDACT",),
            "more name patterns whose values are redacted, added to the built-in ones, comma-separated"),
    Setting("redact_defaults", _bool, True, ("SCOPE_OTEL_REDACT_DEFAULTS",),
            "false: drop the built-in redaction names and shapes, keeping only `redact` (see README, Redaction)"),
    Setting("summary", _bool, False, ("SCOPE_OTEL_SUMMARY",),
            "print a short summary of what was recorded when the program exits"),
    Setting("log_level", _choice(("debug", "info", "warning", "error")), "warning", ("SCOPE_OTEL_LOG_LEVEL",),
            "scope-otel's own log level"),
    # causal order across nodes (scope_otel/causal/hlc.py), read when the process clock starts
    Setting("node_id", _opt_str, None, ("SCOPE_OTEL_NODE_ID",),
            "node id in hybrid logical clock stamps (default: from host name and pid)"),
    Setting("clock_skew_ms", _int_range(-86_400_000, 86_400_000), 0, ("SCOPE_OTEL_CLOCK_SKEW_MS",),
            "artificial skew added to this process' wall clock, for tests and demos of skewed nodes"),
    Setting("hlc_max_offset_ms", _int_range(1, 86_400_000), 300_000, ("SCOPE_OTEL_HLC_MAX_OFFSET_MS",),
            "a received clock stamp further ahead of the local clock than this is ignored"),
    Setting("redis_lists", _bool, False, ("SCOPE_OTEL_REDIS_LISTS",),
            "carry trace context through Redis list messages (JSON envelopes); streams always carry it"),
)
BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
CONFIG_ENV = "SCOPE_OTEL_CONFIG"


@dataclass
class Value:
    value: Any
    source: str  # "default", "file <path>", "env NAME", "flag --name", "runtime"


@dataclass
class Config:
    """The effective configuration: typed values with their sources."""

    values: dict[str, Value] = field(default_factory=dict)
    file: str | None = None

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["values"][key].value
        except KeyError:
            raise AttributeError(key) from None

    def source(self, key: str) -> str:
        return self.values[key].source

    def as_dict(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.values.items()}

    def describe(self) -> str:
        """A table of key, value and source, for ``scope-otel config``."""
        rows = [(k, _show(k, v.value), v.source) for k, v in self.values.items()]
        width = max(len(r[0]) for r in rows)
        vwidth = min(48, max(len(r[1]) for r in rows))
        lines = [f"{'key'.ljust(width)}  {'value'.ljust(vwidth)}  source"]
        lines += [f"{k.ljust(width)}  {v.ljust(vwidth)}  {s}" for k, v, s in rows]
        return "\n".join(lines)


def _show(key: str, value: Any) -> str:
    if key == "exporter_otlp_headers" and value:
        return ",".join(f"{k}=***" for k in value)  # header values are secrets
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------

def find_config_file(env: Mapping[str, str] | None = None, cwd: str | None = None) -> tuple[str, str] | None:
    """The config file in force and where it was named: ``(path, how)``.

    ``SCOPE_OTEL_CONFIG`` wins; else ``scope-otel.toml`` in the working
    directory; else ``pyproject.toml`` there if it has ``[tool.scope-otel]``.
    """
    env = os.environ if env is None else env
    cwd = cwd or os.getcwd()
    if env.get(CONFIG_ENV):
        return env[CONFIG_ENV], f"env {CONFIG_ENV}"
    candidate = os.path.join(cwd, "scope-otel.toml")
    if os.path.exists(candidate):
        return candidate, "file"
    candidate = os.path.join(cwd, "pyproject.toml")
    if os.path.exists(candidate):
        try:
            with open(candidate, "rb") as fh:
                if "scope-otel" in _toml.load(fh).get("tool", {}):
                    return candidate, "file"
        except (OSError, _toml.TOMLDecodeError):
            return None  # someone else's pyproject; not ours to judge
    return None


def read_config_file(path: str) -> dict[str, Any]:
    """The scope-otel table of a TOML file, or ConfigError naming the file."""
    try:
        with open(path, "rb") as fh:
            data = _toml.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found (set {CONFIG_ENV} or --config to an existing file)") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    except _toml.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML ({exc})") from None
    if os.path.basename(path) == "pyproject.toml" or "tool" in data:
        data = data.get("tool", {}).get("scope-otel", {})
    return data


def load(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    config_file: str | None = None,
) -> Config:
    """Build the effective configuration; raise ConfigError on any bad value."""
    env = os.environ if env is None else env
    flags = dict(flags or {})
    config = Config()
    for s in SETTINGS:
        config.values[s.key] = Value(s.default, "default")

    found = (config_file, "flag --config") if config_file else find_config_file(env, cwd)
    if found:
        path, _how = found
        config.file = os.path.abspath(path)
        for raw_key, raw in read_config_file(path).items():
            key = raw_key.replace("-", "_")
            if key not in BY_KEY:
                raise ConfigError(
                    f"config file {path}: unknown key {raw_key!r} (known: {', '.join(BY_KEY)})"
                )
            config.values[key] = Value(_parse(BY_KEY[key], raw, f"file {path}"), f"file {path}")

    for s in SETTINGS:
        for name in s.envs:
            raw = env.get(name)
            if raw is not None and raw.strip() != "":
                config.values[s.key] = Value(_parse(s, raw, f"env {name}"), f"env {name}")
                break

    for key, raw in flags.items():
        if raw is None:
            continue
        s = BY_KEY.get(key)
        if s is None:
            raise ConfigError(f"unknown option {key!r}")
        config.values[key] = Value(_parse(s, raw, f"flag {s.flag_name}"), f"flag {s.flag_name}")

    _check_together(config)
    _find_plan(config, cwd or os.getcwd())
    return config


#: The plan file ``scope-otel plan`` writes, found without naming it (see :func:`find_plan`).
PLAN_FILE = "scope-otel.plan.json"
_PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


def find_plan(cwd: str) -> tuple[str, str] | None:
    """``(path, where)`` of the plan found for the project run from ``cwd``: ``scope-otel.plan.json``
    in ``cwd``, else in the project root (the nearest folder above with ``pyproject.toml``,
    ``setup.py``, ``setup.cfg`` or ``.git``)."""
    here = os.path.abspath(cwd)
    if os.path.isfile(os.path.join(here, PLAN_FILE)):
        return os.path.join(here, PLAN_FILE), "found in the working directory"
    folder = here
    while True:
        if any(os.path.exists(os.path.join(folder, m)) for m in _PROJECT_MARKERS):
            candidate = os.path.join(folder, PLAN_FILE)
            if folder != here and os.path.isfile(candidate):
                return candidate, f"found in the project root {folder}"
            return None
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _find_plan(config: Config, cwd: str) -> None:
    """The plan nobody named: used unless a plan (``none`` turns planning off), ``instrument``
    globs or ``level = off`` were given."""
    if (config.source("plan") != "default" or config.source("instrument") != "default"
            or config.source("level") != "default" and config.level == "off"):
        return
    found = find_plan(cwd)
    if found:
        config.values["plan"] = Value(found[0], found[1])


def _parse(s: Setting, raw: Any, source: str) -> Any:
    try:
        return s.parse(raw)
    except ValueError as exc:
        shown = raw if len(str(raw)) <= 60 else str(raw)[:57] + "..."
        raise ConfigError(f"{s.key} = {shown!r} from {source}: {exc}") from None


def _check_together(config: Config) -> None:
    sampler, arg = config.traces_sampler, config.traces_sampler_arg
    if sampler.endswith("traceidratio") and arg is not None:
        try:
            _rate(arg)
        except ValueError as exc:
            raise ConfigError(
                f"traces_sampler_arg = {arg!r} from {config.source('traces_sampler_arg')}: {exc}"
            ) from None
    if "none" in config.traces_exporter and len(config.traces_exporter) > 1:
        raise ConfigError(
            f"traces_exporter = {','.join(config.traces_exporter)!r} from "
            f"{config.source('traces_exporter')}: 'none' cannot be combined with other exporters"
        )


# --------------------------------------------------------------------------
# the live configuration and run-time changes
# --------------------------------------------------------------------------

_lock = threading.Lock()
_current: Config | None = None
_listeners: list[Callable[[Config, dict[str, Any]], None]] = []


def current() -> Config:
    """The configuration in force in this process (loaded on first use)."""
    global _current
    with _lock:
        if _current is None:
            _current = load()
        return _current


def set_current(config: Config) -> None:
    global _current
    with _lock:
        _current = config


def subscribe(listener: Callable[[Config, dict[str, Any]], None]) -> None:
    """Call ``listener(config, changed)`` after every run-time change."""
    _listeners.append(listener)


def update(**changes: Any) -> dict[str, Any]:
    """Change run-time keys (``sampling_rate``, ``level``, ``function_levels``).

    Returns the keys whose value changed.  Raises ConfigError for a key that
    is fixed at start or for a bad value; nothing is applied then.
    """
    config = current()
    parsed = {}
    for key, raw in changes.items():
        if key not in RUNTIME_KEYS:
            raise ConfigError(
                f"{key} cannot change at run time (changeable: {', '.join(sorted(RUNTIME_KEYS))})"
            )
        parsed[key] = _parse(BY_KEY[key], raw, "runtime")
    return _apply(config, parsed, "runtime")


def reload() -> dict[str, Any]:
    """Re-read the config file and apply its run-time keys (the SIGHUP path).

    Other keys in the file are ignored until restart; a bad file leaves the
    configuration as it was and raises ConfigError.
    """
    config = current()
    if not config.file:
        return {}
    data = read_config_file(config.file)
    parsed = {}
    for raw_key, raw in data.items():
        key = raw_key.replace("-", "_")
        if key in RUNTIME_KEYS and not config.source(key).startswith(("env", "flag")):
            parsed[key] = _parse(BY_KEY[key], raw, f"file {config.file}")
    return _apply(config, parsed, f"file {config.file}")


def _apply(config: Config, parsed: dict[str, Any], source: str) -> dict[str, Any]:
    with _lock:
        changed = {k: v for k, v in parsed.items() if config.values[k].value != v}
        for key, value in changed.items():
            config.values[key] = Value(value, source)
    if changed:
        for listener in list(_listeners):
            try:
                listener(config, changed)
            except Exception:  # a listener must not break the caller
                import logging

                logging.getLogger("scope_otel").exception("config listener failed")
    return changed


def install_sighup_reload() -> bool:
    """Reload run-time keys on SIGHUP, unless the program already uses SIGHUP."""
    import signal

    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, None):
        return False

    def _on_hup(signum, frame):  # noqa: ARG001
        try:
            reload()
        except ConfigError as exc:
            import logging

            logging.getLogger("scope_otel").warning("scope-otel: config not reloaded: %s", exc)

    signal.signal(signal.SIGHUP, _on_hup)
    return True
