"""Recommendations: threshold moves by the break-even rule, and actions from patterns."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from .._config import ThresholdConfig
from .._views.format import hours_span, percent, signed, value_text
from .patterns import ErrorCluster, FailurePattern, Recommendation
from .scan import Scan, ScanResult, ThresholdScan
from .statistics import wilson_interval

__all__ = ["Advisor"]

#: Most a threshold's attribute may look unrelated to failure (p-value of the best
#: cut, in the threshold's direction, over the window) for the threshold to move.
#: The learning loop looks every day at overlapping windows, so this is strict: on
#: pure noise a daily look passes about once in a thousand.
RELATED_P = 0.001
#: ... unless the band's own evidence alone is this strong (its anytime-valid
#: p-value ``1/M``): a world where everything now succeeds has no trend left.
#: Both are judged on the window, which is looked at every day: they make the
#: recommendation. The controller applies an analysed move only when the same
#: holds on the outcomes since the threshold last changed, a stream that only
#: grows (``ThresholdController.related_since``), or the band's evidence there
#: reaches the controller's ``STREAM_P`` with the level spent across weekly
#: restarts (``ThresholdController.stream_p``): on the window alone, ~16
#: independent looks in 8 weeks moved a threshold on pure noise in 3 runs of 20.
STRONG_P = 0.01


def related_p(limit: str, values: dict[Any, list[int]]) -> float:
    """P-value that failure rises across a threshold's attribute, in its direction.

    ``values``: attribute value -> [ok, fail, ...]. The best cut of the values
    (all outcomes, explored included), corrected for the choice of cut; 1.0
    when the best cut points the other way (``limit`` is ``max``: failure must
    rise with the value). Any cut counts, however few outcomes lie beyond it:
    bands far from the limit are seen only through a little exploration.
    """
    from .statistics import max_cut

    order = sorted(values)
    best = max_cut([values[v][1] for v in order], [values[v][0] for v in order], 1)
    if best is None:
        return 1.0
    _, z, p = best
    worse_above = z > 0
    return p if worse_above == (limit == "max") else 1.0


class Advisor:
    """Turns a scan's findings into recommendations (the break-even rule, then actions)."""

    def __init__(self, scan: Scan) -> None:
        self.scan = scan
        self.settings = scan.settings
        self.thresholds = scan.thresholds

    def recommend(self, result: ScanResult) -> list[Recommendation]:
        """Threshold moves first, then actions from patterns; most confident first."""
        recs = self._threshold_recommendations(result.thresholds)
        moved = {r.threshold for r in recs if r.threshold is not None}
        recs += self._pattern_recommendations(result.patterns, result.clusters, moved)
        recs.sort(key=lambda r: -r.confidence)
        return recs

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
        self, scans: dict[str, ThresholdScan]
    ) -> list[Recommendation]:
        """DESIGN's break-even rule, one step at a time, within [min, max].

        Each band is judged on its own outcomes in the window, with no prior
        borrowed from the overall rate: a mixture sequential probability ratio
        test against break-even (:func:`sequential_evidence`), so confidence
        ``1 - 1/M`` is what a test valid at any stopping time allows. Lower when
        the band just inside the limit is below break-even; raise when the
        *explored* band just outside is above it. Either needs ``min_samples``
        outcomes in the band, and the attribute must predict failure in the
        threshold's direction over the whole window (:data:`RELATED_P`), or the
        band's own evidence must be strong (:data:`STRONG_P`): a threshold on an
        attribute unrelated to failure moves only on overwhelming evidence.
        """
        from .statistics import sequential_evidence

        cfg = self.settings
        c = cfg.failure_cost
        breakeven = c / (1 + c)
        ms = cfg.min_samples
        recs: list[Recommendation] = []
        for name, ts in scans.items():
            th = self.thresholds[name]
            bands = ts.bands
            if bands is None:
                continue
            related_p = self._related(th, bands.values)
            related = related_p <= RELATED_P
            values = bands.values
            lo = -math.inf if th.min is None else th.min
            hi = math.inf if th.max is None else th.max
            direction = -1 if th.limit == "max" else 1
            # Lower (tighten): the band just inside the limit is not worth attempting.
            band = bands.band
            bs = sum(values[v][0] for v in band)
            bf = sum(values[v][1] for v in band)
            tighter = th.value + direction * th.step
            if bs + bf >= ms and lo <= tighter <= hi:
                m = sequential_evidence(bs, bf, breakeven, "below")
                conf = 1 - 1 / m
                if conf >= cfg.confidence_threshold and (related or 1 / m <= STRONG_P):
                    recs.append(self._threshold_rec(
                        name, th, tighter, conf, values, band, bands.kept, bs, bf, True,
                        min(1.0, 1 / m), related_p))
            # Loosen: exploration shows the band just outside is worth attempting.
            above = bands.above
            xs = sum(values[v][3] for v in above)
            xf = sum(values[v][4] for v in above)
            looser = th.value - direction * th.step
            if xs + xf >= ms and lo <= looser <= hi:
                m = sequential_evidence(xs, xf, breakeven, "above")
                conf = 1 - 1 / m
                if conf >= cfg.confidence_threshold and (related or 1 / m <= STRONG_P):
                    recs.append(self._threshold_rec(
                        name, th, looser, conf, values, above, bands.kept + bands.band,
                        xs, xf, False, min(1.0, 1 / m), related_p))
        return recs

    def _related(self, th: ThresholdConfig, values: dict[Any, list[int]]) -> float:
        return related_p(th.limit, values)

    def _threshold_rec(
        self, name: str, th: ThresholdConfig, new: float, conf: float,
        values: dict[Any, list[int]], band: list[Any], rest: list[Any],
        s: int, f: int, tighten: bool, p_value: float | None, related_p: float,
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
        band_txt = (f"{th.attribute} = {value_text(lo_b)}" if lo_b == hi_b
                    else f"{value_text(lo_b)} <= {th.attribute} <= {value_text(hi_b)}")
        evidence = FailurePattern(
            kind="context",
            description=(f"{band_txt}: success rate {percent(rate)} over {s + f:,} operations "
                         f"(break-even {percent(breakeven)} at failure_cost {c:g}); "
                         f"{percent(1 - rf / rn) if rn else 'n/a'} elsewhere"),
            op_type=th.op_type or None, attribute=th.attribute,
            condition="in", value=sorted(band), support=s + f, failures=f,
            failure_rate_in=f / (s + f), failure_rate_out=rf / rn if rn else None,
            lift=(f / (s + f)) / (rf / rn) if rn and rf else None,
            share_of_failures=f / (f + rf) if f + rf else None,
            confidence=conf, q_value=None,
            prevalence=(s + f) / (s + f + rn) if s + f + rn else None,
            interval_in=wilson_interval(f, s + f),
            interval_out=wilson_interval(rf, rn) if rn else None,
            p_value=p_value,
        )
        expected = self._expected(th, values, new)
        if tighten:
            why = (f"work with {band_txt} succeeds {percent(rate)} of the time, below the "
                   f"break-even {percent(breakeven)}")
        else:
            why = (f"explored work with {band_txt} succeeds {percent(rate)} of the time, above "
                   f"the break-even {percent(breakeven)}")
        er, ec, eu = (expected[k] for k in ("success_rate", "coverage", "utility"))
        message = (
            f"{verb.capitalize()} {name} from {value_text(th.value)} to {value_text(new_v)}: "
            f"{why}. Expected success rate {percent(er['before'])} -> {percent(er['after'])}, "
            f"coverage {percent(ec['before'])} -> {percent(ec['after'])}, utility per offered "
            f"operation {signed(eu['before'])} -> {signed(eu['after'])}"
        )
        return Recommendation(
            action=f"{verb}_threshold:{name}", message=message, confidence=conf,
            threshold=name, current=th.value, recommended=new_v, expected=expected,
            evidence=(evidence,), related_p=related_p,
        )

    def _pattern_recommendations(
        self, patterns: list[FailurePattern], clusters: list[ErrorCluster],
        moved: Collection[str] = (),
    ) -> list[Recommendation]:
        """Actionable recommendations from temporal, change-point, context and cluster patterns."""
        cfg = self.settings
        recs: list[Recommendation] = []
        # A context pattern on an attribute that a threshold gates is left to
        # the threshold's own recommendation, when there is one.
        gated = {(th.attribute, th.op_type or None) for name, th in self.thresholds.items()
                 if name in moved}
        for p in patterns:
            if (p.confidence or 0) < cfg.confidence_threshold:
                continue
            if p.kind == "temporal" and p.attribute == "hour":
                action = f"avoid_hours:{p.op_type}"
                msg = f"Schedule {p.op_type} outside {hours_span(p.value)}: {p.description}"
            elif p.kind == "temporal":
                action = f"avoid_weekday:{p.op_type}:{p.value}"
                msg = f"Avoid {p.op_type} on {p.value}s or find out why: {p.description}"
            elif p.kind == "change_point":
                action = f"investigate_change:{p.op_type}"
                msg = f"Find what changed for {p.op_type} around {p.value}: {p.description}"
            elif p.kind == "context" and p.attribute == "op_type":
                action = f"review_op_type:{p.value}"
                msg = f"Look into {p.value}, the operation type that fails most: {p.description}"
            elif p.kind == "context":
                if p.confounded:
                    continue  # an association through another attribute, not a cause
                if p.conditions is None and (
                        (p.attribute, p.op_type) in gated or (p.attribute, None) in gated):
                    if p.error_type is None:
                        continue  # the threshold recommendation speaks for it
                target = f"{p.error_type} '{p.template}'" if p.error_type else p.op_type
                parts = p.conditions or ((p.attribute or "", p.condition or "==", p.value),)
                action = f"review_context:{p.op_type}:" + "+".join(a for a, _, _ in parts)
                if p.missing:
                    when = f"{p.attribute} is missing"
                else:
                    when = " and ".join(
                        f"{a} is None" if v is None and c == "==" else
                        f"{value_text(v[0])} <= {a} <= {value_text(v[-1])}" if c == "in" else
                        f"{a} {c} {value_text(v)}" for a, c, v in parts)
                msg = f"Look into {target} when {when}: {p.description}"
            else:
                continue
            recs.append(Recommendation(action=action, message=msg,
                                       confidence=float(p.confidence or 0), evidence=(p,)))
        for c in clusters:
            if c.trend in ("new", "growing") and c.confidence >= cfg.confidence_threshold and (
                    c.q_value is not None and c.q_value <= cfg.fdr):
                types = ", ".join(sorted(c.op_types))
                msg = (f"Investigate {c.error_type} '{c.template}': {c.trend}, {c.count:,} "
                       f"failures ({percent(c.share_of_failures)} of failures) in {types}; "
                       f"e.g. {c.example[:160]!r}")
                recs.append(Recommendation(action=f"investigate_cluster:{c.id}", message=msg,
                                           confidence=c.confidence,
                                           evidence=(self.scan.cluster_pattern(c),)))
        return recs
