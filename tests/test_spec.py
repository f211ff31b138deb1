"""The specification's own code runs, with only the documented mechanical changes.

Every Python block of ../shared/SPEC.md (the original specification users
paste from) is extracted at test time, transformed as docs/specification.md
says ("Running the specification's code") and run against a database with
planted data: four weeks of ``process_issue`` outcomes in a world where work
of complexity > 7 fails. What each block prints or leaves behind is checked
against counts made here from the planted data, not by learnkit.

The CI keeps ../shared beside the repository. Elsewhere the tests skip when
SPEC.md is missing, unless ``LEARNKIT_REQUIRE_LOGHUB=1`` demands it.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import textwrap
import types
from collections.abc import Awaitable, Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

import learnkit

from .conftest import BASE_CONFIG, T0, Clock, rows, write_config

ROOT = Path(__file__).resolve().parents[1]
SPEC = Path(__file__).resolve().parents[2] / "shared" / "SPEC.md"
MAPPING = ROOT / "docs" / "specification.md"
DAY = 86400.0
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
HEADING = re.compile(r"^#+ (.+)$", re.M)


# -- the blocks --------------------------------------------------------------------------


def spec_blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every fenced block of SPEC.md, in order.

    The id is the nearest heading above the block ("Operation Tracking");
    the top-level "Learning Mechanisms" subsections repeat numbers, so the
    heading text alone is unique here.
    """
    if not SPEC.exists():
        return []
    text = SPEC.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        headings = HEADING.findall(text[: m.start()])
        title = re.sub(r"^\d+\.\s*", "", headings[-1]) if headings else "top"
        out.append((title, m.group(1), m.group(2)))
    return out


BLOCKS = spec_blocks()
PYTHON = [(title, code) for title, lang, code in BLOCKS if lang == "python"]


def test_specification_is_present() -> None:
    """SPEC.md is where the CI puts it; required when LEARNKIT_REQUIRE_LOGHUB=1."""
    if not SPEC.exists():
        if os.environ.get("LEARNKIT_REQUIRE_LOGHUB") == "1":
            pytest.fail(f"{SPEC} is missing and LEARNKIT_REQUIRE_LOGHUB=1 requires it")
        pytest.skip(f"{SPEC} is not here (the CI keeps ../shared beside the repository)")
    assert len(PYTHON) >= 10, [t for t, _ in PYTHON]
    assert len({t for t, _ in PYTHON}) == len(PYTHON), "block titles must be unique"


# -- the documented mechanical changes ---------------------------------------------------

#: learnkit's async methods among those the specification calls (docs/specification.md).
ASYNC_METHODS = ("get_success_rate_by_type", "get_success_rate", "generate_summary",
                 "recommend_threshold_adjustment", "get_recommended_threshold")
_AWAIT = re.compile(r"(?<!await )\b([A-Za-z_][\w.]*)\.(" + "|".join(ASYNC_METHODS) + r")\(")


def transform(code: str) -> str:
    """The specification's code as learnkit runs it: nothing but the documented changes."""
    code = code.replace("from src.core.analytics import", "from learnkit import")
    code = code.replace("orchestrator.insights_generator", "kit.insights")
    return _AWAIT.sub(r"await \1.\2(", code)


def alternatives(code: str) -> list[str]:
    """A block that lists alternatives ("# Or complete with failure") as one variant each.

    The statements under a ``# Or ...`` comment replace the statements under
    the comment just before it; everything else is common.
    """
    segments: list[list[str]] = [[]]
    for line in code.splitlines():
        if line.startswith("#") and segments[-1] and any(
                not s.startswith("#") and s.strip() for s in segments[-1]):
            segments.append([])
        segments[-1].append(line)
    ors = [i for i, seg in enumerate(segments) if seg[0].lower().startswith("# or ")]
    if not ors:
        return [code]
    variants = []
    for drop in ([i for i in ors], [i - 1 for i in ors]):
        variants.append("\n".join(line for i, seg in enumerate(segments) if i not in drop
                                  for line in seg) + "\n")
    return variants


class TestFailure(Exception):
    """What the planted ``do_work`` raises for complexity > 7."""

    __test__ = False


def do_work(issue: Any) -> str:
    """The specification's ``do_work``: fails on the hard issues of the planted world."""
    if issue.complexity > 7:
        raise TestFailure(f"Unit tests failed for issue-{issue.number}")
    return f"fixed issue-{issue.number}"


def bindings(kit: learnkit.Kit, logger: logging.Logger,
             applied: list[Any]) -> dict[str, Any]:
    """The names the specification's code uses without defining them."""
    return {
        "kit": kit,
        "database": kit.database,
        "logger": logger,
        "collector": kit.analytics,
        "analytics_collector": kit.analytics,
        "tracker": kit.tracker,
        "insights": kit.insights,
        "config": kit.config,
        "update_config": kit.config.update,
        # Left to the user by the specification; stand-ins here.
        "do_work": do_work,
        "apply_recommendations": applied.append,
        "time_since_last_analysis": 25 * 3600,
    }


async def run_block(code: str, names: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Run ``code`` as the body of an async function given the names it uses.

    Returns the block's local variables and what it printed.
    """
    used = {k: v for k, v in names.items() if re.search(rf"\b{k}\b", code)}
    src = (f"async def _spec_block({', '.join(used)}):\n"
           + textwrap.indent(code, "    ") + "\n    return locals()\n")
    namespace: dict[str, Any] = {}
    exec(compile(src, "<SPEC.md>", "exec"), namespace)
    out = io.StringIO()
    with redirect_stdout(out):
        local: dict[str, Any] = await namespace["_spec_block"](**used)
    return local, out.getvalue()


# -- the planted world -------------------------------------------------------------------


def planted() -> list[dict[str, Any]]:
    """Four weeks of ``process_issue``, 24 a day, complexity 1 to 8 (8 = max_complexity).

    Complexity 8 fails with probability 0.9; complexity <= 7 with 0.05 in the
    latest week, rising by 0.04 a week into the past. Seeded: the same every run.
    """
    rng = random.Random(17)
    ops = []
    for day in range(28):
        age = day // 7
        for i in range(24):
            n = day * 24 + i
            cx = (i + day) % 8 + 1  # rotating, so the hour of day says nothing
            fail = rng.random() < (0.9 if cx > 7 else 0.05 + 0.04 * age)
            end = T0 - day * DAY - i * 3600 - 30
            ops.append({"key": f"issue-{n}", "complexity": cx, "fail": fail,
                        "start": end - 60, "end": end})
    return ops


def rate(ops: list[dict[str, Any]], days: float, offset: float = 0) -> float:
    lo, hi = T0 - (offset + days) * DAY, T0 - offset * DAY
    inside = [o for o in ops if lo <= o["end"] < hi]
    return sum(not o["fail"] for o in inside) / len(inside)


@pytest.fixture
async def world(tmp_path: Path) -> tuple[Path, Clock]:
    """learnkit.toml (max_complexity = 8) and a database holding the planted outcomes."""
    path = write_config(tmp_path, BASE_CONFIG)
    clock = Clock()
    async with learnkit.open(path, clock=clock) as kit:
        for o in planted():
            kit.record("process_issue", outcome="failure" if o["fail"] else "success",
                       started_at=o["start"], ended_at=o["end"], key=o["key"],
                       error_type="TestFailure" if o["fail"] else None,
                       error_message=f"Unit tests failed for {o['key']}" if o["fail"] else None,
                       context={"complexity": o["complexity"]})
        assert await kit.flush()
    return path, clock


# -- what each block must do -------------------------------------------------------------

Check = Callable[[learnkit.Kit, dict[str, Any], str, "Ctx"], Awaitable[None]]


class Ctx(types.SimpleNamespace):
    path: Path
    variant: int
    applied: list[Any]
    caplog: pytest.LogCaptureFixture


def pct(x: float) -> str:
    return f"{x:.1%}"


async def analytics_collection(kit: learnkit.Kit, local: dict[str, Any], out: str,
                               ctx: Ctx) -> None:
    ops = planted()
    assert isinstance(local["collector"], learnkit.AnalyticsCollector)
    assert local["success_rate_7d"] == pytest.approx(rate(ops, 7))
    assert local["success_rate_30d"] == pytest.approx(rate(ops, 30))
    assert local["type_rates"] == {"process_issue": pytest.approx(rate(ops, 7))}


async def operation_tracking(kit: learnkit.Kit, local: dict[str, Any], out: str,
                             ctx: Ctx) -> None:
    await kit.flush()
    got = rows(kit.database.path, f"key = 'issue-123' AND started_at >= {T0}")  # not planted
    assert len(got) == 1
    assert got[0]["op_type"] == "process_issue"
    if ctx.variant == 2:  # "Or complete with failure"
        assert (got[0]["outcome"], got[0]["error_type"], got[0]["error_message"]) == (
            "failure", "TestFailure", "Unit tests failed")
    else:
        assert (got[0]["outcome"], got[0]["error_type"]) == ("success", None)


async def insights_generation(kit: learnkit.Kit, local: dict[str, Any], out: str,
                              ctx: Ctx) -> None:
    lines = out.splitlines()
    assert lines[0] == f"Success rate: {pct(rate(planted(), 7))}"
    assert lines[1].startswith("Failure patterns: [") and "attribute='complexity'" in lines[1]
    assert lines[2].startswith("Recommendations: [") and "lower_threshold:max_complexity" in (
        lines[2])


async def failure_pattern_recognition(kit: learnkit.Kit, local: dict[str, Any], out: str,
                                      ctx: Ctx) -> None:
    # The block is comments only; the pattern it describes is what learnkit finds here.
    assert out == ""
    summary = await kit.insights.generate_summary(days=7)
    cut = [p for p in summary["failure_patterns"]
           if p.kind == "context" and p.attribute == "complexity" and p.condition == ">"]
    assert cut and cut[0].value == 7
    assert "recommended_complexity" in summary and summary["recommended_complexity"] == 7


async def success_rate_trending(kit: learnkit.Kit, local: dict[str, Any], out: str,
                                ctx: Ctx) -> None:
    ops = planted()
    want = [f"Week {w + 1}: {pct(rate(ops, 7, w * 7))}" for w in range(4)]
    assert out.splitlines() == want
    assert len(set(want)) == 4  # the planted weeks differ, so the offsets are seen to work


async def adaptive_thresholds(kit: learnkit.Kit, local: dict[str, Any], out: str,
                              ctx: Ctx) -> None:
    assert local["new_threshold"] == 7
    assert kit.thresholds["max_complexity"] == 7
    assert "value = 7" in ctx.path.read_text()
    await kit.controller.drain()  # the block did not await config.update: nor must it
    last = (await kit.controller.history("max_complexity"))[-1]
    assert (last.kind, last.old_value, last.new_value) == ("manual", 8, 7)


async def programmatically(kit: learnkit.Kit, local: dict[str, Any], out: str,
                           ctx: Ctx) -> None:
    assert local["summary"]["days"] == 30
    lines = out.splitlines()
    assert lines and all(line.startswith("📋 ") for line in lines)
    assert any(line.startswith("📋 Lower max_complexity from 8 to 7") for line in lines)


async def regular_analysis(kit: learnkit.Kit, local: dict[str, Any], out: str,
                           ctx: Ctx) -> None:
    assert len(ctx.applied) == 1
    assert [r.action for r in ctx.applied[0]][:1] == ["lower_threshold:max_complexity"]
    assert local["summary"]["days"] == 7


async def track_all_operations(kit: learnkit.Kit, local: dict[str, Any], out: str,
                               ctx: Ctx) -> None:
    process_issue = local["process_issue"]
    easy = types.SimpleNamespace(number=9001, complexity=3)
    hard = types.SimpleNamespace(number=9002, complexity=9)
    assert process_issue(easy) == "fixed issue-9001"
    with pytest.raises(TestFailure):
        process_issue(hard)
    await kit.flush()
    got = {r["key"]: r for r in rows(kit.database.path, "key IN ('issue-9001', 'issue-9002')")}
    assert got["issue-9001"]["outcome"] == "success"
    assert (got["issue-9002"]["outcome"], got["issue-9002"]["error_type"],
            got["issue-9002"]["error_message"]) == (
        "failure", "TestFailure", "Unit tests failed for issue-9002")


async def act_on_recommendations(kit: learnkit.Kit, local: dict[str, Any], out: str,
                                 ctx: Ctx) -> None:
    summary = local["summary"]
    assert "reduce_complexity_threshold" in summary["actions"]
    assert "lower_threshold:max_complexity" in summary["actions"]
    assert local["new_threshold"] == 7
    assert kit.thresholds["max_complexity"] == 7
    assert "Applied learning: reduced complexity threshold" in ctx.caplog.text
    await kit.controller.drain()
    last = (await kit.controller.history("max_complexity"))[-1]
    assert (last.kind, last.new_value) == ("manual", 7)


CHECKS: dict[str, Check] = {
    "Analytics Collection": analytics_collection,
    "Operation Tracking": operation_tracking,
    "Insights Generation": insights_generation,
    "Failure Pattern Recognition": failure_pattern_recognition,
    "Success Rate Trending": success_rate_trending,
    "Adaptive Thresholds": adaptive_thresholds,
    "Programmatically": programmatically,
    "Regular Analysis": regular_analysis,
    "Track All Operations": track_all_operations,
    "Act on Recommendations": act_on_recommendations,
}

CASES = [(title, n, variant) for title, code in PYTHON
         for n, variant in enumerate(alternatives(code), 1)]


def test_every_block_is_checked() -> None:
    """A block added to SPEC.md fails here until a check says what it must do."""
    if not SPEC.exists():
        pytest.skip("no SPEC.md")
    assert sorted(t for t, _ in PYTHON) == sorted(CHECKS)


@pytest.mark.parametrize(("title", "variant", "code"), CASES,
                         ids=[f"{t}#{n}" for t, n, _ in CASES])
async def test_block_runs(title: str, variant: int, code: str, world: tuple[Path, Clock],
                          caplog: pytest.LogCaptureFixture) -> None:
    """The block, transformed only as documented, runs and does what the specification says."""
    path, clock = world
    caplog.set_level(logging.INFO)
    ctx = Ctx(path=path, variant=variant, applied=[], caplog=caplog)
    async with learnkit.open(path, clock=clock) as kit:
        names = bindings(kit, logging.getLogger("orchestrator"), ctx.applied)
        local, out = await run_block(transform(code), names)
        await CHECKS[title](kit, local, out, ctx)


# -- the transformations are the documented ones, and needed -----------------------------


def test_transform_adds_await_and_maps_names_only() -> None:
    code = ("from src.core.analytics import InsightsGenerator\n"
            "insights = orchestrator.insights_generator\n"
            "summary = insights.generate_summary(days=7)\n"
            "ok = await insights.get_recommended_threshold('x')\n"
            "tracker.start_operation('a', 'b')\n")
    assert transform(code) == (
        "from learnkit import InsightsGenerator\n"
        "insights = kit.insights\n"
        "summary = await insights.generate_summary(days=7)\n"
        "ok = await insights.get_recommended_threshold('x')\n"
        "tracker.start_operation('a', 'b')\n")


def test_alternatives_split_on_or() -> None:
    code = "a = 1\n\n# First\nb(a)\n\n# Or second\nc(a)\n"
    assert alternatives(code) == ["a = 1\n\n# First\nb(a)\n\n", "a = 1\n\n# Or second\nc(a)\n"]
    assert alternatives("x = 1\n# note\ny = 2\n") == ["x = 1\n# note\ny = 2\n"]


async def test_completing_twice_is_refused(world: tuple[Path, Clock]) -> None:
    """Why alternatives are split: run whole, "Operation Tracking" completes one id twice."""
    if not SPEC.exists():
        pytest.skip("no SPEC.md")
    code = dict(PYTHON)["Operation Tracking"]
    path, clock = world
    async with learnkit.open(path, clock=clock) as kit:
        names = bindings(kit, logging.getLogger("orchestrator"), [])
        with pytest.raises(learnkit.UnknownOperationError, match="already completed"):
            await run_block(transform(code), names)


async def test_unawaited_calls_would_not_work(world: tuple[Path, Clock]) -> None:
    """Why ``await`` is added: without it a summary is a coroutine, not a dict."""
    path, clock = world
    async with learnkit.open(path, clock=clock) as kit:
        pending = kit.insights.generate_summary(days=7)
        with pytest.raises(TypeError):
            pending["success_rate"]  # type: ignore[index]
        await pending


# -- the mapping page holds every block ---------------------------------------------------


def test_mapping_page_shows_every_block() -> None:
    """docs/specification.md shows each SPEC.md block verbatim beside its learnkit form."""
    if not SPEC.exists():
        pytest.skip("no SPEC.md")
    page = MAPPING.read_text(encoding="utf-8")
    shown = {m.group(2) for m in FENCE.finditer(page)}
    missing = [title for title, _, code in BLOCKS if code not in shown]
    assert not missing, f"not shown in docs/specification.md: {missing}"
    headings = [h.lower() for h in HEADING.findall(page)]
    for title, _, _ in BLOCKS:
        assert any(h.endswith(title.lower()) for h in headings), f"no section for {title}"
