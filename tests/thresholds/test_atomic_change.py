"""One atomic threshold change: history and learnkit.toml agree across processes (issue 13, item 4)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ..conftest import BASE_CONFIG, sql, threshold_value

ROOT = Path(__file__).resolve().parents[2]


def test_processes_applying_back_to_back_keep_history_equal_to_file(tmp_path: Path) -> None:
    """Four processes commit 50 changes each, as fast as they can: every change in the
    history starts where the previous one left the value, and the file holds the last."""
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG.replace("min = 3\nmax = 12", "min = 0\nmax = 1000"))
    script = textwrap.dedent(f"""
        import asyncio, learnkit
        from learnkit._errors import ConcurrentEditError, StoreUnavailableError
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
                    except (ConcurrentEditError, StoreUnavailableError):
                        continue  # both say: try again (a busy machine makes the second)
                    done += 1
        asyncio.run(main())
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    errors = [pr.communicate(timeout=240)[1] for pr in procs]
    assert [pr.returncode for pr in procs] == [0, 0, 0, 0], [e[-2000:] for e in errors]
    changes = [(r["old_value"], r["new_value"]) for r in sql(
        tmp_path / "learnkit.db", "SELECT old_value, new_value FROM threshold_changes ORDER BY at, id")]
    assert len(changes) == 200
    assert changes[0][0] == 8
    for (_, new), (old, _) in itertools.pairwise(changes):
        assert old == new  # each change starts from where the previous one left the value
    assert threshold_value(p) == changes[-1][1]


def test_manual_and_controller_changes_from_four_processes_keep_history_equal_to_file(
    tmp_path: Path,
) -> None:
    """Two processes change by hand (kit.config.update, not awaited at once), two through
    the controller, 40 changes each: one chain in the history, ending at the file's value."""
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG.replace("min = 3\nmax = 12", "min = 0\nmax = 1000")
                 .replace("step = 1\n", "step = 100\n"))  # any move by hand is allowed
    script = textwrap.dedent(f"""
        import asyncio, random, sys, learnkit
        from learnkit._errors import ConcurrentEditError
        manual = sys.argv[1] == "manual"
        async def main():
            async with learnkit.open({str(p)!r}) as kit:
                ctl = kit.controller
                done = 0
                while done < 40:
                    await ctl._refresh()
                    cfg = ctl._db.live.config
                    old = cfg.thresholds["max_complexity"].value
                    new = random.choice([v for v in range(5, 15) if v != old])
                    try:
                        if manual:
                            pending = kit.config.update(max_complexity=new)
                            if done % 3:
                                await pending
                            else:
                                await asyncio.sleep(0)  # recorded in the background
                        else:
                            row = {{"at": kit.now(), "name": "max_complexity",
                                   "old_value": old, "new_value": new, "kind": "lower",
                                   "confidence": None, "reason": "test", "evidence": "[]",
                                   "samples": None, "status": "applied"}}
                            await ctl._commit_change(cfg, "max_complexity", new, row)
                    except ConcurrentEditError:
                        continue
                    done += 1
        asyncio.run(main())
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", script, mode], env=env)
             for mode in ("manual", "controller", "manual", "controller")]
    assert [pr.wait(timeout=240) for pr in procs] == [0, 0, 0, 0]
    changes = [(r["old_value"], r["new_value"], r["kind"]) for r in sql(
        tmp_path / "learnkit.db",
        "SELECT old_value, new_value, kind FROM threshold_changes ORDER BY at, id")]
    # A manual update to the value another process set meanwhile changes nothing.
    assert 140 <= len(changes) <= 160
    assert {k for _, _, k in changes} == {"manual", "lower"}
    assert changes[0][0] == 8
    for (_, new, _), (old, _, _) in itertools.pairwise(changes):
        assert old == new
    assert threshold_value(p) == changes[-1][1]


async def test_a_manual_change_during_the_controllers_change_is_refused_not_deadlocked(
    tmp_path: Path,
) -> None:
    """The controller holds the config's lock while it records its change (awaiting the
    store on the loop); a kit.config.update on the loop then must not block the loop."""
    import asyncio
    import threading

    import learnkit
    from learnkit._errors import ConcurrentEditError
    from learnkit._thresholds import rewrite

    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG)
    inside, go_on = threading.Event(), threading.Event()

    def pause(_tmp: Path) -> None:  # runs in the controller's thread, lock held
        inside.set()
        go_on.wait(10)

    async with learnkit.open(p) as kit:
        ctl = kit.controller
        cfg = ctl._db.live.config
        row = {"at": kit.now(), "name": "max_complexity", "old_value": 8, "new_value": 7,
               "kind": "lower", "confidence": None, "reason": "test", "evidence": "[]",
               "samples": None, "status": "applied"}
        rewrite._before_replace = pause
        try:
            change = asyncio.create_task(ctl._commit_change(cfg, "max_complexity", 7, row))
            await asyncio.to_thread(inside.wait, 10)
            with pytest.raises(ConcurrentEditError, match="learning loop"):
                kit.config.update(max_complexity=6)
            go_on.set()
            await asyncio.wait_for(change, 10)
        finally:
            rewrite._before_replace = None
            go_on.set()
        await kit.config.update(max_complexity=6)  # free again
    assert threshold_value(p) == 6


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


def _summary(current: float, recommended: float) -> Any:
    from learnkit._insights.patterns import FailurePattern, Recommendation

    evidence = FailurePattern(kind="context", description="band", support=50)
    r = Recommendation(action="lower_threshold:max_complexity", message="test", confidence=0.9,
                       threshold="max_complexity", current=current, recommended=recommended,
                       evidence=(evidence,))
    return {"recommendations": [r]}


def test_a_rewritten_config_keeps_its_mode_and_owner(tmp_path: Path) -> None:
    import asyncio

    import learnkit

    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG)
    os.chmod(p, 0o640)
    if os.geteuid() == 0:  # root can give the file away: it must come back as it was
        os.chown(p, 1234, 5678)
    before = p.stat()

    async def main() -> None:
        async with learnkit.open(p) as kit:
            assert await kit.controller.apply(_summary(8, 7))

    old = os.umask(0o077)  # a strict umask must not narrow the mode either
    try:
        asyncio.run(main())
    finally:
        os.umask(old)
    after = p.stat()
    assert threshold_value(p) == 7
    assert after.st_ino != before.st_ino  # really rewritten (renamed over)
    assert (after.st_mode & 0o7777, after.st_uid, after.st_gid) == (
        0o640, before.st_uid, before.st_gid)


@pytest.mark.parametrize("where", ["file", "directory"])
def test_a_read_only_config_is_reported_not_rewritten(
        tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture) -> None:
    """chmod 444 on the file (or 555 on its directory): apply changes nothing, raises
    nothing, logs once, and the controller says why; the file is byte-identical."""
    import asyncio
    import logging

    import learnkit

    d = tmp_path / "cfg"
    d.mkdir()
    p = d / "learnkit.toml"
    p.write_text(BASE_CONFIG.replace('path = "learnkit.db"', f'path = "{tmp_path / "l.db"}"'))
    data = p.read_bytes()
    os.chmod(p if where == "file" else d, 0o444 if where == "file" else 0o555)
    try:
        async def main() -> None:
            async with learnkit.open(p) as kit:
                for _ in range(3):
                    assert await kit.controller.apply(_summary(8, 7)) == []
                assert "read-only" in kit.controller.not_applied["max_complexity"]
                assert await kit.controller.history() == []

        with caplog.at_level(logging.WARNING, logger="learnkit"):
            asyncio.run(main())
    finally:
        os.chmod(d, 0o755)
        os.chmod(p, 0o644)
    assert p.read_bytes() == data
    assert sorted(x.name for x in d.iterdir()) == ["learnkit.toml"]
    warned = [r for r in caplog.records if "read-only" in r.getMessage()]
    assert len(warned) == 1
