"""Calibration of the scan: are patterns at confidence >= 0.7 real, and which real ones
are found?

    python benchmarks/bench_calibration.py [--worlds 200] [--jobs 2] [--quick]
                                           [--only-random | --only-cases]

**Random worlds with known truth.** Each world records one week of ``run_tests``
operations (500 to 4,000) through ``kit.record`` and runs
``kit.insights.generate_summary(days=7)``. Failures happen with a base probability
(5% to 35%) plus, for every planted effect that applies to the operation, its size
(+3, +5, +10, +20 or +40 points of failure rate). Planted effects: one value of a
categorical attribute (3 to 10 values), or the values above (or at and below) a cut of
a numeric attribute (0..19). Beside them, null attributes (categorical, numeric,
boolean) that do nothing, two error types drawn independently of everything, and times
drawn uniformly over the week (so no hour, weekday or change-point pattern is real).

A reported pattern is **real** when it is about a planted attribute of the operations
(not the error mix) and the group it names truly fails more than the rest (the mean
true failure probability of the operations inside exceeds the mean outside); **real and
practical** when that true difference also exceeds ``practical_margin`` (5 points), which
is what the confidence claims. Everything else (null attributes, hours, weekdays,
change points, error-mix patterns) is a false discovery. Recall of a planted effect:
some real pattern on its attribute.

**Named scan cases** (issue 10), printed one by one with what learnkit reports, so a
reader can see what is right and wrong: interaction, failing middle band, Simpson
reversal, one bad repo among 1,000, None values, missing key, rare failures, recent
drift, operation types. Each runs in a fresh process (learnkit's summary of an
attribute's strings is per store; a fresh process keeps the cases apart).

A conjunction is judged on all its parts; "attribute missing", None levels and
operation type patterns are judged on what they say.

Only public API (``learnkit.open``, ``kit.record``, ``kit.flush``,
``kit.insights.generate_summary``). The script prints what it measured and asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DAY = 86400.0
#: Midnight UTC; every window is the 7 days before it.
NOW = 1_790_035_200.0
OP = "run_tests"
CONFIG = """\
[learning]
enabled = false
min_samples = 10
confidence_threshold = 0.7
failure_cost = 1.0
practical_margin = 0.05
fdr = 0.1

[storage]
path = "learnkit.db"
"""
MARGIN = 0.05
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DELTAS = (0.03, 0.05, 0.10, 0.20, 0.40)
ERRORS = (("TestFailure", "{n} unit tests failed"), ("TimeoutError", "timed out after {n}s"))

#: One operation: (op_type, end time, true failure probability, context, failed).
Op = tuple[str, float, float, dict[str, Any], bool]


def quiet() -> None:
    logging.getLogger("learnkit").addHandler(logging.NullHandler())
    logging.getLogger("learnkit").propagate = False


async def analyse(ops: list[Op], rng: random.Random) -> Any:
    """Record the operations in a fresh store and return generate_summary(days=7)."""
    import learnkit

    with tempfile.TemporaryDirectory(prefix="learncal-") as d:
        cfg = Path(d) / "learnkit.toml"
        cfg.write_text(CONFIG)
        async with learnkit.open(cfg, clock=lambda: NOW, learning_loop=False) as kit:
            for op_type, t, _, ctx, failed in ops:
                if failed:
                    et, msg = rng.choice(ERRORS)
                    kit.record(op_type, outcome="failure", started_at=t - 30, ended_at=t,
                               error_type=et, error_message=msg.format(n=rng.randint(1, 99)),
                               context=ctx)
                else:
                    kit.record(op_type, outcome="success", started_at=t - 30, ended_at=t,
                               context=ctx)
            await kit.flush()
            return await kit.insights.generate_summary(days=7)


# -- the truth of a pattern -------------------------------------------------------------


def _meets(attribute: str, condition: str, value: Any, ctx: dict[str, Any],
           missing: bool) -> bool | None:
    """Whether a context meets one condition; None when it is not compared."""
    if missing:
        return attribute not in ctx
    if attribute not in ctx:
        return None
    v = ctx[attribute]
    if condition == "==":
        return bool(v == value) if value is not None else v is None
    if v is None or isinstance(v, (bool, str)):
        return None
    if condition == ">":
        return bool(v > value)
    if condition == "<=":
        return bool(v <= value)
    if condition == "in":
        return v in value
    return None


def in_group(p: Any, op: Op) -> bool | None:
    """Whether an operation meets a pattern's condition; None when it is not compared."""
    op_type, t, _, ctx, _ = op
    if p.kind == "context" and p.attribute == "op_type":
        return op_type == p.value
    if p.op_type is not None and p.op_type != op_type:
        return None
    if p.kind == "context":
        parts = p.conditions or ((p.attribute, p.condition, p.value),)
        out: bool | None = True
        for attribute, condition, value in parts:
            m = _meets(attribute, condition, value, ctx, bool(p.missing))
            if m is None:
                return None
            out = out and m
        return out
    if p.kind == "temporal" and p.attribute == "hour":
        return int(t % DAY // 3600) in p.value
    if p.kind == "temporal" and p.attribute == "weekday":
        return WEEKDAYS[int((t // DAY + 3) % 7)] == p.value
    if p.kind == "change_point" and p.at is not None:
        after = t >= p.at
        return after if p.condition == ">=" else not after
    return None


def true_difference(p: Any, ops: list[Op]) -> float | None:
    """Mean true failure probability inside the pattern's group minus outside."""
    inside: list[float] = []
    outside: list[float] = []
    for op in ops:
        g = in_group(p, op)
        if g is None:
            continue
        (inside if g else outside).append(op[2])
    if not inside or not outside:
        return None
    return statistics.fmean(inside) - statistics.fmean(outside)


# -- random worlds ----------------------------------------------------------------------


@dataclass
class Effect:
    attribute: str
    kind: str  # "categorical" or "numeric"
    delta: float
    applies: Callable[[Any], bool]
    text: str


@dataclass
class WorldResult:
    #: (confidence, real, real and practical, label of a false one)
    patterns: list[tuple[float, bool, bool, str]] = field(default_factory=list)
    #: (delta, kind, found at conf >= 0.7, reported at all)
    planted: list[tuple[float, str, bool, bool]] = field(default_factory=list)


def random_world(index: int) -> tuple[list[Op], list[Effect], random.Random]:
    r = random.Random(f"calibration/{index}")
    n = r.choice((500, 1000, 2000, 4000))
    base = r.uniform(0.05, 0.35)
    effects: list[Effect] = []
    makers: dict[str, Callable[[random.Random], Any]] = {}
    for i in range(r.randint(1, 3)):
        delta = r.choice(DELTAS)
        if r.random() < 0.5:
            name = f"cat{i}"
            k = r.randint(3, 10)
            values = "abcdefghij"[:k]
            bad = r.choice(values)
            makers[name] = lambda g, values=values: g.choice(values)
            effects.append(Effect(name, "categorical", delta, lambda v, bad=bad: v == bad,
                                  f"{name} == {bad!r} (1 of {k})"))
        else:
            name = f"num{i}"
            cut = r.randint(5, 14)
            makers[name] = lambda g: g.randint(0, 19)
            if r.random() < 0.5:
                effects.append(Effect(name, "numeric", delta, lambda v, cut=cut: v > cut,
                                      f"{name} > {cut}"))
            else:
                effects.append(Effect(name, "numeric", delta, lambda v, cut=cut: v <= cut,
                                      f"{name} <= {cut}"))
    for j in range(r.randint(2, 4)):
        kind = r.choice(("cat", "num", "flag"))
        if kind == "cat":
            k = r.randint(2, 8)
            makers[f"null_cat{j}"] = lambda g, k=k: g.choice("pqrstuvw"[:k])
        elif kind == "num":
            makers[f"null_num{j}"] = lambda g: g.randint(0, 99)
        else:
            q = r.uniform(0.1, 0.5)
            makers[f"null_flag{j}"] = lambda g, q=q: g.random() < q
    ops: list[Op] = []
    for _ in range(n):
        ctx = {k: make(r) for k, make in makers.items()}
        pf = min(0.95, base + sum(e.delta for e in effects if e.applies(ctx[e.attribute])))
        t = NOW - r.uniform(1, 7 * DAY - 1)
        ops.append((OP, t, pf, ctx, r.random() < pf))
    ops.sort(key=lambda o: o[1])
    return ops, effects, r


def judge_world(index: int) -> WorldResult:
    quiet()
    ops, effects, r = random_world(index)
    summary = asyncio.run(analyse(ops, r))
    planted = {e.attribute for e in effects}
    out = WorldResult()
    real_on: dict[str, list[float]] = {}
    for p in summary["failure_patterns"]:
        if p.kind == "error_cluster":
            continue  # a cluster's size and trend, not a claim about a condition
        conf = float(p.confidence or 0.0)
        diff = None
        named = {a for a, _, _ in (p.conditions or ((p.attribute, None, None),))}
        if p.kind == "context" and p.error_type is None and named & planted:
            diff = true_difference(p, ops)
        real = diff is not None and diff > 0
        practical = diff is not None and diff > MARGIN
        if real:
            for a in named & planted:
                real_on.setdefault(a, []).append(conf)
        if real:
            label = ""
        elif p.kind == "context" and p.error_type is not None:
            label = "error mix (independent of context)"
        elif p.kind == "context" and p.attribute in planted:
            label = "planted attribute, wrong group"
        elif p.kind == "context":
            label = "null attribute"
        else:
            label = f"{p.kind} ({p.attribute})"
        out.patterns.append((conf, real, practical, label))
    for e in effects:
        confs = real_on.get(e.attribute, [])
        out.planted.append((e.delta, e.kind, any(c >= 0.7 for c in confs), bool(confs)))
    return out


def calibration_report(results: list[WorldResult], n_worlds: int) -> None:
    pats = [p for r in results for p in r.patterns]
    print(f"\n## Random worlds: {n_worlds} worlds, "
          f"{sum(len(r.planted) for r in results)} planted effects, {len(pats)} patterns "
          "reported (error-cluster summaries left out)\n")
    print("| confidence | patterns | real | real share | real and > 5 pts | "
          "share real and > 5 pts |")
    print("|---|---|---|---|---|---|")
    bins = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.01),
            (0.7, 1.01)]
    for lo, hi in bins:
        sel = [p for p in pats if lo <= p[0] < hi]
        label = f">= {lo:.2f} (all)" if (lo, hi) == (0.7, 1.01) else f"[{lo:.2f}, {min(hi, 1):.2f})"
        if (lo, hi) == (0.95, 1.01):
            label = "[0.95, 1.00]"
        if not sel:
            print(f"| {label} | 0 | | | | |")
            continue
        real = sum(p[1] for p in sel)
        prac = sum(p[2] for p in sel)
        print(f"| {label} | {len(sel)} | {real} | {real / len(sel):.1%} | {prac} | "
              f"{prac / len(sel):.1%} |")
    high = [p for p in pats if p[0] >= 0.7]
    false = {}
    for p in high:
        if not p[1]:
            false[p[3]] = false.get(p[3], 0) + 1
    share = sum(p[1] for p in high) / len(high) if high else float("nan")
    print(f"\nShare of real patterns among those at confidence >= 0.7: {share:.1%} "
          f"({sum(p[1] for p in high)} of {len(high)}; goal >= 90%). False ones: "
          + (", ".join(f"{k}: {v}" for k, v in sorted(false.items())) or "none") + ".")
    print("\n| planted effect (failure rate +) | planted | found at conf >= 0.7 | "
          "categorical | numeric cut | reported at any confidence |")
    print("|---|---|---|---|---|---|")
    planted = [p for r in results for p in r.planted]

    def frac(sel: list[tuple[float, str, bool, bool]], i: int) -> str:
        return f"{sum(p[i] for p in sel) / len(sel):.0%} ({sum(p[i] for p in sel)}/{len(sel)})" \
            if sel else "n/a"

    for d in DELTAS:
        sel = [p for p in planted if p[0] == d]
        cat = [p for p in sel if p[1] == "categorical"]
        num = [p for p in sel if p[1] == "numeric"]
        print(f"| +{d * 100:.0f} pts | {len(sel)} | {frac(sel, 2)} | {frac(cat, 2)} | "
              f"{frac(num, 2)} | {frac(sel, 3)} |")


# -- named cases ------------------------------------------------------------------------


def spread_times(n: int, r: random.Random) -> list[float]:
    return sorted(NOW - r.uniform(1, 7 * DAY - 1) for _ in range(n))


def case_interaction(r: random.Random, scale: float) -> list[Op]:
    ops = []
    for t in spread_times(int(3000 * scale), r):
        ctx = {"complexity": r.randint(1, 12), "lang": r.choice(("go", "python", "rust", "ts"))}
        pf = 0.70 if ctx["complexity"] > 7 and ctx["lang"] == "go" else 0.08
        ops.append((OP, t, pf, ctx, r.random() < pf))
    return ops


def case_band(r: random.Random, scale: float) -> list[Op]:
    ops = []
    for t in spread_times(int(3000 * scale), r):
        ctx = {"complexity": r.randint(1, 12)}
        pf = 0.60 if ctx["complexity"] in (5, 6) else 0.08
        ops.append((OP, t, pf, ctx, r.random() < pf))
    return ops


SIMPSON = {"alpha": (1, 0.25), "beta": (4, 0.55), "gamma": (7, 0.85)}


def case_simpson(r: random.Random, scale: float) -> list[Op]:
    ops = []
    for t in spread_times(int(3000 * scale), r):
        repo = r.choice(tuple(SIMPSON))
        lo, base = SIMPSON[repo]
        c = r.randint(lo, lo + 5)
        pf = base - 0.05 * (c - lo)  # within a repo, harder issues fail *less*
        ops.append((OP, t, pf, {"repo": repo, "complexity": c}, r.random() < pf))
    return ops


BAD_REPO = "repo-0737"


def case_bad_repo(r: random.Random, scale: float) -> list[Op]:
    ops = []
    for i in range(max(100, int(1000 * scale))):
        repo = f"repo-{i:04d}"
        if repo == BAD_REPO:
            fails = [True] * 23 + [False] * 7
            pf = 23 / 30
        else:
            pf = 0.10
            fails = [r.random() < pf for _ in range(30)]
        for f in fails:
            ops.append((OP, NOW - r.uniform(1, 7 * DAY - 1), pf,
                        {"repo": repo, "complexity": r.randint(1, 12)}, f))
    ops.sort(key=lambda o: o[1])
    return ops


def case_none(r: random.Random, scale: float) -> list[Op]:
    ops = []
    for t in spread_times(int(3000 * scale), r):
        files = None if r.random() < 0.2 else r.randint(1, 50)
        pf = 0.50 if files is None else (0.30 if files > 40 else 0.08)
        ops.append((OP, t, pf, {"files": files, "complexity": r.randint(1, 12)},
                    r.random() < pf))
    return ops


def case_missing(r: random.Random, scale: float) -> list[Op]:
    ops = []
    for t in spread_times(int(3000 * scale), r):
        ctx: dict[str, Any] = {"complexity": r.randint(1, 12)}
        missing = r.random() < 0.25
        if not missing:
            ctx["owner"] = r.choice(("alice", "bob", "carol"))
        pf = 0.40 if missing else 0.08
        ops.append((OP, t, pf, ctx, r.random() < pf))
    return ops


def case_rare(r: random.Random, scale: float) -> list[Op]:
    ops = []
    for t in spread_times(int(20000 * scale), r):
        region = r.choice(("eu", "us", "ap", "sa"))
        pf = 0.05 if region == "sa" else 0.01
        ops.append((OP, t, pf, {"region": region, "complexity": r.randint(1, 12)},
                    r.random() < pf))
    return ops


def case_drift(r: random.Random, scale: float) -> list[Op]:
    ops = []
    for t in spread_times(int(2800 * scale), r):
        pf = 0.40 if t >= NOW - 2 * DAY else 0.10
        ops.append((OP, t, pf, {"complexity": r.randint(1, 12)}, r.random() < pf))
    return ops


def case_types(r: random.Random, scale: float) -> list[Op]:
    ops = []
    for t in spread_times(int(4000 * scale), r):
        op_type = r.choice(("lint", "deploy"))
        big = r.random() < (0.9 if op_type == "deploy" else 0.1)
        pf = 0.92 if op_type == "deploy" else 0.10
        ops.append((op_type, t, pf, {"runner": "large" if big else "small",
                                     "complexity": r.randint(1, 12)}, r.random() < pf))
    return ops


def _patterns(summary: Any) -> list[Any]:
    return [p for p in summary["failure_patterns"] if p.kind != "error_cluster"]


def _find(summary: Any, pred: Callable[[Any], bool], conf: float = 0.7) -> list[Any]:
    return [p for p in _patterns(summary) if (p.confidence or 0) >= conf and pred(p)]


def _conds(ps: list[Any]) -> str:
    return "; ".join(f"{_cond(p)} (confidence {p.confidence:.2f})" for p in ps) or "nothing"


def _cond(p: Any) -> str:
    if p.kind == "change_point":
        return f"change point {p.value}"
    if getattr(p, "missing", None):
        return f"{p.op_type}: {p.attribute} missing"
    parts = getattr(p, "conditions", None) or ((p.attribute, p.condition, p.value),)
    return f"{p.op_type}: " + " and ".join(
        f"{a} {c} {repr(v) if isinstance(v, str) else v}" for a, c, v in parts)


def judge_interaction(s: Any, ops: list[Op]) -> str:
    both = [p for p in _patterns(s) if "complexity" in p.description and "lang" in p.description
            and (p.confidence or 0) >= 0.7]
    marg = _find(s, lambda p: p.attribute in ("complexity", "lang"), 0.0)
    return ((f"a conjunction was reported: {_conds(both)}" if both
             else "no conjunction reported")
            + f"; marginal patterns: {_conds(marg)}")


def judge_band(s: Any, ops: list[Op]) -> str:
    ps = _find(s, lambda p: p.attribute == "complexity", 0.0)
    out = []
    for p in ps:
        group = sorted({op[3]["complexity"] for op in ops if in_group(p, op)})
        out.append(f"'{_cond(p)}' covers complexity {group[0]}..{group[-1]} "
                   f"(confidence {p.confidence:.2f})")
    exact = any(sorted({op[3]["complexity"] for op in ops if in_group(p, op)}) == [5, 6]
                for p in ps)
    return ("band {5, 6} reported exactly" if exact else "band {5, 6} not reported as a band") \
        + ": " + ("; ".join(out) or "no complexity pattern")


def judge_simpson(s: Any, ops: list[Op]) -> str:
    ps = _find(s, lambda p: p.attribute == "complexity" and not p.conditions, 0.0)
    pooled = [p for p in ps if p.condition == ">"]
    flagged = [p for p in pooled if getattr(p, "confounded", None)]
    txt = _conds(ps)
    if pooled and len(flagged) == len(pooled):
        return (f"the pooled direction (harder fails more) is flagged as reversing within "
                f"{flagged[0].stratified_by} (odds ratio within "
                f"{flagged[0].odds_ratio_within:.2f}): {txt}")
    if pooled:
        return (f"reports the pooled direction (harder fails more) although within every repo "
                f"harder fails less, with no stratified warning: {txt}")
    return f"complexity patterns: {txt}"


def judge_bad_repo(s: Any, ops: list[Op]) -> str:
    hit = _find(s, lambda p: p.attribute == "repo" and p.value == BAD_REPO, 0.0)
    other = _find(s, lambda p: p.attribute == "repo", 0.0)
    compared = ""
    total = round(other[0].support / other[0].prevalence) if other and other[0].prevalence \
        else len(ops)
    if total < 0.99 * len(ops):
        compared = (f"; the repo comparison covers {total:,} of {len(ops):,} operations "
                    "(the rest were stored as '<other>')")
    return (f"{BAD_REPO} found: {_conds(hit)}" if hit
            else f"{BAD_REPO} not found; repo patterns: {_conds(other)}") + compared


def judge_none(s: Any, ops: list[Op]) -> str:
    ps = _find(s, lambda p: p.attribute == "files", 0.0)
    out = []
    for p in ps:
        true_n = sum(1 for op in ops if in_group(p, op))
        out.append(f"'{_cond(p)}' support {p.support} but {true_n} operations have a number "
                   f"there (confidence {p.confidence:.2f}, failure rate in "
                   f"{p.failure_rate_in:.0%})")
    none_level = any(p.value is None for p in ps)
    return ("None reported as its own level" if none_level else "None never its own level") \
        + ": " + ("; ".join(out) or "no files pattern")


def judge_missing(s: Any, ops: list[Op]) -> str:
    ps = _find(s, lambda p: p.attribute == "owner", 0.0)
    miss = [p for p in ps if "missing" in p.description]
    return ("missingness reported" if miss else "missing owner never reported") \
        + f"; owner patterns: {_conds(ps)}"


def judge_rare(s: Any, ops: list[Op]) -> str:
    ps = _find(s, lambda p: p.attribute == "region" and p.value == "sa", 0.0)
    if not ps:
        return "region == 'sa' not reported"
    p = ps[0]
    return (f"region == 'sa' reported at confidence {p.confidence:.2f} (q = {p.q_value:.1e}, "
            f"lift {p.lift:.1f}); {'actionable' if p.confidence >= 0.7 else 'below 0.7'}")


def judge_drift(s: Any, ops: list[Op]) -> str:
    wd = _find(s, lambda p: p.attribute == "weekday", 0.0)
    cp = _find(s, lambda p: p.kind == "change_point", 0.0)
    recs = [a for a in s["actions"] if a.startswith(("avoid_weekday", "investigate_change"))]
    return (f"weekday patterns: {_conds(wd)}; change points: {_conds(cp)}; "
            f"recommended actions: {', '.join(recs) or 'none'}")


def judge_types(s: Any, ops: list[Op]) -> str:
    rates = ", ".join(f"{t} {r.rate:.0%}" for t, r in s["rates_by_type"].items())
    rates = f"success rates by type: {rates}"
    typ = [p for p in _patterns(s) if p.attribute in ("op_type", "type")]
    run = _find(s, lambda p: p.attribute == "runner", 0.0)
    return (("operation type reported as a pattern" if typ
             else "operation type never a pattern") + f" ({rates}); "
            f"runner patterns: {_conds(run)}")


@dataclass(frozen=True)
class Case:
    name: str
    truth: str
    expected: str
    make: Callable[[random.Random, float], list[Op]]
    judge: Callable[[Any, list[Op]], str]


CASES = (
    Case("interaction", "3,000 ops; failure 70% when complexity > 7 and lang == 'go', else 8%",
         "one pattern 'complexity > 7 and lang == go' (70% vs 8%)",
         case_interaction, judge_interaction),
    Case("middle band", "3,000 ops; failure 60% when complexity is 5 or 6, else 8%",
         "'5 <= complexity <= 6' (60% vs 8%)", case_band, judge_band),
    Case("Simpson reversal",
         "3,000 ops in repos alpha (complexity 1-6), beta (4-9), gamma (7-12), failing "
         "25%/55%/85% at their easiest issue and 5 points less per complexity step",
         "repo as the cause; complexity's pooled effect flagged as reversing within repo",
         case_simpson, judge_simpson),
    Case("one bad repo", f"1,000 repos x 30 ops, 10% failure; {BAD_REPO} failed 23 of 30",
         f"repo == {BAD_REPO!r} (77% vs 10%)", case_bad_repo, judge_bad_repo),
    Case("None values",
         "3,000 ops; files is None on 20% (failure 50%); files > 40: 30%; else 8%",
         "'files is None' (50%) and 'files > 40' with support counting numbers only",
         case_none, judge_none),
    Case("missing key", "3,000 ops; the key owner is missing on 25% (failure 40%), else 8%",
         "'owner missing' (40% vs 8%)", case_missing, judge_missing),
    Case("rare failures", "20,000 ops; failure 1%, region == 'sa' (a quarter) 5%",
         "region == 'sa' at high confidence (risk ratio 5)", case_rare, judge_rare),
    Case("recent drift", "2,800 ops over 7 days; failure 10%, 40% in the last two days",
         "a change point two days ago; no weekday effect (each weekday occurred once)",
         case_drift, judge_drift),
    Case("operation types",
         "4,000 ops; lint fails 10%, deploy 92%; runner 'large' on 90% of deploys, 10% of lints",
         "operation type as a pattern (deploy 92% vs 10%); runner explained by type",
         case_types, judge_types),
)


def run_case(i: int, scale: float = 1.0) -> tuple[str, list[str]]:
    quiet()
    case = CASES[i]
    r = random.Random(f"case/{case.name}")
    ops = case.make(r, scale)
    s = asyncio.run(analyse(ops, r))
    lines = [f"Truth: {case.truth}.", f"Expected: {case.expected}.",
             f"learnkit: {s['sample_size']:,} outcomes, {s['tests']} hypotheses scanned.", "",
             "| confidence | q | kind | pattern |", "|---|---|---|---|"]
    ps = _patterns(s)[:6]
    for p in ps:
        q = "n/a" if p.q_value is None else f"{p.q_value:.1e}"
        lines.append(f"| {p.confidence:.2f} | {q} | {p.kind} | {p.description} |")
    if not ps:
        lines.append("| | | | (no pattern) |")
    more = len(_patterns(s)) - len(ps)
    if more > 0:
        lines.append(f"| | | | ... and {more} more |")
    lines += ["", "Recommendations: " + ("; ".join(
        f"{rec.action} ({rec.confidence:.2f})" for rec in s["recommendations"][:4]) or "none"),
        "", f"Verdict: {case.judge(s, ops)}."]
    return case.name, lines


def warm_up() -> None:
    """Import learnkit's analysis dependencies once, before the worker processes fork.

    Imported in each worker instead, scipy.stats takes seconds per process.
    """
    import scipy.stats  # noqa: F401

    import learnkit  # noqa: F401


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 6 random worlds, named cases at a fifth of their size")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--only-random", action="store_true")
    group.add_argument("--only-cases", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.worlds = 6
    warm_up()
    t0 = time.perf_counter()
    print(f"# bench_calibration ({args.jobs} processes{', quick' if args.quick else ''})")
    if not args.only_cases:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(judge_world, range(args.worlds), chunksize=4))
        calibration_report(results, args.worlds)
    if not args.only_random:
        print("\n## Named scan cases (issue 10)")
        # A fresh process per case: the 50-distinct-strings cap of an attribute is per process.
        scale = 0.2 if args.quick else 1.0
        with multiprocessing.get_context("fork").Pool(args.jobs, maxtasksperchild=1) as pool:
            for name, lines in pool.starmap(run_case, [(i, scale) for i in range(len(CASES))],
                                            chunksize=1):
                print(f"\n### {name}\n")
                print("\n".join(lines))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
