"""Aggregation shared by the writer (per batch) and analysis (window edges).

Each operation adds to four rollups, keyed by the hour it ended in:

- outcomes per (op_type, outcome), with summed durations;
- context values per (op_type, attribute, value, outcome, explored), where
  explored marks work attempted only because of exploration;
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
from typing import Any

from .._insights.clustering import signature
from .._model import HOUR

__all__ = ["OTHER", "Aggregate", "bucket"]

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
    """The masked signature of an error message (cached; bounded).

    The same signature that clustering computes, so messages sharing one
    always share a cluster when templates are mined from the stored
    signatures at analysis. A traceback is reduced to its exception type,
    raising frame and message, so its length does not matter; other text is
    cut at 2,000 characters by ``signature``.
    """
    if not message:
        return ""
    sig = _signatures.get(message)
    if sig is None:
        sig = signature(message[:100_000])
        if len(_signatures) >= 20_000:
            _signatures.clear()
        _signatures[message] = sig
    return sig


class Aggregate:
    """Counts for the four rollups, accumulated in memory.

    :meth:`add` does one dictionary update per operation, keyed by everything
    that matters; the four rollups are expanded from the distinct keys on
    first access, which is far fewer than the operations.
    """

    __slots__ = ("_context", "_error_context", "_errors", "_outcomes", "_raw")

    def __init__(self) -> None:
        self._raw: dict[tuple[Any, ...], list[Any]] = {}
        self._outcomes: dict[tuple[str, int, str], list[float]] | None = None
        self._context: dict[tuple[int, str, str, str, str, int], int] = {}
        self._errors: dict[tuple[int, str, str, str], list[Any]] = {}
        self._error_context: dict[tuple[int, str, str, str, str, str], int] = {}

    def add(
        self,
        op_type: str,
        outcome: str,
        ended: float,
        duration: float | None,
        items: tuple[tuple[str, str], ...],
        error_type: str | None,
        message: str | None,
        explored: bool = False,
    ) -> None:
        """Count one ended operation (``explored``: admitted by exploration)."""
        hour = int(ended // HOUR)
        if outcome == "failure":
            key: tuple[Any, ...] = (op_type, hour, outcome, items, explored, error_type, message)
        else:
            key = (op_type, hour, outcome, items, explored)
        acc = self._raw.get(key)
        if acc is None:
            self._raw[key] = [1, duration or 0.0, ended, ended]
        else:
            acc[0] += 1
            acc[1] += duration or 0.0
            if ended < acc[2]:
                acc[2] = ended
            elif ended > acc[3]:
                acc[3] = ended

    def _expand(self) -> dict[tuple[str, int, str], list[float]]:
        if self._outcomes is not None:
            return self._outcomes
        outcomes: dict[tuple[str, int, str], list[float]] = {}
        ctx, errs, ectx = self._context, self._errors, self._error_context
        for key, (n, dur, first, last) in self._raw.items():
            op_type, hour, outcome, items, explored = key[0], key[1], key[2], key[3], key[4]
            x = 1 if explored else 0
            ok = (op_type, hour, outcome)
            o = outcomes.get(ok)
            if o is None:
                outcomes[ok] = [n, dur]
            else:
                o[0] += n
                o[1] += dur
            for attr, value in items:
                ck = (hour, op_type, attr, value, outcome, x)
                ctx[ck] = ctx.get(ck, 0) + n
            if outcome != "failure":
                continue
            message = key[6]
            et = key[5] or "Failure"
            sig = error_signature(message)
            ek = (hour, op_type, et, sig)
            e = errs.get(ek)
            if e is None:
                errs[ek] = [n, first, last, message or ""]
            else:
                e[0] += n
                e[1] = min(e[1], first)
                if last > e[2]:
                    e[2], e[3] = last, message or ""
            for attr, value in items:
                eck = (hour, op_type, et, sig, attr, value)
                ectx[eck] = ectx.get(eck, 0) + n
        self._outcomes = outcomes
        return outcomes

    def drop_context(self) -> None:
        """Forget the context rollups (a caller that needs only outcomes and errors)."""
        self._expand()
        self._context.clear()
        self._error_context.clear()

    @property
    def outcomes(self) -> dict[tuple[str, int, str], list[float]]:
        """(op_type, hour, outcome) -> [operations, summed duration]."""
        return self._expand()

    @property
    def context(self) -> dict[tuple[int, str, str, str, str, int], int]:
        """(hour, op_type, attribute, value, outcome, explored) -> operations."""
        self._expand()
        return self._context

    @property
    def errors(self) -> dict[tuple[int, str, str, str], list[Any]]:
        """(hour, op_type, error_type, signature) -> [failures, first, last, example]."""
        self._expand()
        return self._errors

    @property
    def error_context(self) -> dict[tuple[int, str, str, str, str, str], int]:
        """(hour, op_type, error_type, signature, attribute, value) -> failures."""
        self._expand()
        return self._error_context
