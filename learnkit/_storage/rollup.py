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
two significant digits; strings longer than 64 characters count as
``<other>``; lists, dicts and other objects are left out.

Strings of one (op_type, attribute) are kept by a bounded *heavy-hitter
summary* per store (:class:`HeavyHitters`): up to :data:`MAX_STRINGS` values
are monitored and written as themselves, the rest as ``<other>``. A
monitored value's score is its *excess failures* (each failure adds
``1 - base``, each success subtracts ``base``, ``base`` being the running
failure rate of the attribute); when the summary is full, a failure of an
unmonitored value replaces the monitored value of lowest score if that score
is below one failure's worth. So a value that fails far more than the rest
keeps its slot among thousands, and the rollups still hold at most
``MAX_STRINGS + 1`` strings per attribute and hour. Whether an operation's
value is written as itself is decided *before* its own outcome is counted,
so the counts of a monitored value are not selected on their outcomes.

Pairs of attributes with few distinct values (at most :data:`PAIR_VALUES`
in this store, at most :data:`PAIR_ATTRS` of them per operation) are also
counted jointly, as the pseudo-attribute ``"a\x1fb"`` with the JSON array
``[value_a, value_b]``, so the scan can test conjunctions and stratify one
attribute by another. They live in the context rollup (no new table), never
in the error-context rollup.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Callable
from typing import Any

from .._insights.clustering import signature
from .._model import HOUR

__all__ = ["MAX_STRINGS", "OTHER", "PAIR_SEP", "Aggregate", "Encoder", "HeavyHitters"]

#: The value that stands for "a string we do not keep"; not valid JSON, so
#: it cannot collide with a real value.
OTHER = "<other>"
#: Strings monitored per (op_type, attribute) by the heavy-hitter summary.
MAX_STRINGS = 64
#: Joins the two attribute names of a pair's pseudo-attribute.
PAIR_SEP = "\x1f"
#: Attributes with more distinct values than this (in one store) are not paired.
PAIR_VALUES = 24
#: Paired attributes per operation (the first by name); pairs grow as its square.
PAIR_ATTRS = 6
_MAX_STRING_LEN = 64

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
_NO_ITEMS: tuple[tuple[str, str], ...] = ()
_CACHE_LIMIT = 8192
#: Context-cache lookups per verdict on its hit rate (below 1 in 4, it rests
#: for eight times as many contexts).
_CACHE_PROBE = 1024
_SIGNATURE_LIMIT = 20_000


def _sanitize(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return repr(value)


class HeavyHitters:
    """A bounded summary of one attribute's strings, ranked by excess failures.

    Up to ``capacity`` values are *monitored* (written as themselves). Once
    that many have been seen, every outcome also goes into a small sketch of
    excess failures (``depth`` rows of ``width`` cells; a value's estimate is
    the median of its cells), which remembers values that are not monitored:
    a failure of an unmonitored value whose estimated excess exceeds the
    lowest score among the monitored takes that one's slot. Memory is
    ``capacity + depth * width`` numbers, whatever the number of values.
    ``kept(v)`` says whether ``v`` is written as itself; ``observe(v,
    failed)`` counts its outcome afterwards.
    """

    __slots__ = ("_cells_of", "capacity", "depth", "failures", "scores", "sketch", "total",
                 "width")

    def __init__(self, capacity: int = MAX_STRINGS, width: int = 4096, depth: int = 5) -> None:
        self.capacity = capacity
        self.width = width
        self.depth = depth
        #: monitored value -> excess failures since it was monitored (plus its estimate then)
        self.scores: dict[str, float] = {}
        self.sketch: list[array[float]] | None = None
        self.failures = 0
        self.total = 0
        #: recent values' sketch cells (values repeat; hashing five tuples does not pay)
        self._cells_of: dict[str, list[int]] = {}

    @property
    def full(self) -> bool:
        return len(self.scores) >= self.capacity

    def kept(self, value: str) -> bool:
        scores = self.scores
        if value in scores:
            return True
        if len(scores) < self.capacity:
            scores[value] = 0.0
            return True
        return False

    def _cells(self, value: str) -> list[int]:
        cells = self._cells_of.get(value)
        if cells is None:
            if len(self._cells_of) >= 4 * self.capacity:
                self._cells_of.clear()
            w = self.width
            cells = self._cells_of[value] = [hash((i, value)) % w for i in range(self.depth)]
        return cells

    def estimate(self, value: str) -> float:
        """The sketch's estimate of a value's excess failures (0 before the sketch)."""
        if self.sketch is None:
            return 0.0
        return self._median(self.sketch, self._cells(value))

    @staticmethod
    def _median(sketch: list[array[float]], cells: list[int]) -> float:
        cur = sorted(row[c] for row, c in zip(sketch, cells, strict=True))
        d = len(cur)
        return cur[d // 2] if d % 2 else (cur[d // 2 - 1] + cur[d // 2]) / 2

    def observe(self, value: str, failed: bool) -> None:
        self.total += 1
        self.failures += failed
        # Laplace-smoothed running failure rate of the attribute.
        base = (self.failures + 1) / (self.total + 2)
        step = (1 - base) if failed else -base
        scores = self.scores
        sketch = self.sketch
        if sketch is None:
            if len(scores) < self.capacity:
                if value in scores:
                    scores[value] += step
                return
            sketch = self.sketch = [array("d", bytes(8 * self.width)) for _ in range(self.depth)]
        cells = self._cells(value)
        for row, c in zip(sketch, cells, strict=True):
            row[c] += step
        if value in scores:
            scores[value] += step
        elif failed:
            est = self._median(sketch, cells)
            low = min(scores, key=scores.__getitem__)
            if est > scores[low]:
                del scores[low]
                scores[value] = est


class _Attr:
    """What an encoder remembers of one (op_type, attribute)."""

    __slots__ = ("hh", "pair", "texts")

    def __init__(self) -> None:
        #: the heavy-hitter summary of its strings (made at the first string)
        self.hh: HeavyHitters | None = None
        #: distinct rollup keys seen, for pairing (None: too many to pair)
        self.pair: set[str] | None = set()
        #: monitored string -> its JSON text
        self.texts: dict[str, str] = {}


class Encoder:
    """Turns operations into row text and rollup keys; one per store.

    It remembers which strings each attribute has taken (to bound the
    rollups), recent contexts and recent error signatures. That memory
    belongs to one store: two kits in one process never share it.
    """

    def __init__(self) -> None:
        #: op_type -> attribute -> what is remembered of it
        self._attrs: dict[str, dict[str, _Attr]] = {}
        #: (type, value) -> rollup key of an int or a float (a pure function)
        self._numbers: dict[tuple[type, Any], str | None] = {}
        self._signatures: dict[str, str] = {}
        #: (op_type, context's JSON text) -> (its items, whether they may change)
        self._contexts: dict[tuple[str, str], tuple[tuple[tuple[str, str], ...], bool]] = {}
        #: lookups and hits of the context cache since the last probe; contexts
        #: left to encode without it
        self._lookups = self._hits = self._skip = 0

    def _attr(self, op_type: str, attr: str) -> _Attr:
        attrs = self._attrs.get(op_type)
        if attrs is None:
            attrs = self._attrs[op_type] = {}
        a = attrs.get(attr)
        if a is None:
            a = attrs[attr] = _Attr()
        return a

    @staticmethod
    def _number(value: Any) -> str | None:
        """The rollup key of a value that is not a string (pure)."""
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
        return None

    def _string(self, a: _Attr, value: str) -> str:
        """The rollup key of a string of one attribute: itself while monitored."""
        if len(value) > _MAX_STRING_LEN:
            return OTHER
        hh = a.hh
        if hh is None:
            hh = a.hh = HeavyHitters()
        scores = hh.scores
        if value not in scores:
            if len(scores) >= hh.capacity:
                return OTHER
            scores[value] = 0.0
            if len(scores) >= hh.capacity:
                self._contexts.clear()  # cached items of this attribute may change now
        texts = a.texts
        text = texts.get(value)
        if text is None:
            if len(texts) >= 4 * MAX_STRINGS:  # monitored values come and go
                texts.clear()
            text = texts[value] = _dumps(value)
        return text

    def bucket(self, op_type: str, attr: str, value: Any) -> str | None:
        """The rollup key (JSON text) of one context value; None to leave it out."""
        if isinstance(value, str):
            return self._string(self._attr(op_type, attr), value)
        return self._number(value)

    def observe(self, op_type: str, context: dict[str, Any] | None, outcome: str) -> None:
        """Count an operation's outcome in its strings' heavy-hitter summaries.

        Called by the write path after the operation's items were encoded, so
        that whether a value is kept never depends on its own outcome.
        """
        if not context or outcome not in ("success", "failure"):
            return
        attrs = self._attrs.get(op_type)
        if attrs is None:
            return
        failed = outcome == "failure"
        for k, v in context.items():
            if isinstance(v, str) and len(v) <= _MAX_STRING_LEN:
                a = attrs.get(k if type(k) is str else str(k))
                if a is not None and a.hh is not None:
                    a.hh.observe(v, failed)

    def _volatile(self, op_type: str, context: dict[str, Any]) -> bool:
        """Whether a context's items depend on a full summary (so are not cached)."""
        attrs = self._attrs.get(op_type)
        if attrs is None:
            return False
        for k, v in context.items():
            if isinstance(v, str):
                a = attrs.get(k if type(k) is str else str(k))
                if a is not None and a.hh is not None and a.hh.full:
                    return True
        return False

    def context_items(
        self, op_type: str, context: dict[str, Any] | None
    ) -> tuple[tuple[str, str], ...]:
        """(attribute, bucketed value) pairs of a context, values that can be kept.

        One pass over the context: each attribute's state is found once, numbers
        come from a cache of the pure bucketing, strings from their summary.
        """
        if not context:
            return _NO_ITEMS
        attrs = self._attrs.get(op_type)
        if attrs is None:
            attrs = self._attrs[op_type] = {}
        numbers = self._numbers
        out: list[tuple[str, str]] = []
        candidates: list[tuple[str, str, _Attr]] = []
        for k, v in context.items():
            if type(k) is not str:
                k = str(k)
            a = attrs.get(k)
            if a is None:
                a = attrs[k] = _Attr()
            t = type(v)
            if t is int or t is float:
                nk = (t, v)
                b = numbers.get(nk)
                if b is None:
                    b = self._number(v)
                    if len(numbers) >= _CACHE_LIMIT:
                        numbers.clear()
                    numbers[nk] = b
            elif isinstance(v, str):
                b = self._string(a, v)
            else:
                b = self._number(v)
            if b is None:
                continue
            out.append((k, b))
            if b != OTHER and a.pair is not None and PAIR_SEP not in k:
                candidates.append((k, b, a))
        if not candidates:
            return tuple(out)
        pairable: list[tuple[str, str]] = []
        for k, b, a in candidates:
            seen = a.pair
            if seen is None:  # made unpairable earlier in this context
                continue
            if b not in seen:
                if len(seen) >= PAIR_VALUES:
                    a.pair = None
                    self._contexts.clear()
                    continue
                seen.add(b)
            pairable.append((k, b))
        if len(pairable) > 1:
            pairable.sort()
            del pairable[PAIR_ATTRS:]
            for i, (a1, v1) in enumerate(pairable):
                for a2, v2 in pairable[i + 1:]:
                    out.append((f"{a1}{PAIR_SEP}{a2}", f"[{v1},{v2}]"))
        return tuple(out)

    def encode_context(
        self, op_type: str, context: dict[str, Any] | None, outcome: str | None = None
    ) -> tuple[str | None, bool, tuple[tuple[str, str], ...]]:
        """JSON text for a context, whether anything was coerced, and its rollup items.

        Values that JSON cannot hold (objects, NaN, nested structures) are kept
        as their ``repr`` so nothing is lost and nothing raises. ``outcome``
        (on the write path): counted in the heavy-hitter summaries afterwards.
        """
        out = self._encode(op_type, context)
        if outcome is not None:
            self.observe(op_type, context, outcome)
        return out

    def _encode(
        self, op_type: str, context: dict[str, Any] | None
    ) -> tuple[str | None, bool, tuple[tuple[str, str], ...]]:
        if not context:
            return None, False, _NO_ITEMS
        try:
            text = _dumps(context)
        except (TypeError, ValueError):
            items = self.context_items(op_type, context)
            clean = {str(k): _sanitize(v) for k, v in context.items()}
            return _dumps(clean), True, items
        cache = self._contexts
        if self._lookups >= _CACHE_PROBE:  # a verdict on the last lookups
            if self._hits * 4 < self._lookups:
                self._skip = _CACHE_PROBE * 8
                cache.clear()
            self._lookups = self._hits = 0
        if self._skip:
            # Recent contexts did not repeat (a value unique per operation, as a
            # duration or a token count): keeping them would cost more than it saves.
            self._skip -= 1
            return text, False, self.context_items(op_type, context)
        # Contexts repeat ({"complexity": 7}). Their JSON text tells apart what
        # equality does not (1, 1.0 and True; 0.0 and -0.0), but not keys of other
        # types than str ({1: 5} and {"1": 5}): those are never cached.
        if not all(type(k) is str for k in context):
            return text, False, self.context_items(op_type, context)
        self._lookups += 1
        key = (op_type, text)
        hit = cache.get(key)
        if hit is not None:
            self._hits += 1
            if hit[1]:  # its strings' summary is full: which are kept may change
                return text, False, self.context_items(op_type, context)
            return text, False, hit[0]
        items = self.context_items(op_type, context)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = (items, self._volatile(op_type, context))
        return text, False, items

    def error_signature(self, message: str | None) -> str:
        """The masked signature of an error message (cached; bounded).

        The same signature that clustering computes, so messages sharing one
        always share a cluster when templates are mined from the stored
        signatures at analysis. A traceback is reduced to its exception type,
        raising frame and message, so its length does not matter; other text is
        cut at 2,000 characters by ``signature``.
        """
        if not message:
            return ""
        sigs = self._signatures
        sig = sigs.get(message)
        if sig is None:
            sig = signature(message[:100_000])
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
                if PAIR_SEP in attr:
                    continue
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
