"""Outcome counts over a series of windows in one statement (issue 14): the same counts
as one query per window, and as counting the rows, on every backend."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import learnkit
from learnkit._model import ENDED_OUTCOMES
from learnkit._storage.protocol import ImportRecord
from learnkit._storage.series import plan_series

from ..conftest import T0, Backend, Clock

DAY = 86400.0
HOUR = 3600.0

#: Every test here runs on each storage backend (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

Window = tuple[float, float]


def make_records(seed: int, n: int = 700) -> list[ImportRecord]:
    """Operations over the ten days before T0: nested ones, abandoned ones (which
    never ended), some ending exactly on an hour or on another operation's end."""
    rng = random.Random(seed)
    out: list[ImportRecord] = []
    ends: list[float] = []
    for i in range(1, n + 1):
        op_type = rng.choice(["a", "b", "c"])
        parent = rng.randrange(1, i) if i > 1 and rng.random() < 0.4 else None
        outcome = rng.choice(["success", "success", "failure", "failure", "cancelled",
                              "skipped", "abandoned"])
        pick = rng.random()
        if pick < 0.1:  # on an hour
            t = math.floor((T0 - rng.uniform(0, 10 * DAY)) / HOUR) * HOUR
        elif pick < 0.15 and ends:  # on another's end
            t = rng.choice(ends)
        else:
            t = T0 - rng.uniform(0, 10 * DAY)
        if outcome == "abandoned":
            started, ended, duration = t, None, None
        else:
            started, ended, duration = t - 5.0, t, 5.0
            ends.append(t)
        out.append(ImportRecord(
            i, parent, op_type, outcome, started, ended, duration, None, None, None, None,
            None, hashlib.blake2b(f"{seed}/{i}".encode(), digest_size=16).digest()))
    return out


def brute(records: Sequence[ImportRecord], start: float, end: float, *,
          op_type: str | None = None, top_level: bool = False) -> dict[str, int]:
    """Outcomes in [start, end) counted from the records themselves."""
    counts: dict[str, int] = {}
    for r in records:
        at = r.started_at if r.ended_at is None else r.ended_at
        if not start <= at < end:
            continue
        if (op_type and r.op_type != op_type) or (top_level and r.parent_id is not None):
            continue
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return counts


def random_windows(rng: random.Random, times: Sequence[float]) -> list[Window]:
    """A series of windows: usually adjacent steps of one length ending mid-hour,
    sometimes with gaps and overlaps, bounds sometimes on an operation's end."""
    kind = rng.random()
    if kind < 0.15:  # arbitrary windows: gaps, overlaps, empty ones, bounds on rows
        out = []
        for _ in range(rng.randint(1, 12)):
            a = rng.choice(times) if rng.random() < 0.3 else T0 - rng.uniform(0, 11 * DAY)
            out.append((a, a + rng.choice([0.0, rng.uniform(0, 2 * HOUR),
                                           rng.uniform(0, 3 * DAY)])))
        return out
    step = rng.choice([7 * DAY, DAY, 0.37 * DAY, 1.5 * HOUR, 0.2 * HOUR, HOUR,
                       rng.uniform(60, 2 * DAY)])
    steps = rng.randint(1, min(60, int(11 * DAY / step) + 1))
    if rng.random() < 0.2:
        now = rng.choice(times)
    elif rng.random() < 0.2:
        now = math.floor(T0 / HOUR) * HOUR - rng.randrange(0, 48) * HOUR
    else:
        now = T0 - rng.uniform(0, DAY)
    ends = [now - step * k for k in range(steps - 1, -1, -1)]
    return [(e - step, e) for e in ends]


async def imported(config_path: Path, records: Sequence[ImportRecord]) -> None:
    async with learnkit.open(config_path) as kit:
        result = await kit.database.store.import_operations(records)
        assert result.added == len(records)


class TestAgainstOneQueryPerWindow:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    async def test_random_series(self, config_path: Path, seed: int) -> None:
        """Each window of a series has exactly the counts of outcome_counts (or
        top_level_counts) for it, and of counting the rows: windows ending mid-hour,
        within one hour, on an hour, on a row; abandoned and nested operations."""
        records = make_records(seed)
        await imported(config_path, records)
        times = [r.ended_at for r in records if r.ended_at is not None]
        rng = random.Random(seed + 1000)
        async with learnkit.open(config_path) as kit:
            store = kit.database.store
            for _ in range(25):
                windows = random_windows(rng, times)
                for op_type in (None, "b"):
                    got = await store.outcome_counts_series(windows, op_type=op_type)
                    top = await store.outcome_counts_series(
                        windows, op_type=op_type, top_level=True)
                    assert len(got) == len(top) == len(windows)
                    for (a, b), g, t in zip(windows, got, top, strict=True):
                        one = await store.outcome_counts(a, b, op_type=op_type)
                        assert g == {o: n for (_, o), n in one.items()}, (a, b, op_type)
                        assert g == brute(records, a, b, op_type=op_type), (a, b, op_type)
                        assert t == await store.top_level_counts(a, b, op_type=op_type)
                        assert t == brute(records, a, b, op_type=op_type, top_level=True)

    @pytest.mark.parametrize("seed", [7, 8])
    async def test_random_series_after_pruning(self, config_path: Path, seed: int) -> None:
        """With the rows of old hours pruned (their rollups stay), each window still
        has exactly the counts of one outcome_counts call for it: a pruned hour split
        between two windows counts for neither, as reading both parts from rows does."""
        records = make_records(seed)
        await imported(config_path, records)
        rng = random.Random(seed)
        async with learnkit.open(config_path) as kit:
            store = kit.database.store
            cut = T0 - rng.uniform(4, 6) * DAY
            assert await store.prune(cut) > 0
            assert await store.outcome_counts(T0 - 11 * DAY, cut - HOUR)  # rollups stay
            times = [r.ended_at for r in records if r.ended_at is not None]
            for _ in range(25):
                windows = random_windows(rng, times)
                if rng.random() < 0.5:  # boundaries around the first kept hour
                    step = rng.choice([0.3 * HOUR, HOUR, 2.5 * HOUR, DAY])
                    e = math.floor(cut / HOUR) * HOUR + rng.uniform(-2, 2) * HOUR
                    windows = [(e + step * k, e + step * (k + 1)) for k in range(-3, 3)]
                for op_type in (None, "a"):
                    got = await store.outcome_counts_series(windows, op_type=op_type)
                    for (a, b), g in zip(windows, got, strict=True):
                        one = await store.outcome_counts(a, b, op_type=op_type)
                        assert g == {o: n for (_, o), n in one.items()}, (a, b, op_type)

    @pytest.mark.sqlite_only
    async def test_chunked_statements(
        self, config_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A series too long for one statement's parameters is cut into statements of a
        few windows each, hours shared across a cut included: the same counts."""
        records = make_records(9)
        await imported(config_path, records)
        rng = random.Random(9)
        times = [r.ended_at for r in records if r.ended_at is not None]
        async with learnkit.open(config_path) as kit:
            store = kit.database.store
            series = [random_windows(rng, times) for _ in range(20)]
            whole = [await store.outcome_counts_series(w, op_type=t)
                     for w in series for t in (None, "c")]
            monkeypatch.setattr(store, "_series_windows", 3)
            assert whole == [await store.outcome_counts_series(w, op_type=t)
                             for w in series for t in (None, "c")]
            for w in series:
                for (a, b), g in zip(w, await store.outcome_counts_series(w), strict=True):
                    assert g == brute(records, a, b)

    async def test_empty_and_bad_windows(self, kit: learnkit.Kit) -> None:
        """No windows, empty windows, nothing stored: empty counts. A window ending
        before it starts, or not finite, is a ValueError."""
        store = kit.database.store
        assert await store.outcome_counts_series([]) == []
        assert await store.outcome_counts_series([(T0, T0), (T0, T0 + DAY)]) == [{}, {}]
        assert await store.outcome_counts_series([(T0, T0 + DAY)], top_level=True) == [{}]
        with pytest.raises(ValueError, match="end before"):
            await store.outcome_counts_series([(T0, T0 - 1)])
        with pytest.raises(ValueError, match="finite"):
            await store.outcome_counts_series([(T0, math.inf)])


class TestAnalytics:
    @pytest.mark.parametrize("seed", [4, 5])
    async def test_trend_and_series_as_one_window_at_a_time(
        self, config_path: Path, clock: Clock, seed: int
    ) -> None:
        """get_weekly_trend and get_series give exactly the Rates get_rate gives for
        each of their windows (start, end, counts), fractional steps included."""
        records = make_records(seed, 500)
        await imported(config_path, records)
        rng = random.Random(seed)
        async with learnkit.open(config_path, clock=clock) as kit:
            a = kit.analytics
            for _ in range(6):
                clock.now = T0 - rng.uniform(0, 2 * DAY)
                for op_type in (None, "a"):
                    for top in (False, True):
                        trend = await a.get_weekly_trend(2, op_type=op_type, top_level=top)
                        assert trend == [await a.get_rate(7, 7 * w, op_type=op_type,
                                                          top_level=top)
                                         for w in (1, 0)]
                step = rng.choice([1.0, 0.5, 0.1, 1 / 24, 1 / 3, rng.uniform(0.01, 2)])
                days = rng.uniform(step, 9)
                for top in (False, True):
                    series = await a.get_series(days, step_days=step, top_level=top)
                    steps = max(1, math.ceil(days / step))
                    assert series == [await a.get_rate(step, step * k, top_level=top)
                                      for k in range(steps - 1, -1, -1)]
            assert sum(r.n for r in await a.get_weekly_trend(3)) > 0


class TestStatements:
    @pytest.mark.parametrize("top_level", [False, True])
    async def test_one_statement_whatever_the_weeks(
        self, config_path: Path, clock: Clock, backend: Backend,
        monkeypatch: pytest.MonkeyPatch, top_level: bool,
    ) -> None:
        """A trend of 2 weeks and one of 52 cost the same: one query through the store's
        reading path (fetchall, or one pooled connection on PostgreSQL, which turns
        JIT off around the statement) and, on SQLite, one statement run."""
        await imported(config_path, make_records(6, 200))
        async with learnkit.open(config_path, clock=clock) as kit:
            store = kit.database.store
            issued: list[str] = []

            def counting(name: str) -> None:
                real = getattr(store, name)

                async def wrapper(*args: Any, **kwargs: Any) -> Any:
                    issued.append(name)
                    return await real(*args, **kwargs)

                monkeypatch.setattr(store, name, wrapper)

            counting("fetchall")
            if backend.name == "postgresql":
                counting("_run")
            traced: list[str] = []
            if backend.name == "sqlite":  # what the driver ran, not only what was asked
                await store._reader().set_trace_callback(traced.append)  # type: ignore[attr-defined]
            per_call = []
            for weeks in (2, 52):
                issued.clear()
                traced.clear()
                trend = await kit.analytics.get_weekly_trend(weeks, top_level=top_level)
                assert len(trend) == weeks
                per_call.append((len(issued), len(traced)))
            assert per_call[0] == per_call[1]
            assert per_call[0][0] == 1
            if backend.name == "sqlite":
                assert per_call[0][1] == 1
                await store._reader().set_trace_callback(None)  # type: ignore[attr-defined]


@pytest.mark.sqlite_only  # no store: once is enough
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, 2e9, allow_subnormal=False), st.floats(0, 3e5)),
                max_size=8),
       st.booleans())
def test_plan_tiles_each_window(windows: list[tuple[float, float]], top_level: bool) -> None:
    """The ranges planned for a window cover it exactly, without overlap: whole hours
    (never with top_level), row ranges inside it, and of an hour split with the
    window next to it either the shorter part (read from rows) or the rest."""
    wins = [(a, a + d) for a, d in windows]
    plan = plan_series(wins, top_level=top_level)
    assert plan.windows == len(wins)
    assert not (top_level and (plan.hours or plan.shared))
    pieces: list[list[tuple[float, float]]] = [[] for _ in wins]
    for j, h0, h1 in plan.hours:
        pieces[j].append((h0 * HOUR, h1 * HOUR))
    for tag, x, y in plan.rows:
        if tag >= 0:
            pieces[tag].append((x, y))
            continue
        read, rest, h = plan.shared[-1 - tag]
        assert abs(read - rest) == 1 and h * HOUR <= x < y <= (h + 1) * HOUR
        other = (h * HOUR, x) if y == (h + 1) * HOUR else (y, (h + 1) * HOUR)
        assert other[0] < other[1] and y - x <= other[1] - other[0]  # the shorter part
        pieces[read].append((x, y))
        pieces[rest].append(other)
    assert sorted(-1 - t for t, _, _ in plan.rows if t < 0) == list(range(len(plan.shared)))
    for (a, b), got in zip(wins, pieces, strict=True):
        got.sort()
        assert all(x < y for x, y in got)
        if a == b:
            assert got == []
            continue
        assert got[0][0] == a and got[-1][1] == b
        assert all(p[1] == q[0] for p, q in itertools.pairwise(got))


@pytest.mark.sqlite_only
def test_outcomes_are_every_ended_outcome() -> None:
    """The SQLite statement counts a fixed list of outcomes: every one a window holds."""
    assert set(ENDED_OUTCOMES) == {"success", "failure", "cancelled", "abandoned", "skipped"}
    assert sqlite3.sqlite_version_info >= (3, 30)  # FILTER on aggregates
