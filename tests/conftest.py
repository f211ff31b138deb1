"""Fixtures: a real learnkit.toml and SQLite file in tmp_path, and a settable clock."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import learnkit

BASE_CONFIG = """\
[learning]
enabled = false
min_samples = 10
confidence_threshold = 0.7

[storage]
path = "learnkit.db"
flush_interval = 0.02

[thresholds.max_complexity]
value = 8
attribute = "complexity"
limit = "max"
min = 3
max = 12
step = 1
description = "Largest issue complexity the orchestrator attempts"
"""

T0 = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC, a fixed "now" for windows


class Clock:
    """A settable clock: ``clock()`` returns ``clock.now``."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_config(tmp_path: Path, text: str = BASE_CONFIG, **storage: Any) -> Path:
    """Write learnkit.toml into tmp_path, with extra [storage] keys appended."""
    extra = "".join(f"{k} = {v!r}\n" for k, v in storage.items())
    text = text.replace('path = "learnkit.db"\n', 'path = "learnkit.db"\n' + extra)
    p = tmp_path / "learnkit.toml"
    p.write_text(text)
    return p


def rows(db: Path, where: str = "1") -> list[dict[str, Any]]:
    """Every operation row as a dict, read with plain sqlite3 (not learnkit)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM operations WHERE {where} ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def kit(config_path: Path) -> AsyncIterator[learnkit.Kit]:
    async with learnkit.open(config_path) as k:
        yield k

