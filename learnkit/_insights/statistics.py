"""The statistics behind analytics and insights. numpy and scipy are imported here only,
and lazily: ``wilson_interval`` runs on every path without them.

Every function is vectorised over candidates, so a scan of thousands of
hypotheses is a handful of array operations.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Array = NDArray[np.float64]

__all__ = [
    "Z95",
    "benjamini_hochberg",
    "best_interval",
    "beta_cdf",
    "binomial_sf",
    "fisher_greater",
    "mantel_haenszel",
    "max_cut",
    "normal_cdf",
    "prob_greater",
    "prob_above",
    "prob_above_ordered",
    "sequential_evidence",
    "wilson_interval",
]

#: Alternatives of the mixture in :func:`sequential_evidence`: how far from
#: break-even towards 0 (below) or 1 (above), as shares of that distance.
MIXTURE = (0.1, 0.2, 0.35, 0.5, 0.7)

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and behaves at
    0 and n. Returns ``(nan, nan)`` for ``n == 0``.
    """
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))



def prob_greater(
    a1: Any, b1: Any, a2: Any, b2: Any, margin: float = 0.0, ratio: float | None = None
) -> Array:
    """P(X - Y > margin) for X ~ Beta(a1, b1), Y ~ Beta(a2, b2), elementwise.

    With ``ratio``: P(X - Y > margin *or* X / Y > ratio), i.e. X above
    ``Y + min(margin, (ratio - 1) * Y)``: a difference counts when it is
    large in absolute terms or in relative terms (a risk ratio), so a rate of
    5% against 1% is an effect although it is only 4 points.

    Integrates ``f_Y(y) * P(X > y + margin(y))`` on a grid spanning Y's mass;
    when both distributions are concentrated (a + b > 2000) the normal
    approximation is used (with the margin at Y's mean), which is then
    accurate to well under 0.001.
    """
    import numpy as np
    from scipy import special

    # scipy.special rather than scipy.stats: the same functions without the
    # distribution objects' argument checks, which cost most of the time in a
    # scan's hundreds of calls.
    a1, b1, a2, b2 = (np.atleast_1d(np.asarray(x, dtype=float)) for x in (a1, b1, a2, b2))
    a1, b1, a2, b2 = np.broadcast_arrays(a1, b1, a2, b2)
    out = np.empty(a1.shape, dtype=float)
    big = (a1 + b1 > 2000) & (a2 + b2 > 2000)
    if big.any():
        m1 = a1[big] / (a1[big] + b1[big])
        m2 = a2[big] / (a2[big] + b2[big])
        v1 = m1 * (1 - m1) / (a1[big] + b1[big] + 1)
        v2 = m2 * (1 - m2) / (a2[big] + b2[big] + 1)
        mg = margin if ratio is None else np.minimum(margin, (ratio - 1) * m2)
        out[big] = special.ndtr(-(mg - (m1 - m2)) / np.sqrt(v1 + v2))
    small = ~big
    if small.any():
        A1, B1, A2, B2 = (x[small][:, None] for x in (a1, b1, a2, b2))
        lo = special.betaincinv(A2, B2, 1e-7)
        hi = special.betaincinv(A2, B2, 1 - 1e-7)
        t = (np.arange(400) + 0.5) / 400
        y = lo + (hi - lo) * t[None, :]
        pdf = np.exp(special.xlogy(A2 - 1, y) + special.xlog1py(B2 - 1, -y)
                     - special.betaln(A2, B2))
        w = pdf * (hi - lo) / 400
        mg = margin if ratio is None else np.minimum(margin, (ratio - 1) * y)
        sf = special.betaincc(A1, B1, np.clip(y + mg, 0, 1))
        out[small] = np.clip((w * sf).sum(1), 0, 1)
    return out


def fisher_greater(a: Any, n_in: Any, failures: Any, total: Any) -> Array:
    """One-sided Fisher exact p-value that the group has *more* failures.

    ``a`` failures among ``n_in`` operations in the group, ``failures``
    among ``total`` overall: P(A >= a) under the hypergeometric null.
    """
    import numpy as np
    from scipy import stats

    a = np.asarray(a)
    return np.asarray(stats.hypergeom.sf(a - 1, total, failures, n_in), dtype=float)


def _lausen94(b: float, sizes: Any, total: int) -> float:
    """Two-sided p-value of a maximally selected standardised statistic.

    Improved Bonferroni bound of Lausen, Sauerbrei & Schumacher (1994) for
    the maximum over ordered cut points with ``sizes`` operations at or below
    each cut: 2(1 - Phi(b)) plus, for each pair of neighbouring cuts, the
    chance of crossing b between them (from their correlation).
    """
    import numpy as np
    from scipy import stats

    m = np.asarray(sizes, dtype=float)
    base = 2 * stats.norm.sf(b)
    if len(m) < 2:
        return float(min(1.0, base))
    m1, m2 = m[:-1], m[1:]
    t = np.sqrt(np.clip(1 - m1 * (total - m2) / ((total - m1) * m2), 0, 1))
    d = np.sum(np.exp(-b * b / 2) / math.pi * (t - (b * b / 4 - 1) * t**3 / 6))
    bonferroni = base * len(m)
    return float(min(1.0, base + max(0.0, d), bonferroni))


def max_cut(
    fail: Any, ok: Any, min_side: int
) -> tuple[int, float, float] | None:
    """The best cut of ordered groups into "at or below" and "above".

    ``fail`` and ``ok`` count failures and successes per ordered group
    (values of a numeric attribute, days). Cuts leaving fewer than
    ``min_side`` operations on either side are not considered. Returns
    ``(index, z, p)``: the cut after group ``index``, its standardised
    statistic (positive: more failures above the cut) and the p-value
    corrected for having picked the best cut; None when no cut is allowed.
    """
    import numpy as np

    fail = np.asarray(fail, dtype=float)
    ok = np.asarray(ok, dtype=float)
    n = fail + ok
    total = n.sum()
    f_total = fail.sum()
    if total < 2 or f_total in (0, total):
        return None
    cum_n = np.cumsum(n)[:-1]
    cum_f = np.cumsum(fail)[:-1]
    allowed = (cum_n >= min_side) & (total - cum_n >= min_side)
    if not allowed.any():
        return None
    idx = np.nonzero(allowed)[0]
    m, f = cum_n[idx], cum_f[idx]
    expected = m * f_total / total
    var = m * (total - m) * f_total * (total - f_total) / (total * total * (total - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, (expected - f) / np.sqrt(var), 0.0)  # > 0: above is worse
    best = int(np.argmax(np.abs(z)))
    zb = float(z[best])
    p = _lausen94(abs(zb), np.unique(m), int(total))
    return int(idx[best]), zb, p


def best_interval(
    fail: Any, ok: Any, min_side: int, max_groups: int = 200
) -> tuple[int, int, float, float] | None:
    """The interior run of ordered groups that fails most: a *band*.

    Among runs ``[i, j]`` that leave at least one group on each side (a run
    touching an end is a cut, see :func:`max_cut`) and at least ``min_side``
    operations inside and outside, the one with the largest standardised
    excess of failures. Returns ``(i, j, z, p)`` with ``p`` one-sided and
    Bonferroni-corrected for the number of runs looked at (conservative: the
    runs overlap); None when no run is allowed or there are more than
    ``max_groups`` groups.
    """
    import numpy as np
    from scipy import stats

    fail = np.asarray(fail, dtype=float)
    ok = np.asarray(ok, dtype=float)
    g = len(fail)
    if g < 3 or g > max_groups:
        return None
    n = fail + ok
    total, f_total = n.sum(), fail.sum()
    if total < 2 or f_total in (0, total):
        return None
    cn = np.concatenate([[0.0], np.cumsum(n)])
    cf = np.concatenate([[0.0], np.cumsum(fail)])
    i, j = np.triu_indices(g)
    interior = (i > 0) & (j < g - 1)
    i, j = i[interior], j[interior]
    m = cn[j + 1] - cn[i]
    f = cf[j + 1] - cf[i]
    allowed = (m >= min_side) & (total - m >= min_side)
    if not allowed.any():
        return None
    i, j, m, f = i[allowed], j[allowed], m[allowed], f[allowed]
    expected = m * f_total / total
    var = m * (total - m) * f_total * (total - f_total) / (total * total * (total - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, (f - expected) / np.sqrt(var), 0.0)
    best = int(np.argmax(z))
    zb = float(z[best])
    p = float(min(1.0, stats.norm.sf(zb) * len(z)))
    return int(i[best]), int(j[best]), zb, p


def mantel_haenszel(strata: Any) -> tuple[float, float, int]:
    """Mantel-Haenszel common odds ratio and signed test statistic over strata.

    ``strata``: rows ``(a, n_in, c, n_out)`` (failures and operations with
    and without a condition, in one stratum). Returns ``(odds_ratio, z,
    informative)``: the MH estimate of the odds ratio of failure with the
    condition, holding the stratum fixed; the Cochran-Mantel-Haenszel
    statistic signed (positive: the condition fails more within strata);
    and the number of strata holding both sides. ``z`` is 0 and the ratio
    NaN when no stratum is informative.
    """
    import numpy as np

    t = np.asarray(strata, dtype=float).reshape(-1, 4)
    a, n1, c, n0 = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
    n = n1 + n0
    m1 = a + c
    use = (n1 > 0) & (n0 > 0) & (n > 1)
    if not use.any():
        return math.nan, 0.0, 0
    a, n1, c, n0, n, m1 = a[use], n1[use], c[use], n0[use], n[use], m1[use]
    b, d = n1 - a, n0 - c
    num = float(np.sum(a * d / n))
    den = float(np.sum(b * c / n))
    ratio = num / den if den > 0 else (math.inf if num > 0 else math.nan)
    expected = n1 * m1 / n
    var = n1 * n0 * m1 * (n - m1) / (n * n * (n - 1))
    v = float(var.sum())
    z = float((a - expected).sum() / math.sqrt(v)) if v > 0 else 0.0
    return ratio, z, int(use.sum())


def benjamini_hochberg(p: Any) -> Array:
    """Benjamini-Hochberg q-values: the FDR at which each test would pass."""
    import numpy as np

    p = np.asarray(p, dtype=float)
    n = len(p)
    if n == 0:
        return np.zeros(0)
    order = np.argsort(p)
    ranked = p[order] * n / (np.arange(n) + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.clip(q, 0, 1)
    return out


def storey_pi0(p: Any, lam: float = 0.5) -> float:
    """Storey's estimate of the share of true nulls among a scan's p-values.

    Bounded to [0.5, 0.99]: most hypotheses of a scan are null, and a single
    strong effect must still be findable when the estimate reaches 1.
    """
    import numpy as np

    p = np.asarray(p, dtype=float)
    if len(p) == 0:
        return 0.99
    est = float(np.mean(p > lam) / (1 - lam))
    return min(0.99, max(0.5, est))


def prob_effect(
    a: Any, n_in: Any, c: Any, n_out: Any, base: Any, strength: float, k: Any, pi0: float
) -> Array:
    """Posterior probability that the two rates differ at all (spike and slab).

    The spike: one shared rate; the slab: a rate each; both with Beta priors
    of ``strength`` pseudo-observations centred on ``base``. The Bayes factor
    of the two Beta-binomial marginal likelihoods is exact. Prior odds of an
    effect are ``(1 - pi0) / (pi0 * k)``: a best cut chosen among ``k``
    candidates shares the alternative's prior mass among them.
    """
    import numpy as np
    from scipy.special import betaln

    a, n_in, c, n_out, base, k = (
        np.asarray(x, dtype=float) for x in (a, n_in, c, n_out, base, k)
    )
    a0 = strength * base
    b0 = strength * (1 - base)
    log_bf = (
        betaln(a0 + a, b0 + n_in - a)
        + betaln(a0 + c, b0 + n_out - c)
        - betaln(a0, b0)
        - betaln(a0 + a + c, b0 + n_in + n_out - a - c)
    )
    log_odds = np.log((1 - pi0) / (pi0 * np.maximum(k, 1))) + log_bf
    return np.atleast_1d(np.asarray(1 / (1 + np.exp(-np.clip(log_odds, -700, 700))), dtype=float))


def beta_cdf(x: float, a: float, b: float) -> float:
    """P(p < x) for p ~ Beta(a, b)."""
    from scipy import stats

    return float(stats.beta.cdf(x, a, b))


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X > k) for X ~ Binomial(n, p)."""
    from scipy import stats

    return float(stats.binom.sf(k, n, p))


def normal_cdf(z: float) -> float:
    """P(Z < z) for a standard normal Z."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def sequential_evidence(successes: int, failures: int, breakeven: float, side: str) -> float:
    """Mixture likelihood ratio that a band's success rate lies on ``side`` of break-even.

    ``side`` is ``"below"`` (H0: p >= breakeven) or ``"above"`` (H0: p <= breakeven).
    The alternative is an equal mixture of the rates ``breakeven -/+ x * distance``
    for x in :data:`MIXTURE` (distance: from break-even to 0 or to 1). For every
    rate in H0 the ratio is a non-negative supermartingale in the outcomes, so by
    Ville's inequality P(it ever reaches 1/alpha) <= alpha: looking after every
    outcome, or every day, does not inflate the error (a mixture sequential
    probability ratio test). ``1 / ratio`` is a p-value valid at any stopping time.
    Outcomes only; no prior centred on any other rate.
    """
    b = breakeven
    if not 0.0 < b < 1.0:
        raise ValueError(f"break-even must lie in (0, 1), got {b}")
    terms = []
    for x in MIXTURE:
        p = b - x * b if side == "below" else b + x * (1 - b)
        terms.append(successes * math.log(p / b) + failures * math.log((1 - p) / (1 - b)))
    top = max(terms)
    log_m = top + math.log(sum(math.exp(t - top) for t in terms) / len(terms))
    # Clamped both ways: a million outcomes on the wrong side must not underflow
    # to 0 (callers take 1/M) nor overflow.
    return math.exp(max(-700.0, min(log_m, 700.0)))


def restart_p_value(
    blocks: list[tuple[int, int]], breakeven: float, side: str, *, first: int = 0
) -> float:
    """Anytime-valid p-value that a band's rate lies on ``side`` of break-even, with
    restarts: ``blocks`` are (successes, failures) of consecutive periods, oldest
    first, the last possibly still growing.

    Stream ``k`` holds every outcome from block ``k`` on; its mixture likelihood
    ratio ``M_k`` (:func:`sequential_evidence`) gets the level ``alpha / ((k + 1)
    (k + 2))``, and these levels sum to ``alpha``. So ``min_k (k + 1)(k + 2) / M_k``
    is a p-value valid at any stopping time: looking every day does not inflate
    it, and a stream that starts after the world changed sees only the new world
    (old evidence is forgotten by restarting, not discarded by a sliding window,
    which looked at afresh every day would test ~16 times in 8 weeks). ``first``:
    the index of ``blocks[0]`` when older blocks are not passed (not tested; the
    levels keep their indices).
    """
    best = 1.0
    s = f = 0
    for i in range(len(blocks) - 1, -1, -1):
        s, f = s + blocks[i][0], f + blocks[i][1]
        if s + f:
            k = first + i
            best = min(best, (k + 1) * (k + 2) / sequential_evidence(s, f, breakeven, side))
    return best


def prob_above(successes: int, failures: int, breakeven: float) -> float:
    """P(p > breakeven) for p ~ Beta(1 + successes, 1 + failures): a uniform prior."""
    return 1.0 - beta_cdf(breakeven, 1 + successes, 1 + failures)


def prob_above_ordered(
    successes: int, failures: int, breakeven: float, *,
    upper: tuple[int, int] | None = None, lower: tuple[int, int] | None = None,
) -> float:
    """P(p > breakeven) when p is known to lie between two neighbouring rates.

    Every rate has a uniform prior and its own binomial outcomes; ``upper`` and
    ``lower`` are (successes, failures) of the neighbours that p may not exceed
    and fall below (success monotone in the attribute: the band inside a
    threshold succeeds at least as often as the one outside it, the one further
    out at most as often). The order-restricted posterior of p is its own
    Beta(1 + s, 1 + f) density times P(upper >= p) times P(lower <= p), each
    neighbour's rate integrated out under its own Beta posterior; that is
    integrated on a grid of 2,000 points. A neighbour given as (0, 0) is a rate
    with nothing but its uniform prior (it still orders p); ``None``: no
    neighbour on that side. Without neighbours it is :func:`prob_above`; with
    two unobserved neighbours, 0.5 for every break-even of 0.5 and no outcomes.
    """
    import numpy as np
    from scipy import special

    n = 2000
    x = (np.arange(n) + 0.5) / n
    log_w = special.xlogy(successes, x) + special.xlog1py(failures, -x)
    w = np.exp(log_w - log_w.max())
    if upper is not None:
        w = w * special.betaincc(1 + upper[0], 1 + upper[1], x)
    if lower is not None:
        w = w * special.betainc(1 + lower[0], 1 + lower[1], x)
    total = float(w.sum())
    if not total > 0:
        return prob_above(successes, failures, breakeven)
    return float(w[x > breakeven].sum()) / total
