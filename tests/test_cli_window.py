"""The command line's one default window: learning.window_days, printed with the answers."""

from __future__ import annotations

import asyncio
import io
import random
import time
from pathlib import Path

import learnkit
from learnkit._cli import main

from .conftest import BASE_CONFIG

DAY = 86400.0


def planted(tmp_path: Path, window_days: int) -> Path:
    """learnkit.toml with ``window_days`` and the last 6 days of a complexity > 7 world."""
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG.replace("[learning]\n", f"[learning]\nwindow_days = {window_days}\n"))

    async def plant() -> None:
        r = random.Random(5)
        now = time.time()
        async with learnkit.open(p) as kit:
            for _ in range(600):
                cx = r.randint(1, 8)
                fail = r.random() < (0.9 if cx == 8 else 0.05)
                kit.record("process_issue", outcome="failure" if fail else "success",
                           started_at=now - r.uniform(60, 6 * DAY), context={"complexity": cx})

    asyncio.run(plant())
    return p


def run(*argv: str) -> str:
    out = io.StringIO()
    assert main(list(argv), out=out) == 0
    return out.getvalue()


def test_report_and_insights_default_to_window_days(tmp_path: Path) -> None:
    p = planted(tmp_path, 5)
    report = run("--config", str(p), "report")
    assert report.startswith("# learnkit report: last 5 days")
    assert "From the last 5 days of outcomes" in report
    assert run("--config", str(p), "insights").startswith("last 5 days:")
    assert "Recommendations (5 days)" in run("--config", str(p), "dashboard", "--plain")
    assert run("--config", str(p), "report", "--days", "30").startswith(
        "# learnkit report: last 30 days")


def test_thresholds_apply_says_its_window(tmp_path: Path) -> None:
    p = planted(tmp_path, 7)
    out = run("--config", str(p), "thresholds", "apply")
    assert "analysed the last 7 days (learning.window_days" in out
    assert "applied: " in out
