"""One atomic threshold change: history and learnkit.toml agree across processes (issue 13, item 4)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from ..conftest import BASE_CONFIG, sql, threshold_value

ROOT = Path(__file__).resolve().parents[2]


def test_processes_applying_back_to_back_keep_history_equal_to_file(tmp_path: Path) -> None:
    """Four processes commit 50 changes each, as fast as they can: every change in the
    history starts where the previous one left the value, and the file holds the last."""
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG.replace("min = 3\nmax = 12", "min = 0\nmax = 1000"))
    script = textwrap.dedent(f"""
        import asyncio, learnkit
        from learnkit._errors import ConcurrentEditError
        async def main():
            async with learnkit.open({str(p)!r}) as kit:
                ctl = kit.controller
                done = 0
                while done < 50:
                    await ctl._refresh()
                    cfg = ctl._db.live.config
                    old = cfg.thresholds["max_complexity"].value
                    new = old + 1 if old < 12 else old - 1
                    row = {{"at": kit.now(), "name": "max_complexity", "old_value": old,
                           "new_value": new, "kind": "manual", "confidence": None,
                           "reason": "test", "evidence": "[]", "samples": None,
                           "status": "applied"}}
                    try:
                        await ctl._commit_change(cfg, "max_complexity", new, row)
                    except ConcurrentEditError:
                        continue
                    done += 1
        asyncio.run(main())
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(4)]
    assert [pr.wait(timeout=240) for pr in procs] == [0, 0, 0, 0]
    changes = [(r["old_value"], r["new_value"]) for r in sql(
        tmp_path / "learnkit.db", "SELECT old_value, new_value FROM threshold_changes ORDER BY at, id")]
    assert len(changes) == 200
    assert changes[0][0] == 8
    for (_, new), (old, _) in itertools.pairwise(changes):
        assert old == new  # each change starts from where the previous one left the value
    assert threshold_value(p) == changes[-1][1]


def test_a_change_leaves_no_lock_file_beside_the_config(tmp_path: Path) -> None:
    """After changes, the config's directory holds what it held plus the documented
    database files: no learnkit.toml.lock, no temporary files."""
    import asyncio

    import learnkit

    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG)
    before = {x.name for x in tmp_path.iterdir()}

    async def main() -> None:
        async with learnkit.open(p) as kit:
            await kit.config.update(max_complexity=7)

    asyncio.run(main())
    assert threshold_value(p) == 7
    after = {x.name for x in tmp_path.iterdir()} - before
    assert after <= {"learnkit.db", "learnkit.db-wal", "learnkit.db-shm"}, after
