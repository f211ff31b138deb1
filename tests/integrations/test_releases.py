"""Releases: recorded on every operation, and named beside the change they came with."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import learnkit
from learnkit._kit import release_from_environment
from learnkit._model import DAY, HOUR
from tests.conftest import BASE_CONFIG, T0, Clock, rows, write_config

RELEASE_AT = T0 - 3 * DAY - 5 * HOUR  # 2026-09-18 09:13 UTC


async def plant(kit: learnkit.Kit, clock: Clock) -> None:
    """Six days of work: 1.4.1 fails 16%, 1.4.2 (from RELEASE_AT) fails 42%, half of
    its extra failures a KeyError no earlier release raised."""
    rng = random.Random(3)
    kit.release = "1.4.1"
    t = T0 - 6 * DAY
    switched = False
    while t < T0 - HOUR:
        if not switched and t >= RELEASE_AT:
            await kit.flush()  # records are stamped when written: write 1.4.1's first
            kit.release = "1.4.2"
            switched = True
        for i in range(6):
            start = t + i * 500
            r = rng.random()
            if r < 0.16:
                kit.record("deploy_check", outcome="failure", started_at=start,
                           ended_at=start + 5, error_type="TimeoutError",
                           error_message=f"timed out after {rng.randint(5, 50)} s")
            elif switched and r < 0.42:
                kit.record("deploy_check", outcome="failure", started_at=start,
                           ended_at=start + 5, error_type="KeyError",
                           error_message=f"missing field 'f{rng.randint(1, 9)}'")
            else:
                kit.record("deploy_check", outcome="success", started_at=start,
                           ended_at=start + 5)
        t += HOUR
    clock.now = T0
    await kit.flush()


async def test_a_change_point_is_attributed_to_the_release_it_came_with(tmp_path: Path) -> None:
    clock = Clock(T0 - 6 * DAY)
    async with learnkit.open(write_config(tmp_path), clock=clock) as kit:
        await plant(kit, clock)
        summary = await kit.insights.generate_summary(days=7)

    changes = [p for p in summary["failure_patterns"] if p.kind == "change_point"]
    assert len(changes) == 1, [p.description for p in summary["failure_patterns"]]
    (cp,) = changes
    assert cp.op_type == "deploy_check"
    assert cp.rate_before is not None and cp.rate_after is not None
    assert cp.rate_before > 0.8 and cp.rate_after < 0.65
    assert cp.release == "1.4.2"
    assert cp.release_first_seen == (RELEASE_AT + 5) // HOUR * HOUR  # the hour its first ended
    assert cp.description.endswith(", with release 1.4.2, first seen 2026-09-18")

    clusters = {p.error_type: p for p in summary["failure_patterns"] if p.kind == "error_cluster"}
    assert clusters["KeyError"].release == "1.4.2"
    assert "with release 1.4.2" in clusters["KeyError"].description
    # there from the start of the data: nothing says a release brought it
    assert clusters["TimeoutError"].release is None


async def test_no_release_no_attribution(tmp_path: Path) -> None:
    """Without a release attribute the same change point is reported as before."""
    clock = Clock(T0 - 6 * DAY)
    async with learnkit.open(write_config(tmp_path), clock=clock) as kit:
        await plant(kit, clock)
        kit.release = ""
    db = tmp_path / "learnkit.db"
    # strip the attribute from a copy of the data: record it again without one
    tmp2 = tmp_path / "plain"
    tmp2.mkdir()
    clock = Clock(T0 - 6 * DAY)
    async with learnkit.open(write_config(tmp2), clock=clock, release="") as kit:
        for r in rows(db):
            kit.record(r["op_type"], outcome=r["outcome"], started_at=r["started_at"],
                       ended_at=r["ended_at"], error_type=r["error_type"],
                       error_message=r["error_message"])
        clock.now = T0
        await kit.flush()
        summary = await kit.insights.generate_summary(days=7)
    (cp,) = [p for p in summary["failure_patterns"] if p.kind == "change_point"]
    assert cp.release is None and "release" not in cp.description


async def test_where_the_release_comes_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEARNKIT_RELEASE", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES",
                       "service.name=shop,service.version=3.1%2Bbuild7")
    text = BASE_CONFIG.replace("confidence_threshold = 0.7\n",
                               'confidence_threshold = 0.7\nrelease_attribute = "commit"\n')
    async with learnkit.open(write_config(tmp_path, text)) as kit:
        assert kit.release == "3.1+build7"  # OTEL_RESOURCE_ATTRIBUTES, the last resort
        kit.record("a", outcome="success", started_at=T0)
        kit.record("a", outcome="success", started_at=T0, context={"commit": "own"})
        await kit.flush()
        monkeypatch.setenv("LEARNKIT_RELEASE", "abc123")
    async with learnkit.open(write_config(tmp_path, text)) as kit:
        assert kit.release == "abc123"  # the environment beats the config
        kit.release = "set-in-code"
        async with learnkit.track("b"):
            pass
        await kit.flush()
        kit.release = None
        assert kit.release == "abc123"
    got = [json.loads(r["context"])["commit"] for r in rows(tmp_path / "learnkit.db")]
    assert got == ["3.1+build7", "own", "set-in-code"]
    text2 = BASE_CONFIG.replace("confidence_threshold = 0.7\n",
                                'confidence_threshold = 0.7\nrelease = "9.9"\n')
    monkeypatch.delenv("LEARNKIT_RELEASE")
    async with learnkit.open(write_config(tmp_path, text2)) as kit:
        assert kit.release == "9.9"  # the config beats OTEL_RESOURCE_ATTRIBUTES
    async with learnkit.open(write_config(tmp_path, text2), release="1.0") as kit:
        assert kit.release == "1.0"


def test_release_from_environment() -> None:
    assert release_from_environment({}) == ("", "")
    assert release_from_environment({
        "LEARNKIT_RELEASE": " v2 ", "OTEL_RESOURCE_ATTRIBUTES": "a=b, service.version = 1.0 ",
    }) == ("v2", "1.0")


def test_release_attribute_must_name_a_key(tmp_path: Path) -> None:
    text = BASE_CONFIG.replace("confidence_threshold = 0.7\n",
                               'confidence_threshold = 0.7\nrelease_attribute = ""\n')
    with pytest.raises(learnkit.ConfigError, match="release_attribute"):
        learnkit.load_config(write_config(tmp_path, text))
