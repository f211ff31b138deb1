"""Code that exists to be type-checked (mypy --strict runs on it in CI), never run.

Each block states what the public API promises to a type checker; a change
that loses a type makes mypy fail here.
"""

from __future__ import annotations

import asyncio
from typing import assert_type

import learnkit
from learnkit import track, tracked


@tracked
async def fetch(url: str, retries: int = 3) -> bytes:
    return url.encode() * retries


@tracked("process_issue", key=lambda number: f"issue-{number}",
         context=lambda number, complexity: {"complexity": complexity})
async def process_issue(number: int, complexity: int = 5) -> bool:
    return number > complexity


@tracked
def parse(text: str) -> int:
    return len(text)


@tracked("compile")
def compile_sources(paths: list[str]) -> dict[str, int]:
    return {p: len(p) for p in paths}


async def bare_coroutine_functions_stay_coroutine_functions() -> None:
    # A bare @tracked on an async function keeps it a coroutine function:
    # create_task accepts the call, and the result type survives.
    task = asyncio.create_task(fetch("https://example.org"))
    assert_type(await task, bytes)
    task2 = asyncio.create_task(process_issue(1))
    assert_type(await task2, bool)
    assert_type(await fetch("x", retries=2), bytes)


def sync_functions_keep_their_types() -> None:
    assert_type(parse("abc"), int)
    assert_type(compile_sources(["a.py"]), dict[str, int])


async def the_kit_and_its_parts() -> None:
    async with learnkit.open("learnkit.toml") as kit:
        assert_type(kit, learnkit.Kit)
        async with track("run_tests", key="issue-1", complexity=7) as op:
            op.set(files_changed=3)
            op.fail("TestFailure", "Unit tests failed")
        with track("sync_block") as sync_op:
            assert_type(sync_op, learnkit.Operation)
        admission = kit.admit("process_issue", complexity=9)
        assert_type(admission, learnkit.Admission)
        assert_type(bool(admission), bool)
        assert_type(await kit.flush(timeout=1.0), bool)
        assert_type(await kit.analytics.get_success_rate(days=7), float | None)
        summary = await kit.insights.generate_summary(days=7)
        assert_type(summary["success_rate"], float | None)
        assert_type(summary["recommendations"], list[learnkit.Recommendation])
        assert_type(summary["failure_patterns"], list[learnkit.FailurePattern])
        assert_type(kit.thresholds["max_complexity"], int | float)
        assert_type(await kit.controller.apply(summary), list[learnkit.ThresholdChange])
        assert_type(await kit.controller.update({"max_complexity": 7}),
                    list[learnkit.ThresholdChange])
        kit.config.update(max_complexity=7)  # the specification's call, unawaited
        assert_type(summary["recommended_thresholds"], dict[str, int | float])
        assert_type(kit.stats, learnkit.WriterStats)
        assert_type(learnkit.cluster_messages(["a 1", "a 2"]), list[str])
        tracker = learnkit.OperationTracker(kit.database, None)
        op_id = tracker.start_operation("process_issue", "issue-1", context={"complexity": 3})
        tracker.complete_operation(op_id, success=False, error_type="TestFailure")
