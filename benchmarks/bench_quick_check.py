"""Cost of the integrity check (``PRAGMA quick_check``) a kit runs when it opens a SQLite file.

Builds a learnkit database with N operations (default 1,000,000: schema and
marker by ``learnkit.open``, rows by one executemany, so building is quick),
then times ``PRAGMA quick_check(5)`` on a fresh connection, cold and warm
(page cache), and a whole ``learnkit.open`` + close. docs/reliability.md
quotes its figures.

    python benchmarks/bench_quick_check.py [N] [DIR]
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import learnkit

CONFIG = '[storage]\npath = "learnkit.db"\n'


def build(d: Path, n: int) -> Path:
    cfg = d / "learnkit.toml"
    cfg.write_text(CONFIG)

    async def schema() -> None:
        async with learnkit.open(cfg):
            pass

    asyncio.run(schema())
    db = d / "learnkit.db"
    conn = sqlite3.connect(db)
    r = random.Random(1)
    t0 = 1_790_000_000.0
    rows = []
    for i in range(n):
        start = t0 - r.uniform(0, 90 * 86400)
        fail = r.random() < 0.2
        rows.append((f"op{i % 20}", f"key-{i}", "failure" if fail else "success", start,
                     start + 1.5, 1.5, "TimeoutError" if fail else None,
                     f"timed out after 30 s on host-{i % 97}" if fail else None,
                     json.dumps({"complexity": i % 9, "region": f"r{i % 4}"})))
    conn.executemany(
        "INSERT INTO operations (op_type, key, outcome, started_at, ended_at, duration,"
        " error_type, error_message, context) VALUES (?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()
    return cfg


def quick_check(db: Path) -> float:
    conn = sqlite3.connect(db)
    t = time.perf_counter()
    assert [r[0] for r in conn.execute("PRAGMA quick_check(5)")] == ["ok"]
    took = time.perf_counter() - t
    conn.close()
    return took


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory(dir=sys.argv[2] if len(sys.argv) > 2 else None) as tmp:
        d = Path(tmp)
        t = time.perf_counter()
        cfg = build(d, n)
        size = (d / "learnkit.db").stat().st_size
        print(f"built {n:,} operations in {time.perf_counter() - t:.1f} s: {size / 2**20:.0f} MiB")
        checks = [quick_check(d / "learnkit.db") for _ in range(3)]
        print("quick_check(5): " + ", ".join(f"{c:.2f} s" for c in checks)
              + f" (first after the build; {size / 2**20 / min(checks):.0f} MiB/s warm)")

        async def reopen() -> None:
            async with learnkit.open(cfg):
                pass

        t = time.perf_counter()
        asyncio.run(reopen())
        print(f"learnkit.open + close on it: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
