"""Recognise what a function *is* from its AST: framework roles, concurrency, I/O.

Pattern names (stable; they appear in plans and ``--explain``):

==========================  ===================================================
``django.view``             function view (``request`` first, in a Django
                            module) or a method of a class-based view
``django.model``            method of a ``django.db.models.Model`` subclass
``django.middleware``       ``__call__`` / ``process_*`` of a middleware class
``django.signal_receiver``  ``@receiver(signal)`` or ``signal.connect(f)``
``signal.receiver``         ``X.connect(f)`` on a non-Django signal
``flask.route``             ``@app.route``/``@bp.get``..., ``add_url_rule``,
                            ``flask.views`` class methods
``flask.blueprint``         a route registered on a ``Blueprint``
``flask.error_handler``     ``@app.errorhandler``, ``register_error_handler``
``flask.hook``              ``before_request``, ``teardown_request``, ...
``sqlalchemy.engine``       ``create_engine``, engine ``connect``/``begin``
``sqlalchemy.session``      ``Session``/``sessionmaker`` use, session methods
``sqlalchemy.query``        ``select``/``text``/``session.query``/``execute``
``celery.task``             ``@app.task``, ``@shared_task``, ``Task.run``
``coroutine``               ``async def``
``generator``               ``def`` that yields
``async_generator``         ``async def`` that yields
``thread.spawn``            starts a ``threading.Thread``/``Timer``/``to_thread``
``thread.target``           the function such a thread runs, ``Thread.run``
``executor.submit``         ``submit``/``map``/``run_in_executor`` on a pool
``executor.target``         the function handed to an executor
``process.target``          ``multiprocessing.Process`` target, ``Process.run``
``queue.put``/``queue.get``  on a ``queue``/``asyncio``/``multiprocessing`` queue
``http.client``             requests/httpx/urllib/urllib3/aiohttp/http.client
``subprocess``              ``subprocess.*``, ``os.system``, ``os.exec*``, ...
``multiprocessing``         ``multiprocessing`` pools, processes, managers
==========================  ===================================================

Names are resolved through the module's imports (``import requests as r``,
``from flask import Flask``, relative imports, imports inside functions), and
receivers through what they were bound to anywhere in the module
(``self.q = queue.Queue()`` makes ``self.q.put(x)`` a queue put).  Without
that evidence a few conventional names are trusted (``session``, ``*_queue``,
``executor``), always only when the module imports the library concerned.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from scope_otel.planner.complexity import Body, dotted

#: Patterns that make a function an entry point of a unit of work.
ENTRY_POINTS = frozenset({
    "django.view", "django.middleware", "django.signal_receiver", "signal.receiver",
    "flask.route", "flask.error_handler", "flask.hook", "celery.task",
    "thread.target", "executor.target", "process.target",
})
#: Patterns that mark a boundary to the outside world or another thread.
BOUNDARIES = frozenset({
    "sqlalchemy.engine", "sqlalchemy.session", "sqlalchemy.query", "http.client",
    "subprocess", "multiprocessing", "queue.put", "queue.get", "thread.spawn",
    "executor.submit",
})

_HTTP_VERBS = frozenset({"get", "post", "put", "delete", "patch", "head", "options",
                         "request", "stream", "send", "urlopen", "fetch"})
_HTTP_MODULE_FUNCS = ("requests.", "httpx.", "urllib3.", "aiohttp.")
_HTTP_CLIENT_TYPES = frozenset({
    "requests.Session", "requests.session", "requests.sessions.Session",
    "httpx.Client", "httpx.AsyncClient", "aiohttp.ClientSession",
    "urllib3.PoolManager", "urllib3.HTTPConnectionPool", "urllib3.HTTPSConnectionPool",
    "urllib3.connection_from_url", "urllib3.ProxyManager",
    "http.client.HTTPConnection", "http.client.HTTPSConnection",
})
_SUBPROCESS_FUNCS = frozenset({
    "subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
    "subprocess.check_output", "subprocess.getoutput", "subprocess.getstatusoutput",
    "os.system", "os.popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp",
    "asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell", "pty.spawn",
})
_QUEUE_TYPES = frozenset({
    "queue.Queue", "queue.LifoQueue", "queue.PriorityQueue", "queue.SimpleQueue",
    "asyncio.Queue", "asyncio.LifoQueue", "asyncio.PriorityQueue",
    "multiprocessing.Queue", "multiprocessing.JoinableQueue", "multiprocessing.SimpleQueue",
    "multiprocessing.queues.Queue", "multiprocessing.Manager().Queue",
})
_QUEUE_NAME = re.compile(r"(^|_)(q|queue|inbox|outbox)$", re.IGNORECASE)
_THREAD_STARTERS = {  # resolved callable -> (position, keyword) of the function it runs
    "threading.Thread": (None, "target"), "threading.Timer": (1, "function"),
    "_thread.start_new_thread": (0, "function"), "_thread.start_new": (0, "function"),
    "asyncio.to_thread": (0, "func"),
}
_EXECUTOR_TYPES = frozenset({
    "concurrent.futures.ThreadPoolExecutor", "concurrent.futures.ProcessPoolExecutor",
    "concurrent.futures.thread.ThreadPoolExecutor", "concurrent.futures.process.ProcessPoolExecutor",
    "multiprocessing.Pool", "multiprocessing.pool.Pool", "multiprocessing.pool.ThreadPool",
    "multiprocessing.dummy.Pool",
})
_EXECUTOR_METHODS = frozenset({"submit", "map", "apply", "apply_async", "map_async", "imap",
                               "imap_unordered", "starmap", "starmap_async"})
_EXECUTOR_NAME = re.compile(r"(executor|pool)$", re.IGNORECASE)
_SQLA_ENGINE_FUNCS = ("create_engine", "create_async_engine", "engine_from_config")
_SQLA_SESSION_TYPES = ("Session", "AsyncSession", "sessionmaker", "async_sessionmaker", "scoped_session")
_SQLA_SESSION_METHODS = frozenset({"add", "add_all", "commit", "rollback", "flush", "delete", "merge",
                                   "refresh", "expunge", "begin", "close", "get", "scalars", "scalar",
                                   "execute", "query"})
_SQLA_QUERY_FUNCS = frozenset({"select", "insert", "update", "delete", "text", "union", "exists"})
_FLASK_ROUTE_DECORATORS = frozenset({"route", "get", "post", "put", "delete", "patch"})
_FLASK_ERROR_DECORATORS = frozenset({"errorhandler", "app_errorhandler"})
_FLASK_HOOK_DECORATORS = frozenset({
    "before_request", "after_request", "teardown_request", "before_app_request",
    "after_app_request", "teardown_app_request", "teardown_appcontext", "context_processor",
    "app_context_processor", "url_value_preprocessor", "url_defaults",
})
_FLASK_APP_NAMES = re.compile(r"^(app|application|bp|blueprint|api|.*_bp|.*_blueprint)$")
_HTTP_METHOD_NAMES = frozenset({"get", "post", "put", "patch", "delete", "head", "options", "trace"})
_MIDDLEWARE_METHODS = frozenset({"__call__", "__acall__", "process_request", "process_view",
                                 "process_response", "process_exception", "process_template_response"})
_CONTAINER_CALLS = frozenset({"list", "dict", "set", "collections.defaultdict", "collections.OrderedDict",
                              "collections.deque", "collections.Counter", "weakref.WeakValueDictionary",
                              "weakref.WeakKeyDictionary", "weakref.WeakSet", "defaultdict",
                              "OrderedDict", "deque", "Counter"})


@dataclass
class ModuleContext:
    """What a module imports and binds: the evidence patterns are read from."""

    module: str
    is_package: bool = False
    imports: dict = field(default_factory=dict)        # local name -> dotted origin
    types: dict = field(default_factory=dict)          # binding text -> resolved constructor
    mutables: set = field(default_factory=set)         # module-level mutable containers
    marks: dict = field(default_factory=dict)          # (class or None, name) -> set of patterns

    def add_import(self, node: ast.Import | ast.ImportFrom, into: dict | None = None) -> None:
        table = self.imports if into is None else into
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    table[alias.asname] = alias.name
                else:
                    head = alias.name.split(".", 1)[0]
                    table.setdefault(head, head)
            return
        base = node.module or ""
        if node.level:
            package = self.module if self.is_package else self.module.rpartition(".")[0]
            parts = package.split(".") if package else []
            keep = len(parts) - (node.level - 1)
            base = ".".join(parts[:max(keep, 0)] + ([base] if base else []))
        for alias in node.names:
            if alias.name != "*":
                table[alias.asname or alias.name] = f"{base}.{alias.name}" if base else alias.name

    def resolve(self, text: str | None, local: dict | None = None) -> str:
        """``r.get`` -> ``requests.get`` through the import tables."""
        if not text:
            return ""
        head, dot, rest = text.partition(".")
        origin = (local or {}).get(head) or self.imports.get(head)
        if origin is None:
            return text
        return origin + dot + rest

    def imports_any(self, *roots: str) -> bool:
        return any(v == r or v.startswith(r + ".") for v in self.imports.values() for r in roots)

    def type_of(self, receiver: str | None, local: dict | None = None) -> str:
        if not receiver:
            return ""
        return self.types.get(receiver) or self.resolve(receiver, local)


def _call_name(call: ast.Call) -> str | None:
    return dotted(call.func)


def module_bindings(ctx: ModuleContext, tree: ast.Module) -> None:
    """Imports, constructor bindings and mutable containers at module level."""
    _module_statements(ctx, tree.body)


def _module_statements(ctx: ModuleContext, stmts: list) -> None:
    for stmt in stmts:  # in order: imports bind before the assignments that use them
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            ctx.add_import(stmt)
        elif isinstance(stmt, (ast.If, ast.Try)) or type(stmt).__name__ == "TryStar":
            _module_statements(ctx, stmt.body)
            for handler in getattr(stmt, "handlers", ()):
                _module_statements(ctx, handler.body)
            _module_statements(ctx, stmt.orelse)
            _module_statements(ctx, getattr(stmt, "finalbody", ()))
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            value = stmt.value
            if isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)):
                ctx.mutables.update(names)
            elif isinstance(value, ast.Call):
                ctor = ctx.resolve(_call_name(value))
                if ctor in _CONTAINER_CALLS:
                    ctx.mutables.update(names)
                for name in names:
                    ctx.types.setdefault(name, ctor)


def function_bindings(ctx: ModuleContext, body: Body, local: dict) -> None:
    """Record what names and ``self`` attributes are bound to inside a function."""
    for target, value in body.bindings:
        if isinstance(value, ast.Call):
            ctx.types.setdefault(target, ctx.resolve(_call_name(value), local))
        elif isinstance(value, ast.Await) and isinstance(value.value, ast.Call):
            ctx.types.setdefault(target, ctx.resolve(_call_name(value.value), local))


def _ref(node: ast.AST) -> str | None:
    """A reference to a function passed as an argument: ``f``, ``self.m``, ``Cls.m``."""
    if isinstance(node, ast.Call) and dotted(node.func) in ("functools.partial", "partial") and node.args:
        return _ref(node.args[0])
    text = dotted(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
    return text


def _arg(call: ast.Call, index: int | None, keyword: str) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    if index is not None and len(call.args) > index:
        return call.args[index]
    return None


def _mark(ctx: ModuleContext, ref: str | None, class_name: str | None, pattern: str) -> None:
    """Remember that the function ``ref`` names (seen from ``class_name``) has ``pattern``."""
    if not ref:
        return
    head, _, rest = ref.partition(".")
    if not rest:
        key = (None, head)
    elif head in ("self", "cls") and "." not in rest:
        key = (class_name, rest)
    elif "." not in rest:
        key = (head, rest)
    else:
        return
    ctx.marks.setdefault(key, set()).add(pattern)


def call_patterns(ctx: ModuleContext, body: Body, local: dict, class_name: str | None) -> set[str]:
    """Patterns a function has because of what it calls (and marks on what it hands off)."""
    found: set[str] = set()
    sqla = ctx.imports_any("sqlalchemy", "flask_sqlalchemy", "sqlmodel") or any(
        v.startswith(("sqlalchemy", "flask_sqlalchemy")) for v in local.values())
    for call, _loop in body.calls:
        text = _call_name(call)
        if not text:
            continue
        resolved = ctx.resolve(text, local)
        receiver, _, method = text.rpartition(".")
        rtype = ctx.type_of(receiver, local) if receiver else ""
        # -- outside world -------------------------------------------------------
        if resolved in _SUBPROCESS_FUNCS or resolved.startswith(("os.exec", "os.spawn")):
            found.add("subprocess")
        elif resolved.startswith("multiprocessing.") or resolved == "concurrent.futures.ProcessPoolExecutor":
            found.add("multiprocessing")
            if resolved.endswith("Process"):
                _mark(ctx, _ref(_arg(call, None, "target")), class_name, "process.target")
        if resolved == "urllib.request.urlopen" or (
                resolved.startswith(_HTTP_MODULE_FUNCS) and resolved.rpartition(".")[2] in _HTTP_VERBS):
            found.add("http.client")
        elif method in _HTTP_VERBS and rtype in _HTTP_CLIENT_TYPES:
            found.add("http.client")
        # -- threads and executors -------------------------------------------------
        if resolved in _THREAD_STARTERS:
            found.add("thread.spawn")
            _mark(ctx, _ref(_arg(call, *_THREAD_STARTERS[resolved])), class_name, "thread.target")
        elif method == "run_in_executor" and len(call.args) >= 2:
            found.add("executor.submit")
            _mark(ctx, _ref(call.args[1]), class_name, "executor.target")
        elif method in _EXECUTOR_METHODS and receiver and (
                rtype in _EXECUTOR_TYPES or _EXECUTOR_NAME.search(receiver.rpartition(".")[2] or "")):
            if call.args:
                found.add("executor.submit")
                _mark(ctx, _ref(call.args[0]), class_name, "executor.target")
        # -- queues -------------------------------------------------------------------
        if method in ("put", "put_nowait", "get", "get_nowait") and receiver and (
                rtype in _QUEUE_TYPES or rtype.endswith("Queue") and rtype.startswith(("queue.", "asyncio.", "multiprocessing."))
                or (_QUEUE_NAME.search(receiver.rpartition(".")[2]) and ctx.imports_any("queue", "asyncio", "multiprocessing"))):
            found.add("queue.put" if method.startswith("put") else "queue.get")
        # -- SQLAlchemy -------------------------------------------------------------------
        if resolved.endswith(_SQLA_ENGINE_FUNCS) and (sqla or resolved.startswith("sqlalchemy")):
            found.add("sqlalchemy.engine")
        elif sqla or resolved.startswith("sqlalchemy"):
            last = resolved.rpartition(".")[2]
            if resolved.startswith("sqlalchemy") and last in _SQLA_SESSION_TYPES:
                found.add("sqlalchemy.session")
            elif resolved.startswith("sqlalchemy") and last in _SQLA_QUERY_FUNCS:
                found.add("sqlalchemy.query")
            elif receiver and method in _SQLA_SESSION_METHODS and (
                    rtype.rpartition(".")[2] in _SQLA_SESSION_TYPES or receiver.rpartition(".")[2].endswith("session")):
                found.add("sqlalchemy.session")
                if method in ("execute", "query", "scalars", "scalar"):
                    found.add("sqlalchemy.query")
            elif receiver and method in ("connect", "begin", "execute") and (
                    rtype.endswith(_SQLA_ENGINE_FUNCS) or receiver.rpartition(".")[2] == "engine"):
                found.add("sqlalchemy.engine")
        # -- registrations that mark other functions -------------------------------------
        if method == "connect" and call.args:
            django = rtype.startswith("django.") or ctx.resolve(receiver, local).startswith("django.")
            _mark(ctx, _ref(call.args[0]), class_name, "django.signal_receiver" if django else "signal.receiver")
        elif method == "add_url_rule":
            view = _arg(call, 2, "view_func")
            _mark(ctx, _ref(view) if view is not None else None, class_name, "flask.route")
        elif method == "register_error_handler" and len(call.args) >= 2:
            _mark(ctx, _ref(call.args[1]), class_name, "flask.error_handler")
    return found


def decorator_patterns(ctx: ModuleContext, decorators: list, local: dict) -> set[str]:
    """Patterns given by decorators: routes, error handlers, hooks, receivers, tasks."""
    found: set[str] = set()
    flask = ctx.imports_any("flask")
    for deco in decorators:
        func = deco.func if isinstance(deco, ast.Call) else deco
        text = dotted(func)
        if not text:
            continue
        resolved = ctx.resolve(text, local)
        receiver, _, method = text.rpartition(".")
        rtype = ctx.type_of(receiver, local) if receiver else ""
        is_app = rtype in ("flask.Flask", "flask.Blueprint") or (flask and _FLASK_APP_NAMES.match(receiver.rpartition(".")[2] or ""))
        if receiver and method in _FLASK_ROUTE_DECORATORS and is_app:
            found.add("flask.route")
            if rtype == "flask.Blueprint" or "bp" in receiver or "blueprint" in receiver.lower():
                found.add("flask.blueprint")
        elif receiver and method in _FLASK_ERROR_DECORATORS and is_app:
            found.add("flask.error_handler")
        elif receiver and method in _FLASK_HOOK_DECORATORS and is_app:
            found.add("flask.hook")
        elif resolved in ("django.dispatch.receiver", "django.dispatch.dispatcher.receiver"):
            found.add("django.signal_receiver")
        elif method in ("task", "shared_task", "periodic_task") or resolved.rpartition(".")[2] == "shared_task":
            if ctx.imports_any("celery") or rtype.startswith("celery"):
                found.add("celery.task")
        elif resolved.startswith(("django.views.decorators", "django.contrib.auth.decorators", "rest_framework.decorators")):
            found.add("django.view")
    return found


def class_kinds(ctx: ModuleContext, node: ast.ClassDef, bases: list[str]) -> set[str]:
    """Kinds a class has from its resolved base names and the methods it defines."""
    kinds: set[str] = set()
    for base in bases:
        last = base.rpartition(".")[2]
        if base.startswith("django.db.models") and last == "Model":
            kinds.add("django.model")
        elif base.startswith(("django.views", "rest_framework.views", "rest_framework.viewsets", "rest_framework.generics")):
            kinds.add("django.view")
        elif last == "MiddlewareMixin":
            kinds.add("django.middleware")
        elif base.startswith("flask.views"):
            kinds.add("flask.view")
        elif base in ("celery.Task", "celery.app.task.Task"):
            kinds.add("celery.task")
        elif base == "threading.Thread":
            kinds.add("thread")
        elif base in ("multiprocessing.Process", "multiprocessing.context.Process"):
            kinds.add("process")
    methods = {s.name for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if ctx.imports_any("django") and methods & (_MIDDLEWARE_METHODS - {"__call__", "__acall__"}):
        kinds.add("django.middleware")
    return kinds


def method_patterns(kinds: set[str], name: str) -> set[str]:
    """Patterns a method gets from the kinds of its class."""
    found: set[str] = set()
    if "django.model" in kinds:
        found.add("django.model")
    if "django.view" in kinds and (not name.startswith("_") or name == "__call__"):
        found.add("django.view")
    if "django.middleware" in kinds and name in _MIDDLEWARE_METHODS:
        found.add("django.middleware")
    if "flask.view" in kinds and (name == "dispatch_request" or name in _HTTP_METHOD_NAMES):
        found.add("flask.route")
    if "celery.task" in kinds and name == "run":
        found.add("celery.task")
    if "thread" in kinds and name == "run":
        found.add("thread.target")
    if "process" in kinds and name == "run":
        found.add("process.target")
    return found


def function_view(ctx: ModuleContext, params: list[str], in_class: bool) -> bool:
    """A plain function taking ``request`` first, in a module that uses Django."""
    return (not in_class and bool(params) and params[0] == "request"
            and (ctx.imports_any("django") or ctx.module.rpartition(".")[2].startswith("views")))


def shape_patterns(is_async: bool, body: Body) -> set[str]:
    if is_async:
        return {"async_generator" if body.yields else "coroutine"}
    return {"generator"} if body.yields else set()
