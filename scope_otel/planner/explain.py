"""``scope-otel plan --explain``: the plan as a table a person can read.

One row per function: key, patterns, complexity (``cc`` cyclomatic, ``n``
nesting, ``L`` loops, ``rec`` recursion), estimated calls, level and the
reason.  Recorded functions come first, then the rest, each group in key
order; ``limit`` cuts long tables (the plan file always has everything).
"""
from __future__ import annotations

from typing import TextIO

_ORDER = {"full": 0, "boundaries": 1, "off": 2}


def _complexity(c: dict) -> str:
    text = f"cc={c.get('cyclomatic', 1)} n={c.get('max_nesting', 0)} L={c.get('loops', 0)}"
    if c.get("recursion", "none") != "none":
        text += f" rec={c['recursion']}"
    return text


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(document: dict, out: TextIO, *, limit: int | None = None) -> None:
    """Write the explanation table of a plan document to ``out``."""
    rows = sorted(document["functions"].items(), key=lambda kv: (_ORDER.get(kv[1]["level"], 3), kv[0]))
    shown = rows if limit is None else rows[:limit]
    table = [("function", "patterns", "complexity", "calls", "level", "reason")]
    for key, f in shown:
        level = f["level"] + (f"@{f['sampling']:g}" if f["level"] != "off" and f.get("sampling", 1.0) < 1 else "")
        calls = f.get("estimated_calls", 0)
        table.append((_clip(key, 60), _clip(",".join(f.get("patterns", [])) or "-", 40),
                      _complexity(f.get("complexity", {})),
                      f"{calls:.0f}" if calls >= 10 or calls == int(calls) else f"{calls:.2g}",
                      level, f.get("reason", "")))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        cells = [row[i].ljust(widths[i]) if i != 3 else row[i].rjust(widths[i]) for i in range(5)]
        out.write("  ".join(cells) + "  " + row[5] + "\n")
    if limit is not None and len(rows) > limit:
        out.write(f"... {len(rows) - limit} more functions (see the plan file)\n")
    est = document.get("estimate", {})
    levels = est.get("levels", {})
    out.write(
        f"\n{len(rows)} functions: {levels.get('full', 0)} full, {levels.get('boundaries', 0)} boundaries, "
        f"{levels.get('off', 0)} off; estimated overhead {est.get('overhead_pct', 0):.3g}% "
        f"of run time (budget {document.get('budget_pct')}%, frequencies {est.get('frequencies')}, "
        f"costs from {est.get('cost_model', {}).get('source', '?')})\n")
