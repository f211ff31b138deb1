"""Numbers a user can trust at a glance: top-level headlines, stated windows, tiers, units."""

from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path

import pytest

import learnkit
from learnkit import track
from learnkit._cli import main
from learnkit._views.render import collect, dashboard_rich, findings, human_duration

from .conftest import Clock, write_config


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("demo")
    assert run("demo", str(d))[0] == 0
    return d


@pytest.fixture
def demo(demo_dir: Path, tmp_path: Path) -> Path:
    for f in demo_dir.iterdir():
        if f.name.startswith("learnkit"):
            shutil.copy(f, tmp_path / f.name)
    return tmp_path / "learnkit.toml"


async def test_headline_counts_a_nested_failure_once(tmp_path: Path) -> None:
    """200 issues, each with a nested test run: the headline is over the 200, not 400."""
    clock = Clock()
    async with learnkit.open(write_config(tmp_path), clock=clock) as kit:
        for i in range(200):
            async with track("process_issue") as issue:
                async with track("run_tests") as tests:
                    if i % 4 == 0:
                        tests.fail("TestFailure")
                if i % 4 == 0:
                    issue.fail("TestFailure")
        clock.advance(1)
        await kit.flush()
        top = await kit.analytics.get_rate(1, top_level=True)
        pooled = await kit.analytics.get_rate(1)
        assert (top.successes, top.failures) == (150, 50)
        assert (pooled.successes, pooled.failures) == (300, 100)
        assert await kit.analytics.get_success_rate(1, top_level=True) == 0.75


def test_every_view_states_its_window_and_the_loops(demo: Path) -> None:
    """--days 1 is honoured and the difference from the loop's window is said."""
    code, out = run("--config", str(demo), "dashboard", "--days", "1")
    assert code == 0
    assert "(last 1 day (the learning loop and `thresholds apply` use 7" in out
    assert "last 30 days" not in out and "last 7 days " not in out
    code, out = run("--config", str(demo), "report")
    assert code == 0 and "# learnkit report: last 7 days" in out  # the loop's window
    assert "Every number covers the last 7 days." in out
    code, out = run("--config", str(demo), "report", "--days", "30")
    assert "analyse the last 7 days (learning.window_days) and may decide differently" in out
    code, out = run("--config", str(demo), "thresholds", "apply")
    assert "analysed the last 7 days (learning.window_days" in out


def test_tiers_and_short_findings(demo: Path) -> None:
    """Findings carry a tier and one short sentence; the floor hides the weak ones."""
    code, out = run("--config", str(demo), "insights", "--days", "30")
    assert code == 0
    lines = [ln for ln in out.splitlines() if ln.startswith(("  strong", "  suggestive"))]
    assert lines and all(len(ln.split()) <= 20 for ln in lines)


async def test_floor_hides_weak_patterns_and_says_how_many(demo: Path) -> None:
    import attrs

    from learnkit._views.render import report_markdown

    async with learnkit.open(demo, learning_loop=False) as kit:
        snap = await collect(kit, 30)
    (_, strong), *_ = findings(snap)[0]
    hidden = findings(snap)[1]
    weak = [attrs.evolve(strong, confidence=c) for c in (0.03, 0.6)]
    summary = {**snap.summary, "failure_patterns": [*snap.summary["failure_patterns"], *weak]}
    snap = attrs.evolve(snap, summary=summary)
    tiers = [t for t, _ in findings(snap)[0]]
    assert tiers.count("suggestive") == 1 + [t for t, _ in findings(attrs.evolve(
        snap, summary={**summary, "failure_patterns": summary["failure_patterns"][:-2]}))[0]
    ].count("suggestive")
    assert findings(snap)[1] == hidden + 1
    text = report_markdown(snap)
    assert "below confidence 0.5 not shown (`learning.display_floor`)" in text
    assert "| suggestive |" in text and "0.03" not in text


async def test_cluster_mix_and_clusters_are_not_findings(demo: Path) -> None:
    async with learnkit.open(demo, learning_loop=False) as kit:
        snap = await collect(kit, 30)
    shown, _ = findings(snap)
    assert shown
    assert all(p.kind != "error_cluster" and p.error_type is None for _, p in shown)
    assert all(t in ("strong", "suggestive") for t, _ in shown)


@pytest.mark.parametrize(("seconds", "text"), [
    (4.39e-06, "4.39 us"), (0.0123, "12.3 ms"), (4.2, "4.2 s"), (200, "3 min 20 s"),
    (7500, "2 h 05 min"), (None, "n/a"),
])
def test_durations_in_human_units(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


def test_dashboard_colours_good_and_bad_and_honours_no_color(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    async def render() -> str:
        async with learnkit.open(demo, learning_loop=False) as kit:
            snap = await collect(kit)
        console = Console(file=io.StringIO(), width=160, force_terminal=True)
        dashboard_rich(snap, console)
        return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]

    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = asyncio.run(render())
    assert "\x1b[32m" in coloured and "\x1b[31m" in coloured  # green and red
    monkeypatch.setenv("NO_COLOR", "1")
    plain = asyncio.run(render())
    assert "\x1b[32m" not in plain and "\x1b[31m" not in plain
    assert "success" in plain and "failure" in plain  # the words are there, uncoloured
