"""The browser tests' own rules: a console error or an uncaught page exception fails a test, and a
failing test leaves a screenshot (``tests/ui/conftest.py``)."""
from __future__ import annotations

import os
import sys

from tests.support.procs import clean_env, run
from tests.ui.conftest import CHROMIUM, ROOT


def test_console_error_page_exception_and_failure_each_fail_and_leave_a_screenshot(browser, tmp_path):
    env = clean_env(SCOPE_OTEL_UI_ARTIFACTS=str(tmp_path / "shots"), SCOPE_OTEL_CHROMIUM=CHROMIUM)
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  os.path.join("tests", "ui", "page_problems_check.py")], env, cwd=ROOT, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-3000:]
    assert "console.error: console says boom" in out and "page exception: page says bang" in out, out[-3000:]
    assert "1 failed" in out and "2 errors" in out, out[-3000:]
    shots = sorted(os.listdir(tmp_path / "shots"))
    assert shots == ["test_console_error.png", "test_failing_assertion.png", "test_uncaught_exception.png"]
    assert all(os.path.getsize(tmp_path / "shots" / name) > 1000 for name in shots)


def test_readme_shows_the_trace_page_screenshot_and_the_command_that_opens_it():
    import re

    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## Looking at what was recorded: `scope-otel ui`"):]
    section = section[:section.index("\n## ", 1)]
    assert "scope-otel ui --open" in section
    images = re.findall(r"!\[[^\]]*trace page[^\]]*\]\(([^)]+\.png)\)", section)
    assert images, "no screenshot of the trace page in the README's viewer section"
    with open(os.path.join(ROOT, images[0]), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
