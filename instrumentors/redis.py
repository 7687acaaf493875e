"""Redis as a message broker: trace context and causal clock through streams and lists.

Usage::

    from scope_otel.instrumentors.redis import ScopeRedisInstrumentor
    ScopeRedisInstrumentor().instrument()            # streams
    ScopeRedisInstrumentor().instrument(lists=True)  # streams and lists

or nothing under ``scope-otel run`` / ``opentelemetry-instrument``, which load
the ``opentelemetry_instrumentor`` entry point ``scope_redis``.  This is about
*messages*; per-command client spans are the contrib Redis instrumentation's
job and the two combine.

Streams (always on)
    ``XADD`` runs inside a PRODUCER span ``send <stream>`` and adds one field,
    ``scope-otel.ctx``, holding the W3C trace context and the hybrid logical
    clock as JSON.  ``XREAD``/``XREADGROUP``/``XRANGE``/``XREVRANGE`` remove
    that field before the application sees the entry and start a CONSUMER
    span ``process <stream>`` (child of, and linked to, the producer span;
    ``receive <stream>`` linking all producers when several entries arrive).

Lists (``lists=True``, or the ``redis_lists`` key: ``SCOPE_OTEL_REDIS_LISTS=true``)
    A list element has no room for metadata, so ``LPUSH``/``RPUSH`` (and the
    ``X`` variants) wrap each element in an envelope
    (``\\x1fscope-otel\\x1f<json>\\x1f<element>``) that ``LPOP``/``RPOP``/
    ``BLPOP``/``BRPOP`` unwrap.  It is off by default because a consumer
    *without* scope-otel (another language, ``redis-cli``) would see the
    envelope; turn it on when every consumer of those lists runs scope-otel.

The consumer span of a pulled message stays current on the consuming thread
until that thread's next instrumented read, so the work done for a message
(HTTP calls, SQL, function spans) nests under it.  Only messages that carry a
context get consumer spans.

Limits: synchronous clients only (``redis.Redis`` and its pipelines);
pipelined *reads* are returned untouched (envelope or field included);
``BLMOVE``/``LMOVE``/``RPOPLPUSH`` move envelopes along without spans.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from opentelemetry import trace

from scope_otel.instrumentors import _broker
from scope_otel.instrumentors._base import Patch, ScopeInstrumentor
from scope_otel.instrumentors._report import failed
from scope_otel.version import __version__

#: Stream field carrying the context.
FIELD = "scope-otel.ctx"
_MAGIC = b"\x1fscope-otel\x1f"
_SEP = b"\x1f"
_SYSTEM = "redis"
_LISTS_ENV = "SCOPE_OTEL_REDIS_LISTS"
_PRODUCERS = ("lpush", "rpush", "lpushx", "rpushx")
_LIST_CONSUMERS = ("lpop", "rpop", "blpop", "brpop")
_STREAM_CONSUMERS = ("xread", "xreadgroup", "xrange", "xrevrange")


class _State:
    def __init__(self, **kwargs: Any) -> None:
        self.tracer = trace.get_tracer(__name__, __version__, tracer_provider=kwargs.get("tracer_provider"))
        lists = kwargs.get("lists")
        self.lists = bool(lists) if lists is not None else _lists_from_config()


_state: _State | None = None


def _lists(state: _State) -> bool:
    return state.lists


class ScopeRedisInstrumentor(ScopeInstrumentor):
    """redis-py ≥ 4: context through stream fields and (opt-in) list envelopes."""

    _requires = ("redis >= 4.0",)
    _what = "Redis messaging"

    def _configure(self, **kwargs: Any) -> _State:
        return _State(**kwargs)

    @property
    def _hooks(self) -> tuple:
        return (
            Patch("redis.client", "Redis", "xadd", _wrap_xadd),
            *(Patch("redis.client", "Redis", name, _wrap_stream_read) for name in _STREAM_CONSUMERS),
            *(Patch("redis.client", "Redis", name, _wrap_push, when=_lists) for name in _PRODUCERS),
            *(Patch("redis.client", "Redis", name, _wrap_pop, when=_lists) for name in _LIST_CONSUMERS),
        )


def _lists_from_config() -> bool:
    """The ``redis_lists`` key (SCOPE_OTEL_REDIS_LISTS, config file); the raw variable if config is unreadable."""
    try:
        from scope_otel import config

        return bool(config.current().redis_lists)
    except Exception:
        return os.environ.get(_LISTS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _pipelined(client: Any) -> bool:
    from redis.client import Pipeline

    return isinstance(client, Pipeline)


# --------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------

def _wrap_xadd(original: Callable) -> Callable:
    def xadd(self, name, fields, *args, **kwargs):
        state = _state
        if state is None or not isinstance(fields, dict):
            return original(self, name, fields, *args, **kwargs)
        send = _broker.start_send(state.tracer, _SYSTEM, name, "xadd")
        if send is None:
            return original(self, name, fields, *args, **kwargs)
        try:
            tagged = {**fields, FIELD: json.dumps(send.carrier, separators=(",", ":"))}
        except Exception:
            failed("redis.xadd")
            tagged = fields
        try:
            entry_id = original(self, name, tagged, *args, **kwargs)
        except BaseException as exc:
            send.done(exc)
            raise
        send.done(message_id=None if _pipelined(self) else entry_id)
        return entry_id

    xadd.__wrapped__ = original
    return xadd


def _wrap_stream_read(original: Callable) -> Callable:
    operation = original.__name__

    def read(self, *args, **kwargs):
        state = _state
        if state is None or _pipelined(self):
            return original(self, *args, **kwargs)
        _broker.finish_current()
        result = original(self, *args, **kwargs)
        try:
            if operation in ("xrange", "xrevrange"):
                name = args[0] if args else kwargs.get("name")
                result, messages = _strip_entries(result)
                groups = [(name, messages)]
            else:
                result, groups = _strip_streams(result)
            for name, messages in groups:
                _broker.deliver(state.tracer, _SYSTEM, name, operation, messages)
        except Exception:
            failed(f"redis.{operation}")
        return result

    read.__name__ = operation
    read.__wrapped__ = original
    return read


def _strip_streams(result: Any) -> tuple[Any, list]:
    """Remove the context field from an XREAD(GROUP) reply (RESP2 list or RESP3 dict)."""
    groups = []
    if isinstance(result, dict):
        out = {}
        for name, value in result.items():
            # RESP3: {name: [entries]} (some versions nest one level deeper)
            nested = isinstance(value, list) and len(value) == 1 and isinstance(value[0], list)
            entries, messages = _strip_entries(value[0] if nested else value)
            out[name] = [entries] if nested else entries
            groups.append((name, messages))
        return out, groups
    if isinstance(result, list):
        out_list = []
        for item in result:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                entries, messages = _strip_entries(item[1])
                out_list.append(type(item)((item[0], entries)) if isinstance(item, tuple) else [item[0], entries])
                groups.append((item[0], messages))
            else:
                out_list.append(item)
        return out_list, groups
    return result, groups


def _strip_entries(entries: Any) -> tuple[Any, list]:
    if not isinstance(entries, list):
        return entries, []
    out, messages = [], []
    for entry in entries:
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], dict):
            entry_id, fields = entry
            key = FIELD if FIELD in fields else FIELD.encode() if FIELD.encode() in fields else None
            if key is not None:
                fields = dict(fields)
                raw = fields.pop(key)
                carrier = _loads(raw)
                if carrier is not None:
                    messages.append((carrier, entry_id))
                entry = type(entry)((entry_id, fields)) if isinstance(entry, tuple) else [entry_id, fields]
        out.append(entry)
    return out, messages


def _loads(raw: Any) -> dict | None:
    try:
        value = json.loads(raw)
        return value if isinstance(value, dict) else None
    except (ValueError, TypeError):
        return None


# --------------------------------------------------------------------------
# lists (opt-in)
# --------------------------------------------------------------------------

def _wrap_push(original: Callable) -> Callable:
    operation = original.__name__

    def push(self, name, *values):
        state = _state
        if state is None or not values:
            return original(self, name, *values)
        send = _broker.start_send(state.tracer, _SYSTEM, name, operation)
        if send is None:
            return original(self, name, *values)
        try:
            encoder = self.get_encoder()
            head = _MAGIC + json.dumps(send.carrier, separators=(",", ":")).encode() + _SEP
            wrapped = tuple(head + encoder.encode(v) for v in values)
        except Exception:
            failed(f"redis.{operation}")
            wrapped = values
        try:
            result = original(self, name, *wrapped)
        except BaseException as exc:
            send.done(exc)
            raise
        send.done()
        return result

    push.__name__ = operation
    push.__wrapped__ = original
    return push


def _wrap_pop(original: Callable) -> Callable:
    operation = original.__name__

    def pop(self, *args, **kwargs):
        state = _state
        if state is None or _pipelined(self):
            return original(self, *args, **kwargs)
        _broker.finish_current()
        result = original(self, *args, **kwargs)
        try:
            if operation in ("blpop", "brpop"):
                if isinstance(result, (list, tuple)) and len(result) == 2:
                    value, messages = _unwrap(result[1])
                    if messages:
                        result = type(result)((result[0], value)) if isinstance(result, tuple) else [result[0], value]
                        _broker.deliver(state.tracer, _SYSTEM, result[0], operation, messages)
            else:
                name = args[0] if args else kwargs.get("name")
                if isinstance(result, list):
                    unwrapped = [_unwrap(v) for v in result]
                    result = [v for v, _ in unwrapped]
                    messages = [m for _, ms in unwrapped for m in ms]
                else:
                    result, messages = _unwrap(result)
                _broker.deliver(state.tracer, _SYSTEM, name, operation, messages)
        except Exception:
            failed(f"redis.{operation}")
        return result

    pop.__name__ = operation
    pop.__wrapped__ = original
    return pop


def _unwrap(value: Any) -> tuple[Any, list]:
    """(element without envelope, [(carrier, None)]) — or the value as is."""
    if isinstance(value, str):
        magic, sep = _MAGIC.decode(), _SEP.decode()
    elif isinstance(value, bytes):
        magic, sep = _MAGIC, _SEP
    else:
        return value, []
    if not value.startswith(magic):
        return value, []
    end = value.find(sep, len(magic))
    if end < 0:
        return value, []
    carrier = _loads(value[len(magic):end])
    if carrier is None:
        return value, []
    return value[end + 1:], [(carrier, None)]
