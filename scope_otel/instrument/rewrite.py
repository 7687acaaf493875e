"""Rewrite a module's AST so its planned functions call the capture runtime.

:func:`rewrite_module` is the compiler pass behind the import hook and
``scope-otel compile``.  Every function the plan covers (``def`` and
``async def`` at any depth, methods included; lambdas are left alone) gets,
*inside its own body*, so that no Python frame is added and recursion depth,
``super()``, ``__class__``, closures, ``__name__``/``__qualname__``/
``co_name`` and line numbers stay exactly as written::

    def price(item, qty=1):                 def price(item, qty=1):
        "doc"                                   "doc"
        total = item.cents * qty                _@scope_t = _@scope_p3.enter(item, qty)
        return total                            try:
                                                    total = item.cents * qty
                                                    return _@scope_p3.exit(_@scope_t, total)
                                                except BaseException as _@scope_e:
                                                    if _@scope_t is not None:
                                                        _@scope_p3.exception(_@scope_t, _@scope_e)
                                                        _@scope_t = None
                                                    raise

``_@scope_p3`` is the function's probe (``runtime.probe(fid, helpers)``,
the only module global a rewritten function refers to): ``enter`` is
``runtime.enter_params(fid, ...)``, ``exit``, ``exception``, ``suspend``,
``resume`` and ``state_change`` the runtime's (C where built), as cheap to
call as module global functions, ``level`` the function's current level,
``sup`` the helpers of ``scope_otel.instrument._support`` (yields nested in
expressions, ``locals()``, the builtins of the ``yield from`` loop); the
module's namespace gains no callable.  The prelude that registers the
functions imports nothing (see :func:`install_builtins`), and probes pickle
by the function's identity, so functions pickled by value (cloudpickle)
unpickle wherever scope-otel is installed.  ``enter`` receives the
parameters' values (their names were given to ``register``) and reads the
function's level itself, on every call: a level changed at run time
(config ``level``/``function_levels``, the overhead governor) takes effect on
the next call without re-import, a function at ``off`` costs one C call
that returns ``None``, and the argument dict is built, in C, only at
``full``.  ``exit`` returns the value: a plain function whose returns are
all statements of its body (or inside ifs) ends its call in the return
statement, as above, and with an exit call after a last statement that
can fall off the end.  Anywhere code can run after a ``return`` (``with``,
``try``/``finally``, a loop's iterator), and in generators and coroutines,
the return value goes to a local instead (``return (_@scope_rv := total)``)
and a ``finally`` ends the call, after that code.
At ``full`` the runtime also keeps the return value and state changes: assignments to ``self.<attr>`` (the
method's first parameter, ``cls`` too; in unpacking targets as well) and
to names declared ``global``.  State hooks are emitted where the plan's
capture set has ``state`` (``full`` has it by default), and only there the
prologue also reads ``LEVELS[fid]`` (``_@scope_l``) so that the hooks run
at ``full`` only; switching a ``boundaries`` function to ``full`` at run
time brings arguments and return values, not state changes.

Generators and async generators report ``suspend`` before each ``yield``
and ``resume`` after it (in a ``finally``, so ``throw()`` and ``close()``
resume too; a ``yield`` nested in an expression of a generator goes through
a tiny helper generator for the same reason, in an async generator through
helper calls that do not see ``athrow()``).  ``yield from g`` becomes
``yield from probe.delegate(token, g)``: the runtime's iterator over ``g``
(C where built) reports resume before ``g`` runs and suspend after each value
it hands over, and forwards ``send``/``throw``/``close`` as PEP 380 says, so
the sub-generator runs with the delegating generator on the stack and no
frame is added (the one visible difference: ``gi_yieldfrom`` is the
delegate, not ``g``; the pure-Python twin's delegate is a Python class, whose
methods are frames).  Closing a
generator early (``GeneratorExit``) is an ordinary exit, not an exception.
Coroutines need nothing at ``await``: the runtime's call stack lives in a
ContextVar, which asyncio keeps per task.

Injected names start with ``_@``: no source code can spell them, a leading
underscore keeps them out of ``from m import *``, and no ``__`` prefix means
no class-private name mangling.  ``locals()`` and ``vars()`` inside a
rewritten function return the user's names only.  Injected statements carry
the line of the code object's start (``co_firstlineno``), so no new line
appears in ``co_lines()``, and tracebacks point at the source's lines.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from typing import Any, Iterator

#: Bumped whenever the generated code changes, so cached bytecode is rebuilt.
REWRITE_VERSION = 10

RT = "_@scope_rt"       # scope_otel.capture.runtime, a builtins name (install_builtins)
SUP = "_@scope_sup"     # scope_otel.instrument._support, a builtins name (install_builtins)
MARKER = "_@scope_rewritten"  # module global: this module was rewritten
_T, _RV, _E, _Y, _SV = "_@scope_t", "_@scope_rv", "_@scope_e", "_@scope_y", "_@scope_sv"
_LV = "_@scope_l"  # the level after entry, read only by functions with state hooks


@dataclass
class Registered:
    """One function the rewrite instrumented (one ``register`` call at import)."""

    var: str
    qualname: str
    lineno: int
    level: str
    capture: frozenset
    sampling: float
    params: tuple = ()  # names of the values given to enter_params, in order


@dataclass
class RewriteResult:
    tree: ast.Module
    functions: list[Registered] = field(default_factory=list)
    #: the prelude's statements, when asked for apart from the tree (``separate_prelude``)
    prelude: list[ast.stmt] = field(default_factory=list)


def rewrite_module(tree: ast.Module, module: str, plan: Any, *, separate_prelude: bool = False) -> RewriteResult:
    """Instrument, in place, the functions of ``tree`` that ``plan`` covers.

    ``plan`` needs ``for_function(module, qualname)`` returning None or an
    object with ``level``, ``capture`` and ``sampling``.  Returns the tree
    (with the module prelude inserted only if something was instrumented)
    and the list of instrumented functions.  With ``separate_prelude`` the
    prelude is returned in ``result.prelude`` instead of inserted: the main
    script's code is run by Python itself, so its prelude runs beforehand
    (:mod:`scope_otel.instrument.main`).
    """
    result = RewriteResult(tree)
    _Walker(module, plan, result).visit_body(tree.body, prefix="", in_class=False)
    if result.functions:
        if separate_prelude:
            result.prelude = _prelude(module, result.functions)
        else:
            tree.body[_prelude_index(tree.body):0] = _prelude(module, result.functions)
        install_builtins()  # whoever runs this code next finds the runtime
    return result


def _stamp(node: ast.AST, line: int) -> ast.AST:
    """Give the nodes created under ``node`` the position ``line``, column 0.

    Each place that creates nodes stamps them itself, so this stops at nodes
    that already have a position (the user's): a whole-tree pass would cost
    more than the rewrite.  ``node`` itself is always entered, because a
    user node may have just been given new children.
    """
    if "lineno" in node._attributes and getattr(node, "lineno", None) is None:
        node.lineno = node.end_lineno = line
        node.col_offset = node.end_col_offset = 0
    for child in ast.iter_child_nodes(node):
        if "lineno" not in child._attributes or getattr(child, "lineno", None) is None:
            _stamp(child, line)
    return node


# --------------------------------------------------------------------------
# templates: parsed once with placeholder names, renamed on use
# --------------------------------------------------------------------------

_RENAME = {"S_T": _T, "S_RV": _RV, "S_E": _E, "S_Y": _Y, "S_SV": _SV, "S_LV": _LV,
           "S_RT": RT, "S_SUP": SUP}

# S_P is the function's probe (runtime.probe(fid), a module global): its
# methods are the runtime's calls bound to the function, as cheap as calling
# a module global function, and the module gains no callable.  The
# parameters' values are appended to enter (enter_params(fid, a, b, ...)):
# the runtime reads the level itself and builds the argument dict only at full.
_PROLOGUE = """
S_RV = None
S_T = S_P.enter()
"""
# A plain function whose returns all sit directly in its body (or in ifs)
# ends its call in the return statement itself, ``return S_P.exit(S_T, value)``
# (exit returns the value), and with an exit call after a last statement
# that can fall off the end: no return-value local, no finally.  Nothing of
# the function runs after that point (no finally, with, or loop to unwind).
_PROLOGUE_DIRECT = """
S_T = S_P.enter()
"""
_FALL_OFF = """
S_P.exit(S_T)
"""
_LEVEL_READ = """
S_LV = S_P.level
"""
_WRAP = """
try:
    S_BODY
except BaseException as S_E:
    if S_T is not None:
        S_P.exception(S_T, S_E)
        S_T = None
    raise
finally:
    if S_T is not None:
        S_P.exit(S_T, S_RV)
"""
_CLOSE_IS_EXIT = """
try:
    pass
except GeneratorExit:
    raise
"""
_STATE = """
if S_T is not None and S_LV > 1:
    S_P.state_change(S_T, S_TARGET, S_VALUE)
"""
_SUSPEND = """
if S_T is not None:
    S_P.suspend(S_T)
"""
_RESUME_TRY = """
try:
    pass
finally:
    if S_T is not None:
        S_P.resume(S_T)
"""
_TEMPLATE_TEXT = {
    "prologue": _PROLOGUE, "prologue_direct": _PROLOGUE_DIRECT, "fall_off": _FALL_OFF,
    "level": _LEVEL_READ, "wrap": _WRAP,
    "close": _CLOSE_IS_EXIT, "state": _STATE, "suspend": _SUSPEND, "resume_try": _RESUME_TRY,
}


@functools.cache
def _parsed(name: str) -> list[ast.stmt]:
    # parsed on first use: a process whose modules all come from the rewrite cache never needs them
    return ast.parse(_TEMPLATE_TEXT[name]).body


def _template(name: str, fid: str, line: int, **slots: ast.expr) -> list[ast.stmt]:
    """A fresh copy of template ``name``: placeholders renamed, slots filled, all at ``line``."""
    names = {**_RENAME, "S_F": fid, "S_P": _probe_var(fid)}
    return [_instantiate(stmt, names, slots, line) for stmt in _parsed(name)]


def _instantiate(node: Any, names: dict[str, str], slots: dict[str, ast.expr], line: int) -> Any:
    # much cheaper than copy.deepcopy followed by a NodeTransformer
    if isinstance(node, list):
        return [_instantiate(item, names, slots, line) for item in node]
    if not isinstance(node, ast.AST):
        return node
    if isinstance(node, ast.Name):
        if node.id in slots:
            return _stamp(slots[node.id], line)
        new = ast.Name(id=names.get(node.id, node.id), ctx=node.ctx)
    else:
        new = node.__class__(**{f: _instantiate(getattr(node, f), names, slots, line) for f in node._fields})
        if isinstance(node, ast.ExceptHandler) and node.name:
            new.name = names.get(node.name, node.name)
    if "lineno" in node._attributes:
        new.lineno = new.end_lineno = line
        new.col_offset = new.end_col_offset = 0
    return new


def _probe_var(fid_var: str) -> str:
    """The module global holding the probe of the function whose id is in ``fid_var``."""
    return fid_var.replace("_@scope_f", "_@scope_p", 1)


def _sup_call(probe: str, attr: str, *args: ast.expr) -> ast.Call:
    """``probe.sup.attr(*args)``: the rewrite's helpers, reached through the function's probe."""
    helpers = ast.Attribute(value=_name(probe), attr="sup", ctx=ast.Load())
    return ast.Call(func=ast.Attribute(value=helpers, attr=attr, ctx=ast.Load()), args=list(args), keywords=[])


def _name(id_: str, ctx: ast.expr_context | None = None) -> ast.Name:
    return ast.Name(id=id_, ctx=ctx or ast.Load())


def _attr_call(obj: str, attr: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Attribute(value=_name(obj), attr=attr, ctx=ast.Load()),
                    args=list(args), keywords=[])


def _prelude_index(body: list[ast.stmt]) -> int:
    """After the module docstring and ``from __future__`` imports."""
    i = 0
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        i = 1
    while i < len(body) and isinstance(body[i], ast.ImportFrom) and body[i].module == "__future__":
        i += 1
    return i


def _prelude(module: str, functions: list[Registered]) -> list[ast.stmt]:
    # No import statement and no module global but the probes: the runtime and the helpers are
    # reached through builtins names no source can spell (see install_builtins), used here only,
    # so a builtins.__import__ hook sees nothing and functions pickled by value (cloudpickle)
    # carry only their probes, which pickle by function identity.
    lines = [f"{MARKER.replace('_@scope_', 'S_')} = True"]
    for fn in functions:
        lines.append(
            f"{_probe_var(fn.var).replace('_@scope_', 'S_')} = S_RT.probe(S_RT.register({module!r}, "
            f"{fn.qualname!r}, __file__, {fn.lineno}, {fn.level!r}, frozenset({sorted(fn.capture)!r}), "
            f"{fn.sampling!r}, {tuple(fn.params)!r}), S_SUP)"
        )
    tree = ast.parse("\n".join(lines))
    renamer = {**_RENAME, MARKER.replace("_@scope_", "S_"): MARKER}
    renamer.update({_probe_var(fn.var).replace("_@scope_", "S_"): _probe_var(fn.var) for fn in functions})
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = renamer.get(node.id, node.id)
        if hasattr(node, "lineno"):
            node.lineno = node.end_lineno = 1
            node.col_offset = node.end_col_offset = 0
    return tree.body


def install_builtins() -> None:
    """Make the runtime and the rewrite's helpers reachable from rewritten modules' preludes.

    Two ``builtins`` names that no source code can spell (``_@scope_rt``, ``_@scope_sup``): the
    prelude reads them without an ``import`` statement (which ``builtins.__import__`` hooks
    would see) and without adding them to the module's globals."""
    import builtins

    from scope_otel.capture import runtime
    from scope_otel.instrument import _support

    setattr(builtins, RT, runtime)
    setattr(builtins, SUP, _support)


# --------------------------------------------------------------------------
# walking the module: qualnames, which functions, nested scopes
# --------------------------------------------------------------------------

_FuncDef = (ast.FunctionDef, ast.AsyncFunctionDef)


class _Walker:
    def __init__(self, module: str, plan: Any, result: RewriteResult) -> None:
        self.module, self.plan, self.result = module, plan, result

    def visit_body(self, body: list[ast.stmt], prefix: str, in_class: bool) -> None:
        for node in _scope_children(body):
            if isinstance(node, ast.ClassDef):
                self.visit_body(node.body, f"{prefix}{node.name}.", in_class=True)
            elif isinstance(node, _FuncDef):
                qualname = f"{prefix}{node.name}"
                # inner scopes first: their rewrite must not see ours
                self.visit_body(node.body, f"{qualname}.<locals>.", in_class=False)
                fp = self.plan.for_function(self.module, qualname)
                if fp is not None and fp.level != "off":
                    var = f"_@scope_f{len(self.result.functions)}"
                    rewrite = _FunctionRewrite(node, var, in_class, fp)
                    self.result.functions.append(Registered(
                        var, qualname, node.lineno, fp.level, frozenset(fp.capture), float(fp.sampling),
                        tuple(rewrite.params)))
                    rewrite.apply()


def _scope_children(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Function and class definitions directly in this scope, at any statement depth."""
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.ClassDef, *_FuncDef)):
            yield node
            continue
        children = [c for c in ast.iter_child_nodes(node) if isinstance(c, (ast.stmt, ast.excepthandler, ast.match_case))]
        stack.extend(reversed(children))


def _own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes of a function body, not descending into nested scopes."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, (ast.ClassDef, ast.Lambda, *_FuncDef)):
            yield from _own_nodes(child)


def _direct_returns(body: list[ast.stmt]) -> bool:
    """Every ``return`` of this body is one of its statements or inside ifs only."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            if not (_direct_returns(stmt.body) and _direct_returns(stmt.orelse)):
                return False
        elif isinstance(stmt, (ast.ClassDef, *_FuncDef)):
            continue  # another scope's returns
        elif not isinstance(stmt, ast.Return) and any(isinstance(n, ast.Return) for n in _own_nodes(stmt)):
            return False
    return True


def _is_static(node: ast.AST) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)


class _FunctionRewrite(ast.NodeTransformer):
    """Rewrite one function's own body (nested scopes are handled separately)."""

    def __init__(self, node: ast.FunctionDef | ast.AsyncFunctionDef, fid: str, in_class: bool, fp: Any) -> None:
        # injected code carries the code object's first line (the first
        # decorator's, if any), so no line appears that the original lacks
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        self.node, self.fid, self.line = node, fid, first
        self.probe = _probe_var(fid)
        own = list(_own_nodes(node))
        self.is_gen = any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in own)
        self.is_async = isinstance(node, ast.AsyncFunctionDef)
        self.globals = {name for n in own if isinstance(n, ast.Global) for name in n.names}
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        self.self_name = positional[0].arg if in_class and positional and not _is_static(node) else None
        capture = frozenset(fp.capture)
        # state hooks are emitted where the plan asks for them, or where the
        # function is full with no explicit capture list (everything)
        self.want_state = "state" in capture or (fp.level == "full" and not capture)
        self.params = [a.arg for a in (*positional, *([args.vararg] if args.vararg else []),
                                       *args.kwonlyargs, *([args.kwarg] if args.kwarg else []))]
        if self.self_name:
            self.params.remove(self.self_name)
        self.state_hooks = False  # set by _hook: the prologue then reads the level for them
        # returns end the call themselves (see _PROLOGUE_DIRECT)
        self.direct = not self.is_gen and not self.is_async and _direct_returns(node.body)

    # -- the whole function -------------------------------------------------

    def _sup_call(self, attr: str, *args: ast.expr) -> ast.Call:
        return _sup_call(self.probe, attr, *args)

    def apply(self) -> None:
        node = self.node
        body = node.body
        doc = []
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            doc, body = body[:1], body[1:]
        body = self._statements(body) or [_stamp(ast.Pass(), self.line)]
        prologue = _template("prologue_direct" if self.direct else "prologue", self.fid, self.line)
        enter_call = prologue[-1].value
        enter_call.args = [_stamp(_name(p), self.line) for p in self.params]
        if self.state_hooks:
            prologue += _template("level", self.fid, self.line)
        (wrap,) = _template("wrap", self.fid, self.line)
        wrap.body = body
        if self.direct:
            wrap.finalbody = []
            if not isinstance(body[-1], (ast.Return, ast.Raise)):
                body.extend(_template("fall_off", self.fid, self.line))
        if self.is_gen or isinstance(node, ast.AsyncFunctionDef):
            # close() of a generator or coroutine is a normal way to end it
            (close,) = _template("close", self.fid, self.line)
            wrap.handlers.insert(0, close.handlers[0])
        node.body = [*doc, *prologue, wrap]

    def _statements(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            new = self.visit(stmt)
            if new is None:
                continue
            for made in new if isinstance(new, list) else [new]:
                out.append(_stamp(made, stmt.lineno))
        return out

    # -- nested scopes are not ours ---------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        # decorators and defaults are evaluated in our scope
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.args = self.visit(node.args)
        if node.returns:
            node.returns = self.visit(node.returns)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.bases = [self.visit(b) for b in node.bases]
        node.keywords = [self.visit(k) for k in node.keywords]
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        node.args = self.visit(node.args)
        return node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        # statement lists may grow: route them through _statements
        for name, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, name, self._statements(value) or [_stamp(ast.Pass(), self.line)])
            elif isinstance(value, list):
                setattr(node, name, [self.visit(v) if isinstance(v, ast.AST) else v for v in value])
            elif isinstance(value, ast.AST):
                setattr(node, name, self.visit(value))
        return node

    # -- returns ------------------------------------------------------------

    def visit_Return(self, node: ast.Return) -> ast.AST | list[ast.stmt]:
        if self.direct:
            args = [_name(_T)] + ([self.visit(node.value)] if node.value is not None else [])
            node.value = _attr_call(self.probe, "exit", *args)
            return _stamp(node, node.lineno)
        if node.value is None:
            return node
        node.value = ast.NamedExpr(target=_name(_RV, ast.Store()), value=self.visit(node.value))
        return _stamp(node, node.lineno)

    # -- yields ----------------------------------------------------------------

    def visit_Expr(self, node: ast.Expr) -> ast.AST | list[ast.stmt]:
        if isinstance(node.value, (ast.Yield, ast.YieldFrom)):
            return self._yield_statement(node)
        return self.generic_visit(node)

    def visit_Yield(self, node: ast.Yield) -> ast.expr:
        # A yield inside a larger expression: no room for try/finally here.
        value = self.visit(node.value) if node.value else ast.Constant(None)
        if not self.is_async:
            # (yield from yield_one(t, v)): a helper generator resumes on throw/close too
            new = ast.YieldFrom(value=self._sup_call("yield_one", _name(_T), value))
            return _stamp(ast.copy_location(new, node), node.lineno)
        # async generators cannot yield from: helpers around it (not throw-safe)
        node.value = self._sup_call("suspending", _name(_T), value)
        _stamp(node, node.lineno)
        return _stamp(self._sup_call("resumed", _name(_T), node), node.lineno)

    def visit_YieldFrom(self, node: ast.YieldFrom) -> ast.expr:
        # yield from probe.delegate(token, x): the runtime's iterator reports suspend/resume
        # around each value handed over (C: no frame between this generator and x)
        node.value = _attr_call(self.probe, "delegate", _name(_T), self.visit(node.value))
        return _stamp(node, node.lineno)

    def _yield_statement(self, stmt: ast.Expr | ast.Assign) -> list[ast.stmt]:
        """``[targets =] yield x`` as suspend; try: yield; finally: resume."""
        y = stmt.value
        if isinstance(y, ast.YieldFrom):
            return self._delegation(stmt)
        pre: list[ast.stmt] = []
        if isinstance(y, ast.Yield) and y.value is not None:
            y.value = self.visit(y.value)
            if not isinstance(y.value, (ast.Name, ast.Constant)):
                # evaluate before suspending (calls in it belong to us), and
                # hand the value over without keeping it alive in a local
                pre.append(ast.Assign(targets=[_name(_Y, ast.Store())], value=y.value))
                y.value = _take(_Y)
        elif isinstance(y, ast.YieldFrom):
            y.value = self.visit(y.value)
        post: list[ast.stmt] = []
        if isinstance(stmt, ast.Assign) and not all(isinstance(t, ast.Name) for t in stmt.targets):
            # assign outside the suspension: setattr/setitem code is ours again
            targets = stmt.targets
            stmt.targets = [_name(_Y, ast.Store())]
            post = self._statements([ast.Assign(targets=targets, value=_take(_Y))])
        elif isinstance(stmt, ast.Assign):
            post = self._state_hooks(stmt.targets)
        suspend = _template("suspend", self.fid, self.line)
        (guard,) = _template("resume_try", self.fid, self.line)
        _stamp(y, stmt.lineno)
        guard.body = [_stamp(stmt, stmt.lineno)]
        return [*pre, *suspend, guard, *post]

    def _delegation(self, stmt: ast.Expr | ast.Assign) -> list[ast.stmt]:
        """``[targets =] yield from x`` with ``x`` delegated through the probe (see visit_YieldFrom);
        attribute and subscript targets are assigned after the delegation, as the state hooks need."""
        stmt.value = self.visit_YieldFrom(stmt.value)
        if isinstance(stmt, ast.Assign) and not all(isinstance(t, ast.Name) for t in stmt.targets):
            targets = stmt.targets
            stmt.targets = [_name(_Y, ast.Store())]
            return [_stamp(stmt, stmt.lineno),
                    *self._statements([_stamp(ast.Assign(targets=targets, value=_take(_Y)), stmt.lineno)])]
        post = self._state_hooks(stmt.targets) if isinstance(stmt, ast.Assign) else []
        return [_stamp(stmt, stmt.lineno), *post]

    # -- assignments: state changes and yields ---------------------------------

    def visit_Assign(self, node: ast.Assign) -> ast.AST | list[ast.stmt]:
        if isinstance(node.value, (ast.Yield, ast.YieldFrom)):
            return self._yield_statement(node)
        node.value = self.visit(node.value)
        node.targets = [self.visit(t) for t in node.targets]
        if not self.want_state:
            return node
        if any(self._unpacks_self_attr(t) for t in node.targets):
            return self._unpacking_assign(node)
        attrs = [t for t in node.targets if self._self_attr(t)]
        if not attrs:
            return [node, *self._state_hooks(node.targets)]
        # self.x = v: hand the assigned value to the runtime without reading
        # the attribute back (a property getter could have side effects)
        value, node.value = node.value, _name(_SV)
        hooks = [h for t in node.targets if self._self_attr(t)
                 for h in self._hook(_target_label(t), _name(_SV))]
        hooks += self._state_hooks([t for t in node.targets if not self._self_attr(t)])
        return [ast.Assign(targets=[_name(_SV, ast.Store())], value=value),
                node, *hooks, _clear(_SV)]

    def _unpacks_self_attr(self, target: ast.expr) -> bool:
        return isinstance(target, (ast.Tuple, ast.List)) and any(self._self_attr(n) for n in ast.walk(target))

    def _unpacking_assign(self, node: ast.Assign) -> list[ast.stmt]:
        """``self.a, (b, *self.c) = v`` (and chains of such targets): each unpacking target is unpacked
        into fresh names first, which are then stored to the original targets left to right, the
        attributes' values handed to the runtime as they are stored.  Python unpacks the whole value
        before its first store and stores (evaluating each target's own expressions) left to right,
        so the order of every side effect is kept; nothing is read back."""
        out: list[ast.stmt] = [ast.Assign(targets=[_name(_SV, ast.Store())], value=node.value)]
        temps: list[str] = []

        def leaves(target: ast.expr, stores: list[tuple[ast.expr, str]]) -> ast.expr:
            if isinstance(target, (ast.Tuple, ast.List)):
                return type(target)(elts=[leaves(e, stores) for e in target.elts], ctx=ast.Store())
            if isinstance(target, ast.Starred):
                return ast.Starred(value=leaves(target.value, stores), ctx=ast.Store())
            temp = f"{_SV}{len(temps)}"
            temps.append(temp)
            stores.append((target, temp))
            return _name(temp, ast.Store())

        for target in node.targets:
            if not self._unpacks_self_attr(target):
                out += self._stored(target, _SV)
                continue
            stores: list[tuple[ast.expr, str]] = []
            out.append(ast.Assign(targets=[leaves(target, stores)], value=_name(_SV)))
            for leaf, temp in stores:
                out += self._stored(leaf, temp)
        out += [_clear(temp) for temp in temps]
        out.append(_clear(_SV))
        return [_stamp(stmt, node.lineno) for stmt in out]

    def _stored(self, target: ast.expr, var: str) -> list[ast.stmt]:
        """``target = var``, then the state hook ``target`` calls for (an attribute of self, a global)."""
        hooks = self._hook(_target_label(target), _name(var)) if self._self_attr(target) \
            else self._state_hooks([target])
        return [ast.Assign(targets=[target], value=_name(var)), *hooks]

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | list[ast.stmt]:
        if node.value is not None and self._self_attr(node.target):
            # annotations of attribute targets are not evaluated in a function
            return self.visit_Assign(ast.Assign(targets=[node.target], value=node.value))
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST | list[ast.stmt]:
        node.value = self.visit(node.value)
        node.target = self.visit(node.target)
        if not self.want_state:
            return node
        if self._self_attr(node.target):
            # self.x += v is get, in-place op, set: spelled out to see the value
            t = node.target
            load = ast.Attribute(value=_name(t.value.id), attr=t.attr, ctx=ast.Load())
            store = ast.Attribute(value=_name(t.value.id), attr=t.attr, ctx=ast.Store())
            return [
                ast.Assign(targets=[_name(_SV, ast.Store())], value=load),
                ast.AugAssign(target=_name(_SV, ast.Store()), op=node.op, value=node.value),
                ast.Assign(targets=[store], value=_name(_SV)),
                *self._hook(_target_label(t), _name(_SV)),
                _clear(_SV),
            ]
        return [node, *self._state_hooks([node.target])]

    def _self_attr(self, target: ast.AST) -> bool:
        return (self.self_name is not None and isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name) and target.value.id == self.self_name)

    def _state_hooks(self, targets: list[ast.expr]) -> list[ast.stmt]:
        """Hooks for declared globals among ``targets`` (reading a global is free of side effects)."""
        if not self.want_state or not self.globals:
            return []
        names = []
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name) and n.id in self.globals and n.id not in names:
                    names.append(n.id)
        return [h for n in names for h in self._hook(f"global {n}", _name(n))]

    def _hook(self, label: str, value: ast.expr) -> list[ast.stmt]:
        self.state_hooks = True
        return _template("state", self.fid, self.line, S_TARGET=ast.Constant(label), S_VALUE=value)

    # -- frame inspection ----------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in ("locals", "vars") and not node.args \
                and not node.keywords:
            return _stamp(self._sup_call("user_locals", node), node.lineno)
        return node


def _target_label(target: ast.Attribute) -> str:
    return f"{target.value.id}.{target.attr}"


def _take(var: str) -> ast.expr:
    """``(var, var := None)[0]``: the value of ``var``, leaving ``var`` empty."""
    return ast.Subscript(
        value=ast.Tuple(elts=[_name(var), ast.NamedExpr(target=_name(var, ast.Store()), value=ast.Constant(None))],
                        ctx=ast.Load()),
        slice=ast.Constant(0), ctx=ast.Load())


def _clear(var: str) -> ast.stmt:
    return ast.Assign(targets=[_name(var, ast.Store())], value=ast.Constant(None))
