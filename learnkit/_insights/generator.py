"""Insights: failure patterns with honest confidence, error clusters, recommendations.

One call of :meth:`InsightsGenerator.generate_summary` reads the window's
rollups (never every row), builds every hypothesis of the scan (context
values, cut points, bands, None and missing values per operation type and
per error cluster; conjunctions of two attributes; operation types; hours,
weekdays, change points, growing clusters, threshold bands), computes all
p-values, controls the false discovery rate across the whole scan with
Benjamini-Hochberg, and only then turns the survivors into patterns. See
docs/statistics.md for what the numbers mean.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from .._analytics import AnalyticsCollector, _rate, _window
from .._config import LearningConfig, ThresholdConfig
from .._errors import UnknownThresholdError
from .._model import DAY
from .advice import Advisor
from .patterns import ErrorCluster, FailurePattern, Recommendation, Summary
from .releases import attribute_releases
from .scan import Scan

if TYPE_CHECKING:
    from .._storage.protocol import WindowStats

__all__ = ["ErrorCluster", "FailurePattern", "InsightsGenerator", "Recommendation", "Summary"]


class InsightsGenerator:
    """Finds failure patterns and recommends what to change.

    ``InsightsGenerator(collector, logger)`` as in the specification, or
    ``kit.insights``. Settings (``min_samples``, ``confidence_threshold``,
    ``failure_cost``, ``practical_margin``, ``fdr``) come from the kit's
    config at each call, so edits to learnkit.toml apply.

    **One default window.** Every method here, the learning loop, ``learnkit
    thresholds apply``, ``report``, ``dashboard`` and ``insights`` analyse the
    last ``learning.window_days`` days (7 unless configured) when no ``days``
    is given, so their answers agree; each view prints the window it used.
    """

    #: Seconds :meth:`generate_summary` waits for queued operations to be written.
    FLUSH_TIMEOUT = 5.0

    def __init__(
        self, analytics_collector: AnalyticsCollector, logger: logging.Logger | None = None
    ) -> None:
        self.collector = analytics_collector
        self.logger = logger or logging.getLogger("learnkit")
        self._cache: tuple[Any, Summary] | None = None

    @property
    def settings(self) -> LearningConfig:
        """The ``[learning]`` settings in force."""
        return self.collector.database.config.learning

    @property
    def thresholds(self) -> dict[str, ThresholdConfig]:
        """The thresholds in force (live values)."""
        return self.collector.database.config.thresholds

    def invalidate(self) -> None:
        """Forget the cached analysis (the thresholds it was made under changed)."""
        self._cache = None

    def window(self, days: float | None = None) -> float:
        """The window in days a call with ``days`` analyses: ``days``, or by default
        ``learning.window_days`` (7 unless configured)."""
        return self.settings.window_days if days is None else days

    async def generate_summary(self, days: float | None = None, *, offset: float = 0) -> Summary:
        """Analyse ``[now - offset - days, now - offset)``.

        Args:
            days: the window; default ``learning.window_days`` (7 unless configured).
            offset: days back from now where the window ends.

        Returns a :class:`Summary` dict whose keys include ``success_rate``,
        ``failure_patterns``, ``recommendations``, ``actions``,
        ``recommended_thresholds`` and ``sample_size`` (``days`` holds the
        window used). For code written against the specification it also
        holds ``recommended_<attribute>`` for each threshold's attribute and
        the specification's action names; see :class:`Summary`.

        What is still queued is included: the writer is flushed first (for at
        most ``FLUSH_TIMEOUT`` seconds; if the store is failing, the analysis
        goes ahead on what is stored and says so in the log).
        """
        days = self.window(days)
        db = self.collector.database
        writer = db.recorder.writer
        if writer.stats().queued and not await writer.flush(self.FLUSH_TIMEOUT):
            self.logger.warning("learnkit: analysing without %d queued operation(s): the store "
                                "is not accepting writes (%s)", writer.stats().queued,
                                writer.stats().last_error)
        now = db.now()
        start, end = _window(now, days, offset)
        key = (start, end, db.recorder.writer.written, id(db.config))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        store = db.store
        ws = await store.window_stats(start, end)
        prev = await store.window_stats(start - days * DAY, start, context=False)
        summary = self._analyse(ws, prev, days, offset)
        await attribute_releases(summary, store, self.settings.release_attribute)
        self._cache = (key, summary)
        return summary

    async def recommend_threshold_adjustment(self, name: str, days: float | None = None) -> bool:
        """Whether the analysis of the last ``days`` recommends changing ``name``.

        ``days`` defaults to ``learning.window_days`` (7 unless configured),
        the window of :meth:`generate_summary`, the loop and ``thresholds apply``.

        Raises:
            UnknownThresholdError: learnkit.toml has no such threshold.
        """
        return await self.get_recommended_threshold(name, days) is not None

    async def get_recommended_threshold(
        self, name: str, days: float | None = None
    ) -> int | float | None:
        """The value recommended for threshold ``name``; None when it should stay.

        ``days`` defaults to ``learning.window_days`` (7 unless configured),
        the window of :meth:`generate_summary`, the loop and ``thresholds apply``.

        Raises:
            UnknownThresholdError: learnkit.toml has no such threshold.
        """
        if name not in self.thresholds:
            known = ", ".join(sorted(self.thresholds)) or "none"
            path = self.collector.database.config.path
            raise UnknownThresholdError(
                f"no threshold {name!r} in {path} (defined: {known}); "
                f"add a [thresholds.{name}] table"
            )
        summary = await self.generate_summary(days)
        return summary["recommended_thresholds"].get(name)

    async def error_clusters(self, days: float | None = None) -> list[ErrorCluster]:
        """The error clusters of the last ``days`` (default ``learning.window_days``)."""
        return (await self.generate_summary(days))["error_clusters"]

    def _analyse(self, ws: WindowStats, prev: WindowStats, days: float, offset: float) -> Summary:
        cfg = self.settings
        scan = Scan(cfg, self.thresholds)
        result = scan.run(ws, prev)
        total_counts: dict[str, int] = {}
        per_type: dict[str, dict[str, int]] = {}
        for (t, _, o), n in ws.outcomes.items():
            total_counts[o] = total_counts.get(o, 0) + n
            per_type.setdefault(t, {})[o] = per_type.setdefault(t, {}).get(o, 0) + n
        overall = _rate(ws.start, ws.end, total_counts)
        rates_by_type = {t: _rate(ws.start, ws.end, c) for t, c in sorted(per_type.items())}
        recs = Advisor(scan).recommend(result)
        clusters, patterns = result.clusters, result.patterns
        cluster_patterns = [scan.cluster_pattern(c) for c in clusters
                            if c.count >= cfg.min_samples]
        summary = Summary(
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
            tests=result.tests,
        )
        _add_specification_names(summary, self.thresholds)
        return summary


def spec_action(rec: Recommendation, th: ThresholdConfig) -> str | None:
    """The specification's name for a threshold move: ``reduce_complexity_threshold``.

    ``reduce_<attribute>_threshold`` when the recommended value is below the
    current one, ``increase_<attribute>_threshold`` when above.
    """
    if rec.recommended is None or rec.current is None or rec.recommended == rec.current:
        return None
    verb = "reduce" if rec.recommended < rec.current else "increase"
    return f"{verb}_{th.attribute}_threshold"


def _add_specification_names(summary: Summary, thresholds: dict[str, ThresholdConfig]) -> None:
    """Add the specification's keys and action names beside learnkit's own.

    ``recommended_<attribute>`` for each threshold's attribute: the
    recommended value (an alias of ``recommended_thresholds[name]``), or the
    value in force when no change is recommended, so that code setting the
    threshold to it changes nothing. An attribute gated by several thresholds
    gets no alias (it would be ambiguous), nor one whose key is taken.
    """
    by_attribute: dict[str, list[str]] = {}
    for name, th in thresholds.items():
        by_attribute.setdefault(th.attribute, []).append(name)
    unique = {names[0]: attr for attr, names in by_attribute.items() if len(names) == 1}
    extra: dict[str, Any] = {}
    for name, attr in unique.items():
        key = f"recommended_{attr}"
        if key not in summary:
            extra[key] = summary["recommended_thresholds"].get(name, thresholds[name].value)
    actions: list[str] = []
    for rec in summary["recommendations"]:
        actions.append(rec.action)
        if rec.threshold in unique:
            alias = spec_action(rec, thresholds[rec.threshold])
            if alias is not None and alias not in actions:
                actions.append(alias)
    summary["actions"] = actions
    # Summary is a TypedDict; these keys depend on the config, so they are
    # known at run time only (typed code reads ``recommended_thresholds``).
    cast("dict[str, Any]", summary).update(extra)

