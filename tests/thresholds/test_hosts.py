"""Several processes, each standing for a host, learning together through one store."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import learnkit

from ..conftest import BASE_CONFIG, Backend, sql, threshold_value

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0
HOSTS, OPS = 4, 1500

#: Every test here runs on each storage backend (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

HOST = textwrap.dedent("""
    import asyncio, random, sys, time
    import learnkit

    async def main(config, tag, n):
        async with learnkit.open(config) as kit:
            kit._live._check_every = 0.0
            # Stop deciding between analyses, never in the middle of one.
            turn, learn_once = asyncio.Lock(), kit._learning.learn_once

            async def one_turn():
                async with turn:
                    return await learn_once()

            kit._learning.learn_once = one_turn
            r = random.Random(tag)
            for i in range(n):
                cx = r.randint(1, 8)
                fail = r.random() < (0.9 if cx >= 6 else 0.05)
                kit.record("x", outcome="failure" if fail else "success", key=f"{tag}-{i}",
                           started_at=time.time(), context={"complexity": cx})
                if i % 25 == 0:
                    await asyncio.sleep(0.01)
            assert await kit.flush()
            async with turn:
                kit._loop_task.cancel()  # this host stops deciding
            print("DONE", flush=True)
            sys.stdin.readline()  # every host has stopped: the value is final
            await asyncio.sleep(1.0)  # more than one re-read of shared values
            print("SEES", kit.thresholds["max_complexity"], flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


@pytest.mark.slow
def test_hosts_learn_together(tmp_path: Path, backend: Backend) -> None:
    """N hosts x M operations with the learning loop on: exact counts, each change applied
    once and starting where the previous one left the value, every host sees the result."""
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG.replace("enabled = false", "enabled = true\nanalysis_interval = 0.3"))

    async def seed() -> None:
        async with learnkit.open(p, learning_loop=False) as kit:
            now = kit.now()
            r = random.Random(3)
            for _ in range(3000):  # bands 8, 7 and 6 all below break-even
                cx = r.randint(1, 8)
                fail = r.random() < (0.9 if cx >= 6 else 0.05)
                kit.record("x", outcome="failure" if fail else "success",
                           started_at=r.uniform(now - 5 * DAY, now - 60),
                           context={"complexity": cx})

    asyncio.run(seed())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", HOST, str(p), f"h{k}", str(OPS)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for k in range(HOSTS)]
    try:
        for pr in procs:
            assert pr.stdout is not None and pr.stdout.readline().strip() == "DONE"
        seen = []
        for pr in procs:
            out, _ = pr.communicate("go\n", timeout=60)
            seen.append(out.strip())
        assert [pr.returncode for pr in procs] == [0] * HOSTS
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait()

    db = tmp_path / "learnkit.db"
    for k in range(HOSTS):
        (row,) = sql(db, f"SELECT count(*) AS n, count(DISTINCT key) AS d FROM operations"
                         f" WHERE key LIKE 'h{k}-%'")
        assert (row["n"], row["d"]) == (OPS, OPS)
    (row,) = sql(db, "SELECT count(*) AS n FROM operations")
    assert row["n"] == HOSTS * OPS + 3000
    (row,) = sql(db, "SELECT sum(n) AS n FROM rollup_hourly")
    assert row["n"] == HOSTS * OPS + 3000
    changes = [(r["old_value"], r["new_value"]) for r in sql(
        db, "SELECT old_value, new_value FROM threshold_changes ORDER BY at, id")]
    assert changes, "the hosts changed nothing"
    for (_, new), (old, _) in itertools.pairwise(changes):
        assert old == new  # no change applied twice, none lost
    assert all(abs(n - o) == 1 for o, n in changes)
    final = changes[-1][1]
    assert threshold_value(p) == final
    assert seen == [f"SEES {int(final)}"] * HOSTS
