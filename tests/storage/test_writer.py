"""The batching writer: nothing lost under load, backpressure, faults, processes, crashes."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

import learnkit
from learnkit import track, tracked

from ..conftest import Backend, rows, sql, write_config

ROOT = Path(__file__).resolve().parents[2]

#: Every test here runs on each storage backend (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")


def count(db: Path, where: str = "TRUE") -> int:
    """Operations matching ``where`` on the active backend (``db``: the SQLite file)."""
    return int(sql(db, f"SELECT count(*) AS n FROM operations WHERE {where}")[0]["n"])


def scalar(db: Path, query: str) -> Any:
    """The one value a query returns, on the active backend."""
    (row,) = sql(db, query)
    (value,) = row.values()
    return value


#: Tests of SQLite's own faults (its locks, its page limit).
sqlite_only = pytest.mark.sqlite_only


@tracked("unit")
async def unit(i: int) -> int:
    if i % 7 == 0:
        raise ValueError(i)
    return i


class TestVolume:
    @pytest.mark.slow
    async def test_100k_from_many_tasks_arrive_exactly(self, config_path: Path) -> None:
        """100,000 tracked operations from 500 concurrent tasks are all stored, none twice."""

        async def worker(w: int) -> None:
            for j in range(200):
                try:
                    await unit(w * 200 + j)
                except ValueError:
                    pass
                if j % 50 == 0:
                    await asyncio.sleep(0)

        async with learnkit.open(config_path) as kit:
            await asyncio.gather(*(worker(w) for w in range(500)))
            assert await kit.flush()
            stats = kit.stats
        db = config_path.parent / "learnkit.db"
        assert count(db) == 100_000
        assert count(db, "outcome = 'failure'") == len([i for i in range(100_000) if i % 7 == 0])
        assert (stats.enqueued, stats.written, stats.dropped) == (100_000, 100_000, 0)
        assert scalar(db, "SELECT sum(n) FROM rollup_hourly") == 100_000

    async def test_backpressure_keeps_every_async_record(self, tmp_path: Path) -> None:
        """With a tiny queue, async callers wait instead of losing records."""
        cfg = write_config(tmp_path, max_queue=20, batch_size=10)
        async with learnkit.open(cfg) as kit:
            for i in range(2000):
                async with track("bp", i=i):
                    pass
            await kit.flush()
            assert kit.stats.dropped == 0
        assert count(tmp_path / "learnkit.db") == 2000

    async def test_sync_caller_on_the_loop_drops_are_counted(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Without a spill file, a sync caller that cannot wait overfills to 2x max_queue,
        then drops, counted and logged."""
        cfg = write_config(tmp_path, max_queue=10, batch_size=1000, spill_max_mb=0)

        @tracked("tight")
        def tight() -> None:
            pass

        async with learnkit.open(cfg) as kit:
            for _ in range(25):  # never yields to the writer
                tight()
            assert kit.stats.dropped == 5
            await kit.flush()
        assert count(tmp_path / "learnkit.db") == 20
        assert "dropped 1 record(s)" in caplog.text

    async def test_threads_wait_for_room(self, tmp_path: Path) -> None:
        """Sync callers in other threads block until the writer makes room; nothing is lost."""
        cfg = write_config(tmp_path, max_queue=5, batch_size=5)

        @tracked("threaded")
        def work() -> None:
            pass

        def many() -> None:
            for _ in range(300):
                work()

        async with learnkit.open(cfg) as kit:
            await asyncio.gather(*(asyncio.to_thread(many) for _ in range(4)))
            await kit.flush()
            assert kit.stats.dropped == 0
        assert count(tmp_path / "learnkit.db") == 1200

    async def test_async_callers_on_another_threads_loop_wait_for_room(
        self, tmp_path: Path
    ) -> None:
        """An async @tracked function run by another thread's event loop, with the
        queue full: it waits for the writer (it used to wait forever)."""
        cfg = write_config(tmp_path, max_queue=100)

        @tracked("other_loop")
        async def work(i: int) -> int:
            return i

        def thread() -> None:
            async def many() -> None:
                for i in range(3_000):
                    await work(i)

            asyncio.run(asyncio.wait_for(many(), 60))

        async with learnkit.open(cfg) as kit:
            await asyncio.to_thread(thread)
            await kit.flush()
            assert kit.stats.dropped == 0
        assert count(tmp_path / "learnkit.db", "op_type = 'other_loop'") == 3_000



async def running_row(kit: learnkit.Kit) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """Start a 'long' operation and flush while it runs (so it is a 'running' row);
    setting the event lets it finish."""
    gate = asyncio.Event()

    @tracked("long")
    async def long() -> None:
        await gate.wait()

    task = asyncio.create_task(long())
    await asyncio.sleep(0.01)
    await kit.flush()
    return gate, task

class TestRunningRows:
    async def test_start_and_end_in_one_batch_make_one_row(self, kit: learnkit.Kit) -> None:
        """Short operations produce exactly one row each and no running rows."""
        for i in range(50):
            async with track("short", i=i):
                pass
        await kit.flush()
        assert count(kit.database.path) == 50
        assert count(kit.database.path, "outcome = 'running'") == 0

    async def test_running_at_flush_is_stored_then_completed_in_place(
        self, kit: learnkit.Kit
    ) -> None:
        """An operation running at a flush is a 'running' row, later updated (same id)."""
        gate, task = await running_row(kit)
        before = rows(kit.database.path)
        assert [(r["op_type"], r["outcome"], r["ended_at"]) for r in before] == [
            ("long", "running", None)]
        gate.set()
        await task
        await kit.flush()
        after = rows(kit.database.path)
        assert [(r["id"], r["outcome"]) for r in after] == [(before[0]["id"], "success")]

    async def test_completion_only_updates_a_row_of_its_own_type(
        self, kit: learnkit.Kit, backend: Backend
    ) -> None:
        """A completion whose id now names a row of another type (the row was changed
        or replaced behind learnkit's back) leaves that row alone, on both stores.
        PostgreSQL's update used to match on the id alone."""
        gate, task = await running_row(kit)
        (row,) = rows(kit.database.path)
        query = f"UPDATE operations SET op_type = 'other' WHERE id = {row['id']}"
        if backend.name == "sqlite":
            conn = sqlite3.connect(kit.database.path, isolation_level=None)
            conn.execute(query)
            conn.close()
        else:
            sql(kit.database.path, query)
        gate.set()
        await task
        await kit.flush()
        after = rows(kit.database.path)
        assert [(r["op_type"], r["outcome"], r["ended_at"]) for r in after] == [
            ("other", "running", None)]

    async def test_child_of_unstored_parent_gets_parent_row(self, kit: learnkit.Kit) -> None:
        """A child written while its parent still runs makes the parent a running row first."""
        async with track("parent"):
            async with track("child"):
                pass
            await kit.flush()
            mid = rows(kit.database.path)
            assert {r["op_type"]: r["outcome"] for r in mid} == {
                "parent": "running", "child": "success"}
            parent_id = next(r["id"] for r in mid if r["op_type"] == "parent")
            assert next(r["parent_id"] for r in mid if r["op_type"] == "child") == parent_id
        await kit.flush()
        assert {r["op_type"]: r["outcome"] for r in rows(kit.database.path)} == {
            "parent": "success", "child": "success"}


class TestFaults:
    @sqlite_only
    async def test_locked_database_is_retried_not_raised(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """While another process holds the write lock, tracking goes on; records arrive after."""
        cfg = write_config(tmp_path, busy_timeout=0.05)
        async with learnkit.open(cfg) as kit:
            blocker = sqlite3.connect(tmp_path / "learnkit.db", isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            for i in range(30):
                async with track("locked", i=i):
                    pass
            assert await kit.flush(timeout=0.3) is False
            assert kit.stats.write_errors >= 1
            assert "locked" in (kit.stats.last_error or "")
            blocker.execute("COMMIT")
            blocker.close()
            assert await kit.flush(timeout=10) is True
        assert count(tmp_path / "learnkit.db") == 30
        assert "kept and retried" in caplog.text

    @sqlite_only
    async def test_full_database_is_retried_not_raised(self, kit: learnkit.Kit) -> None:
        """SQLITE_FULL (a real page limit) keeps the records; they land once space returns."""
        store = kit._store

        def pragma(sql: str) -> int:  # on the writer's own connection and thread
            return int(store._w().execute(sql).fetchone()[0])

        pages = await store._in_thread(pragma, "PRAGMA page_count")
        await store._in_thread(pragma, f"PRAGMA max_page_count = {pages}")
        for i in range(3000):
            kit.record("big", outcome="failure", started_at=1000.0 + i,
                       error_message="x" * 200)
        assert await kit.flush(timeout=0.3) is False
        assert "full" in (kit.stats.last_error or "")
        await store._in_thread(pragma, "PRAGMA max_page_count = 1073741823")
        assert await kit.flush(timeout=10) is True
        assert count(kit.database.path) == 3000
        assert kit.stats.dropped == 0


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    import learnkit

    @learnkit.tracked("proc", key=lambda tag, i: f"{tag}-{i}")
    async def op(tag, i):
        if i % 5 == 0:
            raise RuntimeError("x")

    async def main(tag, n):
        async with learnkit.open(sys.argv[1]) as kit:
            for i in range(n):
                try:
                    await op(tag, i)
                except RuntimeError:
                    pass
                if i % 100 == 0:
                    await asyncio.sleep(0)
            assert await kit.flush()
            assert kit.stats.dropped == 0

    asyncio.run(main(sys.argv[2], int(sys.argv[3])))
    """
)


class TestProcesses:
    @pytest.mark.slow
    def test_four_processes_one_database(self, tmp_path: Path) -> None:
        """Four processes writing one database at once lose nothing and share unique ids."""
        cfg = write_config(tmp_path, batch_size=200)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(cfg), f"p{k}", "5000"], env=env)
            for k in range(4)
        ]
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
        db = tmp_path / "learnkit.db"
        assert count(db) == 20_000
        for k in range(4):
            assert count(db, f"key LIKE 'p{k}-%'") == 5000
        assert scalar(db, "SELECT count(DISTINCT session_id) FROM operations") == 4
        assert scalar(db, "SELECT count(DISTINCT id) FROM operations") == 20_000
        assert scalar(db, "SELECT sum(n) FROM rollup_hourly") == 20_000


CRASHER = textwrap.dedent(
    """
    import asyncio, sys
    import learnkit

    async def forever(i):
        async with learnkit.track("hung", key=f"hung-{i}"):
            await asyncio.sleep(3600)

    @learnkit.tracked("quick", key=lambda i: f"q-{i}")
    async def quick(i):
        return i

    async def main():
        async with learnkit.open(sys.argv[1]) as kit:
            hung = [asyncio.create_task(forever(i)) for i in range(7)]
            for i in range(20000):
                await quick(i)
            await asyncio.sleep(0)
            assert await kit.flush()
            print("FLUSHED", 20000, flush=True)
            i = 20000
            while True:  # keep loading until killed
                await quick(i)
                i += 1
                if i % 500 == 0:
                    await asyncio.sleep(0)

    asyncio.run(main())
    """
)


class TestCrash:
    @pytest.mark.slow
    def test_sigkill_under_load(self, tmp_path: Path, backend: Backend) -> None:
        """After SIGKILL: integrity holds, flushed work is all there, running rows are abandoned."""
        cfg = write_config(tmp_path)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASHER, str(cfg)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "FLUSHED 20000"
        time.sleep(0.3)  # under load: the writer is mid-stream
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        db = tmp_path / "learnkit.db"
        if not backend.shared:
            conn = sqlite3.connect(db)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            conn.close()
        assert count(db, "op_type = 'quick' AND CAST(substr(key, 3) AS INTEGER) < 20000") == 20000
        assert count(db, "op_type = 'hung' AND outcome = 'running'") == 7

        async def reopen() -> learnkit.WriterStats:
            async with learnkit.open(cfg) as kit:
                return kit.stats

        stats = asyncio.run(reopen())
        assert stats.abandoned_on_open == 7
        assert count(db, "op_type = 'hung' AND outcome = 'abandoned'") == 7
        assert count(db, "outcome = 'running'") == 0
        n = scalar(
            db, "SELECT sum(n) FROM rollup_hourly WHERE op_type = 'hung' AND outcome = 'abandoned'"
        )
        assert n == 7

    async def test_live_sessions_are_not_abandoned(self, config_path: Path) -> None:
        """A second kit on the same file leaves the first one's running rows alone."""
        async with learnkit.open(config_path) as first:
            gate = asyncio.Event()

            async def hold() -> None:
                async with track("held"):
                    await gate.wait()

            t = asyncio.create_task(hold())
            await asyncio.sleep(0.01)
            await first.flush()
            async with learnkit.open(config_path) as second:
                assert second.stats.abandoned_on_open == 0
            gate.set()
            await t
        assert count(config_path.parent / "learnkit.db", "outcome = 'success'") == 1




class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    __str__ = __repr__


def _surrogate() -> str:
    return b"report-\xff.txt".decode("utf-8", "surrogateescape")


class TestPoisonRecords:
    """A record the old writer choked on, then 1,000 good ones: all land, the writer lives."""

    POISON: ClassVar[dict[str, Callable[[learnkit.Kit], object]]] = {
        "surrogate message": lambda kit: kit.record(
            "poison", outcome="failure", started_at=1000.0,
            error_message=f"cannot open {_surrogate()}"),
        "surrogate key, type and context": lambda kit: kit.record(
            _surrogate(), outcome="success", started_at=1000.0, key=_surrogate(),
            context={_surrogate(): _surrogate()}),
        "huge integer": lambda kit: kit.record(
            "poison", outcome="success", started_at=1000.0, context={"n": 10**309}),
        "broken repr": lambda kit: kit.record(
            "poison", outcome="success", started_at=1000.0, context={"v": _BrokenRepr()}),
        "error_type list": lambda kit: kit.record(
            "poison", outcome="failure", started_at=1000.0, error_type=["a", "b"]),  # type: ignore[arg-type]
        "message object": lambda kit: kit.record(
            "poison", outcome="failure", started_at=1000.0, error_message=object()),
        "decimal and list keys": lambda kit: (
            kit.record("poison", outcome="success", started_at=1000.0, key=__import__(
                "decimal").Decimal("1.5")),
            kit.record("poison", outcome="success", started_at=1000.0, key=[1, 2])),
    }

    @pytest.mark.parametrize("name", sorted(POISON))
    async def test_poison_then_1000_good(self, kit: learnkit.Kit, name: str) -> None:
        self.POISON[name](kit)
        for i in range(1000):
            kit.record("good", outcome="success", started_at=2000.0 + i)
        assert await kit.flush(timeout=30)
        assert count(kit.database.path, "op_type = 'good'") == 1000
        assert kit.stats.dropped == 0
        assert kit.stats.queued == 0
        # the writer task is still alive and writes later records too
        kit.record("later", outcome="success", started_at=5000.0)
        await asyncio.sleep(0.1)
        assert count(kit.database.path, "op_type = 'later'") == 1

    async def test_uuid_key_in_track_then_1000_good(self, kit: learnkit.Kit) -> None:
        import uuid

        async with track("fetch", key=uuid.uuid4()):  # type: ignore[arg-type]
            pass
        for i in range(1000):
            async with track("good", i=i):
                pass
        assert await kit.flush(timeout=30)
        assert count(kit.database.path, "op_type = 'good'") == 1000
        assert len(rows(kit.database.path, "op_type = 'fetch'")[0]["key"]) == 36

    async def test_op_type_none_and_object_context_key(self, kit: learnkit.Kit) -> None:
        async with track(None, **{"x": 1}):  # type: ignore[arg-type]
            pass
        tracker = kit.tracker
        op = tracker.start_operation("spec", context={(1, 2): 3, 4: _BrokenRepr()})
        tracker.complete_operation(op, success=False, error_type=3, error_message=b"x")  # type: ignore[arg-type]
        for i in range(1000):
            kit.record("good", outcome="success", started_at=2000.0 + i)
        assert await kit.flush(timeout=30)
        assert count(kit.database.path, "op_type = 'good'") == 1000
        spec = rows(kit.database.path, "op_type = 'spec'")[0]
        assert json.loads(spec["context"]) == {"(1, 2)": 3, "4": "<unrepresentable _BrokenRepr>"}

    @pytest.mark.parametrize("bad", [math.nan, math.inf, 1e300, -1.0])
    async def test_bad_times_are_refused_and_counted(self, kit: learnkit.Kit, bad: float) -> None:
        with pytest.raises(ValueError, match="finite"):
            kit.record("t", outcome="success", started_at=bad)
        with pytest.raises(ValueError, match="duration"):
            kit.record("t", outcome="success", started_at=1000.0, duration=math.nan)
        assert kit.stats.rejected == 2
        for i in range(1000):
            kit.record("good", outcome="success", started_at=2000.0 + i)
        assert await kit.flush(timeout=30)
        assert count(kit.database.path, "op_type = 'good'") == 1000
        assert count(kit.database.path, "op_type = 't'") == 0

    async def test_a_clock_returning_nan_is_refused_and_counted(
        self, config_path: Path
    ) -> None:
        times = iter([1000.0, math.nan])
        async with learnkit.open(config_path, clock=lambda: next(times, 1000.0)) as kit:
            async with track("nan_clock"):
                pass
            for i in range(1000):
                async with track("good", i=i):
                    pass
            assert await kit.flush(timeout=30)
            assert kit.stats.rejected == 1
        assert count(config_path.parent / "learnkit.db", "op_type = 'good'") == 1000

    async def test_long_message_truncated_with_marker(self, kit: learnkit.Kit) -> None:
        kit.record("long", outcome="failure", started_at=1000.0, error_message="x" * 10_000_000)
        assert await kit.flush(timeout=30)
        msg = rows(kit.database.path, "op_type = 'long'")[0]["error_message"]
        assert len(msg) < 4100 and msg.endswith("[truncated 9996000 chars]")

    @sqlite_only  # the SQLite store's internals and file
    async def test_a_row_the_store_refuses_is_isolated_not_retried_forever(
        self, kit: learnkit.Kit
    ) -> None:
        """A non-transient failure splits the batch until the bad row is alone."""
        store = kit._store

        def trigger() -> None:
            store._w().execute(
                "CREATE TRIGGER no_bad BEFORE INSERT ON operations WHEN NEW.key = 'bad'"
                " BEGIN SELECT RAISE(ABORT, 'refused by a constraint'); END")

        await store._in_thread(trigger)
        for i in range(1000):
            kit.record("good", outcome="success", started_at=2000.0 + i,
                       key="bad" if i == 500 else f"k{i}")
        assert await kit.flush(timeout=30)
        assert count(kit.database.path, "op_type = 'good'") == 999
        assert kit.stats.rejected == 1
        assert kit.stats.queued == 0


class TestBatchSources:
    async def test_split_keeps_each_row_with_its_operation(self, kit: learnkit.Kit) -> None:
        """A batch knows the operation behind every row (what a closing writer spills),
        and splitting it to single rows keeps each row with its own."""
        from learnkit._model import Operation

        store = kit._store
        parent = Operation("parent", "p", None, 2000.0, 0.0, None)
        done = []
        for i in range(5):
            op = Operation("child", f"c{i}", {"i": i}, 2000.0 + i, 0.0, parent)
            op.outcome, op.ended_at, op.duration = "success", 2000.5 + i, 0.5
            done.append(op)
        stored = Operation("late", "l", None, 1990.0, 0.0, None)
        stored.persisted, stored.db_id = True, 10**9  # its running row was written before
        stored.outcome, stored.ended_at, stored.duration = "failure", 2001.0, 11.0
        await store.reserve_ids(20)
        batch = store.prepare([*done, stored], [])
        assert batch.sources == [*[(op, True) for op in done], (parent, True),
                                 (stored, False)]
        parts, singles = [batch], []
        while parts:
            part = parts.pop(0)
            halves = store.split(part)
            if len(halves) == 1:
                singles.append(part)
            else:
                parts[:0] = halves
        assert [s for p in singles for s in p.sources] == batch.sources
        assert all(p.rows == len(p.sources) == 1 for p in singles)


    async def test_stored_ids(self, kit: learnkit.Kit) -> None:
        """What a replay asks before writing records spilled under reserved ids."""
        for i in range(3):
            kit.record("x", outcome="success", started_at=2000.0 + i)
        assert await kit.flush()
        ids = [r["id"] for r in rows(kit.database.path, "op_type = 'x'")]
        missing = max(ids) + 10**6
        assert await kit._store.stored_ids([*ids, missing]) == set(ids)
        assert await kit._store.stored_ids([]) == set()


def _writer_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("learnkit")]


class TestShutdown:
    """Closing keeps everything, whatever cancels the task that owns the kit."""

    @sqlite_only  # the SQLite store's internals and file
    async def test_double_cancellation_keeps_every_record(self, config_path: Path) -> None:
        async def owner(started: asyncio.Event) -> None:
            async with learnkit.open(config_path) as kit:
                for i in range(20_000):
                    kit.record("c", outcome="success", started_at=1000.0 + i)
                started.set()
                await asyncio.sleep(3600)

        started = asyncio.Event()
        task = asyncio.create_task(owner(started))
        await started.wait()
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert count(config_path.parent / "learnkit.db") == 20_000
        assert _writer_threads() == []
        conn = sqlite3.connect(config_path.parent / "learnkit.db")
        assert conn.execute("SELECT state FROM sessions").fetchall() == [("closed",)]
        conn.close()

    async def test_anyio_move_on_after_around_open(self, config_path: Path) -> None:
        import anyio

        with anyio.move_on_after(0.2):
            async with learnkit.open(config_path) as kit:
                for i in range(20_000):
                    kit.record("c", outcome="success", started_at=1000.0 + i)
                await anyio.sleep(3600)
        assert count(config_path.parent / "learnkit.db") == 20_000
        assert _writer_threads() == []
        assert kit.stats.dropped == 0

    @sqlite_only  # the SQLite store's internals and file
    async def test_close_with_in_flight_ops_then_reopen_abandons_them(
        self, config_path: Path
    ) -> None:
        release = asyncio.Event()

        async def hang(i: int) -> None:
            async with track("hung", i=i):
                await release.wait()

        async with learnkit.open(config_path) as kit:
            tasks = [asyncio.create_task(hang(i)) for i in range(5)]
            await asyncio.sleep(0.05)
        assert count(config_path.parent / "learnkit.db", "outcome = 'running'") == 5
        release.set()
        await asyncio.gather(*tasks)  # completions after close: dropped, counted
        assert kit.stats.dropped == 5
        async with learnkit.open(config_path) as kit2:
            assert kit2.stats.abandoned_on_open == 5
        assert count(config_path.parent / "learnkit.db", "outcome = 'abandoned'") == 5

    @sqlite_only  # the SQLite store's internals and file
    async def test_flush_timeout_holds_against_the_busy_timeout(self, tmp_path: Path) -> None:
        cfg = write_config(tmp_path, busy_timeout=5.0)
        async with learnkit.open(cfg) as kit:
            blocker = sqlite3.connect(tmp_path / "learnkit.db", isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            kit.record("x", outcome="success", started_at=1000.0)
            t = time.monotonic()
            assert await kit.flush(timeout=0.5) is False
            assert time.monotonic() - t < 1.5
            blocker.execute("COMMIT")
            blocker.close()
        assert count(tmp_path / "learnkit.db") == 1

    async def test_a_closed_kit_raises(self, config_path: Path) -> None:
        async with learnkit.open(config_path) as kit:
            pass
        with pytest.raises(learnkit.KitClosedError, match="closed kit"):
            kit.record("x", outcome="success", started_at=1000.0)
        with pytest.raises(learnkit.KitClosedError):
            await kit.flush()

    def test_fork_child_never_hangs(self, tmp_path: Path) -> None:
        cfg = write_config(tmp_path)
        script = textwrap.dedent(f"""
            import asyncio, os, sys, learnkit

            @learnkit.tracked("work")
            async def work():
                pass

            async def main():
                parent = os.getpid()
                try:
                    async with learnkit.open({str(cfg)!r}) as kit:
                        await work()
                        pid = os.fork()
                        if pid == 0:
                            await work()
                            assert kit.stats.dropped == 1, kit.stats
                            sys.exit(0)  # through the kit's close: must not hang
                        _, status = os.waitpid(pid, 0)
                        assert os.waitstatus_to_exitcode(status) == 0
                        await work()
                except SystemExit:
                    # Leave without asyncio.run's cleanup, which would unregister the
                    # parent's descriptors from the epoll instance both share.
                    if os.getpid() != parent:
                        sys.stderr.flush()
                        os._exit(0)
                    raise

            asyncio.run(main())
        """)
        proc = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True,
            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.returncode == 0, proc.stderr
        assert "forked child" in proc.stderr
        assert count(tmp_path / "learnkit.db", "op_type = 'work'") == 2


class TestOverload:
    @pytest.mark.slow
    async def test_million_record_sync_burst_counts_drops_exactly(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        cfg = write_config(tmp_path, max_queue=10_000, spill_max_mb=0)
        async with learnkit.open(cfg) as kit:
            for i in range(1_000_000):
                kit.record("burst", outcome="success", started_at=1000.0 + i * 1e-3)
        stored = count(tmp_path / "learnkit.db")
        stats = kit.stats
        assert stats.dropped == 1_000_000 - stored
        assert stats.enqueued == stored
        assert f"dropped {stats.dropped} record(s) in all" in caplog.text
