"""Insights: failure patterns with honest confidence, error clusters, recommendations.

One call of :meth:`InsightsGenerator.generate_summary` reads the window's
rollups (never every row), builds every hypothesis of the scan (context
values and cut points per operation type and per error cluster, hours,
weekdays, change points, growing clusters, threshold bands), computes all
p-values, controls the false discovery rate across the whole scan with
Benjamini-Hochberg, and only then turns the survivors into patterns. The
confidence of a pattern is the posterior probability that the failure rate
under the condition exceeds the rate outside it by more than
``practical_margin``, with Beta priors shrunk toward the overall rate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

import attrs

from ._analytics import DAY, AnalyticsCollector, Rate, _rate, _window
from ._clustering import cluster_messages
from ._config import LearningConfig, ThresholdConfig
from ._errors import UnknownThresholdError
from ._rollup import OTHER
from ._stats import wilson_interval

if TYPE_CHECKING:
    from ._store import WindowStats

__all__ = [
    "ErrorCluster",
    "FailurePattern",
    "InsightsGenerator",
    "Recommendation",
    "Summary",
]

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
#: Clusters per operation type whose context is scanned separately.
TOP_CLUSTERS = 5


@attrs.frozen
class FailurePattern:
    """A condition under which failures are likelier, with its evidence."""

    #: ``error_cluster``, ``context``, ``temporal`` or ``change_point``.
    kind: str
    #: One sentence a person can read.
    description: str
    #: The operation type it concerns.
    op_type: str | None = None
    #: For patterns about one error cluster: its error type.
    error_type: str | None = None
    #: The context attribute, ``hour`` or ``weekday`` (UTC).
    attribute: str | None = None
    #: ``>``, ``<=``, ``==`` or ``in``.
    condition: str | None = None
    #: The value compared against (a list for ``in``).
    value: Any = None
    #: Operations matching the condition (with a success or failure outcome).
    support: int | None = None
    #: Failures among them (of the cluster, for cluster patterns).
    failures: int | None = None
    #: Failure rate where the condition holds. For a pattern about one error
    #: cluster: the cluster's share of the type's failures there.
    failure_rate_in: float | None = None
    #: The same where the condition does not hold.
    failure_rate_out: float | None = None
    #: failure_rate_in / failure_rate_out (inf when the rate outside is 0).
    lift: float | None = None
    #: Share of all failures (of the type or cluster) that match the condition.
    share_of_failures: float | None = None
    #: Posterior probability that the effect exceeds the practical margin.
    confidence: float | None = None
    #: Benjamini-Hochberg q-value across the whole scan.
    q_value: float | None = None
    #: Change points: when the rate changed (Unix time, start of the day).
    at: float | None = None
    #: Change points: success rate before.
    rate_before: float | None = None
    #: Change points: success rate after.
    rate_after: float | None = None
    #: Error clusters: the template, variables as ``<*>``.
    template: str | None = None
    #: Error clusters: failures in the window.
    count: int | None = None
    #: Error clusters: first failure in the window (Unix time).
    first_seen: float | None = None
    #: Error clusters: last failure in the window (Unix time).
    last_seen: float | None = None
    #: Share of the operations that match the condition ("how common X is").
    prevalence: float | None = None
    #: 95% Wilson interval of failure_rate_in.
    interval_in: tuple[float, float] | None = None
    #: 95% Wilson interval of failure_rate_out.
    interval_out: tuple[float, float] | None = None
    #: The test's p-value before the FDR correction.
    p_value: float | None = None


@attrs.frozen
class ErrorCluster:
    """Failures with one error type and one message template."""

    #: Stable short id (from error type and template).
    id: str
    #: The error type (``module.QualName``).
    error_type: str
    #: The message template; variables as ``<*>``.
    template: str
    #: Failures in the window.
    count: int
    #: Share of all failures in the window.
    share_of_failures: float
    #: First and last failure in the window (Unix time).
    first_seen: float
    last_seen: float
    #: Failures per operation type.
    op_types: dict[str, int]
    #: One real message.
    example: str
    #: Failures in the previous window of the same length.
    previous_count: int
    #: Against the previous window of the same length: ``new``, ``growing``,
    #: ``fading``, ``stable``, or ``unknown`` when nothing of its types ran then.
    trend: str
    #: Posterior probability that its rate per operation grew.
    confidence: float
    #: q-value of the growth test (None when too few failures to test).
    q_value: float | None


@attrs.frozen
class Recommendation:
    """Something to do, how sure we are, and what it is expected to change."""

    #: Machine-readable id, e.g. ``lower_threshold:max_complexity``.
    action: str
    #: What to do and why, in one or two sentences.
    message: str
    #: Posterior probability behind it (see docs/statistics.md).
    confidence: float
    #: The threshold it concerns, if any.
    threshold: str | None = None
    #: The threshold's current value.
    current: float | int | None = None
    #: The value recommended.
    recommended: float | int | None = None
    #: ``success_rate``, ``coverage``, ``utility`` -> {"before": x, "after": y}.
    expected: dict[str, dict[str, float | None]] = attrs.Factory(dict)
    #: The patterns behind it.
    evidence: tuple[FailurePattern, ...] = ()

    def __str__(self) -> str:
        return f"{self.message} (confidence {self.confidence:.2f})"


class Summary(TypedDict):
    """What :meth:`InsightsGenerator.generate_summary` returns."""

    days: float
    offset: float
    start: float
    end: float
    success_rate: float | None
    sample_size: int
    outcome_counts: dict[str, int]
    rates_by_type: dict[str, Rate]
    failure_patterns: list[FailurePattern]
    error_clusters: list[ErrorCluster]
    recommendations: list[Recommendation]
    actions: list[str]
    recommended_thresholds: dict[str, int | float]
    tests: int


# -- helpers ------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.0%}"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, str) else str(v)


def _day(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")


def _hours_span(hours: list[int]) -> str:
    start, end = hours[0], (hours[-1] + 1) % 24
    return f"{start:02d}:00-{end:02d}:00 UTC"


def _hours_text(hours: list[int]) -> str:
    start, end = hours[0], (hours[-1] + 1) % 24
    return f"between {start:02d}:00 and {end:02d}:00 UTC"


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@attrs.define
class _Table:
    """A 2x2 table: (in, out) x (failure, other)."""

    a: int  # failures in
    n_in: int
    c: int  # failures out
    n_out: int
    #: Candidates this one was chosen among (cut points, days): its share of prior mass.
    k: int = 1

    @property
    def failures(self) -> int:
        return self.a + self.c

    @property
    def total(self) -> int:
        return self.n_in + self.n_out


@attrs.define
class _Test:
    """One hypothesis of the scan; ``build`` makes its pattern once q is known."""

    p: float
    build: Callable[[float], Any]
    q: float = 1.0


class _Counts:
    """Per-type counts gathered from a WindowStats."""

    def __init__(self, ws: WindowStats) -> None:
        self.ok: dict[str, int] = {}
        self.fail: dict[str, int] = {}
        self.by_hour: dict[str, dict[int, list[int]]] = {}
        for (t, h, o), n in ws.outcomes.items():
            if o not in ("success", "failure"):
                continue
            i = 1 if o == "failure" else 0
            (self.fail if i else self.ok)[t] = (self.fail if i else self.ok).get(t, 0) + n
            self.by_hour.setdefault(t, {}).setdefault(h, [0, 0])[i] += n
        # attribute -> value -> [ok, fail, skipped, explored ok, explored fail]
        self.attrs: dict[str, dict[str, dict[Any, list[int]]]] = {}
        #: (op_type, attribute) -> decoded value -> the value's text in the rollups
        self.text: dict[tuple[str, str], dict[Any, str]] = {}
        for (t, a, v, o, x), n in ws.context.items():
            if v == OTHER:
                continue
            slot = {"success": 0, "failure": 1, "skipped": 2}.get(o)
            if slot is None:
                continue
            value = _decode(v)
            self.text.setdefault((t, a), {})[value] = v
            cell = self.attrs.setdefault(t, {}).setdefault(a, {}).setdefault(
                value, [0, 0, 0, 0, 0]
            )
            cell[slot] += n
            if x and slot < 2:
                cell[3 + slot] += n

    def types(self) -> list[str]:
        return sorted(set(self.ok) | set(self.fail))


# -- the generator --------------------------------------------------------------


class InsightsGenerator:
    """Finds failure patterns and recommends what to change.

    ``InsightsGenerator(collector, logger)`` as in the specification, or
    ``kit.insights``. Settings (``min_samples``, ``confidence_threshold``,
    ``failure_cost``, ``practical_margin``, ``fdr``) come from the kit's
    config at each call, so edits to learnkit.toml apply.
    """

    def __init__(
        self, analytics_collector: AnalyticsCollector, logger: logging.Logger | None = None
    ) -> None:
        self.collector = analytics_collector
        self.logger = logger or logging.getLogger("learnkit")
        self._cache: tuple[Any, Summary] | None = None
        self._pi0 = 0.99

    @property
    def _kit(self) -> Any:
        return self.collector.database.kit

    @property
    def settings(self) -> LearningConfig:
        """The ``[learning]`` settings in force."""
        cfg: LearningConfig = self._kit.config.learning
        return cfg

    @property
    def thresholds(self) -> dict[str, ThresholdConfig]:
        """The thresholds in force (live values)."""
        th: dict[str, ThresholdConfig] = self._kit.config.thresholds
        return th

    async def generate_summary(self, days: float = 7, *, offset: float = 0) -> Summary:
        """Analyse ``[now - offset - days, now - offset)``.

        Returns a :class:`Summary` dict whose keys include ``success_rate``,
        ``failure_patterns``, ``recommendations``, ``actions``,
        ``recommended_thresholds`` and ``sample_size``.
        """
        kit = self._kit
        now = kit.now()
        start, end = _window(now, days, offset)
        key = (start, end, kit._writer.written, id(kit.config))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        store = kit._store
        ws = await store.window_stats(start, end)
        prev = await store.window_stats(start - days * DAY, start)
        summary = self._analyse(ws, prev, days, offset)
        self._cache = (key, summary)
        return summary

    async def recommend_threshold_adjustment(self, name: str, days: float = 7) -> bool:
        """Whether the analysis of the last ``days`` recommends changing ``name``.

        Raises:
            UnknownThresholdError: learnkit.toml has no such threshold.
        """
        return await self.get_recommended_threshold(name, days) is not None

    async def get_recommended_threshold(
        self, name: str, days: float = 7
    ) -> int | float | None:
        """The value recommended for threshold ``name``; None when it should stay.

        Raises:
            UnknownThresholdError: learnkit.toml has no such threshold.
        """
        if name not in self.thresholds:
            known = ", ".join(sorted(self.thresholds)) or "none"
            raise UnknownThresholdError(
                f"no threshold {name!r} in {self._kit.config.path} (defined: {known}); "
                f"add a [thresholds.{name}] table"
            )
        summary = await self.generate_summary(days)
        return summary["recommended_thresholds"].get(name)

    async def error_clusters(self, days: float = 7) -> list[ErrorCluster]:
        """The error clusters of the last ``days``, largest first."""
        return (await self.generate_summary(days))["error_clusters"]

    # -- the analysis ---------------------------------------------------------

    def _analyse(self, ws: WindowStats, prev: WindowStats, days: float, offset: float) -> Summary:
        cfg = self.settings
        counts = _Counts(ws)
        tests: list[_Test] = []
        total_counts: dict[str, int] = {}
        for (_, _, o), n in ws.outcomes.items():
            total_counts[o] = total_counts.get(o, 0) + n
        overall = _rate(ws.start, ws.end, total_counts)
        per_type: dict[str, dict[str, int]] = {}
        for (t, _, o), n in ws.outcomes.items():
            per_type.setdefault(t, {})[o] = per_type.setdefault(t, {}).get(o, 0) + n
        rates_by_type = {t: _rate(ws.start, ws.end, c) for t, c in sorted(per_type.items())}

        clusters, members = self._clusters(ws, prev, counts, tests)
        for t in counts.types():
            self._scan_context(t, counts, tests, None)
            self._scan_temporal(t, counts, tests)
            # A cluster holding nearly all of a type's failures would only
            # repeat the type's own patterns.
            type_failures = counts.fail.get(t, 0)
            top = sorted(
                (c for c in clusters if c.op_types.get(t, 0) >= cfg.min_samples
                 and c.op_types[t] < 0.9 * type_failures),
                key=lambda c: -c.op_types[t],
            )[:TOP_CLUSTERS]
            for c in top:
                self._scan_context(t, counts, tests, (c, members[c.id], ws))
        threshold_tests = self._scan_thresholds(counts, tests)

        import numpy as np

        from ._statistics import benjamini_hochberg, storey_pi0

        self._pi0 = storey_pi0([x.p for x in tests])
        qs: list[float] = (
            [float(q) for q in benjamini_hochberg(np.array([x.p for x in tests]))]
            if tests else []
        )
        for test, q in zip(tests, qs, strict=True):
            test.q = q
        patterns: list[FailurePattern] = []
        merged_hours: dict[str, list[tuple[int, _Test]]] = {}
        growth_q: dict[str, float] = {}
        for test in tests:
            built = test.build(test.q)
            if isinstance(built, FailurePattern):
                patterns.append(built)
            elif isinstance(built, tuple) and built[0] == "hour":
                merged_hours.setdefault(built[1], []).append((built[2], test))
            elif isinstance(built, tuple) and built[0] == "growth":
                growth_q[built[1]] = built[2]
        clusters = self._growth_confidence(
            [self._with_growth(c, growth_q.get(c.id)) for c in clusters], self._exposure)
        for op_type, hours in merged_hours.items():
            patterns.extend(self._merge_hours(op_type, hours, counts))
        patterns.sort(key=lambda p: (-(p.confidence or 0), p.q_value or 1))

        recs = self._threshold_recommendations(threshold_tests, counts)
        recs += self._pattern_recommendations(patterns, clusters)
        recs.sort(key=lambda r: -r.confidence)
        cluster_patterns = [self._cluster_pattern(c) for c in clusters]
        return Summary(
            days=days,
            offset=offset,
            start=ws.start,
            end=ws.end,
            success_rate=overall.rate,
            sample_size=overall.n,
            outcome_counts=overall.counts,
            rates_by_type=rates_by_type,
            failure_patterns=cluster_patterns + patterns,
            error_clusters=clusters,
            recommendations=recs,
            actions=[r.action for r in recs],
            recommended_thresholds={
                r.threshold: r.recommended
                for r in recs
                if r.threshold is not None and r.recommended is not None
            },
            tests=len(tests),
        )

    # -- pieces of the scan ---------------------------------------------------

    def _confidence(self, tables: list[_Table]) -> list[float]:
        """P(there is an effect) x P(rate_in - rate_out > margin | effect).

        Beta priors of ``min_samples`` pseudo-observations are centred on the
        overall rate. P(effect) comes from a spike-and-slab prior whose null
        share ``pi0`` is estimated from the whole scan's p-values, so the
        confidence already knows how many hypotheses were looked at.
        """
        if not tables:
            return []
        from ._statistics import prob_effect, prob_greater

        cfg = self.settings
        m = float(cfg.min_samples)
        a1, b1, a2, b2, bases = [], [], [], [], []
        for tb in tables:
            base = tb.failures / tb.total if tb.total else 0.5
            base = min(max(base, 1e-3), 1 - 1e-3)
            bases.append(base)
            a0, b0 = m * base, m * (1 - base)
            a1.append(a0 + tb.a)
            b1.append(b0 + tb.n_in - tb.a)
            a2.append(a0 + tb.c)
            b2.append(b0 + tb.n_out - tb.c)
        beyond = prob_greater(a1, b1, a2, b2, cfg.practical_margin)
        real = prob_effect(
            [tb.a for tb in tables], [tb.n_in for tb in tables],
            [tb.c for tb in tables], [tb.n_out for tb in tables],
            bases, m, [tb.k for tb in tables], self._pi0,
        )
        return [float(x * y) for x, y in zip(beyond, real, strict=True)]

    def _confidence_effect(self, tb: _Table) -> float:
        """P(the two rates of a table differ at all), spike and slab (see _confidence)."""
        from ._statistics import prob_effect

        base = min(max(tb.failures / tb.total if tb.total else 0.5, 1e-3), 1 - 1e-3)
        m = float(self.settings.min_samples)
        return float(prob_effect(tb.a, tb.n_in, tb.c, tb.n_out, base, m, tb.k, self._pi0)[0])

    def _pattern(
        self,
        kind: str,
        tb: _Table,
        q: float,
        p: float,
        describe: Callable[[float, float, float], str],
        **fields: Any,
    ) -> FailurePattern | None:
        """A pattern from a 2x2 table, if it passes the FDR and points to more failures."""
        cfg = self.settings
        if q > cfg.fdr or tb.n_in < cfg.min_samples or tb.n_out < cfg.min_samples:
            return None
        r_in, r_out = tb.a / tb.n_in, tb.c / tb.n_out
        if r_in <= r_out:
            return None
        conf = self._confidence([tb])[0]
        lift = r_in / r_out if r_out > 0 else math.inf
        share = tb.a / tb.failures if tb.failures else 0.0
        prevalence = tb.n_in / tb.total
        return FailurePattern(
            kind=kind,
            description=describe(r_in, r_out, prevalence),
            support=tb.n_in,
            failures=tb.a,
            failure_rate_in=r_in,
            failure_rate_out=r_out,
            lift=lift,
            share_of_failures=share,
            confidence=conf,
            q_value=q,
            prevalence=prevalence,
            interval_in=wilson_interval(tb.a, tb.n_in),
            interval_out=wilson_interval(tb.c, tb.n_out),
            p_value=p,
            **fields,
        )

    def _scan_context(
        self,
        op_type: str,
        counts: _Counts,
        tests: list[_Test],
        cluster: tuple[ErrorCluster, set[tuple[str, str]], WindowStats] | None,
    ) -> None:
        """Categorical values and numeric cut points of every attribute of a type."""
        from ._statistics import fisher_greater, max_cut

        cfg = self.settings
        ms = cfg.min_samples
        for attr, values in sorted(counts.attrs.get(op_type, {}).items()):
            if attr.startswith("_"):
                continue
            if cluster is None:
                fails = {v: c[1] for v, c in values.items()}
                ns = {v: cnt[0] + cnt[1] for v, cnt in values.items()}
                what, who = "failure rate", f"{op_type} failures"
                whose = f"{op_type} operations"
            else:
                # Among the type's failures, is this cluster over-represented
                # under X? (Every cluster rises with the overall failure rate;
                # only a shift in the mix is news about the cluster.)
                c, sigs, ws = cluster
                text = counts.text[(op_type, attr)]
                fails = dict.fromkeys(values, 0)
                for et, sig in sigs:
                    for v in values:
                        fails[v] += ws.error_context.get((op_type, et, sig, attr, text[v]), 0)
                ns = {v: cnt[1] for v, cnt in values.items()}
                who = f"{c.error_type} '{c.template}' failures of {op_type}"
                what = "its share of failures"
                whose = f"{op_type} failures"
            total = sum(ns.values())
            f_total = sum(fails.values())
            if total < 2 * ms or f_total == 0:
                continue
            extra = {"op_type": op_type, "attribute": attr}
            if cluster is not None:
                extra.update(error_type=cluster[0].error_type, template=cluster[0].template)
            keys = [v for v in values if v is not None]
            if keys and all(_is_number(v) for v in keys):
                order = sorted(keys)
                f_arr = [fails[v] for v in order]
                ok_arr = [ns[v] - fails[v] for v in order]
                best = max_cut(f_arr, ok_arr, ms)
                if best is None:
                    continue
                i, z, p = best
                cut = order[i]
                above = z > 0
                f_le = sum(f_arr[: i + 1])
                n_le = sum(f_arr[: i + 1]) + sum(ok_arr[: i + 1])
                cuts = max(1, len(order) - 1)
                tb = (
                    _Table(f_total - f_le, total - n_le, f_le, n_le, cuts)
                    if above
                    else _Table(f_le, n_le, f_total - f_le, total - n_le, cuts)
                )
                cond = ">" if above else "<="

                def describe(r_in: float, r_out: float, prev: float, *, tb: _Table = tb,
                             cond: str = cond, cut: Any = cut, who: str = who,
                             what: str = what, attr: str = attr, whose: str = whose) -> str:
                    return (
                        f"{_pct(tb.a / max(tb.failures, 1))} of {who} occur when "
                        f"{attr} {cond} {_fmt_value(cut)}, which holds for {_pct(prev)} "
                        f"of {whose}; {what} {_pct(r_in)} there against "
                        f"{_pct(r_out)} otherwise (n={tb.n_in:,} vs {tb.n_out:,})"
                    )

                tests.append(_Test(p, _builder(self, "context", tb, p, describe,
                                               dict(extra, condition=cond, value=cut))))
            else:
                for v in keys:
                    n_in = ns[v]
                    if n_in < ms or total - n_in < ms:
                        continue
                    a = fails[v]
                    p = float(fisher_greater(a, n_in, f_total, total))
                    tb = _Table(a, n_in, f_total - a, total - n_in)

                    def describe_v(r_in: float, r_out: float, prev: float, *, tb: _Table = tb,
                                   v: Any = v, who: str = who, what: str = what,
                                   attr: str = attr, whose: str = whose) -> str:
                        return (
                            f"{_pct(tb.a / max(tb.failures, 1))} of {who} occur when "
                            f"{attr} == {_fmt_value(v)}, which holds for {_pct(prev)} of "
                            f"{whose}; {what} {_pct(r_in)} there against "
                            f"{_pct(r_out)} otherwise (n={tb.n_in:,} vs {tb.n_out:,})"
                        )

                    tests.append(_Test(p, _builder(self, "context", tb, p, describe_v,
                                                   dict(extra, condition="==", value=v))))

    def _scan_temporal(self, op_type: str, counts: _Counts, tests: list[_Test]) -> None:
        """Hour-of-day and weekday effects, and change points in the daily rate."""
        from ._statistics import fisher_greater, max_cut

        ms = self.settings.min_samples
        hours = counts.by_hour.get(op_type, {})
        if not hours:
            return
        hod = [[0, 0] for _ in range(24)]
        wd = [[0, 0] for _ in range(7)]
        daily: dict[int, list[int]] = {}
        for h, (ok, f) in hours.items():
            hod[h % 24][0] += ok
            hod[h % 24][1] += f
            w = ((h // 24) + 3) % 7  # 1970-01-01 was a Thursday
            wd[w][0] += ok
            wd[w][1] += f
            d = daily.setdefault(h // 24, [0, 0])
            d[0] += ok
            d[1] += f
        total = sum(ok + f for ok, f in hod)
        f_total = sum(f for _, f in hod)
        if f_total == 0:
            return
        for h, (ok, f) in enumerate(hod):
            n = ok + f
            if n < ms or total - n < ms:
                continue
            p = float(fisher_greater(f, n, f_total, total))
            tests.append(_Test(p, _hour_marker(op_type, h)))
        for w, (ok, f) in enumerate(wd):
            n = ok + f
            if n < ms or total - n < ms:
                continue
            p = float(fisher_greater(f, n, f_total, total))
            tb = _Table(f, n, f_total - f, total - n)

            def describe_w(r_in: float, r_out: float, prev: float, *, w: int = w) -> str:
                return (f"{op_type} fails {_pct(r_in)} on {WEEKDAYS[w]}s (UTC) against "
                        f"{_pct(r_out)} on other days")

            tests.append(_Test(p, _builder(self, "temporal", tb, p, describe_w, {
                "op_type": op_type, "attribute": "weekday", "condition": "==",
                "value": WEEKDAYS[w]})))
        if len(daily) >= 2:
            first, last = min(daily), max(daily)
            days = list(range(first, last + 1))
            f_arr = [daily.get(d, [0, 0])[1] for d in days]
            ok_arr = [daily.get(d, [0, 0])[0] for d in days]
            best = max_cut(f_arr, ok_arr, ms)
            if best is not None:
                i, z, p = best
                f_before, n_before = sum(f_arr[: i + 1]), sum(f_arr[: i + 1]) + sum(ok_arr[: i + 1])
                at = float(days[i + 1] * DAY)
                tests.append(_Test(p, self._change_point_builder(
                    op_type, z, p, at, f_before, n_before, f_total, total, len(days) - 1)))

    def _change_point_builder(
        self, op_type: str, z: float, p: float, at: float,
        f_before: int, n_before: int, f_total: int, total: int, cuts: int,
    ) -> Callable[[float], FailurePattern | None]:
        def build(q: float) -> FailurePattern | None:
            cfg = self.settings
            n_after = total - n_before
            f_after = f_total - f_before
            if q > cfg.fdr or min(n_before, n_after) < cfg.min_samples:
                return None
            worse_after = z > 0
            tb = (_Table(f_after, n_after, f_before, n_before, cuts) if worse_after
                  else _Table(f_before, n_before, f_after, n_after, cuts))
            conf = self._confidence([tb])[0]
            before = 1 - f_before / n_before
            after = 1 - f_after / n_after
            verb = "dropped" if worse_after else "rose"
            return FailurePattern(
                kind="change_point",
                description=(f"{op_type} success rate {verb} from {_pct(before)} to "
                             f"{_pct(after)} on {_day(at)} (n={n_before:,} before, "
                             f"{n_after:,} after)"),
                op_type=op_type, attribute="day", condition=">=" if worse_after else "<",
                value=_day(at), at=at, rate_before=before, rate_after=after,
                support=tb.n_in, failures=tb.a,
                failure_rate_in=tb.a / tb.n_in, failure_rate_out=tb.c / tb.n_out,
                lift=(tb.a / tb.n_in) / (tb.c / tb.n_out) if tb.c else math.inf,
                share_of_failures=tb.a / f_total if f_total else 0.0,
                confidence=conf, q_value=q, p_value=p,
                prevalence=tb.n_in / total,
                interval_in=wilson_interval(tb.a, tb.n_in),
                interval_out=wilson_interval(tb.c, tb.n_out),
            )

        return build

    def _merge_hours(
        self, op_type: str, hours: list[tuple[int, _Test]], counts: _Counts
    ) -> list[FailurePattern]:
        """Adjacent significant hours of one type become one window pattern."""
        cfg = self.settings
        by_hour = counts.by_hour.get(op_type, {})
        hod = [[0, 0] for _ in range(24)]
        for h, (ok, f) in by_hour.items():
            hod[h % 24][0] += ok
            hod[h % 24][1] += f
        total = sum(a + b for a, b in hod)
        f_total = sum(b for _, b in hod)
        sig = {h: t for h, t in hours
               if t.q <= cfg.fdr and hod[h][1] * (total - hod[h][0] - hod[h][1])
               > (f_total - hod[h][1]) * (hod[h][0] + hod[h][1])}
        if not sig:
            return []
        runs: list[list[int]] = []
        for h in range(24):
            if h in sig and (h - 1) % 24 not in sig:
                run = [h]
                while (run[-1] + 1) % 24 in sig and len(run) < 24:
                    run.append((run[-1] + 1) % 24)
                runs.append(run)
        if not runs and sig:  # every hour significant: cannot be "elevated"
            return []
        out = []
        for run in runs:
            f = sum(hod[h][1] for h in run)
            n = sum(hod[h][0] + hod[h][1] for h in run)
            tb = _Table(f, n, f_total - f, total - n, 24)
            q = max(sig[h].q for h in run)
            p = min(sig[h].p for h in run)

            def describe(r_in: float, r_out: float, prev: float, *, run: list[int] = run) -> str:
                return (f"{op_type} fails {_pct(r_in)} {_hours_text(run)} against "
                        f"{_pct(r_out)} otherwise")

            pat = self._pattern("temporal", tb, q, p, describe, op_type=op_type,
                                attribute="hour", condition="in", value=run)
            if pat is not None:
                out.append(pat)
        return out

    def _clusters(
        self, ws: WindowStats, prev: WindowStats, counts: _Counts, tests: list[_Test]
    ) -> tuple[list[ErrorCluster], dict[str, set[tuple[str, str]]]]:
        """Group failures by error type and mined template; test their growth."""
        from scipy import stats

        from ._statistics import prob_greater

        cfg = self.settings
        sigs_by_type: dict[str, set[str]] = {}
        for (_, et, sig) in list(ws.errors) + list(prev.errors):
            sigs_by_type.setdefault(et, set()).add(sig)
        template_of: dict[tuple[str, str], str] = {}
        for et, sigs in sigs_by_type.items():
            ordered = sorted(sigs)
            for sig, tpl in zip(ordered, cluster_messages(ordered), strict=True):
                template_of[(et, sig)] = tpl
        acc: dict[tuple[str, str], dict[str, Any]] = {}
        for (t, et, sig), (n, first, last, example) in ws.errors.items():
            key = (et, template_of[(et, sig)])
            c = acc.setdefault(key, {"n": 0, "first": first, "last": last, "example": example,
                                     "types": {}, "sigs": set(), "prev": 0})
            c["n"] += n
            c["first"] = min(c["first"], first)
            if last >= c["last"]:
                c["last"], c["example"] = last, example
            c["types"][t] = c["types"].get(t, 0) + n
            c["sigs"].add((et, sig))
        for (_t, et, sig), (n, *_rest) in prev.errors.items():
            key = (et, template_of[(et, sig)])
            if key in acc:
                acc[key]["prev"] += n
        prev_ops: dict[str, int] = {}
        for (t, _, o), n in prev.outcomes.items():
            if o in ("success", "failure"):
                prev_ops[t] = prev_ops.get(t, 0) + n
        total_failures = sum(counts.fail.values())
        self._exposure: dict[str, tuple[int, int]] = {}
        clusters: list[ErrorCluster] = []
        members: dict[str, set[tuple[str, str]]] = {}
        growth: list[tuple[int, int, int, int]] = []
        for (et, tpl), c in acc.items():
            cid = hashlib.sha1(f"{et}\x00{tpl}".encode()).hexdigest()[:8]
            exposure_now = sum(counts.ok.get(t, 0) + counts.fail.get(t, 0) for t in c["types"])
            exposure_prev = sum(prev_ops.get(t, 0) for t in c["types"])
            growth.append((c["n"], exposure_now, c["prev"], exposure_prev))
            self._exposure[cid] = (exposure_now, exposure_prev)
            members[cid] = c["sigs"]
            clusters.append(ErrorCluster(
                id=cid, error_type=et, template=tpl, count=c["n"],
                share_of_failures=c["n"] / total_failures if total_failures else 0.0,
                first_seen=c["first"], last_seen=c["last"], op_types=dict(c["types"]),
                example=c["example"], previous_count=c["prev"], trend="stable",
                confidence=0.0, q_value=None,
            ))
        if clusters:
            a1 = [g[0] + 0.5 for g in growth]
            b1 = [max(g[1] - g[0], 0) + 0.5 for g in growth]
            a2 = [g[2] + 0.5 for g in growth]
            b2 = [max(g[3] - g[2], 0) + 0.5 for g in growth]
            conf = prob_greater(a1, b1, a2, b2, 0.0)
            for i, (cl, g) in enumerate(zip(clusters, growth, strict=True)):
                n_now, e_now, n_prev, e_prev = g
                trend = "stable"
                if not e_prev:
                    trend = "unknown"  # nothing ran in the previous window
                elif n_prev == 0 and n_now >= cfg.min_samples:
                    trend = "new"
                elif e_now and e_prev and n_now / e_now < 0.5 * n_prev / e_prev:
                    trend = "fading"
                clusters[i] = attrs.evolve(cl, confidence=float(conf[i]), trend=trend)
                if n_now >= cfg.min_samples and e_now and e_prev and n_now + n_prev > 0:
                    share = e_now / (e_now + e_prev)
                    p = float(stats.binom.sf(n_now - 1, n_now + n_prev, share))
                    tests.append(_Test(p, _cluster_growth_marker(cl.id)))
        clusters.sort(key=lambda c: -c.count)
        return clusters, members

    def _with_growth(self, c: ErrorCluster, q: float | None) -> ErrorCluster:
        """Attach the growth test's q-value; significant growth makes a cluster 'growing'."""
        if q is None:
            return c
        trend = c.trend
        if trend == "stable" and q <= self.settings.fdr:
            trend = "growing"
        return attrs.evolve(c, q_value=q, trend=trend)

    def _growth_confidence(
        self, clusters: list[ErrorCluster], exposure: dict[str, tuple[int, int]]
    ) -> list[ErrorCluster]:
        """Confidence that a cluster's rate per operation grew: P(effect) x P(grew)."""
        out = []
        for c in clusters:
            e_now, e_prev = exposure[c.id]
            if not e_prev or not e_now:
                out.append(attrs.evolve(c, confidence=0.0))
                continue
            tb = _Table(c.count, e_now, c.previous_count, e_prev)
            out.append(attrs.evolve(c, confidence=c.confidence * self._confidence_effect(tb)))
        return out

    def _cluster_pattern(self, c: ErrorCluster) -> FailurePattern:
        types = ", ".join(f"{t} ({n})" for t, n in sorted(c.op_types.items(), key=lambda x: -x[1]))
        trend = {"new": f"new in this window, first seen {_day(c.first_seen)}",
                 "growing": f"growing ({c.previous_count} in the previous window)",
                 "fading": f"fading ({c.previous_count} in the previous window)",
                 "stable": f"{c.previous_count} in the previous window",
                 "unknown": "no operations of its types in the previous window"}[c.trend]
        return FailurePattern(
            kind="error_cluster",
            description=(f"{c.error_type} '{c.template}': {c.count:,} failures "
                         f"({_pct(c.share_of_failures)} of failures), {trend}; hits {types}"),
            op_type=max(c.op_types, key=lambda t: c.op_types[t]) if c.op_types else None,
            error_type=c.error_type, template=c.template, count=c.count,
            failures=c.count, support=c.count, share_of_failures=c.share_of_failures,
            first_seen=c.first_seen, last_seen=c.last_seen,
            confidence=c.confidence, q_value=c.q_value,
        )

    def _scan_thresholds(
        self, counts: _Counts, tests: list[_Test]
    ) -> dict[str, tuple[_Test | None, dict[str, Any]]]:
        """For each threshold: the band it would refuse next, and the band above."""
        from ._statistics import fisher_greater

        out: dict[str, tuple[_Test | None, dict[str, Any]]] = {}
        for name, th in self.thresholds.items():
            values: dict[Any, list[int]] = {}
            for t, attrs_ in counts.attrs.items():
                if th.op_type and t != th.op_type:
                    continue
                for v, cell in attrs_.get(th.attribute, {}).items():
                    if _is_number(v):
                        acc = values.setdefault(v, [0, 0, 0, 0, 0])
                        for k in range(5):
                            acc[k] += cell[k]
            if not values:
                out[name] = (None, {})
                continue
            info: dict[str, Any] = {"values": values}
            step, val = th.step, th.value
            if th.limit == "max":
                band = [v for v in values if val - step < v <= val]
                kept = [v for v in values if v <= val - step]
                above = [v for v in values if val < v <= val + step]
            else:
                band = [v for v in values if val <= v < val + step]
                kept = [v for v in values if v >= val + step]
                above = [v for v in values if val - step <= v < val]
            info.update(band=band, kept=kept, above=above)
            bf = sum(values[v][1] for v in band)
            bn = sum(values[v][0] + values[v][1] for v in band)
            kf = sum(values[v][1] for v in kept)
            kn = sum(values[v][0] + values[v][1] for v in kept)
            test = None
            ms = self.settings.min_samples
            if bn >= ms and kn >= ms and bf + kf > 0:
                p = float(fisher_greater(bf, bn, bf + kf, bn + kn))
                test = _Test(p, lambda q: None)
                tests.append(test)
            out[name] = (test, info)
        return out

    def _expected(
        self, th: ThresholdConfig, values: dict[Any, list[int]], new: float
    ) -> dict[str, dict[str, float | None]]:
        """Success rate, coverage and utility with the threshold at its value and at ``new``."""
        c = self.settings.failure_cost
        offered = sum(cell[0] + cell[1] + cell[2] for cell in values.values())

        def admitted(v: Any, limit: float) -> bool:
            return bool(v <= limit) if th.limit == "max" else bool(v >= limit)

        def measure(limit: float) -> tuple[float | None, float | None, float | None]:
            s = f = 0.0
            for v, cell in values.items():
                if not admitted(v, limit):
                    continue
                n_known = cell[0] + cell[1]
                n_all = n_known + cell[2]
                if n_known == 0:
                    continue
                # Refused work (skipped) in an admitted band is expected to
                # behave like the attempted work of that value.
                s += cell[0] / n_known * n_all
                f += cell[1] / n_known * n_all
            if not offered:
                return None, None, None
            rate = s / (s + f) if s + f else None
            return rate, (s + f) / offered, (s - c * f) / offered

        before = measure(th.value)
        after = measure(new)
        keys = ("success_rate", "coverage", "utility")
        return {k: {"before": before[i], "after": after[i]} for i, k in enumerate(keys)}

    def _threshold_recommendations(
        self, scans: dict[str, tuple[_Test | None, dict[str, Any]]], counts: _Counts
    ) -> list[Recommendation]:
        """DESIGN's break-even rule, one step at a time, within [min, max]."""
        cfg = self.settings
        c = cfg.failure_cost
        breakeven = c / (1 + c)
        m = float(cfg.min_samples)
        recs: list[Recommendation] = []
        for name, (test, info) in scans.items():
            th = self.thresholds[name]
            if not info:
                continue
            values = info["values"]
            s_all = sum(v[0] for v in values.values())
            f_all = sum(v[1] for v in values.values())
            base = (s_all + 0.5) / (s_all + f_all + 1)
            a0, b0 = m * base, m * (1 - base)
            lo = -math.inf if th.min is None else th.min
            hi = math.inf if th.max is None else th.max
            direction = -1 if th.limit == "max" else 1
            # Lower (tighten): the band just inside the limit is not worth attempting.
            band = info["band"]
            bs = sum(values[v][0] for v in band)
            bf = sum(values[v][1] for v in band)
            tighter = th.value + direction * th.step
            if (test is not None and bs + bf >= cfg.min_samples and lo <= tighter <= hi
                    and test.q <= cfg.fdr):
                kept = info["kept"]
                kf = sum(values[v][1] for v in kept)
                kn = sum(values[v][0] + values[v][1] for v in kept)
                real = self._confidence_effect(_Table(bf, bs + bf, kf, kn))
                conf = _p_below(a0 + bs, b0 + bf, breakeven) * real
                if conf >= cfg.confidence_threshold:
                    recs.append(self._threshold_rec(
                        name, th, tighter, conf, values, band, info["kept"], bs, bf, True, test))
            # Loosen: exploration shows the band just outside is worth attempting.
            above = info["above"]
            xs = sum(values[v][3] for v in above)
            xf = sum(values[v][4] for v in above)
            looser = th.value - direction * th.step
            if xs + xf >= cfg.min_samples and lo <= looser <= hi:
                conf = 1 - _p_below(a0 + xs, b0 + xf, breakeven)
                if conf >= cfg.confidence_threshold:
                    recs.append(self._threshold_rec(
                        name, th, looser, conf, values, above, info["kept"] + info["band"],
                        xs, xf, False, None))
        return recs

    def _threshold_rec(
        self, name: str, th: ThresholdConfig, new: float, conf: float,
        values: dict[Any, list[int]], band: list[Any], rest: list[Any],
        s: int, f: int, tighten: bool, test: _Test | None,
    ) -> Recommendation:
        verb = "lower" if new < th.value else "raise"
        c = self.settings.failure_cost
        breakeven = c / (1 + c)
        rate = s / (s + f)
        new_v: int | float = int(new) if isinstance(th.value, int) and float(new).is_integer() \
            else new
        rf = sum(values[v][1] for v in rest)
        rn = sum(values[v][0] + values[v][1] for v in rest)
        lo_b, hi_b = min(band), max(band)
        band_txt = (f"{th.attribute} = {_fmt_value(lo_b)}" if lo_b == hi_b
                    else f"{_fmt_value(lo_b)} <= {th.attribute} <= {_fmt_value(hi_b)}")
        evidence = FailurePattern(
            kind="context",
            description=(f"{band_txt}: success rate {_pct(rate)} over {s + f:,} operations "
                         f"(break-even {_pct(breakeven)} at failure_cost {c:g}); "
                         f"{_pct(1 - rf / rn) if rn else 'n/a'} elsewhere"),
            op_type=th.op_type or None, attribute=th.attribute,
            condition="in", value=sorted(band), support=s + f, failures=f,
            failure_rate_in=f / (s + f), failure_rate_out=rf / rn if rn else None,
            lift=(f / (s + f)) / (rf / rn) if rn and rf else None,
            share_of_failures=f / (f + rf) if f + rf else None,
            confidence=conf, q_value=None if test is None else test.q,
            prevalence=(s + f) / (s + f + rn) if s + f + rn else None,
            interval_in=wilson_interval(f, s + f),
            interval_out=wilson_interval(rf, rn) if rn else None,
            p_value=None if test is None else test.p,
        )
        expected = self._expected(th, values, new)
        if tighten:
            why = (f"work with {band_txt} succeeds {_pct(rate)} of the time, below the "
                   f"break-even {_pct(breakeven)}")
        else:
            why = (f"explored work with {band_txt} succeeds {_pct(rate)} of the time, above "
                   f"the break-even {_pct(breakeven)}")
        er, ec, eu = (expected[k] for k in ("success_rate", "coverage", "utility"))
        message = (
            f"{verb.capitalize()} {name} from {_fmt_value(th.value)} to {_fmt_value(new_v)}: "
            f"{why}. Expected success rate {_pct(er['before'])} -> {_pct(er['after'])}, "
            f"coverage {_pct(ec['before'])} -> {_pct(ec['after'])}, utility per offered "
            f"operation {_num(eu['before'])} -> {_num(eu['after'])}"
        )
        return Recommendation(
            action=f"{verb}_threshold:{name}", message=message, confidence=conf,
            threshold=name, current=th.value, recommended=new_v, expected=expected,
            evidence=(evidence,),
        )

    def _pattern_recommendations(
        self, patterns: list[FailurePattern], clusters: list[ErrorCluster]
    ) -> list[Recommendation]:
        """Actionable recommendations from temporal, change-point, context and cluster patterns."""
        cfg = self.settings
        recs: list[Recommendation] = []
        gated = {(th.attribute, th.op_type or None) for th in self.thresholds.values()}
        for p in patterns:
            if (p.confidence or 0) < cfg.confidence_threshold:
                continue
            if p.kind == "temporal" and p.attribute == "hour":
                action = f"avoid_hours:{p.op_type}"
                msg = f"Schedule {p.op_type} outside {_hours_span(p.value)}: {p.description}"
            elif p.kind == "temporal":
                action = f"avoid_weekday:{p.op_type}:{p.value}"
                msg = f"Avoid {p.op_type} on {p.value}s or find out why: {p.description}"
            elif p.kind == "change_point":
                action = f"investigate_change:{p.op_type}"
                msg = f"Find what changed for {p.op_type} around {p.value}: {p.description}"
            elif p.kind == "context":
                if (p.attribute, p.op_type) in gated or (p.attribute, None) in gated:
                    if p.error_type is None:
                        continue  # the threshold recommendation speaks for it
                target = f"{p.error_type} '{p.template}'" if p.error_type else p.op_type
                action = f"review_context:{p.op_type}:{p.attribute}"
                msg = (f"Look into {target} when {p.attribute} {p.condition} "
                       f"{_fmt_value(p.value)}: {p.description}")
            else:
                continue
            recs.append(Recommendation(action=action, message=msg,
                                       confidence=float(p.confidence or 0), evidence=(p,)))
        for c in clusters:
            if c.trend in ("new", "growing") and c.confidence >= cfg.confidence_threshold and (
                    c.q_value is not None and c.q_value <= cfg.fdr):
                types = ", ".join(sorted(c.op_types))
                msg = (f"Investigate {c.error_type} '{c.template}': {c.trend}, {c.count:,} "
                       f"failures ({_pct(c.share_of_failures)} of failures) in {types}; "
                       f"e.g. {c.example[:160]!r}")
                recs.append(Recommendation(action=f"investigate_cluster:{c.id}", message=msg,
                                           confidence=c.confidence,
                                           evidence=(self._cluster_pattern(c),)))
        return recs


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _p_below(a: float, b: float, x: float) -> float:
    """P(p < x) for p ~ Beta(a, b)."""
    from scipy import stats

    return float(stats.beta.cdf(x, a, b))


def _builder(
    gen: InsightsGenerator, kind: str, tb: _Table, p: float,
    describe: Callable[[float, float, float], str], fields: dict[str, Any],
) -> Callable[[float], FailurePattern | None]:
    def build(q: float) -> FailurePattern | None:
        return gen._pattern(kind, tb, q, p, describe, **fields)

    return build


def _hour_marker(op_type: str, hour: int) -> Callable[[float], tuple[str, str, int]]:
    def build(q: float) -> tuple[str, str, int]:
        return ("hour", op_type, hour)

    return build


def _cluster_growth_marker(cid: str) -> Callable[[float], tuple[str, str, float]]:
    def build(q: float) -> tuple[str, str, float]:
        return ("growth", cid, q)

    return build
