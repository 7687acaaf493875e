"""Analyse a source tree: every function with its location, patterns and complexity.

::

    from scope_otel.planner.analysis import analyse

    result = analyse(["src/shop"])            # nothing is imported
    info = result.functions["shop.views:checkout"]
    info.patterns        # {'flask.route', 'sqlalchemy.session', ...}
    info.complexity()    # cyclomatic, max_nesting, loops, recursion, fan_out, ...

Each module is parsed, measured (:mod:`.complexity`), recognised
(:mod:`.patterns`) and then its syntax tree is dropped, so memory stays flat
on large trees.  Work that needs every module — class kinds inherited from
classes in other modules, the call graph, recursion and call frequencies
(:mod:`.callgraph`) — runs at the end on the compact records.

Keys are ``module:qualname`` with Python's own qualnames: methods are
``Class.method``, nested functions ``outer.<locals>.inner``.
"""
from __future__ import annotations

import ast
import time
from typing import Callable

from scope_otel.planner import callgraph, patterns
from scope_otel.planner.complexity import dotted, measure, measure_module, params_of
from scope_otel.planner.records import Analysis, ClassInfo, FunctionInfo
from scope_otel.planner.source import Parsed, Skipped, discover, parse

#: progress(done, total, current_path) is called once per file.
Progress = Callable[[int, int, str], None]


_DECORATOR_SKIP_SELF = frozenset({"staticmethod"})
_COMPOUND_BODIES = ("body", "orelse", "finalbody")


class _ModuleAnalyser:
    """Definitions, bindings and patterns of one parsed module."""

    def __init__(self, parsed: Parsed, result: Analysis) -> None:
        self.parsed = parsed
        self.result = result
        self.ctx = patterns.ModuleContext(parsed.module, is_package=parsed.path.endswith("__init__.py"))
        self.pending: list = []   # (FunctionInfo, decorator nodes, local imports)

    def run(self) -> None:
        ctx = self.ctx
        patterns.module_bindings(ctx, self.parsed.tree)
        top = measure_module(self.parsed.tree)
        self.visit(self.parsed.tree.body, "", None)
        # Module-level registrations (signal.connect(f), app.add_url_rule(...)) mark functions.
        patterns.call_patterns(ctx, top, {}, None)
        for info, decorators, local in self.pending:
            found = patterns.call_patterns(ctx, info.body, local, info.class_name)
            found |= patterns.decorator_patterns(ctx, decorators, local)
            found |= patterns.shape_patterns(info.is_async, info.body)
            if patterns.function_view(ctx, info.params, info.class_name is not None):
                found.add("django.view")
            info.patterns |= found
            info.calls = [(text, ctx.resolve(text, local), loop)
                          for text, loop in ((dotted(c.func), loop) for c, loop in info.body.calls) if text]
        for info, _d, _l in self.pending:
            info.patterns |= ctx.marks.get((info.class_name, info.name), set())
            # Drop the syntax tree: keep only the compact records.
            info.body.calls = []
            info.body.bindings = []
            info.body.imports = []
            self.result.functions[info.key] = info

    def visit(self, stmts: list, prefix: str, klass: ClassInfo | None) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.ClassDef):
                self.visit_class(stmt, prefix)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.visit_function(stmt, prefix, klass)
            elif isinstance(stmt, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With,
                                   ast.AsyncWith, ast.Try)) or type(stmt).__name__ in ("TryStar", "Match"):
                for name in _COMPOUND_BODIES:
                    self.visit(getattr(stmt, name, ()), prefix, klass)
                for handler in getattr(stmt, "handlers", ()):
                    self.visit(handler.body, prefix, klass)
                for case in getattr(stmt, "cases", ()):
                    self.visit(case.body, prefix, klass)

    def visit_class(self, node: ast.ClassDef, prefix: str) -> None:
        qualname = prefix + node.name
        bases = [self.ctx.resolve(dotted(b)) for b in node.bases if dotted(b)]
        klass = ClassInfo(self.ctx.module, qualname, bases, patterns.class_kinds(self.ctx, node, bases), [])
        self.result.classes[klass.full_name] = klass
        self.visit(node.body, qualname + ".", klass)

    def visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, prefix: str,
                       klass: ClassInfo | None) -> None:
        qualname = prefix + node.name
        params = params_of(node)
        decorator_names = {(dotted(d.func if isinstance(d, ast.Call) else d) or "").rpartition(".")[2]
                           for d in node.decorator_list}
        in_class = klass is not None and prefix == klass.qualname + "."
        self_name = params[0] if in_class and params and not decorator_names & _DECORATOR_SKIP_SELF else None
        body = measure(node, self_name=self_name, module_mutables=frozenset(self.ctx.mutables))
        local: dict = {}
        for imp in body.imports:
            self.ctx.add_import(imp, into=local)
        patterns.function_bindings(self.ctx, body, local)
        info = FunctionInfo(
            module=self.ctx.module, qualname=qualname, file=self.parsed.path, line=node.lineno,
            end_line=getattr(node, "end_lineno", node.lineno) or node.lineno,
            is_async=isinstance(node, ast.AsyncFunctionDef), params=params,
            class_name=klass.qualname if in_class else None, self_name=self_name, body=body,
            is_property=bool(decorator_names & {"property", "cached_property", "setter", "getter"}),
            first_line=min([d.lineno for d in node.decorator_list] + [node.lineno]),
        )
        if in_class:
            klass.methods.append(info.key)
        self.pending.append((info, node.decorator_list, local))
        self.visit(node.body, qualname + ".<locals>.", None)


def _inherit_class_kinds(result: Analysis) -> None:
    """Give classes the kinds of analysed base classes (a view subclassing a view)."""
    classes = result.classes
    changed, rounds = True, 0
    while changed and rounds < 8:
        changed, rounds = False, rounds + 1
        for klass in classes.values():
            for base in klass.bases:
                parent = classes.get(base) or classes.get(f"{klass.module}.{base}")
                if parent is not None and not parent.kinds <= klass.kinds:
                    klass.kinds |= parent.kinds
                    changed = True
    for klass in classes.values():
        if klass.kinds:
            for key in klass.methods:
                info = result.functions.get(key)
                if info is not None:
                    info.patterns |= patterns.method_patterns(klass.kinds, info.name)


def analyse(paths: list[str], progress: Progress | None = None) -> Analysis:
    """Analyse every Python file under ``paths``; bad files are skipped and listed."""
    started = time.perf_counter()
    result = Analysis()
    files, skipped = discover(paths)
    result.skipped.extend(skipped)
    total = len(files)
    for done, source in enumerate(files, 1):
        parsed = parse(source)
        if isinstance(parsed, Skipped):
            result.skipped.append(parsed)
        elif parsed.module in result.modules:
            result.skipped.append(Skipped(parsed.path, f"module {parsed.module} already read from {result.modules[parsed.module]}"))
        else:
            result.modules[parsed.module] = parsed.path
            try:
                _ModuleAnalyser(parsed, result).run()
            except RecursionError:
                result.skipped.append(Skipped(parsed.path, "too deeply nested to analyse"))
        if progress is not None:
            progress(done, total, source.path)
    _inherit_class_kinds(result)
    callgraph.link(result)
    result.seconds = time.perf_counter() - started
    return result
