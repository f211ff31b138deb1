"""``learnkit gate``: fail a CI job when things got worse.

Compares a *recent* set of operations with a *baseline*: by time (the last
``--recent`` against the ``--baseline`` just before it), or by release (the
operations whose ``release`` context attribute is ``--release`` against
those of ``--against``). Two checks:

- **Success rate dropped.** With uniform Beta(1, 1) priors, the posterior
  probability that the baseline's success rate exceeds the recent one by
  more than ``--margin`` (absolute) is computed exactly (numerical
  integration of the two Beta posteriors); the gate fails when it is at
  least ``--confidence``.
- **A new error cluster.** Failures grouped as the insights group them
  (error type plus mined message template, over both sets at once); the
  gate fails when a cluster has at least ``--new-cluster-size`` failures in
  the recent set and none in the baseline.

Exit codes: 0 pass, 1 regression, 2 usage or configuration error, 3 not
enough data (either set has fewer than ``--min-samples`` outcomes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from typing import IO, TYPE_CHECKING, Any

import attrs

from ._insights.statistics import prob_greater, wilson_interval
from ._model import DAY

if TYPE_CHECKING:
    from ._config import Config
    from ._storage.protocol import Store

__all__ = ["NO_DATA", "PASS", "REGRESSION", "USAGE", "GateError", "GateOptions",
           "GateResult", "add_arguments", "evaluate", "options", "render", "run_gate"]

PASS, REGRESSION, USAGE, NO_DATA = 0, 1, 2, 3
#: The context attribute that names a release (``LEARNKIT_RELEASE`` sets it).
RELEASE = "release"


class GateError(Exception):
    """A problem that ends the gate with an exit code (2 usage, 3 no data)."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``1d``, ``2w`` or a bare number of days -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhdw]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write e.g. 1d, 12h, 30m, 2w (a bare number is days)")
    v = float(m.group(1)) * _UNITS[m.group(2) or "d"]
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"a duration must be positive, got {text!r}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The gate's options, on its subcommand's parser."""
    p.add_argument("--recent", type=parse_duration, default=None, metavar="DURATION",
                   help="the recent window, e.g. 1d, 12h (default 1d)")
    p.add_argument("--baseline", type=parse_duration, default=None, metavar="DURATION",
                   help="the window just before it (default 14d)")
    p.add_argument("--release", metavar="X",
                   help="judge the operations of release X (context attribute `release`)")
    p.add_argument("--against", metavar="Y", help="... against those of release Y")
    p.add_argument("--days", type=parse_duration, default=None, metavar="DURATION",
                   help="with --release: how far back to look for both (default 90d)")
    p.add_argument("--op-type", metavar="TYPE", help="only this operation type")
    p.add_argument("--margin", type=_fraction, default=0.05,
                   help="smallest drop in success rate that fails the gate (default 0.05)")
    p.add_argument("--confidence", type=_fraction, default=0.95,
                   help="posterior probability the drop must reach (default 0.95)")
    p.add_argument("--new-cluster-size", type=_count, metavar="N",
                   help="failures of a new error cluster that fail the gate "
                        "(default learning.min_samples)")
    p.add_argument("--min-samples", type=_count, metavar="N",
                   help="fewest outcomes in each set, else exit 3 (default learning.min_samples)")
    p.add_argument("--format", choices=("text", "markdown", "json"), default=None,
                   help="text (default), markdown (a CI job summary) or json")
    p.add_argument("--json", action="store_true", help="same as --format json")


@attrs.frozen
class GateOptions:
    """What to compare and how strictly."""

    recent: float = DAY
    baseline: float = 14 * DAY
    release: str | None = None
    against: str | None = None
    days: float = 90 * DAY
    op_type: str | None = None
    margin: float = 0.05
    confidence: float = 0.95
    new_cluster_size: int | None = None
    min_samples: int | None = None
    format: str = "text"


def options(args: argparse.Namespace) -> GateOptions:
    """Check the command line's combination of options."""
    if (args.release is None) != (args.against is None):
        raise GateError("--release X needs --against Y (and the reverse): the release to judge "
                        "and the one to compare it with")
    if args.release is not None and (args.recent or args.baseline):
        raise GateError("compare by release (--release/--against) or by time "
                        "(--recent/--baseline), not both")
    if args.release is None and args.days:
        raise GateError("--days goes with --release; by time, use --recent and --baseline")
    if not 0 < args.confidence < 1:
        raise GateError(f"--confidence must lie strictly between 0 and 1, got {args.confidence}")
    fmt = "json" if args.json else (args.format or "text")
    if args.json and args.format not in (None, "json"):
        raise GateError(f"--json contradicts --format {args.format}")
    return GateOptions(
        recent=args.recent or DAY, baseline=args.baseline or 14 * DAY, release=args.release,
        against=args.against, days=args.days or 90 * DAY, op_type=args.op_type,
        margin=args.margin, confidence=args.confidence,
        new_cluster_size=args.new_cluster_size, min_samples=args.min_samples, format=fmt,
    )


@attrs.frozen
class Side:
    """One of the two sets compared."""

    label: str
    start: float
    end: float
    successes: int
    failures: int

    @property
    def n(self) -> int:
        return self.successes + self.failures

    @property
    def rate(self) -> float | None:
        return self.successes / self.n if self.n else None

    def as_json(self) -> dict[str, Any]:
        low, high = wilson_interval(self.successes, self.n) if self.n else (None, None)
        return {"label": self.label, "start": self.start, "end": self.end,
                "successes": self.successes, "failures": self.failures, "n": self.n,
                "success_rate": self.rate, "interval": [low, high] if self.n else None}


@attrs.frozen
class NewCluster:
    """An error cluster seen in the recent set and never in the baseline."""

    id: str
    error_type: str
    template: str
    count: int
    example: str
    op_types: dict[str, int]


@attrs.frozen
class GateResult:
    """The verdict and everything behind it."""

    #: ``pass``, ``regression`` or ``insufficient``.
    verdict: str
    #: The exit code.
    code: int
    recent: Side
    baseline: Side
    #: Posterior probability that the rate dropped by more than the margin.
    probability: float | None
    #: baseline rate - recent rate (a drop is positive).
    drop: float | None
    rate_regressed: bool
    new_clusters: list[NewCluster]
    #: Why, one sentence each.
    reasons: list[str]
    options: GateOptions


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


async def _counts(store: Store, opts: GateOptions, now: float) -> tuple[
        Side, Side, dict[tuple[str, str, str], list[Any]], dict[tuple[str, str, str], int]]:
    """Both sides' counts, and failures per (op_type, error_type, signature) of each."""
    recent_err: dict[tuple[str, str, str], list[Any]] = {}
    base_err: dict[tuple[str, str, str], int] = {}
    want = opts.op_type

    def keep(t: str) -> bool:
        return want is None or t == want

    if opts.release is not None:
        start, end = now - opts.days, now
        per: dict[str, dict[str, int]] = {}
        raw = await store.context_counts(start, end, RELEASE, opts.op_type)
        for (value, outcome, _), n in raw.items():
            try:
                release = json.loads(value)
            except ValueError:
                continue
            per.setdefault(str(release), {})
            per[str(release)][outcome] = per[str(release)].get(outcome, 0) + n
        ws = await store.window_stats(start, end)
        r, b = per.get(opts.release, {}), per.get(opts.against or "", {})
        recent = Side(f"release {opts.release}", start, end, r.get("success", 0),
                      r.get("failure", 0))
        baseline = Side(f"release {opts.against}", start, end, b.get("success", 0),
                        b.get("failure", 0))
        for (t, et, sig, attr, value), n in ws.error_context.items():
            if attr != RELEASE or not keep(t):
                continue
            try:
                release = str(json.loads(value))
            except ValueError:
                continue
            if release == opts.release:
                e = recent_err.setdefault((t, et, sig), [0, ws.errors.get((t, et, sig),
                                                                          [0, 0, 0, ""])[3]])
                e[0] += n
            elif release == opts.against:
                base_err[(t, et, sig)] = base_err.get((t, et, sig), 0) + n
        return recent, baseline, recent_err, base_err

    r_start, r_end = now - opts.recent, now
    b_start, b_end = r_start - opts.baseline, r_start
    sides = []
    for label, start, end in (("recent", r_start, r_end), ("baseline", b_start, b_end)):
        counts = await store.outcome_counts(start, end, op_type=opts.op_type)
        c = {o: n for (_, o), n in counts.items()}
        sides.append(Side(label, start, end, c.get("success", 0), c.get("failure", 0)))
    ws_r = await store.window_stats(r_start, r_end, context=False)
    ws_b = await store.window_stats(b_start, b_end, context=False)
    for (t, et, sig), (n, _first, _last, example) in ws_r.errors.items():
        if keep(t):
            recent_err[(t, et, sig)] = [n, example]
    for (t, et, sig), (n, *_rest) in ws_b.errors.items():
        if keep(t):
            base_err[(t, et, sig)] = base_err.get((t, et, sig), 0) + n
    return sides[0], sides[1], recent_err, base_err


def _new_clusters(
    recent: dict[tuple[str, str, str], list[Any]], base: dict[tuple[str, str, str], int],
    size: int,
) -> list[NewCluster]:
    """Clusters (error type + template, mined over both sets) with >= size failures recent
    and none in the baseline."""
    from ._insights.clustering import cluster_messages

    sigs: dict[str, set[str]] = {}
    for (_, et, sig) in list(recent) + list(base):
        sigs.setdefault(et, set()).add(sig)
    template: dict[tuple[str, str], str] = {}
    for et, ss in sigs.items():
        ordered = sorted(ss)
        for sig, tpl in zip(ordered, cluster_messages(ordered), strict=True):
            template[(et, sig)] = tpl
    seen_before = {(et, template[(et, sig)]) for (_, et, sig), n in base.items() if n > 0}
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for (t, et, sig), (n, example) in recent.items():
        key = (et, template[(et, sig)])
        if key in seen_before:
            continue
        c = acc.setdefault(key, {"n": 0, "example": example, "types": {}})
        c["n"] += n
        c["types"][t] = c["types"].get(t, 0) + n
    out = [NewCluster(hashlib.sha1(f"{et}\x00{tpl}".encode()).hexdigest()[:8], et, tpl,
                      c["n"], str(c["example"] or ""), dict(c["types"]))
           for (et, tpl), c in acc.items() if c["n"] >= size]
    return sorted(out, key=lambda c: -c.count)


async def evaluate(store: Store, config: Config, now: float, opts: GateOptions) -> GateResult:
    """Compare the two sets; the verdict and its reasons."""
    recent, baseline, r_err, b_err = await _counts(store, opts, now)
    lc = config.learning
    min_n = opts.min_samples or lc.min_samples
    size = opts.new_cluster_size or lc.min_samples
    reasons: list[str] = []
    if recent.n < min_n or baseline.n < min_n:
        for side in (recent, baseline):
            if side.n < min_n:
                reasons.append(f"{side.label} has {side.n} outcome(s); the gate needs at least "
                               f"{min_n} (--min-samples) in each set")
        return GateResult("insufficient", NO_DATA, recent, baseline, None, None, False, [],
                          reasons, opts)
    # X = baseline rate, Y = recent rate; P(X - Y > margin) under Beta(1 + s, 1 + f) posteriors.
    prob = float(prob_greater(baseline.successes + 1, baseline.failures + 1,
                              recent.successes + 1, recent.failures + 1, opts.margin)[0])
    drop = (baseline.rate or 0.0) - (recent.rate or 0.0)
    rate_regressed = prob >= opts.confidence
    if rate_regressed:
        reasons.append(
            f"success rate dropped from {_pct(baseline.rate)} ({baseline.label}) to "
            f"{_pct(recent.rate)} ({recent.label}); P(drop > {opts.margin:g}) = {prob:.3f} "
            f">= {opts.confidence:g}")
    new = _new_clusters(r_err, b_err, size)
    for c in new:
        reasons.append(f"new error cluster {c.error_type}: `{c.template}` with {c.count} "
                       f"failure(s) in {recent.label}, none in {baseline.label}")
    if rate_regressed or new:
        return GateResult("regression", REGRESSION, recent, baseline, prob, drop,
                          rate_regressed, new, reasons, opts)
    reasons.append(
        f"no drop of more than {opts.margin:g} at confidence {opts.confidence:g} "
        f"(P = {prob:.3f}) and no new error cluster of {size}+ failures")
    return GateResult("pass", PASS, recent, baseline, prob, drop, False, [], reasons, opts)


def to_json(r: GateResult) -> dict[str, Any]:
    """The ``--json`` form (``version`` 1)."""
    def clean(v: float | None) -> float | None:
        return v if v is None or math.isfinite(v) else None

    o = r.options
    return {
        "version": 1,
        "verdict": r.verdict,
        "exit_code": r.code,
        "mode": "release" if o.release is not None else "time",
        "recent": r.recent.as_json(),
        "baseline": r.baseline.as_json(),
        "drop": clean(r.drop),
        "probability": clean(r.probability),
        "margin": o.margin,
        "confidence": o.confidence,
        "rate_regressed": r.rate_regressed,
        "new_clusters": [attrs.asdict(c) for c in r.new_clusters],
        "reasons": r.reasons,
        "test": "P(baseline rate - recent rate > margin), Beta(1+s, 1+f) posteriors",
    }


def render(r: GateResult, fmt: str) -> str:
    """The report: ``text``, ``markdown`` or ``json``."""
    if fmt == "json":
        return json.dumps(to_json(r), indent=2) + "\n"
    head = {"pass": "PASS", "regression": "FAIL: regression",
            "insufficient": "NOT ENOUGH DATA"}[r.verdict]
    rows = [(s.label, s.n, _pct(s.rate)) for s in (r.recent, r.baseline)]
    if fmt == "markdown":
        icon = {"pass": "✅", "regression": "❌", "insufficient": "⚠️"}[r.verdict]
        lines = [f"## {icon} learnkit gate: {head}", "",
                 "| set | outcomes | success rate |", "|---|---:|---:|"]
        lines += [f"| {label} | {n:,} | {rate} |" for label, n, rate in rows]
        lines.append("")
        lines += [f"- {reason}" for reason in r.reasons]
        if r.new_clusters:
            lines += ["", "### New error clusters", "", "| error | template | failures | "
                      "example |", "|---|---|---:|---|"]
            lines += [f"| `{c.error_type}` | `{c.template}` | {c.count} | "
                      f"{c.example.replace('|', '/')[:120]} |" for c in r.new_clusters]
        lines += ["", f"_Test: posterior P(drop > {r.options.margin:g}) with Beta(1+s, 1+f) "
                  f"priors, fails at >= {r.options.confidence:g}; exit code {r.code}._", ""]
        return "\n".join(lines)
    lines = [f"learnkit gate: {head}"]
    lines += [f"  {label:<20} {n:>8,} outcomes  success {rate}" for label, n, rate in rows]
    lines += [f"  - {reason}" for reason in r.reasons]
    for c in r.new_clusters:
        lines.append(f"    example: {c.example[:200]}")
    return "\n".join(lines) + "\n"


async def run_gate(opts: GateOptions, store: Store, config: Config, now: float,
                   out: IO[str]) -> int:
    """Evaluate, print the report, return the exit code."""
    result = await evaluate(store, config, now, opts)
    out.write(render(result, opts.format))
    return result.code
