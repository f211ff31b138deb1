"""Admission: refused work is skipped, explored work is marked however it is recorded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import learnkit

from ..conftest import BASE_CONFIG, rows, write_config


def explore_everything(tmp_path: Path) -> Path:
    text = BASE_CONFIG.replace("confidence_threshold = 0.7", "confidence_threshold = 0.7\nexplore = 0.999")
    return write_config(tmp_path, text)


class TestExplorationMark:
    async def test_kit_record_takes_the_mark_admit_left(self, tmp_path: Path) -> None:
        """Work admitted to explore and written with kit.record carries the mark."""
        async with learnkit.open(explore_everything(tmp_path), random=random.Random(1)) as kit:
            # complexity 9: the band next to max_complexity = 8, explored at `explore`.
            admission = kit.admit("process_issue", complexity=9)
            assert admission and admission.explored
            kit.record("process_issue", outcome="failure", started_at=kit.now(),
                       context={"complexity": 9})
            kit.record("process_issue", outcome="success", started_at=kit.now(),
                       context={"complexity": 3})
        stored = rows(tmp_path / "learnkit.db")
        assert [r["admission"] for r in stored] == [0.999, None]

    async def test_refusal_is_recorded_as_skipped(self, tmp_path: Path) -> None:
        """Without exploration a refused call is stored as skipped, unmarked."""
        async with learnkit.open(write_config(tmp_path)) as kit:
            admission = kit.admit("process_issue", complexity=11)
            assert not admission and admission.threshold == "max_complexity"
        (row,) = rows(tmp_path / "learnkit.db")
        assert row["outcome"] == "skipped" and row["admission"] is None


class TestTwoThresholds:
    async def test_work_refused_by_two_thresholds_is_not_explored(self, tmp_path: Path) -> None:
        """Explored outcomes speak for one threshold's band as raising that threshold
        would admit it: work another threshold refuses too is never explored (it
        would drag that band's estimate down), only refused, naming both."""
        text = BASE_CONFIG.replace(
            "confidence_threshold = 0.7", "confidence_threshold = 0.7\nexplore = 0.999"
        ) + ('\n[thresholds.min_coverage]\nvalue = 3\nattribute = "coverage"\n'
             'limit = "min"\nmin = 0\nmax = 10\nstep = 1\n')
        async with learnkit.open(write_config(tmp_path, text),
                                 random=random.Random(2)) as kit:
            both = [kit.admit("x", complexity=9, coverage=2) for _ in range(200)]
            one = [kit.admit("x", complexity=9, coverage=5) for _ in range(200)]
            other = [kit.admit("x", complexity=5, coverage=2) for _ in range(200)]
        assert not any(both)
        assert "max_complexity" in both[0].reason and "min_coverage" in both[0].reason
        assert sum(a.explored for a in one) > 150
        assert sum(a.explored for a in other) > 150


class TestFarValues:
    async def test_values_far_beyond_the_limit_are_refused_not_raised(
        self, tmp_path: Path
    ) -> None:
        """1000 (a power of the decay that overflowed a float), 10**400 and infinity:
        refused like any value beyond the limit, explored with probability 0."""
        async with learnkit.open(explore_everything(tmp_path),
                                 random=random.Random(3)) as kit:
            for v in (1000, 10**400, float("inf")):
                admissions = [kit.admit("process_issue", complexity=v) for _ in range(50)]
                assert not any(admissions), v
                assert admissions[0].threshold == "max_complexity"
            assert kit.admit("process_issue", complexity=-float("inf"))

    async def test_a_fault_in_admission_admits_and_logs(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """learnkit's own fault (here a damaged exploration plan) never stands in the
        way of the work: admitted, and logged."""
        async with learnkit.open(write_config(tmp_path)) as kit:
            kit.database.exploration["max_complexity"] = (8.0, "not a number")  # type: ignore[assignment]
            admission = kit.admit("process_issue", complexity=9)
        assert admission and "could not decide" in admission.reason
        assert "could not decide" in caplog.text
