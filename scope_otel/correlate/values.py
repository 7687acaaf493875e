"""Captured values as span attribute strings: truncated and redacted, counted.

``ValuePolicy(max_value_length=512, redact=DEFAULT_REDACT)``:

* :meth:`ValuePolicy.format` turns a captured value (a plain value or the repr
  taken on the hot path) into a string of at most ``max_value_length``
  characters plus a ``…`` marker when cut;
* a value whose *name* contains a redact pattern (case-insensitive: an
  argument ``password``, a state target ``self.api_token``) becomes
  ``[REDACTED]``; inside a repr, ``'password': 'x'`` / ``token=x`` pairs have
  their value replaced as well;
* ``truncated`` and ``redacted`` count what happened.

Runs in the processor's worker thread only (counters are plain ints).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

REDACTED = "[REDACTED]"
ELLIPSIS = "…"


class ValuePolicy:
    """Formatting rules for captured values (see the module docstring)."""

    def __init__(self, max_value_length: int = 512, redact: Iterable[str] | None = None) -> None:
        if redact is None:
            from scope_otel.config import DEFAULT_REDACT

            redact = DEFAULT_REDACT
        self.max_value_length = max(1, int(max_value_length))
        self.patterns = tuple(p.lower() for p in redact if p)
        self.truncated = 0
        self.redacted = 0
        if self.patterns:
            keys = "|".join(re.escape(p) for p in self.patterns)
            # a key containing a pattern, optionally quoted, then : or =, then a value
            self._pairs = re.compile(
                r"""(?P<key>(?P<q>['"]?)[\w.-]*(?:%s)[\w.-]*(?P=q)\s*[:=]\s*)"""
                r"""(?P<val>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,\s)}\]]+)""" % keys,
                re.IGNORECASE,
            )
        else:
            self._pairs = None

    def is_secret(self, name: str) -> bool:
        return self._mentions_secret(name)

    def _mentions_secret(self, text: str) -> bool:
        # a substring test per pattern is far cheaper than the pair regex,
        # and most captured values mention no secret-looking key at all
        low = text.lower()
        for pattern in self.patterns:
            if pattern in low:
                return True
        return False

    def format(self, name: str, value: Any) -> str:
        """The attribute string for ``value`` captured under ``name``."""
        if self.patterns and self.is_secret(name):
            self.redacted += 1
            return REDACTED
        # strings are kept as they are; anything else arrives as its repr
        text = value if type(value) is str else repr(value)
        if self._pairs is not None and ("=" in text or ":" in text) and self._mentions_secret(text):
            text, n = self._pairs.subn(lambda m: m.group("key") + REDACTED, text)
            self.redacted += n
        if len(text) > self.max_value_length:
            self.truncated += 1
            text = text[: self.max_value_length] + ELLIPSIS
        return text
