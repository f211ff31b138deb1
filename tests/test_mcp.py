"""`learnkit mcp`: started as a subprocess, driven by the MCP SDK's own client over stdio."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# Not skipped when missing: `mcp` is in the `test` extra, so CI always runs this.
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import learnkit

from .conftest import BASE_CONFIG

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A week where complexity 8 mostly fails with one error."""
    d = tmp_path_factory.mktemp("mcp")
    p = d / "learnkit.toml"
    p.write_text(BASE_CONFIG)

    async def plant() -> None:
        r = random.Random(4)
        now = time.time()
        async with learnkit.open(p) as kit:
            for _ in range(600):
                cx = r.randint(1, 8)
                t = now - r.uniform(60, 6 * DAY)
                if r.random() < (0.85 if cx == 8 else 0.05):
                    kit.record("process_issue", outcome="failure", started_at=t,
                               context={"complexity": cx}, error_type="ConnectionError",
                               error_message=f"connection to db-{r.randint(1, 9)} refused")
                else:
                    kit.record("process_issue", outcome="success", started_at=t,
                               context={"complexity": cx})

    asyncio.run(plant())
    return p


@pytest.fixture
def config(planted: Path, tmp_path: Path) -> Path:
    """A private copy of the planted config and database."""
    for f in planted.parent.iterdir():
        if f.name.startswith("learnkit"):
            shutil.copy(f, tmp_path / f.name)
    return tmp_path / "learnkit.toml"


async def learn(config: Path) -> None:
    async with learnkit.open(config, learning_loop=False) as kit:
        assert (await kit.learn_once()).applied


def count_rows(p: Path) -> int:
    conn = sqlite3.connect(p.parent / "learnkit.db")
    try:
        return int(conn.execute("SELECT count(*) FROM operations").fetchone()[0])
    finally:
        conn.close()


async def session_calls(config: Path, calls: list[tuple[str, dict[str, Any]]],
                        *extra: str) -> tuple[list[str], list[Any]]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "learnkit", "--config", str(config), "mcp", *extra],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(config.parent))
    results = []
    with open(os.devnull, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            names = [t.name for t in (await session.list_tools()).tools]
            for name, arguments in calls:
                res = await session.call_tool(name, arguments)
                # `is_error` in SDK 2.x, `isError` in 1.x
                assert not getattr(res, "is_error", getattr(res, "isError", False)), res
                results.append(json.loads(res.content[0].text))
    return names, results


async def test_lists_and_calls_every_tool(config: Path) -> None:
    await learn(config)  # a threshold change for the history
    before = count_rows(config)
    names, (summary, patterns, clusters, thresholds, attempt, easy) = await asyncio.wait_for(
        session_calls(config, [
            ("summary", {"days": 7}),
            ("failure_patterns", {"limit": 5}),
            ("error_clusters", {}),
            ("thresholds", {}),
            ("should_attempt", {"op_type": "process_issue", "attributes": {"complexity": 8}}),
            ("should_attempt", {"op_type": "process_issue", "attributes": {"complexity": 3}}),
        ]), 120)
    assert sorted(names) == ["error_clusters", "failure_patterns", "should_attempt",
                             "summary", "thresholds"]  # read-only: no apply tool
    assert summary["sample_size"] == 600 and 0.5 < summary["success_rate"] < 0.95
    assert summary["recommendations"]
    assert any(p["kind"] == "context" for p in patterns["patterns"])
    [cluster] = clusters["error_clusters"]
    assert cluster["error_type"] == "ConnectionError" and "refused" in cluster["example"]
    assert patterns["error_clusters"][0]["example"] == cluster["example"]
    th = thresholds["thresholds"]["max_complexity"]
    assert th["value"] == 7 and [(c["old_value"], c["new_value"], c["kind"])
                                 for c in th["history"]] == [(8, 7, "lower")]
    assert attempt["attempt"] is False and attempt["threshold"] == "max_complexity"
    assert "complexity = 8 > 7" in attempt["reason"]
    [band] = attempt["bands"]
    assert band["value"] == 8 and band["successes"] + band["failures"] > 40
    assert band["success_rate"] < band["break_even"] and band["p_worth_attempting"] < 0.05
    assert easy["attempt"] is True and easy["reason"] == "within every threshold"
    assert easy["bands"][0]["success_rate"] > 0.8
    assert count_rows(config) == before  # nothing recorded: no skipped row


async def test_apply_only_with_the_flag(config: Path) -> None:
    names, (applied,) = await asyncio.wait_for(
        session_calls(config, [("apply_recommendations", {})], "--allow-apply"), 120)
    assert "apply_recommendations" in names
    assert [(c["old_value"], c["new_value"]) for c in applied["applied"]] == [(8, 7)]
    assert learnkit.load_config(config).thresholds["max_complexity"].value == 7


def test_read_only_server_needs_a_database(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Read-only means it does not even create the database: a clear error instead."""
    from learnkit._cli import main

    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG)
    assert main(["--config", str(p), "mcp"]) == 1
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "learnkit.db").exists()
