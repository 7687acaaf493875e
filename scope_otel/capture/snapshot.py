"""Value snapshots that run none of the program's code.

:func:`snapshot` turns any value into a string on the application thread,
at the moment it is captured, without calling anything the program or a
third-party library defined: no ``__repr__``/``__str__``, no property, no
descriptor, no ``__getattr__``, ``__len__``, ``__iter__``, ``__eq__`` or
``__hash__``.  What it shows:

* builtin scalars and containers (``list``, ``tuple``, ``dict``, ``set``,
  ``frozenset``, ``deque``) as ``repr`` shows them, walked here, within a
  character budget and :data:`MAX_DEPTH` levels (``[...]`` below);
* subclasses of those containers as ``mod.Qual([...])`` (named tuples as
  ``mod.Qual(a=1, b=2)``), walked through the builtin base's own storage;
* a fixed set of standard-library types whose ``repr`` only reads the
  object's own state (``datetime``, ``Decimal``, ``Fraction``, ``UUID``,
  paths, ``ipaddress``, ``re`` patterns...), by their exact type only: a
  subclass may have overridden what the ``repr`` reads;
* enum members as ``<mod.Qual.NAME: value>``;
* anything else as ``<mod.Qual at 0x...>``, followed, for the value itself
  and objects directly inside it, by its fields read straight from the
  instance ``__dict__`` and ``__slots__`` storage (``<mod.Qual at 0x...:
  a=1, b=[2]>``).  An ORM instance shows the fields it has loaded; nothing
  is loaded for it.

A user who wants ``repr()`` for types of their own lists them in
``value_repr`` (globs on ``module.Qualname``): :func:`set_repr_types`.

``_speedups.snapshot`` is the C twin of :func:`snapshot` for the values met
most (builtins, their subclasses, plain instances of classes written in
Python); it hands anything else to this module's walk, so the text is the
same either way.  Reading an instance ``__dict__`` through its descriptor
materialises it on CPython 3.11+ when the object kept its attributes
inline (a memory layout change, not a behaviour change).
"""
from __future__ import annotations

import collections
import datetime
import decimal
import enum
import fnmatch
import fractions
import ipaddress
import pathlib
import re
import types
import uuid
from typing import Any, Iterable

__all__ = ["snapshot", "set_repr_types", "MAX_DEPTH", "FIELD_DEPTH"]

#: Containers nested deeper than this show as ``[...]`` (``reprlib``'s notation).
MAX_DEPTH = 8
#: Fields of objects are shown at this depth and above (0: the value itself).
FIELD_DEPTH = 1

# Reading a class's own namespace, MRO and names through ``type``'s own
# descriptors: a metaclass cannot intercept these.
_type_dict = type.__dict__["__dict__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_module = type.__dict__["__module__"].__get__
_type_flags = type.__dict__["__flags__"].__get__
_HEAPTYPE = 1 << 9
_GetSet = types.GetSetDescriptorType
_Member = types.MemberDescriptorType
_module_dict = types.ModuleType.__dict__["__dict__"].__get__
_func_qualname = types.FunctionType.__dict__["__qualname__"].__get__
_method_func = types.MethodType.__dict__["__func__"].__get__
_method_self = types.MethodType.__dict__["__self__"].__get__
_exc_args = BaseException.__dict__["args"].__get__


def _cut_text(v: Any, left: int) -> str:
    # the repr of a prefix: a 16 MB argument must not cost a 64 MB repr per call
    return repr(v[:left]) if len(v) > left else repr(v)


def _cut_bytes(base: type) -> Any:
    getitem, length, rep = base.__getitem__, base.__len__, base.__repr__

    def cut(v: Any, left: int) -> str:
        return rep(getitem(v, slice(0, left))) if length(v) > left else rep(v)

    return cut


def _int_repr(v: int, left: int) -> str:
    if int.bit_length(v) > 8000:  # repr() refuses (or takes quadratic time on) huge ints
        return f"<int of {v.bit_length()} bits>"
    return int.__repr__(v)


def _plain(v: Any, left: int) -> str:
    return repr(v)


#: Exact types shown by their own repr: C code of CPython, or standard-library
#: code that reads nothing but the object's own state.
_LEAVES: dict[type, Any] = {
    str: _cut_text,
    bytes: _cut_bytes(bytes),
    bytearray: _cut_bytes(bytearray),
    int: _int_repr,
    bool: _plain, float: _plain, complex: _plain, type(None): _plain, range: _plain,
    type(Ellipsis): _plain, type(NotImplemented): _plain, object: _plain, memoryview: _plain,
    types.FunctionType: _plain, types.BuiltinFunctionType: _plain, types.CodeType: _plain,
}
for _t in (datetime.date, datetime.datetime, datetime.time, datetime.timedelta, datetime.timezone,
           decimal.Decimal, fractions.Fraction, uuid.UUID, re.Pattern,
           pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath, pathlib.WindowsPath,
           ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network,
           ipaddress.IPv4Interface, ipaddress.IPv6Interface):
    _LEAVES[_t] = _plain
del _t

_OPEN_CLOSE = {list: ("[", "]"), tuple: ("(", ")"), set: ("{", "}"), frozenset: ("frozenset({", "})"),
               dict: ("{", "}"), collections.deque: ("deque([", "])")}
_CYCLE = {list: "[...]", dict: "{...}", collections.deque: "[...]"}
_ITER = {list: list.__iter__, tuple: tuple.__iter__, set: set.__iter__, frozenset: frozenset.__iter__,
         dict: dict.items, collections.deque: collections.deque.__iter__}
_LEN = {list: list.__len__, tuple: tuple.__len__, set: set.__len__, frozenset: frozenset.__len__,
        dict: dict.__len__, collections.deque: collections.deque.__len__}
_ENUM = enum.Enum

#: value_repr: globs on ``module.Qualname`` of types whose repr() the user allows
_repr_globs: tuple[str, ...] = ()


def set_repr_types(globs: Iterable[str]) -> None:
    """Allow ``repr()`` for values whose type's ``module.Qualname`` matches one of ``globs``."""
    global _repr_globs
    _repr_globs = tuple(str(g) for g in globs if g)
    if _native is not None:
        _native.snapshot_config(opt_in=bool(_repr_globs))


def snapshot(value: Any, limit: int) -> str:
    """``value`` as a string of at most ``limit`` characters, running none of its code."""
    out: list[str] = []
    _walk(value, out, limit, 0, set())
    text = "".join(out)
    return text if len(text) <= limit else text[:limit]


def _native_setup() -> Any:
    """The C twin (``_speedups.snapshot``/``snap``), told where to send what it leaves to this module."""
    try:
        from scope_otel.capture import _speedups
    except ImportError:
        return None
    _speedups.snapshot_config(fallback=_walk, enum=_ENUM, opt_in=False, max_depth=MAX_DEPTH,
                              field_depth=FIELD_DEPTH,
                              python_types={*_LEAVES, *_OPEN_CLOSE, types.ModuleType, types.MethodType},
                              c_repr_types={t for t, show in _LEAVES.items()
                                            if show is _plain and type(t.__repr__) is types.WrapperDescriptorType})
    return _speedups


def _name(t: type) -> str:
    module = _type_module(t)
    qualname = _type_qualname(t)
    if type(module) is not str or module == "builtins":
        return qualname
    return f"{module}.{qualname}"


def _walk(v: Any, out: list, left: int, depth: int, seen: set) -> int:
    """Append ``v``'s text to ``out``; returns the characters left (<= 0: stop)."""
    t = type(v)
    leaf = _LEAVES.get(t)
    if leaf is not None:
        text = leaf(v, left)
        out.append(text)
        return left - len(text)
    if t in _OPEN_CLOSE:
        return _container(v, t, t, "", out, left, depth, seen)
    return _other(v, t, out, left, depth, seen)


def _container(v: Any, t: type, base: type, name: str, out: list, left: int, depth: int, seen: set) -> int:
    """A builtin container (or a subclass, through ``base``'s own storage)."""
    size = _LEN[base](v)
    if name:
        out.append(name + "(")
        left -= len(name) + 1
    if not size and base in (set, frozenset):
        text = "set()" if base is set else "frozenset()"
    elif not size:
        text = _OPEN_CLOSE[base][0] + _OPEN_CLOSE[base][1]
    elif id(v) in seen:  # a container that holds itself, as repr shows it
        text = _CYCLE.get(base, "...")
    elif depth >= MAX_DEPTH:
        opening, closing = _OPEN_CLOSE[base]
        text = f"{opening}...{closing}"
    else:
        text = None
    if text is not None:
        out.append(text)
        left -= len(text)
    else:
        opening, closing = _OPEN_CLOSE[base]
        out.append(opening)
        left -= len(opening)
        seen.add(id(v))
        first = True
        is_dict = base is dict
        for item in _ITER[base](v):
            if left <= 0:
                return left
            if not first:
                out.append(", ")
                left -= 2
            first = False
            if is_dict:
                left = _walk(item[0], out, left, depth + 1, seen)
                if left <= 0:
                    return left
                out.append(": ")
                left = _walk(item[1], out, left - 2, depth + 1, seen)
            else:
                left = _walk(item, out, left, depth + 1, seen)
        if left <= 0:
            return left
        if base is tuple and size == 1:
            out.append(",")
            left -= 1
        seen.discard(id(v))
        out.append(closing)
        left -= len(closing)
    if name:
        out.append(")")
        left -= 1
    return left


def _other(v: Any, t: type, out: list, left: int, depth: int, seen: set) -> int:
    mro = _type_mro(t)
    if _repr_globs and _repr_allowed(t):
        return _opted_in(v, t, out, left)
    if type in mro:  # a class: type's own repr reads its module and qualname
        text = type.__repr__(v)
    elif t is types.ModuleType:
        name = _module_dict(v).get("__name__")
        text = f"<module {name!r}>" if type(name) is str else f"<module at {id(v):#x}>"
    elif t is types.MethodType:
        func, owner = _method_func(v), _method_self(v)
        fname = _func_qualname(func) if type(func) is types.FunctionType else _name(type(func))
        text = f"<bound method {fname} of <{_name(type(owner))} at {id(owner):#x}>>"
    elif _ENUM in mro:
        return _enum_member(v, t, out, left, depth, seen)
    else:
        for base in mro:
            if base in _OPEN_CLOSE:
                if base is tuple:
                    fields = _class_attribute(mro, "_fields")
                    if type(fields) is tuple and all(type(f) is str for f in fields):
                        return _named_tuple(v, t, fields, out, left, depth, seen)
                return _container(v, t, base, _name(t), out, left, depth, seen)
            if base in _LEAVES and base is not object:  # int, str, float... subclasses
                return _scalar_subclass(v, t, base, mro, out, left, depth, seen)
        if BaseException in mro:
            return _exception(v, t, out, left, depth, seen)
        return _instance(v, t, mro, out, left, depth, seen)
    out.append(text)
    return left - len(text)


def _class_attribute(mro: tuple, name: str) -> Any:
    """A class attribute as stored in the first class of ``mro`` that has it (no descriptor runs)."""
    for k in mro:
        kd = _type_dict(k)
        if name in kd:
            return kd[name]
    return None


def _repr_allowed(t: type) -> bool:
    name = _name(t)
    return any(fnmatch.fnmatchcase(name, g) for g in _repr_globs)


def _opted_in(v: Any, t: type, out: list, left: int) -> int:
    try:
        text = repr(v)
        if type(text) is not str:
            raise TypeError("__repr__ returned a non-string")
    except Exception as exc:
        text = f"<{_name(t)} at {id(v):#x}: repr() raised {_name(type(exc))}>"
    text = text[:left + 1]
    out.append(text)
    return left - len(text)


def _scalar_subclass(v: Any, t: type, base: type, mro: tuple, out: list, left: int, depth: int,
                     seen: set) -> int:
    """A subclass of a leaf type: the base's own C repr of the stored value (a repr written in
    Python may call methods the subclass overrides: then the object is shown as any other)."""
    if base is str:
        inner = repr(str.__getitem__(v, slice(0, left)))
    elif base is bytes or base is bytearray:
        inner = repr(base.__getitem__(v, slice(0, left)))
    elif base is int:
        inner = f"<int of {int.bit_length(v)} bits>" if int.bit_length(v) > 8000 else int.__repr__(v)
    elif type(base.__repr__) is types.WrapperDescriptorType:  # float, complex, datetime, Decimal...
        text = base.__repr__(v)  # C code reading the stored value (datetime's names the subclass itself)
        if base is float or base is complex:
            text = f"{_name(t)}({text})"
        out.append(text)
        return left - len(text)
    else:
        return _instance(v, t, mro, out, left, depth, seen)
    text = f"{_name(t)}({inner})"
    out.append(text)
    return left - len(text)


def _named_tuple(v: Any, t: type, fields: tuple, out: list, left: int, depth: int, seen: set) -> int:
    out.append(_name(t) + "(")
    left -= len(out[-1])
    for i, item in enumerate(tuple.__iter__(v)):
        if left <= 0:
            return left
        label = (", " if i else "") + (fields[i] if i < len(fields) else str(i)) + "="
        out.append(label)
        left = _walk(item, out, left - len(label), depth + 1, seen)
    out.append(")")
    return left - 1


def _enum_member(v: Any, t: type, out: list, left: int, depth: int, seen: set) -> int:
    state = _instance_dict(v, _type_mro(t)) or {}
    name = state.get("_name_")
    head = f"<{_name(t)}.{name}: " if type(name) is str else f"<{_name(t)}: "
    out.append(head)
    left = _walk(state.get("_value_"), out, left - len(head), depth + 1, seen)
    out.append(">")
    return left - 1


def _exception(v: Any, t: type, out: list, left: int, depth: int, seen: set) -> int:
    args = _exc_args(v)
    head = _name(t) + "("
    out.append(head)
    left -= len(head)
    for i, item in enumerate(args):
        if left <= 0:
            return left
        if i:
            out.append(", ")
            left -= 2
        left = _walk(item, out, left, depth + 1, seen)
    out.append(")")
    return left - 1


def _instance_dict(v: Any, mro: tuple) -> dict | None:
    """The instance ``__dict__``, read through the descriptor CPython made for the class."""
    for k in mro:
        descr = _type_dict(k).get("__dict__")
        if descr is not None:
            if type(descr) is _GetSet and _type_flags(descr.__objclass__) & _HEAPTYPE:
                d = descr.__get__(v, type(v))
                return d if type(d) is dict else None
            return None
    return None


def _slots(v: Any, mro: tuple) -> list:
    """``(name, value)`` of the filled ``__slots__`` of heap classes, read from the slots' storage."""
    found = []
    for k in mro:
        kd = _type_dict(k)
        if "__slots__" not in kd or not _type_flags(k) & _HEAPTYPE:
            continue
        for name, descr in kd.items():
            if type(descr) is _Member and name != "__weakref__":
                try:
                    found.append((name, descr.__get__(v, k)))
                except AttributeError:  # an empty slot
                    pass
    return found


def _instance(v: Any, t: type, mro: tuple, out: list, left: int, depth: int, seen: set) -> int:
    head = f"<{_name(t)} at {id(v):#x}"
    out.append(head)
    left -= len(head)
    if depth <= FIELD_DEPTH and id(v) not in seen:
        d = _instance_dict(v, mro)
        pairs = list(d.items()) if d else []
        pairs += _slots(v, mro)
        if pairs:
            seen.add(id(v))
            sep = ": "
            for key, item in pairs:
                if left <= 0:
                    return left
                if type(key) is not str or key.startswith("_sa_"):  # SQLAlchemy's instance state
                    continue
                out.append(sep + key + "=")
                left -= len(sep) + len(key) + 1
                sep = ", "
                left = _walk(item, out, left, depth + 1, seen)
            seen.discard(id(v))
    out.append(">")
    return left - 1


# ---------------------------------------------------------------- exceptions

_exc_traceback = BaseException.__dict__["__traceback__"].__get__
_exc_cause = BaseException.__dict__["__cause__"].__get__
_exc_context = BaseException.__dict__["__context__"].__get__
_exc_suppress = BaseException.__dict__["__suppress_context__"].__get__
_tb_next = types.TracebackType.__dict__["tb_next"].__get__
_tb_frame = types.TracebackType.__dict__["tb_frame"].__get__
_tb_lineno = types.TracebackType.__dict__["tb_lineno"].__get__
_frame_code = types.FrameType.__dict__["f_code"].__get__
_SAFE_ARGS = frozenset((str, int, float, bool, bytes, type(None)))
#: frames kept per exception: the first ones (the recorded function's side) and the last ones
#: (where it was raised); the number left out between them is kept too
MAX_FRAMES_HEAD, MAX_FRAMES_TAIL = 16, 48
_MAX_CHAIN = 4  # causes and contexts kept behind an exception


def exception_summary(exc: BaseException, limit: int) -> tuple:
    """What is kept of an exception leaving a recorded call, holding no reference to it, its
    traceback or its frames: ``(qualname, module, message, frames, omitted, cause, context)``
    with ``frames`` a tuple of ``(filename, line, function)`` from the call down to where it was
    raised, ``omitted`` the number of frames left out in the middle of a very deep traceback,
    and ``cause``/``context`` the same summary of the chained exception Python would print
    (or None).  The message is ``str(exc)`` only for CPython's own exception types over plain
    arguments (C code); otherwise it comes from ``exc.args`` through :func:`snapshot`.
    ``_speedups.exception_summary`` is its C twin (what the C hot path uses)."""
    return _summary(exc, limit, _MAX_CHAIN, set())


def _summary(exc: BaseException, limit: int, chain: int, seen: set) -> tuple:
    seen.add(id(exc))
    t = type(exc)
    frames: list = []
    tail: collections.deque = collections.deque(maxlen=MAX_FRAMES_TAIL)
    total = 0
    tb = _exc_traceback(exc)
    while tb is not None:
        code = _frame_code(_tb_frame(tb))
        here = (code.co_filename, _tb_lineno(tb), code.co_name)
        if total < MAX_FRAMES_HEAD:
            frames.append(here)
        else:
            tail.append(here)
        total += 1
        tb = _tb_next(tb)
    frames.extend(tail)
    cause = context = None
    if chain > 0:
        c = _exc_cause(exc)
        if c is not None and id(c) not in seen:
            cause = _summary(c, limit, chain - 1, seen)
        elif c is None and not _exc_suppress(exc):
            c = _exc_context(exc)
            if c is not None and id(c) not in seen:
                context = _summary(c, limit, chain - 1, seen)
    module = _type_module(t)
    return (_type_qualname(t), module if type(module) is str else "", _message(exc, t, limit), tuple(frames),
            total - len(frames), cause, context)


def _message(exc: BaseException, t: type, limit: int) -> str:
    args = _exc_args(exc)
    if not _type_flags(t) & _HEAPTYPE and _type_module(t) == "builtins" \
            and all(type(a) in _SAFE_ARGS for a in args):
        text = str(exc)  # BaseException/OSError/KeyError/... __str__: C code over plain values
    elif len(args) == 1 and type(args[0]) is str:
        text = args[0]  # what BaseException.__str__ shows
    elif not args:
        text = ""
    else:
        text = _snapshot_text(args[0] if len(args) == 1 else args, limit)
    return text if len(text) <= limit else text[:limit]


#: the C twin, or None without the accelerator (same text; tests/capture/test_snapshot.py compares)
_native = _native_setup()
#: what exception messages are snapshotted with: the C twin where built (a parser that raises for
#: control flow puts its grammar objects in every exception's arguments)
_snapshot_text = _native.snapshot if _native is not None else snapshot
