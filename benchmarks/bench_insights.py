"""Insights benchmark: generate_summary(days=7) over 1,000,000 operations.

    python benchmarks/bench_insights.py [--ops N] [--keep DIR]

Writes N operations in the last 7 days (and N/5 in the week before, for
cluster trends) through the real writer into a fresh SQLite file, with three
operation types, four context attributes (one numeric with hundreds of
values) and error messages full of ids, paths and numbers; then times
``generate_summary(days=7)``: the first call (including importing numpy and
scipy) and the best of three later calls on a fresh generator. Also prints
what was found, so a reader can check the work was real.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import learnkit

CONFIG = """\
[learning]
enabled = false
[storage]
path = "bench.db"
[thresholds.max_complexity]
value = 12
attribute = "complexity"
op_type = "process_issue"
min = 3
max = 12
"""
NOW = 1_790_000_000.0
DAY = 86400.0
ERRORS = [
    ("TestFailure", lambda r: f"{r.randint(1, 40)} tests failed in tests/test_"
                              f"{r.choice('abcdefgh')}{r.randint(1, 99)}.py::test_case_"
                              f"{r.randint(1, 500)}"),
    ("TimeoutError", lambda r: f"operation timed out after {r.randint(30, 600)}s waiting for "
                               f"runner-{r.randint(1, 64)}.ci.internal:{r.randint(2000, 9000)}"),
    ("MergeConflict", lambda r: f"conflict in src/{r.choice(['core', 'api', 'ui'])}/"
                                f"module_{r.randint(1, 300)}.py at line {r.randint(1, 2000)}"),
    ("RateLimited", lambda r: f"GitHub API rate limit exceeded, retry after "
                              f"{r.randint(1, 3600)} seconds (request id {r.getrandbits(64):x})"),
    ("lint.LintError", lambda r: f"E{r.randint(100, 999)} line too long ("
                                 f"{r.randint(101, 200)} > 100 characters) in file "
                                 f"'{r.choice('xyz')}{r.randint(1, 50)}.py'"),
]
AUTHORS = [f"dev{i}" for i in range(30)]
LANGS = ["python", "go", "rust", "typescript", "java"]


def generate(kit: learnkit.Kit, n: int, start: float, end: float, seed: int) -> None:
    r = random.Random(seed)
    for _ in range(n):
        t = r.uniform(start, end)
        op = r.choice(("process_issue", "run_tests", "open_pr"))
        cx = r.randint(1, 12)
        lang = r.choice(LANGS)
        p_fail = 0.08 + 0.05 * max(0, cx - 6) + (0.1 if lang == "go" else 0.0)
        if r.random() < p_fail:
            et, msg = r.choice(ERRORS)
            kit.record(op, outcome="failure", started_at=t - 30, ended_at=t, error_type=et,
                       error_message=msg(r), context={"complexity": cx, "lang": lang,
                       "files_changed": r.randint(1, 400), "author": r.choice(AUTHORS)})
        else:
            kit.record(op, outcome="success", started_at=t - 30, ended_at=t,
                       context={"complexity": cx, "lang": lang,
                                "files_changed": r.randint(1, 400), "author": r.choice(AUTHORS)})


async def fill(cfg: Path, n: int) -> float:
    t = time.perf_counter()
    async with learnkit.open(cfg, clock=lambda: NOW) as kit:
        chunk = 50_000
        for i in range(0, n, chunk):
            generate(kit, min(chunk, n - i), NOW - 7 * DAY, NOW, seed=i)
            await kit.flush()
        generate(kit, n // 5, NOW - 14 * DAY, NOW - 7 * DAY, seed=-1)
        await kit.flush()
        assert kit.stats.dropped == 0
    return time.perf_counter() - t


async def summarise(cfg: Path) -> tuple[float, float, learnkit.Summary]:
    async with learnkit.open(cfg, clock=lambda: NOW) as kit:
        t = time.perf_counter()
        summary = await kit.insights.generate_summary(days=7)
        first = time.perf_counter() - t
        best = float("inf")
        for _ in range(3):
            gen = learnkit.InsightsGenerator(kit.analytics, None)  # no cache
            t = time.perf_counter()
            summary = await gen.generate_summary(days=7)
            best = min(best, time.perf_counter() - t)
    return first, best, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="keep the database in this directory")
    args = ap.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="learnkit-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "learnkit.toml"
    cfg.write_text(CONFIG)
    for f in workdir.glob("bench.db*"):
        f.unlink()
    filled = asyncio.run(fill(cfg, args.ops))
    first, best, s = asyncio.run(summarise(cfg))
    print(f"wrote {args.ops:,} operations in the window (+{args.ops // 5:,} the week before) "
          f"in {filled:.1f} s")
    print(f"generate_summary(days=7): first call {first:.2f} s (imports numpy/scipy), "
          f"then best of 3 {best:.2f} s   (target <= 3 s)")
    print(f"  sample_size {s['sample_size']:,}, success rate {s['success_rate']:.1%}, "
          f"{s['tests']} hypotheses scanned, {len(s['error_clusters'])} error clusters, "
          f"{len(s['failure_patterns'])} patterns, {len(s['recommendations'])} recommendations")
    for c in s["error_clusters"][:6]:
        print(f"  cluster {c.count:>7,}  {c.error_type}: {c.template[:80]}")
    for p in s["failure_patterns"]:
        if p.kind != "error_cluster":
            print(f"  pattern ({p.confidence:.2f}) {p.description[:140]}")
    for r in s["recommendations"][:5]:
        print(f"  recommend {str(r)[:150]}")


if __name__ == "__main__":
    main()
