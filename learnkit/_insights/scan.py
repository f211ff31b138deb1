"""The scan: every hypothesis of one analysis, its p-value, and its pattern.

A :class:`Scan` is made per analysis. Each ``scan_*`` method appends
:class:`Test` objects (a p-value and a function that builds the pattern once
the q-value is known) to ``tests``; the caller controls the FDR across all of
them at once, then calls each test's ``build``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .._config import LearningConfig, ThresholdConfig
from .._model import DAY
from .._storage.rollup import OTHER, PAIR_SEP
from .._views.format import WEEKDAYS, day, hours_text, percent, value_text
from .clustering import cluster_messages
from .patterns import ErrorCluster, FailurePattern
from .statistics import normal_cdf, wilson_interval

if TYPE_CHECKING:
    from .._storage.protocol import WindowStats

__all__ = [
    "Counts",
    "Finding",
    "GrowthMark",
    "HourMark",
    "Scan",
    "ScanResult",
    "Table",
    "Test",
    "ThresholdBands",
    "ThresholdScan",
]

#: Clusters per operation type whose context is scanned separately.
TOP_CLUSTERS = 5


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Other:
    """The level of strings the rollups did not keep (``<other>``): counted, never reported."""

    def __repr__(self) -> str:
        return "<other>"


#: Stands for ``<other>`` among decoded values (a user's string "<other>" stays a string).
OTHER_LEVEL: Any = _Other()

#: A pattern is "confounded" when, within the levels of the strongest other
#: attribute, the Mantel-Haenszel statistic falls below this (one-sided 5%).
Z_WITHIN = 1.645


@attrs.define
class Table:
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


@attrs.frozen
class HourMark:
    """A significant hour of one operation type; adjacent hours merge into one pattern."""

    op_type: str
    hour: int


@attrs.frozen
class GrowthMark:
    """The q-value of an error cluster's growth test."""

    cluster_id: str
    q: float


#: What a hypothesis becomes once its q-value is known.
Finding = FailurePattern | HourMark | GrowthMark | None


@attrs.define
class Test:
    """One hypothesis of the scan; ``build`` makes its finding once q is known."""

    p: float
    build: Callable[[float], Finding]
    q: float = 1.0


@attrs.frozen
class ThresholdBands:
    """What one threshold's attribute looks like in the window, by band."""

    #: value -> [ok, fail, skipped, explored ok, explored fail]
    values: dict[Any, list[int]]
    #: Values the next step would refuse (just inside the limit).
    band: list[Any]
    #: Values kept after that step.
    kept: list[Any]
    #: Values one step beyond the limit (refused now, seen only when explored).
    above: list[Any]


@attrs.frozen
class ThresholdScan:
    """A threshold's bands and the test that the band just inside fails more (if run)."""

    test: Test | None
    bands: ThresholdBands | None


@attrs.frozen
class ScanResult:
    """Everything one scan found, q-values assigned."""

    counts: Counts
    patterns: list[FailurePattern]
    clusters: list[ErrorCluster]
    thresholds: dict[str, ThresholdScan]
    #: Hypotheses tested (the false discovery rate is controlled over all of them).
    tests: int


class Counts:
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
        #: op_type -> (attribute a, attribute b), a < b -> (value a, value b) -> [ok, fail]
        self.pairs: dict[str, dict[tuple[str, str], dict[tuple[Any, Any], list[int]]]] = {}
        for (t, a, v, o, x), n in ws.context.items():
            slot = {"success": 0, "failure": 1, "skipped": 2}.get(o)
            if slot is None:
                continue
            if PAIR_SEP in a:
                if slot < 2:
                    a1, _, a2 = a.partition(PAIR_SEP)
                    try:
                        v1, v2 = json.loads(v)
                    except (ValueError, TypeError):
                        continue
                    cell2 = self.pairs.setdefault(t, {}).setdefault((a1, a2), {}).setdefault(
                        (v1, v2), [0, 0])
                    cell2[slot] += n
                continue
            value = OTHER_LEVEL if v == OTHER else _decode(v)
            self.text.setdefault((t, a), {})[value] = v
            cell = self.attrs.setdefault(t, {}).setdefault(a, {}).setdefault(
                value, [0, 0, 0, 0, 0]
            )
            cell[slot] += n
            if x and slot < 2:
                cell[3 + slot] += n

    def types(self) -> list[str]:
        return sorted(set(self.ok) | set(self.fail))

    def n(self, op_type: str) -> int:
        """Operations of a type with a success or failure outcome."""
        return self.ok.get(op_type, 0) + self.fail.get(op_type, 0)

    def pair(self, op_type: str, a: str, b: str) -> dict[tuple[Any, Any], list[int]] | None:
        """Joint counts of two attributes as {(value of a, value of b): [ok, fail]}."""
        pairs = self.pairs.get(op_type, {})
        if (a, b) in pairs:
            return pairs[(a, b)]
        if (b, a) in pairs:
            return {(vb, va): c for (va, vb), c in pairs[(b, a)].items()}
        return None



class Scan:
    """One analysis: its settings, its hypotheses, and the scan's null share."""

    def __init__(self, settings: LearningConfig, thresholds: dict[str, ThresholdConfig]) -> None:
        self.settings = settings
        self.thresholds = thresholds
        self.tests: list[Test] = []
        #: Share of true nulls, estimated from the scan's p-values once known.
        self._pi0 = 0.99
        self._exposure: dict[str, tuple[int, int]] = {}

    def run(self, ws: WindowStats, prev: WindowStats) -> ScanResult:
        """Scan one window (``prev``: the window before, for cluster growth).

        Every hypothesis (context values and cut points, per type and per
        top error cluster; hours, weekdays, change points; cluster growth;
        threshold bands) joins one Benjamini-Hochberg procedure, then each
        becomes its finding with its q-value.
        """
        cfg = self.settings
        counts = Counts(ws)
        tests: list[Test] = []
        clusters, members = self._clusters(ws, prev, counts, tests)
        cluster_of = {m: cid for cid, ms in members.items() for m in ms}
        by_cluster: dict[tuple[str, str, str, str], int] = {}
        for (t, et, sig, attr, value), n in ws.error_context.items():
            cid = cluster_of.get((et, sig))
            if cid is not None:
                key = (t, cid, attr, value)
                by_cluster[key] = by_cluster.get(key, 0) + n
        self._scan_op_types(counts, tests)
        strength: dict[tuple[str, str], float] = {}
        for t in counts.types():
            self._scan_context(t, counts, tests, None, strength)
            self._scan_pairs(t, counts, tests)
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
                self._scan_context(t, counts, tests, (c, by_cluster), {})
        threshold_scans = self._scan_thresholds(counts, tests)

        from .statistics import benjamini_hochberg, storey_pi0

        self._pi0 = storey_pi0([x.p for x in tests])
        qs: list[float] = (
            [float(q) for q in benjamini_hochberg([x.p for x in tests])]
            if tests else []
        )
        for test, q in zip(tests, qs, strict=True):
            test.q = q
        patterns: list[FailurePattern] = []
        merged_hours: dict[str, list[tuple[int, Test]]] = {}
        growth_q: dict[str, float] = {}
        for test in tests:
            found = test.build(test.q)
            if isinstance(found, FailurePattern):
                patterns.append(found)
            elif isinstance(found, HourMark):
                merged_hours.setdefault(found.op_type, []).append((found.hour, test))
            elif isinstance(found, GrowthMark):
                growth_q[found.cluster_id] = found.q
        clusters = self._growth_confidence(
            [self._with_growth(c, growth_q.get(c.id)) for c in clusters], self._exposure)
        for op_type, hours in merged_hours.items():
            patterns.extend(self._merge_hours(op_type, hours, counts))
        patterns = [self._stratify(p, counts, strength) for p in patterns]
        patterns.sort(key=lambda p: (-(p.confidence or 0), p.q_value or 1))
        return ScanResult(counts, patterns, clusters, threshold_scans, len(tests))

    def _confidence(self, tables: list[Table]) -> list[float]:
        """P(there is an effect) x P(rate_in - rate_out > margin, or
        rate_in / rate_out > ratio | effect).

        Beta priors of ``min_samples`` pseudo-observations are centred on the
        overall rate. P(effect) comes from a spike-and-slab prior whose null
        share ``pi0`` is estimated from the whole scan's p-values, so the
        confidence already knows how many hypotheses were looked at.
        """
        if not tables:
            return []
        from .statistics import prob_effect, prob_greater

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
        beyond = prob_greater(a1, b1, a2, b2, cfg.practical_margin, cfg.practical_ratio)
        real = prob_effect(
            [tb.a for tb in tables], [tb.n_in for tb in tables],
            [tb.c for tb in tables], [tb.n_out for tb in tables],
            bases, m, [tb.k for tb in tables], self._pi0,
        )
        return [float(x * y) for x, y in zip(beyond, real, strict=True)]

    def confidence_effect(self, tb: Table) -> float:
        """P(the two rates of a table differ at all), spike and slab (see _confidence)."""
        from .statistics import prob_effect

        base = min(max(tb.failures / tb.total if tb.total else 0.5, 1e-3), 1 - 1e-3)
        m = float(self.settings.min_samples)
        return float(prob_effect(tb.a, tb.n_in, tb.c, tb.n_out, base, m, tb.k, self._pi0)[0])

    def _pattern(
        self,
        kind: str,
        tb: Table,
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
        counts: Counts,
        tests: list[Test],
        cluster: tuple[ErrorCluster, dict[tuple[str, str, str, str], int]] | None,
        strength: dict[tuple[str, str], float],
    ) -> None:
        """Values, numeric cut points or bands, None and missingness of every attribute.

        ``cluster``: scan one error cluster instead, given failures per
        (op_type, cluster id, attribute, value text). ``strength`` collects
        the smallest p-value per (op_type, attribute), to choose the attribute
        a pattern is stratified by.
        """
        from .statistics import best_interval, fisher_greater, max_cut

        cfg = self.settings
        ms = cfg.min_samples
        for attr, values in sorted(counts.attrs.get(op_type, {}).items()):
            if attr.startswith("_"):
                continue
            if cluster is None:
                fails = {v: c[1] for v, c in values.items()}
                ns = {v: cnt[0] + cnt[1] for v, cnt in values.items()}
                type_n, type_f = counts.n(op_type), counts.fail.get(op_type, 0)
                what, who = "failure rate", f"{op_type} failures"
                whose = f"{op_type} operations"
            else:
                # Among the type's failures, is this cluster over-represented
                # under X? (Every cluster rises with the overall failure rate;
                # only a shift in the mix is news about the cluster.)
                c, by_cluster = cluster
                text = counts.text[(op_type, attr)]
                fails = {v: by_cluster.get((op_type, c.id, attr, text[v]), 0) for v in values}
                ns = {v: cnt[1] for v, cnt in values.items()}
                type_n, type_f = counts.fail.get(op_type, 0), c.op_types.get(op_type, 0)
                who = f"{c.error_type} '{c.template}' failures of {op_type}"
                what = "its share of failures"
                whose = f"{op_type} failures"
            total = sum(ns.values())
            f_total = sum(fails.values())
            extra: dict[str, Any] = {"op_type": op_type, "attribute": attr}
            if cluster is not None:
                extra.update(error_type=cluster[0].error_type, template=cluster[0].template)

            def add(p: float, tb: Table, describe: Callable[[float, float, float], str],
                    fields: dict[str, Any], attr: str = attr,
                    extra: dict[str, Any] = extra) -> None:
                tests.append(Test(p, _builder(self, "context", tb, p, describe,
                                               dict(extra, **fields))))
                if cluster is None:
                    key = (op_type, attr)
                    strength[key] = min(strength.get(key, 1.0), p)

            # Missing: operations of the type without the attribute (or with a
            # value the rollups do not keep: a list, a dict, NaN).
            n_miss, f_miss = type_n - total, type_f - f_total
            if cluster is None and n_miss >= ms and total >= ms and type_f > 0:
                p = float(fisher_greater(f_miss, n_miss, type_f, type_n))
                tb = Table(f_miss, n_miss, f_total, total)
                describe = _context_sentence(tb, who, what, whose, f"{attr} is missing", None,
                                             bare=True)
                add(p, tb, describe, {"condition": "==", "value": None, "missing": True})
            if total < 2 * ms or f_total == 0:
                continue
            keys = [v for v in values if v is not None and v is not OTHER_LEVEL]
            if keys and all(_is_number(v) for v in keys):
                order = sorted(keys)
                f_arr = [fails[v] for v in order]
                ok_arr = [ns[v] - fails[v] for v in order]
                # Cuts and bands compare numbers with numbers: None is its own level.
                n_num, f_num = sum(ns[v] for v in order), sum(f_arr)
                if None in values:
                    n_none, f_none = ns[None], fails[None]
                    if n_none >= ms and n_num >= ms and f_none + f_num > 0:
                        p = float(fisher_greater(f_none, n_none, f_none + f_num, n_none + n_num))
                        tb = Table(f_none, n_none, f_num, n_num)
                        describe = _context_sentence(tb, who, what, whose, f"{attr} is None",
                                                     None, bare=True)
                        add(p, tb, describe, {"condition": "==", "value": None})
                if f_num == 0:
                    continue
                best = max_cut(f_arr, ok_arr, ms)
                band = best_interval(f_arr, ok_arr, ms) if cluster is None else None
                cut_z = abs(best[1]) if best is not None else -math.inf
                if band is not None and band[2] > cut_z and band[3] < 1:
                    # An interior run fails more than any cut can say: a band.
                    lo, hi, z, p = band
                    f_in, n_in = sum(f_arr[lo:hi + 1]), sum(ns[v] for v in order[lo:hi + 1])
                    g = len(order)
                    tb = Table(f_in, n_in, f_num - f_in, n_num - n_in, g * (g - 1) // 2)
                    members = order[lo:hi + 1]
                    describe = _context_sentence(
                        tb, who, what, whose,
                        f"{value_text(members[0])} <= {attr} <= {value_text(members[-1])}",
                        None, bare=True)
                    add(p, tb, describe, {"condition": "in", "value": members})
                    continue
                if best is None:
                    continue
                i, z, p = best
                cut = order[i]
                above = z > 0
                f_le = sum(f_arr[: i + 1])
                n_le = sum(f_arr[: i + 1]) + sum(ok_arr[: i + 1])
                cuts = max(1, len(order) - 1)
                tb = (
                    Table(f_num - f_le, n_num - n_le, f_le, n_le, cuts)
                    if above
                    else Table(f_le, n_le, f_num - f_le, n_num - n_le, cuts)
                )
                cond = ">" if above else "<="
                describe = _context_sentence(tb, who, what, whose, f"{attr} {cond}", cut)
                add(p, tb, describe, {"condition": cond, "value": cut})
            else:
                levels = keys + ([None] if None in values else [])
                for v in levels:
                    n_in = ns[v]
                    if n_in < ms or total - n_in < ms:
                        continue
                    a = fails[v]
                    p = float(fisher_greater(a, n_in, f_total, total))
                    tb = Table(a, n_in, f_total - a, total - n_in)
                    describe = _context_sentence(tb, who, what, whose, f"{attr} ==", v)
                    add(p, tb, describe, {"condition": "==", "value": v})

    def _scan_op_types(self, counts: Counts, tests: list[Test]) -> None:
        """Operation type as a context of its own: does one type fail more than the others?"""
        from .statistics import fisher_greater

        types = counts.types()
        ms = self.settings.min_samples
        total = sum(counts.n(t) for t in types)
        f_total = sum(counts.fail.values())
        if len(types) < 2 or f_total == 0:
            return
        for t in types:
            n_in, a = counts.n(t), counts.fail.get(t, 0)
            if n_in < ms or total - n_in < ms:
                continue
            p = float(fisher_greater(a, n_in, f_total, total))
            tb = Table(a, n_in, f_total - a, total - n_in, len(types))

            def describe(r_in: float, r_out: float, prev: float, *, t: str = t,
                         tb: Table = tb) -> str:
                return (f"{t} fails {percent(r_in)} against {percent(r_out)} for other "
                        f"operation types; it is {percent(prev)} of operations and "
                        f"{percent(tb.a / max(tb.failures, 1))} of failures "
                        f"(n={tb.n_in:,} vs {tb.n_out:,})")

            tests.append(Test(p, _builder(self, "context", tb, p, describe, {
                "attribute": "op_type", "condition": "==", "value": t})))

    def _scan_pairs(self, op_type: str, counts: Counts, tests: list[Test]) -> None:
        """Conjunctions of two attributes: "x > c and y == v", "x == u and y == v".

        A conjunction is a hypothesis only when it fails more than *each* of
        its parts alone: than the rest of ``y == v`` and than the rest of the
        ``x`` condition (an intersection-union test: the larger of the two
        p-values). Otherwise every marginal effect would reappear paired with
        every other attribute.
        """
        from .statistics import max_cut

        ms = self.settings.min_samples
        for (a, b), joint in sorted(counts.pairs.get(op_type, {}).items()):
            if a.startswith("_") or b.startswith("_"):
                continue
            n_all = sum(c[0] + c[1] for c in joint.values())
            f_all = sum(c[1] for c in joint.values())
            if n_all < 4 * ms or f_all == 0:
                continue
            values = {x: sorted({k[i] for k in joint}, key=_sort_key) for i, x in ((0, a), (1, b))}
            numeric = {x: all(_is_number(v) for v in vs if v is not None)
                       and any(v is not None for v in vs) for x, vs in values.items()}
            for x, y in ((a, b), (b, a)):
                xi = 0 if x == a else 1
                if not numeric[x] and (numeric[y] or x > y):
                    continue  # categorical x categorical: once, in name order
                cells: dict[tuple[Any, Any], list[int]] = {
                    (k[xi], k[1 - xi]): c for k, c in joint.items()}
                y_levels = values[y]
                for v in y_levels:
                    if numeric[y] and v is None:
                        continue
                    if not numeric[x]:
                        for u in values[x]:
                            self._conjunction(op_type, x, y, v, cells, [u], "==", u, 1,
                                              n_all, f_all, None, tests)
                        continue
                    order = [u for u in values[x] if u is not None]
                    f_arr = [cells.get((u, v), [0, 0])[1] for u in order]
                    ok_arr = [cells.get((u, v), [0, 0])[0] for u in order]
                    best = max_cut(f_arr, ok_arr, ms)
                    if best is None:
                        continue
                    i, z, p_cut = best
                    group = order[i + 1:] if z > 0 else order[: i + 1]
                    self._conjunction(op_type, x, y, v, cells, group, ">" if z > 0 else "<=",
                                      order[i], max(1, len(order) - 1), n_all, f_all, p_cut,
                                      tests)

    def _conjunction(
        self, op_type: str, x: str, y: str, v: Any,
        cells: dict[tuple[Any, Any], list[int]], group: list[Any], cond: str, val: Any,
        k: int, n_all: int, f_all: int, p_within: float | None, tests: list[Test],
    ) -> None:
        from .statistics import fisher_greater

        ms = self.settings.min_samples
        gset = {_key(u) for u in group}
        n_g = f_g = n_y = f_y = n_x = f_x = 0
        for (u, w), (ok, f) in cells.items():
            in_x = _key(u) in gset
            in_y = _key(w) == _key(v)
            if in_x and in_y:
                n_g += ok + f
                f_g += f
            elif in_y:
                n_y += ok + f
                f_y += f
            elif in_x:
                n_x += ok + f
                f_x += f
        if min(n_g, n_y, n_x) < ms or n_all - n_g < ms or f_g == 0:
            return
        # Worse than the rest of y == v (for a cut: the best cut within y == v,
        # corrected for its choice), and than the rest of the x condition
        # (Bonferroni over the k cuts the group was chosen among).
        p_y = (float(fisher_greater(f_g, n_g, f_g + f_y, n_g + n_y)) if p_within is None
               else p_within)
        p_x = min(1.0, float(fisher_greater(f_g, n_g, f_g + f_x, n_g + n_x)) * k)
        p = max(p_y, p_x)
        tb = Table(f_g, n_g, f_all - f_g, n_all - n_g, k)
        parts = ((x, cond, val), (y, "==", v))
        x_text, y_text = f"{x} {cond} {value_text(val)}", f"{y} == {value_text(v)}"
        text = f"{x_text} and {y_text}"

        def describe(r_in: float, r_out: float, prev: float) -> str:
            return (f"{percent(tb.a / max(tb.failures, 1))} of {op_type} failures occur when "
                    f"{text}, which holds for {percent(prev)} of {op_type} operations; "
                    f"failure rate {percent(r_in)} there against {percent(r_out)} otherwise, "
                    f"more than with either part alone ({percent(f_y / n_y)} when only "
                    f"{y_text} holds, {percent(f_x / n_x)} when only {x_text} holds; "
                    f"n={tb.n_in:,} vs {tb.n_out:,})")

        tests.append(Test(p, _builder(self, "context", tb, p, describe, {
            "op_type": op_type, "attribute": x, "condition": cond, "value": val,
            "conditions": parts})))

    def _stratify(
        self, p: FailurePattern, counts: Counts, strength: dict[tuple[str, str], float]
    ) -> FailurePattern:
        """Check a single-attribute pattern within the levels of the strongest other one.

        Mantel-Haenszel over the levels of the other attribute of the same
        type with the smallest p-value (its joint counts with this one must
        be in the rollups). When the effect does not hold within them
        (one-sided z below 1.645) the pattern is marked ``confounded``, says
        so, and its confidence is multiplied by Phi(z): about 0.5 when it
        vanishes, near 0 when it reverses.
        """
        from .statistics import mantel_haenszel

        if (p.kind != "context" or p.error_type is not None or p.conditions is not None
                or p.missing or p.op_type is None or p.attribute in (None, "op_type")):
            return p
        t, attr = p.op_type, p.attribute
        others = sorted((q, a) for (tt, a), q in strength.items()
                        if tt == t and a != attr and q <= self.settings.fdr)
        for _, s in others:
            joint = counts.pair(t, attr, s)
            if joint is None:
                continue
            inside = _condition(p.condition, p.value)
            strata: dict[Any, list[int]] = {}
            for (u, w), (ok, f) in joint.items():
                if u is None and p.condition in (">", "<=", "in"):
                    continue
                cell = strata.setdefault(_key(w), [0, 0, 0, 0])
                if inside(u):
                    cell[0] += f
                    cell[1] += ok + f
                else:
                    cell[2] += f
                    cell[3] += ok + f
            rows = list(strata.values())
            covered = sum(r[1] + r[3] for r in rows)
            if covered < 0.9 * ((p.support or 0) + _n_out(p)):
                continue  # joint counts cover too little of the comparison
            ratio, z, informative = mantel_haenszel(rows)
            if informative == 0:
                return attrs.evolve(p, stratified_by=s)
            a, n1 = sum(r[0] for r in rows), sum(r[1] for r in rows)
            c, n0 = sum(r[2] for r in rows), sum(r[3] for r in rows)
            pooled = _odds_ratio(a, n1, c, n0)
            # Reversed: significantly the other way within strata. Vanished:
            # not significant within strata *and* the odds ratio shrinks by
            # more than half toward 1 on the log scale (so a real effect that
            # merely loses power after stratifying is not called confounded).
            reversed_ = z <= -Z_WITHIN
            vanished = z < Z_WITHIN and not (
                ratio > 1 and pooled > 1 and math.log(ratio) >= 0.5 * math.log(pooled))
            if not (reversed_ or vanished):
                return attrs.evolve(p, stratified_by=s, odds_ratio_within=ratio,
                                    confounded=False)
            verb = "reverses" if z < -Z_WITHIN else "vanishes"
            note = (f"; within each {s} the effect {verb} (Mantel-Haenszel odds ratio "
                    f"{ratio:.2f}, z = {z:.1f}): {s} may explain it, this is not a cause")
            return attrs.evolve(
                p, stratified_by=s, odds_ratio_within=ratio, confounded=True,
                confidence=float((p.confidence or 0.0) * normal_cdf(z)),
                description=p.description + note)
        return p

    def _scan_temporal(self, op_type: str, counts: Counts, tests: list[Test]) -> None:
        """Hour-of-day and weekday effects, and change points in the daily rate."""
        from .statistics import fisher_greater, max_cut

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
            tests.append(Test(p, _hour_marker(op_type, h)))
        # A weekday effect must show on each of its days: a weekday seen once
        # in the window (or on one day with enough outcomes) is that one day,
        # and recent drift would otherwise read as "avoid Sundays". The test
        # is intersection-union: the largest p-value over its days, each day
        # against all operations on other weekdays.
        days_of: list[list[int]] = [[] for _ in range(7)]
        for day_index, (d_ok, d_f) in daily.items():
            if d_ok + d_f >= ms:
                days_of[(day_index + 3) % 7].append(day_index)
        for w, (ok, f) in enumerate(wd):
            n = ok + f
            if n < ms or total - n < ms or len(days_of[w]) < 2:
                continue
            rest_n, rest_f = total - n, f_total - f
            p = max(float(fisher_greater(daily[d][1], sum(daily[d]), daily[d][1] + rest_f,
                                         sum(daily[d]) + rest_n)) for d in days_of[w])
            tb = Table(f, n, f_total - f, total - n)

            def describe_w(r_in: float, r_out: float, prev: float, *, w: int = w) -> str:
                return (f"{op_type} fails {percent(r_in)} on {WEEKDAYS[w]}s (UTC) against "
                        f"{percent(r_out)} on other days")

            tests.append(Test(p, _builder(self, "temporal", tb, p, describe_w, {
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
                tests.append(Test(p, self._change_point_builder(
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
            tb = (Table(f_after, n_after, f_before, n_before, cuts) if worse_after
                  else Table(f_before, n_before, f_after, n_after, cuts))
            conf = self._confidence([tb])[0]
            before = 1 - f_before / n_before
            after = 1 - f_after / n_after
            verb = "dropped" if worse_after else "rose"
            return FailurePattern(
                kind="change_point",
                description=(f"{op_type} success rate {verb} from {percent(before)} to "
                             f"{percent(after)} on {day(at)} (n={n_before:,} before, "
                             f"{n_after:,} after)"),
                op_type=op_type, attribute="day", condition=">=" if worse_after else "<",
                value=day(at), at=at, rate_before=before, rate_after=after,
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
        self, op_type: str, hours: list[tuple[int, Test]], counts: Counts
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
            tb = Table(f, n, f_total - f, total - n, 24)
            q = max(sig[h].q for h in run)
            p = min(sig[h].p for h in run)

            def describe(r_in: float, r_out: float, prev: float, *, run: list[int] = run) -> str:
                return (f"{op_type} fails {percent(r_in)} {hours_text(run)} against "
                        f"{percent(r_out)} otherwise")

            pat = self._pattern("temporal", tb, q, p, describe, op_type=op_type,
                                attribute="hour", condition="in", value=run)
            if pat is not None:
                out.append(pat)
        return out

    def _clusters(
        self, ws: WindowStats, prev: WindowStats, counts: Counts, tests: list[Test]
    ) -> tuple[list[ErrorCluster], dict[str, set[tuple[str, str]]]]:
        """Group failures by error type and mined template; test their growth."""
        from .statistics import binomial_sf, prob_greater

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
        self._exposure = {}
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
                    p = binomial_sf(n_now - 1, n_now + n_prev, share)
                    tests.append(Test(p, _cluster_growth_marker(cl.id)))
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
            tb = Table(c.count, e_now, c.previous_count, e_prev)
            out.append(attrs.evolve(c, confidence=c.confidence * self.confidence_effect(tb)))
        return out

    def cluster_pattern(self, c: ErrorCluster) -> FailurePattern:
        types = ", ".join(f"{t} ({n})" for t, n in sorted(c.op_types.items(), key=lambda x: -x[1]))
        trend = {"new": f"new in this window, first seen {day(c.first_seen)}",
                 "growing": f"growing ({c.previous_count} in the previous window)",
                 "fading": f"fading ({c.previous_count} in the previous window)",
                 "stable": f"{c.previous_count} in the previous window",
                 "unknown": "no operations of its types in the previous window"}[c.trend]
        return FailurePattern(
            kind="error_cluster",
            description=(f"{c.error_type} '{c.template}': {c.count:,} failures "
                         f"({percent(c.share_of_failures)} of failures), {trend}; hits {types}"),
            op_type=max(c.op_types, key=lambda t: c.op_types[t]) if c.op_types else None,
            error_type=c.error_type, template=c.template, count=c.count,
            failures=c.count, support=c.count, share_of_failures=c.share_of_failures,
            first_seen=c.first_seen, last_seen=c.last_seen,
            confidence=c.confidence, q_value=c.q_value,
        )

    def _scan_thresholds(self, counts: Counts, tests: list[Test]) -> dict[str, ThresholdScan]:
        """For each threshold: the band it would refuse next, and the band above."""
        from .statistics import fisher_greater

        out: dict[str, ThresholdScan] = {}
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
                out[name] = ThresholdScan(None, None)
                continue
            step, val = th.step, th.value
            if th.limit == "max":
                band = [v for v in values if val - step < v <= val]
                kept = [v for v in values if v <= val - step]
                above = [v for v in values if val < v <= val + step]
            else:
                band = [v for v in values if val <= v < val + step]
                kept = [v for v in values if v >= val + step]
                above = [v for v in values if val - step <= v < val]
            bf = sum(values[v][1] for v in band)
            bn = sum(values[v][0] + values[v][1] for v in band)
            kf = sum(values[v][1] for v in kept)
            kn = sum(values[v][0] + values[v][1] for v in kept)
            test = None
            ms = self.settings.min_samples
            if bn >= ms and kn >= ms and bf + kf > 0:
                p = float(fisher_greater(bf, bn, bf + kf, bn + kn))
                test = Test(p, lambda q: None)
                tests.append(test)
            out[name] = ThresholdScan(test, ThresholdBands(values, band, kept, above))
        return out


def _p_below(a: float, b: float, x: float) -> float:
    """P(p < x) for p ~ Beta(a, b)."""
    from .statistics import beta_cdf

    return beta_cdf(x, a, b)


def _n_out(p: FailurePattern) -> int:
    """Operations outside a pattern's condition (from its support and prevalence)."""
    if not p.prevalence or not p.support:
        return 0
    return round(p.support / p.prevalence) - p.support


def _odds_ratio(a: float, n1: float, c: float, n0: float) -> float:
    """Odds ratio of failure in against out, with 0.5 added to each cell."""
    return ((a + 0.5) * (n0 - c + 0.5)) / ((n1 - a + 0.5) * (c + 0.5))


def _sort_key(v: Any) -> tuple[int, Any]:
    if v is None:
        return (0, 0)
    if _is_number(v):
        return (1, v)
    return (2, str(v))


def _key(v: Any) -> Any:
    """A value as a dict key that keeps 1, 1.0 and True apart."""
    return (type(v).__name__ if not _is_number(v) else "n", v)


def _condition(cond: str | None, value: Any) -> Callable[[Any], bool]:
    """Whether a value meets a single-attribute pattern's condition."""
    if cond == ">":
        return lambda u: _is_number(u) and bool(u > value)
    if cond == "<=":
        return lambda u: _is_number(u) and bool(u <= value)
    if cond == "in":
        members = {_key(m) for m in value}
        return lambda u: _key(u) in members
    return lambda u: _key(u) == _key(value)


def _context_sentence(
    tb: Table, who: str, what: str, whose: str, condition: str, value: Any,
    *, bare: bool = False,
) -> Callable[[float, float, float], str]:
    """The description of a context pattern, given its rates once they are known.

    ``bare``: the condition is complete without the value ("x is missing").
    """
    cond_text = condition if bare else f"{condition} {value_text(value)}"

    def describe(r_in: float, r_out: float, prevalence: float) -> str:
        return (
            f"{percent(tb.a / max(tb.failures, 1))} of {who} occur when "
            f"{cond_text}, which holds for {percent(prevalence)} of "
            f"{whose}; {what} {percent(r_in)} there against "
            f"{percent(r_out)} otherwise (n={tb.n_in:,} vs {tb.n_out:,})"
        )

    return describe


def _builder(
    gen: Scan, kind: str, tb: Table, p: float,
    describe: Callable[[float, float, float], str], fields: dict[str, Any],
) -> Callable[[float], FailurePattern | None]:
    def build(q: float) -> FailurePattern | None:
        return gen._pattern(kind, tb, q, p, describe, **fields)

    return build


def _hour_marker(op_type: str, hour: int) -> Callable[[float], Finding]:
    def build(q: float) -> Finding:
        return HourMark(op_type, hour)

    return build


def _cluster_growth_marker(cid: str) -> Callable[[float], Finding]:
    def build(q: float) -> Finding:
        return GrowthMark(cid, q)

    return build

