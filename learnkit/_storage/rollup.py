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
later distinct strings of one attribute in one store, count as
``<other>``; lists, dicts and other objects are left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from .._insights.clustering import signature
from .._model import HOUR

__all__ = ["OTHER", "Aggregate", "Encoder"]

#: The value that stands for "a string we do not keep"; not valid JSON, so
#: it cannot collide with a real value.
OTHER = "<other>"
_MAX_STRINGS = 50
_MAX_STRING_LEN = 64

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
_NO_ITEMS: tuple[tuple[str, str], ...] = ()
_CACHE_LIMIT = 8192
_SIGNATURE_LIMIT = 20_000


def _sanitize(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return repr(value)


class Encoder:
    """Turns operations into row text and rollup keys; one per store.

    It remembers which strings each attribute has taken (to bound the
    rollups), recent contexts and recent error signatures. That memory
    belongs to one store: two kits in one process never share it.
    """

    def __init__(self) -> None:
        self._seen_strings: dict[tuple[str, str], set[str]] = {}
        self._signatures: dict[str, str] = {}
        self._contexts: dict[Any, tuple[str | None, bool, tuple[tuple[str, str], ...]]] = {}

    def bucket(self, op_type: str, attr: str, value: Any) -> str | None:
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
            seen = self._seen_strings.setdefault((op_type, attr), set())
            if value not in seen:
                if len(seen) >= _MAX_STRINGS:
                    return OTHER
                seen.add(value)
            return _dumps(value)
        return None

    def context_items(
        self, op_type: str, context: dict[str, Any] | None
    ) -> tuple[tuple[str, str], ...]:
        """(attribute, bucketed value) pairs of a context, values that can be kept."""
        if not context:
            return _NO_ITEMS
        out = []
        for k, v in context.items():
            b = self.bucket(op_type, str(k), v)
            if b is not None:
                out.append((str(k), b))
        return tuple(out)

    def encode_context(
        self, op_type: str, context: dict[str, Any] | None
    ) -> tuple[str | None, bool, tuple[tuple[str, str], ...]]:
        """JSON text for a context, whether anything was coerced, and its rollup items.

        Values that JSON cannot hold (objects, NaN, nested structures) are kept
        as their ``repr`` so nothing is lost and nothing raises.
        """
        if not context:
            return None, False, _NO_ITEMS
        cache = self._contexts
        try:
            # Contexts repeat ({"complexity": 7}); the types are part of the key
            # because 1, 1.0 and True are equal and hash alike but encode apart.
            key: Any = (op_type, tuple(context.items()), tuple(map(type, context.values())))
            hit = cache.get(key)
            if hit is not None:
                return hit
        except TypeError:  # an unhashable value
            key = None
        items = self.context_items(op_type, context)
        try:
            out = (_dumps(context), False, items)
        except (TypeError, ValueError):
            clean = {str(k): _sanitize(v) for k, v in context.items()}
            return _dumps(clean), True, items
        if key is not None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = out
        return out

    def error_signature(self, message: str | None) -> str:
        """The coarse masked signature of an error message (cached; bounded).

        Coarse: tokens holding digits are variables too (E512, v2, 0day), as in
        Drain's tree keys, so that the rollups stay small; templates are mined
        from these signatures when analysing.
        """
        if not message:
            return ""
        sigs = self._signatures
        sig = sigs.get(message)
        if sig is None:
            sig = signature(message[:2000], coarse=True)
            if len(sigs) >= _SIGNATURE_LIMIT:
                sigs.clear()
            sigs[message] = sig
        return sig

    def aggregate(self) -> Aggregate:
        """A fresh :class:`Aggregate` that signs error messages with this encoder."""
        return Aggregate(self.error_signature)


class Aggregate:
    """Counts for the four rollups, accumulated in memory.

    :meth:`add` does one dictionary update per operation, keyed by everything
    that matters; the four rollups are expanded from the distinct keys on
    first access, which is far fewer than the operations.
    """

    __slots__ = ("_context", "_error_context", "_errors", "_outcomes", "_raw", "_sign")

    def __init__(self, sign: Callable[[str | None], str]) -> None:
        self._sign = sign
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
            sig = self._sign(message)
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
