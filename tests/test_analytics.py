"""Success rates over windows with offsets, exact at their boundaries; trends; durations."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

import learnkit

from .conftest import T0, Clock

DAY = 86400.0

#: Every test here runs on each storage backend (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")


async def populate(kit: learnkit.Kit, n: int, seed: int, span_days: float = 40) -> list[tuple[float, str, str]]:
    rng = random.Random(seed)
    made = []
    for _ in range(n):
        end = T0 - rng.uniform(0, span_days * DAY)
        outcome = rng.choice(["success", "success", "failure", "cancelled", "skipped"])
        op_type = rng.choice(["a", "b"])
        kit.record(op_type, outcome=outcome, started_at=end - 1, ended_at=end)
        made.append((end, outcome, op_type))
    await kit.flush()
    return made


def brute(made: list[tuple[float, str, str]], start: float, end: float,
          op_type: str | None = None) -> float | None:
    s = sum(1 for t, o, ty in made if start <= t < end and o == "success"
            and (op_type is None or ty == op_type))
    f = sum(1 for t, o, ty in made if start <= t < end and o == "failure"
            and (op_type is None or ty == op_type))
    return s / (s + f) if s + f else None


class TestWindows:
    async def test_boundaries_are_exact(self, config_path: Path, clock: Clock) -> None:
        """An operation ending exactly at the window start counts; one at the end does not."""
        async with learnkit.open(config_path, clock=clock) as kit:
            start = T0 - 7 * DAY
            kit.record("x", outcome="success", started_at=start - 5, ended_at=start)
            kit.record("x", outcome="failure", started_at=T0 - 5, ended_at=T0)
            kit.record("x", outcome="failure", started_at=start - 6, ended_at=start - 1e-6)
            await kit.flush()
            assert await kit.analytics.get_success_rate(days=7) == 1.0
            clock.now = T0 + 1e-6  # the failure at T0 is now inside; the success at start is not
            assert await kit.analytics.get_success_rate(days=7) == 0.0
            assert await kit.analytics.get_outcome_counts(days=7) == {
                "success": 0, "failure": 1, "cancelled": 0, "abandoned": 0, "skipped": 0}
            # offset=7 days: [T0-14d, T0-7d) holds only the early failure
            clock.now = T0
            assert await kit.analytics.get_success_rate(days=7, offset=7) == 0.0

    @pytest.mark.parametrize("seed", [1, 2, 3])
    async def test_matches_brute_force_over_random_windows(
        self, config_path: Path, clock: Clock, seed: int
    ) -> None:
        """Rollups plus edge rows agree exactly with counting every row, for any window."""
        async with learnkit.open(config_path, clock=clock) as kit:
            made = await populate(kit, 3000, seed)
            rng = random.Random(seed + 100)
            for _ in range(40):
                days = rng.choice([0.01, 0.5, 1, 7, 7.3, 30, rng.uniform(0.001, 35)])
                offset = rng.choice([0, 1, 7, 14, 21, rng.uniform(0, 10)])
                clock.now = T0 - rng.uniform(0, 3 * 3600)
                start = clock.now - (offset + days) * DAY
                end = clock.now - offset * DAY
                assert await kit.analytics.get_success_rate(days, offset) == brute(made, start, end)
                got = await kit.analytics.get_success_rate(days, offset, op_type="b")
                assert got == brute(made, start, end, "b")

    async def test_none_without_data_and_other_outcomes_beside(
        self, config_path: Path, clock: Clock
    ) -> None:
        """No success or failure gives None; cancelled and skipped are counted beside it."""
        async with learnkit.open(config_path, clock=clock) as kit:
            assert await kit.analytics.get_success_rate(days=7) is None
            kit.record("x", outcome="cancelled", started_at=T0 - 100, ended_at=T0 - 50)
            kit.record("x", outcome="skipped", started_at=T0 - 100, ended_at=T0 - 50)
            await kit.flush()
            assert await kit.analytics.get_success_rate(days=7) is None
            counts = await kit.analytics.get_outcome_counts(days=7)
            assert counts == {"success": 0, "failure": 0, "cancelled": 1, "abandoned": 0,
                              "skipped": 1}

    @pytest.mark.parametrize(("days", "offset"), [(0, 0), (-1, 0), (7, -1), ("7", 0)])
    async def test_bad_window_is_value_error(
        self, kit: learnkit.Kit, days: object, offset: object
    ) -> None:
        """A non-positive or non-numeric window is refused with the argument named."""
        with pytest.raises(ValueError, match="days|offset"):
            await kit.analytics.get_success_rate(days, offset)  # type: ignore[arg-type]

    @pytest.mark.parametrize(("days", "step"), [(1e8, 1.0), (3661, 1.0), (10.0, 1e-4),
                                                (math.inf, 1.0), (5.0, 0.0), (-1.0, 1.0)])
    async def test_a_series_too_long_or_malformed_is_refused_at_once(
        self, kit: learnkit.Kit, days: float, step: float
    ) -> None:
        """A series holds at most ten years of daily windows (it used to build them
        all first: a hang and gigabytes for days = 1e8)."""
        with pytest.raises(ValueError, match="windows|days"):
            await kit.analytics.get_series(days, step_days=step)


class TestBreakdowns:
    async def test_by_type_and_rate_interval(self, config_path: Path, clock: Clock) -> None:
        """Rates per type match brute force; the Wilson interval contains the rate."""
        async with learnkit.open(config_path, clock=clock) as kit:
            made = await populate(kit, 2000, 7)
            by_type = await kit.analytics.get_success_rate_by_type(days=30)
            assert set(by_type) == {"a", "b"}
            for t in ("a", "b"):
                assert by_type[t] == brute(made, T0 - 30 * DAY, T0, t)
            r = await kit.analytics.get_rate(days=30)
            assert r.low is not None and r.high is not None and r.rate is not None
            assert r.low < r.rate < r.high
            assert r.n == r.successes + r.failures

    async def test_weekly_trend_oldest_first(self, config_path: Path, clock: Clock) -> None:
        """Week 1 is four weeks ago, week 4 the last seven days, as in the spec's table."""
        async with learnkit.open(config_path, clock=clock) as kit:
            rates = [0.65, 0.72, 0.78, 0.82]
            for week, rate in enumerate(rates):  # week 0 = oldest
                base = T0 - (4 - week) * 7 * DAY
                for i in range(100):
                    outcome = "success" if i < rate * 100 else "failure"
                    kit.record("w", outcome=outcome, started_at=base + 3600 + i,
                               ended_at=base + 3600 + i)
            await kit.flush()
            trend = await kit.analytics.get_weekly_trend(4)
            assert [r.rate for r in trend] == pytest.approx(rates)
            assert [r.end for r in trend][:-1] == [r.start for r in trend][1:]

    async def test_duration_percentiles(self, config_path: Path, clock: Clock) -> None:
        """Nearest-rank percentiles of durations in the window."""
        async with learnkit.open(config_path, clock=clock) as kit:
            for i in range(1, 101):
                kit.record("d", outcome="success", started_at=T0 - 1000, ended_at=T0 - 10,
                           duration=float(i))
            await kit.flush()
            p = await kit.analytics.get_duration_percentiles(days=1)
            assert p == {50: 50.0, 90: 90.0, 99: 99.0}
            assert await kit.analytics.get_duration_percentiles(days=1, offset=2) == {}

    async def test_spec_construction(self, kit: learnkit.Kit) -> None:
        """AnalyticsCollector(kit.database, logger) works as in the specification."""
        collector = learnkit.AnalyticsCollector(kit.database, None)
        kit.record("x", outcome="success", started_at=kit.now() - 10, ended_at=kit.now() - 5)
        await kit.flush()
        assert await collector.get_success_rate(days=7) == 1.0
