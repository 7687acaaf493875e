"""Captured values as span attribute strings: redacted and truncated, both counted.

``ValuePolicy(max_value_length=512, redactor=None)``:

* :meth:`ValuePolicy.format` turns a captured value (a plain value or the repr
  taken on the hot path) into a string of at most ``max_value_length``
  characters plus a ``…`` marker when cut;
* redaction is :mod:`scope_otel.redact`'s (the configured rules when
  ``redactor`` is ``None``): a value whose *name* is secret-looking (an
  argument ``password``, a state target ``self.api_token``) becomes
  ``[REDACTED]``; credentials inside any other value are replaced; counted
  by :func:`scope_otel.redact.count`;
* within one call, a secret removed from one value (``self.password =
  value``, ``login(password=p)``) is also removed wherever else it appears
  in that call (the argument ``value``, the return value, an exception
  message): :meth:`ValuePolicy.begin` starts a call;
* ``truncated`` counts the values cut.

Runs in the processor's worker thread only (the truncation counter is a plain int).
"""
from __future__ import annotations

from typing import Any

from scope_otel import redact
from scope_otel.redact import REDACTED, Redactor

__all__ = ["ELLIPSIS", "REDACTED", "ValuePolicy"]

ELLIPSIS = "…"
_PLAIN = frozenset((int, float, bool, type(None)))  # their repr holds no text to redact


class ValuePolicy:
    """Formatting rules for captured values (see the module docstring)."""

    def __init__(self, max_value_length: int = 512, redactor: Redactor | None = None) -> None:
        self.max_value_length = max(1, int(max_value_length))
        self.redactor = redactor if redactor is not None else redact.current()
        self.truncated = 0
        self.secrets: list[str] = []  # of the call being formatted

    def begin(self, args: dict | None, events: list | None) -> None:
        """Start formatting one call: note the values held under secret
        names (arguments, state-change targets) so that other values of the
        call hide them too."""
        secrets = self.secrets
        secrets.clear()
        secret_name = self.redactor.secret_name
        if args:
            for name, val in args.items():
                if type(val) is str and secret_name(name):
                    secrets.append(val)
        if events:
            for _name, _ts, attrs in events:
                if not attrs:
                    continue
                if type(attrs) is not dict:  # records hold (key, value) pairs
                    attrs = dict(attrs)
                if "scope.value" in attrs and secret_name(attrs["scope.target"]):
                    val = attrs["scope.value"]
                    if type(val) is str:
                        secrets.append(val)

    def format(self, name: str, value: Any) -> str:
        """The attribute string for ``value`` captured under ``name``."""
        redactor = self.redactor
        secrets = self.secrets
        if redactor.secret_name(name):
            return redactor.value(name, value if type(value) is str else "")
        # strings are kept as they are; anything else arrives as its repr
        t = type(value)
        if t is str:
            text = redactor.text(value, secrets)
        elif t in _PLAIN:
            text = repr(value)
        else:
            text = redactor.text(repr(value), secrets)
        if secrets:
            text = self.hide(text)
        if len(text) > self.max_value_length:
            self.truncated += 1
            text = text[: self.max_value_length] + ELLIPSIS
        return text

    def hide(self, text: str) -> str:
        """``text`` without the secrets of the current call."""
        hidden = 0
        for secret in self.secrets:
            if len(secret) >= _MIN_SECRET and secret in text:
                hidden += text.count(secret)
                text = text.replace(secret, REDACTED)
        redact.counted(hidden)
        return text


_MIN_SECRET = 4  # a shorter value ('1', 'on') would hide unrelated text
