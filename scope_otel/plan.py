"""The instrumentation plan: load, validate and query ``scope-otel.plan.json``.

A plan says, for each function (keyed ``"module:qualname"``), how deeply to
record it::

    from scope_otel.plan import load_plan

    plan = load_plan("scope-otel.plan.json")     # PlanError if malformed
    if plan.wants_module("shop.views"):          # cheap name check
        fp = plan.for_function("shop.views", "checkout")
        # FunctionPlan(level='full', capture=frozenset({...}), sampling=1.0,
        #              reason='full: flask.route entry point ...')

``plan.empty`` is True when nothing would be recorded (a launcher can then
skip installing the import hook altogether).

``Plan.from_globs(["shop.*"], "full")`` builds the plan behind
``--instrument 'shop.*' --level full``: every function of a matching module
at that level.  A glob ``X.*`` also matches the package ``X`` itself.

An entry without ``capture`` records what its level records by default
(:data:`DEFAULT_CAPTURE`); without ``level`` or ``sampling`` it takes the
plan's ``defaults``.  Entries at level ``off`` are kept in
:attr:`Plan.functions` so the plan explains every decision;
:attr:`Plan.modules` lists only modules with something to record.  ``overrides.pin`` globs in the file also answer
:meth:`Plan.for_function` for functions the analysis never saw (nested or
generated code), after the explicit entries.

The launcher loads plans while the application starts, so this module only
imports ``json``, ``hashlib`` and ``fnmatch``; the JSON schema
(``schemas/plan.schema.json``) describes the same rules for other tools and
is checked by the test-suite, while loading uses the hand-written checks
below, which name the file and the JSON path of the first bad field.

:attr:`Plan.hash` is a content hash of what the plan makes the import hook
do: every function's effective level, capture set and sampling rate, and
the pins.  Reasons, estimates and analysis details are left out, so
re-planning that only changes explanations keeps instrumented bytecode
caches valid.  It is recomputed on load (a hand-edited plan still gives
caches a correct key); the file's ``hash`` field is what it was when
written.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import namedtuple
from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping

PLAN_VERSION = 1
#: The function levels, the one definition every layer uses; a level's index
#: is its code in the capture runtime (0 off, 1 boundaries, 2 full).
LEVELS = ("off", "boundaries", "full")
CAPTURES = ("args", "return", "exceptions", "state")
#: What each level records when the plan does not say otherwise.
DEFAULT_CAPTURE = {
    "off": frozenset(),
    "boundaries": frozenset({"exceptions"}),
    "full": frozenset(CAPTURES),
}

__all__ = [
    "PLAN_VERSION", "LEVELS", "CAPTURES", "DEFAULT_CAPTURE",
    "PlanError", "FunctionPlan", "Plan", "load_plan", "content_hash",
]


class PlanError(ValueError):
    """A plan file is unreadable or malformed; the message names file and field."""


class FunctionPlan(namedtuple("FunctionPlan", "level capture sampling reason")):
    """How one function is recorded: level, capture set, sampling rate, and why."""

    __slots__ = ()
    level: str
    capture: frozenset
    sampling: float
    reason: str


def _effective_hash(functions: Mapping[str, "FunctionPlan"], rules: Iterable[tuple]) -> str:
    """sha256 over what instrumentation depends on: levels, captures, sampling, pins."""
    items = sorted((key, fp.level, sorted(fp.capture), fp.sampling) for key, fp in functions.items())
    pins = [(glob, fp.level) for glob, fp in rules]
    text = json.dumps([PLAN_VERSION, items, pins], separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_hash(document: Mapping[str, Any]) -> str:
    """The hash :func:`load_plan` gives ``document`` (validating it on the way)."""
    return plan_from_document(document).hash


def _module_glob(glob: str) -> str:
    """The module part of a ``module:qualname`` glob."""
    return glob.split(":", 1)[0]


def _glob_matches_module(glob: str, module: str) -> bool:
    pattern = _module_glob(glob)
    if fnmatchcase(module, pattern):
        return True
    # 'pkg.*' is meant to cover the package 'pkg' (its __init__) too.
    return pattern.endswith(".*") and module == pattern[:-2]


def _glob_matches_function(glob: str, module: str, qualname: str) -> bool:
    if ":" not in glob:
        return _glob_matches_module(glob, module)
    mod_glob, qual_glob = glob.split(":", 1)
    return _glob_matches_module(mod_glob, module) and fnmatchcase(qualname, qual_glob)


class Plan:
    """A loaded plan; see the module docstring."""

    __slots__ = ("modules", "functions", "hash", "budget_pct", "source", "_rules", "_document")

    def __init__(
        self,
        functions: dict[str, FunctionPlan],
        *,
        hash: str,
        budget_pct: float | None = None,
        rules: Iterable[tuple[str, FunctionPlan]] = (),
        source: str | None = None,
        document: dict | None = None,
    ) -> None:
        self.functions = functions
        self.hash = hash
        self.budget_pct = budget_pct
        self.source = source
        #: (glob over module:qualname, plan) answering functions not listed.
        self._rules = tuple(rules)
        self._document = document
        self.modules = frozenset(
            key.split(":", 1)[0] for key, fp in functions.items() if fp.level != "off"
        )

    def __repr__(self) -> str:
        return f"<Plan {self.hash[:19]} {len(self.functions)} functions, {len(self.modules)} modules>"

    @property
    def empty(self) -> bool:
        """True when the plan records nothing (every function off, no pin that records)."""
        return not self.modules and not any(fp.level != "off" for _g, fp in self._rules)

    @property
    def document(self) -> dict | None:
        """The JSON document this plan was loaded from (None for glob plans)."""
        return self._document

    def wants_module(self, name: str) -> bool:
        """True when module ``name`` has anything to record (the import hook's check)."""
        if name in self.modules:
            return True
        return any(
            fp.level != "off" and _glob_matches_module(glob, name) for glob, fp in self._rules
        )

    def for_function(self, module: str, qualname: str) -> FunctionPlan | None:
        """The plan for ``module:qualname``, or None when the plan does not cover it."""
        found = self.functions.get(f"{module}:{qualname}")
        if found is not None:
            return found
        for glob, fp in self._rules:
            if _glob_matches_function(glob, module, qualname):
                return fp
        return None

    @classmethod
    def from_globs(cls, globs: list[str], level: str) -> "Plan":
        """Every function of modules matching ``globs`` at ``level`` (``--instrument``)."""
        if level not in LEVELS:
            raise PlanError(f"level {level!r} is not one of {', '.join(LEVELS)}")
        globs = [g for g in (s.strip() for s in globs) if g]
        rules = [
            (g, FunctionPlan(level, DEFAULT_CAPTURE[level], 1.0, f"{level}: --instrument {g!r}"))
            for g in globs
        ]
        text = json.dumps(["globs", PLAN_VERSION, sorted(globs), level], separators=(",", ":"))
        doc_hash = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls({}, hash=doc_hash, rules=rules)


# --------------------------------------------------------------------------
# loading and validation
# --------------------------------------------------------------------------

class _Checker:
    """Validation helpers that raise PlanError naming the file and JSON path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> None:
        raise PlanError(f"{self.source}: {path}: {problem}")

    def obj(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"expected an object, got {_type_name(value)}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {_type_name(value)}")
        return value

    def number(self, value: Any, path: str, lo: float | None = None, hi: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"expected a number, got {_type_name(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(path, f"expected a number in [{lo}, {hi}], got {value!r}")
        return float(value)

    def level(self, value: Any, path: str) -> str:
        if value not in LEVELS:
            self.fail(path, f"expected one of {', '.join(LEVELS)}, got {value!r}")
        return value

    def capture(self, value: Any, path: str) -> frozenset:
        if not isinstance(value, list):
            self.fail(path, f"expected a list of {', '.join(CAPTURES)}, got {_type_name(value)}")
        for i, item in enumerate(value):
            if item not in CAPTURES:
                self.fail(f"{path}[{i}]", f"expected one of {', '.join(CAPTURES)}, got {item!r}")
        return frozenset(value)

    def key(self, value: str, path: str) -> None:
        module, sep, qualname = value.partition(":")
        if not sep or not module or not qualname:
            self.fail(path, f"key {value!r} is not 'module:qualname'")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _path(parent: str, key: str) -> str:
    return f"{parent}[{json.dumps(key)}]"


def _function_plan(check: _Checker, entry: Any, path: str, defaults: dict) -> FunctionPlan:
    entry = check.obj(entry, path)
    level = check.level(entry.get("level", defaults.get("level", "off")), f"{path}.level")
    if "capture" in entry:
        capture = check.capture(entry["capture"], f"{path}.capture")
    else:
        capture = DEFAULT_CAPTURE[level]
    sampling = check.number(entry.get("sampling", defaults.get("sampling", 1.0)), f"{path}.sampling", 0.0, 1.0)
    reason = check.string(entry.get("reason", ""), f"{path}.reason")
    return FunctionPlan(level, capture, sampling, reason)


def plan_from_document(document: Any, source: str = "<plan>") -> Plan:
    """Validate a parsed plan document and build a :class:`Plan` from it."""
    check = _Checker(source)
    doc = check.obj(document, "$")
    if "version" not in doc:
        check.fail("$.version", "missing (this does not look like a scope-otel plan)")
    version = doc["version"]
    if version != PLAN_VERSION or isinstance(version, bool):
        check.fail("$.version", f"unsupported plan version {version!r}; this scope-otel reads version {PLAN_VERSION}")
    if "functions" not in doc:
        check.fail("$.functions", "missing")
    if "scope_otel_version" in doc:
        check.string(doc["scope_otel_version"], "$.scope_otel_version")
    if "hash" in doc:
        check.string(doc["hash"], "$.hash")
    budget = doc.get("budget_pct")
    if budget is not None:
        budget = check.number(budget, "$.budget_pct", 0.0, None)

    defaults = check.obj(doc.get("defaults", {}), "$.defaults")
    if "level" in defaults:
        check.level(defaults["level"], "$.defaults.level")
    if "capture" in defaults:
        check.capture(defaults["capture"], "$.defaults.capture")
    if "sampling" in defaults:
        check.number(defaults["sampling"], "$.defaults.sampling", 0.0, 1.0)

    functions: dict[str, FunctionPlan] = {}
    for key, entry in check.obj(doc["functions"], "$.functions").items():
        path = _path("$.functions", key)
        check.key(key, path)
        functions[key] = _function_plan(check, entry, path, defaults)

    rules = []
    overrides = check.obj(doc.get("overrides", {}), "$.overrides")
    for name in ("include", "exclude"):
        if name in overrides:
            items = overrides[name]
            if not isinstance(items, list):
                check.fail(f"$.overrides.{name}", f"expected a list of globs, got {_type_name(items)}")
            for i, item in enumerate(items):
                check.string(item, f"$.overrides.{name}[{i}]")
    pins = check.obj(overrides.get("pin", {}), "$.overrides.pin")
    for glob, level in pins.items():
        level = check.level(level, _path("$.overrides.pin", glob))
        rules.append((glob, FunctionPlan(level, DEFAULT_CAPTURE[level], 1.0, f"{level}: pinned by {glob!r}")))
    if "estimate" in doc:
        check.obj(doc["estimate"], "$.estimate")

    return Plan(functions, hash=_effective_hash(functions, rules), budget_pct=budget, rules=rules,
                source=source, document=doc)


def load_plan(path: str) -> Plan:
    """Read and validate the plan file at ``path``; :class:`PlanError` names what is wrong."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise PlanError(f"{source}: cannot read plan file: {exc.strerror or exc}") from None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f"line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "encoding"
        raise PlanError(f"{source}: $: not valid JSON ({where}: {exc})") from None
    return plan_from_document(document, source)


def save_plan(document: Mapping[str, Any], output: str, stdout: Any) -> str | None:
    """Write a plan document to ``output`` (``-``: ``stdout``), replacing a plan file only once the new
    one is whole; the reason it could not be written, or None."""
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if output == "-":
        stdout.write(text)
        return None
    tmp = output + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, output)
    except OSError as exc:
        return f"cannot write {output}: {exc.strerror or exc}"
    return None
