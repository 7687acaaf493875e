"""The call graph of an analysed tree: resolution, recursion and static call counts.

:func:`link` resolves each call site to a function key where that is cheap
and certain enough — a local or module-level function, ``self.m()`` /
``cls.m()`` / ``super().m()`` through the class and its analysed bases,
``Class.m()``, ``Class()`` (its ``__init__``), and names imported from other
analysed modules — and then marks recursion: ``direct`` when a function
calls itself, ``mutual`` when it is part of a larger strongly connected
component (Tarjan's algorithm, iterative so deep graphs are fine).

:func:`static_frequencies` estimates calls per unit of work without running
anything: every function is assumed to run at least once; a call site
inside ``n`` loops counts ``10**n`` times; recursive components are
multiplied by :data:`RECURSION_FACTOR`; dunder methods and properties,
which Python calls implicitly, start at :data:`IMPLICIT_CALLS` (a module's
``__getattr__`` does not: it runs once per missing name).  Counts
flow from callers to callees in topological order of the components.
"""
from __future__ import annotations

from scope_otel.planner.records import Analysis, FunctionInfo

LOOP_FACTOR = 10.0
MAX_LOOP_MULTIPLIER = 100.0
RECURSION_FACTOR = 10.0
IMPLICIT_CALLS = 20.0
MAX_CALLS = 1e5


def _class_chain(analysis: Analysis, module: str, class_name: str) -> list:
    """The class and its analysed bases, nearest first (a cheap MRO)."""
    chain, seen = [], set()
    queue = [f"{module}.{class_name}"]
    while queue and len(chain) < 16:
        full = queue.pop(0)
        klass = analysis.classes.get(full)
        if klass is None or full in seen:
            continue
        seen.add(full)
        chain.append(klass)
        for base in klass.bases:
            queue.append(base if base in analysis.classes else f"{klass.module}.{base}")
    return chain


def _method(analysis: Analysis, module: str, class_name: str, name: str, skip_first: bool = False) -> str | None:
    chain = _class_chain(analysis, module, class_name)
    for klass in chain[1:] if skip_first else chain:
        key = f"{klass.module}:{klass.qualname}.{name}"
        if key in analysis.functions:
            return key
    return None


def _dotted_target(analysis: Analysis, full: str) -> str | None:
    """``pkg.mod.Class.m`` -> ``pkg.mod:Class.m`` when that module was analysed."""
    parts = full.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        if module in analysis.modules:
            qual = ".".join(parts[i:])
            key = f"{module}:{qual}"
            if key in analysis.functions:
                return key
            if f"{module}.{qual}" in analysis.classes:
                init = f"{key}.__init__"
                return init if init in analysis.functions else None
            return None
    return None


def _resolve(analysis: Analysis, info: FunctionInfo, text: str, resolved: str) -> str | None:
    functions = analysis.functions
    module = info.module
    head, _, rest = text.partition(".")
    if not rest:
        # A nested definition, from the innermost enclosing function outwards.
        scope = info.qualname
        while True:
            key = f"{module}:{scope}.<locals>.{head}"
            if key in functions:
                return key
            if ".<locals>." not in scope:
                break
            scope = scope.rsplit(".<locals>.", 1)[0]
        key = f"{module}:{head}"
        if key in functions:
            return key
        if f"{module}.{head}" in analysis.classes:
            return _method(analysis, module, head, "__init__")
        return _dotted_target(analysis, resolved) if resolved != text else None
    if info.class_name and (head == info.self_name or head == "cls") and "." not in rest:
        return _method(analysis, module, info.class_name, rest)
    if info.class_name and head == "super" and rest.startswith("()."):
        return _method(analysis, module, info.class_name, rest[3:], skip_first=True)
    if "." not in rest and f"{module}.{head}" in analysis.classes:
        return _method(analysis, module, head, rest)
    if resolved != text:
        return _dotted_target(analysis, resolved)
    return None


def link(analysis: Analysis) -> None:
    """Resolve call sites into ``callees``/``callers`` and mark recursion."""
    functions = analysis.functions
    for info in functions.values():
        callees: dict = {}
        for text, resolved, loop in info.calls:
            key = _resolve(analysis, info, text, resolved)
            if key is not None:
                weight = min(LOOP_FACTOR ** loop, MAX_LOOP_MULTIPLIER)
                callees[key] = callees.get(key, 0.0) + weight
        info.callees = callees
        for key in callees:
            functions[key].callers.add(info.key)
    for component in strongly_connected(functions):
        if len(component) > 1:
            for key in component:
                functions[key].recursion = "mutual"
        else:
            (key,) = component
            if key in functions[key].callees:
                functions[key].recursion = "direct"


def strongly_connected(functions: dict) -> list[list[str]]:
    """Tarjan's SCCs over ``callees``, in reverse topological order (callees first)."""
    index: dict = {}
    low: dict = {}
    on_stack: set = set()
    stack: list = []
    out: list = []
    counter = 0
    for root in functions:
        if root in index:
            continue
        work = [(root, iter(functions[root].callees))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(functions[child].callees)))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(component)
    return out


def is_implicit(info: FunctionInfo) -> bool:
    """Python calls it behind the code's back: a property or a dunder method."""
    name = info.name
    dunder = name.startswith("__") and name.endswith("__") and name != "__init__"
    return info.is_property or (dunder and info.class_name is not None)


def static_frequencies(analysis: Analysis) -> dict[str, float]:
    """Estimated calls per unit of work for every function (see module docstring)."""
    functions = analysis.functions
    components = strongly_connected(functions)
    calls = {key: (IMPLICIT_CALLS if is_implicit(info) else 1.0) for key, info in functions.items()}
    # Tarjan yields callees first; walk callers first.
    for component in reversed(components):
        members = set(component)
        inflow = 0.0
        for key in component:
            for caller in functions[key].callers:
                if caller not in members:
                    inflow += calls[caller] * functions[caller].callees[key]
        recursive = len(component) > 1 or component[0] in functions[component[0]].callees
        factor = RECURSION_FACTOR if recursive else 1.0
        for key in component:
            own = max(calls[key], inflow if len(component) > 1 else 0.0)
            if len(component) == 1:
                own = max(calls[key], inflow)
            calls[key] = min(own * factor, MAX_CALLS)
    return calls
