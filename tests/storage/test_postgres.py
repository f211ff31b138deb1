"""The PostgreSQL store: selection and secrets, schema, faults, sessions, exactly-once batches.

Tests marked ``pg`` need a server (``LEARNKIT_TEST_PG_URL``; .ci/run starts
one); the rest run anywhere.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import learnkit
from learnkit._storage.factory import location, store_for
from learnkit._storage.postgres import PG_SCHEMA_VERSION, PostgresStore, redact_url

from ..conftest import BASE_CONFIG, PG_ENV, Backend, pg_run, write_config

#: A server is needed: the test exists only when LEARNKIT_TEST_PG_URL is set.
needs_pg = pytest.mark.pg_only


def pg_config(tmp_path: Path, url: str = "postgresql://learnkit@db.example:5432/lk",
              extra: str = "") -> Path:
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG.replace('path = "learnkit.db"\n',
                                     f'path = "learnkit.db"\nurl = "{url}"\n{extra}'))
    return p


class TestSelection:
    def test_url_selects_postgres_and_location_has_no_password(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """[storage] url picks PostgreSQL; LEARNKIT_DATABASE_URL overrides; no password shown."""
        monkeypatch.delenv("LEARNKIT_DATABASE_URL", raising=False)
        cfg = learnkit.load_config(pg_config(tmp_path))
        assert isinstance(store_for(cfg), PostgresStore)
        assert location(cfg) == "postgresql://learnkit@db.example:5432/lk"
        monkeypatch.setenv("LEARNKIT_DATABASE_URL", "postgresql://u:s3cret@h:1/d")
        store = store_for(cfg)
        assert isinstance(store, PostgresStore)
        assert "s3cret" not in store.location and store.location == "postgresql://u@h:1/d"
        monkeypatch.setenv("LEARNKIT_DATABASE_URL", str(tmp_path / "other.db"))
        assert location(cfg) == str(tmp_path / "other.db")

    def test_password_in_the_file_is_refused(self, tmp_path: Path) -> None:
        """A URL holding a password is a config error that says where passwords go."""
        p = pg_config(tmp_path, "postgresql://u:hunter2@h:5432/d")
        with pytest.raises(learnkit.ConfigError, match="password_env") as err:
            learnkit.load_config(p)
        assert "hunter2" not in str(err.value)

    def test_password_env_must_be_set(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """storage.password_env naming an unset variable is a StoreError naming it."""
        monkeypatch.delenv("LEARNKIT_DATABASE_URL", raising=False)
        monkeypatch.delenv("LK_TEST_PW", raising=False)
        cfg = learnkit.load_config(pg_config(tmp_path, extra='password_env = "LK_TEST_PW"\n'))
        with pytest.raises(learnkit.StoreError, match="LK_TEST_PW"):
            store_for(cfg)
        monkeypatch.setenv("LK_TEST_PW", "pw")
        store = store_for(cfg)
        assert isinstance(store, PostgresStore) and store._password == "pw"

    def test_missing_driver_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without asyncpg the error says pip install 'learnkit[postgres]'."""
        monkeypatch.delenv("LEARNKIT_DATABASE_URL", raising=False)
        monkeypatch.setitem(sys.modules, "asyncpg", None)
        cfg = learnkit.load_config(pg_config(tmp_path))
        with pytest.raises(learnkit.StoreError, match=r"pip install 'learnkit\[postgres\]'"):
            store_for(cfg)

    def test_redact(self) -> None:
        assert redact_url("postgresql://a:b@[::1]:5/d?x=1") == "postgresql://a@[::1]:5/d?x=1"
        assert redact_url("postgresql://a@h/d") == "postgresql://a@h/d"

    async def test_unreachable_server_is_unavailable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No server listening: StoreUnavailableError naming the URL (without password)."""
        pytest.importorskip("asyncpg")
        monkeypatch.setenv("LEARNKIT_DATABASE_URL", "postgresql://u:pw@127.0.0.1:9/d")
        with pytest.raises(learnkit.StoreUnavailableError, match="127.0.0.1:9") as err:
            async with learnkit.open(pg_config(tmp_path)):
                pass
        assert "pw@" not in str(err.value)


@pytest.fixture
def pg(backend: Backend) -> str:
    assert backend.url is not None
    return backend.url


def q(url: str, query: str) -> list[dict[str, Any]]:
    return pg_run(url, query)[0]


@needs_pg
class TestSchema:
    async def test_version_and_hosts_opening_at_once(self, tmp_path: Path, pg: str) -> None:
        """Eight stores opening one empty schema at once: one migrates, all open."""
        stores = [PostgresStore(pg) for _ in range(8)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            assert q(pg, "SELECT version FROM learnkit_schema") == [
                {"version": PG_SCHEMA_VERSION}]
            assert len({s.session_id for s in stores}) == 8
        finally:
            await asyncio.gather(*(s.aclose() for s in stores))
        assert q(pg, "SELECT count(*) AS n FROM sessions WHERE state = 'closed'") == [{"n": 8}]

    async def test_newer_schema_is_refused(self, tmp_path: Path, pg: str) -> None:
        s = PostgresStore(pg)
        await s.open()
        await s.aclose()
        pg_run(pg, f"UPDATE learnkit_schema SET version = {PG_SCHEMA_VERSION + 3}")
        with pytest.raises(learnkit.StoreError, match="upgrade learnkit"):
            await PostgresStore(pg).open()

    async def test_rollups_match_rows(self, pg: str, kit: learnkit.Kit) -> None:
        """Hourly rollups, written in the same transaction, equal counts from the rows."""
        outcomes = ["success", "failure", "cancelled", "skipped"]
        for i in range(3000):  # several batches, COPY and INSERT paths
            kit.record(f"t{i % 3}", outcome=outcomes[i % 4], started_at=1000.0 + i * 97,
                       ended_at=1000.0 + i * 97 + 5, context={"c": i % 5},
                       error_message=f"e\x00{i % 4}" if i % 4 == 1 else None)
            if i == 50:
                await kit.flush()
        await kit.flush()
        raw = q(pg, "SELECT op_type, floor(ended_at / 3600)::bigint AS h, outcome, count(*) AS n"
                    " FROM operations GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
        rolled = q(pg, "SELECT op_type, hour AS h, outcome, n FROM rollup_hourly ORDER BY 1, 2, 3")
        assert rolled == raw
        assert q(pg, "SELECT sum(n)::int AS n FROM context_rollup") == [{"n": 3000}]
        # Full-window statistics (rollups + edge rows) equal a fresh aggregation of the rows.
        ws = await kit.database.store.window_stats(1500.0, 1000.0 + 2000 * 97 + 7.0)
        assert sum(ws.outcomes.values()) == sum(
            1 for i in range(3000) if 1500.0 <= 1000.0 + i * 97 + 5 < 1000.0 + 2000 * 97 + 7)


@needs_pg
class TestFaults:
    async def test_connection_loss_is_retried(self, pg: str, kit: learnkit.Kit) -> None:
        """Connections killed by the server: the writer retries; nothing is lost or doubled."""
        for i in range(500):
            kit.record("a", outcome="success", started_at=1000.0 + i)
        await kit.flush()
        base = os.environ[PG_ENV]
        pg_run(base, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'learnkit' AND pid <> pg_backend_pid()")
        for i in range(500):
            kit.record("b", outcome="success", started_at=1000.0 + i)
        assert await kit.flush(timeout=20)
        assert q(pg, "SELECT op_type, count(*) AS n FROM operations GROUP BY 1 ORDER BY 1") == [
            {"op_type": "a", "n": 500}, {"op_type": "b", "n": 500}]
        assert q(pg, "SELECT sum(n)::int AS n FROM rollup_hourly") == [{"n": 1000}]

    async def test_locked_table_is_retried_not_raised(
        self, tmp_path: Path, pg: str
    ) -> None:
        """While another session locks the table, tracking goes on; records land after."""
        import asyncpg

        async with learnkit.open(write_config(tmp_path, busy_timeout=0.05)) as kit:
            blocker = await asyncpg.connect(pg)
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE rollup_hourly IN ACCESS EXCLUSIVE MODE")
            for i in range(30):
                kit.record("locked", outcome="success", started_at=1000.0 + i)
            assert await kit.flush(timeout=0.5) is False
            assert "lock" in (kit.stats.last_error or "")
            assert kit.stats.write_errors >= 1
            await tx.rollback()
            await blocker.close()
            assert await kit.flush(timeout=20) is True
        assert q(pg, "SELECT count(*) AS n FROM operations") == [{"n": 30}]

    async def test_a_batch_committed_twice_is_written_once(
        self, pg: str, kit: learnkit.Kit
    ) -> None:
        """A retry after a lost COMMIT reply is recognised by the batch number."""
        store = kit.database.store
        assert isinstance(store, PostgresStore)
        from learnkit._model import Operation

        ops = []
        for i in range(10):
            op = Operation("x", None, None, 1000.0 + i, 0.0, None)
            op.ended_at, op.duration, op.outcome = 1000.0 + i, 0.0, "success"
            ops.append(op)
        await store.reserve_ids(20)
        batch = store.prepare(ops, [])
        assert await store.commit(batch) == 10
        assert await store.commit(batch) == 10  # as if the first reply was lost
        assert q(pg, "SELECT count(*) AS n FROM operations") == [{"n": 10}]
        assert q(pg, "SELECT sum(n)::int AS n FROM rollup_hourly") == [{"n": 10}]


@needs_pg
class TestSessions:
    async def test_dead_host_running_rows_become_abandoned(
        self, tmp_path: Path, pg: str, kit: learnkit.Kit
    ) -> None:
        """A session of another host whose heartbeat is stale is recovered by host, not pid."""
        pg_run(pg, "INSERT INTO sessions (id, host, pid, started_at, heartbeat_at, state)"
                   " OVERRIDING SYSTEM VALUE VALUES (900001, 'elsewhere', 1, 0, 0, 'open'),"
                   " (900002, 'elsewhere-too', 1, 0, extract(epoch from now()), 'open')",
                   "INSERT INTO operations (id, op_type, outcome, started_at, session_id) VALUES"
                   " (-1, 'hung', 'running', 7200.5, 900001),"
                   " (-2, 'hung', 'running', 7200.5, 900002)")
        async with learnkit.open(kit.config.path) as other:
            assert other.stats.abandoned_on_open == 1
        assert q(pg, "SELECT id, outcome FROM operations ORDER BY id") == [
            {"id": -2, "outcome": "running"}, {"id": -1, "outcome": "abandoned"}]
        assert q(pg, "SELECT hour, n FROM rollup_hourly WHERE outcome = 'abandoned'") == [
            {"hour": 2, "n": 1}]


@needs_pg
class TestMigrate:
    async def test_sqlite_history_moves_and_every_command_agrees(
        self, tmp_path: Path, pg: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`learnkit migrate --to URL` moves rows, rollups and changes, says how many, once;
        then the commands print the same from PostgreSQL as from the file."""
        import random
        import time

        from learnkit._cli import main
        from learnkit._insights.patterns import FailurePattern, Recommendation

        monkeypatch.delenv("LEARNKIT_DATABASE_URL")
        cfg = write_config(tmp_path)
        r = random.Random(1)
        now = time.time()
        async with learnkit.open(cfg) as kit:
            for i in range(2500):
                t = now - r.uniform(3600, 20 * 86400)
                while min(abs(now - t - k * 7 * 86400) for k in (1, 2)) < 3600:
                    t = now - r.uniform(3600, 20 * 86400)  # not near a window's edge
                cx = r.randint(1, 9)
                fail = r.random() < cx / 10
                kit.record("x", outcome="failure" if fail else "success", started_at=t - 1,
                           ended_at=t, key=f"k{i}", error_type="E" if fail else None,
                           error_message=f"timeout after {i} s" if fail else None,
                           context={"complexity": cx})
            await kit.flush()
            ev = FailurePattern(kind="context", description="band", support=50)
            rec = Recommendation(action="lower_threshold:max_complexity", message="m",
                                 confidence=0.9, threshold="max_complexity", current=8,
                                 recommended=7, evidence=(ev,))
            assert await kit.controller.apply({"recommendations": [rec]})  # type: ignore[typeddict-item]

        async def run(*argv: str) -> str:
            assert await asyncio.to_thread(main, ["--config", str(cfg), *argv]) == 0
            text = capsys.readouterr().out
            text = text.replace(str(tmp_path / "learnkit.db"), "DB").replace(redact_url(pg), "DB")
            # Windows end at the moment of the command: times of day and stamps differ.
            text = re.sub(r"\b1[78]\d{8}(\.\d+)?\b", "T", text)
            return re.sub(r"\d{2}:\d{2}(:\d{2})?", "HH:MM", text)

        commands = [("insights", "--json"), ("report", "--days", "30", "--detailed"),
                    ("dashboard", "--plain"), ("thresholds", "history"),
                    ("thresholds", "show"), ("export", "--format", "csv")]
        on_file = [await run(*c) for c in commands]
        out = await run("migrate", "--to", pg)
        assert "migrated 2,500 operation(s)" in out and "1 threshold change(s)" in out
        assert await asyncio.to_thread(main, ["--config", str(cfg), "migrate", "--to", pg]) == 1
        assert "already" in capsys.readouterr().err
        monkeypatch.setenv("LEARNKIT_DATABASE_URL", pg)
        on_server = [await run(*c) for c in commands]
        for c, a, b in zip(commands, on_file, on_server, strict=True):
            assert a.splitlines() == b.splitlines(), c
        assert q(pg, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM operations") == [
            {"n": 2500, "d": 2500}]
        assert q(pg, "SELECT value FROM thresholds") == [{"value": 7.0}]


@needs_pg
class TestImport:
    async def test_import_matches_the_file_and_twice_adds_nothing(
        self, tmp_path: Path, pg: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`learnkit import` into PostgreSQL: the same rows, rollups and commands as the
        file it came from; a second import adds nothing; into a store with operations the
        records get new ids and parent links follow them."""
        import time

        from learnkit._cli import main

        monkeypatch.delenv("LEARNKIT_DATABASE_URL")
        cfg = write_config(tmp_path)
        now = time.time()
        async with learnkit.open(cfg) as kit:
            for i in range(300):
                t = now - 86400 - i * 977.0
                fail = i % 3 == 0
                kit.record("issue", outcome="failure" if fail else "success", started_at=t - 2,
                           ended_at=t, key=f"k{i}", error_type="E" if fail else None,
                           error_message=f"timeout after {i} s" if fail else None,
                           context={"complexity": i % 9, "lang": ["go", "py"][i % 2]})
            async with learnkit.track("parent", key="p"), learnkit.track("child", key="c"):
                pass
            await kit.flush()

        def cli(*argv: str) -> str:
            assert main(["--config", str(cfg), *argv]) == 0, capsys.readouterr().err
            return capsys.readouterr().out

        dump = tmp_path / "all.jsonl"
        await asyncio.to_thread(cli, "export", "--output", str(dump))
        on_file = await asyncio.to_thread(cli, "report", "--days", "30", "--detailed")
        monkeypatch.setenv("LEARNKIT_DATABASE_URL", pg)
        out = await asyncio.to_thread(cli, "import", str(dump))
        assert "imported 302 operation(s)" in out
        out = await asyncio.to_thread(cli, "import", str(dump))
        assert "imported 0 operation(s)" in out and "302 already in the database" in out
        on_server = await asyncio.to_thread(cli, "report", "--days", "30", "--detailed")
        strip = lambda s: re.sub(r"\d{2}:\d{2}(:\d{2})?", "HH:MM", s.replace(  # noqa: E731
            str(tmp_path / "learnkit.db"), "DB").replace(redact_url(pg), "DB")).splitlines()
        assert strip(on_file) == strip(on_server)
        assert q(pg, "SELECT count(*) AS n FROM operations") == [{"n": 302}]
        assert q(pg, "SELECT sum(n) AS n FROM rollup_hourly") == [{"n": 302}]
        pairs = q(pg, "SELECT c.op_type AS child, p.op_type AS parent FROM operations c"
                      " JOIN operations p ON p.id = c.parent_id")
        assert pairs == [{"child": "child", "parent": "parent"}]

        # into a store that holds operations: new ids, the parent link follows
        other = tmp_path / "other.jsonl"
        lines = dump.read_text().splitlines()
        import json

        moved = []
        for line in lines:
            rec = json.loads(line)
            if rec["op_type"] in ("parent", "child"):
                rec["key"] = rec["key"] + "-again"
                moved.append(json.dumps(rec))
        # text PostgreSQL cannot hold (NUL, a lone surrogate) arrives as U+FFFD
        moved.append('{"op_type": "odd", "outcome": "failure", "started_at": 1700000000,'
                     ' "ended_at": 1700000001, "error_type": "E",'
                     ' "error_message": "a\\u0000b\\ud800c"}')
        other.write_text("\n".join(moved) + "\n")
        out = await asyncio.to_thread(cli, "import", str(other))
        assert "imported 3 operation(s)" in out
        assert q(pg, "SELECT error_message AS m FROM operations WHERE op_type = 'odd'") == [
            {"m": "a\ufffdb\ufffdc"}]
        pairs = q(pg, "SELECT c.key AS child, p.key AS parent FROM operations c"
                      " JOIN operations p ON p.id = c.parent_id ORDER BY c.id")
        assert pairs == [{"child": "c", "parent": "p"},
                         {"child": "c-again", "parent": "p-again"}]
