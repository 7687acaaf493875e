"""The records of an analysed tree: each function and class as the planner sees it.

:func:`scope_otel.planner.analysis.analyse` fills them, :mod:`.callgraph`
links them, and the orchestrator prices and chooses from them; they live
apart from the analysis so that the call graph can use them without
importing the analysis that calls it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from scope_otel.planner.complexity import Body


@dataclass
class FunctionInfo:
    """One function (or method) as the planner sees it."""

    module: str
    qualname: str
    file: str
    line: int
    end_line: int
    is_async: bool
    params: list
    class_name: str | None          # qualname of the class it is defined in, if a method
    self_name: str | None           # its instance (or class) parameter, if a method
    body: Body
    patterns: set = field(default_factory=set)
    #: (call text, resolved dotted name, loop depth) for every call site
    calls: list = field(default_factory=list)
    #: resolved callee key -> call-site multiplier (10 per enclosing loop, summed)
    callees: dict = field(default_factory=dict)
    callers: set = field(default_factory=set)
    recursion: str = "none"
    is_property: bool = False
    first_line: int = 0             # first decorator's line, else the def line (co_firstlineno)

    @property
    def key(self) -> str:
        return f"{self.module}:{self.qualname}"

    @property
    def name(self) -> str:
        return self.qualname.rpartition(".")[2]

    def complexity(self) -> dict:
        b = self.body
        return {
            "cyclomatic": b.cyclomatic,
            "max_nesting": b.max_nesting,
            "loops": b.loops,
            "statements": b.statements,
            "fan_out": len({text for text, _r, _l in self.calls}),
            "recursion": self.recursion,
            "handlers": b.handlers,
            "raises": b.raises,
            "exception_density": b.exception_density,
            "mutations": list(b.mutations),
        }


@dataclass
class ClassInfo:
    module: str
    qualname: str
    bases: list                 # resolved dotted names
    kinds: set
    methods: list               # keys of its methods

    @property
    def full_name(self) -> str:
        return f"{self.module}.{self.qualname}"


@dataclass
class Analysis:
    """Everything :func:`analyse` found."""

    functions: dict = field(default_factory=dict)   # key -> FunctionInfo
    classes: dict = field(default_factory=dict)     # "module.Class" -> ClassInfo
    modules: dict = field(default_factory=dict)     # module -> file path
    skipped: list = field(default_factory=list)     # Skipped
    seconds: float = 0.0
