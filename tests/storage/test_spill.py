"""The spill file: records past the memory bound wait on disk, and all of them land
(reliability issue, item 2). Real files, real processes, real SQLite locks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import learnkit
from learnkit import tracked

from ..conftest import rows, sql, write_config

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("backend")


async def lock_after_a_first_batch(kit: learnkit.Kit, db: Path) -> sqlite3.Connection:
    """Store one record (ids are reserved in blocks, so the next batches are
    prepared without the lock), then hold the database's write lock."""
    kit.record("first", outcome="success", started_at=1000.0)
    await kit.flush()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    return blocker


@tracked("child")
def _child() -> None:
    pass


async def until_a_commit_fails(kit: learnkit.Kit) -> None:
    """Wait until the writer has prepared a batch and failed to commit it."""
    for _ in range(500):
        if kit.stats.write_errors:
            break
        await asyncio.sleep(0.01)
    assert kit.stats.write_errors > 0


def count(db: Path, where: str = "TRUE") -> int:
    return int(sql(db, f"SELECT count(*) AS n FROM operations WHERE {where}")[0]["n"])


def spill_files(directory: Path) -> list[Path]:
    """The spill files in a directory (their ``.done`` progress files left out)."""
    return sorted(p for p in directory.iterdir()
                  if ".spill-" in p.name and p.name.endswith(".jsonl"))


def leftovers(directory: Path) -> list[Path]:
    """Everything spill-related left in a directory, progress files included."""
    return sorted(p for p in directory.iterdir() if ".spill-" in p.name)


class TestBurst:
    async def test_a_sync_burst_past_the_bound_loses_nothing(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """200,000 records on the loop with room for 10,000 in memory: every one lands."""
        cfg = write_config(tmp_path, max_queue=5_000)
        n = 200_000
        async with learnkit.open(cfg) as kit:
            for i in range(n):  # never yields to the writer
                kit.record("burst", outcome="success" if i % 3 else "failure",
                           started_at=1000.0 + i * 1e-3, key=f"k{i}", context={"i": i})
            st = kit.stats
            assert st.spilled == n - 2 * 5_000  # in memory up to the bound, the rest on disk
            assert st.dropped == 0 and st.enqueued == n
            (path,) = spill_files(tmp_path)
            assert path.stat().st_mode & 0o777 == 0o600
            assert await kit.flush() is True
            assert kit.stats.spilled == 0 and kit.stats.dropped == 0
        db = tmp_path / "learnkit.db"
        assert count(db) == n
        assert count(db, "outcome = 'failure'") == len(range(0, n, 3))
        # each record exactly once, with its own fields
        keys = {r["key"] for r in sql(db, "SELECT key FROM operations")}
        assert len(keys) == n
        assert leftovers(tmp_path) == []  # emptied, then removed at close
        assert "records go to" in caplog.text

    async def test_nesting_is_kept(self, tmp_path: Path) -> None:
        """Children spilled while their parent runs still point at it."""
        cfg = write_config(tmp_path, max_queue=100)

        @tracked("child")
        def child() -> None:
            pass

        async with learnkit.open(cfg) as kit:
            async with learnkit.track("parent"):
                for _ in range(1_000):
                    child()
            assert await kit.flush() is True
        db = tmp_path / "learnkit.db"
        (parent,) = rows(db, "op_type = 'parent'")
        assert count(db, f"op_type = 'child' AND parent_id = {parent['id']}") == 1_000

    async def test_secrets_are_scrubbed_before_the_disk(self, tmp_path: Path) -> None:
        cfg = write_config(tmp_path, max_queue=10)
        async with learnkit.open(cfg) as kit:
            for i in range(100):
                kit.record("login", outcome="failure", started_at=1000.0 + i,
                           error_type="AuthError", error_message="bad password=hunter2",
                           context={"api_key": "sk-live-abcdef"})
            (path,) = spill_files(tmp_path)
            kit._writer.spill._w.flush()  # type: ignore[union-attr]  # see the bytes now
            data = path.read_bytes()
            assert data.count(b"\n") == 80
            assert b"hunter2" not in data and b"sk-live-abcdef" not in data
            await kit.flush()
        assert count(tmp_path / "learnkit.db") == 100

    async def test_no_spill_file_when_turned_off(self, tmp_path: Path) -> None:
        cfg = write_config(tmp_path, max_queue=10, spill_max_mb=0)
        async with learnkit.open(cfg) as kit:
            for i in range(50):
                kit.record("x", outcome="success", started_at=1000.0 + i)
            assert kit.stats.dropped == 30
        assert spill_files(tmp_path) == []

    async def test_a_full_spill_file_drops_and_counts(self, tmp_path: Path) -> None:
        cfg = write_config(tmp_path, max_queue=10, spill_max_mb=0.001)  # about 1 KiB
        async with learnkit.open(cfg) as kit:
            for i in range(200):
                kit.record("x", outcome="success", started_at=1000.0 + i)
            spilled, dropped = kit.stats.spilled, kit.stats.dropped
            assert spilled > 0 and dropped > 0 and 20 + spilled + dropped == 200
        assert count(tmp_path / "learnkit.db") == 200 - dropped


@pytest.mark.sqlite_only
class TestAcrossProcesses:
    async def test_closing_while_the_store_is_locked_keeps_records_for_the_next_open(
        self, tmp_path: Path
    ) -> None:
        cfg = write_config(tmp_path, max_queue=1_000, busy_timeout=0.05)
        db = tmp_path / "learnkit.db"
        async with learnkit.open(cfg) as kit:
            kit.record("first", outcome="success", started_at=1000.0)
            await kit.flush()  # ids are reserved in blocks: the next batches need no lock
            blocker = sqlite3.connect(db, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            for i in range(5_000):
                kit.record("late", outcome="success", started_at=1000.0 + i, key=str(i))
            await kit.aclose(timeout=0.5)
            # the batches being retried are kept too, not only what was queued
            assert kit.stats.dropped == 0
        blocker.execute("ROLLBACK")
        blocker.close()
        (path,) = spill_files(tmp_path)
        # lines before the .done offset were taken back into the queue, then spilled
        # again at close with the batches that held them
        done = int(path.with_name(path.name + ".done").read_text() or 0)
        assert path.read_bytes()[done:].count(b"\n") == 5_000
        async with learnkit.open(cfg):
            pass  # replays the orphan before anything else
        assert count(db, "op_type = 'late'") == 5_000
        assert len({r["key"] for r in sql(db, "SELECT key FROM operations")}) == 5_001
        assert leftovers(tmp_path) == []

    async def test_closing_while_locked_keeps_children_and_their_parent(
        self, tmp_path: Path
    ) -> None:
        """A parent whose running row was in a batch that never committed, and its
        children: all spilled at close, and stored linked by the next open."""
        db = tmp_path / "learnkit.db"
        cfg = write_config(tmp_path, max_queue=1_000, busy_timeout=0.05)
        async with learnkit.open(cfg) as kit:
            blocker = await lock_after_a_first_batch(kit, db)
            async with learnkit.track("parent"):
                for _ in range(300):
                    _child()
                await until_a_commit_fails(kit)
            await kit.aclose(timeout=0.3)
            assert kit.stats.dropped == 0
        blocker.execute("ROLLBACK")
        blocker.close()
        (path,) = spill_files(tmp_path)
        done = int(path.with_name(path.name + ".done").read_text() or 0)
        lines = [json.loads(x) for x in path.read_bytes()[done:].splitlines()]
        assert [x["op_type"] for x in lines].count("parent") == 1  # though also queued
        async with learnkit.open(cfg) as again:
            assert again.stats.rejected == 0
        (parent,) = rows(db, "op_type = 'parent'")
        assert parent["outcome"] == "success"
        assert count(db, f"op_type = 'child' AND parent_id = {parent['id']}") == 300
        assert count(db) == 302

    async def test_children_of_a_parent_still_running_at_close_point_nowhere_missing(
        self, tmp_path: Path
    ) -> None:
        """Closing inside the parent: its running row never landed and it has not
        ended, so its children are kept without a link rather than with a dangling one."""
        db = tmp_path / "learnkit.db"
        cfg = write_config(tmp_path, max_queue=1_000, busy_timeout=0.05)
        async with learnkit.open(cfg) as kit:
            blocker = await lock_after_a_first_batch(kit, db)
            async with learnkit.track("parent"):
                for _ in range(3):
                    _child()
                await until_a_commit_fails(kit)
                await kit.aclose(timeout=0.3)
        blocker.execute("ROLLBACK")
        blocker.close()
        async with learnkit.open(cfg):
            pass
        assert count(db, "op_type = 'child'") == 3
        assert count(db, "parent_id IS NOT NULL AND parent_id NOT IN"
                         " (SELECT id FROM operations)") == 0

    async def test_a_completion_whose_running_row_was_stored_is_counted_lost(
        self, tmp_path: Path
    ) -> None:
        """Its running row is marked abandoned by the next open; the file cannot
        complete it, so the close says so instead of counting it kept."""
        cfg = write_config(tmp_path, max_queue=1_000, busy_timeout=0.05)
        db = tmp_path / "learnkit.db"
        gate = asyncio.Event()

        @tracked("long")
        async def long() -> None:
            await gate.wait()

        async with learnkit.open(cfg) as kit:
            kit.record("first", outcome="success", started_at=1000.0)
            task = asyncio.create_task(long())
            await asyncio.sleep(0.01)
            await kit.flush()  # 'long' is stored as running
            assert count(db, "outcome = 'running'") == 1
            blocker = sqlite3.connect(db, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            gate.set()
            await task
            await until_a_commit_fails(kit)
            await kit.aclose(timeout=0.3)
            assert kit.stats.dropped == 1
        blocker.execute("ROLLBACK")
        blocker.close()
        async with learnkit.open(cfg):
            pass
        # (another process opening later marks it abandoned; this one is still alive)
        assert [r["outcome"] for r in rows(db, "op_type = 'long'")] == ["running"]

    async def test_a_spilled_record_whose_batch_did_commit_is_not_stored_twice(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A commit whose reply was lost (a server gone after COMMIT): the records it
        held were spilled under their ids, and replaying them stores nothing twice."""
        from learnkit._storage.spill import Spill

        cfg = write_config(tmp_path)
        db = tmp_path / "learnkit.db"
        async with learnkit.open(cfg) as kit:
            for i in range(20):
                kit.record("landed", outcome="success", started_at=1000.0 + i, key=str(i))
            await kit.flush()
        stored = rows(db, "op_type = 'landed'")
        spill = Spill(tmp_path, "learnkit.db", 1 << 20)
        for r in stored:  # as the closing writer spills a batch it believes failed
            op = learnkit.Operation("landed", r["key"], None, r["started_at"], 0.0, None)
            op.outcome, op.ended_at, op.duration = "success", r["ended_at"], r["duration"]
            op.db_id = r["id"]
            assert spill.add(op)
        assert spill.close() == 20
        caplog.clear()
        async with learnkit.open(cfg) as again:  # replays the orphan
            assert (again.stats.rejected, again.stats.write_errors) == (0, 0)
        assert rows(db, "op_type = 'landed'") == stored
        assert leftovers(tmp_path) == []
        assert "20 record(s)" in caplog.text and "already stored" in caplog.text
        assert not [r for r in caplog.records if r.levelname == "ERROR"]

    def test_a_killed_process_leaves_an_orphan_that_the_next_open_writes(
        self, tmp_path: Path
    ) -> None:
        """SIGKILL after a spill: what reached the file is written by the next open."""
        cfg = write_config(tmp_path, max_queue=1_000)
        child = textwrap.dedent(f"""
            import asyncio, os, signal, learnkit
            async def main():
                async with learnkit.open({str(cfg)!r}) as kit:
                    for i in range(60_000):
                        kit.record("spilled", outcome="success", started_at=1000.0 + i,
                                   key=str(i))
                    os.kill(os.getpid(), signal.SIGKILL)
            asyncio.run(main())
        """)
        proc = subprocess.run([sys.executable, "-c", child], cwd=ROOT, timeout=120)
        assert proc.returncode == -signal.SIGKILL
        (path,) = spill_files(tmp_path)
        data = path.read_bytes()
        complete = data.count(b"\n")
        # All but the write buffer's last bytes reached the file.
        assert complete > 50_000
        env = {**os.environ}
        reopen = subprocess.run(
            [sys.executable, "-c", f"import asyncio, learnkit\n"
             f"async def m():\n    async with learnkit.open({str(cfg)!r}): pass\n"
             f"asyncio.run(m())"], cwd=ROOT, env=env, timeout=120)
        assert reopen.returncode == 0
        db = tmp_path / "learnkit.db"
        assert count(db, "op_type = 'spilled'") == complete
        keys = {r["key"] for r in sql(db, "SELECT key FROM operations")}
        assert len(keys) == complete  # none twice
        assert leftovers(tmp_path) == []

    def test_a_live_process_file_is_not_taken(self, tmp_path: Path) -> None:
        """Another kit's spill file is locked: an open elsewhere leaves it alone."""
        from learnkit._storage.spill import orphans

        cfg = write_config(tmp_path, max_queue=10)
        child = textwrap.dedent(f"""
            import asyncio, sys, learnkit
            async def main():
                async with learnkit.open({str(cfg)!r}) as kit:
                    for i in range(100):
                        kit.record("x", outcome="success", started_at=1000.0 + i)
                    print("spilled", flush=True)
                    sys.stdin.readline()
            asyncio.run(main())
        """)
        with subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                assert proc.stdout.readline().strip() == "spilled"
                assert len(spill_files(tmp_path)) == 1
                assert orphans(tmp_path, "learnkit.db") == []
            finally:
                proc.stdin.write("\n")
                proc.stdin.close()
                assert proc.wait(timeout=60) == 0
        assert count(tmp_path / "learnkit.db") == 100
        assert spill_files(tmp_path) == []
