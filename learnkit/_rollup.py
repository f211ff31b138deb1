"""Aggregation shared by the writer (per batch) and analysis (window edges).

Each operation adds to four rollups, keyed by the hour it ended in:

- outcomes per (op_type, outcome), with summed durations;
- context values per (op_type, attribute, value, outcome);
- failures per (op_type, error_type, signature), with first/last seen and an
  example message;
- context values of failures per (op_type, error_type, signature, attribute,
  value), so that error clusters can be correlated with context.

Context values are *bucketed* so the rollups stay small: booleans, None,
integers up to 1000 and short strings are kept exactly; larger numbers keep
two significant digits; strings longer than 64 characters, and the 51st and
later distinct strings of one attribute in one process, count as
``<other>``; lists, dicts and other objects are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ._clustering import signature

__all__ = ["OTHER", "Aggregate", "bucket"]

HOUR = 3600
#: The value that stands for "a string we do not keep"; not valid JSON, so
#: it cannot collide with a real value.
OTHER = "<other>"
_MAX_STRINGS = 50
_MAX_STRING_LEN = 64

_seen_strings: dict[tuple[str, str], set[str]] = {}
_signatures: dict[str, str] = {}


def bucket(op_type: str, attr: str, value: Any) -> str | None:
    """The rollup key (JSON text) of one context value; None to leave it out."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if -1000 <= value <= 1000:
            return str(value)
        return str(int(float(f"{value:.2g}")))
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer() and -1000 <= value <= 1000:
            return str(int(value))
        return repr(float(f"{value:.2g}"))
    if isinstance(value, str):
        if len(value) > _MAX_STRING_LEN:
            return OTHER
        seen = _seen_strings.setdefault((op_type, attr), set())
        if value not in seen:
            if len(seen) >= _MAX_STRINGS:
                return OTHER
            seen.add(value)
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return None


def context_items(op_type: str, context: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """(attribute, bucketed value) pairs of a context, values that can be kept."""
    if not context:
        return ()
    out = []
    for k, v in context.items():
        b = bucket(op_type, str(k), v)
        if b is not None:
            out.append((str(k), b))
    return tuple(out)


def error_signature(message: str | None) -> str:
    """The masked signature of an error message (cached; bounded)."""
    if not message:
        return ""
    sig = _signatures.get(message)
    if sig is None:
        sig = signature(message[:2000])
        if len(_signatures) >= 20_000:
            _signatures.clear()
        _signatures[message] = sig
    return sig


class Aggregate:
    """Counts for the four rollups, accumulated in memory."""

    __slots__ = ("context", "error_context", "errors", "outcomes")

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, int, str], list[float]] = {}
        self.context: dict[tuple[int, str, str, str, str], int] = {}
        self.errors: dict[tuple[int, str, str, str], list[Any]] = {}
        self.error_context: dict[tuple[int, str, str, str, str, str], int] = {}

    def add(
        self,
        op_type: str,
        outcome: str,
        ended: float,
        duration: float | None,
        items: Iterable[tuple[str, str]],
        error_type: str | None,
        message: str | None,
    ) -> None:
        """Count one ended operation."""
        hour = int(ended // HOUR)
        k = (op_type, hour, outcome)
        acc = self.outcomes.get(k)
        if acc is None:
            self.outcomes[k] = [1, duration or 0.0]
        else:
            acc[0] += 1
            acc[1] += duration or 0.0
        ctx = self.context
        for attr, value in items:
            ck = (hour, op_type, attr, value, outcome)
            ctx[ck] = ctx.get(ck, 0) + 1
        if outcome == "failure":
            et = error_type or "Failure"
            sig = error_signature(message)
            ek = (hour, op_type, et, sig)
            e = self.errors.get(ek)
            if e is None:
                self.errors[ek] = [1, ended, ended, message or ""]
            else:
                e[0] += 1
                if ended < e[1]:
                    e[1] = ended
                if ended > e[2]:
                    e[2] = ended
            ec = self.error_context
            for attr, value in items:
                eck = (hour, op_type, et, sig, attr, value)
                ec[eck] = ec.get(eck, 0) + 1
