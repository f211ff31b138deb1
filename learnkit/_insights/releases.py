"""Which release a change came with: change points and new error clusters, attributed.

A small step after the scan. The release is an ordinary context attribute
(``learning.release_attribute``, default ``release``), so its hourly counts are
in the context rollup of every backend; this reads them through
:meth:`Store.context_counts` only.

- A **change point** at ``at`` is attributed to the release whose share of the
  operation type's outcomes grew most from before ``at`` to after it, if that
  release was first seen within a day of ``at`` (change points are found at
  the resolution of days, so a release shipped late on the day before counts).
- A **new error cluster** (no failures of it in the previous window) is
  attributed to the newest release among the failures of its type in the hour
  it was first seen, if operations of that type ran before that release
  appeared (when the data begins with a release, nothing says it brought the
  cluster).

"First seen" is the first hour in the window with an operation of that type
carrying the release, found by bisection over hours (a few queries).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import attrs

from .._model import DAY, HOUR
from .._storage.rollup import OTHER
from .._views.format import day
from .patterns import ErrorCluster, FailurePattern, Summary

if TYPE_CHECKING:
    from .._storage.protocol import Store

__all__ = ["attribute_releases"]

#: How far from a change point a release may first appear and still be named.
TOLERANCE = DAY


def _release(v: str) -> str | None:
    """A rollup value (JSON text) as a release name; None for anything else."""
    if v == OTHER:
        return None
    try:
        value = json.loads(v)
    except ValueError:
        return None
    return value if isinstance(value, str) and value else None


def _counts(raw: dict[tuple[str, str, int], int]) -> dict[str, int]:
    """release -> operations with a success or failure outcome."""
    out: dict[str, int] = {}
    for (v, o, _), n in raw.items():
        r = _release(v)
        if r is not None and o in ("success", "failure"):
            out[r] = out.get(r, 0) + n
    return out


async def _first_seen(
    store: Store, attr: str, op_type: str | None, release: str, start: float, end: float
) -> float | None:
    """Start of the first hour in [start, end) with an operation carrying ``release``."""

    async def seen_before(t: float) -> bool:
        return release in _counts(await store.context_counts(start, t, attr, op_type))

    if not await seen_before(end):
        return None
    lo = math.floor(start / HOUR)  # release not seen before hour lo's start ... (invariant)
    hi = math.ceil(end / HOUR)  # seen before hour hi's start (or end)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if await seen_before(max(start, min(end, mid * HOUR))):
            hi = mid
        else:
            lo = mid
    return max(start, lo * HOUR)


async def _change_point_release(
    store: Store, attr: str, p: FailurePattern, start: float, end: float
) -> tuple[str, float] | None:
    assert p.at is not None
    before = _counts(await store.context_counts(start, p.at, attr, p.op_type))
    after = _counts(await store.context_counts(p.at, end, attr, p.op_type))
    n_before, n_after = sum(before.values()), sum(after.values())
    if not n_after:
        return None
    growth = {
        r: n / n_after - (before.get(r, 0) / n_before if n_before else 0.0)
        for r, n in after.items()
    }
    release = max(growth, key=lambda r: (growth[r], r))
    if growth[release] <= 0:
        return None
    first = await _first_seen(store, attr, p.op_type, release, start, end)
    if first is None or abs(first - p.at) > TOLERANCE:
        return None
    return release, first


async def _cluster_release(
    store: Store, attr: str, p: FailurePattern, start: float, end: float
) -> tuple[str, float] | None:
    assert p.first_seen is not None
    hour = math.floor(p.first_seen / HOUR) * HOUR
    raw = await store.context_counts(max(start, hour), min(end, hour + HOUR), attr, p.op_type)
    failing = {r for (v, o, _) in raw if o == "failure" and (r := _release(v)) is not None}
    if not failing:
        return None
    firsts = {}
    for r in failing:
        f = await _first_seen(store, attr, p.op_type, r, start, end)
        if f is not None:
            firsts[r] = f
    if not firsts:
        return None
    release = max(firsts, key=lambda r: (firsts[r], r))  # the newest of them
    first = firsts[release]
    # Only a release that arrived while the type was already running: when the
    # data begins with it, nothing says the cluster came with it.
    if not await store.outcome_counts(start, first, op_type=p.op_type):
        return None
    return release, first


def _is_new(p: FailurePattern, clusters: list[ErrorCluster]) -> bool:
    for c in clusters:
        if c.error_type == p.error_type and c.template == p.template:
            return c.previous_count == 0
    return False


async def attribute_releases(summary: Summary, store: Store, attr: str) -> None:
    """Name the release each change point and new error cluster of ``summary`` came with.

    Sets ``release`` and ``release_first_seen`` on those patterns and ends their
    description with ", with release 1.4.2, first seen 2026-11-12". Patterns
    without a release in their data are left as they were.
    """
    start, end = summary["start"], summary["end"]
    out: list[FailurePattern] = []
    for p in summary["failure_patterns"]:
        found: tuple[str, float] | None = None
        if p.kind == "change_point" and p.at is not None and p.op_type:
            found = await _change_point_release(store, attr, p, start, end)
        elif (p.kind == "error_cluster" and p.first_seen is not None
              and _is_new(p, summary["error_clusters"])):
            found = await _cluster_release(store, attr, p, start, end)
        if found is not None:
            release, first = found
            extra: dict[str, Any] = {"release": release, "release_first_seen": first}
            p = attrs.evolve(p, description=(
                f"{p.description}, with release {release}, first seen {day(first)}"), **extra)
        out.append(p)
    summary["failure_patterns"] = out
