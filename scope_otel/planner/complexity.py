"""Complexity of one function body, measured in a single walk of its AST.

:func:`measure` returns a :class:`Body`: cyclomatic complexity (1 + decision
points: ``if``/``elif``, loops, ``except`` clauses, boolean operators,
conditional expressions, comprehension clauses, ``match`` cases), maximum
nesting of compound statements, loops (statements and comprehensions),
statement count, ``except`` handlers and ``raise`` statements, whether it
yields or awaits, and the raw material the other analyses need: every call
with its loop depth, the names of nested definitions, local bindings
(``x = Ctor()`` / ``with Ctor() as x``) and state mutations — assignments to
attributes of ``self``, to names declared ``global``, and in-place changes of
module-level mutable containers.

Nested functions and classes are not walked: they are functions of their
own.  Lambdas and comprehensions are, since they run as part of the body.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

#: Methods that change a container in place (list, dict, set, deque, ...).
MUTATING_METHODS = frozenset({
    "append", "extend", "insert", "pop", "popitem", "remove", "clear", "add",
    "discard", "update", "setdefault", "appendleft", "popleft", "extendleft",
    "sort", "reverse", "difference_update", "intersection_update",
    "symmetric_difference_update", "rotate",
})

_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith,
             ast.Try, ast.Match) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ())
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_TRIES = (ast.Try,) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ())
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class Body:
    """What :func:`measure` found in one function body."""

    cyclomatic: int = 1
    max_nesting: int = 0
    loops: int = 0
    statements: int = 0
    handlers: int = 0
    raises: int = 0
    yields: bool = False
    awaits: int = 0
    #: (call node, loop depth at the call site)
    calls: list = field(default_factory=list)
    #: names of functions/classes defined directly inside this body
    local_defs: set = field(default_factory=set)
    #: (target text, value expression) for ``x = v``, ``self.x = v`` and ``with v as x``
    bindings: list = field(default_factory=list)
    #: state mutations as readable targets: "self.total", "global counter", "module CACHE"
    mutations: list = field(default_factory=list)
    #: ``import`` statements inside the body (lazy imports resolve names too)
    imports: list = field(default_factory=list)
    #: plain names iterated over (``for x in NAME``) or subscripted (``NAME[i]``):
    #: parameters among them are probably containers, costly to capture
    iterated: set = field(default_factory=set)

    @property
    def exception_density(self) -> float:
        """``except`` handlers and ``raise`` statements per statement."""
        return round((self.handlers + self.raises) / max(self.statements, 1), 3)


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for Name/Attribute chains (calls on the way become ``()``), else None."""
    parts = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        elif isinstance(node, ast.Call):
            parts.append("()")
            node = node.func
        else:
            return None


class _Walker:
    __slots__ = ("body", "self_name", "module_mutables", "_globals", "_name_stores")

    def __init__(self, self_name: str | None, module_mutables: frozenset) -> None:
        self.body = Body()
        self.self_name = self_name
        self.module_mutables = module_mutables
        self._globals: set = set()
        self._name_stores: list = []  # plain-name assignments, classified at the end

    # -- statements ---------------------------------------------------------
    def stmts(self, stmts: list, nesting: int, loop: int) -> None:
        for stmt in stmts:
            self.stmt(stmt, nesting, loop)

    def stmt(self, node: ast.stmt, nesting: int, loop: int) -> None:
        b = self.body
        b.statements += 1
        if isinstance(node, _SCOPES):
            b.local_defs.add(node.name)
            return
        if isinstance(node, _COMPOUND):
            depth = nesting + 1
            if depth > b.max_nesting:
                b.max_nesting = depth
            if isinstance(node, ast.If):
                b.cyclomatic += 1
                self.expr(node.test, loop)
                self.stmts(node.body, depth, loop)
                if len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If):
                    self.stmt(node.orelse[0], nesting, loop)  # elif: same level
                    b.statements -= 1
                else:
                    self.stmts(node.orelse, depth, loop)
            elif isinstance(node, _LOOPS):
                b.cyclomatic += 1
                b.loops += 1
                if isinstance(node, ast.While):
                    self.expr(node.test, loop + 1)
                else:
                    if isinstance(node.iter, ast.Name):
                        b.iterated.add(node.iter.id)
                    self.expr(node.iter, loop)
                    self.store(node.target, None)
                self.stmts(node.body, depth, loop + 1)
                self.stmts(node.orelse, depth, loop)
            elif isinstance(node, _TRIES):
                b.handlers += len(node.handlers)
                b.cyclomatic += len(node.handlers)
                self.stmts(node.body, depth, loop)
                for handler in node.handlers:
                    if handler.type is not None:
                        self.expr(handler.type, loop)
                    self.stmts(handler.body, depth, loop)
                self.stmts(node.orelse, depth, loop)
                self.stmts(node.finalbody, depth, loop)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    self.expr(item.context_expr, loop)
                    if item.optional_vars is not None:
                        self.store(item.optional_vars, item.context_expr)
                self.stmts(node.body, depth, loop)
            else:  # Match
                self.expr(node.subject, loop)
                b.cyclomatic += len(node.cases)
                for case in node.cases:
                    if case.guard is not None:
                        self.expr(case.guard, loop)
                    self.stmts(case.body, depth, loop)
            return
        if isinstance(node, ast.Assign):
            self.expr(node.value, loop)
            for target in node.targets:
                self.store(target, node.value)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            if node.value is not None:
                self.expr(node.value, loop)
            self.store(node.target, node.value if isinstance(node, ast.AnnAssign) else None,
                       augmented=isinstance(node, ast.AugAssign))
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self.store(target, None)
        elif isinstance(node, ast.Raise):
            b.raises += 1
            for child in (node.exc, node.cause):
                if child is not None:
                    self.expr(child, loop)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            b.imports.append(node)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            if isinstance(node, ast.Global):
                self._globals.update(node.names)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self.stmt(child, nesting, loop)
                elif isinstance(child, ast.expr):
                    self.expr(child, loop)

    # -- expressions ----------------------------------------------------------
    def expr(self, node: ast.AST, loop: int) -> None:
        b = self.body
        stack = [(node, loop)]
        while stack:
            node, loop = stack.pop()
            if isinstance(node, ast.Call):
                b.calls.append((node, loop))
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in MUTATING_METHODS:
                    self.mutated_container(func.value)
            elif isinstance(node, ast.BoolOp):
                b.cyclomatic += len(node.values) - 1
            elif isinstance(node, ast.IfExp):
                b.cyclomatic += 1
            elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                b.loops += 1
                for gen in node.generators:
                    b.cyclomatic += 1 + len(gen.ifs)
                    if isinstance(gen.iter, ast.Name):
                        b.iterated.add(gen.iter.id)
                stack.append((node.generators[0].iter, loop))
                inner = loop + 1
                for gen in node.generators[1:]:
                    stack.append((gen.iter, inner))
                for gen in node.generators:
                    stack.extend((cond, inner) for cond in gen.ifs)
                if isinstance(node, ast.DictComp):
                    stack.append((node.key, inner))
                    stack.append((node.value, inner))
                else:
                    stack.append((node.elt, inner))
                continue
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                b.iterated.add(node.value.id)
            elif isinstance(node, (ast.Yield, ast.YieldFrom)):
                b.yields = True
            elif isinstance(node, ast.Await):
                b.awaits += 1
            elif isinstance(node, ast.NamedExpr):
                self.store(node.target, node.value)
            stack.extend((child, loop) for child in ast.iter_child_nodes(node))

    # -- state mutation -----------------------------------------------------------
    def store(self, target: ast.AST, value: ast.AST | None, augmented: bool = False) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self.store(elt, None, augmented)
            return
        if isinstance(target, ast.Starred):
            self.store(target.value, None, augmented)
            return
        if isinstance(target, ast.Name):
            self._name_stores.append(target.id)
            if value is not None:
                self.body.bindings.append((target.id, value))
            return
        if isinstance(target, ast.Attribute):
            text = dotted(target)
            if text and self.self_name and text.split(".", 1)[0] == self.self_name:
                self.body.mutations.append("self." + text.split(".", 1)[1])
                if value is not None:
                    self.body.bindings.append(("self." + text.split(".", 1)[1], value))
            elif text and text.split(".", 1)[0] in self.module_mutables:
                self.body.mutations.append("module " + text.split(".", 1)[0])
            self.expr(target.value, 0)
            return
        if isinstance(target, ast.Subscript):
            self.mutated_container(target.value)
            self.expr(target.slice, 0)

    def mutated_container(self, node: ast.AST) -> None:
        text = dotted(node)
        if not text or "()" in text:
            return
        head, _, rest = text.partition(".")
        if self.self_name and head == self.self_name and rest:
            self.body.mutations.append("self." + rest)
        elif head in self._globals:
            self.body.mutations.append("global " + head)
        elif head in self.module_mutables and not rest:
            self.body.mutations.append("module " + head)

    def finish(self, params: set) -> Body:
        b = self.body
        for name in self._name_stores:
            if name in self._globals:
                b.mutations.append("global " + name)
        # A module container mutated through a same-named local is not module state.
        local_names = set(self._name_stores) - self._globals | params
        if local_names:
            b.mutations = [m for m in b.mutations
                           if not (m.startswith("module ") and m[7:] in local_names)]
        b.mutations = sorted(set(b.mutations))
        return b


def params_of(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Parameter names in order (positional-only, positional, *args, keyword-only, **kw)."""
    a = node.args
    names = [p.arg for p in a.posonlyargs + a.args]
    if a.vararg:
        names.append(a.vararg.arg)
    names += [p.arg for p in a.kwonlyargs]
    if a.kwarg:
        names.append(a.kwarg.arg)
    return names


def measure(
    node: ast.FunctionDef | ast.AsyncFunctionDef,
    *,
    self_name: str | None = None,
    module_mutables: frozenset = frozenset(),
) -> Body:
    """Measure ``node``'s body; ``self_name`` is the instance parameter of a method."""
    walker = _Walker(self_name, module_mutables)
    walker.stmts(node.body, 0, 0)
    return walker.finish(set(params_of(node)))


def measure_module(tree: ast.Module) -> Body:
    """The module's own top-level code, measured like a function body."""
    walker = _Walker(None, frozenset())
    walker.stmts(tree.body, 0, 0)
    return walker.body
