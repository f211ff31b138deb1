"""The specification's names in the summary, and the one default window."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import learnkit

from ..conftest import BASE_CONFIG, T0, Clock

DAY = 86400.0


def config(tmp_path: Path, text: str = BASE_CONFIG) -> Path:
    p = tmp_path / "learnkit.toml"
    p.write_text(text)
    return p


def plant(kit: learnkit.Kit, *, start: float, end: float, n: int = 600) -> None:
    """Complexity 8 fails 90% of the time, the rest 5%."""
    r = random.Random(3)
    for _ in range(n):
        t = r.uniform(start, end)
        cx = r.randint(1, 8)
        fail = r.random() < (0.9 if cx == 8 else 0.05)
        kit.record("process_issue", outcome="failure" if fail else "success", started_at=t,
                   context={"complexity": cx})


async def summary(tmp_path: Path, text: str = BASE_CONFIG, *, data: bool = True,
                  **kw: Any) -> dict[str, Any]:
    async with learnkit.open(config(tmp_path, text), clock=Clock()) as kit:
        if data:
            plant(kit, start=T0 - 6 * DAY, end=T0)
            await kit.flush()
        return dict(await kit.insights.generate_summary(**kw))


class TestAliases:
    async def test_recommended_attribute_and_spec_action(self, tmp_path: Path) -> None:
        s = await summary(tmp_path)
        assert s["recommended_thresholds"] == {"max_complexity": 7}
        assert s["recommended_complexity"] == 7
        i = s["actions"].index("lower_threshold:max_complexity")
        assert s["actions"][i + 1] == "reduce_complexity_threshold"

    async def test_no_recommendation_means_the_value_in_force(self, tmp_path: Path) -> None:
        s = await summary(tmp_path, data=False)
        assert s["recommended_thresholds"] == {}
        assert s["recommended_complexity"] == 8
        assert s["actions"] == []

    async def test_a_raise_is_an_increase(self) -> None:
        from learnkit._config import ThresholdConfig
        from learnkit._insights.generator import spec_action

        th = ThresholdConfig(value=6, attribute="complexity")
        up = learnkit.Recommendation(action="raise_threshold:max_complexity", message="",
                                     confidence=0.9, threshold="max_complexity", current=6,
                                     recommended=7)
        assert spec_action(up, th) == "increase_complexity_threshold"

    async def test_an_ambiguous_attribute_gets_no_alias(self, tmp_path: Path) -> None:
        second = ('\n[thresholds.min_complexity]\nvalue = 1\nattribute = "complexity"\n'
                  'limit = "min"\nmin = 0\nmax = 5\n')
        s = await summary(tmp_path, BASE_CONFIG + second)
        assert "recommended_complexity" not in s
        assert "reduce_complexity_threshold" not in s["actions"]
        assert "lower_threshold:max_complexity" in s["actions"]

    async def test_a_taken_key_is_not_overwritten(self, tmp_path: Path) -> None:
        text = BASE_CONFIG.replace('attribute = "complexity"', 'attribute = "thresholds"')
        s = await summary(tmp_path, text, data=False)
        assert s["recommended_thresholds"] == {}


class TestOneDefaultWindow:
    async def test_every_answer_uses_learning_window_days(self, tmp_path: Path) -> None:
        """Data 10 to 4 days ago: a 3-day default sees none of it, an explicit 14 days does."""
        text = BASE_CONFIG.replace("[learning]\n", "[learning]\nwindow_days = 3\n")
        async with learnkit.open(config(tmp_path, text), clock=Clock()) as kit:
            plant(kit, start=T0 - 10 * DAY, end=T0 - 4 * DAY)
            await kit.flush()
            ins = kit.insights
            assert (await ins.generate_summary())["days"] == 3
            assert not await ins.recommend_threshold_adjustment("max_complexity")
            assert await ins.get_recommended_threshold("max_complexity") is None
            assert await ins.recommend_threshold_adjustment("max_complexity", days=14)
            assert await ins.get_recommended_threshold("max_complexity", days=14) == 7
            assert (await ins.generate_summary(14))["recommended_complexity"] == 7
