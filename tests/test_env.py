"""The environment (LEARNKIT_CONFIG, LEARNKIT_DISABLED) and learnkit.testing."""

from __future__ import annotations

import io
import logging
import random
from pathlib import Path

import pytest

import learnkit
import learnkit.testing
from learnkit import track, tracked
from learnkit._cli import main

from .conftest import BASE_CONFIG, rows


@tracked("work")
async def work(fail: bool) -> int:
    if fail:
        raise ValueError("bad")
    return 1


class TestEnvironment:
    async def test_learnkit_config_names_the_default_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        cfg = tmp_path / "elsewhere.toml"
        cfg.write_text(BASE_CONFIG)
        monkeypatch.setenv("LEARNKIT_CONFIG", str(cfg))
        monkeypatch.chdir(tmp_path)
        async with learnkit.open() as kit:
            assert kit.config.path == cfg.resolve()
            await work(False)
        assert len(rows(tmp_path / "learnkit.db")) == 1

    def test_learnkit_config_is_the_cli_default(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        cfg = tmp_path / "elsewhere.toml"
        cfg.write_text(BASE_CONFIG.replace("max_complexity", "max_size"))
        monkeypatch.setenv("LEARNKIT_CONFIG", str(cfg))
        monkeypatch.chdir(tmp_path)
        out = io.StringIO()
        assert main(["thresholds", "show"], out=out) == 0
        assert "max_size" in out.getvalue()

    async def test_disabled_records_nothing_and_warns_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        (tmp_path / "learnkit.toml").write_text(BASE_CONFIG)
        monkeypatch.setenv("LEARNKIT_DISABLED", "1")
        learnkit._tracking._State.warned = False
        with caplog.at_level(logging.WARNING, logger="learnkit"):
            # A seeded draw: refused work far beyond the limit is still explored
            # with a small probability, which must not decide this test.
            async with learnkit.open(tmp_path / "learnkit.toml", random=random.Random(0)) as kit:
                assert await work(False) == 1
                with pytest.raises(ValueError):
                    await work(True)
                async with track("block") as op:
                    op.fail("X")
                kit.record("x", outcome="success", started_at=1.0)
                assert not kit.admit("x", complexity=12)  # thresholds still decide
                await kit.flush()
                assert not await kit.database.store.has_operations()
        assert not [r for r in caplog.records if "untracked" in r.getMessage()]
        monkeypatch.delenv("LEARNKIT_DISABLED")
        async with learnkit.open(tmp_path / "learnkit.toml"):
            await work(False)
        assert len(rows(tmp_path / "learnkit.db")) == 1


class TestTestingMode:
    async def test_kit_and_assertions(self) -> None:
        async with learnkit.testing.kit(
            thresholds={"max_complexity": {"value": 8, "attribute": "complexity"}}
        ) as kit:
            directory = kit.config.path.parent
            assert kit.thresholds["max_complexity"] == 8
            async with track("process_issue", complexity=9) as op:
                async with track("run_tests"):
                    pass
                op.fail("TestFailure", "Unit tests failed")
            ops = await learnkit.testing.tracked(kit)
            assert [(o.op_type, o.outcome) for o in ops] == [
                ("run_tests", "success"), ("process_issue", "failure")]
            assert ops[0].parent_id == ops[1].id and ops[1].parent_id is None
            (got,) = await learnkit.testing.assert_tracked(
                kit, "process_issue", outcome="failure", error_type="TestFailure", complexity=9)
            assert got.error_message == "Unit tests failed"
            with pytest.raises(AssertionError, match=r"expected 1 'process_issue'.*found 0"):
                await learnkit.testing.assert_tracked(kit, "process_issue", outcome="success",
                                                      count=1)
        assert not directory.exists()
