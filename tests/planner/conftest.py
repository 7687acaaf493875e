"""Helpers for planner tests: write small source trees into a tmp dir and analyse them."""
from __future__ import annotations

import os
import textwrap

import pytest

from scope_otel.planner.analysis import Analysis, analyse



def write_tree(root, files: dict[str, str]) -> str:
    """Write ``{"pkg/mod.py": source}`` under ``root``; packages get an ``__init__.py``."""
    for rel, source in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(textwrap.dedent(source))
        directory = os.path.dirname(rel)
        while directory:
            init = os.path.join(str(root), directory, "__init__.py")
            if not os.path.exists(init):
                open(init, "w").close()
            directory = os.path.dirname(directory)
    return str(root)


@pytest.fixture
def analyse_tree(tmp_path):
    """``analyse_tree({"app/views.py": src}) -> Analysis`` of that tree."""
    def run(files: dict[str, str]) -> Analysis:
        return analyse([write_tree(tmp_path / "src", files)])
    return run


@pytest.fixture
def cost_cache(tmp_path, monkeypatch):
    """Keep the cost-model cache of each test in its tmp dir."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "scope-otel" / "costmodel.json"
