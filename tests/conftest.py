"""Fixtures: a real learnkit.toml and SQLite file in tmp_path, and a settable clock.

The ``backend`` fixture runs a test on every storage backend: SQLite always,
and PostgreSQL when ``LEARNKIT_TEST_PG_URL`` names a server's database (each
test then gets a schema of its own, through ``LEARNKIT_DATABASE_URL``, which
subprocesses inherit). A module opts in with
``pytestmark = pytest.mark.usefixtures("backend")``; :func:`rows`,
:func:`sql` and :func:`threshold_value` read whichever backend is active.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import tomllib
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_asyncio

import learnkit

#: A PostgreSQL database the tests may create schemas in (.ci/postgres.sh starts one).
PG_ENV = "LEARNKIT_TEST_PG_URL"
URL_ENV = "LEARNKIT_DATABASE_URL"


@attrs.frozen
class Backend:
    """The storage backend a test runs on."""

    name: str
    #: The PostgreSQL URL (with the test's own search_path), or None for SQLite.
    url: str | None = None

    @property
    def shared(self) -> bool:
        """Threshold values live in the database (PostgreSQL), not the file."""
        return self.url is not None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker
        pg = ["postgresql"] if os.environ.get(PG_ENV) and not marker("sqlite_only") else []
        names = pg if marker("pg_only") else ["sqlite", *pg]
        metafunc.parametrize("backend", names, indirect=True)


def pg_run(url: str, *queries: str) -> list[list[dict[str, Any]]]:
    """Run queries on PostgreSQL from sync code (even inside a running event loop)."""
    import asyncpg

    out: list[list[dict[str, Any]]] = []
    error: list[BaseException] = []

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            for q in queries:
                out.append([dict(r.items()) for r in await conn.fetch(q)])
        finally:
            await conn.close()

    def thread() -> None:
        try:
            asyncio.run(go())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    if error:
        raise error[0]
    return out


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``search_path`` set to ``schema`` (asyncpg: a server setting)."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["search_path"] = schema
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@pytest.fixture
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    if request.param == "sqlite":
        monkeypatch.delenv(URL_ENV, raising=False)
        yield Backend("sqlite")
        return
    base = os.environ[PG_ENV]
    schema = f"t_{uuid.uuid4().hex[:16]}"
    pg_run(base, f"CREATE SCHEMA {schema}")
    url = with_schema(base, schema)
    monkeypatch.setenv(URL_ENV, url)
    try:
        yield Backend("postgresql", url)
    finally:
        pg_run(base, f"DROP SCHEMA {schema} CASCADE")


def reset(backend: Backend) -> None:
    """Empty the PostgreSQL schema of a test (for hypothesis examples sharing one test)."""
    if backend.url is not None:
        schema = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(backend.url).query))[
            "search_path"]
        pg_run(os.environ[PG_ENV], f"DROP SCHEMA {schema} CASCADE", f"CREATE SCHEMA {schema}")


def active_pg_url() -> str | None:
    """The PostgreSQL URL the ``backend`` fixture put in force, if any."""
    url = os.environ.get(URL_ENV, "")
    return url if url.startswith("postgresql://") else None


def sql(db: Path, query: str) -> list[dict[str, Any]]:
    """Rows of a query on the active backend: the SQLite file ``db``, or PostgreSQL."""
    url = active_pg_url()
    if url is not None:
        return pg_run(url, query)[0]
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(query)]
    finally:
        conn.close()


def threshold_value(config: Path, name: str = "max_complexity") -> Any:
    """The value in force of a threshold: the shared store's, else the file's."""
    url = active_pg_url()
    if url is not None:
        got = pg_run(url, f"SELECT value FROM thresholds WHERE name = '{name}'")[0]
        if got:
            v = got[0]["value"]
            return int(v) if float(v).is_integer() else v
    return tomllib.loads(config.read_text())["thresholds"][name]["value"]

BASE_CONFIG = """\
[learning]
enabled = false
min_samples = 10
confidence_threshold = 0.7

[storage]
path = "learnkit.db"
flush_interval = 0.02

[thresholds.max_complexity]
value = 8
attribute = "complexity"
limit = "max"
min = 3
max = 12
step = 1
description = "Largest issue complexity the orchestrator attempts"
"""

T0 = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC, a fixed "now" for windows


class Clock:
    """A settable clock: ``clock()`` returns ``clock.now``."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_config(tmp_path: Path, text: str = BASE_CONFIG, **storage: Any) -> Path:
    """Write learnkit.toml into tmp_path, with extra [storage] keys appended."""
    extra = "".join(f"{k} = {v!r}\n" for k, v in storage.items())
    text = text.replace('path = "learnkit.db"\n', 'path = "learnkit.db"\n' + extra)
    p = tmp_path / "learnkit.toml"
    p.write_text(text)
    return p


def rows(db: Path, where: str = "TRUE") -> list[dict[str, Any]]:
    """Every operation row as a dict, read directly (not through learnkit) from the
    active backend: the SQLite file ``db``, or the PostgreSQL schema in force."""
    return sql(db, f"SELECT * FROM operations WHERE {where} ORDER BY id")


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def kit(config_path: Path) -> AsyncIterator[learnkit.Kit]:
    async with learnkit.open(config_path) as k:
        yield k

