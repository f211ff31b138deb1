"""Success rates over windows, by type, week by week; outcome counts; durations."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import attrs

from ._insights.statistics import wilson_interval
from ._model import DAY, ENDED_OUTCOMES

if TYPE_CHECKING:
    from ._database import Database
    from ._storage.protocol import Store

__all__ = ["AnalyticsCollector", "Rate"]



@attrs.frozen
class Rate:
    """A success rate with its evidence, for one window."""

    #: Start of the window (Unix seconds, inclusive).
    start: float
    #: End of the window (Unix seconds, exclusive).
    end: float
    #: successes / (successes + failures); None when both are zero.
    rate: float | None
    #: Operations that ended in success.
    successes: int
    #: Operations that ended in failure.
    failures: int
    #: 95% Wilson interval of the rate (None when there is no data).
    low: float | None
    #: Upper end of the interval.
    high: float | None
    #: Every outcome counted in the window (cancelled, abandoned, skipped beside).
    counts: dict[str, int]

    @property
    def n(self) -> int:
        """Operations the rate is computed from."""
        return self.successes + self.failures


#: Windows one series may hold: ten years of days (more would only fill memory).
MAX_WINDOWS = 3660

def _window(now: float, days: float, offset: float) -> tuple[float, float]:
    for name, v in (("days", days), ("offset", offset)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a number of days, got {v!r}")
    if days <= 0:
        raise ValueError(f"days must be positive, got {days!r}")
    if offset < 0:
        raise ValueError(f"offset must be zero or positive, got {offset!r}")
    end = now - offset * DAY
    return end - days * DAY, end


def _rate(start: float, end: float, counts: dict[str, int]) -> Rate:
    s, f = counts.get("success", 0), counts.get("failure", 0)
    n = s + f
    low, high = wilson_interval(s, n) if n else (None, None)
    full = {o: counts.get(o, 0) for o in ENDED_OUTCOMES}
    return Rate(start, end, s / n if n else None, s, f, low, high, full)


class AnalyticsCollector:
    """Aggregates outcomes: ``AnalyticsCollector(kit.database, logger)``; ``kit.analytics``.

    Windows are ``[now - offset - days, now - offset)`` in days (fractions
    allowed), over operations that *ended* in the window. Whole hours are
    read from rollups, only the edges from rows.
    """

    def __init__(self, database: Database, logger: logging.Logger | None = None) -> None:
        self.database = database
        self.logger = logger or logging.getLogger("learnkit")

    @property
    def _store(self) -> Store:
        return self.database.store

    async def get_rate(
        self, days: float = 7, offset: float = 0, *, op_type: str | None = None,
        top_level: bool = False,
    ) -> Rate:
        """The success rate of a window with counts and its 95% interval.

        ``top_level``: only operations with no parent (a failed test inside a
        failed issue counts once, as the issue), read from rows rather than
        rollups.
        """
        return await self._rate_at(self.database.now(), days, offset, op_type, top_level)

    async def _rate_at(
        self, now: float, days: float, offset: float, op_type: str | None,
        top_level: bool = False,
    ) -> Rate:
        start, end = _window(now, days, offset)
        if top_level:
            return _rate(start, end, await self._store.top_level_counts(start, end,
                                                                        op_type=op_type))
        raw = await self._store.outcome_counts(start, end, op_type=op_type)
        return _rate(start, end, {o: n for (_, o), n in raw.items()})

    async def get_success_rate(
        self, days: float = 7, offset: float = 0, *, op_type: str | None = None,
        top_level: bool = False,
    ) -> float | None:
        """successes / (successes + failures) in the window; None when there are none.

        ``top_level``: over operations with no parent only (the headline rate
        the views show), so that a nested failure is not counted twice.
        """
        return (await self.get_rate(days, offset, op_type=op_type, top_level=top_level)).rate

    async def get_outcome_counts(
        self, days: float = 7, offset: float = 0, *, op_type: str | None = None
    ) -> dict[str, int]:
        """Operations per outcome in the window (every outcome, zeros included)."""
        return (await self.get_rate(days, offset, op_type=op_type)).counts

    async def get_rates_by_type(self, days: float = 7, offset: float = 0) -> dict[str, Rate]:
        """A :class:`Rate` per operation type that has any outcome in the window."""
        start, end = _window(self.database.now(), days, offset)
        raw = await self._store.outcome_counts(start, end, by_type=True)
        per: dict[str, dict[str, int]] = {}
        for (t, o), n in raw.items():
            per.setdefault(t, {})[o] = n
        return {t: _rate(start, end, c) for t, c in sorted(per.items())}

    async def get_success_rate_by_type(
        self, days: float = 7, offset: float = 0
    ) -> dict[str, float]:
        """Success rate per operation type; types with no success or failure are left out."""
        rates = await self.get_rates_by_type(days, offset)
        return {t: r.rate for t, r in rates.items() if r.rate is not None}

    async def get_duration_percentiles(
        self,
        days: float = 7,
        offset: float = 0,
        *,
        op_type: str | None = None,
        percentiles: tuple[float, ...] = (50, 90, 99),
    ) -> dict[float, float]:
        """Duration (seconds) at each percentile, nearest-rank; empty with no data."""
        for p in percentiles:
            if not 0 < p <= 100:
                raise ValueError(f"percentiles must lie in (0, 100], got {p!r}")
        start, end = _window(self.database.now(), days, offset)
        values = await self._store.durations(start, end, op_type=op_type)
        if not values:
            return {}
        n = len(values)
        return {p: values[max(0, math.ceil(p / 100 * n) - 1)] for p in percentiles}

    async def get_weekly_trend(
        self, weeks: int = 4, *, op_type: str | None = None, top_level: bool = False
    ) -> list[Rate]:
        """One :class:`Rate` per 7-day window, oldest first: week 1 is ``weeks`` weeks ago.

        The last entry is the most recent week (offset 0).
        """
        if isinstance(weeks, bool) or not isinstance(weeks, int) or weeks < 1:
            raise ValueError(f"weeks must be a positive integer, got {weeks!r}")
        now = self.database.now()  # one "now" so the weeks abut exactly
        return await self._series(now, 7, weeks, op_type, top_level)

    async def get_series(
        self, days: float, *, step_days: float = 1.0, top_level: bool = True
    ) -> list[Rate]:
        """One :class:`Rate` per ``step_days`` over the last ``days``, oldest first.

        Raises:
            ValueError: ``days`` or ``step_days`` is not a positive finite number,
                or they make more than :data:`MAX_WINDOWS` windows.
        """
        for name, v in (("days", days), ("step_days", step_days)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    0 < v < math.inf):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        now = self.database.now()
        steps = max(1, math.ceil(days / step_days))
        return await self._series(now, step_days, steps, None, top_level)

    async def _series(
        self, now: float, step_days: float, steps: int, op_type: str | None, top_level: bool
    ) -> list[Rate]:
        """The ``steps`` windows of ``step_days`` ending at ``now``, oldest first, each
        the window :meth:`get_rate` reads with ``offset = step_days * k``, all read
        in one statement."""
        if steps > MAX_WINDOWS:
            raise ValueError(
                f"{steps:,} windows asked for; at most {MAX_WINDOWS:,} (ten years of days): "
                "ask for fewer, or for longer steps")
        windows = [_window(now, step_days, step_days * k) for k in range(steps - 1, -1, -1)]
        counts = await self._store.outcome_counts_series(
            windows, op_type=op_type, top_level=top_level)
        return [_rate(a, b, c) for (a, b), c in zip(windows, counts, strict=True)]
