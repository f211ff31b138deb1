"""The adaptive-threshold controller: apply, measure, keep or undo.

It moves a threshold only on a recommendation that clears ``min_samples``
and ``confidence_threshold``, one ``step`` at a time inside ``[min, max]``,
after a cooldown of ``min_samples`` new outcomes, by rewriting learnkit.toml
(see :mod:`learnkit._configfile`). Every change is recorded in the store.
Later it compares utility before and after, and the outcomes of *explored*
work in the band the change refused; when the change made things worse with
confidence, it is rolled back.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._config import load_config
from .._errors import ConcurrentEditError, LearnkitError, UnknownThresholdError
from .._insights.patterns import Summary
from .._model import DAY
from .rewrite import rewrite_threshold

if TYPE_CHECKING:
    from .._config import Config, ThresholdConfig
    from .._database import Database

__all__ = ["ThresholdChange", "ThresholdController", "Verdict"]

#: Confidence needed to call a change worse from overall utility alone.
OVERALL_CONFIDENCE = 0.95
log = logging.getLogger("learnkit")


@attrs.frozen
class ThresholdChange:
    """One recorded change of a threshold."""

    #: Row id in the store.
    id: int
    #: When (Unix seconds, the kit's clock).
    at: float
    #: The threshold.
    name: str
    #: Value before.
    old_value: float | int | None
    #: Value after.
    new_value: float | int
    #: ``lower``, ``raise`` or ``rollback``.
    kind: str
    #: Confidence of the recommendation (None for a manual rollback).
    confidence: float | None
    #: Why, in words.
    reason: str
    #: The patterns behind it, as plain data.
    evidence: list[dict[str, Any]]
    #: Operations the decision rested on.
    samples: int | None
    #: ``applied`` or ``rolled_back``.
    status: str
    #: ``improved``, ``inconclusive`` or ``worse`` once measured; None before.
    verdict: str | None
    #: When the verdict was reached.
    verdict_at: float | None


@attrs.frozen
class Verdict:
    """What a change did, measured on the outcomes since."""

    #: The change measured.
    change: ThresholdChange
    #: ``pending`` (too few outcomes yet), ``improved``, ``inconclusive`` or ``worse``.
    verdict: str
    #: P(worse) for ``worse``, P(better) for ``improved``, else the larger of the two.
    confidence: float
    #: ``success_rate``, ``coverage``, ``utility``, ``n`` before the change.
    before: dict[str, float | None]
    #: The same since the change.
    after: dict[str, float | None]
    #: The band the change refused or admitted: ``values``, ``n``, ``success_rate``.
    band: dict[str, Any]
    #: One sentence.
    reason: str
    #: Whether this evaluation rolled the change back.
    rolled_back: bool = False


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def _evidence(summary_rec: Any) -> list[dict[str, Any]]:
    out = []
    for p in summary_rec.evidence:
        d = attrs.asdict(p)
        out.append({k: v for k, v in d.items() if v is not None and not (
            isinstance(v, float) and not math.isfinite(v))})
    return out


def _change(row: dict[str, Any]) -> ThresholdChange:
    return ThresholdChange(
        id=row["id"], at=row["at"], name=row["name"],
        old_value=None if row["old_value"] is None else _num(row["old_value"]),
        new_value=_num(row["new_value"]), kind=row["kind"], confidence=row["confidence"],
        reason=row["reason"] or "", evidence=json.loads(row["evidence"] or "[]"),
        samples=row["samples"], status=row["status"], verdict=row["verdict"],
        verdict_at=row["verdict_at"],
    )


def _utility(s: int, f: int, k: int, cost: float) -> tuple[float | None, float, int]:
    """Mean utility per offered operation (1, -cost, 0 for refused), its variance, n."""
    n = s + f + k
    if n == 0:
        return None, 0.0, 0
    mean = (s - cost * f) / n
    second = (s + cost * cost * f) / n
    return mean, max(second - mean * mean, 0.0), n


class ThresholdController:
    """Applies threshold recommendations to learnkit.toml; ``kit.controller``."""

    def __init__(
        self,
        database: Database,
        logger: logging.Logger | None = None,
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._db = database
        self.logger = logger or log
        #: Called after a threshold changed (the kit drops cached analyses).
        self._on_change = on_change or (lambda: None)

    # -- reading ------------------------------------------------------------------

    async def history(self, name: str | None = None) -> list[ThresholdChange]:
        """Every recorded change (of ``name``, or all), oldest first."""
        return [_change(r) for r in await self._db.store.changes(name)]

    def _threshold(self, cfg: Config, name: str) -> ThresholdConfig:
        th = cfg.thresholds.get(name)
        if th is None:
            known = ", ".join(sorted(cfg.thresholds)) or "none"
            raise UnknownThresholdError(
                f"no threshold {name!r} in {cfg.path} (defined: {known}); "
                f"add a [thresholds.{name}] table"
            )
        return th

    async def _outcomes(
        self, th: ThresholdConfig, start: float, end: float | None = None
    ) -> dict[str, int]:
        """Outcomes of the operations a threshold judges, in ``[start, end or now)``."""
        end = self._db.now() if end is None else end
        raw = await self._db.store.outcome_counts(start, end, op_type=th.op_type or None)
        out: dict[str, int] = {}
        for (_, o), n in raw.items():
            out[o] = out.get(o, 0) + n
        return out

    # -- writing ------------------------------------------------------------------

    async def _write(self, cfg: Config, name: str, value: int | float) -> Config:
        written = await anyio.to_thread.run_sync(
            rewrite_threshold, cfg.path, name, value, cfg.digest
        )
        self._db.live.set(written)
        return written

    async def _refresh(self) -> None:
        """Re-read the values in force: the file, and a shared store's values."""
        self._db.live.refresh(force=True)
        if self._db.shared is not None:
            await self._db.shared.pull()

    async def _commit_change(
        self, cfg: Config, name: str, value: int | float, row: dict[str, Any],
        *, rolled_back: int | None = None,
    ) -> int:
        """Put ``value`` in force and record ``row``; the change's id.

        With a shared store: one compare-and-set on the threshold's version,
        the record in the same transaction. Otherwise: rewrite learnkit.toml,
        then record.

        Raises:
            ConcurrentEditError: the file, or the shared value, changed since read.
        """
        shared = self._db.shared
        if shared is not None:
            # The file holds this host's policy (bounds, step): never act on a broken one.
            await anyio.to_thread.run_sync(load_config, cfg.path)
            return await shared.swap(name, value, row, rolled_back=rolled_back)
        await self._write(cfg, name, value)
        if rolled_back is not None:
            await self._db.store.update_change(rolled_back, status="rolled_back")
        return await self._db.store.record_change(row)

    async def apply(self, summary: Summary) -> list[ThresholdChange]:
        """Apply the summary's threshold recommendations that clear every guard rail.

        A recommendation is applied only when its confidence is at least
        ``confidence_threshold``, its evidence rests on at least
        ``min_samples`` operations, the threshold still holds the value it
        was made for, at least ``min_samples`` outcomes came in since the
        last change of that threshold, and the same move was not rolled back
        within the analysis window. The move is clipped to ``step`` and to
        ``[min, max]``. If the file changed since it was read, it is re-read
        and the decision made again.

        Returns:
            The changes made (possibly none).

        Raises:
            ConfigError: learnkit.toml is invalid now; it is left untouched.
        """
        made: list[ThresholdChange] = []
        for rec in summary["recommendations"]:
            if rec.threshold is None or rec.recommended is None:
                continue
            change = await self._apply_one(rec)
            if change is not None:
                made.append(change)
        if made:
            self._on_change()
        return made

    async def _apply_one(self, rec: Any) -> ThresholdChange | None:
        db = self._db
        name = rec.threshold
        for _attempt in range(3):
            await self._refresh()
            cfg = db.live.config
            lc = cfg.learning
            th = cfg.thresholds.get(name)
            if th is None:
                self.logger.warning("learnkit: %s is no longer in %s; not applied", name, cfg.path)
                return None
            samples = rec.evidence[0].support if rec.evidence else 0
            why_not = None
            if rec.confidence < lc.confidence_threshold:
                why_not = f"confidence {rec.confidence:.2f} < {lc.confidence_threshold}"
            elif (samples or 0) < lc.min_samples:
                why_not = f"{samples} operations < min_samples {lc.min_samples}"
            elif th.value != rec.current:
                why_not = (f"the value is {th.value} now, not {rec.current} as analysed; "
                           "it will be re-analysed")
            if why_not:
                self.logger.info("learnkit: %s not changed: %s", name, why_not)
                return None
            target = float(rec.recommended)
            lo = -math.inf if th.min is None else th.min
            hi = math.inf if th.max is None else th.max
            step = float(th.step)
            new = min(max(target, th.value - step), th.value + step)
            new = min(max(new, lo), hi)
            new_v = _num(new) if isinstance(th.value, int) or float(new).is_integer() else new
            if new_v == th.value:
                return None
            history = await self.history(name)
            if history:
                last = history[-1]
                got = await self._outcomes(th, last.at)
                fresh = got.get("success", 0) + got.get("failure", 0)
                if fresh < lc.min_samples:
                    self.logger.info(
                        "learnkit: %s not changed: cooling down (%d of %d outcomes since the "
                        "last change)", name, fresh, lc.min_samples)
                    return None
                now = db.now()
                for h in history:
                    if (h.status == "rolled_back" and h.old_value == th.value
                            and h.new_value == new_v
                            and now - h.at < lc.window_days * DAY):
                        self.logger.info(
                            "learnkit: %s not changed: %s -> %s was rolled back on evidence "
                            "that is still in the window", name, th.value, new_v)
                        return None
            kind = "lower" if new_v < th.value else "raise"
            row = {
                "at": db.now(), "name": name, "old_value": th.value, "new_value": new_v,
                "kind": kind, "confidence": rec.confidence, "reason": rec.message,
                "evidence": json.dumps(_evidence(rec), default=str), "samples": samples,
                "status": "applied",
            }
            try:
                row_id = await self._commit_change(cfg, name, new_v, row)
            except ConcurrentEditError:
                continue  # someone edited the file (or another host moved it): decide again
            self.logger.info("learnkit: %s %s -> %s (confidence %.2f): %s",
                             name, th.value, new_v, rec.confidence, rec.message)
            return _change({**row, "id": row_id, "verdict": None, "verdict_at": None})
        self.logger.warning("learnkit: %s not changed: the file kept changing under us", name)
        return None

    async def rollback(self, name: str, *, reason: str = "rolled back by hand") -> ThresholdChange:
        """Undo the last applied change of ``name``, restoring its old value.

        Raises:
            UnknownThresholdError: learnkit.toml has no such threshold.
            LearnkitError: there is no applied change to undo.
            ConcurrentEditError: the value was edited since that change; the
                edit is kept.
        """
        db = self._db
        await self._refresh()
        cfg = db.live.config
        th = self._threshold(cfg, name)
        applied = [c for c in await self.history(name)
                   if c.status == "applied" and c.kind in ("lower", "raise")]
        if not applied:
            raise LearnkitError(f"{name} has no applied change to roll back")
        last = applied[-1]
        if th.value != last.new_value:
            raise ConcurrentEditError(
                f"{name} is {th.value} in {cfg.path}, not {last.new_value} as the last change "
                "left it; it was edited since, so the edit is kept"
            )
        assert last.old_value is not None
        row = {
            "at": db.now(), "name": name, "old_value": th.value,
            "new_value": last.old_value, "kind": "rollback", "confidence": None,
            "reason": reason, "evidence": "[]", "samples": None, "status": "applied",
        }
        row_id = await self._commit_change(cfg, name, last.old_value, row, rolled_back=last.id)
        self._on_change()
        self.logger.warning("learnkit: %s rolled back %s -> %s: %s",
                            name, th.value, last.old_value, reason)
        return _change({**row, "id": row_id, "verdict": None, "verdict_at": None})

    # -- measuring ----------------------------------------------------------------

    async def evaluate(self, *, auto_rollback: bool = True) -> list[Verdict]:
        """Measure the latest change of each threshold; roll back what made things worse.

        Needs ``min_samples`` outcomes since the change (else ``pending``).
        A change is *worse* when the band it refused succeeds above break-even
        when explored (for a raise: the band it admitted fails below
        break-even), with probability at least ``confidence_threshold``; or
        when utility per offered operation fell with probability at least
        0.95 (overall utility also moves with the mix of work, so it needs
        the stronger evidence).
        """
        db = self._db
        if db.shared is not None:
            await db.shared.pull()
        cfg = db.config
        verdicts = []
        for name, th in cfg.thresholds.items():
            changes = [c for c in await self.history(name)
                       if c.status == "applied" and c.kind in ("lower", "raise")]
            if not changes or changes[-1].verdict in ("improved", "worse"):
                continue
            last = changes[-1]
            if th.value != last.new_value:
                continue  # edited since: not ours to judge
            v = await self._measure(cfg, th, last)
            if v.verdict != "pending":
                await db.store.update_change(last.id, verdict=v.verdict, verdict_at=db.now())
            if v.verdict == "worse" and auto_rollback:
                try:
                    await self.rollback(name, reason=f"measured worse: {v.reason}")
                    v = attrs.evolve(v, rolled_back=True)
                except LearnkitError as exc:
                    self.logger.error("learnkit: could not roll back %s: %s", name, exc)
            verdicts.append(v)
        return verdicts

    async def _measure(self, cfg: Config, th: ThresholdConfig, c: ThresholdChange) -> Verdict:
        from .._insights.statistics import beta_cdf, normal_cdf

        db = self._db
        lc = cfg.learning
        cost = lc.failure_cost
        breakeven = cost / (1 + cost)
        now = db.now()
        span = min(now - c.at, lc.window_days * DAY)
        before = await self._outcomes(th, c.at - span, c.at)
        after = await self._outcomes(th, c.at, now)

        def describe(
            o: dict[str, int],
        ) -> tuple[dict[str, float | None], tuple[float | None, float, int]]:
            s, f, k = o.get("success", 0), o.get("failure", 0), o.get("skipped", 0)
            u, var, n = _utility(s, f, k, cost)
            return ({"success_rate": s / (s + f) if s + f else None,
                     "coverage": (s + f) / n if n else None, "utility": u, "n": float(n)},
                    (u, var, n))

        (b, (ub, vb, nb)), (a, (ua, va, na)) = describe(before), describe(after)
        band = await self._band(th, c, c.at, now)
        n_after = after.get("success", 0) + after.get("failure", 0)
        if n_after < lc.min_samples:
            return Verdict(c, "pending", 0.0, b, a, band,
                           f"{n_after} of {lc.min_samples} outcomes since the change")
        p_worse = p_better = 0.0
        if ub is not None and ua is not None and nb >= lc.min_samples:
            se = math.sqrt(vb / nb + va / na) or 1e-12
            p_worse = normal_cdf((ub - ua) / se)
            p_better = 1 - p_worse
        band_worse = 0.0
        if band["n"] >= lc.min_samples:
            s, f = band["successes"], band["failures"]
            below = beta_cdf(breakeven, 0.5 + s, 0.5 + f)
            band_worse = 1 - below if c.kind == "lower" else below
        conf = lc.confidence_threshold
        if band_worse >= conf:
            what = "explored" if c.kind == "lower" else "admitted"
            reason = (f"{what} work with {th.attribute} in {band['values']} succeeds "
                      f"{band['success_rate']:.0%} (n={band['n']}), "
                      f"{'above' if c.kind == 'lower' else 'below'} break-even {breakeven:.0%}")
            return Verdict(c, "worse", band_worse, b, a, band, reason)
        # Overall utility also moves with the mix of work offered, so an undo
        # on it alone needs stronger evidence than the band's own outcomes.
        if p_worse >= max(conf, OVERALL_CONFIDENCE):
            return Verdict(c, "worse", p_worse, b, a, band,
                           f"utility per offered operation fell from {ub:+.2f} to {ua:+.2f}")
        if p_better >= conf:
            return Verdict(c, "improved", p_better, b, a, band,
                           f"utility per offered operation rose from {ub:+.2f} to {ua:+.2f}")
        return Verdict(c, "inconclusive", max(p_worse, p_better), b, a, band,
                       "no clear difference yet" if ub is not None else "no data before")

    async def _band(
        self, th: ThresholdConfig, c: ThresholdChange, start: float, end: float
    ) -> dict[str, Any]:
        """Outcomes since the change in the band between the old and new value."""
        assert c.old_value is not None
        lo, hi = sorted((float(c.old_value), float(c.new_value)))
        counts = await self._db.store.context_counts(
            start, end, th.attribute, th.op_type or None
        )
        s = f = 0
        values = set()
        for (v, o, x), n in counts.items():
            try:
                val = float(json.loads(v))
            except (ValueError, TypeError):
                continue
            # For a max-limit lowered from 8 to 7 the band is (7, 8]; raised, the same.
            inside = lo < val <= hi if th.limit == "max" else lo <= val < hi
            if not inside:
                continue
            if c.kind == "lower" and not x:
                continue  # refused work is known only through exploration
            values.add(_num(val))
            if o == "success":
                s += n
            elif o == "failure":
                f += n
        return {"values": sorted(values), "n": s + f, "successes": s, "failures": f,
                "success_rate": s / (s + f) if s + f else None}
