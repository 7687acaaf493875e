"""Progress of a long analysis on stderr.

On a terminal, a bar redrawn in place (at most ten times a second); when
stderr is a file or a pipe (CI logs), a plain line every couple of seconds,
so logs stay readable.  Small trees (under ``min_files``) print nothing.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Callable ``(done, total, path)``; call :meth:`close` when finished."""

    def __init__(self, stream: TextIO | None = None, *, min_files: int = 50,
                 label: str = "scope-otel plan") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.min_files = min_files
        self.label = label
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self._last = 0.0
        self._drawn = False
        self._started = time.perf_counter()

    def __call__(self, done: int, total: int, path: str) -> None:
        if total < self.min_files:
            return
        now = time.perf_counter()
        final = done == total
        if not final and now - self._last < (0.1 if self.tty else 2.0):
            return
        self._last = now
        elapsed = now - self._started
        if self.tty:
            width = 30
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{self.label}: [{bar}] {done}/{total} files {elapsed:.1f}s")
            self._drawn = True
        else:
            self.stream.write(f"{self.label}: {done}/{total} files analysed ({elapsed:.1f}s)\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
