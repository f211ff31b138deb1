"""The four-week simulation behind ``learnkit demo`` and examples/four_weeks.py.

Issues arrive with complexity 1 to 12; the harder the issue, the likelier
the orchestrator's change fails its tests. The orchestrator asks
:meth:`learnkit.Kit.admit` before each issue (``max_complexity`` starts at
8, as in the specification) and the learning loop analyses once per
simulated day, lowering the threshold when the evidence clears
``min_samples`` and ``confidence_threshold``.

Everything is real (the SQLite store, the writer, the analysis, the rewrites
of learnkit.toml); only time is simulated, through ``learnkit.open(clock=)``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import learnkit
from learnkit import tracked

__all__ = ["CONFIG", "MARKER", "P_SUCCESS", "Issue", "SimClock", "TestFailure", "check_folder",
           "simulate", "table"]

#: The first line of the demo's config: a folder whose learnkit.toml starts
#: with it belongs to the demo, which may replace it without ``force``.
MARKER = "# Written by `learnkit demo`: the next demo run in this folder replaces it."

CONFIG = f"""\
{MARKER}
[learning]
enabled = false             # the simulation drives the loop on simulated time
analysis_interval = 86400
min_samples = 10
confidence_threshold = 0.7
auto_apply = true
failure_cost = 1.0
explore = 0.05
window_days = 7

[storage]
path = "learnkit.db"

[thresholds.max_complexity]
value = 8
attribute = "complexity"
limit = "max"
op_type = "process_issue"
min = 3
max = 12
step = 1
description = "Largest issue complexity the orchestrator attempts"
"""

DAY = 86400.0
#: Chance that the change for an issue of this complexity passes its tests.
P_SUCCESS = {1: 0.97, 2: 0.95, 3: 0.93, 4: 0.90, 5: 0.80, 6: 0.65,
             7: 0.30, 8: 0.12, 9: 0.08, 10: 0.05, 11: 0.04, 12: 0.03}
ISSUES_PER_DAY = 30


class TestFailure(Exception):
    """The change broke the tests."""


class SimClock:
    """Simulated time for ``learnkit.open(clock=...)``: set or advance ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Issue:
    """A work item of the simulated orchestrator."""

    def __init__(self, number: int, complexity: int) -> None:
        self.number = number
        self.complexity = complexity


@tracked("process_issue",
         key=lambda issue, rng: f"issue-{issue.number}",
         context=lambda issue, rng: {"complexity": issue.complexity})
async def process_issue(issue: Issue, rng: random.Random) -> None:
    if rng.random() > P_SUCCESS[issue.complexity]:
        raise TestFailure(f"{rng.randint(1, 9)} unit tests failed for issue #{issue.number}")


def check_folder(workdir: Path, *, force: bool = False) -> None:
    """Refuse a folder holding a config or database the demo did not write.

    Raises:
        FileExistsError: ``workdir`` holds a learnkit.toml that is not the
            demo's, or a learnkit.db without the demo's config; ``force``
            skips the check.
    """
    if force:
        return
    cfg = workdir / "learnkit.toml"
    ours = False
    if cfg.exists():
        try:
            with cfg.open(encoding="utf-8", errors="replace") as f:
                ours = f.readline().rstrip("\n") == MARKER
        except OSError:
            ours = False
        if not ours:
            raise FileExistsError(
                f"{workdir} already holds {cfg.name}, which the demo did not write; the demo "
                "would replace it and its database. Run the demo in another folder "
                "(`learnkit demo DIR`), or pass --force to replace them"
            )
    dbs = sorted(p.name for p in workdir.glob("learnkit.db*"))
    if dbs and not ours:
        raise FileExistsError(
            f"{workdir} already holds {dbs[0]}, which the demo did not write; the demo would "
            "delete it. Run the demo in another folder (`learnkit demo DIR`), or pass --force "
            "to replace it"
        )


async def simulate(
    workdir: Path, seed: int = 7, *, start: float | None = None, progress: Any = None,
    force: bool = False,
) -> list[dict[str, float | int | None]]:
    """Run 28 simulated days in ``workdir``; return one row per week.

    Writes ``workdir/learnkit.toml`` and a fresh ``learnkit.db``, replacing
    those of an earlier demo run; a config or database the demo did not
    write is refused (:func:`check_folder`) unless ``force``. The four weeks
    end at ``start + 28 days``; by default they end at the last midnight
    (UTC), so the run is the same whatever the time of day. ``learnkit demo``
    shows its dashboard as of that moment, so its weeks are the table's. ``progress``,
    if given, is called with the day (1..28).
    """
    if start is None:
        start = (time.time() // DAY) * DAY - 28 * DAY
    check_folder(workdir, force=force)
    cfg = workdir / "learnkit.toml"
    cfg.write_text(CONFIG)
    for old in workdir.glob("learnkit.db*"):
        old.unlink()
    clock = SimClock(start)
    rng = random.Random(seed)
    rows = []
    async with learnkit.open(cfg, clock=clock, random=random.Random(seed + 1)) as kit:
        number = 0
        for day in range(28):
            for _ in range(ISSUES_PER_DAY):
                number += 1
                issue = Issue(number, rng.randint(1, 12))
                if kit.admit("process_issue", complexity=issue.complexity):
                    try:
                        await process_issue(issue, rng)
                    except TestFailure:
                        pass
                clock.now += DAY / ISSUES_PER_DAY
            await kit.flush()
            await kit.learn_once()  # the daily analysis of the learning loop
            if progress is not None:
                progress(day + 1)
            if day % 7 == 6:
                counts = await kit.analytics.get_outcome_counts(days=7)
                s, f, k = counts["success"], counts["failure"], counts["skipped"]
                offered = s + f + k
                rows.append({
                    "week": day // 7 + 1,
                    "success_rate": s / (s + f) if s + f else None,
                    "coverage": (s + f) / offered if offered else None,
                    "utility": (s - kit.config.learning.failure_cost * f) / offered,
                    "threshold": kit.thresholds["max_complexity"],
                    "attempted": s + f,
                    "offered": offered,
                })
        history = await kit.controller.history("max_complexity")
    for row in rows:
        week = int(row["week"] or 0)
        row["changes"] = sum(1 for h in history
                             if start + (week - 1) * 7 * DAY <= h.at < start + week * 7 * DAY)
    return rows


def table(rows: list[dict[str, float | int | None]]) -> str:
    lines = ["| Week | Success rate | Improvement | Coverage | Utility / offered | "
             "max_complexity at week end |",
             "|---|---|---|---|---|---|"]
    base = rows[0]["success_rate"]
    for r in rows:
        rate = r["success_rate"]
        assert rate is not None and base is not None
        imp = "baseline" if r["week"] == 1 else f"{(rate - base) * 100:+.0f} pts"
        lines.append(
            f"| Week {r['week']} | {rate:.1%} | {imp} | {r['coverage']:.0%} "
            f"({r['attempted']} of {r['offered']}) | {r['utility']:+.2f} | {r['threshold']} |"
        )
    return "\n".join(lines)

