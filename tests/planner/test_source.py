"""Finding modules and surviving bad input: every bad file is reported and skipped."""
from __future__ import annotations

import os

from scope_otel.planner import source
from scope_otel.planner.analysis import analyse

from tests.planner.conftest import write_tree


def test_module_names_come_from_the_package_chain(tmp_path):
    root = write_tree(tmp_path / "src", {"shop/cart/models.py": "x = 1\n", "tool.py": "y = 2\n"})
    files, skipped = source.discover([root])
    names = {f.module for f in files}
    assert {"shop", "shop.cart", "shop.cart.models", "tool"} <= names
    assert skipped == []


def test_hidden_cache_and_virtualenv_directories_are_not_entered(tmp_path):
    root = write_tree(tmp_path / "src", {
        "app/core.py": "def f():\n    pass\n",
        "app/__pycache__/junk.py": "def g():\n    pass\n",
        ".venv/lib/thing.py": "def h():\n    pass\n",
        ".hidden/x.py": "def i():\n    pass\n",
    })
    analysis = analyse([root])
    assert set(analysis.functions) == {"app.core:f"}


def test_bad_files_are_reported_and_skipped_while_the_rest_is_analysed(tmp_path, monkeypatch):
    root = tmp_path / "src"
    write_tree(root, {"app/good.py": "def ok():\n    return 1\n"})
    (root / "app" / "broken.py").write_text("def broken(:\n    pass\n")
    (root / "app" / "latin.py").write_bytes(b"# -*- coding: utf-8 -*-\nname = '\xff\xfe'\n")
    (root / "app" / "huge.py").write_text("X = 1\n" * 100)
    os.symlink(str(root / "app" / "gone.py"), str(root / "app" / "dangling.py"))
    monkeypatch.setattr(source, "MAX_FILE_BYTES", 300)
    analysis = analyse([str(root), str(tmp_path / "does-not-exist")])
    reasons = {os.path.basename(s.path): s.reason for s in analysis.skipped}
    assert "syntax error at line 1" in reasons["broken.py"]
    assert "cannot decode" in reasons["latin.py"]
    assert reasons["huge.py"] == "too large (600 bytes > 300; generated?)"
    assert "app.good:ok" in analysis.functions
    assert "unreadable" in reasons["dangling.py"]
    assert reasons["does-not-exist"] == "no such file or directory"


def test_a_good_file_beside_bad_ones_is_still_planned(tmp_path):
    root = tmp_path / "src"
    write_tree(root, {"app/good.py": "def ok():\n    return 1\n"})
    (root / "app" / "broken.py").write_text("def broken(:\n")
    (root / "app" / "binary.py").write_bytes(b"\x00\x01\x02\xff\xfe")
    analysis = analyse([str(root)])
    assert "app.good:ok" in analysis.functions
    assert {os.path.basename(s.path) for s in analysis.skipped} == {"broken.py", "binary.py"}


def test_pathologically_nested_code_is_skipped_not_fatal(tmp_path):
    root = tmp_path / "src"
    write_tree(root, {"app/ok.py": "def ok():\n    return 1\n"})
    (root / "app" / "deep.py").write_text("x = " + "(" * 5000 + "1" + ")" * 5000 + "\n")
    analysis = analyse([str(root)])
    assert "app.ok:ok" in analysis.functions
    assert [os.path.basename(s.path) for s in analysis.skipped] == ["deep.py"]
