"""storage.retention_days: raw rows go, rollups and the threshold history stay (both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest

import learnkit

from ..conftest import T0, Clock, sql, write_config

DAY = 86400.0

#: Every test here runs on each storage backend (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")


async def test_prune_keeps_rollups_and_history(tmp_path: Path) -> None:
    """Rows older than retention_days are deleted; whole-hour counts and changes remain."""
    cfg = write_config(tmp_path, retention_days=5.0)
    clock = Clock()
    async with learnkit.open(cfg, clock=clock, learning_loop=False) as kit:
        for i in range(300):
            kit.record("x", outcome="failure" if i % 3 else "success",
                       started_at=T0 - 10 * DAY + i * 60, context={"complexity": i % 9},
                       error_message="boom")
            kit.record("x", outcome="success", started_at=T0 - DAY + i * 60)
        await kit.flush()
        old = (T0 - 11 * DAY, T0 - 8 * DAY)
        before = await kit.database.store.outcome_counts(*old)
        await kit.database.store.record_change({
            "at": T0 - 9 * DAY, "name": "max_complexity", "old_value": 8, "new_value": 7,
            "kind": "lower", "status": "applied"})
        assert await kit.prune() == 300
        assert await kit.prune() == 0
        assert sum((await kit.database.store.outcome_counts(*old)).values()) == 300
        assert await kit.database.store.outcome_counts(*old) == before
        assert len(await kit.controller.history()) == 1
        assert await kit.analytics.get_success_rate(days=12) is not None
    (row,) = sql(tmp_path / "learnkit.db", "SELECT count(*) AS n FROM operations")
    assert row["n"] == 300
    (row,) = sql(tmp_path / "learnkit.db", "SELECT min(started_at) AS t FROM operations")
    assert row["t"] >= T0 - 5 * DAY


async def test_no_retention_keeps_everything(kit: learnkit.Kit) -> None:
    kit.record("x", outcome="success", started_at=1000.0)
    await kit.flush()
    assert await kit.prune() == 0
