"""Imports run one way: no layer imports a higher one, nobody imports another package's
private module, and no two files import each other (directly or round a loop).

Every ``import`` in every module of ``scope_otel`` and ``instrumentors`` (shipped as
``scope_otel.instrumentors``) is read with :mod:`ast`, including the imports inside
functions, which are the ones that hide a backwards dependency.

The order is who-uses-whom (see docs/ARCHITECTURE.md): the capture hot path
knows nothing above it; correlation reads capture's records; the store knows
ClickHouse and nothing about exporters; the ClickHouse exporter hands batches
to the store; the launcher wires everything; the planner and the viewer are
offline tools on top.  Packages on the same rank are peers and do not import
each other.  The violations listed in ``KNOWN`` live in files that another
change is rewriting; each names its issue, and the test fails when one is
fixed (so the entry goes) or when a new one appears.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: package (first name under scope_otel) -> rank; modules directly under
#: scope_otel (plan, config, accelerators, version, _sitechain) are rank 0
RANKS = {
    "": 0,
    "capture": 1,
    "correlate": 2,
    "store": 3,
    "export": 4,
    "causal": 5,
    "collect": 5,
    "instrument": 6,
    "instrumentors": 7,
    "launcher": 8,
    "planner": 9,
    "ui": 9,
}

#: (importing module, imported module) -> why it is still there
KNOWN: dict[tuple[str, str], str] = {}
#: fallbacks for parts of our own package ("absent in this build"): (module, what it may lack) -> why
KNOWN_FALLBACKS: dict[tuple[str, str], str] = {}
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for folder, package in (("scope_otel", "scope_otel"), ("instrumentors", "scope_otel.instrumentors")):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()
#: modules that are not ``.py`` files of the tree: the C accelerators setup.py
#: builds, and the ``schemas/`` data folder it ships as ``scope_otel.schemas``
EXTENSIONS = {"scope_otel.capture._speedups", "scope_otel.export._otlpenc", "scope_otel.store._chnative",
              "scope_otel.schemas"}


def imports(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path] = MODULES) -> list[tuple[str, int]]:
    """``(module imported, line)`` for every import of our own package in ``path``."""
    return _imports_in(name, path, ast.parse(path.read_text(encoding="utf-8"), str(path)), modules)


def _imports_in(name: str, path: pathlib.Path, tree: ast.AST,
                modules: dict[str, pathlib.Path] = MODULES) -> list[tuple[str, int]]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub if sub in modules or sub in EXTENSIONS else base, node.lineno))
    return [(target, line) for target, line in out if target.split(".")[0] == "scope_otel"]


def fallbacks(name: str, path: pathlib.Path) -> set[str]:
    """Modules of ours that ``path`` treats as possibly missing.

    An import of our own Python module inside ``try: ... except ImportError``, or a
    ``scope_otel.*`` name handed to an ``_optional*``/``import_module`` helper.  The C
    accelerators (``_speedups``, ``_otlpenc``, ``_chnative``) and the installed
    ``schemas`` data folder are not Python modules of the tree, so they do not count:
    a build without a compiler really lacks them.
    """
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            body = ast.Module(body=node.body, type_ignores=[])
            found |= {t for t, _ in _imports_in(name, path, body) if t in MODULES}
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if "optional" in func or func == "import_module":
                found |= {a.value for a in node.args
                          if isinstance(a, ast.Constant) and str(a.value).startswith("scope_otel")}
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANKS) else ""


def violations(modules: dict[str, pathlib.Path]) -> dict[tuple[str, str], str]:
    found = {}
    for name, path in modules.items():
        for target, line in imports(name, path, modules):
            src, dst = _package(name), _package(target)
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
            if src != dst and (RANKS[dst] > RANKS[src] or (RANKS[dst] == RANKS[src] and RANKS[src])):
                found[(name, target)] = f"{where}: {src or 'scope_otel'} imports the higher or peer layer {dst}"
            private = [i for i, part in enumerate(target.split(".")) if part.startswith("_")]
            if private:
                owner = ".".join(target.split(".")[: private[0]])
                if not (name == owner or name.startswith(owner + ".")):
                    found[(name, target)] = f"{where}: imports {target}, private to {owner}"
    return found


def cycles(modules: dict[str, pathlib.Path]) -> set[tuple[str, ...]]:
    """The groups of files that import each other, directly or round a loop (each sorted)."""
    graph = {n: {t for t, _ in imports(n, p, modules) if t in modules and t != n} for n, p in modules.items()}
    reach = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        reach[start] = seen
    return {tuple(sorted(n for n in graph if n in reach[v] and v in reach[n])) for v in graph if v in reach[v]}


def test_every_module_is_on_a_known_layer():
    unknown = {n for n in MODULES if _package(n) not in RANKS}
    assert not unknown, f"add these packages to RANKS: {sorted(unknown)}"


def test_no_module_imports_a_higher_layer_or_another_packages_private_module():
    found = violations(MODULES)
    new = {key: why for key, why in found.items() if key not in KNOWN}
    assert not new, "\n".join(sorted(new.values()))
    fixed = set(KNOWN) - set(found)
    assert not fixed, f"fixed, remove from KNOWN: {sorted(fixed)}"


def test_no_file_level_import_cycles():
    found = cycles(MODULES)
    new = found - set(KNOWN_CYCLES)
    assert not new, f"import cycles: {sorted(new)}"
    assert not set(KNOWN_CYCLES) - found, f"fixed, remove from KNOWN_CYCLES: {sorted(set(KNOWN_CYCLES) - found)}"


def test_no_fallbacks_for_parts_of_our_own_package():
    found = {(name, target) for name, path in MODULES.items() for target in fallbacks(name, path)}
    new = found - set(KNOWN_FALLBACKS)
    assert not new, f"our own modules are always installed; drop these fallbacks: {sorted(new)}"
    assert not set(KNOWN_FALLBACKS) - found, \
        f"fixed, remove from KNOWN_FALLBACKS: {sorted(set(KNOWN_FALLBACKS) - found)}"


@pytest.mark.parametrize("line, expect", [
    ("from scope_otel.launcher import pipeline", "higher or peer layer launcher"),
    ("from scope_otel.store._native import x", "private to scope_otel.store"),
    ("from scope_otel.causal import hlc", "higher or peer layer causal"),
])
def test_the_check_catches_a_new_violation(tmp_path, line, expect):
    bad = tmp_path / "bad.py"
    bad.write_text(f"def f():\n    {line}\n")
    found = violations({"scope_otel.capture.bad": bad, **MODULES})
    assert any(expect in why for (name, _), why in found.items() if name == "scope_otel.capture.bad")


def test_the_check_catches_a_new_cycle(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from scope_otel.store import zz_b\n")
    b.write_text("from scope_otel.store.zz_a import f\n")
    assert ("scope_otel.store.zz_a", "scope_otel.store.zz_b") in cycles(
        {**MODULES, "scope_otel.store.zz_a": a, "scope_otel.store.zz_b": b})


def test_the_check_catches_a_new_fallback(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("try:\n    from scope_otel.store import rows\nexcept ImportError:\n    rows = None\n")
    assert fallbacks("scope_otel.export.bad", bad) == {"scope_otel.store.rows"}
