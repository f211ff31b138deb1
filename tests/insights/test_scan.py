"""The scan sees structure: one test per case of issue 10, each on a real store.

Every world is recorded through ``kit.record`` into SQLite in tmp_path with a
fixed clock, then analysed by ``generate_summary(days=7)``. Sizes are the
smallest at which the planted structure is clear, so the file stays fast.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import learnkit

from ..conftest import T0, Clock, write_config
from .test_generator import DAY, summary_of

CONFIDENT = 0.7


def context(s: learnkit.Summary) -> list[learnkit.FailurePattern]:
    return [p for p in s["failure_patterns"] if p.kind == "context"]


def confident(s: learnkit.Summary) -> list[learnkit.FailurePattern]:
    return [p for p in context(s) if (p.confidence or 0) >= CONFIDENT]


async def test_interaction_is_one_conjunction(tmp_path: Path) -> None:
    """70% failures only when complexity > 7 and lang == 'go': reported as the conjunction."""

    def gen(r: random.Random, t: float) -> tuple[bool, dict[str, Any], str]:
        ctx = {"complexity": r.randint(1, 12), "lang": r.choice(("go", "python", "rust", "ts"))}
        pf = 0.70 if ctx["complexity"] > 7 and ctx["lang"] == "go" else 0.08
        return r.random() < pf, ctx, "tests failed"

    s = await summary_of(tmp_path, gen, 1500)
    both = [p for p in confident(s) if p.conditions is not None]
    assert [p.conditions for p in both] == [(("complexity", ">", 7), ("lang", "==", "go"))]
    p = both[0]
    assert p.failure_rate_in is not None and abs(p.failure_rate_in - 0.70) < 0.1
    assert any(r.action == "review_context:run_tests:complexity+lang"
               for r in s["recommendations"])


async def test_middle_band_is_an_interval(tmp_path: Path) -> None:
    """Complexity 5 and 6 fail: the pattern is the band, not 'complexity <= 6'."""

    def gen(r: random.Random, t: float) -> tuple[bool, dict[str, Any], str]:
        cx = r.randint(1, 12)
        return r.random() < (0.60 if cx in (5, 6) else 0.08), {"complexity": cx}, "boom"

    s = await summary_of(tmp_path, gen, 1500)
    found = [p for p in confident(s) if p.attribute == "complexity"]
    assert [(p.condition, p.value) for p in found] == [("in", [5, 6])]
    assert "5 <= complexity <= 6" in found[0].description


async def test_simpson_reversal_is_flagged(tmp_path: Path) -> None:
    """Pooled, harder issues fail more; within each repo they fail less: not a cause."""
    repos = {"alpha": (1, 0.25), "beta": (4, 0.55), "gamma": (7, 0.85)}

    def gen(r: random.Random, t: float) -> tuple[bool, dict[str, Any], str]:
        repo = r.choice(tuple(repos))
        lo, base = repos[repo]
        c = r.randint(lo, lo + 5)
        return r.random() < base - 0.05 * (c - lo), {"repo": repo, "complexity": c}, "boom"

    s = await summary_of(tmp_path, gen, 2000)
    pooled = [p for p in context(s) if p.attribute == "complexity" and p.conditions is None
              and p.condition == ">"]
    assert pooled, context(s)
    for p in pooled:
        assert p.confounded is True and p.stratified_by == "repo"
        assert p.odds_ratio_within is not None and p.odds_ratio_within < 1
        assert (p.confidence or 0) < 0.1 and "reverses" in p.description
    assert not any(r.action == "review_context:run_tests:complexity"
                   for r in s["recommendations"])
    assert any(p.attribute == "repo" and p.value == "gamma" and not p.confounded
               for p in confident(s))


async def test_one_bad_value_among_many(tmp_path: Path) -> None:
    """One repo of 400 fails 17 of 20: kept by the heavy-hitter summary and found."""
    rng = random.Random(7)
    async with learnkit.open(write_config(tmp_path), clock=Clock()) as kit:
        ops = []
        for i in range(400):
            repo = f"repo-{i:04d}"
            fails = [j < 17 for j in range(20)] if i == 237 else \
                [rng.random() < 0.10 for _ in range(20)]
            ops += [(repo, f) for f in fails]
        rng.shuffle(ops)
        for k, (repo, failed) in enumerate(ops):
            t = T0 - 7 * DAY + (k + 0.5) * 7 * DAY / len(ops)
            kit.record("run_tests", outcome="failure" if failed else "success", started_at=t - 1,
                       ended_at=t, error_type="TestFailure" if failed else None,
                       error_message="boom" if failed else None, context={"repo": repo})
        await kit.flush()
        s = await kit.insights.generate_summary(days=7)
    found = [p for p in confident(s) if p.attribute == "repo"]
    assert [p.value for p in found] == ["repo-0237"]


async def test_none_is_its_own_level(tmp_path: Path) -> None:
    """None is tested as a level and never counted on a side of a numeric cut."""
    n_above: dict[int, int] = {}

    def gen(r: random.Random, t: float) -> tuple[bool, dict[str, Any], str]:
        files = None if r.random() < 0.2 else r.randint(1, 50)
        if files is not None:
            n_above[files] = n_above.get(files, 0) + 1
        pf = 0.50 if files is None else (0.30 if files > 40 else 0.08)
        return r.random() < pf, {"files": files}, "boom"

    s = await summary_of(tmp_path, gen, 2000)
    found = [p for p in confident(s) if p.attribute == "files"]
    none = [p for p in found if p.value is None]
    assert len(none) == 1 and none[0].condition == "==" and not none[0].missing
    assert none[0].failure_rate_in is not None and abs(none[0].failure_rate_in - 0.5) < 0.1
    cuts = [p for p in context(s) if p.attribute == "files" and p.condition == ">"]
    assert cuts
    for p in cuts:
        assert p.support == sum(n for v, n in n_above.items() if v > p.value)


async def test_missing_key_is_reported(tmp_path: Path) -> None:
    """A key absent on a quarter of operations that then fail more: 'owner is missing'."""

    def gen(r: random.Random, t: float) -> tuple[bool, dict[str, Any], str]:
        ctx: dict[str, Any] = {"complexity": r.randint(1, 12)}
        missing = r.random() < 0.25
        if not missing:
            ctx["owner"] = r.choice(("alice", "bob", "carol"))
        return r.random() < (0.40 if missing else 0.08), ctx, "boom"

    s = await summary_of(tmp_path, gen, 1500)
    found = [p for p in confident(s) if p.attribute == "owner"]
    assert [(p.missing, p.value) for p in found] == [(True, None)]
    assert "owner is missing" in found[0].description


async def test_rare_failures_by_risk_ratio(tmp_path: Path) -> None:
    """1% against 5%: four points, but five times the risk, is confident."""

    def gen(r: random.Random, t: float) -> tuple[bool, dict[str, Any], str]:
        region = r.choice(("eu", "us", "ap", "sa"))
        return r.random() < (0.05 if region == "sa" else 0.01), {"region": region}, "boom"

    s = await summary_of(tmp_path, gen, 8000)
    found = [p for p in confident(s) if p.attribute == "region"]
    assert [p.value for p in found] == ["sa"]
    assert found[0].lift is not None and found[0].lift > 2.5


async def test_recent_drift_is_a_change_point_not_a_weekday(tmp_path: Path) -> None:
    """Failures rise in the last two days: a change point, no weekday to avoid."""

    def gen(r: random.Random, t: float) -> tuple[bool, dict[str, Any], str]:
        return r.random() < (0.40 if t >= T0 - 2 * DAY else 0.10), \
            {"complexity": r.randint(1, 12)}, "boom"

    s = await summary_of(tmp_path, gen, 1400)
    assert not [p for p in s["failure_patterns"] if p.attribute == "weekday"]
    assert [p for p in s["failure_patterns"]
            if p.kind == "change_point" and (p.confidence or 0) >= CONFIDENT]
    assert not [a for a in s["actions"] if a.startswith("avoid_weekday")]


async def test_operation_type_is_a_context(tmp_path: Path) -> None:
    """deploy fails 92%, lint 10%: the operation type itself is the pattern."""
    rng = random.Random(5)
    async with learnkit.open(write_config(tmp_path), clock=Clock()) as kit:
        for _ in range(1000):
            t = T0 - rng.uniform(0, 7 * DAY)
            op_type = rng.choice(("lint", "deploy"))
            big = rng.random() < (0.9 if op_type == "deploy" else 0.1)
            failed = rng.random() < (0.92 if op_type == "deploy" else 0.10)
            kit.record(op_type, outcome="failure" if failed else "success", started_at=t - 1,
                       ended_at=t, error_type="E" if failed else None,
                       context={"runner": "large" if big else "small"})
        await kit.flush()
        s = await kit.insights.generate_summary(days=7)
    found = [p for p in confident(s) if p.attribute == "op_type"]
    assert [p.value for p in found] == ["deploy"]
    assert "review_op_type:deploy" in s["actions"]
    # within each type the runner does nothing: no runner pattern
    assert not [p for p in confident(s) if p.attribute == "runner"]
