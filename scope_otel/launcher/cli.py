"""``scope-otel`` command dispatcher.

Each sub-command lives with the layer it belongs to and is imported only when
used, so ``scope-otel run`` stays fast and a broken optional layer cannot stop
the others.  A sub-command is ``module:function`` where ``function(argv)``
parses its own arguments and returns an exit code.
"""
from __future__ import annotations

import importlib
import os
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("scope_otel.launcher.run:run_main", "run a command with scope-otel instrumentation"),
    "config": ("scope_otel.launcher.run:config_main", "print the effective configuration and its sources"),
    "plan": ("scope_otel.planner.cli:main", "analyse source and write an instrumentation plan"),
    "compile": ("scope_otel.instrument.cli:main", "pre-build the instrumented bytecode cache"),
    "query": ("scope_otel.store.cli:query_main", "run SQL against the scope-otel store"),
    "trace": ("scope_otel.ui.cli:trace_main", "print a trace as a call tree"),
    "traces": ("scope_otel.store.cli:traces_main", "list traces, newest first, with filters"),
    "graph": ("scope_otel.store.cli:graph_main", "print the service or function graph"),
    "ui": ("scope_otel.ui.cli:ui_main", "serve a local web viewer: traces, waterfall, time travel, graphs"),
    "export": ("scope_otel.ui.cli:export_main", "write a trace as Chrome Trace JSON or self-contained HTML"),
    "collect": ("scope_otel.collect.cli:main", "OTLP receiver that writes into ClickHouse"),
    "schema": ("scope_otel.store.schema_cli:main", "create or migrate the ClickHouse schema (TTL, cluster)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: scope-otel COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_t, help_) in COMMANDS.items()]
    lines += ["", "`scope-otel COMMAND --help` describes one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from scope_otel import __version__

        print(f"scope-otel {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"scope-otel: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _help = COMMANDS[name]
    module_name, func_name = target.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        print(f"scope-otel: command {name!r} is not available in this build ({exc})", file=sys.stderr)
        return 2
    try:
        return int(func(argv[1:]) or 0)
    except BrokenPipeError:  # `scope-otel config | head`: the reader has gone, as for any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 141  # 128 + SIGPIPE, what a shell reports for a tool ended by a closed pipe


def instrument_main(argv: list[str] | None = None) -> int:
    """``scope-otel-instrument [OPTIONS] CMD ...``: the opentelemetry-instrument spelling."""
    from scope_otel.launcher.run import run_main

    argv = sys.argv[1:] if argv is None else argv
    return run_main(argv, prog="scope-otel-instrument")


if __name__ == "__main__":
    sys.exit(main())
