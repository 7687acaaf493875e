"""Secrets never reach a span: the one redaction every caller uses, and its counter.

Two kinds of rule (see the README's "Redaction" section):

* **names**: a value whose name (an argument, a dict key, a header, an
  attribute key, a state target such as ``self.api_token``) contains a name
  pattern becomes ``[REDACTED]`` as a whole.  Matching ignores case, and
  ``-``, ``_`` and spaces are alike: ``api_key`` also matches ``X-API-Key``
  and ``apikey``.
* **shapes**: inside any text, credentials are found by their form and
  replaced, the text around them kept: ``key=value``, ``key: value``,
  ``'key': 'value'`` and ``('key', 'value')`` whose key contains a name
  pattern; ``Authorization:``/``Cookie:`` header lines; ``Bearer``
  credentials and ``Basic`` ones (base64 of ``user:password``); PEM private
  keys; the password of ``scheme://user:password@host`` URLs and DSNs; JWTs
  and well-known provider tokens (GitHub, GitLab, Slack, Stripe, AWS access
  key ids, Google API keys); a percent-encoded query value holding any of
  these.

``redact`` patterns from the configuration extend the built-in names;
``redact_defaults = false`` drops the built-in names and shapes, leaving
only the configured patterns.  Every value changed is counted once
(:func:`count`), whichever thread or layer redacted it.
"""
from __future__ import annotations

import base64
import binascii
import re
import threading
from itertools import chain
from typing import Any, Iterable, Mapping
from urllib.parse import unquote_plus

from scope_otel import config
from scope_otel.accelerators import pure_python_requested

REDACTED = "[REDACTED]"

#: Substrings of names whose values are never stored ('-', '_' and ' ' alike).
#: Deliberately not bare "session" or "auth": they would hide ``session_factory``
#: and ``author``.
DEFAULT_NAMES = (
    "password", "passwd", "pwd", "passphrase", "secret", "token",
    "api_key", "apikey", "authorization", "auth_", "cookie",
    "session_id", "sessionid", "session_key", "credential", "private_key",
    "access_key", "signature",
)
#: The credential shapes found inside any text, as shown by ``scope-otel config``.
SHAPES = (
    "key=value / key: value / 'key': 'value' / ('key', 'value') pairs with a secret name",
    "Authorization / Proxy-Authorization / Cookie / Set-Cookie header lines",
    "Bearer <token>", "Basic <base64 user:password>",
    "-----BEGIN ... PRIVATE KEY----- blocks",
    "scheme://user:PASSWORD@host (URLs, DSNs)",
    "JWTs (eyJ...eyJ...)",
    "provider tokens: ghp_/gho_/ghs_/github_pat_, glpat-, xox?-, sk_live_/rk_live_, AKIA..., AIza...",
    "percent-encoded query values holding any of these",
)

_count = 0
_count_lock = threading.Lock()


def count() -> int:
    """Values redacted in this process so far, by every caller."""
    return _count


def counted(n: int = 1) -> None:
    """Count ``n`` redactions made outside :class:`Redactor` (e.g. a field
    list given to a framework's own sanitiser)."""
    global _count
    if n:
        with _count_lock:
            _count += n


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


def _name_regex(pattern: str) -> str:
    # 'api_key' -> 'api[-_ ]?key': every spelling of the separator, or none
    return "[-_ ]?".join(re.escape(part) for part in pattern.split("_"))


_Q = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\""""  # a quoted value, as repr or JSON writes it
_NOT_DONE = r"(?!\[REDACTED\])"
_I = re.IGNORECASE

# (hints, regex, what is kept of a match before [REDACTED]): each pass runs
# only on a text holding one of its lower-case hints; most texts hold none.
_PEM = re.compile(
    r"(?P<keep>)(?P<secret>-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----(?s:.*?-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|.*))")
_HEADER_LINE = re.compile(  # a header line whose whole value is a credential: 'Cookie: a=1; b=2'
    r"(?P<keep>\b(?:proxy-)?authorization\s*:\s*|\bset-cookie\s*:\s*|\bcookie\s*:\s*)"
    r"%s(?P<secret>[^\r\n'\"\\]+)" % _NOT_DONE, _I)
_PAIR = re.compile(  # 'password': 'x', password=x, token: x (the key is checked by name)
    r"(?P<keep>(?<![\w.-])(?P<q>['\"]?)(?P<key>[\w.-]+)(?P=q)\s*[:=]\s*)%s"
    r"(?P<secret>%s|(?:(?:bearer|basic|token|digest|negotiate)\s+)?[^\s,;&)}\]'\"]+)" % (_NOT_DONE, _Q), _I)
_TUPLE = re.compile(  # ('Authorization', 'Bearer x'): header lists given as tuples
    r"(?P<keep>\(\s*(?P<q>['\"])(?P<key>[\w .-]+)(?P=q)\s*,\s*)%s(?P<secret>%s)" % (_NOT_DONE, _Q))
_URL = re.compile(  # the password of scheme://user:password@host
    r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]*:)%s(?P<secret>[^\s@/'\"]+)(?=@)" % _NOT_DONE, _I)
_BEARER = re.compile(r"(?P<keep>\bbearer\s+)(?P<secret>[A-Za-z0-9._~+/-]{8,}=*)", _I)
_BASIC = re.compile(r"(?P<keep>\bbasic\s+)(?P<secret>[A-Za-z0-9+/]{6,}={0,2})", _I)
_JWT = re.compile(r"(?P<keep>)(?P<secret>\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)")
_TOKEN = re.compile(
    r"(?P<keep>)(?P<secret>\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_-]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}))")
_QUERY = re.compile(  # a percent-encoded query value: decoded and checked
    r"(?P<keep>(?:^|[?&;])[^=&#\s'\"]*=)(?P<secret>[^&#\s'\"]*(?:%[0-9A-Fa-f]{2}|\+)[^&#\s'\"]*)")
_TOKEN_HINTS = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox", "k_live_", "k_test_",
                "akia", "aiza")


_CLEAN_MAX = 4096      # texts remembered as clean (about 1 MB at most)
_CLEAN_MAX_LEN = 256


class Redactor:
    """Name and shape rules (see the module docstring); counts into :func:`count`."""

    def __init__(self, names: Iterable[str] = DEFAULT_NAMES, shapes: bool = True) -> None:
        self.names = tuple(dict.fromkeys(_norm(p) for p in names if p and p.strip()))
        self.shapes = shapes
        self._cache: dict[str, bool] = {}
        # texts seen to hold no secret: span attributes repeat (methods, routes,
        # addresses, the statement text SQLAlchemy caches), so most are found here
        self._clean: dict[str, None] = {}
        self._plain_keys: set[str] = set()  # names seen that are not secret
        # a name's longest part ('api' for 'api_key', 'api' for 'x_api_key') is in every spelling of it
        name_hints = tuple(sorted({max(n.split("_"), key=len) or n for n in self.names}))
        passes: list[tuple[tuple[str, ...], re.Pattern, str]] = []
        if shapes:
            passes += [(("-----begin",), _PEM, ""), (("authorization", "cookie"), _HEADER_LINE, "")]
        if self.names:
            passes += [(name_hints, _PAIR, "name"), (name_hints, _TUPLE, "name")]
        if shapes:
            passes += [
                (("://",), _URL, ""), (("bearer",), _BEARER, ""), (("basic",), _BASIC, "basic"),
                (("eyj",), _JWT, ""), (_TOKEN_HINTS, _TOKEN, ""), (("%", "+"), _QUERY, "query"),
            ]
        self._passes = passes
        hints = {h for hints, _, _ in passes for h in hints}
        # the gate: any pass's hint; one that contains another ('authorization', 'auth') adds nothing
        self._hints = tuple(sorted(h for h in hints if not any(o != h and o in h for o in hints)))

    # ------------------------------------------------------------ queries

    def secret_name(self, name: str) -> bool:
        """Whether values named ``name`` are redacted whole."""
        hit = self._cache.get(name)
        if hit is None:
            low = _norm(name)
            hit = any(p in low for p in self.names)
            if len(self._cache) < 4096:
                self._cache[name] = hit
                if not hit:
                    self._plain_keys.add(name)
        return hit

    def describe(self) -> str:
        """The effective rules, one per line, for ``scope-otel config``."""
        lines = ["names: " + (", ".join(self.names) or "(none)")]
        lines += ["shape: " + s for s in SHAPES] if self.shapes else ["shapes: off (redact_defaults = false)"]
        return "\n".join(lines)

    # ------------------------------------------------------------ redaction

    def value(self, name: str, text: str, found: list[str] | None = None) -> str:
        """``text`` captured under ``name``: ``[REDACTED]`` for a secret name,
        else with any credential inside it replaced.  The secrets removed are
        appended to ``found`` when given."""
        if self.secret_name(name):
            if text == REDACTED:
                return text
            counted()
            if found is not None:
                found.append(text)
            return REDACTED
        return self.text(text, found)

    def text(self, text: str, found: list[str] | None = None) -> str:
        """``text`` with the credentials found inside it replaced (counted)."""
        out, n = self._scrub(text, found)
        if n:
            counted(n)
        return out

    def _scrub(self, text: str, found: list[str] | None = None) -> tuple[str, int]:
        if len(text) < 5 or text in self._clean:
            return text, 0
        low = text.lower()
        n = 0
        for hint in self._hints:
            if hint in low:
                original = text
                for hints, regex, check in self._passes:
                    for hint in hints:
                        if hint in low:
                            text, k = self._apply(regex, check, text, found)
                            n += k
                            break
                if n:
                    return text, n
                text = original
                break
        clean = self._clean
        if len(text) <= _CLEAN_MAX_LEN:
            if len(clean) >= _CLEAN_MAX:
                clean.clear()
            clean[text] = None
        return text, 0

    def _apply(self, regex: re.Pattern, check: str, text: str, found: list[str] | None) -> tuple[str, int]:
        """One pass of ``regex`` over ``text``.  A match that fails its check
        (a key that is not secret, base64 that is not ``user:password``)
        resumes the search just after its key, so a credential inside the
        value of an innocent key (``'dsn': 'password=x'``) is still found."""
        out: list[str] = []
        pos = last = n = 0
        search = regex.search
        while True:
            m = search(text, pos)
            if m is None:
                break
            secret = m.group("secret")
            if (
                (check == "name" and not self.secret_name(m.group("key")))
                or (check == "basic" and not _basic_credential(secret))
                or (check == "query" and not self._scrub(unquote_plus(secret))[1])
            ):
                pos = max(m.end("keep"), m.start() + 1)
                continue
            out.append(text[last:m.start()])
            out.append(m.group("keep") + REDACTED)
            if found is not None:
                found.append(secret[1:-1] if secret[:1] in "'\"" and secret[-1:] == secret[:1] else secret)
            last = pos = m.end()
            n += 1
        if not n:
            return text, 0
        out.append(text[last:])
        return "".join(out), n

    def known_clean(self, values: dict[str, Any]) -> bool:
        """Whether every key of ``values`` is known to be no secret name and
        every string value was seen before and found clean: the common case
        for span attributes, decided in C-level set operations."""
        if not self._plain_keys.issuperset(values):
            return False
        clean = self._clean
        for v in values.values():
            if type(v) is str:
                if len(v) >= 5 and v not in clean:
                    return False
            elif type(v) is tuple or type(v) is list:
                return False
        return True

    def mapping(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """The changed items of an attribute mapping (string values and
        sequences of strings), or ``None`` when nothing is secret."""
        changed: dict[str, Any] | None = None
        secret_name = self.secret_name
        for key, val in values.items():
            if secret_name(key) is False and type(val) is not str and type(val) is not tuple and type(val) is not list:
                continue
            if type(val) is str:
                new: Any = self.value(key, val)
                if new is val:
                    continue
            elif isinstance(val, (tuple, list)) and val and type(val[0]) is str:
                items = [self.value(key, v) if type(v) is str else v for v in val]
                if all(a is b for a, b in zip(items, val)):
                    continue
                new = tuple(items)
            else:
                continue
            if changed is None:
                changed = {}
            changed[key] = new
        return changed


def _basic_credential(encoded: str) -> bool:
    """Whether ``encoded`` is base64 of ``user:password`` (not the word after 'basic' in prose)."""
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in text and text.isprintable()


# ---------------------------------------------------------------- the process' rules

_current: Redactor | None = None
_current_key: tuple | None = None


def from_config(cfg: Any) -> Redactor:
    """The rules a configuration asks for: ``redact`` extends the defaults
    unless ``redact_defaults`` is false."""
    extra = tuple(getattr(cfg, "redact", ()) or ())
    defaults = bool(getattr(cfg, "redact_defaults", True))
    return Redactor((*DEFAULT_NAMES, *extra) if defaults else extra, shapes=defaults)


def current() -> Redactor:
    """The rules of the configuration in force (rebuilt when it changes)."""
    global _current, _current_key, _current_cfg
    cfg = config._current  # the same object until a change: no lock for a look
    if cfg is not None and cfg is _current_cfg and _current is not None:
        return _current
    try:
        cfg = config.current()
        key = (tuple(cfg.redact), bool(cfg.redact_defaults))
    except Exception:  # a bad configuration must not turn redaction off
        cfg, key = None, None
    if _current is None or key != _current_key:
        _current = from_config(cfg) if cfg is not None else Redactor()
        _current_key = key
    _current_cfg = cfg
    return _current


_current_cfg: Any = None


# ---------------------------------------------------------------- SDK spans

def scrub_span(span: Any, redactor: Redactor) -> None:
    """Redact an ended SDK span in place: its attributes (by key name and
    content), its events' attributes and its status description.

    Covers every span the process records, whoever made it (our
    integrations, opentelemetry-python-contrib's, the application's own
    ``set_attribute``), before any exporter sees it.  Reads the SDK's
    private fields where it has them, as the encoders do: the public
    properties copy or lock per key.
    """
    try:  # the SDK's fields: the properties copy, or lock per key
        attrs = span._attributes._dict
        events = span._events._dq
        status = span._status
    except AttributeError:
        attrs = _plain(span.attributes)
        events = span.events
        status = span.status
    if attrs and not redactor.known_clean(attrs):
        changed = redactor.mapping(attrs)
        if changed:
            _update(span, attrs, changed)
    for event in events or ():
        ev_attrs = _plain(event.attributes)
        if ev_attrs:
            changed = redactor.mapping(ev_attrs)
            if changed:
                _update(event, ev_attrs, changed)
    description = status.description if status is not None else None
    if description:
        text = redactor.text(description)
        if text is not description:
            span._status = type(status)(status.status_code, text)


def scrub_spans(spans: list, redactor: Redactor) -> None:
    """:func:`scrub_span` for a batch, with the common case decided for the
    whole batch at once: every attribute key known to be no secret name,
    every string value seen before and found clean, no event, no status
    description.  Only the spans holding something new are looked at one by
    one (the C twin, ``scope_otel/_redactc.c``, decides the attribute dicts
    the same way without a Python call per span)."""
    if len(spans) < 8:  # the sets below cost more than they save for a few spans
        look = spans
    else:
        c_check = _c_needs_look()
        if c_check is not None:
            look = c_check(spans if type(spans) is list else list(spans), redactor._plain_keys, redactor._clean)
        else:
            look = _py_needs_look(spans, redactor)
    for span in look:
        scrub_span(span, redactor)


def _py_needs_look(spans: list, redactor: Redactor) -> list:
    """The spans of a batch that hold something not known to be clean (see
    :func:`scrub_spans`), in batch order: what the C twin returns."""
    try:
        dicts, busy = _fields(spans)
        keys = set().union(*dicts)  # C-level: set, chain and map do the per-span work
        values = set(chain.from_iterable(map(dict.values, dicts)))
    except (AttributeError, TypeError):  # not the SDK's layout, or an unhashable value
        return list(spans)
    look = set(map(id, busy))
    if not redactor._plain_keys.issuperset(keys):
        new_keys = keys.difference(redactor._plain_keys)
        look.update(id(s) for s, d in zip(spans, dicts) if not new_keys.isdisjoint(d))
    rest = values.difference(redactor._clean)
    if _needs_look(rest):
        unknown = {v for v in rest if (type(v) is str and len(v) >= 5) or type(v) is tuple or type(v) is list}
        look.update(id(s) for s, d in zip(spans, dicts) if not unknown.isdisjoint(d.values()))
    return [s for s in spans if id(s) in look] if look else []


def _fields(spans: list) -> tuple[list, list]:
    """Each span's attribute dict, and the spans with events or a status
    description, read from the SDK's private fields.  Comprehensions on
    purpose: the interpreter's specialised attribute loads read these for a
    fraction of what ``attrgetter`` or ``PyObject_GetAttr`` from C cost, and
    this runs for every span the process exports."""
    dicts = [s._attributes._dict for s in spans]
    busy = [s for s in spans if s._events._dq or s._status._description]
    return dicts, busy


def _c_batch_check(needs_look: Any) -> Any:
    """The batch check with the C twin (``_redactc.needs_look``) deciding the
    attribute dicts: the same answer as :func:`_py_needs_look`."""

    def check(spans: list, plain_keys: set, clean: dict) -> list:
        try:
            dicts, busy = _fields(spans)
        except AttributeError:  # not the SDK's layout
            return list(spans)
        look = needs_look(spans, dicts, plain_keys, clean)
        if busy:
            marked = set(map(id, look))
            marked.update(map(id, busy))
            look = [s for s in spans if id(s) in marked]
        return look

    return check


def _c_needs_look() -> Any:
    """The batch check with its C twin (``scope_otel/_redactc.c``), unless
    absent or ``SCOPE_OTEL_PURE_PYTHON`` asks for the pure-Python one."""
    global _c_check
    if pure_python_requested():
        return None
    if _c_check is None:
        try:
            from scope_otel._redactc import needs_look
        except ImportError:
            return None
        _c_check = _c_batch_check(needs_look)
    return _c_check


_c_check: Any = None


def _needs_look(values: set) -> bool:
    """Whether any of ``values`` is text (a string longer than the shortest
    secret, or a sequence) not yet known to be clean."""
    types = set(map(type, values))  # numbers, most often: decided without a Python loop
    if tuple in types or list in types:
        return True
    if str not in types:
        return False
    for v in values:
        if type(v) is str and len(v) >= 5:
            return True
    return False


def _plain(attrs: Any) -> Any:
    """The dict behind the SDK's ``BoundedAttributes``, else ``attrs``."""
    inner = getattr(attrs, "_dict", None)
    return inner if isinstance(inner, dict) else attrs


def _update(owner: Any, attrs: Any, changed: dict[str, Any]) -> None:
    """Apply ``changed``: in place for a dict (the one inside the SDK's
    ``BoundedAttributes`` keeps its dropped count), else on a copy."""
    if isinstance(attrs, dict):
        attrs.update(changed)
        return
    out = dict(attrs)
    out.update(changed)
    owner._attributes = out
