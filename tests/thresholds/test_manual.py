"""kit.config.update: manual threshold changes through the controller's checked path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs
import pytest

import learnkit

from ..conftest import BASE_CONFIG, Clock

FOREIGN = '\n[orchestrator]\nname = "bot"\n'
SECOND = """
[thresholds.max_files]
value = 20
attribute = "files_changed"
min = 5
max = 40
step = 5
"""


def config(tmp_path: Path, text: str = BASE_CONFIG + FOREIGN) -> Path:
    p = tmp_path / "learnkit.toml"
    p.write_text(text)
    return p


def value_in_file(p: Path, name: str = "max_complexity") -> int | float:
    v: int | float = tomllib.loads(p.read_text())["thresholds"][name]["value"]
    return v


class TestUpdate:
    async def test_awaited_change_is_written_in_force_and_recorded(self, tmp_path: Path) -> None:
        p = config(tmp_path)
        async with learnkit.open(p, clock=Clock()) as kit:
            changes = await kit.config.update(max_complexity=7)
            assert kit.thresholds["max_complexity"] == 7
            assert kit.config.thresholds["max_complexity"].value == 7
            assert [(c.kind, c.old_value, c.new_value, c.confidence) for c in changes] == [
                ("manual", 8, 7, None)]
            history = await kit.controller.history("max_complexity")
            assert [(c.kind, c.new_value, c.status) for c in history] == [
                ("manual", 7, "applied")]
        assert value_in_file(p) == 7
        assert tomllib.loads(p.read_text())["orchestrator"] == {"name": "bot"}

    async def test_unawaited_change_is_made_and_recorded_by_close(self, tmp_path: Path) -> None:
        """The specification's ``config.update(max_complexity=...)`` without await works."""
        p = config(tmp_path)
        async with learnkit.open(p, clock=Clock()) as kit:
            kit.config.update(max_complexity=7)
            assert kit.thresholds["max_complexity"] == 7  # in force at once
            assert value_in_file(p) == 7
        async with learnkit.open(p, clock=Clock()) as kit:
            history = await kit.controller.history()
            assert [(c.kind, c.old_value, c.new_value) for c in history] == [("manual", 8, 7)]

    async def test_bounds_and_step_are_enforced(self, tmp_path: Path) -> None:
        p = config(tmp_path, BASE_CONFIG.replace("value = 8", "value = 3"))
        async with learnkit.open(p, clock=Clock()) as kit:
            with pytest.raises(ValueError, match="outside"):
                kit.config.update(max_complexity=2)
            with pytest.raises(ValueError, match="step"):
                kit.config.update(max_complexity=5)
            with pytest.raises(ValueError, match="number"):
                kit.config.update(max_complexity=True)
            assert kit.thresholds["max_complexity"] == 3
            await kit.controller.drain()
            assert await kit.controller.history() == []
        assert value_in_file(p) == 3

    async def test_every_value_is_checked_before_any_is_written(self, tmp_path: Path) -> None:
        p = config(tmp_path, BASE_CONFIG + SECOND)
        async with learnkit.open(p, clock=Clock()) as kit:
            with pytest.raises(ValueError, match="max_files"):
                kit.config.update(max_complexity=7, max_files=30)
            assert value_in_file(p) == 8
            changes = await kit.config.update(max_complexity=7, max_files=25)
            assert {c.name: c.new_value for c in changes} == {"max_complexity": 7,
                                                              "max_files": 25}
        assert (value_in_file(p), value_in_file(p, "max_files")) == (7, 25)

    async def test_unknown_name_and_no_op(self, tmp_path: Path) -> None:
        p = config(tmp_path)
        async with learnkit.open(p, clock=Clock()) as kit:
            with pytest.raises(learnkit.UnknownThresholdError, match="max_complexty"):
                kit.config.update(max_complexty=7)
            assert await kit.config.update(max_complexity=8) == []
            assert await kit.controller.history() == []

    async def test_an_edit_since_is_read_and_steps_from_it(self, tmp_path: Path) -> None:
        """A person's edit the kit has not seen yet is re-read, never clobbered."""
        p = config(tmp_path)
        async with learnkit.open(p, clock=Clock()) as kit:
            p.write_text(p.read_text().replace("value = 8", "value = 6"))
            with pytest.raises(ValueError, match="from 6"):
                kit.config.update(max_complexity=8)
            changes = await kit.config.update(max_complexity=5)
            assert [(c.old_value, c.new_value) for c in changes] == [(6, 5)]
        assert value_in_file(p) == 5

    async def test_manual_change_is_not_rolled_back_by_the_controller(
        self, tmp_path: Path
    ) -> None:
        p = config(tmp_path)
        async with learnkit.open(p, clock=Clock()) as kit:
            await kit.config.update(max_complexity=7)
            with pytest.raises(learnkit.LearnkitError, match="no applied change"):
                await kit.controller.rollback("max_complexity")
            assert await kit.controller.evaluate() == []

    async def test_config_stays_a_config(self, tmp_path: Path) -> None:
        """kit.config is the Config in force: same class, equality and fields."""
        p = config(tmp_path)
        async with learnkit.open(p, clock=Clock()) as kit:
            cfg = kit.config
            assert type(cfg) is learnkit.Config
            assert cfg == learnkit.load_config(p)
            assert "updater" not in repr(cfg)
            assert cfg.thresholds["max_complexity"].value == 8
            with pytest.raises(learnkit.LearnkitError, match="not bound"):
                attrs.evolve(cfg).update(max_complexity=7)

    def test_a_loaded_config_is_not_bound(self, tmp_path: Path) -> None:
        cfg = learnkit.load_config(config(tmp_path))
        with pytest.raises(learnkit.LearnkitError, match="kit.config.update"):
            cfg.update(max_complexity=7)
