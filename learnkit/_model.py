"""Outcomes and the in-memory operation record shared by tracking and the writer."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DAY", "ENDED_OUTCOMES", "HOUR", "MAX_KEY", "MAX_MESSAGE", "MAX_TIME", "MAX_VALUE",
    "RECORDABLE_OUTCOMES", "Operation", "bounded_repr", "clean_context", "clean_message",
    "clean_text", "error_type_name", "valid_time",
]

#: Seconds in an hour and a day: rollups are hourly, windows are in days.
HOUR = 3600
DAY = 86400.0


#: How an operation can end (``running`` is stored while it is in flight, never an end).
ENDED_OUTCOMES = ("success", "failure", "cancelled", "abandoned", "skipped")
#: The outcomes ``kit.record`` accepts (``abandoned`` is found, never recorded).
RECORDABLE_OUTCOMES = ("success", "failure", "cancelled", "skipped")

_type_names: dict[type, str] = {}

# -- what a record may hold ----------------------------------------------------
#
# Every operation is cleaned when it is created (and when context or a failure
# is added), so that whatever reaches the writer can be written: text is a str
# of bounded length with invalid Unicode (lone surrogates) replaced; context
# values are JSON-safe scalars (None, bool, 64-bit int, finite float, str) or
# JSON lists/objects of them, anything else their bounded repr; times are
# finite Unix seconds in [0, MAX_TIME].

#: Longest op type, key, error type or context key kept (characters).
MAX_KEY = 200
#: Longest context string value or repr kept.
MAX_VALUE = 1000
#: Longest error message kept; longer ones end with a truncation marker.
MAX_MESSAGE = 4000
#: Latest time accepted: 9999-12-31T23:59:59Z.
MAX_TIME = 253_402_300_799.0
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_SURROGATES = re.compile("[\ud800-\udfff]")
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode


def _valid_unicode(s: str) -> str:
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", s)
    return s


def _truncate(s: str, limit: int) -> str:
    if len(s) <= limit:
        return s
    marker = f"... [truncated {len(s) - limit} chars]"
    return s[:limit] + marker


def bounded_repr(value: Any, limit: int = MAX_VALUE) -> str:
    """``repr(value)``, valid UTF-8, at most ``limit`` characters; never raises."""
    try:
        text = repr(value)
        if type(text) is not str:
            raise TypeError("__repr__ returned a non-string")
    except Exception:  # a broken __repr__ is the value's fault, never the caller's
        text = f"<unrepresentable {type(value).__qualname__}>"
    return _truncate(_valid_unicode(text), limit)


def clean_text(value: Any, limit: int = MAX_KEY) -> str:
    """``value`` as a str of at most ``limit`` characters (plus a marker), valid UTF-8.

    A str (or subclass) is kept; anything else becomes ``str(value)``, or its
    repr when that fails. Never raises.
    """
    if type(value) is str and len(value) <= limit and value.isascii():
        return value  # the fast path: almost every op type and key
    if isinstance(value, str):
        s = str.__str__(value)
    else:
        try:
            s = str(value)
            if type(s) is not str:
                raise TypeError("__str__ returned a non-string")
        except Exception:
            s = bounded_repr(value, limit)
    return _truncate(_valid_unicode(s), limit)


def clean_message(value: Any) -> str | None:
    """An error message: None stays None, text is bounded to :data:`MAX_MESSAGE`."""
    if value is None:
        return None
    return clean_text(value, MAX_MESSAGE)


def _clean_value(v: Any) -> tuple[Any, bool]:
    """A context value JSON can hold, and whether it had to be changed."""
    t = type(v)
    if t is str:
        if len(v) <= MAX_VALUE and v.isascii():
            return v, False
        c = _truncate(_valid_unicode(v), MAX_VALUE)
        return c, c != v
    if t is int:
        if _INT_MIN <= v <= _INT_MAX:
            return v, False
        return bounded_repr(v, 64) if v.bit_length() < 200 else (
            f"<int of {v.bit_length()} bits>"), True
    if v is None or t is bool:
        return v, False
    if t is float:
        return (v, False) if math.isfinite(v) else (repr(v), True)
    if isinstance(v, (list, tuple, dict)):
        try:
            text = _dumps(v)
            if len(text) <= MAX_VALUE:
                text.encode("utf-8")
                back = json.loads(text)
                if not _has_big_int(back):
                    return back, False
        except Exception:
            pass
    return bounded_repr(v), True


def _has_big_int(v: Any) -> bool:
    if type(v) is int:
        return not _INT_MIN <= v <= _INT_MAX
    if type(v) is list:
        return any(_has_big_int(x) for x in v)
    if type(v) is dict:
        return any(_has_big_int(x) for x in v.values())
    return False


def clean_context(context: Any) -> tuple[dict[str, Any] | None, int]:
    """A fresh context dict of clean keys and values, and how many were changed.

    Never raises: a mapping that cannot even be iterated counts as one change
    and yields ``{"<context>": repr}``.
    """
    try:
        if not context:
            return None, 0
        items = list(context.items()) if isinstance(context, Mapping) else list(
            dict(context).items())
    except Exception:  # a mapping that cannot say whether it is empty, or iterate
        return {"<context>": bounded_repr(context)}, 1
    out: dict[str, Any] = {}
    changed = 0
    for k, v in items:
        if type(k) is not str or len(k) > MAX_KEY or not k.isascii():
            k2 = clean_text(k)
            # A key of another type is always changed; comparing it with its text
            # might raise (a SQL clause's __ne__).
            changed += k2 != k if type(k) is str else True
            k = k2
        v, bad = _clean_value(v)
        changed += bad
        out[k] = v
    return out, changed


def valid_time(value: Any) -> bool:
    """True for a finite number of Unix seconds in ``[0, MAX_TIME]`` (not a bool)."""
    if type(value) is float or (isinstance(value, (int, float)) and type(value) is not bool):
        return 0.0 <= value <= MAX_TIME
    return False


def error_type_name(exc_type: type[BaseException]) -> str:
    """``module.QualName`` of an exception type; builtins have no module."""
    name = _type_names.get(exc_type)
    if name is None:
        module = exc_type.__module__
        qual = exc_type.__qualname__
        name = clean_text(qual if module == "builtins" else f"{module}.{qual}")
        _type_names[exc_type] = name
    return name


class Operation:
    """One tracked operation, from start to end.

    The handle that ``async with track(...) as op`` yields and that
    :func:`learnkit.current_operation` returns. Use :meth:`set` to add context
    while running and :meth:`fail` to record a failure without raising.
    Everything else is read-only for users; the writer fills in ``db_id``.
    """

    __slots__ = (
        "admission",
        "coerced",
        "context",
        "db_id",
        "duration",
        "ended_at",
        "error_message",
        "error_type",
        "key",
        "op_type",
        "outcome",
        "parent",
        "persisted",
        "started_at",
        "t0",
    )

    def __init__(
        self,
        op_type: str,
        key: Any,
        context: Mapping[str, Any] | None,
        started_at: float,
        t0: float,
        parent: Operation | None,
    ) -> None:
        self.op_type = clean_text(op_type)
        self.key = None if key is None else clean_text(key)
        self.context, self.coerced = clean_context(context)
        self.started_at = started_at
        self.t0 = t0
        self.parent = parent
        self.ended_at: float | None = None
        self.duration: float | None = None
        self.outcome: str = "running"
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.db_id: int | None = None
        self.persisted = False
        self.admission: float | None = None

    def set(self, **context: Any) -> None:
        """Add or replace context attributes (``op.set(files_changed=3)``)."""
        self.add_context(context)

    def add_context(self, context: Mapping[str, Any]) -> None:
        """Add or replace context attributes from a mapping (keys of any type)."""
        clean, changed = clean_context(context)
        self.coerced += changed
        if clean is None:
            return
        if self.context is None:
            self.context = clean
        else:
            self.context.update(clean)

    def fail(self, error_type: str, message: Any = None) -> None:
        """Mark the operation failed without raising.

        The failure is recorded when the block or function ends, even if an
        exception escapes afterwards: the explicit error type and message are
        kept (the exception still propagates).
        """
        self.outcome = "failure"
        self.error_type = clean_text(error_type)
        self.error_message = clean_message(message)

    def __repr__(self) -> str:
        return (
            f"<Operation {self.op_type!r} key={self.key!r} outcome={self.outcome!r}"
            f" id={self.db_id}>"
        )
