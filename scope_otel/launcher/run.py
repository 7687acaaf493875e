"""``scope-otel run [OPTIONS] -- CMD ...`` and ``scope-otel config``.

``run`` works the way ``opentelemetry-instrument`` does: it turns options into
environment variables, validates the whole configuration (exit 2 with one
line naming the key on a bad value), puts the bootstrap ``sitecustomize`` first
on ``PYTHONPATH`` and ``exec``s the command.  Every Python process started
from there, the command itself and its children (gunicorn workers, Django's
reloader, subprocesses), inherits the environment and so the instrumentation.

Options are the ``opentelemetry-instrument`` spellings (``OTEL_X_Y`` ->
``--x_y``, e.g. ``--service_name``, ``--traces_exporter``,
``--exporter_otlp_endpoint``) plus scope-otel's own (``--plan``,
``--instrument`` (repeatable), ``--level``, ``--store``, ``--config``, and every
key of ``scope-otel config``).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from importlib.metadata import entry_points

from scope_otel import config as _config
from scope_otel import redact
from scope_otel.launcher import summary

BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")


def _otel_env_flags() -> dict[str, str]:
    """``flag dest -> OTEL_*`` for every variable the installed OTel packages declare."""
    flags: dict[str, str] = {}
    for ep in entry_points(group="opentelemetry_environment_variables"):
        try:
            module = ep.load()
        except Exception:
            continue
        for name in dir(module):
            if name.startswith("OTEL_"):
                flags[re.sub(r"OTEL_(PYTHON_)?", "", name).lower()] = name
    # the scope-otel settings that are OTEL_* variables map the same way
    for s in _config.SETTINGS:
        for env in s.envs:
            if env.startswith("OTEL_"):
                flags.setdefault(re.sub(r"OTEL_(PYTHON_)?", "", env).lower(), env)
    return flags


def _parser(prog: str, otel_flags: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        allow_abbrev=False,
        description="Run a Python program with scope-otel instrumentation.",
        epilog="OTEL_* variables have matching options: OTEL_SERVICE_NAME -> --service_name. "
        "`scope-otel config` lists scope-otel's own keys.",
    )
    scope_keys = {s.key for s in _config.SETTINGS if not s.envs[0].startswith("OTEL_")}
    for key in sorted(scope_keys):
        s = _config.BY_KEY[key]
        if key == "instrument":
            parser.add_argument("--instrument", action="append", metavar="MODULE_GLOB", help=s.doc)
        else:
            parser.add_argument(f"--{key}", metavar=key.upper(), help=s.doc)
    parser.add_argument("--config", metavar="FILE", help="config file (default: scope-otel.toml or pyproject.toml)")
    for dest in sorted(otel_flags):
        if dest not in scope_keys and dest != "config":
            parser.add_argument(f"--{dest}", help=argparse.SUPPRESS)
    parser.add_argument("command", help="the program to run, e.g. python, gunicorn, flask")
    parser.add_argument("command_args", nargs=argparse.REMAINDER, help="its arguments")
    return parser


def prepare(argv: list[str], prog: str = "scope-otel run", environ: dict | None = None):
    """Parse and validate; return ``(executable, args, env)`` or raise ConfigError/SystemExit."""
    return _prepare(argv, prog, environ)[:3]


def _prepare(argv: list[str], prog: str, environ: dict | None):
    environ = dict(os.environ if environ is None else environ)
    otel_flags = _otel_env_flags()
    if argv and argv[0] == "--":
        argv = argv[1:]
    args = _parser(prog, otel_flags).parse_args(argv)
    if args.command == "--" and args.command_args:
        args.command, args.command_args = args.command_args[0], args.command_args[1:]

    # OTEL_* options become environment variables, exactly as opentelemetry-instrument does.
    flag_sources = {}
    for dest, env_name in otel_flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            environ[env_name] = value
            flag_sources[env_name] = f"--{dest}"

    scope_flags = {}
    for s in _config.SETTINGS:
        if s.envs[0].startswith("OTEL_"):
            continue
        value = getattr(args, s.key, None)
        if value is not None:
            scope_flags[s.key] = ",".join(value) if isinstance(value, list) else value

    config_file = os.path.abspath(args.config) if args.config else None
    try:
        config = _config.load(flags=scope_flags, env=environ, config_file=config_file)
    except _config.ConfigError as exc:
        # an OTEL_* value that came from a flag: name the flag, not the variable
        message = str(exc)
        for env_name, flag in flag_sources.items():
            message = message.replace(f"env {env_name}", f"flag {flag}")
        raise _config.ConfigError(message) from None
    if config.plan:
        _check_plan(config.plan)

    # scope-otel flags travel to the program (and its children) as variables
    for key, value in scope_flags.items():
        environ[_config.BY_KEY[key].envs[0]] = str(value)
    if config.file:
        environ[_config.CONFIG_ENV] = config.file
    own = _zero_configuration(config, [args.command] + list(args.command_args))
    if own:
        environ["SCOPE_OTEL_INSTRUMENT"] = ",".join(own)
        config.values["instrument"] = _config.Value(tuple(own), "the program's own code (no plan)")
        config.values["level"] = _config.Value("boundaries", "the program's own code (no plan)")
        environ["SCOPE_OTEL_LEVEL"] = "boundaries"
    if config.plan:
        environ["SCOPE_OTEL_PLAN"] = os.path.abspath(config.plan)
    if config.summary and not environ.get("SCOPE_OTEL_SUMMARY_DIR"):
        # the processes of this run leave their figures here; the first one prints them once
        environ["SCOPE_OTEL_SUMMARY_DIR"] = tempfile.mkdtemp(prefix="scope-otel-summary-")
    if "://" not in config.store:
        # children may chdir; keep them writing to the same store
        environ["SCOPE_OTEL_STORE"] = os.path.abspath(config.store)

    if not os.path.isfile(os.path.join(BOOTSTRAP_DIR, "sitecustomize.py")):
        # a broken install would otherwise run the program recording nothing, silently
        raise _config.ConfigError(
            f"this install of scope-otel is incomplete: {BOOTSTRAP_DIR}/sitecustomize.py is missing "
            "(reinstall scope-otel)"
        )
    python_path = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    cwd = os.getcwd()
    if cwd not in python_path:
        python_path.insert(0, cwd)  # like opentelemetry-instrument: `manage.py`-style apps import from cwd
    environ["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR] + python_path)

    executable = shutil.which(args.command, path=environ.get("PATH"))
    if executable is None:
        raise _config.ConfigError(f"command not found: {args.command!r} (check PATH or give a full path)")
    return executable, [executable] + list(args.command_args), environ, config


def _zero_configuration(config: _config.Config, command: list[str]) -> list[str]:
    """Module globs of the program's own code (:func:`scope_otel.instrument.own.own_code_globs`),
    recorded when nothing else says what to record.  Empty when a plan, ``instrument`` globs or
    ``level = off`` were given."""
    if config.plan or config.instrument or config.sdk_disabled or config.source("plan") != "default":
        return []
    if config.source("level") != "default" and config.level == "off":
        return []
    from scope_otel.instrument.own import own_code_globs

    return own_code_globs(command, os.getcwd())


def _check_plan(path: str) -> None:
    from scope_otel.plan import load_plan

    try:
        load_plan(path)
    except (ValueError, OSError) as exc:
        raise _config.ConfigError(f"plan = {path!r}: {exc}") from None


def run_main(argv: list[str], prog: str = "scope-otel run") -> int:
    """Validate, set up the environment and ``exec`` the command (never returns on success)."""
    try:
        executable, args, environ, config = _prepare(argv, prog, None)
    except _config.ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if sys.stderr.isatty() or config.log_level in ("info", "debug"):
        # a person watching, or asked for: a program's piped output stays the program's own
        print(f"{prog}: {_what_is_recorded(config)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(executable, args, environ)
    return 0  # pragma: no cover - execve does not return


def _what_is_recorded(config: _config.Config) -> str:
    """The start-up line: which plan the program's functions are recorded by, and where it came from."""
    if config.sdk_disabled:
        return "OTEL_SDK_DISABLED is set: nothing is recorded"
    if config.plan:
        shown = os.path.relpath(config.plan) if not os.path.relpath(config.plan).startswith("..") else config.plan
        return f"plan {shown} ({_where(config.source('plan'))})"
    if config.instrument and config.source("instrument") == "the program's own code (no plan)":
        shown = sorted({g.removesuffix(".*") for g in config.instrument})
        return (f"no plan: recording the program's own code ({', '.join(shown)}) at boundaries within the "
                f"{config.budget:g}% budget (`scope-otel plan` writes scope-otel.plan.json, used from then on)")
    if config.instrument:
        return f"functions of {','.join(config.instrument)} at {config.level} ({_where(config.source('instrument'))})"
    return "no plan: requests and SQL only (`scope-otel plan` writes scope-otel.plan.json, used from then on)"


def _default_in_force(config: _config.Config) -> str:
    """For ``scope-otel config``: the plan in force, or the zero-configuration default and how to turn it off."""
    if config.sdk_disabled:
        return "nothing (OTEL_SDK_DISABLED is set)"
    if config.plan or config.instrument:
        return _what_is_recorded(config)
    if config.level == "off" and config.source("level") != "default":
        return "requests and SQL only (level = off)"
    from scope_otel.instrument.own import own_code_globs

    shown = ", ".join(g for g in own_code_globs([], os.getcwd()) if not g.endswith(".*")) or "none found here"
    return (f"no plan, so the zero-configuration default: the program's own code at boundaries within the "
            f"{config.budget:g}% budget: the main script (python app.py), its folder's modules, and the working "
            f"directory's ({shown}); never the standard library or site-packages.  A plan found here "
            "(scope-otel.plan.json) replaces it; --level off or an empty plan turns it off.  `scope-otel compile` "
            "uses the same default.")


def _where(source: str) -> str:
    return {"env SCOPE_OTEL_PLAN": "SCOPE_OTEL_PLAN"}.get(source, source)


def config_main(argv: list[str]) -> int:
    """``scope-otel config [--config FILE]``: the effective configuration and sources."""
    parser = argparse.ArgumentParser(prog="scope-otel config", description=config_main.__doc__)
    parser.add_argument("--config", metavar="FILE", help="config file to read")
    parser.add_argument("--keys", action="store_true", help="list every key with its variable and meaning")
    args = parser.parse_args(argv)
    if args.keys:
        for s in _config.SETTINGS:
            allowed = f" [{'|'.join(s.allowed)}]" if s.allowed else ""
            print(f"{s.key:28s} {s.envs[0]:40s} {s.doc}{allowed}")
        return 0
    try:
        config = _config.load(config_file=os.path.abspath(args.config) if args.config else None)
    except _config.ConfigError as exc:
        print(f"scope-otel config: error: {exc}", file=sys.stderr)
        return 2
    if config.file:
        print(f"# config file: {config.file}")
    print(config.describe())
    print("\nwhat `scope-otel run` records: " + _default_in_force(config))
    print("\nredaction in force (redact extends the built-in names; redact_defaults = false keeps only it):")
    for line in redact.from_config(config).describe().splitlines():
        print("  " + line)
    print("\ncounted, and shown at exit (all with summary = true; a destination that did not get everything "
          "is told on stderr whatever summary says):")
    for line in summary.legend().splitlines():
        print("  " + line)
    return 0
