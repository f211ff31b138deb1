"""False recommendations under pure noise, over many seeds.

    python benchmarks/bench_noise.py [--seeds 100] [--ops 2000]

Outcomes are independent of eight attributes (numeric and categorical, one
of them the gated ``complexity``), two operation types, two weeks of data.
Prints how many seeds produced any recommendation at the default settings,
at a 30% and a 60% failure rate (60% puts every band below break-even).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from pathlib import Path

import learnkit

NOW = 1_790_000_000.0
CONFIG = """\
[learning]
enabled = false
[storage]
path = "learnkit.db"
[thresholds.max_complexity]
value = 8
attribute = "complexity"
min = 3
max = 12
"""


async def one(workdir: Path, seed: int, p_fail: float, n: int) -> list[str]:
    cfg = workdir / "learnkit.toml"
    cfg.write_text(CONFIG)
    r = random.Random(seed)
    async with learnkit.open(cfg, clock=lambda: NOW) as kit:
        for _ in range(n):
            t = NOW - r.uniform(0, 14 * 86400)
            fail = r.random() < p_fail
            ctx = {"complexity": r.randint(1, 12), "files": r.randint(1, 300),
                   "size": r.random(), "lang": r.choice("abcdef"), "team": r.choice("xyz"),
                   "flag": r.random() < 0.3, "region": r.choice(["eu", "us", "ap", "sa"]),
                   "retries": r.randint(0, 5)}
            kit.record(r.choice(["run_tests", "deploy"]), outcome="failure" if fail else "success",
                       started_at=t - 5, ended_at=t,
                       error_type=r.choice(["TestFailure", "Timeout"]) if fail else None,
                       error_message=f"{r.randint(1, 9)} tests failed" if fail else None,
                       context=ctx)
        await kit.flush()
        summary = await kit.insights.generate_summary(days=7)
        return [rec.action for rec in summary["recommendations"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--ops", type=int, default=2000)
    args = ap.parse_args()
    for p_fail in (0.3, 0.6):
        bad = 0
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as d:
                actions = asyncio.run(one(Path(d), seed, p_fail, args.ops))
            if actions:
                bad += 1
                print(f"  seed {seed}: {actions}")
        print(f"failure rate {p_fail:.0%}: {bad} of {args.seeds} seeds recommended anything")


if __name__ == "__main__":
    main()
