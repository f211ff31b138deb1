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
from .format import day, percent, value_text

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
    days: float
    rate: Rate
    rate_7: Rate
    rate_30: Rate
    by_type: dict[str, Rate]
    trend: list[Rate]
    summary: Summary
    thresholds: dict[str, ThresholdConfig]
    history: list[ThresholdChange]
    durations: dict[str, dict[float, float]]


async def collect(kit: Kit, days: float, *, weeks: int = 4, detailed: bool = False) -> Snapshot:
    """Read what the dashboard or a report needs."""
    a = kit.analytics
    by_type = await a.get_rates_by_type(days)
    durations = {}
    if detailed:
        for t in by_type:
            durations[t] = await a.get_duration_percentiles(days, op_type=t)
    return Snapshot(
        now=kit.now(), config_path=kit.config.path, database_path=kit.database.store.location,
        days=days, rate=await a.get_rate(days), rate_7=await a.get_rate(7),
        rate_30=await a.get_rate(30), by_type=by_type, trend=await a.get_weekly_trend(weeks),
        summary=await kit.insights.generate_summary(days), thresholds=dict(kit.config.thresholds),
        history=await kit.controller.history(), durations=durations,
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


def sparkline(rates: list[float | None]) -> str:
    """One block per value on an absolute 0-100% scale (a gap for no data)."""
    return "".join(" " if r is None else SPARK[min(7, int(r * 8))] for r in rates)


def fmt_value(v: Any) -> str:
    return value_text(v, quote=False)


def change_line(c: ThresholdChange) -> str:
    conf = "" if c.confidence is None else f", confidence {c.confidence:.2f}"
    verdict = "" if c.verdict is None else f", verdict {c.verdict}"
    status = "" if c.status == "applied" else f" [{c.status}]"
    return (f"{day(c.at)}  {c.name} {fmt_value(c.old_value)} -> {fmt_value(c.new_value)} "
            f"({c.kind}{conf}{verdict}){status}")


def threshold_line(name: str, th: ThresholdConfig) -> str:
    sign = "<=" if th.limit == "max" else ">="
    scope = f" for {th.op_type}" if th.op_type else ""
    lo = "-" if th.min is None else fmt_value(th.min)
    hi = "-" if th.max is None else fmt_value(th.max)
    return (f"{name} = {fmt_value(th.value)}  (attempt when {th.attribute} {sign} value{scope}; "
            f"range {lo}..{hi}, step {fmt_value(th.step)})")


def _patterns(s: Summary, limit: int | None = None) -> list[FailurePattern]:
    ps = [p for p in s["failure_patterns"] if p.kind != "error_cluster"]
    return ps[:limit] if limit else ps


# -- the plain dashboard ------------------------------------------------------------


def dashboard_text(snap: Snapshot) -> str:
    """The dashboard as stable plain text (what a pipe gets)."""
    s = snap.summary
    out = [f"learnkit dashboard  {when(snap.now)}",
           f"config {snap.config_path}  database {snap.database_path}", ""]
    out += ["Success rate",
            f"  last 7 days    {rate_line(snap.rate_7)}",
            f"  last 30 days   {rate_line(snap.rate_30)}", ""]
    rates = [r.rate for r in snap.trend]
    out.append(f"Weekly trend (oldest first, 0-100% scale)  {sparkline(rates)}")
    for i, r in enumerate(snap.trend, 1):
        out.append(f"  week {i} ({day(r.start)} to {day(r.end)})  {pct(r.rate)}  n={r.n:,}")
    out.append("")
    out.append(f"By operation type ({fmt_value(snap.days)} days)")
    if not snap.by_type:
        out.append("  none")
    for t, r in snap.by_type.items():
        out.append(f"  {t:<24} {pct(r.rate):>7}  n={r.n:,}")
    out.append("")
    counts = "  ".join(f"{k} {v:,}" for k, v in snap.rate.counts.items())
    out += [f"Outcomes ({fmt_value(snap.days)} days)", f"  {counts}", ""]
    out.append(f"Top failure patterns ({fmt_value(snap.days)} days, "
               f"{s['tests']} hypotheses scanned)")
    top = _patterns(s, 5)
    if not top:
        out.append("  none found")
    for i, p in enumerate(top, 1):
        out.append(f"  {i}. [{p.confidence or 0:.2f}] {p.description}")
    clusters = s["error_clusters"][:5]
    out += ["", "Error clusters"]
    if not clusters:
        out.append("  none")
    for c in clusters:
        out.append(f"  {c.count:>6,}  {pct(c.share_of_failures, 0):>4}  {c.trend:<8} "
                   f"{c.error_type}: {c.template[:90]}")
    out += ["", "Recommendations"]
    if not s["recommendations"]:
        out.append("  none at the current confidence threshold")
    for rec in s["recommendations"]:
        out.append(f"  - [{rec.confidence:.2f}] {rec.message}")
    out += ["", "Thresholds"]
    if not snap.thresholds:
        out.append("  none configured")
    for name, th in snap.thresholds.items():
        out.append(f"  {threshold_line(name, th)}")
        for ch in [h for h in snap.history if h.name == name][-3:]:
            out.append(f"    {change_line(ch)}")
    return "\n".join(out) + "\n"


def dashboard_rich(snap: Snapshot, console: Console) -> None:
    """The dashboard with colour and tables, for a terminal."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    # Everything below that comes from recorded data is Text, not markup:
    # error messages hold brackets ("[preauth]", even "[/x]").
    s = snap.summary
    console.print(f"[bold]learnkit dashboard[/]  {when(snap.now)}  "
                  f"[dim]{escape(str(snap.config_path))}[/]")
    rates = Table.grid(padding=(0, 2))
    rates.add_row("last 7 days", rate_line(snap.rate_7))
    rates.add_row("last 30 days", rate_line(snap.rate_30))
    trend = " ".join(pct(r.rate, 0) for r in snap.trend)
    rates.add_row("weekly trend", f"[cyan]{sparkline([r.rate for r in snap.trend])}[/]  {trend}")
    counts = "  ".join(f"{k} {v:,}" for k, v in snap.rate.counts.items())
    rates.add_row(f"outcomes ({fmt_value(snap.days)}d)", counts)
    console.print(Panel(rates, title="Success rate"))
    types = Table("operation type", "success rate", "n", title=f"By type ({snap.days:g} days)")
    for t, r in snap.by_type.items():
        types.add_row(Text(t), pct(r.rate), f"{r.n:,}")
    console.print(types)
    pats = Table("conf.", "pattern", title="Top failure patterns", show_lines=False)
    for p in _patterns(s, 5):
        pats.add_row(f"{p.confidence or 0:.2f}", Text(p.description))
    if pats.row_count:
        console.print(pats)
    clusters = Table("count", "share", "trend", "cluster", title="Error clusters")
    for c in s["error_clusters"][:5]:
        clusters.add_row(f"{c.count:,}", pct(c.share_of_failures, 0), c.trend,
                         Text(f"{c.error_type}: {c.template[:80]}"))
    if clusters.row_count:
        console.print(clusters)
    recs = Text("\n").join(
        Text.assemble((f"{r.confidence:.2f}", "bold"), " ", r.message)
        for r in s["recommendations"]
    )
    console.print(Panel(recs or Text("none at the current confidence threshold"),
                        title="Recommendations"))
    lines = []
    for name, th in snap.thresholds.items():
        lines.append(threshold_line(name, th))
        lines += [f"  {change_line(c)}" for c in snap.history if c.name == name][-3:]
    console.print(Panel(Text("\n".join(lines) or "none configured"), title="Thresholds"))


# -- reports --------------------------------------------------------------------------


def _pattern_md(p: FailurePattern) -> list[str]:
    rows = [f"- **{p.description}**",
            f"  - kind `{p.kind}`"
            + (f", operation type `{p.op_type}`" if p.op_type else "")
            + (f", condition `{p.attribute} {p.condition} {fmt_value(p.value)}`"
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
    types = ", ".join(f"{t} ({n:,})" for t, n in sorted(c.op_types.items(), key=lambda x: -x[1]))
    return [f"| {c.count:,} | {pct(c.share_of_failures)} | {c.trend} | `{c.error_type}` | "
            f"`{_md_escape(c.template[:100])}` | {types} |"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def report_markdown(snap: Snapshot, *, detailed: bool = False) -> str:
    """A Markdown report: summary, trend, patterns, recommendations, thresholds."""
    s = snap.summary
    d = fmt_value(snap.days)
    out = [f"# learnkit report: last {d} days", "",
           f"Generated {when(snap.now)} from `{snap.database_path}` "
           f"(config `{snap.config_path}`).", "", "## Summary", ""]
    out += ["| | value |", "|---|---|", f"| Success rate ({d} days) | {rate_line(snap.rate)} |"]
    for span, r in ((7, snap.rate_7), (30, snap.rate_30)):
        if snap.days != span:
            out.append(f"| Success rate ({span} days) | {rate_line(r)} |")
    out.append(f"| Operations with an outcome | {s['sample_size']:,} |")
    for k, v in snap.rate.counts.items():
        out.append(f"| {k.capitalize()} | {v:,} |")
    out += ["", f"{_count(len(_patterns(s)), 'failure pattern')} and "
            f"{_count(len(s['error_clusters']), 'error cluster')} found; "
            f"{_count(len(s['recommendations']), 'recommendation')} at confidence >= the "
            f"configured threshold; {s['tests']} hypotheses scanned with the false discovery "
            "rate controlled across all of them.", "", "## Weekly trend", "",
            "| Week | From | To | Success rate | 95% CI | n | Change |",
            "|---|---|---|---|---|---|---|"]
    prev = None
    for i, r in enumerate(snap.trend, 1):
        change = "" if prev is None or r.rate is None else f"{(r.rate - prev) * 100:+.1f} pts"
        ci = "-" if r.low is None else f"{pct(r.low)}-{pct(r.high)}"
        out.append(f"| {i} | {day(r.start)} | {day(r.end)} | {pct(r.rate)} | {ci} | {r.n:,} | "
                   f"{change} |")
        prev = r.rate if r.rate is not None else prev
    out += ["", "## Failure patterns", ""]
    pats = _patterns(s)
    out += [line for p in pats for line in _pattern_md(p)] or ["None found."]
    out += ["", "## Error clusters", ""]
    if s["error_clusters"]:
        out += ["| Failures | Share | Trend | Error type | Template | Operation types |",
                "|---|---|---|---|---|---|"]
        for c in s["error_clusters"]:
            out += _cluster_md(c)
    else:
        out.append("None.")
    out += ["", "## Recommendations", ""]
    if not s["recommendations"]:
        out.append("None at the configured confidence threshold.")
    for rec in s["recommendations"]:
        out.append(f"- **{rec.message}** (confidence {rec.confidence:.2f}, "
                   f"action `{rec.action}`)")
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
        out.append(f"- {threshold_line(name, th)}" + (f": {th.description}" if th.description
                                                      else ""))
    out += ["", "### History", ""]
    if snap.history:
        out += ["| When | Threshold | Old | New | Kind | Confidence | Verdict | Status |",
                "|---|---|---|---|---|---|---|---|"]
        for ch in snap.history:
            conf = "-" if ch.confidence is None else f"{ch.confidence:.2f}"
            out.append(f"| {when(ch.at)} | {ch.name} | {fmt_value(ch.old_value)} | "
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
        out += [f"### {t}", "", f"- success rate {rate_line(r)}",
                "- outcomes: " + ", ".join(f"{k} {v:,}" for k, v in r.counts.items())]
        p = snap.durations.get(t) or {}
        if p:
            out.append("- duration " + ", ".join(f"p{fmt_value(k)} {v:.3g} s"
                                                 for k, v in p.items()))
        mine = [x for x in _patterns(s) if x.op_type == t]
        if mine:
            out += ["", "Patterns:", ""]
            out += [line for x in mine for line in _pattern_md(x)]
        out.append("")
    out += ["## Error clusters in detail", ""]
    for c in s["error_clusters"]:
        out += [f"### {c.error_type}: `{_md_escape(c.template[:120])}`", "",
                f"- {c.count:,} failures ({pct(c.share_of_failures)} of failures), trend "
                f"{c.trend} ({c.previous_count:,} in the previous window)",
                f"- first seen {when(c.first_seen)}, last seen {when(c.last_seen)}",
                "- operation types: " + ", ".join(f"{t} ({n:,})" for t, n in c.op_types.items()),
                f"- example: `{_md_escape(c.example[:300])}`", ""]
    return out


def _svg_bars(values: list[tuple[str, float | None]], title: str, width: int = 520) -> str:
    """A small bar chart (0-100%) as inline SVG."""
    h, pad, n = 180, 30, max(len(values), 1)
    bw = (width - 2 * pad) / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + 40}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{pad}" y="16" font-size="13">{html.escape(title)}</text>',
             f'<line x1="{pad}" y1="{h + 20}" x2="{width - pad}" y2="{h + 20}" stroke="#999"/>']
    for i, (label, v) in enumerate(values):
        x = pad + i * bw + bw * 0.15
        if v is not None:
            bh = v * (h - 20)
            parts.append(f'<rect x="{x:.1f}" y="{h + 20 - bh:.1f}" width="{bw * 0.7:.1f}" '
                         f'height="{bh:.1f}" fill="#4878a8"/>')
            parts.append(f'<text x="{x + bw * 0.35:.1f}" y="{h + 15 - bh:.1f}" font-size="11" '
                         f'text-anchor="middle">{v:.0%}</text>')
        parts.append(f'<text x="{x + bw * 0.35:.1f}" y="{h + 35}" font-size="11" '
                     f'text-anchor="middle">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def report_html(snap: Snapshot, *, detailed: bool = False) -> str:
    """One self-contained HTML page: the Markdown report's content, with inline SVG charts."""
    s = snap.summary
    trend = _svg_bars([(f"week {i}", r.rate) for i, r in enumerate(snap.trend, 1)],
                      "Weekly success rate")
    types = _svg_bars([(t[:14], r.rate) for t, r in snap.by_type.items()],
                      f"Success rate by operation type ({fmt_value(snap.days)} days)")
    md = report_markdown(snap, detailed=detailed)
    body = _markdown_to_html(md)
    css = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
           "padding:0 1rem;color:#222}table{border-collapse:collapse;margin:.5rem 0}"
           "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}"
           "code{background:#f4f4f4;padding:0 .2rem}")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>learnkit report</title><style>{css}</style></head><body>"
            + body.replace("<h2>Weekly trend</h2>",
                           f"<h2>Weekly trend</h2><div>{trend}{types}</div>", 1)
            + f"<p><small>{len(s['recommendations'])} recommendations; generated "
            f"{html.escape(when(snap.now))}.</small></p></body></html>\n")


def _inline(text: str) -> str:
    """Escape text, then render **bold** and `code` spans."""
    t = html.escape(text)
    t = re.sub(r"`([^`]*)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)


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
                table.append([c.strip().replace("\\|", "|")
                              for c in line.strip("|").split(" | ")])
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
