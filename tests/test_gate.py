"""`learnkit gate`: exit codes on a planted regression, a healthy database, releases, too little data."""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from pathlib import Path

import pytest

import learnkit
from learnkit._cli import main
from learnkit._gate import parse_duration

from .conftest import BASE_CONFIG

DAY = 86400.0
OLD_ERRORS = [("TimeoutError", "request {n} timed out after 30 s"),
              ("TestFailure", "test_{n} failed")]


def plant(tmp_path: Path, *, recent_fail: float, new_error: bool, release: bool = False,
          n_recent: int = 300) -> Path:
    """14 days of a 10% failure baseline, then a last day failing ``recent_fail``."""
    p = tmp_path / "learnkit.toml"
    p.write_text(BASE_CONFIG)

    async def go() -> None:
        r = random.Random(11)
        now = time.time()
        async with learnkit.open(p) as kit:
            def one(t: float, fail: float, rel: str, fresh: bool) -> None:
                ctx = {"complexity": r.randint(1, 8)}
                if release:
                    ctx["release"] = rel
                if r.random() >= fail:
                    kit.record("process_issue", outcome="success", started_at=t, context=ctx)
                    return
                if fresh and r.random() < 0.7:
                    et, msg = "ConnectionError", f"connection to db-{r.randint(1, 9)} refused"
                else:
                    et, tpl = r.choice(OLD_ERRORS)
                    msg = tpl.format(n=r.randint(1, 999))
                kit.record("process_issue", outcome="failure", started_at=t, context=ctx,
                           error_type=et, error_message=msg)

            for _ in range(1500):
                one(now - r.uniform(DAY + 60, 15 * DAY - 60), 0.10, "1.0", False)
            for _ in range(n_recent):
                one(now - r.uniform(60, DAY - 60), recent_fail, "1.1", new_error)

    asyncio.run(go())
    return p


def gate(p: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["--config", str(p), "gate", *argv], out=out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def regressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return plant(tmp_path_factory.mktemp("bad"), recent_fail=0.35, new_error=True, release=True)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return plant(tmp_path_factory.mktemp("good"), recent_fail=0.10, new_error=False, release=True)


def test_planted_regression_exits_1(regressed: Path) -> None:
    code, out = gate(regressed, "--recent", "1d", "--baseline", "14d")
    assert code == 1, out
    assert out.startswith("learnkit gate: FAIL")
    assert "success rate dropped" in out and "new error cluster ConnectionError" in out


def test_healthy_database_exits_0(healthy: Path) -> None:
    code, out = gate(healthy, "--recent", "1d", "--baseline", "14d")
    assert code == 0, out
    assert out.startswith("learnkit gate: PASS")


def test_json_for_scripts(regressed: Path, healthy: Path) -> None:
    code, out = gate(regressed, "--json")
    doc = json.loads(out)
    assert code == doc["exit_code"] == 1 and doc["verdict"] == "regression"
    assert doc["rate_regressed"] and doc["probability"] >= 0.95
    assert doc["recent"]["n"] == 300 and doc["baseline"]["n"] == 1500
    [cluster] = doc["new_clusters"]
    assert cluster["error_type"] == "ConnectionError" and "refused" in cluster["example"]
    code, out = gate(healthy, "--format", "json")
    assert code == 0 and json.loads(out)["new_clusters"] == []


def test_markdown_for_a_ci_job_summary(regressed: Path) -> None:
    code, out = gate(regressed, "--format", "markdown")
    assert code == 1
    assert out.startswith("## ❌ learnkit gate: FAIL")
    assert "| recent | 300 |" in out and "### New error clusters" in out


def test_new_cluster_alone_fails_and_its_size_is_configurable(tmp_path: Path) -> None:
    """The same rate, but a new error: the cluster check fails it unless it is too small."""
    p = plant(tmp_path, recent_fail=0.10, new_error=True)
    code, out = gate(p)
    assert code == 1 and "success rate dropped" not in out and "new error cluster" in out
    code, out = gate(p, "--new-cluster-size", "1000")
    assert code == 0, out


def test_margin_and_confidence_decide(regressed: Path) -> None:
    """A drop smaller than the margin passes the rate check (the new cluster still fails)."""
    code, out = gate(regressed, "--margin", "0.5", "--new-cluster-size", "1000")
    assert code == 0, out


def test_by_release(regressed: Path, healthy: Path) -> None:
    code, out = gate(regressed, "--release", "1.1", "--against", "1.0", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["mode"] == "release", out
    assert doc["recent"]["label"] == "release 1.1" and doc["recent"]["n"] == 300
    assert [c["error_type"] for c in doc["new_clusters"]] == ["ConnectionError"]
    code, out = gate(healthy, "--release", "1.1", "--against", "1.0")
    assert code == 0, out
    code, out = gate(healthy, "--release", "9.9", "--against", "1.0")
    assert code == 3 and "release 9.9 has 0 outcome(s)" in out


def test_not_enough_data_exits_3(tmp_path: Path) -> None:
    p = plant(tmp_path, recent_fail=0.5, new_error=True, n_recent=5)
    code, out = gate(p)
    assert code == 3 and "NOT ENOUGH DATA" in out
    (tmp_path / "learnkit.db").unlink()
    code, _ = gate(p)
    assert code == 3


@pytest.mark.parametrize("argv", [
    ["--release", "1.1"], ["--recent", "soon"], ["--release", "1", "--against", "0", "--recent",
                                                  "1d"], ["--margin", "2"], ["--days", "3"],
    ["--json", "--format", "text"],
])
def test_usage_errors_exit_2(healthy: Path, argv: list[str],
                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = gate(healthy, *argv)
    assert code == 2
    assert "learnkit: error:" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path) -> None:
    p = tmp_path / "learnkit.toml"
    p.write_text("[learning]\nmin_sample = 3\n")
    assert gate(p)[0] == 2
    assert gate(tmp_path / "missing.toml")[0] == 2


def test_durations() -> None:
    assert parse_duration("1d") == DAY and parse_duration("12h") == DAY / 2
    assert parse_duration("2w") == 14 * DAY and parse_duration("3") == 3 * DAY
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800
