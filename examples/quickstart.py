"""learnkit end to end: instrument an orchestrator, then ask what it learned.

Run it from anywhere: it works in a temporary directory (or the one you pass)
with a fresh learnkit.toml and SQLite database, simulates four weeks of an
orchestrator processing issues, and prints the success rates it measured.
The simulated clock and issues come from ``learnkit.demo``; the
instrumentation below is what you would write in your own orchestrator.

    python examples/quickstart.py [DIR]
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import learnkit
from learnkit import track, tracked
from learnkit.demo import CONFIG, Issue, SimClock, TestFailure  # the demo's small world

DAY = 86400.0


@tracked("process_issue",
         key=lambda issue, rng: f"issue-{issue.number}",
         context=lambda issue, rng: {"complexity": issue.complexity})
async def process_issue(issue: Issue, rng: random.Random) -> None:
    async with track("run_tests", key=f"issue-{issue.number}",
                     complexity=issue.complexity) as op:
        p_fail = 0.08 + 0.09 * max(0, issue.complexity - 5)
        if rng.random() < p_fail:
            op.set(failing_tests=rng.randint(1, 12))
            failed, module = rng.randint(1, 12), rng.randint(1, 40)
            raise TestFailure(f"{failed} unit tests failed in test_module_{module}.py")


async def main(workdir: Path) -> None:
    cfg = workdir / "learnkit.toml"
    cfg.write_text(CONFIG)
    for f in workdir.glob("learnkit.db*"):
        f.unlink()
    clock = SimClock(1_790_000_000.0 - 28 * DAY)
    rng = random.Random(7)
    async with learnkit.open(cfg, clock=clock) as kit:
        number = 0
        for _day in range(28):
            for _ in range(60):
                number += 1
                issue = Issue(number, rng.randint(1, 12))
                try:
                    await process_issue(issue, rng)
                except TestFailure:
                    pass  # the orchestrator moves on; learnkit has recorded it
                clock.now += DAY / 60
        await kit.flush()

        print(f"learnkit quickstart: {number} issues in {workdir}\n")
        rate_7 = await kit.analytics.get_rate(days=7)
        rate_30 = await kit.analytics.get_rate(days=30)
        for label, r in (("last 7 days", rate_7), ("last 30 days", rate_30)):
            assert r.rate is not None and r.low is not None and r.high is not None
            print(f"  success rate, {label}: {r.rate:.1%} "
                  f"(95% CI {r.low:.1%}-{r.high:.1%}, n={r.n})")
        print("\n  by operation type (30 days):")
        for op_type, r in (await kit.analytics.get_rates_by_type(days=30)).items():
            print(f"    {op_type:<14} {r.rate:.1%} of {r.n}")
        print("\n  weekly trend:")
        for week, r in enumerate(await kit.analytics.get_weekly_trend(4), 1):
            print(f"    week {week}: {r.rate:.1%}  (n={r.n})")
        p = await kit.analytics.get_duration_percentiles(days=30, op_type="run_tests")
        print(f"\n  run_tests duration p50/p99: {p[50] * 1e6:.0f} us / {p[99] * 1e6:.0f} us")

        rows = await kit.database.store.fetchall(
            "SELECT error_type, context FROM operations WHERE outcome = 'failure'"
            " AND op_type = 'run_tests'")
        high = sum(json.loads(c)["complexity"] > 7 for _, c in rows)
        print(f"\n  failures by type: {dict(Counter(t for t, _ in rows))}")
        print(f"  {high / len(rows):.0%} of run_tests failures had complexity > 7")
        print(f"\n  stored: {kit.stats.written} rows, dropped: {kit.stats.dropped}")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="learnkit-"))
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(target))
