"""What people see: the dashboard (plain or rich) and reports (Markdown or HTML).

:func:`collect` reads everything once; the renderers only format. The plain
dashboard is stable text meant for pipes, tests and scripts.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._analytics import Rate
from .._insights.patterns import ErrorCluster, FailurePattern, Summary
from .._thresholds.controller import ThresholdChange
from .format import day, one_line, percent, value_text

if TYPE_CHECKING:
    from rich.console import Console

    from .._config import ThresholdConfig
    from .._kit import Kit

__all__ = ["Snapshot", "collect", "dashboard_text", "report_html", "report_markdown"]

SPARK = "▁▂▃▄▅▆▇█"


@attrs.frozen
class Snapshot:
    """Everything the dashboard and reports show, read at one moment."""

    now: float
    config_path: Path
    database_path: Path | str  # a path, or a server URL without password
    #: The window every number is computed over, in days.
    days: float
    #: ``learning.window_days``: the window the learning loop and
    #: ``thresholds apply`` use (views say so when ``days`` differs).
    window_days: float
    #: Every operation in the window (per-outcome counts).
    rate: Rate
    #: The headline: top-level operations only (no parent), in the window.
    top: Rate
    by_type: dict[str, Rate]
    #: Top-level operations, week by week, oldest first.
    trend: list[Rate]
    #: Top-level operations, day by day over the window (week by week past 60 days).
    series: list[Rate]
    summary: Summary
    thresholds: dict[str, ThresholdConfig]
    history: list[ThresholdChange]
    durations: dict[str, dict[float, float]]
    confidence_threshold: float
    display_floor: float
    failure_cost: float


async def collect(kit: Kit, days: float | None = None, *, weeks: int = 4,
                  detailed: bool = False) -> Snapshot:
    """Read what the dashboard or a report needs (``days``: default ``window_days``)."""
    lc = kit.config.learning
    days = lc.window_days if days is None else days
    a = kit.analytics
    by_type = await a.get_rates_by_type(days)
    durations = {}
    if detailed:
        for t in by_type:
            durations[t] = await a.get_duration_percentiles(days, op_type=t)
    summary = await kit.insights.generate_summary(days)  # flushes what is queued first
    return Snapshot(
        now=kit.now(), config_path=kit.config.path, database_path=kit.database.store.location,
        days=days, window_days=lc.window_days, rate=await a.get_rate(days),
        top=await a.get_rate(days, top_level=True), by_type=by_type,
        trend=await a.get_weekly_trend(weeks, top_level=True),
        series=await a.get_series(days, step_days=1.0 if days <= 60 else 7.0),
        summary=summary, thresholds=dict(kit.config.thresholds),
        history=await kit.controller.history(), durations=durations,
        confidence_threshold=lc.confidence_threshold, display_floor=lc.display_floor,
        failure_cost=lc.failure_cost,
    )


# -- small formatters -------------------------------------------------------------


def pct(x: float | None, digits: int = 1) -> str:
    return percent(x, digits)


def when(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")



def rate_line(r: Rate) -> str:
    if r.rate is None:
        return "n/a (no successes or failures)"
    return f"{pct(r.rate)}  (95% CI {pct(r.low)}-{pct(r.high)}, n={r.n:,})"


def window_text(snap: Snapshot) -> str:
    """``last 7 days`` and, when the loop uses another window, what it uses."""
    d = f"last {fmt_value(snap.days)} day{'s' if snap.days != 1 else ''}"
    if snap.days != snap.window_days:
        d += (f" (the learning loop and `thresholds apply` use {fmt_value(snap.window_days)}: "
              "learning.window_days)")
    return d


def human_duration(seconds: float | None) -> str:
    """``4.4 us``, ``12 ms``, ``4.2 s``, ``3 min 20 s``, ``2 h 05 min``: never ``4.39e-06 s``."""
    if seconds is None or math.isnan(seconds):
        return "n/a"
    s = abs(seconds)
    if s < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    if s < 1:
        return f"{seconds * 1e3:.3g} ms"
    if s < 60:
        return f"{seconds:.3g} s"
    if s < 3600:
        m, sec = divmod(round(seconds), 60)
        return f"{m} min {sec:02d} s"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m:02d} min"


def tier(confidence: float | None, snap: Snapshot) -> str | None:
    """``strong`` (at least confidence_threshold), ``suggestive`` (at least the
    display floor), or None: hidden."""
    c = confidence or 0.0
    if c >= snap.confidence_threshold:
        return "strong"
    if c >= snap.display_floor:
        return "suggestive"
    return None


def findings(snap: Snapshot) -> tuple[list[tuple[str, FailurePattern]], int]:
    """The patterns a view shows as findings, strongest first, and how many were hidden.

    Findings compare failure rates with and without a condition. Error
    clusters are counts (shown as clusters), and shifts in the *mix* of
    failures (a cluster's share of failures under a condition, which moves
    whenever another kind of failure moves) are details of their cluster,
    not findings.
    """
    shown, hidden = [], 0
    for p in snap.summary["failure_patterns"]:
        if p.kind == "error_cluster" or p.error_type is not None:
            continue
        t = tier(p.confidence, snap)
        if t is None:
            hidden += 1
        else:
            shown.append((t, p))
    shown.sort(key=lambda tp: -(tp[1].confidence or 0.0))
    return shown, hidden


def short(p: FailurePattern) -> str:
    """One short sentence for a finding, on one line; the numbers go beside it."""
    return one_line(_short(p), 200)


def _short(p: FailurePattern) -> str:
    who = p.op_type or "operations"
    if p.kind == "change_point" and p.rate_before is not None and p.at is not None:
        return (f"{who}: success rate went from {pct(p.rate_before, 0)} to "
                f"{pct(p.rate_after, 0)} around {day(p.at)}")
    if p.attribute is not None and p.failure_rate_in is not None:
        cond = f"{p.attribute} {p.condition} {fmt_value(p.value)}"
        return (f"{who} fails {pct(p.failure_rate_in, 0)} when {cond}, "
                f"{pct(p.failure_rate_out, 0)} otherwise")
    return one_line(p.description.split(";")[0], 90)


def details(p: FailurePattern) -> str:
    """The evidence of a finding, compactly."""
    bits = []
    if p.interval_in is not None:
        bits.append(f"{pct(p.interval_in[0], 0)}-{pct(p.interval_in[1], 0)} in")
    if p.support is not None:
        prev = "" if p.prevalence is None else f" ({pct(p.prevalence, 0)} of ops)"
        bits.append(f"n={p.support:,}{prev}")
    if p.lift is not None:
        bits.append("lift inf" if p.lift == math.inf else f"lift {p.lift:.1f}")
    if p.share_of_failures is not None:
        bits.append(f"{pct(p.share_of_failures, 0)} of failures")
    if p.q_value is not None:
        bits.append(f"q={p.q_value:.2g}")
    return ", ".join(bits)


def rec_short(rec: Any) -> str:
    """A recommendation in a few words: ``lower max_complexity from 7 to 6``."""
    if rec.threshold is not None and rec.recommended is not None:
        verb = "raise" if (rec.current is not None and rec.recommended > rec.current) else "lower"
        return one_line(f"{verb} {rec.threshold} from {fmt_value(rec.current)} to "
                        f"{fmt_value(rec.recommended)}")
    return one_line(str(rec.message).split(":")[0].split(";")[0], 200)


def rec_details(rec: Any) -> str:
    bits = [f"confidence {rec.confidence:.2f}"]
    for k, ev in (rec.expected or {}).items():
        b, a = ev.get("before"), ev.get("after")
        if k == "utility":
            bits.append(f"utility {signed(b)} -> {signed(a)}")
        else:
            bits.append(f"{k.replace('_', ' ')} {pct(b, 0)} -> {pct(a, 0)}")
    return ", ".join(bits)


def signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def coverage_utility(r: Rate, cost: float) -> tuple[float | None, float | None]:
    """Coverage (attempted / offered) and utility per offered operation of a window."""
    s, f, k = r.successes, r.failures, r.counts.get("skipped", 0)
    offered = s + f + k
    if not offered:
        return None, None
    return (s + f) / offered, (s - cost * f) / offered


def sparkline(rates: list[float | None]) -> str:
    """One block per value on an absolute 0-100% scale (a gap for no data)."""
    return "".join(" " if r is None else SPARK[min(7, int(r * 8))] for r in rates)


def fmt_value(v: Any) -> str:
    return value_text(v, quote=False)


def change_line(c: ThresholdChange) -> str:
    conf = "" if c.confidence is None else f", confidence {c.confidence:.2f}"
    verdict = "" if c.verdict is None else f", verdict {c.verdict}"
    status = "" if c.status == "applied" else f" [{c.status}]"
    return one_line(f"{day(c.at)}  {c.name} {fmt_value(c.old_value)} -> "
                    f"{fmt_value(c.new_value)} ({c.kind}{conf}{verdict}){status}")


def threshold_line(name: str, th: ThresholdConfig) -> str:
    sign = "<=" if th.limit == "max" else ">="
    scope = f" for {th.op_type}" if th.op_type else ""
    lo = "-" if th.min is None else fmt_value(th.min)
    hi = "-" if th.max is None else fmt_value(th.max)
    return one_line(f"{name} = {fmt_value(th.value)}  (attempt when {th.attribute} {sign} "
                    f"value{scope}; range {lo}..{hi}, step {fmt_value(th.step)})")


def cluster_line(c: ErrorCluster, limit: int = 90) -> str:
    """``ErrorType: template``, on one line, the template cut at ``limit`` characters."""
    return f"{one_line(c.error_type, 80)}: {one_line(c.template, limit)}"


def _patterns(s: Summary, limit: int | None = None) -> list[FailurePattern]:
    ps = [p for p in s["failure_patterns"] if p.kind != "error_cluster"]
    return ps[:limit] if limit else ps


# -- the plain dashboard ------------------------------------------------------------


def dashboard_text(snap: Snapshot) -> str:
    """The dashboard as stable plain text (what a pipe gets)."""
    s = snap.summary
    win = window_text(snap)
    out = [f"learnkit dashboard  {when(snap.now)}  ({win})",
           f"config {snap.config_path}  database {snap.database_path}", ""]
    out += [f"Success rate, top-level operations ({win})",
            f"  {rate_line(snap.top)}",
            f"  all operations, nested ones included: {pct(snap.rate.rate)} "
            f"(n={snap.rate.n:,})", ""]
    rates = [r.rate for r in snap.trend]
    out.append(f"Weekly trend, top-level operations (oldest first, 0-100% scale)  "
               f"{sparkline(rates)}")
    for i, r in enumerate(snap.trend, 1):
        value = f"{pct(r.rate)}  n={r.n:,}" if r.n else "no data"
        out.append(f"  week {i} ({day(r.start)} to {day(r.end)})  {value}")
    out.append("")
    out.append(f"By operation type ({win})")
    if not snap.by_type:
        out.append("  none")
    for t, r in snap.by_type.items():
        out.append(f"  {one_line(t, 60):<24} {pct(r.rate):>7}  n={r.n:,}")
    out.append("")
    counts = "  ".join(f"{k} {v:,}" for k, v in snap.rate.counts.items())
    out += [f"Outcomes ({win})", f"  {counts}", ""]
    shown, hidden = findings(snap)
    out.append(f"Top failure patterns ({win}; {s['tests']} hypotheses scanned)")
    if not shown:
        out.append("  none found")
    for i, (t, p) in enumerate(shown[:5], 1):
        out.append(f"  {i}. {t:<10} {short(p)}")
        out.append(f"     {'':<10} confidence {p.confidence or 0:.2f}; {details(p)}")
    if hidden:
        out.append(f"  ({hidden} below confidence {snap.display_floor:g} not shown: "
                   "learning.display_floor)")
    clusters = s["error_clusters"][:5]
    out += ["", f"Error clusters ({win}; count, share of failures, trend)"]
    if not clusters:
        out.append("  none")
    for c in clusters:
        out.append(f"  {c.count:>6,}  {pct(c.share_of_failures, 0):>4}  {c.trend:<8} "
                   f"{cluster_line(c)}")
    out += ["", f"Recommendations ({fmt_value(snap.days)} days)"]
    if not s["recommendations"]:
        out.append(f"  none at confidence >= {snap.confidence_threshold:g}")
    for rec in s["recommendations"]:
        out.append(f"  - {rec_short(rec)}  ({rec_details(rec)})")
    out += ["", "Thresholds"]
    if not snap.thresholds:
        out.append("  none configured")
    for name, th in snap.thresholds.items():
        out.append(f"  {threshold_line(name, th)}")
        for ch in [h for h in snap.history if h.name == name][-3:]:
            out.append(f"    {change_line(ch)}")
    return "\n".join(out) + "\n"


def _rate_style(r: float | None) -> str:
    """Colour of a success rate: green when good, yellow middling, red bad."""
    if r is None:
        return "dim"
    return "green" if r >= 0.8 else "yellow" if r >= 0.5 else "red"


def dashboard_rich(snap: Snapshot, console: Console) -> None:
    """The dashboard with colour and tables, for a terminal.

    Colour says good (green) and bad (red); rich drops colour when
    ``NO_COLOR`` is set, and every colour has a word or number beside it.
    """
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    # Everything below that comes from recorded data is Text, not markup:
    # error messages hold brackets ("[preauth]", even "[/x]").
    s = snap.summary
    win = window_text(snap)
    console.print(f"[bold]learnkit dashboard[/]  {when(snap.now)}  {escape(win)}  "
                  f"[dim]{escape(str(snap.config_path))}[/]")
    rates = Table.grid(padding=(0, 2))
    rates.add_row("top-level operations",
                  Text(rate_line(snap.top), style=_rate_style(snap.top.rate)))
    rates.add_row("all, nested included", Text(f"{pct(snap.rate.rate)} (n={snap.rate.n:,})",
                                               style="dim"))
    trend = Text()
    for r in snap.trend:
        trend.append(sparkline([r.rate]) if r.n else "·", style=_rate_style(r.rate))
    trend.append("  " + " ".join(pct(r.rate, 0) if r.n else "no data" for r in snap.trend))
    rates.add_row("weekly trend", trend)
    counts = Text()
    for k, v in snap.rate.counts.items():
        style = {"success": "green", "failure": "red", "abandoned": "red"}.get(k, "")
        counts.append(f"{k} {v:,}  ", style=style if v else "dim")
    rates.add_row("outcomes", counts)
    console.print(Panel(rates, title=f"Success rate ({escape(win)})"))
    types = Table("operation type", "success rate", "n", title=f"By type ({win})")
    for t, r in snap.by_type.items():
        types.add_row(Text(one_line(t, 60)), Text(pct(r.rate), style=_rate_style(r.rate)),
                      f"{r.n:,}")
    console.print(types)
    shown, hidden = findings(snap)
    pats = Table("tier", "finding", "evidence", title="Top failure patterns",
                 caption=(f"{hidden} below confidence {snap.display_floor:g} not shown"
                          if hidden else None))
    for t, p in shown[:5]:
        pats.add_row(Text(t, style="bold red" if t == "strong" else "yellow"), Text(short(p)),
                     Text(f"conf. {p.confidence or 0:.2f}; {details(p)}", style="dim"))
    if pats.row_count:
        console.print(pats)
    clusters = Table("count", "share", "trend", "cluster", title="Error clusters")
    for c in s["error_clusters"][:5]:
        trend_style = {"new": "red", "growing": "red", "fading": "green"}.get(c.trend, "")
        clusters.add_row(f"{c.count:,}", pct(c.share_of_failures, 0),
                         Text(c.trend, style=trend_style),
                         Text(cluster_line(c, 80)))
    if clusters.row_count:
        console.print(clusters)
    recs = Text("\n").join(
        Text.assemble((rec_short(r), "bold"), "  ", (rec_details(r), "dim"))
        for r in s["recommendations"]
    )
    console.print(Panel(recs or Text(f"none at confidence >= {snap.confidence_threshold:g}"),
                        title=f"Recommendations ({snap.days:g} days)"))
    lines = Text()
    for name, th in snap.thresholds.items():
        lines.append(threshold_line(name, th) + "\n")
        for ch in [h for h in snap.history if h.name == name][-3:]:
            style = {"improved": "green", "worse": "red"}.get(ch.verdict or "", "")
            lines.append(f"  {change_line(ch)}\n", style=style)
    console.print(Panel(lines if snap.thresholds else Text("none configured"),
                        title="Thresholds"))


# -- reports --------------------------------------------------------------------------


def _pattern_md(p: FailurePattern) -> list[str]:
    rows = [f"- **{_md(p.description, 500)}**",
            f"  - kind {_code(p.kind)}"
            + (f", operation type {_code(p.op_type)}" if p.op_type else "")
            + (f", condition {_code(f'{p.attribute} {p.condition} {fmt_value(p.value)}')}"
               if p.attribute else "")]
    if p.failure_rate_in is not None and p.interval_in is not None:
        out_txt = ""
        if p.failure_rate_out is not None and p.interval_out is not None:
            out_txt = (f" against {pct(p.failure_rate_out)} "
                       f"[{pct(p.interval_out[0])}, {pct(p.interval_out[1])}] otherwise")
        rows.append(f"  - rate {pct(p.failure_rate_in)} [{pct(p.interval_in[0])}, "
                    f"{pct(p.interval_in[1])}]{out_txt}; lift "
                    f"{'inf' if p.lift == math.inf else f'{p.lift:.2f}' if p.lift else 'n/a'}")
    stats = []
    if p.support is not None:
        stats.append(f"support {p.support:,}")
    if p.prevalence is not None:
        stats.append(f"holds for {pct(p.prevalence)} of operations")
    if p.share_of_failures is not None:
        stats.append(f"{pct(p.share_of_failures)} of failures")
    if p.confidence is not None:
        stats.append(f"confidence {p.confidence:.2f}")
    if p.q_value is not None:
        stats.append(f"q = {p.q_value:.2g}")
    rows.append("  - " + ", ".join(stats))
    return rows


def _cluster_md(c: ErrorCluster) -> list[str]:
    types = ", ".join(f"{_md(t, 60)} ({n:,})"
                      for t, n in sorted(c.op_types.items(), key=lambda x: -x[1]))
    return [f"| {c.count:,} | {pct(c.share_of_failures)} | {c.trend} | "
            f"{_code(c.error_type, 80)} | {_code(c.template, 100)} | {types} |"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


# Characters that start markup inside a line of Markdown (emphasis, code, links,
# HTML, entities, table cells). Line-start markup (#, -, >) cannot occur: the
# text is one line and never starts one.
# An underscore inside a word (process_issue) never starts emphasis and is kept.
# "<" and "&" only start markup before a letter (a tag, an entity): "<= 7" stays.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|~]|[<&](?=[A-Za-z/!?#])"
                         r"|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def _md(text: object, limit: int | None = None) -> str:
    """Recorded data as Markdown text: one line, every markup character escaped.

    An op type, message or context value can then neither add structure
    (headings, rows, emphasis, links, HTML) to a report nor break a table.
    """
    return _MD_SPECIAL.sub(r"\\\1", one_line(text, limit))


def _code(text: object, limit: int | None = None) -> str:
    """Recorded data as a Markdown code span on one line (a backtick becomes ')."""
    return "`" + one_line(text, limit).replace("`", "'").replace("|", "\\|") + "`"


def report_markdown(snap: Snapshot, *, detailed: bool = False) -> str:
    """A Markdown report: summary, trend, patterns, recommendations, thresholds."""
    s = snap.summary
    d = fmt_value(snap.days)
    win = window_text(snap)
    out = [f"# learnkit report: last {d} days", "",
           f"Generated {when(snap.now)} from {_code(snap.database_path)} "
           f"(config {_code(snap.config_path)}). Every number covers the {win}.", "",
           "## Summary", ""]
    out += ["| | value |", "|---|---|",
            f"| Success rate, top-level operations | {rate_line(snap.top)} |",
            f"| Success rate, all operations (nested included) | {rate_line(snap.rate)} |",
            f"| Operations with an outcome (all) | {s['sample_size']:,} |"]
    for k, v in snap.rate.counts.items():
        out.append(f"| {k.capitalize()} | {v:,} |")
    shown, hidden = findings(snap)
    strong = sum(1 for t, _ in shown if t == "strong")
    out += ["", f"{_count(strong, 'strong finding')} (confidence >= "
            f"{snap.confidence_threshold:g}), {len(shown) - strong} suggestive (>= "
            f"{snap.display_floor:g}), {hidden} hidden below that; "
            f"{_count(len(s['error_clusters']), 'error cluster')}; "
            f"{_count(len(s['recommendations']), 'recommendation')}; {s['tests']} hypotheses "
            "scanned with the false discovery rate controlled across all of them.", "",
            "## Weekly trend", "",
            "Top-level operations, week by week (weeks end at the time of the report).", "",
            "| Week | From | To | Success rate | 95% CI | n | Change |",
            "|---|---|---|---|---|---|---|"]
    prev = None
    for i, r in enumerate(snap.trend, 1):
        change = "" if prev is None or r.rate is None else f"{(r.rate - prev) * 100:+.1f} pts"
        ci = "-" if r.low is None else f"{pct(r.low)}-{pct(r.high)}"
        rate = pct(r.rate) if r.n else "no data"
        out.append(f"| {i} | {day(r.start)} | {day(r.end)} | {rate} | {ci} | {r.n:,} | "
                   f"{change} |")
        prev = r.rate if r.rate is not None else prev
    out += ["", "## Failure patterns", ""]
    if shown:
        out += ["| Tier | Finding | Confidence | Evidence |", "|---|---|---|---|"]
        out += [f"| {t} | {_md(short(p))} | {p.confidence or 0:.2f} | "
                f"{_md(details(p))} |" for t, p in shown]
    else:
        out.append("None found.")
    if hidden:
        out += ["", f"{_count(hidden, 'pattern')} below confidence {snap.display_floor:g} "
                "not shown (`learning.display_floor`)."]
    out += ["", "## Error clusters", ""]
    if s["error_clusters"]:
        out += ["| Failures | Share | Trend | Error type | Template | Operation types |",
                "|---|---|---|---|---|---|"]
        for c in s["error_clusters"]:
            out += _cluster_md(c)
    else:
        out.append("None.")
    out += ["", "## Recommendations", ""]
    if snap.days != snap.window_days:
        out += [f"From the last {d} days of outcomes. The learning loop and `learnkit "
                f"thresholds apply` analyse the last {fmt_value(snap.window_days)} days "
                "(learning.window_days) and may decide differently.", ""]
    else:
        out += [f"From the last {d} days of outcomes (`learnkit thresholds apply` and the "
                "learning loop analyse `learning.window_days`).", ""]
    if not s["recommendations"]:
        out.append(f"None at confidence >= {snap.confidence_threshold:g}.")
    for rec in s["recommendations"]:
        out.append(f"- **{_md(rec_short(rec))}** (confidence {rec.confidence:.2f}, "
                   f"action {_code(rec.action)})")
        if rec.expected:
            out.append("")
            out.append("  | expected | before | after |")
            out.append("  |---|---|---|")
            for k, ev in rec.expected.items():
                b, a = ev["before"], ev["after"]
                if k == "utility":
                    cells = ["n/a" if x is None else f"{x:+.3f}" for x in (b, a)]
                else:
                    cells = [pct(b), pct(a)]
                out.append(f"  | {k.replace('_', ' ')} | {cells[0]} | {cells[1]} |")
            out.append("")
    out += ["", "## Thresholds", ""]
    for name, th in snap.thresholds.items():
        out.append(f"- {_md(threshold_line(name, th))}"
                   + (f": {_md(th.description, 300)}" if th.description else ""))
    out += ["", "### History", ""]
    if snap.history:
        out += ["| When | Threshold | Old | New | Kind | Confidence | Verdict | Status |",
                "|---|---|---|---|---|---|---|---|"]
        for ch in snap.history:
            conf = "-" if ch.confidence is None else f"{ch.confidence:.2f}"
            out.append(f"| {when(ch.at)} | {_md(ch.name, 80)} | {fmt_value(ch.old_value)} | "
                       f"{fmt_value(ch.new_value)} | {ch.kind} | {conf} | {ch.verdict or '-'} | "
                       f"{ch.status} |")
    else:
        out.append("No changes yet.")
    if detailed:
        out += _detailed_md(snap)
    out += ["", "---", "", "Confidence is the posterior probability that an effect exists and "
            "exceeds the practical margin; 0.7 means about one in three such statements may be "
            "wrong. Rates come with 95% Wilson intervals. See docs/statistics.md.", ""]
    return "\n".join(out)


def _detailed_md(snap: Snapshot) -> list[str]:
    s = snap.summary
    out = ["", "## By operation type", ""]
    for t, r in snap.by_type.items():
        out += [f"### {_md(t, 120)}", "", f"- success rate {rate_line(r)}",
                "- outcomes: " + ", ".join(f"{k} {v:,}" for k, v in r.counts.items())]
        p = snap.durations.get(t) or {}
        if p:
            out.append("- duration " + ", ".join(f"p{fmt_value(k)} {human_duration(v)}"
                                                 for k, v in p.items()))
        mine = [x for _, x in findings(snap)[0] if x.op_type == t]
        if mine:
            out += ["", "Findings in full:", ""]
            out += [line for x in mine for line in _pattern_md(x)]
        out.append("")
    out += ["## Error clusters in detail", ""]
    for c in s["error_clusters"]:
        out += [f"### {_md(c.error_type, 80)}: {_code(c.template, 120)}", "",
                f"- {c.count:,} failures ({pct(c.share_of_failures)} of failures), trend "
                f"{c.trend} ({c.previous_count:,} in the previous window)",
                f"- first seen {when(c.first_seen)}, last seen {when(c.last_seen)}",
                "- operation types: " + ", ".join(f"{_md(t, 60)} ({n:,})"
                                                  for t, n in c.op_types.items()),
                f"- example: {_code(c.example, 300)}"]
        mix = [p for p in s["failure_patterns"] if p.kind == "context"
               and p.error_type == c.error_type and p.template == c.template
               and tier(p.confidence, snap) is not None]
        if mix:
            out.append("- more common among failures when: " + "; ".join(
                f"{_md(f'{p.attribute} {p.condition} {fmt_value(p.value)}', 200)} "
                f"({pct(p.failure_rate_in, 0)} of those failures, {pct(p.failure_rate_out, 0)} "
                "otherwise)" for p in mix)
                + " (the mix of failures, not the failure rate: it shifts whenever another "
                  "kind of failure does)")
        out.append("")
    return out


_INK, _GRID, _MUTED = "#222", "#ddd", "#777"
_BLUE, _GREEN, _ORANGE, _RED = "#2f6db3", "#2e8b57", "#d9822b", "#c0392b"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _short_day(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%b %d").replace(" 0", " ")


class _Plot:
    """An SVG plot area with a labelled y axis (0-100% unless told) and x labels."""

    def __init__(self, title: str, width: int = 640, height: int = 230,
                 y_min: float = 0.0, y_max: float = 1.0, y_label: str = "success rate",
                 percent_axis: bool = True, top: int = 34, left: int = 56,
                 bottom: int = 44) -> None:
        self.w, self.h, self.top, self.left, self.right = width, height, top, left, 16
        self.bottom = bottom
        self.y_min, self.y_max, self.percent_axis = y_min, y_max, percent_axis
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}" '
            'font-family="system-ui,sans-serif">',
            f'<text x="{left}" y="18" font-size="14" font-weight="600" fill="{_INK}">'
            f"{_esc(title)}</text>",
            f'<text transform="translate(14 {top + self.ph / 2:.0f}) rotate(-90)" '
            f'font-size="11" text-anchor="middle" fill="{_MUTED}">{_esc(y_label)}</text>',
        ]
        ticks = 4
        for i in range(ticks + 1):
            v = y_min + (y_max - y_min) * i / ticks
            y = self.y(v)
            label = f"{v:.0%}" if percent_axis else f"{v:+.2f}".replace("+0.00", "0")
            self.parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - self.right}" '
                              f'y2="{y:.1f}" stroke="{_GRID}"/>')
            self.parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" '
                              f'text-anchor="end" fill="{_MUTED}">{label}</text>')
        self.parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + self.ph}" '
                          f'stroke="{_INK}"/>')
        base = self.y(max(y_min, min(0.0, y_max)) if not percent_axis else y_min)
        self.parts.append(f'<line x1="{left}" y1="{base:.1f}" x2="{width - self.right}" '
                          f'y2="{base:.1f}" stroke="{_INK}"/>')

    @property
    def ph(self) -> float:
        return self.h - self.top - self.bottom

    @property
    def pw(self) -> float:
        return self.w - self.left - self.right

    def y(self, v: float) -> float:
        v = min(max(v, self.y_min), self.y_max)
        return self.top + self.ph * (1 - (v - self.y_min) / (self.y_max - self.y_min))

    def text(self, x: float, y: float, t: str, *, size: int = 11, anchor: str = "middle",
             fill: str = _INK) -> None:
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" '
                          f'text-anchor="{anchor}" fill="{fill}">{_esc(t)}</text>')

    def svg(self) -> str:
        return "".join(self.parts) + "</svg>"


def _svg_rates(title: str, items: list[tuple[str, Rate]]) -> str:
    """Bars of success rates with 95% intervals; a window without data is labelled."""
    plot = _Plot(title)
    n = max(len(items), 1)
    bw = plot.pw / n
    for i, (label, r) in enumerate(items):
        x0 = plot.left + i * bw
        cx = x0 + bw / 2
        if r.rate is None:
            plot.parts.append(f'<rect x="{x0 + bw * 0.2:.1f}" y="{plot.top}" '
                              f'width="{bw * 0.6:.1f}" height="{plot.ph:.1f}" fill="#f4f4f4" '
                              'stroke="#ccc" stroke-dasharray="4 3"/>')
            plot.text(cx, plot.top + plot.ph / 2, "no data", fill=_MUTED)
        else:
            y = plot.y(r.rate)
            plot.parts.append(f'<rect x="{x0 + bw * 0.2:.1f}" y="{y:.1f}" '
                              f'width="{bw * 0.6:.1f}" height="{plot.y(0) - y:.1f}" '
                              f'fill="{_BLUE}" opacity="0.85"/>')
            if r.low is not None and r.high is not None:
                lo, hi = plot.y(r.low), plot.y(r.high)
                plot.parts.append(
                    f'<path d="M{cx:.1f} {lo:.1f}V{hi:.1f}M{cx - 6:.1f} {lo:.1f}h12'
                    f'M{cx - 6:.1f} {hi:.1f}h12" stroke="{_INK}" stroke-width="1.5"/>')
            plot.text(cx + 9, min(y, plot.y(r.high or r.rate)) - 4, f"{r.rate:.0%}",
                      anchor="start")
        plot.text(cx, plot.top + plot.ph + 16, label)
        plot.text(cx, plot.top + plot.ph + 30, f"n={r.n:,}", size=10, fill=_MUTED)
    plot.text(plot.w - plot.right, 18, "bars: success rate; whiskers: 95% interval",
              size=10, anchor="end", fill=_MUTED)
    return plot.svg()


def _svg_story(snap: Snapshot) -> str:
    """Success rate, coverage and utility per day, with threshold changes marked."""
    series = snap.series
    if not series:
        return ""
    t0, t1 = series[0].start, series[-1].end
    top = _Plot("Success rate and coverage, with threshold changes", height=270,
                y_label="share", bottom=64)
    cost = snap.failure_cost
    bottom = _Plot("Utility per offered operation (success +1, failure "
                   f"-{fmt_value(cost)}, refused 0)", height=190, y_min=-cost, y_max=1.0,
                   y_label="utility", percent_axis=False)

    def x(plot: _Plot, t: float) -> float:
        return plot.left + plot.pw * (t - t0) / (t1 - t0)

    def line(plot: _Plot, values: list[float | None], colour: str, dash: str = "") -> None:
        path, pen = [], "M"
        for r, v in zip(series, values, strict=True):
            if v is None:
                pen = "M"
                continue
            cx = x(plot, (r.start + r.end) / 2)
            path.append(f"{pen}{cx:.1f} {plot.y(v):.1f}")
            pen = "L"
            plot.parts.append(f'<circle cx="{cx:.1f}" cy="{plot.y(v):.1f}" r="2.5" '
                              f'fill="{colour}"/>')
        if path:
            extra = f' stroke-dasharray="{dash}"' if dash else ""
            plot.parts.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" '
                              f'stroke-width="2"{extra}/>')

    cov_util = [coverage_utility(r, cost) for r in series]
    for r in series:  # intervals of the daily success rate, as a light band per day
        if r.low is not None and r.high is not None:
            cx = x(top, (r.start + r.end) / 2)
            top.parts.append(f'<line x1="{cx:.1f}" y1="{top.y(r.low):.1f}" x2="{cx:.1f}" '
                             f'y2="{top.y(r.high):.1f}" stroke="{_BLUE}" stroke-opacity="0.3" '
                             'stroke-width="5"/>')
    line(top, [r.rate for r in series], _BLUE)
    line(top, [c for c, _ in cov_util], _ORANGE, "6 3")
    be = cost / (1 + cost)
    top.parts.append(f'<line x1="{top.left}" y1="{top.y(be):.1f}" x2="{top.w - top.right}" '
                     f'y2="{top.y(be):.1f}" stroke="{_RED}" stroke-dasharray="2 3"/>')
    top.text(top.w - top.right - 2, top.y(be) - 4, f"break-even {be:.0%}", size=10,
             anchor="end", fill=_RED)
    line(bottom, [u for _, u in cov_util], _GREEN)
    for plot in (top, bottom):
        for ch in snap.history:
            if not t0 <= ch.at <= t1:
                continue
            cx = x(plot, ch.at)
            colour = _RED if ch.kind == "rollback" else _INK
            plot.parts.append(f'<line x1="{cx:.1f}" y1="{plot.top}" x2="{cx:.1f}" '
                              f'y2="{plot.top + plot.ph:.1f}" stroke="{colour}" '
                              'stroke-dasharray="5 3"/>')
            if plot is top:
                plot.text(cx + 3, plot.top + 11, f"{ch.name} {fmt_value(ch.old_value)}→"
                          f"{fmt_value(ch.new_value)}", size=10, anchor="start", fill=colour)
        step = max(1, len(series) // 7)
        for i, r in enumerate(series):
            if i % step == 0:
                plot.text(x(plot, (r.start + r.end) / 2), plot.top + plot.ph + 16,
                          _short_day(r.start))
        empty = sum(1 for r in series if not r.n)
        if empty:
            plot.text(plot.w - plot.right, plot.top + plot.ph + 32,
                      f"{empty} day(s) without data: gaps in the lines", size=10,
                      anchor="end", fill=_MUTED)
    legend = [(_BLUE, "", "success rate (top-level; band: 95% interval)"),
              (_ORANGE, "6 3", "coverage (attempted / offered)")]
    lx = top.left
    for colour, dash, label in legend:
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        top.parts.append(f'<line x1="{lx}" y1="{top.h - 8}" x2="{lx + 22}" y2="{top.h - 8}" '
                         f'stroke="{colour}" stroke-width="2"{extra}/>')
        top.text(lx + 26, top.h - 4, label, size=10, anchor="start")
        lx += 40 + 6 * len(label)
    return top.svg() + bottom.svg()


def report_html(snap: Snapshot, *, detailed: bool = False) -> str:
    """One self-contained HTML page: the Markdown report's content, with inline SVG charts."""
    s = snap.summary
    trend = _svg_rates("Weekly success rate, top-level operations",
                       [(f"{_short_day(r.start)}\u2013{_short_day(r.end)}", r) for r in snap.trend])
    types = _svg_rates(f"Success rate by operation type, last {fmt_value(snap.days)} days",
                       [(t[:18], r) for t, r in snap.by_type.items()])
    story = _svg_story(snap)
    md = report_markdown(snap, detailed=detailed)
    body = _markdown_to_html(md)
    css = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
           "padding:0 1rem;color:#222}table{border-collapse:collapse;margin:.5rem 0}"
           "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}"
           "code{background:#f4f4f4;padding:0 .2rem}svg{display:block;margin:.75rem 0;"
           "max-width:100%;height:auto}")
    charts = f"<div>{trend}{story}{types}</div>"
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>learnkit report</title><style>{css}</style></head><body>"
            + body.replace("<h2>Weekly trend</h2>", f"<h2>Weekly trend</h2>{charts}", 1)
            + f"<p><small>{len(s['recommendations'])} recommendations; generated "
            f"{html.escape(when(snap.now))}.</small></p></body></html>\n")


_INLINE = re.compile(r"\\(.)|`([^`]*)`|(\*\*)|([^\\`*]+|.)", re.S)


def _inline(text: str) -> str:
    """Our Markdown's inline part as HTML: backslash escapes, `code` and **bold**.

    One pass over tokens: an escaped character is always literal text, so
    data escaped by :func:`_md` never turns into markup.
    """
    out: list[str] = []
    bold = False
    for m in _INLINE.finditer(text):
        escaped, code, stars, plain = m.groups()
        if escaped is not None:
            out.append(html.escape(escaped))
        elif code is not None:
            out.append(f"<code>{html.escape(code.replace(chr(92) + '|', '|'))}</code>")
        elif stars is not None:
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
        else:
            out.append(html.escape(plain))
    if bold:
        out.append("</strong>")
    return "".join(out)


def _markdown_to_html(md: str) -> str:
    """Just enough Markdown for our own reports: headings, lists, tables, paragraphs."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush_table() -> None:
        if not table:
            return
        head, *rest = table
        out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
        for row in rest:
            out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
        out.append("</table>")
        table.clear()

    depth = 0  # open <ul> levels

    for raw in md.splitlines():
        line = raw.strip()
        if line.startswith("|"):
            if not re.fullmatch(r"\|[-|: ]+\|", line):  # skip the |---|---| separator
                table.append([c.strip() for c in line[1:-1].split(" | ")])
            continue
        flush_table()
        level = (len(raw) - len(raw.lstrip(" "))) // 2 + 1 if line.startswith("- ") else 0
        while depth > level:
            out.append("</ul>")
            depth -= 1
        if line.startswith("#"):
            h = len(line) - len(line.lstrip("#"))
            out.append(f"<h{h}>{_inline(line[h:].strip())}</h{h}>")
        elif line.startswith("- "):
            while depth < level:
                out.append("<ul>")
                depth += 1
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line == "---":
            out.append("<hr>")
        elif line:
            out.append(f"<p>{_inline(line)}</p>")
    flush_table()
    out.extend("</ul>" for _ in range(depth))
    return "\n".join(out)
