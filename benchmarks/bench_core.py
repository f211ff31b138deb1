"""Core benchmark: @tracked overhead and writer throughput against raw sqlite3.

    python benchmarks/bench_core.py [--calls N] [--rows N]

Prints, from one run on this machine:

1. Added cost per call of ``@tracked`` on a trivial async function against the
   bare call, for success and for failure, two ways:
   - *caller path*: what the call itself does (the writer is held back, so
     only enqueueing is timed);
   - *end to end*: the writer runs on the same event loop and its work (row
     building, SQLite) is amortised into the figure.
2. Writer throughput (rows/s) for the same rows against raw ``sqlite3``
   ``executemany`` into the same schema with the same batch size, as a ratio.

Best of several repeats; timings are wall clock, so a busy machine reads slower.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import learnkit
from learnkit._model import Operation
from learnkit._storage.rollup import Encoder
from learnkit._storage.schema import MIGRATIONS
from learnkit._storage.sqlite import _INSERT, _ROLLUP

CONFIG = '[learning]\nenabled = false\n[storage]\npath = "bench.db"\n'


async def bare_ok() -> int:
    return 1


async def bare_fail() -> None:
    raise ValueError("boom")


tracked_ok = learnkit.tracked("bench_ok")(bare_ok)
tracked_fail = learnkit.tracked("bench_fail")(bare_fail)


async def time_calls(fn, n: int, failing: bool) -> float:  # type: ignore[no-untyped-def]
    # Yield to the loop every 100 calls, as any real workload does, so that
    # the writer task gets to run (a loop that never yields starves it).
    t = time.perf_counter()
    if failing:
        for i in range(n):
            try:
                await fn()
            except ValueError:
                pass
            if i % 100 == 0:
                await asyncio.sleep(0)
    else:
        for i in range(n):
            await fn()
            if i % 100 == 0:
                await asyncio.sleep(0)
    return (time.perf_counter() - t) / n * 1e6


async def overhead(workdir: Path, n: int, paused: bool) -> dict[str, float]:
    cfg = workdir / "learnkit.toml"
    cfg.write_text(CONFIG)
    out: dict[str, float] = {}
    async with learnkit.open(cfg) as kit:
        w = kit._writer
        if paused:  # hold the writer back: time the caller's path alone
            w.batch_size = w.max_queue = 10**9
            w.flush_interval = 3600.0
        for name, bare, tr, failing in (
            ("success", bare_ok, tracked_ok, False),
            ("failure", bare_fail, tracked_fail, True),
        ):
            best_bare = best_tr = float("inf")
            for _ in range(5):
                best_bare = min(best_bare, await time_calls(bare, n, failing))
                best_tr = min(best_tr, await time_calls(tr, n, failing))
                if paused:
                    await kit.flush()  # empty the queue between repeats (untimed)
            out[name] = best_tr - best_bare
            out[name + "_bare"] = best_bare
        await kit.flush()
        assert kit.stats.dropped == 0
    for f in workdir.glob("bench.db*"):
        f.unlink()
    return out


def make_ops(n: int) -> list[Operation]:
    ops = []
    for i in range(n):
        op = Operation("process_issue", f"issue-{i}", {"complexity": i % 12},
                       1_790_000_000.0 + i * 0.01, 0.0, None)
        op.ended_at = op.started_at + 0.5
        op.duration = 0.5
        if i % 4 == 0:
            op.outcome, op.error_type, op.error_message = "failure", "TestFailure", "tests failed"
        else:
            op.outcome = "success"
        ops.append(op)
    return ops


async def writer_rate(workdir: Path, n: int, batch: int) -> float:
    cfg = workdir / "learnkit.toml"
    cfg.write_text(CONFIG + f"batch_size = {batch}\nmax_queue = {n * 2}\n")
    ops = make_ops(n)
    async with learnkit.open(cfg) as kit:
        w = kit._writer
        w.flush_interval = 3600.0
        w.batch_size = 10**9  # enqueue everything first; then time the writing alone
        for op in ops:
            w.submit(op)
        w.batch_size = batch
        t = time.perf_counter()
        assert await kit.flush()
        elapsed = time.perf_counter() - t
        assert kit.stats.written == n
    for f in workdir.glob("bench.db*"):
        f.unlink()
    return n / elapsed


def raw_rate(workdir: Path, n: int, batch: int) -> float:
    db = workdir / "raw.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for m in MIGRATIONS:
        conn.executescript(m)
    ops = make_ops(n)
    encode_context = Encoder().encode_context
    # The same rows, already as tuples (context already JSON): raw executemany
    # does none of the writer's work of turning operations into rows.
    rows = [
        (i + 1, op.op_type, op.key, op.outcome, op.started_at, op.ended_at, op.duration,
         op.error_type, op.error_message, encode_context(op.op_type, op.context)[0], None, 1, None)
        for i, op in enumerate(ops)
    ]
    rollup = [("process_issue", int(op.ended_at // 3600), op.outcome, 1, 0.5)  # type: ignore[operator]
              for op in ops[:1]]
    t = time.perf_counter()
    for k in range(0, n, batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, rows[k:k + batch])
        conn.executemany(_ROLLUP, rollup)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t
    conn.close()
    for f in workdir.glob("raw.db*"):
        f.unlink()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        workdir = Path(d)
        caller = asyncio.run(overhead(workdir, args.calls, paused=True))
        e2e = asyncio.run(overhead(workdir, args.calls, paused=False))
        batch = learnkit.StorageConfig().batch_size
        ours = max(asyncio.run(writer_rate(workdir, args.rows, batch)) for _ in range(3))
        raw = max(raw_rate(workdir, args.rows, batch) for _ in range(3))
    result = {
        "bare_call_us": round(caller["success_bare"], 3),
        "added_us_success_caller_path": round(caller["success"], 3),
        "added_us_failure_caller_path": round(caller["failure"], 3),
        "added_us_success_end_to_end": round(e2e["success"], 3),
        "added_us_failure_end_to_end": round(e2e["failure"], 3),
        "writer_rows_per_s": round(ours),
        "raw_executemany_rows_per_s": round(raw),
        "writer_vs_raw": round(ours / raw, 3),
    }
    print(f"@tracked on a trivial async function ({args.calls} calls, best of 5):")
    print(f"  bare call                       {caller['success_bare']:.3f} us")
    print(f"  added, success, caller path     {caller['success']:.3f} us   (target <= 3)")
    print(f"  added, failure, caller path     {caller['failure']:.3f} us   (target <= 10)")
    print(f"  added, success, end to end      {e2e['success']:.3f} us   (writer amortised in)")
    print(f"  added, failure, end to end      {e2e['failure']:.3f} us")
    print(f"writer, {args.rows} rows, batch {batch} (best of 3):")
    print(f"  learnkit writer                 {ours:,.0f} rows/s")
    print(f"  raw sqlite3 executemany         {raw:,.0f} rows/s")
    print(f"  ratio                           {ours / raw:.1%}   (target >= 70%)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
