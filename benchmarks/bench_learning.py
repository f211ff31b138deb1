"""Learning quality: does the controller move thresholds the right way, in worlds it was
not tuned on?

    python benchmarks/bench_learning.py [--seeds 20] [--first-seed 0] [--days 56] [--jobs 2]
                                        [--quick] [--worlds lower-60,noise,...] [--via track|record]

Each world is a simulated orchestrator on simulated time (``learnkit.open(clock=...)``):
every day ``ops_per_day`` issues are offered, each with context attributes drawn at
random and a true success probability that the world defines (and that may change on
the middle day). learnkit decides admission with ``kit.admit`` (exploration included),
the admitted work is tracked with ``learnkit.track`` (so explored work is marked; work
written with ``kit.record`` does not carry the mark of ``kit.admit``, and ``--via record``
shows what that costs), and the learning loop runs once per simulated day through
``kit.learn_once()``. Only public API; learnkit itself is not modified.

Every policy sees the same offered operations with the same outcomes (common random
numbers: an operation succeeds when its uniform draw is below its true success
probability), so the differences between policies are not sampling noise of the work.

Policies, per world:

- **learnkit**: the thresholds in force, as learnkit moves them, plus its exploration.
- **no learning**: the initial threshold kept fixed for the whole run.
- **best fixed**: the one fixed threshold (per world, the same for every seed) with the
  highest mean utility, chosen in hindsight by simulating every allowed value.
- **oracle**: knows the true success probabilities and attempts exactly the work whose
  expected utility is positive (p > c / (1 + c)).

Utility is per *offered* operation: +1 per success, -failure_cost per failure, 0 per
refused. Coverage is the share of offered operations attempted. The goals of issue 10
are printed beside what was measured; the script never asserts them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

DAY = 86400.0
#: Midnight UTC, a Tuesday; day 0 of every simulation.
START = 1_790_035_200.0
OP = "process_issue"


# -- worlds -----------------------------------------------------------------------------


def logistic(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def falling(mid: float) -> Callable[[dict[str, int], int], float]:
    """Success falls with complexity: 50% at ``mid``, x e^-1 per unit of complexity."""
    return lambda a, day: logistic(mid - a["complexity"])


def _cheap(a: dict[str, int], day: int) -> float:
    return 0.25 + 0.7 * logistic(7.5 - a["complexity"])


def _noise(a: dict[str, int], day: int) -> float:
    return 0.5


def _two(a: dict[str, int], day: int) -> float:
    return logistic((7.3 - a["complexity"]) + (a["coverage"] - 5))


@dataclass(frozen=True)
class Threshold:
    name: str
    attribute: str
    limit: str  # "max" or "min"
    value: int
    lo: int
    hi: int

    def admits(self, value: int, at: int | float | None = None) -> bool:
        v = self.value if at is None else at
        return value <= v if self.limit == "max" else value >= v


@dataclass(frozen=True)
class World:
    name: str
    title: str
    #: How the truth is defined, in words (printed).
    truth: str
    ops_per_day: int
    failure_cost: float
    thresholds: tuple[Threshold, ...]
    #: attribute -> (lowest, highest), drawn uniformly as integers.
    attrs: dict[str, tuple[int, int]]
    #: Success probability before the change (and after, without a change).
    p_before: Callable[[dict[str, int], int], float]
    #: Success probability from the middle day on (None: no change).
    p_after: Callable[[dict[str, int], int], float] | None = None
    notes: tuple[str, ...] = field(default=())

    def p(self, a: dict[str, int], period: int) -> float:
        fn = self.p_after if (period == 1 and self.p_after is not None) else self.p_before
        return fn(a, 0)

    @property
    def breakeven(self) -> float:
        return self.failure_cost / (1 + self.failure_cost)


MAX_COMPLEXITY = Threshold("max_complexity", "complexity", "max", 10, 3, 12)
COMPLEXITY = {"complexity": (1, 12)}
CURVE = "success = 1 / (1 + exp(complexity - {mid}))"

WORLDS: dict[str, World] = {w.name: w for w in (
    World("lower-60", "lowering is right, 60 ops/day",
          CURVE.format(mid=7.5) + "; failure_cost 1 (break-even 50%)",
          60, 1.0, (MAX_COMPLEXITY,), COMPLEXITY, falling(7.5)),
    World("lower-300", "lowering is right, 300 ops/day",
          CURVE.format(mid=7.5) + "; failure_cost 1 (break-even 50%)",
          300, 1.0, (MAX_COMPLEXITY,), COMPLEXITY, falling(7.5)),
    World("wrong", "lowering is wrong: failures are cheap, 60 ops/day",
          "success = 0.25 + 0.7 / (1 + exp(complexity - 7.5)) (26% at 12); failure_cost "
          "0.25 (break-even 20%): every band is worth attempting",
          60, 0.25, (MAX_COMPLEXITY,), COMPLEXITY, _cheap),
    World("improves", "the world improves mid-way, 60 ops/day",
          CURVE.format(mid=7.5) + " until the middle day, then " + CURVE.format(mid=10.5)
          + " (hard work starts succeeding); failure_cost 1",
          60, 1.0, (MAX_COMPLEXITY,), COMPLEXITY, falling(7.5), falling(10.5)),
    World("worsens", "the world worsens mid-way, 60 ops/day",
          CURVE.format(mid=10.5) + " until the middle day, then " + CURVE.format(mid=7.5)
          + "; failure_cost 1",
          60, 1.0, (MAX_COMPLEXITY,), COMPLEXITY, falling(10.5), falling(7.5)),
    World("noise", "noise only, 60 ops/day",
          "success = 50% whatever the complexity; failure_cost 1 (break-even 50%): every "
          "threshold is worth exactly the same, so any move is a reaction to noise",
          60, 1.0, (MAX_COMPLEXITY,), COMPLEXITY, _noise),
    World("two", "two thresholds on two attributes, 60 ops/day",
          "success = 1 / (1 + exp((complexity - 7.3) - (coverage - 5))), coverage "
          "0..10; failure_cost 1; max_complexity starts at 10, min_coverage at 0",
          60, 1.0,
          (MAX_COMPLEXITY, Threshold("min_coverage", "coverage", "min", 0, 0, 10)),
          {"complexity": (1, 12), "coverage": (0, 10)}, _two),
)}


def config_text(w: World) -> str:
    out = [
        "[learning]",
        "enabled = false",
        "analysis_interval = 86400",
        "min_samples = 10",
        "confidence_threshold = 0.7",
        "auto_apply = true",
        f"failure_cost = {w.failure_cost}",
        "explore = 0.05",
        "window_days = 7",
        "",
        "[storage]",
        'path = "learnkit.db"',
    ]
    for th in w.thresholds:
        out += [
            "", f"[thresholds.{th.name}]", f"value = {th.value}",
            f'attribute = "{th.attribute}"', f'limit = "{th.limit}"', f'op_type = "{OP}"',
            f"min = {th.lo}", f"max = {th.hi}", "step = 1",
        ]
    return "\n".join(out) + "\n"


def cells(w: World) -> list[tuple[int, ...]]:
    """Every combination of attribute values (uniformly offered)."""
    names = list(w.attrs)
    return list(product(*(range(w.attrs[n][0], w.attrs[n][1] + 1) for n in names)))


def candidates(w: World) -> list[tuple[int, ...]]:
    """Every allowed combination of threshold values."""
    return list(product(*(range(th.lo, th.hi + 1) for th in w.thresholds)))


def admitted(w: World, values: tuple[int, ...], cell: tuple[int, ...]) -> bool:
    names = list(w.attrs)
    return all(th.admits(cell[names.index(th.attribute)], v)
               for th, v in zip(w.thresholds, values, strict=True))


def expected_best(w: World, period: int) -> tuple[int, ...]:
    """The fixed thresholds with the highest expected utility under the true rates."""
    names = list(w.attrs)
    c = w.failure_cost

    def value(vals: tuple[int, ...]) -> float:
        total = 0.0
        for cell in cells(w):
            if admitted(w, vals, cell):
                p = w.p(dict(zip(names, cell, strict=True)), period)
                total += p - c * (1 - p)
        return total

    return max(candidates(w), key=lambda v: (round(value(v), 12), v))


def tied(w: World) -> bool:
    """Whether every threshold value has the same expected utility (noise at break-even)."""
    c = w.failure_cost
    names = list(w.attrs)
    return all(abs(w.p(dict(zip(names, cell, strict=True)), 0) * (1 + c) - c) < 1e-12
               for cell in cells(w))


# -- one run ----------------------------------------------------------------------------


def tightens(w: World, name: str, old: Any, new: Any) -> str:
    """``tighten`` (admits less) or ``loosen``, whatever the threshold's limit."""
    th = next(t for t in w.thresholds if t.name == name)
    return "tighten" if (new < old) == (th.limit == "max") else "loosen"


class SimClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def offered(w: World, seed: int, days: int) -> list[list[tuple[tuple[int, ...], float]]]:
    """Per day: the offered operations as (attribute values, uniform draw)."""
    r = random.Random(f"{w.name}/{seed}")
    bounds = list(w.attrs.values())
    return [[(tuple(r.randint(lo, hi) for lo, hi in bounds), r.random())
             for _ in range(w.ops_per_day)] for _ in range(days)]


async def run_learnkit(
    w: World, seed: int, days: int, workdir: Path, via: str = "track"
) -> dict[str, Any]:
    import learnkit
    from learnkit import track

    cfg = workdir / "learnkit.toml"
    cfg.write_text(config_text(w))
    names = list(w.attrs)
    change = days // 2
    stream = offered(w, seed, days)
    clock = SimClock(START)
    # [period][success, failure, refused, explored]
    tally = [[0, 0, 0, 0], [0, 0, 0, 0]]
    daily: list[tuple[int, ...]] = []
    moves: list[tuple[int, str, Any, Any, str]] = []
    async with learnkit.open(cfg, clock=clock, random=random.Random(f"kit/{w.name}/{seed}"),
                             learning_loop=False) as kit:
        number = 0
        for day, ops in enumerate(stream):
            period = 1 if (w.p_after is not None and day >= change) else 0
            t = tally[period]
            for i, (cell, u) in enumerate(ops):
                number += 1
                clock.now = START + day * DAY + (i + 0.5) * DAY / len(ops)
                a = dict(zip(names, cell, strict=True))
                adm = kit.admit(OP, **a)
                if not adm:
                    t[2] += 1
                    continue
                t[3] += bool(adm.explored)
                ok = u < w.p(a, period)
                msg = f"{1 + number % 9} unit tests failed"
                if via == "record":
                    kit.record(OP, outcome="success" if ok else "failure", key=f"issue-{number}",
                               started_at=clock.now, ended_at=clock.now + 5.0, context=a,
                               error_type=None if ok else "TestFailure",
                               error_message=None if ok else msg)
                else:
                    with track(OP, key=f"issue-{number}", **a) as op:
                        clock.now += 5.0
                        if not ok:
                            op.fail("TestFailure", msg)
                t[0 if ok else 1] += 1
            clock.now = START + (day + 1) * DAY
            await kit.flush()
            report = await kit.learn_once()
            for ch in report.applied:
                ev = ch.evidence[0] if ch.evidence else {}
                rate = ev.get("failure_rate_in")
                moves.append((day, ch.name, ch.old_value, ch.new_value,
                              tightens(w, ch.name, ch.old_value, ch.new_value),
                              None if rate is None else 1 - rate, ev.get("support")))
            for v in report.verdicts:
                if v.rolled_back:
                    c = v.change
                    why = "overall" if "utility per offered operation" in v.reason else "band"
                    moves.append((day, c.name, c.new_value, c.old_value, "rollback", why,
                                  tightens(w, c.name, c.old_value, c.new_value)))
            daily.append(tuple(kit.thresholds[th.name] for th in w.thresholds))
    return {"tally": tally, "daily": daily, "moves": moves}


def period_of(w: World, day: int, days: int) -> int:
    """1 from the middle day on in a world that changes, else 0."""
    return 1 if (w.p_after is not None and day >= days // 2) else 0


Counts = dict[tuple[int, tuple[int, ...]], list[int]]


def fixed_counts(w: World, seed: int, days: int) -> Counts:
    """(day, cell) -> [successes, failures] if every offered operation were attempted."""
    names = list(w.attrs)
    out: Counts = {}
    for day, ops in enumerate(offered(w, seed, days)):
        period = period_of(w, day, days)
        for cell, u in ops:
            ok = u < w.p(dict(zip(names, cell, strict=True)), period)
            out.setdefault((day, cell), [0, 0])[0 if ok else 1] += 1
    return out


def one(name: str, seed: int, days: int, via: str = "track") -> dict[str, Any]:
    # learnkit logs its rollbacks as warnings; the benchmark counts them instead.
    logging.getLogger("learnkit").addHandler(logging.NullHandler())
    logging.getLogger("learnkit").propagate = False
    w = WORLDS[name]
    with tempfile.TemporaryDirectory(prefix="learnbench-") as d:
        lk = asyncio.run(run_learnkit(w, seed, days, Path(d), via))
    lk["fixed"] = fixed_counts(w, seed, days)
    lk["seed"] = seed
    return lk


# -- measures ---------------------------------------------------------------------------


@dataclass
class Measure:
    s: int = 0
    f: int = 0
    refused: int = 0

    def add(self, s: int, f: int, refused: int) -> None:
        self.s += s
        self.f += f
        self.refused += refused

    def utility(self, c: float) -> float:
        n = self.s + self.f + self.refused
        return (self.s - c * self.f) / n if n else 0.0

    @property
    def coverage(self) -> float:
        n = self.s + self.f + self.refused
        return (self.s + self.f) / n if n else 0.0

    @property
    def success(self) -> float:
        return self.s / (self.s + self.f) if self.s + self.f else float("nan")


def policy(w: World, counts: Counts, admit: Callable[[int, tuple[int, ...]], bool],
           days: int, period: int | None = None) -> Measure:
    """A policy's outcomes on the offered operations; ``admit(day, cell)``."""
    m = Measure()
    for (day, cell), (s, f) in counts.items():
        if period is not None and period_of(w, day, days) != period:
            continue
        if admit(day, cell):
            m.add(s, f, 0)
        else:
            m.add(0, 0, s + f)
    return m


def fixed(w: World, values: tuple[int, ...]) -> Callable[[int, tuple[int, ...]], bool]:
    return lambda day, cell: admitted(w, values, cell)


def oracle_admit(w: World, days: int) -> Callable[[int, tuple[int, ...]], bool]:
    names = list(w.attrs)
    be = w.breakeven

    def admit(day: int, cell: tuple[int, ...]) -> bool:
        return w.p(dict(zip(names, cell, strict=True)), period_of(w, day, days)) > be

    return admit


def path_admit(w: World, daily: list[tuple[int, ...]]) -> Callable[[int, tuple[int, ...]], bool]:
    """learnkit's thresholds day by day (as learn_once left them), without exploring."""
    initial = tuple(th.value for th in w.thresholds)

    def admit(day: int, cell: tuple[int, ...]) -> bool:
        return admitted(w, initial if day == 0 else daily[day - 1], cell)

    return admit


def fmt_vals(v: tuple[Any, ...]) -> str:
    return "/".join(str(x) for x in v)


def spread(xs: list[float]) -> str:
    return f"{statistics.mean(xs):+.3f} ({min(xs):+.3f} .. {max(xs):+.3f})"


def pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1%}"


def report(w: World, runs: list[dict[str, Any]], days: int) -> dict[str, Any]:
    c = w.failure_cost
    change = days // 2
    initial = tuple(th.value for th in w.thresholds)
    cands = candidates(w)
    # Best fixed in hindsight: highest mean utility over the seeds.
    per_cand = {v: [policy(w, r["fixed"], fixed(w, v), days).utility(c) for r in runs]
                for v in cands}
    best = max(cands, key=lambda v: (statistics.mean(per_cand[v]), v))
    path = "learnkit's thresholds, no exploring"
    rows: dict[str, list[Measure]] = {"learnkit": [], path: [], "no learning": [],
                                      "best fixed": [], "oracle": []}
    after: dict[str, list[Measure]] = {k: [] for k in rows}
    for r in runs:
        lk = Measure()
        for t in r["tally"]:
            lk.add(t[0], t[1], t[2])
        rows["learnkit"].append(lk)
        admits = {path: path_admit(w, r["daily"]), "no learning": fixed(w, initial),
                  "best fixed": fixed(w, best), "oracle": oracle_admit(w, days)}
        for k, admit in admits.items():
            rows[k].append(policy(w, r["fixed"], admit, days))
        if w.p_after is not None:
            t = r["tally"][1]
            after["learnkit"].append(Measure(t[0], t[1], t[2]))
            for k, admit in admits.items():
                after[k].append(policy(w, r["fixed"], admit, days, 1))

    print(f"\n### {w.name}: {w.title}\n")
    print(f"Truth: {w.truth}. {len(runs)} seeds x {days} days x {w.ops_per_day} ops/day.")
    if w.p_after is None and tied(w):
        opt_txt = "every threshold has the same expected utility"
    else:
        opt_txt = f"best threshold by the true rates: {fmt_vals(expected_best(w, 0))}"
    if w.p_after is not None:
        opt_txt += f" before day {change}, {fmt_vals(expected_best(w, 1))} from day {change}"
    names = "/".join(th.name for th in w.thresholds)
    print(f"{names} starts at {fmt_vals(initial)}; {opt_txt}.\n")
    print("| policy | utility / offered, mean (min .. max) | coverage | success rate | "
          f"{names} |")
    print("|---|---|---|---|---|")
    ends: dict[tuple[Any, ...], int] = {}
    for r in runs:
        ends[r["daily"][-1]] = ends.get(r["daily"][-1], 0) + 1
    end_txt = "end: " + ", ".join(f"{fmt_vals(k)} ({n})" for k, n in
                                  sorted(ends.items(), key=lambda kv: -kv[1]))
    labels = {"learnkit": end_txt, path: "learnkit's, day by day",
              "no learning": fmt_vals(initial), "best fixed": fmt_vals(best),
              "oracle": "knows the true rates"}
    for k, ms in rows.items():
        print(f"| {k} | {spread([m.utility(c) for m in ms])} | "
              f"{statistics.mean(m.coverage for m in ms):.1%} | "
              f"{pct(statistics.mean(m.success for m in ms))} | {labels[k]} |")
    if w.p_after is not None:
        print(f"\nFrom day {change} on (after the change), utility / offered: "
              + "; ".join(f"{k} {statistics.mean(m.utility(c) for m in ms):+.3f}"
                          for k, ms in after.items()) + ".")

    u_lk = [m.utility(c) for m in rows["learnkit"]]
    u_nl = [m.utility(c) for m in rows["no learning"]]
    u_bf = [m.utility(c) for m in rows["best fixed"]]
    gain = statistics.mean(u_bf) - statistics.mean(u_nl)
    shares = [(a - b) / (g - b) for a, b, g in zip(u_lk, u_nl, u_bf, strict=True) if g - b > 0]
    below = sum(a < b for a, b in zip(u_lk, u_nl, strict=True))
    out: dict[str, Any] = {"world": w.name, "below": below, "n": len(runs),
                           "vs_nl": statistics.mean(u_lk) - statistics.mean(u_nl)}
    lines = []
    if best == initial or gain < 0.005:
        lines.append(f"Best fixed gains {gain:+.3f} over no learning: no gain to capture "
                     f"(learnkit vs no learning: {out['vs_nl']:+.3f}).")
        out["share"] = None
    else:
        out["share"] = (statistics.mean(shares), min(shares)) if shares else None
        ratio = (statistics.mean(u_lk) - statistics.mean(u_nl)) / gain
        lines.append(f"Share of the best fixed threshold's gain over no learning captured by "
                     f"learnkit: mean {statistics.mean(shares):.0%} over seeds (ratio of means "
                     f"{ratio:.0%}), worst seed {min(shares):.0%}.")
    lines.append(f"learnkit below no learning in {below} of {len(runs)} seeds "
                 f"(mean difference {out['vs_nl']:+.3f}).")
    u_path = statistics.mean(m.utility(c) for m in rows[path])
    lines.append(
        f"Where learnkit's utility goes, against the best fixed threshold "
        f"({statistics.mean(u_lk) - statistics.mean(u_bf):+.3f}): its thresholds day by day, "
        f"without exploring, {u_path - statistics.mean(u_bf):+.3f}; exploring "
        f"{statistics.mean(u_lk) - u_path:+.3f}.")
    # Moves, and whether each went toward the best value for the world at that time.
    kinds = {"tighten": 0, "loosen": 0, "rollback": 0}
    wrong = {"tighten": 0, "loosen": 0, "rollback": 0}
    loosen_below = 0
    rb_why = {"overall": 0, "band": 0}
    rb_undid = {"tighten": 0, "loosen": 0}
    targets = [expected_best(w, 0), expected_best(w, 1) if w.p_after else expected_best(w, 0)]
    idx = {th.name: i for i, th in enumerate(w.thresholds)}
    noise = w.p_after is None and tied(w)  # no direction is better: "away" means nothing
    for r in runs:
        for day, name, old, new, kind, x, y in r["moves"]:
            kinds[kind] += 1
            # learn_once after day `day` has seen changed outcomes from day `change` on.
            target = targets[1 if (w.p_after is not None and day >= change) else 0][idx[name]]
            if not noise and abs(new - target) > abs(old - target):
                wrong[kind] += 1
            if kind == "loosen" and x is not None and x < w.breakeven:
                loosen_below += 1
            if kind == "rollback":
                rb_why[x] += 1
                rb_undid[y] += 1
    n = len(runs)
    total = sum(kinds.values())
    lines.append(
        f"Threshold moves: {total} in {n} seeds ({total / n:.1f} per seed): "
        f"{kinds['tighten']} tightenings ({wrong['tighten']} away from the best value for the "
        f"world at the time), {kinds['loosen']} loosenings ({wrong['loosen']} away; "
        f"{loosen_below} made while the explored band's success rate was below break-even "
        f"{w.breakeven:.0%}), {kinds['rollback']} rollbacks ({wrong['rollback']} away; "
        f"{rb_undid['tighten']} undid a tightening, {rb_undid['loosen']} a loosening; "
        f"{rb_why['overall']} on overall utility, {rb_why['band']} on the band's own "
        "outcomes). Tighten = admit less (lower a max, raise a min).")
    out["moves"] = total
    out["explored"] = sum(r["tally"][0][3] + r["tally"][1][3] for r in runs) / n
    lines.append(f"Explored operations per seed: {out['explored']:.0f}.")
    if w.p_after is None and not noise:
        target_v = expected_best(w, 0)
        if target_v != initial:
            first_at = []
            for r in runs:
                hit = [d for d, v in enumerate(r["daily"]) if v == target_v]
                first_at.append(hit[0] + 1 if hit else None)
            got_at = [d for d in first_at if d is not None]
            lines.append(
                f"Days until the thresholds first reached {fmt_vals(target_v)}: "
                + (f"median {statistics.median(got_at):.0f} ({min(got_at)} .. {max(got_at)}) "
                   f"in {len(got_at)} of {n} seeds" if got_at else f"never in {n} seeds")
                + f"; days at {fmt_vals(target_v)} out of {days}: "
                f"{statistics.mean(sum(v == target_v for v in r['daily']) for r in runs):.0f} "
                "on average.")
    if w.p_after is not None and len(w.thresholds) == 1:
        # Days of changed outcomes seen until the threshold reaches the new best value.
        target = expected_best(w, 1)[0]
        up = target > expected_best(w, 0)[0]
        word, verb = ("up", "raise") if up else ("down", "tightening")
        reach: list[int | None] = []
        first: list[int | None] = []
        for r in runs:
            hit = [d for d in range(change - 1, days)
                   if (r["daily"][d][0] >= target if up else r["daily"][d][0] <= target)]
            reach.append(hit[0] - (change - 1) if hit else None)
            fm = [m[0] for m in r["moves"] if m[0] >= change - 1 and (m[3] > m[2]) == up]
            first.append(fm[0] - (change - 1) if fm else None)
        got = [b for b in reach if b is not None]
        within = sum(b <= 7 for b in got)
        already = sum(b == 0 for b in got)
        lines.append(
            f"{word.capitalize()} to {target} after the change (days of changed outcomes seen; "
            f"0 = already there on day {change}): within 7 days in {within} of {n} seeds "
            f"({already} already there); "
            + (f"median {statistics.median(got):.0f} days among the {len(got)} that got there; "
               if got else "") + f"never (in {days - change} days) in {n - len(got)}. "
            f"Days to the first {verb} after the change, per seed: "
            + ", ".join("never" if x is None else str(x) for x in first) + ".")
        out["reach"] = (word, target, within, n)
    for line in lines:
        print(f"\n{line}")
    return out


def warm_up() -> None:
    """Import learnkit's analysis dependencies once, before the worker processes fork.

    Imported in each worker instead, scipy.stats takes seconds per process.
    """
    import scipy.stats  # noqa: F401

    import learnkit  # noqa: F401


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds first-seed .. first-seed + seeds - 1 (check on seeds not "
                         "developed on, e.g. --first-seed 1000)")
    ap.add_argument("--days", type=int, default=56)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--worlds", default=",".join(WORLDS),
                    help=f"comma-separated, from: {', '.join(WORLDS)}")
    ap.add_argument("--via", choices=("track", "record"), default="track",
                    help="how admitted work is recorded: learnkit.track (default), or "
                    "kit.record with explicit times, which does not carry the exploration mark "
                    "of kit.admit (so explored work counts as ordinary work)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 seeds, 12 days, every world")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.days = 2, 12
    names = [n.strip() for n in args.worlds.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORLDS]
    if unknown:
        ap.error(f"unknown world(s): {', '.join(unknown)}")
    warm_up()
    t0 = time.perf_counter()
    tasks = [(n, s) for n in names
             for s in range(args.first_seed, args.first_seed + args.seeds)]
    # Slow worlds first, so the pool stays busy to the end.
    tasks.sort(key=lambda t: -WORLDS[t[0]].ops_per_day)
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(one, n, s, args.days, args.via): n for n, s in tasks}
        for fut, n in futures.items():
            results[n].append(fut.result())
    print(f"# bench_learning: {args.seeds} seeds from {args.first_seed}, {args.days} days, "
          f"change on day {args.days // 2}, admitted work recorded with "
          f"{'kit.record' if args.via == 'record' else 'learnkit.track'} "
          f"({time.perf_counter() - t0:.0f} s on {args.jobs} processes)")
    print("\nPolicies: learnkit (kit.admit + daily kit.learn_once), no learning (initial "
          "threshold fixed), best fixed (one value per world, best mean utility in hindsight), "
          "oracle (attempts exactly what has positive expected utility under the true rates). "
          "Utility per offered operation: +1 success, -failure_cost failure, 0 refused.")
    summary = [report(WORLDS[n], sorted(results[n], key=lambda r: r["seed"]), args.days)
               for n in names]
    print("\n### Goals (issue 10)\n")
    print("| world | best-fixed gain captured, mean / worst seed (goal >= 90%) | "
          "seeds below no learning (goal 0) | other goal |")
    print("|---|---|---|---|")
    for s in summary:
        share = ("n/a (no gain)" if s["share"] is None
                 else f"{s['share'][0]:.0%} / {s['share'][1]:.0%}")
        other = ""
        if s["world"] == "noise":
            other = f"threshold moves: {s['moves']} (goal 0)"
        elif "reach" in s:
            word, target, within, n = s["reach"]
            other = f"{word} to {target} within 7 days of the change: {within} of {n} seeds"
            if word == "up":
                other += " (goal all)"
        print(f"| {s['world']} | {share} | {s['below']} of {s['n']} | {other} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
