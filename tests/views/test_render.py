"""Formatting, the dashboard and the reports, on a Snapshot built by hand."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import attrs
import pytest

from learnkit import ThresholdConfig
from learnkit._analytics import Rate
from learnkit._insights.patterns import ErrorCluster, FailurePattern, Recommendation, Summary
from learnkit._thresholds.controller import ThresholdChange
from learnkit._views import format as fmt
from learnkit._views.render import (
    Snapshot,
    dashboard_rich,
    dashboard_text,
    rate_line,
    report_html,
    report_markdown,
    sparkline,
)

from ..conftest import T0

DAY = 86400.0
WEEK = 7 * DAY


def rate(successes: int, failures: int, start: float = T0 - 30 * DAY, end: float = T0,
         **extra: int) -> Rate:
    n = successes + failures
    r = successes / n if n else None
    return Rate(start=start, end=end, rate=r, successes=successes, failures=failures,
                low=None if r is None else r - 0.05, high=None if r is None else r + 0.05,
                counts={"success": successes, "failure": failures, **extra})


PATTERN = FailurePattern(
    kind="context", description="Failures are likelier when complexity > 6",
    op_type="process_issue", attribute="complexity", condition=">", value=6.0, support=120,
    failures=90, failure_rate_in=0.75, failure_rate_out=0.25, lift=3.0, share_of_failures=0.9,
    confidence=0.91, q_value=0.0012, prevalence=0.3, interval_in=(0.67, 0.82),
    interval_out=(0.2, 0.3),
)
CLUSTER_PATTERN = FailurePattern(kind="error_cluster", description="cluster pattern, not listed")
CLUSTER = ErrorCluster(
    id="c1", error_type="TimeoutError", template="timed out after <*> | retry `now`",
    count=60, share_of_failures=0.6, first_seen=T0 - 5 * DAY, last_seen=T0 - DAY,
    op_types={"process_issue": 50, "deploy": 10}, example="timed out after 30s | retry `now`",
    previous_count=20, trend="growing", confidence=0.97, q_value=0.01,
)
RECOMMENDATION = Recommendation(
    action="lower_threshold:max_complexity",
    message="Lower max_complexity from 8 to 7 <now>", confidence=0.85,
    threshold="max_complexity", current=8, recommended=7,
    expected={"success_rate": {"before": 0.75, "after": 0.82},
              "coverage": {"before": 1.0, "after": 0.9},
              "utility": {"before": 0.2, "after": None}},
)
CHANGE = ThresholdChange(
    id=1, at=T0 - 2 * DAY, name="max_complexity", old_value=9, new_value=8, kind="lower",
    confidence=0.85, reason="why", evidence=[], samples=400, status="applied",
    verdict="improved", verdict_at=T0 - DAY,
)


def summary(**over: object) -> Summary:
    s: Summary = {
        "days": 30.0, "offset": 0.0, "start": T0 - 30 * DAY, "end": T0,
        "success_rate": 0.75, "sample_size": 400,
        "outcome_counts": {"success": 300, "failure": 100, "skipped": 20},
        "rates_by_type": {}, "failure_patterns": [PATTERN, CLUSTER_PATTERN],
        "error_clusters": [CLUSTER], "recommendations": [RECOMMENDATION],
        "actions": [], "recommended_thresholds": {"max_complexity": 7}, "tests": 120,
    }
    s.update(over)  # type: ignore[typeddict-item]
    return s


def snapshot(**over: object) -> Snapshot:
    snap = Snapshot(
        now=T0, config_path=Path("/srv/app/learnkit.toml"),
        database_path=Path("/srv/app/learnkit.db"), days=30.0,
        window_days=7.0, rate=rate(300, 100, skipped=20), top=rate(240, 80, skipped=20),
        series=[rate(8, 2, T0 - (i + 1) * DAY, T0 - i * DAY) for i in range(29, -1, -1)],
        confidence_threshold=0.7, display_floor=0.5, failure_cost=1.0,
        by_type={"process_issue": rate(250, 90), "deploy": rate(50, 10)},
        trend=[rate(70, 30, T0 - 4 * WEEK, T0 - 3 * WEEK), rate(75, 25, T0 - 3 * WEEK, T0 - 2 * WEEK),
               rate(0, 0, T0 - 2 * WEEK, T0 - WEEK), rate(80, 20, T0 - WEEK, T0)],
        summary=summary(),
        thresholds={"max_complexity": ThresholdConfig(
            value=8, attribute="complexity", min=3, max=12, step=1,
            description="Largest issue complexity attempted")},
        history=[CHANGE],
        durations={"process_issue": {50.0: 1.25, 95.0: 3.5}},
    )
    return attrs.evolve(snap, **over)


def empty_snapshot() -> Snapshot:
    return snapshot(
        rate=rate(0, 0), top=rate(0, 0), series=[], by_type={}, trend=[],
        summary=summary(failure_patterns=[], error_clusters=[], recommendations=[],
                        sample_size=0, tests=0),
        thresholds={}, history=[], durations={},
    )


class TestFormat:
    def test_percent(self) -> None:
        assert fmt.percent(None) == "n/a"
        assert fmt.percent(math.nan) == "n/a"
        assert fmt.percent(0.123) == "12%"
        assert fmt.percent(0.1234, 1) == "12.3%"
        assert fmt.percent(1.0, 1) == "100.0%"

    def test_value_text(self) -> None:
        assert fmt.value_text(7.0) == "7"
        assert fmt.value_text(2.5) == "2.5"
        assert fmt.value_text(7) == "7"
        assert fmt.value_text("go") == "'go'"
        assert fmt.value_text("go", quote=False) == "go"
        assert fmt.value_text(None) == "None"

    def test_times(self) -> None:
        assert fmt.day(T0) == "2026-09-21"
        assert fmt.hours_span([2, 3]) == "02:00-04:00 UTC"
        assert fmt.hours_span([23]) == "23:00-00:00 UTC"
        assert fmt.hours_text([2, 3]) == "between 02:00 and 04:00 UTC"
        assert fmt.WEEKDAYS[0] == "Monday" and len(fmt.WEEKDAYS) == 7

    def test_signed(self) -> None:
        assert fmt.signed(None) == "n/a"
        assert fmt.signed(0.5) == "+0.50"
        assert fmt.signed(-0.125) == "-0.12"

    def test_sparkline_and_rate_line(self) -> None:
        assert sparkline([0.0, 0.5, 1.0, None]) == "▁▅█ "
        assert rate_line(rate(0, 0)) == "n/a (no successes or failures)"
        assert rate_line(rate(3000, 1000)) == "75.0%  (95% CI 70.0%-80.0%, n=4,000)"


class TestDashboardText:
    def test_lines(self) -> None:
        text = dashboard_text(snapshot())
        lines = text.splitlines()
        assert text.endswith("\n")
        win = "last 30 days (the learning loop and `thresholds apply` use 7: learning.window_days)"
        assert lines[0] == f"learnkit dashboard  2026-09-21 14:13 UTC  ({win})"
        assert lines[1] == "config /srv/app/learnkit.toml  database /srv/app/learnkit.db"
        assert f"Success rate, top-level operations ({win})" in lines
        assert "  75.0%  (95% CI 70.0%-80.0%, n=320)" in lines
        assert "  all operations, nested ones included: 75.0% (n=400)" in lines
        assert "Weekly trend, top-level operations (oldest first, 0-100% scale)  ▆▇ ▇" in lines
        assert "  week 3 (2026-09-07 to 2026-09-14)  no data" in lines
        assert f"By operation type ({win})" in lines
        assert f"  {'process_issue':<24} {'73.5%':>7}  n=340" in lines
        assert "  success 300  failure 100  skipped 20" in lines
        assert f"Top failure patterns ({win}; 120 hypotheses scanned)" in lines
        assert "  1. strong     process_issue fails 75% when complexity > 6, 25% otherwise" in lines
        assert not any("cluster pattern" in line for line in lines)
        assert any(line.startswith("      60   60%  growing  TimeoutError: timed out after <*>")
                   for line in lines)
        assert any(line.startswith("  - lower max_complexity from 8 to 7  (confidence 0.85, "
                                   "success rate 75% -> 82%") for line in lines)
        assert ("  max_complexity = 8  (attempt when complexity <= value; range 3..12, step 1)"
                in lines)
        assert ("    2026-09-19  max_complexity 9 -> 8 (lower, confidence 0.85, verdict improved)"
                in lines)

    def test_empty(self) -> None:
        lines = dashboard_text(empty_snapshot()).splitlines()
        assert "  n/a (no successes or failures)" in lines
        for line in ["  none", "  none found", "  none at confidence >= 0.7",
                     "  none configured"]:
            assert line in lines

    def test_rolled_back_change_is_marked(self) -> None:
        ch = attrs.evolve(CHANGE, status="rolled_back", verdict=None, confidence=None)
        text = dashboard_text(snapshot(history=[ch]))
        assert "    2026-09-19  max_complexity 9 -> 8 (lower) [rolled_back]" in text.splitlines()

    def test_rich_dashboard_shows_the_same(self) -> None:
        from rich.console import Console

        console = Console(record=True, width=160, color_system=None)
        dashboard_rich(snapshot(), console)
        out = console.export_text()
        for needle in ("learnkit dashboard", "process_issue", "fails 75% when complexity > 6",
                       "TimeoutError", "lower max_complexity from 8 to 7",
                       "max_complexity = 8", "strong"):
            assert needle in out


class TestMarkdown:
    def test_sections_and_numbers(self) -> None:
        md = report_markdown(snapshot())
        lines = md.splitlines()
        assert lines[0] == "# learnkit report: last 30 days"
        headings = [line for line in lines if line.startswith("#")]
        assert headings == ["# learnkit report: last 30 days", "## Summary", "## Weekly trend",
                            "## Failure patterns", "## Error clusters", "## Recommendations",
                            "## Thresholds", "### History"]
        assert "Generated 2026-09-21 14:13 UTC from `/srv/app/learnkit.db`" in md
        assert ("| Success rate, top-level operations | 75.0%  (95% CI 70.0%-80.0%, n=320) |"
                in lines)
        assert ("| Success rate, all operations (nested included) | 75.0%  (95% CI 70.0%-80.0%, "
                "n=400) |") in lines
        assert "| Operations with an outcome (all) | 400 |" in lines
        assert {"| Success | 300 |", "| Failure | 100 |", "| Skipped | 20 |"} <= set(lines)
        assert "1 strong finding (confidence >= 0.7), 0 suggestive (>= 0.5)" in md
        assert "1 error cluster; 1 recommendation; 120 hypotheses scanned" in md
        # the weekly trend: a row per week, the change against the last week with data
        assert any(line.startswith("| 2 | 2026-08-31 | 2026-09-07 | 75.0% | 70.0%-80.0% | 100 "
                                   "| +5.0 pts |") for line in lines)
        assert "| 3 | 2026-09-07 | 2026-09-14 | no data | - | 0 |  |" in lines
        assert any(line.startswith("| 4 |") and "+5.0 pts" in line for line in lines)
        # the finding: one short sentence, its evidence beside it
        assert ("| strong | process_issue fails 75% when complexity > 6, 25% otherwise | 0.91 | "
                "67%-82% in, n=120 (30% of ops), lift 3.0, 90% of failures, q=0.0012 |") in lines
        assert "cluster pattern, not listed" not in md
        # the cluster: pipes escaped, backticks replaced inside the code span
        assert ("| 60 | 60.0% | growing | `TimeoutError` | `timed out after <*> \\| retry 'now'` "
                "| process_issue (50), deploy (10) |") in lines
        # the recommendation and what it expects
        assert ("- **lower max_complexity from 8 to 7** (confidence 0.85, action "
                "`lower_threshold:max_complexity`)") in lines
        assert "  | success rate | 75.0% | 82.0% |" in lines
        assert "  | coverage | 100.0% | 90.0% |" in lines
        assert "  | utility | +0.200 | n/a |" in lines
        # thresholds and their history
        assert ("- max_complexity = 8  (attempt when complexity <= value; range 3..12, step 1): "
                "Largest issue complexity attempted") in lines
        assert ("| 2026-09-19 14:13 UTC | max_complexity | 9 | 8 | lower | 0.85 | improved "
                "| applied |") in lines
        assert "## By operation type" not in md

    def test_headline_rows_and_window(self) -> None:
        md = report_markdown(snapshot(days=7.0))
        lines = md.splitlines()
        assert "| Success rate, top-level operations | 75.0%  (95% CI 70.0%-80.0%, n=320) |" in lines
        assert sum(line.startswith("| Success rate") for line in lines) == 2
        assert "Every number covers the last 7 days." in md
        assert "may decide differently" not in md  # the loop's own window

    def test_detailed(self) -> None:
        md = report_markdown(snapshot(), detailed=True)
        lines = md.splitlines()
        assert "## By operation type" in lines
        assert "### process_issue" in lines and "### deploy" in lines
        assert "- duration p50 1.25 s, p95 3.5 s" in lines
        assert "- outcomes: success 250, failure 90" in lines
        assert "## Error clusters in detail" in lines
        assert "- 60 failures (60.0% of failures), trend growing (20 in the previous window)" in lines
        assert "- first seen 2026-09-16 14:13 UTC, last seen 2026-09-20 14:13 UTC" in lines

    def test_empty(self) -> None:
        md = report_markdown(empty_snapshot())
        lines = md.splitlines()
        assert ("0 strong findings (confidence >= 0.7), 0 suggestive (>= 0.5), 0 hidden below "
                "that; 0 error clusters; 0 recommendations") in md
        for line in ["None found.", "None.", "None at confidence >= 0.7.", "No changes yet."]:
            assert line in lines


class _Balance(HTMLParser):
    """Checks that every element is closed, in order."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                      "meta", "source", "track", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Balance:
    p = _Balance()
    p.feed(page)
    p.close()
    return p


class TestHtml:
    @pytest.mark.parametrize("detailed", [False, True])
    def test_well_formed(self, detailed: bool) -> None:
        page = report_html(snapshot(), detailed=detailed)
        p = parse(page)
        assert p.doctype == "DOCTYPE html"
        assert p.errors == []
        assert p.stack == []
        assert p.tags[:2] == ["html", "head"]
        assert p.tags.count("svg") == 4
        assert "script" not in p.tags

    def test_content(self) -> None:
        p = parse(report_html(snapshot()))
        text = "".join(p.text)
        assert "learnkit report: last 30 days" in text
        assert "lower max_complexity from 8 to 7" in text
        assert "now" not in p.tags
        assert "timed out after <*> | retry 'now'" in text  # the escaped pipe is a pipe again
        assert "Weekly success rate" in text
        assert "1 recommendations; generated 2026-09-21 14:13 UTC." in text
        assert {"h1", "h2", "h3", "table", "th", "td", "ul", "li", "code", "strong"} <= set(p.tags)

    def test_hostile_text_is_escaped(self) -> None:
        evil = "<script>alert(1)</script> & **not bold**"
        snap = snapshot(summary=summary(
            failure_patterns=[attrs.evolve(PATTERN, op_type=evil)],
            error_clusters=[attrs.evolve(CLUSTER, template="</td></tr><script>x</script>")]))
        p = parse(report_html(snap))
        assert p.errors == [] and p.stack == []
        assert "script" not in p.tags
        assert "<script>alert(1)</script>" in "".join(p.text)

    def test_empty(self) -> None:
        p = parse(report_html(empty_snapshot()))
        assert p.errors == [] and p.stack == []
        assert "rect" not in p.tags  # no bars without data

    def test_the_checker_can_fail(self) -> None:
        assert parse("<div><p>x</div>").errors
        assert parse("<ul><li>x</li>").stack == ["ul"]
        assert parse("<p>a<br>b</p>").errors == []
