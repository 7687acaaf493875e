"""Import time with the instrumentation import hook: warm cache vs uninstrumented, and cold rewrite cost.

    .venv/bin/python bench/bench_import.py [--quick] [--modules N] [--repeat R]

Two module trees are imported, each in fresh interpreters (median of R runs;
CPU time of the importing process, which a shared machine disturbs far less
than wall time):

* ``generated``: a package of N modules (~190 lines each: classes, methods
  with state changes, generators, coroutines, decorators, docstrings),
  all instrumented at ``full``: the hook's worst case;
* ``examples/shop``: the example application (``shop.web``, which imports
  Flask and SQLAlchemy), instrumented at ``full``.

Columns: ``plain`` (ordinary import, warm ``.pyc``), ``warm`` (hook
installed, tagged cache filled), ``cold`` (hook installed, no cache: parse,
rewrite, compile).  Both sides import scope-otel's own modules (and so
wrapt, asyncio, importlib.metadata) and load the configuration before the
clock starts, as the launcher does before it applies a plan, so only the
hook's work is measured; the one-time cost of ``apply()`` is printed
separately.  Rounds interleave the three configurations so that load on a
shared machine hits them alike.  The in-process rewrite cost per 1,000
source lines (parse + rewrite + compile vs parse + compile) follows, and
last the per-call cost of rewritten and wrapt-wrapped functions at each
level, next to the plain function.
"""
from __future__ import annotations

import argparse
import ast
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODULE_TEMPLATE = '''"""Generated module {i}: a slice of a business application."""
from __future__ import annotations

import asyncio
import functools
import itertools
from dataclasses import dataclass

RATE_{i} = {i} / 100
_registry: dict[str, object] = {{}}
counter = 0


def register(func):
    """Remember ``func`` under its name."""
    _registry[func.__name__] = func

    @functools.wraps(func)
    def inner(*args, **kwargs):
        return func(*args, **kwargs)

    return inner


@dataclass
class Item{i}:
    name: str
    cents: int
    qty: int = 1

    def total(self) -> int:
        return self.cents * self.qty


class Cart{i}:
    """A cart with items, discounts and a history."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.items: list[Item{i}] = []
        self.discount = 0
        self.history = []

    def add(self, name: str, cents: int, qty: int = 1) -> Item{i}:
        item = Item{i}(name, cents, qty)
        self.items.append(item)
        self.history.append(("add", name))
        return item

    def remove(self, name: str) -> bool:
        for index, item in enumerate(self.items):
            if item.name == name:
                del self.items[index]
                self.history.append(("remove", name))
                return True
        return False

    def apply_discount(self, percent: int) -> int:
        if not 0 <= percent <= 100:
            raise ValueError(f"bad discount {{percent}}")
        self.discount = percent
        return self.discount

    @property
    def subtotal(self) -> int:
        return sum(item.total() for item in self.items)

    def total(self) -> int:
        value = self.subtotal
        if self.discount:
            value -= value * self.discount // 100
        return max(value, 0)

    def lines(self):
        for item in self.items:
            yield f"{{item.name}} x{{item.qty}}: {{item.total()}}"

    def grouped(self):
        key = lambda item: item.cents // 1000
        for bucket, items in itertools.groupby(sorted(self.items, key=key), key=key):
            yield bucket, [item.name for item in items]

    @classmethod
    def for_owner(cls, owner: str) -> "Cart{i}":
        return cls(owner)

    @staticmethod
    def parse_price(text: str) -> int:
        whole, _, frac = text.partition(".")
        return int(whole) * 100 + int((frac or "0").ljust(2, "0")[:2])


@register
def checkout_{i}(cart: Cart{i}, payment: str = "card") -> dict:
    """Turn a cart into an order."""
    global counter
    counter += 1
    if not cart.items:
        raise LookupError("empty cart")
    order = {{"id": counter, "owner": cart.owner, "total": cart.total(), "payment": payment}}
    try:
        order["lines"] = list(cart.lines())
    finally:
        order["closed"] = True
    return order


def fib_{i}(n: int) -> int:
    return n if n < 2 else fib_{i}(n - 1) + fib_{i}(n - 2)


def walk_{i}(tree, depth=0):
    yield depth, tree.get("name")
    for child in tree.get("children", ()):
        yield from walk_{i}(child, depth + 1)


async def fetch_{i}(delay: float, value):
    await asyncio.sleep(delay)
    return value


async def gather_{i}(values):
    results = await asyncio.gather(*(fetch_{i}(0, v) for v in values))
    async with asyncio.timeout(1):
        return [r for r in results if r is not None]


class Report{i}:
    def __init__(self, carts):
        self.carts = list(carts)
        self.rows = []

    def build(self):
        for cart in self.carts:
            self.rows.append((cart.owner, cart.total()))
        self.rows.sort(key=lambda row: -row[1])
        return self.rows

    def top(self, n=3):
        return [owner for owner, _total in self.build()[:n]]

    def __repr__(self):
        return f"Report{i}({{len(self.carts)}} carts)"


def summarize_{i}(numbers):
    total = 0
    count = 0
    smallest = None
    largest = None
    for number in numbers:
        total += number
        count += 1
        if smallest is None or number < smallest:
            smallest = number
        if largest is None or number > largest:
            largest = number
    mean = total / count if count else 0.0
    return {{"total": total, "count": count, "min": smallest, "max": largest, "mean": mean}}
'''


def generate(directory: str, modules: int) -> tuple[str, int]:
    package = "scopebench_app"
    root = os.path.join(directory, package)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "__init__.py"), "w") as fh:
        fh.write('"""Generated package for bench_import."""\n')
    lines = 0
    for i in range(modules):
        text = MODULE_TEMPLATE.format(i=i)
        lines += text.count("\n")
        with open(os.path.join(root, f"mod{i}.py"), "w") as fh:
            fh.write(text)
    return package, lines


def _clear_caches(directory: str, tagged_only: bool) -> None:
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            if ".scope-otel-" in name or (not tagged_only and name.endswith(".pyc")):
                os.remove(os.path.join(dirpath, name))


def _script(modules: list[str], globs: list[str] | None) -> str:
    """A program that imports ``modules`` and prints (import seconds, apply seconds)."""
    # Both sides import what scope-otel itself imports (wrapt pulls in asyncio
    # and importlib.metadata) and load the configuration, as the launcher does
    # before it applies a plan: what remains is the hook's own work.
    setup = ("import scope_otel.capture.runtime, scope_otel.instrument, scope_otel.instrument.wrap\n"
             "import scope_otel.plan, scope_otel.config\n"
             "scope_otel.config.current()\n")
    if globs is not None:
        setup += ("t0 = time.perf_counter()\n"
                  "scope_otel.instrument.apply(scope_otel.plan.Plan.from_globs(%r, 'full'))\n"
                  "applied = time.perf_counter() - t0\n" % (globs,))
    else:
        setup += "applied = 0.0\n"
    # CPU time of this process: on a shared machine, wall time mostly measures the neighbours
    return ("import importlib, time\n" + setup + "t = time.process_time()\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "print(time.process_time() - t, applied)\n")


def _run(path: list[str], code: str) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the plain side gets its ordinary warm .pyc
    for key in [k for k in env if k.startswith(("SCOPE_OTEL_", "OTEL_"))]:
        env.pop(key)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    seconds, applied = map(float, out.stdout.split())
    return seconds, applied


def measure_tree(path: list[str], modules: list[str], globs: list[str], tree_dir: str, repeat: int) -> dict:
    """Plain, warm and cold import times, interleaved round by round so drift hits all alike."""
    plain_code, hook_code = _script(modules, None), _script(modules, globs)
    _clear_caches(tree_dir, tagged_only=False)
    _run(path, plain_code)  # fill the ordinary .pyc
    _run(path, hook_code)   # fill the tagged cache
    runs: dict[str, list[float]] = {"plain": [], "warm": [], "cold": [], "apply": []}
    for _ in range(repeat):
        runs["plain"].append(_run(path, plain_code)[0])
        seconds, applied = _run(path, hook_code)
        runs["warm"].append(seconds)
        runs["apply"].append(applied)
        _clear_caches(tree_dir, tagged_only=True)
        runs["cold"].append(_run(path, hook_code)[0])  # and refills the cache for the next round
    return {k: (statistics.median(v), min(v)) for k, v in runs.items()}


def rewrite_cost(sources: list[bytes], repeat: int) -> tuple[float, float, int]:
    """Seconds per 1,000 lines: (parse + compile, parse + rewrite + compile), and the line count."""
    from scope_otel.instrument.rewrite import rewrite_module
    from scope_otel.plan import Plan

    plan = Plan.from_globs(["*"], "full")
    lines = sum(s.count(b"\n") for s in sources)
    plain, rewritten = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        for s in sources:
            compile(ast.parse(s), "<bench>", "exec", dont_inherit=True)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        for s in sources:
            tree = ast.parse(s)
            rewrite_module(tree, "bench", plan)
            compile(tree, "<bench>", "exec", dont_inherit=True)
        rewritten.append(time.perf_counter() - t)
    per = 1000 / lines
    return min(plain) * per, min(rewritten) * per, lines


CALL_SOURCE = """
def price(cents, qty=1):
    total = cents * qty
    return total

def ticks(n):
    for i in range(n):
        yield i
"""


def call_overhead(calls: int) -> list[tuple[str, float, float]]:
    """ns per call of a small function and per item of a generator: plain, rewritten at each level, wrapt."""
    import timeit
    import types

    from scope_otel.capture import runtime
    from scope_otel.capture.ring import Ring
    from scope_otel.instrument import wrap
    from scope_otel.instrument.rewrite import rewrite_module
    from scope_otel.plan import Plan

    runtime.bind_ring(Ring(1 << 12))  # nothing drains it here: keep it small, drop the oldest
    plan = Plan.from_globs(["callbench"], "full")
    plain = types.ModuleType("callbench")
    exec(compile(CALL_SOURCE, "callbench.py", "exec"), vars(plain))
    rewritten = types.ModuleType("callbench")
    rewritten.__file__ = "callbench.py"
    tree = ast.parse(CALL_SOURCE)
    fids_before = len(runtime.LEVELS)
    rewrite_module(tree, "callbench", plan)
    exec(compile(tree, "callbench.py", "exec"), vars(rewritten))
    fids = range(fids_before, len(runtime.LEVELS))
    wrapped = types.ModuleType("callbench")
    exec(compile(CALL_SOURCE, "callbench.py", "exec"), vars(wrapped))
    wrapped.__name__ = "callbench"
    wrap.wrap_module(wrapped, plan)
    wrapped_fids = range(fids[-1] + 1, len(runtime.LEVELS))

    def timed(module) -> tuple[float, float]:
        f, g = module.price, module.ticks
        per_call = min(timeit.repeat(lambda: f(3, 2), number=calls, repeat=5)) / calls
        per_item = min(timeit.repeat(lambda: sum(g(100)), number=calls // 100, repeat=5)) / calls
        return per_call * 1e9, per_item * 1e9

    rows = [("plain", *timed(plain))]
    for code, name in ((0, "off"), (1, "boundaries"), (2, "full")):
        for fid in [*fids, *wrapped_fids]:
            runtime.LEVELS[fid] = code
        rows.append((f"rewritten, {name}", *timed(rewritten)))
        rows.append((f"wrapt, {name}", *timed(wrapped)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer modules and repetitions")
    parser.add_argument("--modules", type=int, help="generated modules (default 40, quick 10)")
    parser.add_argument("--repeat", type=int, help="fresh interpreters per configuration (default 11, quick 3)")
    args = parser.parse_args(argv)
    modules = args.modules or (10 if args.quick else 40)
    repeat = args.repeat or (3 if args.quick else 11)

    work = tempfile.mkdtemp(prefix="scope-otel-bench-import-")
    try:
        package, lines = generate(work, modules)
        shop_copy = os.path.join(work, "examples")
        shutil.copytree(os.path.join(ROOT, "examples"), shop_copy,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        trees = [
            (f"generated ({modules} modules, {lines} lines)", [work], [f"{package}.mod{i}" for i in range(modules)],
             [f"{package}.*"], work),
            ("examples/shop (shop.web + Flask, SQLAlchemy)", [shop_copy], ["shop.web"], ["shop.*"], shop_copy),
        ]
        print(f"import CPU time in fresh interpreters, {repeat} interleaved rounds: median (min), ms\n")
        print("| module tree | plain | warm cache | warm/plain | cold (rewrite) | cold/plain | apply() once |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for label, path, names, globs, tree_dir in trees:
            r = measure_tree(path, names, globs, tree_dir, repeat)
            (plain, plain_min), (warm, warm_min), (cold, _c) = r["plain"], r["warm"], r["cold"]
            print(f"| {label} | {plain * 1e3:.1f} ({plain_min * 1e3:.1f}) | {warm * 1e3:.1f} ({warm_min * 1e3:.1f}) | "
                  f"{warm / plain:.2f}x ({warm_min / plain_min:.2f}x) | {cold * 1e3:.1f} | {cold / plain:.2f}x | "
                  f"{r['apply'][0] * 1e3:.1f} |")

        sources = []
        for i in range(modules):
            with open(os.path.join(work, package, f"mod{i}.py"), "rb") as fh:
                sources.append(fh.read())
        plain_k, rewritten_k, counted = rewrite_cost(sources, 3 if args.quick else 5)
        print(f"\ncold cost per 1,000 source lines ({counted} lines, best of runs, in process):\n")
        print("| step | ms / 1,000 lines |")
        print("| --- | --- |")
        print(f"| parse + compile (what Python does without a .pyc) | {plain_k * 1e3:.2f} |")
        print(f"| parse + rewrite + compile (scope-otel, no cache) | {rewritten_k * 1e3:.2f} |")
        print(f"| rewrite overhead | {(rewritten_k - plain_k) * 1e3:.2f} ({rewritten_k / plain_k:.2f}x) |")
        rows = call_overhead(20_000 if args.quick else 200_000)
        print("\nper-call cost (in process, best of 5; levels set directly in runtime.LEVELS):\n")
        print("| variant | ns per call of price() | ns per item of ticks(100) | call vs plain |")
        print("| --- | --- | --- | --- |")
        for name, per_call, per_item in rows:
            print(f"| {name} | {per_call:.0f} | {per_item:.0f} | {per_call / rows[0][1]:.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
