"""The values insights produce: patterns, clusters, recommendations, the summary."""

from __future__ import annotations

from typing import Any, TypedDict

import attrs

from .._analytics import Rate

__all__ = ["ErrorCluster", "FailurePattern", "Recommendation", "Summary"]



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
    #: Conjunctions: every part as ``(attribute, condition, value)``; ``attribute``,
    #: ``condition`` and ``value`` above hold the first part.
    conditions: tuple[tuple[str, str, Any], ...] | None = None
    #: True when the pattern is "the attribute is missing" (the key was absent,
    #: or held a value learnkit does not keep); ``value`` is then None.
    missing: bool | None = None
    #: The attribute within whose levels the pattern was checked (Mantel-Haenszel).
    stratified_by: str | None = None
    #: Mantel-Haenszel common odds ratio of failure within ``stratified_by``'s levels
    #: (1: no effect once that attribute is held fixed; below 1: reversed).
    odds_ratio_within: float | None = None
    #: True when the effect vanishes or reverses within ``stratified_by``: an
    #: association through that attribute, not a cause; its confidence is lowered.
    confounded: bool | None = None
    #: Change points and new error clusters: the release they came with (the
    #: ``learning.release_attribute`` context value), when the data names one.
    release: str | None = None
    #: When that release was first seen in the window (start of the hour, Unix time).
    release_first_seen: float | None = None


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
    #: Threshold moves only: the p-value that the threshold's attribute predicts
    #: failure in the threshold's direction over the window. Above
    #: ``advice.RELATED_P`` the move rests on the band's own evidence alone, and
    #: the controller applies it only when that evidence holds on the outcomes
    #: since the threshold last changed (see docs/thresholds.md).
    related_p: float | None = None

    def __str__(self) -> str:
        return f"{self.message} (confidence {self.confidence:.2f})"


class Summary(TypedDict):
    """What :meth:`InsightsGenerator.generate_summary` returns.

    ``days`` is the window analysed (default ``learning.window_days``).
    ``actions`` holds each recommendation's id (``lower_threshold:max_complexity``)
    followed, for a threshold move, by the specification's name for it
    (``reduce_complexity_threshold`` or ``increase_complexity_threshold``).

    Keys known only at run time, for code written against the specification:
    ``recommended_<attribute>`` for each configured threshold's attribute
    (``recommended_complexity`` for ``max_complexity``), an alias of
    ``recommended_thresholds[name]`` that holds the value in force when no
    change is recommended. A type checker does not know them: typed code
    reads ``recommended_thresholds``. See docs/specification.md.
    """

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
