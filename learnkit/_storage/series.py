"""Windows as whole hours plus partial-hour edges, alone or as a series; shared by
both backends.

One window ``[start, end)`` is read as its whole hours from ``rollup_hourly``
and the partial hours at either edge from rows (:func:`split_window`). A
*series* of windows (the weeks of a trend) is planned here the same way,
window by window, into two lists of ranges tagged with their window's index:
hour ranges for the rollup and time ranges for the rows. A backend runs all
of them in one statement (so a 52-week trend costs one round trip, not 52 or
more) and :func:`collect` adds the counts of each window up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .._model import ENDED_OUTCOMES, HOUR

__all__ = ["SERIES_OUTCOMES", "SeriesPlan", "collect", "plan_series", "split_window"]

#: Every outcome a window can hold (``running`` rows have not ended, so are in none).
SERIES_OUTCOMES = ENDED_OUTCOMES


def split_window(
    start: float, end: float
) -> tuple[int, int, list[tuple[float, float]]]:
    """``[start, end)`` as whole hours ``[h0, h1)`` (for rollups) and the non-empty
    partial-hour edges (for rows). With no whole hour, the window is one edge."""
    h0, h1 = math.ceil(start / HOUR), math.floor(end / HOUR)
    edges = [(start, end)] if h0 >= h1 else [(start, h0 * HOUR), (h1 * HOUR, end)]
    return h0, h1, [(a, b) for a, b in edges if a < b]


class SeriesPlan(NamedTuple):
    """What to read for a series of windows; every range is tagged with its window."""

    #: Windows in the series.
    windows: int
    #: (window, h0, h1): whole hours ``[h0, h1)`` to read from ``rollup_hourly``.
    hours: list[tuple[int, int, int]]
    #: (tag, a, b): ``[a, b)`` to read from rows (ended, or abandoned and started, in
    #: it). A tag ``>= 0`` is a window; ``-1 - k`` is the read side of ``shared[k]``.
    rows: list[tuple[int, float, float]]
    #: (read, rest, hour): an hour two adjacent windows split. Only its shorter
    #: part is read from rows (tagged ``-1 - k`` in :attr:`rows`) and counts for
    #: window ``read``; window ``rest`` gets the hour's rollup minus that part, when
    #: any row of the hour is stored (pruned hours have none: then, as when both
    #: parts are read from rows, neither window counts anything of the hour).
    shared: list[tuple[int, int, int]]

    def chunks(self, max_windows: int) -> list[SeriesPlan]:
        """This plan cut into plans of at most ``max_windows`` windows each (window
        indexes and shared tags kept), for a backend whose statements take a
        bounded number of parameters. One plan when it is small enough."""
        if self.windows <= max_windows:
            return [self]

        def window(tag: int) -> int:
            return tag if tag >= 0 else self.shared[-1 - tag][0]

        return [
            SeriesPlan(
                self.windows,
                [h for h in self.hours if lo <= h[0] < lo + max_windows],
                [r for r in self.rows if lo <= window(r[0]) < lo + max_windows],
                self.shared,
            )
            for lo in range(0, self.windows, max_windows)
        ]

    def rests(self) -> list[tuple[int, int]]:
        """(window, hour) of the shared hours whose read side is in this plan."""
        return [(self.shared[-1 - t][1], self.shared[-1 - t][2])
                for t, _, _ in self.rows if t < 0]


def plan_series(
    windows: Sequence[tuple[float, float]], *, top_level: bool = False
) -> SeriesPlan:
    """The ranges to read for each window ``[start, end)`` of ``windows``.

    Each window is split as :func:`split_window` splits a single one, so a
    series counts exactly what one ``outcome_counts`` call per window counts.
    Windows need not abut (``now - 7 * k * DAY`` minus seven days is not
    always, in floating point, the end of the window before). Where two do
    abut inside an hour, one call per window reads both parts of that hour
    from rows; here only the shorter part is read, the other being the hour's
    rollup minus it (see :attr:`SeriesPlan.shared`): half the rows or fewer.
    That is exact because an hour's rollup counts exactly its rows (the
    writer, imports and abandoning write both in one transaction) unless a
    prune deleted them, which takes whole hours. ``top_level``: whole windows
    from rows (the rollups do not know parents). Bounds must be finite, and no
    window may end before it starts.
    """
    hours: list[tuple[int, int, int]] = []
    rows: list[tuple[int, float, float]] = []
    shared: list[tuple[int, int, int]] = []
    for i, (start, end) in enumerate(windows):
        a, b = float(start), float(end)
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"window bounds must be finite, got {start!r}, {end!r}")
        if b < a:
            raise ValueError(f"a window must not end before it starts, got {start!r}, {end!r}")
        if top_level:
            if a < b:
                rows.append((i, a, b))
            continue
        h0, h1, parts = split_window(a, b)
        if h0 < h1:
            hours.append((i, h0, h1))
        if i and parts and parts[0][0] == a:
            h = math.floor(a / HOUR)
            tail, head = (i - 1, h * HOUR, a), (i, a, (h + 1) * HOUR)
            if rows and rows[-1] == tail and parts[0] == head[1:]:
                rows.pop()
                parts = parts[1:]
                read, rest, lo, hi = ((i - 1, i, tail[1], a) if a - tail[1] <= head[2] - a
                                      else (i, i - 1, a, head[2]))
                shared.append((read, rest, h))
                rows.append((-len(shared), lo, hi))
        rows.extend((i, x, y) for x, y in parts)
    return SeriesPlan(len(windows), hours, rows, shared)


def collect(plan: SeriesPlan, counts: Iterable[tuple[int, str, int]]) -> list[dict[str, int]]:
    """Outcome counts per window from (tag, outcome, count) triples (tags as in
    :attr:`SeriesPlan.rows`), zeros left out (as ``outcome_counts`` leaves out
    outcomes it did not find)."""
    out: list[dict[str, int]] = [{} for _ in range(plan.windows)]
    for tag, outcome, n in counts:
        if not n:
            continue
        if tag >= 0:
            d = out[tag]
            d[outcome] = d.get(outcome, 0) + int(n)
        else:
            read, rest, _ = plan.shared[-1 - tag]
            d, e = out[read], out[rest]
            d[outcome] = d.get(outcome, 0) + int(n)
            e[outcome] = e.get(outcome, 0) - int(n)
    for d in out:
        for outcome in [o for o, n in d.items() if not n]:
            del d[outcome]
    return out
