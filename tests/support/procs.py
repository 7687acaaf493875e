"""Run programs the way a user does: ``scope-otel run`` in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")


def tool(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    return os.path.join(BIN, name)


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without OTEL_/SCOPE_OTEL_ settings, plus ``extra`` (and a budget the
    overhead governor never reaches, unless ``extra`` gives one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SCOPE_OTEL_"))}
    env.pop("PYTHONPATH", None)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["SCOPE_OTEL_BUDGET"] = "1000"  # the governor out of the way (tests/conftest.py says why)
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], cwd: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
