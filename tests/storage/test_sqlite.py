"""The SQLite store: WAL, integer keys, schema versions, forward migration, bad files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import learnkit
from learnkit._storage.schema import MIGRATIONS, SCHEMA_VERSION

from ..conftest import write_config


def pragma(db: Path, name: str) -> object:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


class TestSchema:
    async def test_fresh_store_is_wal_and_current(self, kit: learnkit.Kit) -> None:
        """A new database uses WAL and carries the current schema version."""
        db = kit.database.path
        assert pragma(db, "journal_mode") == "wal"
        assert pragma(db, "user_version") == SCHEMA_VERSION

    async def test_ids_are_increasing_integers(self, kit: learnkit.Kit) -> None:
        """Rows are keyed by a monotonically increasing INTEGER PRIMARY KEY."""
        for i in range(5):
            kit.record("x", outcome="success", started_at=float(i))
        await kit.flush()
        for i in range(5):
            kit.record("x", outcome="success", started_at=float(i))
        await kit.flush()
        conn = sqlite3.connect(kit.database.path)
        ids = [r[0] for r in conn.execute("SELECT id FROM operations ORDER BY rowid")]
        conn.close()
        assert ids == list(range(1, 11))

    async def test_migrates_forward_keeping_rows(self, tmp_path: Path) -> None:
        """A database at schema version 1 is migrated on open and keeps its rows."""
        db = tmp_path / "learnkit.db"
        conn = sqlite3.connect(db)
        conn.executescript(MIGRATIONS[0])
        conn.execute(
            "INSERT INTO operations (op_type, outcome, started_at, ended_at)"
            " VALUES ('old', 'success', 5.0, 6.0)"
        )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
        conn.close()
        async with learnkit.open(write_config(tmp_path)):
            pass
        assert pragma(db, "user_version") == SCHEMA_VERSION
        conn = sqlite3.connect(db)
        assert conn.execute("SELECT op_type, admission FROM operations").fetchall() == [
            ("old", None)]
        conn.close()

    async def test_string_keyed_rollups_migrate_to_integer_keys(self, tmp_path: Path) -> None:
        """Context rollups written by the string-keyed schema come through the move to
        integer keys unchanged: the same rows through the old names (now views), and
        the same counts through the store's queries."""
        db = tmp_path / "learnkit.db"
        conn = sqlite3.connect(db)
        keyed = next(i for i, m in enumerate(MIGRATIONS) if "CREATE TABLE context_keys" in m)
        for m in MIGRATIONS[:keyed]:
            conn.executescript(m)
        ctx = [(h, t, a, v, o, x, n) for n, (h, t, a, v, o, x) in enumerate([
            (10, "run", "lang", '"go"', "success", 0), (10, "run", "lang", '"go"', "failure", 1),
            (11, "run", "lang", '"go"', "failure", 0), (11, "pr", "lang", '"go"', "success", 0),
            (11, "run", "complexity", "7", "failure", 0), (12, "run", "lang", '"py"', "skipped", 0),
        ], start=1)]
        errctx = [(10, "run", "TestFailure", "tests failed", "lang", '"go"', 4),
                  (11, "run", "TestFailure", "tests failed", "complexity", "7", 2),
                  (11, "pr", "Conflict", "conflict in <*>", "lang", '"go"', 1)]
        conn.executemany("INSERT INTO context_rollup VALUES (?,?,?,?,?,?,?)", ctx)
        conn.executemany("INSERT INTO error_context_rollup VALUES (?,?,?,?,?,?,?)", errctx)
        conn.execute(f"PRAGMA user_version = {keyed}")
        conn.commit()
        conn.close()
        async with learnkit.open(write_config(tmp_path)) as kit:
            counts = await kit.database.store.context_counts(0.0, 13 * 3600.0, "lang", "run")
        assert counts == {('"go"', "success", 0): 1, ('"go"', "failure", 1): 2,
                          ('"go"', "failure", 0): 3, ('"py"', "skipped", 0): 6}
        assert pragma(db, "user_version") == SCHEMA_VERSION
        conn = sqlite3.connect(db)
        assert sorted(conn.execute("SELECT * FROM context_rollup")) == sorted(ctx)
        assert sorted(conn.execute("SELECT * FROM error_context_rollup")) == sorted(errctx)
        assert conn.execute("SELECT count(*) FROM context_keys").fetchone()[0] == 4
        assert conn.execute("SELECT day, sum(n) FROM context_rollup_daily GROUP BY 1"
                            ).fetchall() == [(0, sum(row[-1] for row in ctx))]
        conn.close()

    async def test_upgrade_waits_for_older_processes(self, tmp_path: Path) -> None:
        """A file at schema 4 still open in a live process (an older learnkit, which
        writes the string-keyed tables) is not upgraded: the open says which process
        to stop and leaves the file as it was; once that process is gone, it upgrades."""
        import socket
        import subprocess
        import sys

        from learnkit._storage.sqlite import _process_start

        db = tmp_path / "learnkit.db"
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode = WAL")  # as every learnkit file is
        for m in MIGRATIONS[:4]:
            conn.executescript(m)
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            conn.execute(
                "INSERT INTO sessions (host, pid, pid_start, started_at, heartbeat_at, state)"
                " VALUES (?, ?, ?, 0, 0, 'open')",
                (socket.gethostname(), other.pid, _process_start(other.pid)))
            conn.execute("PRAGMA user_version = 4")
            conn.commit()
            conn.close()
            before = db.read_bytes()
            with pytest.raises(learnkit.StoreUnavailableError, match=f":{other.pid}.*Stop them"):
                async with learnkit.open(write_config(tmp_path)):
                    pass
            assert pragma(db, "user_version") == 4
            assert db.read_bytes() == before
        finally:
            other.kill()
            other.wait()
        async with learnkit.open(write_config(tmp_path)):
            pass
        assert pragma(db, "user_version") == SCHEMA_VERSION

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A database from a newer learnkit is not touched; the error says to upgrade."""
        db = tmp_path / "learnkit.db"
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
        conn.close()
        with pytest.raises(learnkit.StoreError, match="upgrade learnkit"):
            async with learnkit.open(write_config(tmp_path)):
                pass
        assert pragma(db, "user_version") == SCHEMA_VERSION + 5

    async def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not SQLite gets a StoreError naming the file, and is left alone."""
        db = tmp_path / "learnkit.db"
        db.write_bytes(b"this is not sqlite" * 100)
        with pytest.raises(learnkit.StoreError, match="learnkit.db"):
            async with learnkit.open(write_config(tmp_path)):
                pass
        assert db.read_bytes() == b"this is not sqlite" * 100

    async def test_missing_directory(self, tmp_path: Path) -> None:
        """A storage path in a missing directory says which directory and how to fix it."""
        cfg = tmp_path / "learnkit.toml"
        cfg.write_text('[storage]\npath = "nowhere/learnkit.db"\n')
        with pytest.raises(learnkit.StoreError, match="does not exist"):
            async with learnkit.open(cfg):
                pass


class TestRollups:
    async def test_rollups_match_rows(self, kit: learnkit.Kit) -> None:
        """Hourly rollups, written in the same transaction, equal counts from the rows."""
        outcomes = ["success", "failure", "cancelled", "skipped"]
        for i in range(400):
            kit.record(f"t{i % 3}", outcome=outcomes[i % 4], started_at=1000.0 + i * 97,
                       ended_at=1000.0 + i * 97 + 5)
        await kit.flush()
        conn = sqlite3.connect(kit.database.path)
        raw = conn.execute(
            "SELECT op_type, CAST(ended_at / 3600 AS INTEGER), outcome, count(*)"
            " FROM operations GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
        rolled = conn.execute(
            "SELECT op_type, hour, outcome, n FROM rollup_hourly ORDER BY 1, 2, 3"
        ).fetchall()
        conn.close()
        assert rolled == raw


class TestContextCounts:
    async def test_targeted_query_matches_full_window(self, kit: learnkit.Kit) -> None:
        """context_counts (rollups + edge rows for one attribute) equals the full aggregation."""
        import random

        r = random.Random(2)
        for _ in range(800):
            t = 1_000_000.0 + r.uniform(0, 30 * 3600)
            kit.record(r.choice(["a", "b"]), outcome=r.choice(["success", "failure", "skipped"]),
                       started_at=t, context={"complexity": r.randint(1, 5), "lang": "go"})
        await kit.flush()
        store = kit.database.store
        for start, end in [(1_000_000.0 + 1234.5, 1_000_000.0 + 20 * 3600 + 17.0),
                           (1_000_000.0 + 100.0, 1_000_000.0 + 900.0)]:
            for op_type in (None, "a"):
                ws = await store.window_stats(start, end)
                want: dict[tuple[str, str, int], int] = {}
                for (t, a, v, o, x), n in ws.context.items():
                    if a == "complexity" and op_type in (None, t):
                        want[(v, o, x)] = want.get((v, o, x), 0) + n
                got = await store.context_counts(start, end, "complexity", op_type)
                assert got == want and sum(got.values()) > 0


class TestOnlyOurOwnDatabases:
    """Foreign, damaged and newer files are refused and left byte-identical."""

    async def _refused(self, tmp_path: Path, db: Path, match: str) -> None:
        before = db.read_bytes()
        cfg = write_config(tmp_path)
        with pytest.raises(learnkit.StoreError, match=match):
            async with learnkit.open(cfg):
                pass
        with pytest.raises(learnkit.StoreError, match=match):
            async with learnkit.open(cfg, read_only=True):
                pass
        assert db.read_bytes() == before
        assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0

    async def test_foreign_database(self, tmp_path: Path) -> None:
        db = tmp_path / "learnkit.db"
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
        conn.commit()
        conn.close()
        await self._refused(tmp_path, db, "not a learnkit database")

    async def test_newer_schema(self, tmp_path: Path, kit_db: Path) -> None:
        conn = sqlite3.connect(kit_db)
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA user_version = 99")
        conn.close()
        await self._refused(tmp_path, kit_db, "newer learnkit")

    async def test_corrupt_pages(self, tmp_path: Path, kit_db: Path) -> None:
        conn = sqlite3.connect(kit_db)
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.close()
        data = bytearray(kit_db.read_bytes())
        page = 4096
        assert len(data) > 4 * page
        for i in range(2 * page + 16, 3 * page):  # a b-tree page's body
            data[i] = 0xA5
        kit_db.write_bytes(bytes(data))
        await self._refused(tmp_path, kit_db, "damaged")

    async def test_not_a_database(self, tmp_path: Path) -> None:
        db = tmp_path / "learnkit.db"
        db.write_bytes(b"hello, this is a text file\n" * 200)
        await self._refused(tmp_path, db, "damaged or not a database")

    async def test_read_commands_work_on_a_read_only_file(
        self, tmp_path: Path, kit_db: Path
    ) -> None:
        kit_db.chmod(0o444)
        tmp_path.chmod(0o555)
        try:
            before = kit_db.read_bytes()
            async with learnkit.open(tmp_path / "learnkit.toml", read_only=True) as kit:
                assert await kit.analytics.get_success_rate(days=30) is not None
                with pytest.raises(learnkit.KitClosedError):
                    kit.record("x", outcome="success", started_at=1000.0)
            assert kit_db.read_bytes() == before
        finally:
            tmp_path.chmod(0o755)
            kit_db.chmod(0o600)


@pytest.fixture
def kit_db(tmp_path: Path) -> Path:
    """A learnkit database with some operations, closed."""
    cfg = write_config(tmp_path)

    async def fill() -> None:
        async with learnkit.open(cfg) as kit:
            now = kit.now()
            for i in range(3000):
                kit.record("x", outcome="success" if i % 3 else "failure",
                           started_at=now - 3600 - i, error_message=f"error {i}" * 5)

    asyncio.run(fill())
    return tmp_path / "learnkit.db"
